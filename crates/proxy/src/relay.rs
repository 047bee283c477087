//! TCP relay: full duplex with half-close and idle timeouts.
//!
//! Both directions run in the connection's own task over `&TcpStream` (no split, no extra task). A direction waits
//! for readability *without* holding a buffer and borrows one from a per-thread pool only while data is flowing, so
//! ten thousand idle connections cost no buffer memory. When one side sends FIN, the write side of the other is shut
//! down and the opposite direction keeps flowing until it ends too.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::state::Counters;

const BUF_SIZE: usize = 32 * 1024;
const POOL_MAX: usize = 16;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buffer(buf: Box<[u8]>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOL_MAX {
            b.push(buf);
        }
    });
}

/// Why a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// No traffic in either direction for the idle timeout of the waiting side.
    Idle,
    Error(io::Error),
}

/// Which way bytes flow, for the counters.
#[derive(Clone, Copy)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// Relay until both directions are closed, an error occurs, or the connection is idle too long.
///
/// Idle means no byte moved in either direction for `client_idle` while both directions are open (the smaller of
/// the two timeouts applies then, as the proxy waits on both sides), `server_idle` once the client has finished
/// sending, or `client_idle` once the server has. One watchdog timer per connection implements this, so the data
/// path itself arms no timer per read or write.
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    client_idle: Duration,
    server_idle: Duration,
    service: &Counters,
    real: &Counters,
) -> RelayEnd {
    let last = LastActivity::new();
    let up_done = AtomicBool::new(false);
    let down_done = AtomicBool::new(false);
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let up = async {
        let r = one_way(
            &mut client_r,
            &mut server_w,
            &last,
            service,
            real,
            Dir::ClientToServer,
        )
        .await;
        up_done.store(true, Ordering::Relaxed);
        r
    };
    let down = async {
        let r = one_way(
            &mut server_r,
            &mut client_w,
            &last,
            service,
            real,
            Dir::ServerToClient,
        )
        .await;
        down_done.store(true, Ordering::Relaxed);
        r
    };
    let idle_limit = || {
        if up_done.load(Ordering::Relaxed) {
            server_idle
        } else if down_done.load(Ordering::Relaxed) {
            client_idle
        } else {
            client_idle.min(server_idle)
        }
    };
    tokio::select! {
        r = async { tokio::try_join!(up, down) } => match r {
            Ok(((), ())) => RelayEnd::Closed,
            Err(e) => RelayEnd::Error(e),
        },
        () = watchdog(&last, idle_limit) => RelayEnd::Idle,
    }
}

/// Resolves once the connection has been silent for the current idle limit.
async fn watchdog(last: &LastActivity, limit: impl Fn() -> Duration) {
    loop {
        let deadline = last.get() + limit();
        if deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// One read attempt: `None` when the socket has nothing right now (readiness is then cleared and the task will be
/// woken by the next data). Reading through `poll_read` (not `try_read`) lets tokio clear readiness after a short
/// read, which saves the `EAGAIN` read that would otherwise follow every message.
async fn read_now(from: &mut ReadHalf<'_>, buf: &mut [u8]) -> Option<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    std::future::poll_fn(|cx| match Pin::new(&mut *from).poll_read(cx, &mut rb) {
        Poll::Pending => Poll::Ready(None),
        Poll::Ready(r) => Poll::Ready(Some(r)),
    })
    .await
    .map(|r| r.map(|()| rb.filled().len()))
}

async fn one_way(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    last: &LastActivity,
    service: &Counters,
    real: &Counters,
    dir: Dir,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = take_buffer();
        let result = drain(from, to, &mut buf, last, service, real, dir).await;
        give_buffer(buf);
        if result? {
            // EOF from `from`: pass the FIN on and let the other direction finish.
            let _ = to.shutdown().await;
            return Ok(());
        }
    }
}

/// Copy what is available now. Ok(true) on EOF, Ok(false) when `from` has no more data for the moment.
async fn drain(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    buf: &mut [u8],
    last: &LastActivity,
    service: &Counters,
    real: &Counters,
    dir: Dir,
) -> io::Result<bool> {
    loop {
        let n = match read_now(from, buf).await {
            None => return Ok(false),
            Some(Ok(0)) => return Ok(true),
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
        };
        last.touch();
        let mut written = 0;
        while written < n {
            let w = to.write(&buf[written..n]).await?;
            if w == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += w;
            // Waiting for the peer to drain counts as activity: bytes are still moving.
            last.touch();
        }
        match dir {
            Dir::ClientToServer => {
                service.add_in(n);
                real.add_in(n);
            }
            Dir::ServerToClient => {
                service.add_out(n);
                real.add_out(n);
            }
        }
        if n < buf.len() {
            // Short read: the socket is empty (tokio cleared its readiness); wait without holding the buffer.
            return Ok(false);
        }
    }
}

/// Time of the last byte moved in either direction (atomic only so the relay future is `Send`).
struct LastActivity {
    base: Instant,
    ms: AtomicU64,
}

impl LastActivity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn get(&self) -> Instant {
        self.base + Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
}
