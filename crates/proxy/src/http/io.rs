//! A TCP stream wrapper that counts bytes and stamps activity, for HTTP mode (hyper owns the reads and writes).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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

pub(crate) struct CountingIo<S> {
    inner: TcpStream,
    sink: S,
}

impl<S: Sink> CountingIo<S> {
    pub(crate) fn new(inner: TcpStream, sink: S) -> Self {
        Self { inner, sink }
    }

    pub(crate) fn into_inner(self) -> TcpStream {
        self.inner
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
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.sink.wrote(n);
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.sink.wrote(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
