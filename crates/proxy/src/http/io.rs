//! A TCP stream wrapper that counts bytes, stamps activity and batches small writes, for HTTP mode's hyper request
//! path (hyper owns the reads and writes).

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::h1::batch;
use crate::state::{Counters, ServerRuntime};

/// Where the byte counts of one stream go.
pub(crate) trait Sink: Send + Sync + 'static {
    fn read(&self, n: usize);
    fn wrote(&self, n: usize);
}

/// Client side of an HTTP connection: service counters plus an activity stamp for the idle watchdog.
pub(crate) struct ClientSink {
    pub(crate) counters: Arc<Counters>,
    pub(crate) activity: Arc<Activity>,
}

impl Sink for ClientSink {
    fn read(&self, n: usize) {
        self.counters.add_in(n);
        self.activity.touch();
    }
    fn wrote(&self, n: usize) {
        self.counters.add_out(n);
        self.activity.touch();
    }
}

/// Upstream side: what we write is the client's request (bytes in), what we read is the response (bytes out).
pub(crate) struct ServerSink(pub(crate) Arc<ServerRuntime>);

impl Sink for ServerSink {
    fn read(&self, n: usize) {
        self.0.counters.add_out(n);
    }
    fn wrote(&self, n: usize) {
        self.0.counters.add_in(n);
    }
}

/// Milliseconds since a base instant of the last byte moved, and requests in flight on the connection.
pub(crate) struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(crate) fn idle_ms(&self) -> u64 {
        (self.base.elapsed().as_millis() as u64)
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A TCP stream that counts what moves through it and, on the native engine's threads, batches small writes with
/// the thread's other writes (`crate::h1::batch`: one system call per round, and a peer on this core woken once per
/// round rather than once per write), as the native engine does for its own sockets. A batched write is accepted at
/// once (its bytes copied) and finished before the next write, a flush or a shutdown, which report its failure.
pub(crate) struct CountingIo<S> {
    /// A batched write in flight. Declared first so that it is dropped (cancelled) before `inner` closes the
    /// descriptor it names.
    queued: Option<Queued>,
    inner: TcpStream,
    sink: S,
    /// The last batched write's bytes, kept to finish a short send directly; reused (its capacity) write to write.
    copy: Vec<u8>,
    /// Whether small writes may be batched: not during a TLS handshake, whose flights would wait for the round's
    /// end (measured: fewer handshakes per second).
    batching: bool,
}

/// A batched write: the send in the thread's batch, then whatever of `copy[sent..]` the kernel did not take.
struct Queued {
    send: Option<batch::Send>,
    sent: usize,
}

impl<S: Sink> CountingIo<S> {
    pub(crate) fn new(inner: TcpStream, sink: S) -> Self {
        Self {
            queued: None,
            inner,
            sink,
            copy: Vec::new(),
            batching: true,
        }
    }

    /// A stream whose writes are not batched until [`Self::set_batching`] allows it (for a TLS handshake).
    pub(crate) fn unbatched(inner: TcpStream, sink: S) -> Self {
        Self {
            batching: false,
            ..Self::new(inner, sink)
        }
    }

    pub(crate) fn set_batching(&mut self, batching: bool) {
        self.batching = batching;
    }

    /// The stream, once a batched write still in flight has been sent.
    pub(crate) async fn into_flushed(mut self) -> io::Result<TcpStream> {
        std::future::poll_fn(|cx| self.poll_queued(cx)).await?;
        let CountingIo { inner, .. } = self;
        Ok(inner)
    }

    /// Finishes the batched write in flight, if any: waits for its send, then writes what the kernel did not take.
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let CountingIo {
            queued,
            inner,
            copy,
            ..
        } = self;
        let Some(q) = queued else {
            return Poll::Ready(Ok(()));
        };
        if let Some(send) = &mut q.send {
            let res = ready!(Pin::new(send).poll(cx));
            q.send = None;
            // A kernel that does not retry the send itself reports `EAGAIN`: the rest is then written below.
            if res == -libc::EAGAIN || res == -libc::EINTR {
                q.sent = 0;
            } else if res < 0 {
                *queued = None;
                return Poll::Ready(Err(io::Error::from_raw_os_error(-res)));
            } else {
                q.sent = usize::try_from(res).unwrap_or(0).min(copy.len());
            }
        }
        while q.sent < copy.len() {
            match ready!(Pin::new(&mut *inner).poll_write(cx, &copy[q.sent..])) {
                Ok(0) => {
                    *queued = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => q.sent += n,
                Err(e) => {
                    *queued = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
        *queued = None;
        Poll::Ready(Ok(()))
    }

    /// Queues `bufs` in this thread's batch when it batches now and they are small; their length if so.
    fn try_batch(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        if !self.batching {
            return None;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 || total > batch::MAX_BATCHED {
            return None;
        }
        let fd = self.inner.as_raw_fd();
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        let joined: Vec<u8>;
        let (a, b): (&[u8], &[u8]) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), None, _) => (a, &[]),
            (Some(a), Some(b), None) => (a, b),
            _ => {
                // More than two pieces (several TLS records): rare, joined for the batch's two-part send.
                joined = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                (&joined, &[])
            }
        };
        let send = batch::send(fd, a, b)?;
        self.copy.clear();
        self.copy.extend_from_slice(a);
        self.copy.extend_from_slice(b);
        self.queued = Some(Queued {
            send: Some(send),
            sent: 0,
        });
        Some(total)
    }
}

impl<S: Sink + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.sink.read(n);
        }
        r
    }
}

impl<S: Sink + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_queued(cx))?;
        let r = match this.try_batch(bufs) {
            Some(n) => Poll::Ready(Ok(n)),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = r {
            this.sink.wrote(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_queued(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_queued(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;

    use super::*;
    use crate::h1::WriteBatching;

    struct Uncounted;
    impl Sink for Uncounted {
        fn read(&self, _: usize) {}
        fn wrote(&self, _: usize) {}
    }

    /// Runs `test` with a connected pair (ours registered, the peer's blocking end with a read timeout) on a
    /// current-thread runtime whose thread batches every small write, as the native engine's threads do with
    /// `http_write_batching = "always"`; false where io_uring cannot be set up.
    fn with_batching_thread<F: Future<Output = ()>>(
        test: impl FnOnce(CountingIo<Uncounted>, std::net::TcpStream) -> F,
    ) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            if batch::install(WriteBatching::Always).is_err() {
                eprintln!("io_uring cannot be set up here; skipped");
                return false;
            }
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let ours = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (peer, _) = listener.accept().expect("accept");
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            ours.set_nonblocking(true).expect("nonblocking");
            let io = CountingIo::new(TcpStream::from_std(ours).expect("register"), Uncounted);
            test(io, peer).await;
            batch::uninstall();
            true
        })
    }

    fn nothing_to_read(peer: &mut std::net::TcpStream) -> bool {
        peer.set_nonblocking(true).expect("nonblocking");
        let r = peer.peek(&mut [0; 64]);
        peer.set_nonblocking(false).expect("blocking");
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[test]
    fn a_small_write_waits_for_the_round_and_a_flush_sends_it() {
        with_batching_thread(|mut io, mut peer| async move {
            assert_eq!(
                io.write(b"GET / HTTP/1.1\r\n\r\n").await.expect("write"),
                18
            );
            // Accepted, not sent: the thread's flusher has not run yet.
            assert!(nothing_to_read(&mut peer));
            io.flush().await.expect("flush");
            let mut head = [0; 18];
            peer.read_exact(&mut head).expect("read");
            assert_eq!(&head, b"GET / HTTP/1.1\r\n\r\n");
            // The next write waits for the previous one: order is kept across several writes.
            for part in [&b"one "[..], b"two ", b"three"] {
                io.write_all(part).await.expect("write");
            }
            io.flush().await.expect("flush");
            let mut all = [0; 13];
            peer.read_exact(&mut all).expect("read");
            assert_eq!(&all, b"one two three");
            // Three pieces (as several TLS records come) are joined into one batched send.
            let pieces = [
                io::IoSlice::new(b"a"),
                io::IoSlice::new(b"bc"),
                io::IoSlice::new(b"def"),
            ];
            assert_eq!(io.write_vectored(&pieces).await.expect("write"), 6);
            assert!(nothing_to_read(&mut peer));
            io.flush().await.expect("flush");
            let mut all = [0; 6];
            peer.read_exact(&mut all).expect("read");
            assert_eq!(&all, b"abcdef");
        });
    }

    #[test]
    fn an_unbatched_stream_and_a_large_write_go_out_at_once() {
        with_batching_thread(|mut io, mut peer| async move {
            io.set_batching(false);
            io.write_all(b"handshake flight").await.expect("write");
            assert!(!nothing_to_read(&mut peer), "sent directly");
            let mut got = vec![0; 64 * 1024];
            let n = peer.read(&mut got).expect("read");
            assert_eq!(&got[..n], b"handshake flight");
            io.set_batching(true);
            let large = vec![7u8; batch::MAX_BATCHED + 1];
            let n = io.write(&large).await.expect("write");
            assert!(n > 0);
            assert!(!nothing_to_read(&mut peer), "a large write is not batched");
        });
    }

    #[test]
    fn a_failed_batched_write_is_reported_by_the_flush() {
        with_batching_thread(|mut io, peer| async move {
            // The peer resets the connection: the queued send fails.
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            drop(peer);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut failed = false;
            for _ in 0..3 {
                match io.write(b"lost").await {
                    Ok(_) => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                if io.flush().await.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "the reset was never reported");
        });
    }

    #[test]
    fn a_dropped_stream_cancels_its_queued_write() {
        with_batching_thread(|mut io, mut peer| async move {
            io.write_all(b"never sent").await.expect("write");
            drop(io);
            // Removed from the batch before it was issued: nothing reaches the peer but the close.
            tokio::task::yield_now().await;
            let mut got = [0; 64];
            assert_eq!(peer.read(&mut got).expect("read"), 0);
        });
    }
}
