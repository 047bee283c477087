//! TCP relay: full duplex with half-close and idle timeouts.
//!
//! Both directions run in the connection's own task over `&TcpStream` (no split, no extra task). A direction waits
//! for readability *without* holding a buffer and borrows one from a per-thread pool only while data is flowing, so
//! ten thousand idle connections cost no buffer memory. When one side sends FIN, the write side of the other is shut
//! down and the opposite direction keeps flowing until it ends too.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
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
/// `client_idle` bounds silence while waiting on the client, `server_idle` while waiting on the server; a direction
/// that waits is not idle while the other still moves bytes.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    client_idle: Duration,
    server_idle: Duration,
    service: &Counters,
    real: &Counters,
) -> RelayEnd {
    let last = LastActivity::new();
    let up = one_way(
        client,
        server,
        client_idle,
        &last,
        service,
        real,
        Dir::ClientToServer,
    );
    let down = one_way(
        server,
        client,
        server_idle,
        &last,
        service,
        real,
        Dir::ServerToClient,
    );
    match tokio::try_join!(up, down) {
        Ok(((), ())) => RelayEnd::Closed,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => RelayEnd::Idle,
        Err(e) => RelayEnd::Error(e),
    }
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
    last: &LastActivity,
    service: &Counters,
    real: &Counters,
    dir: Dir,
) -> io::Result<()> {
    loop {
        wait_ready(from.readable(), idle, last).await?;
        let mut buf = take_buffer();
        let result = drain(from, to, &mut buf, idle, last, service, real, dir).await;
        give_buffer(buf);
        match result {
            Ok(true) => {
                // EOF from `from`: pass the FIN on and let the other direction finish.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copy what is available now. Ok(true) on EOF, Ok(false) when `from` has no more data for the moment.
#[allow(clippy::too_many_arguments)]
async fn drain(
    from: &TcpStream,
    to: &TcpStream,
    buf: &mut [u8],
    idle: Duration,
    last: &LastActivity,
    service: &Counters,
    real: &Counters,
    dir: Dir,
) -> io::Result<bool> {
    loop {
        let n = match from.try_read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        last.touch();
        let mut written = 0;
        while written < n {
            match to.try_write(&buf[written..n]) {
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(to.writable(), idle, last).await?
                }
                Err(e) => return Err(e),
            }
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
            // Short read: the socket is most likely empty; go back to waiting without holding the buffer.
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

/// Await readiness; time out only when the whole connection (both directions) has been silent for `idle`.
async fn wait_ready<F>(ready: F, idle: Duration, last: &LastActivity) -> io::Result<()>
where
    F: std::future::Future<Output = io::Result<()>>,
{
    tokio::pin!(ready);
    loop {
        let deadline = last.get() + idle;
        match tokio::time::timeout_at(deadline, &mut ready).await {
            Ok(r) => return r,
            Err(_) => {
                if last.get() + idle <= Instant::now() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    }
}
