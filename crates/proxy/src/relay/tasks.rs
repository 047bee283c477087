//! TCP relay in the connection's tokio task: full duplex with half-close and idle timeouts.
//!
//! Both directions run in the connection's own task over `&TcpStream` (no split, no extra task). A direction waits
//! for readability *without* holding a buffer and borrows one from a per-thread pool only while data is flowing, so
//! ten thousand idle connections cost no buffer memory. When one side sends FIN, the write side of the other is shut
//! down and the opposite direction keeps flowing until it ends too.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{RelayEnd, idle_limit};
use crate::buffer::{Read, give_buffer, read_now, take_buffer};
use crate::state::Counters;
use crate::woken::OnlyWhenWoken;

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
    client: &TcpStream,
    server: &TcpStream,
    client_idle: Duration,
    server_idle: Duration,
    service: &Counters,
    real: &Counters,
    conn: Option<&Counters>,
) -> RelayEnd {
    let counts = Counting {
        service,
        real,
        conn,
    };
    let last = LastActivity::new();
    let up_done = AtomicBool::new(false);
    let down_done = AtomicBool::new(false);
    let up = async {
        let r = one_way(client, server, &last, &counts, Dir::ClientToServer).await;
        up_done.store(true, Ordering::Relaxed);
        r
    };
    let down = async {
        let r = one_way(server, client, &last, &counts, Dir::ServerToClient).await;
        down_done.store(true, Ordering::Relaxed);
        r
    };
    let idle_limit = || {
        idle_limit(
            up_done.load(Ordering::Relaxed),
            down_done.load(Ordering::Relaxed),
            client_idle,
            server_idle,
        )
    };
    tokio::select! {
        biased;
        r = async { tokio::try_join!(up, down) } => match r {
            Ok(((), ())) => RelayEnd::Closed,
            Err(e) => RelayEnd::Error(e),
        },
        () = OnlyWhenWoken::new(watchdog(&last, idle_limit)) => RelayEnd::Idle,
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

async fn write_all(to: &TcpStream, mut data: &[u8], last: &LastActivity) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => data = &data[w..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                to.writable().await?;
                // Waiting for the peer to drain counts as activity: bytes are still moving.
                last.touch();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    last: &LastActivity,
    counts: &Counting<'_>,
    dir: Dir,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = take_buffer();
        let result = drain(from, to, &mut buf, last, counts, dir).await;
        give_buffer(buf);
        if result? {
            // EOF from `from`: pass the FIN on and let the other direction finish.
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

/// Copy what is available now. Ok(true) on EOF, Ok(false) when `from` has no more data for the moment.
async fn drain(
    from: &TcpStream,
    to: &TcpStream,
    buf: &mut [u8],
    last: &LastActivity,
    counts: &Counting<'_>,
    dir: Dir,
) -> io::Result<bool> {
    loop {
        let n = match read_now(from, buf)? {
            Read::Empty => return Ok(false),
            Read::Eof => return Ok(true),
            Read::Data(n) => n,
        };
        last.touch();
        write_all(to, &buf[..n], last).await?;
        counts.moved(dir, n);
        if n < buf.len() {
            return Ok(false);
        }
        // A long transfer must not starve the other tasks of this worker.
        tokio::task::consume_budget().await;
    }
}

/// Where a relay counts its bytes: the service, the real server, and the connection when asked (access log).
struct Counting<'a> {
    service: &'a Counters,
    real: &'a Counters,
    conn: Option<&'a Counters>,
}

impl Counting<'_> {
    fn moved(&self, dir: Dir, n: usize) {
        let all = [self.service, self.real].into_iter().chain(self.conn);
        for c in all {
            match dir {
                Dir::ClientToServer => c.add_in(n),
                Dir::ServerToClient => c.add_out(n),
            }
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
