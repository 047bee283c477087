//! TCP mode's relay once both sides are connected, in one of three ways (see [`crate::TcpRelay`]): in the
//! connection's tokio task ([`tasks`]), or handed to dedicated threads (`threads.rs`) that run an edge-triggered
//! poll loop (`poll.rs`) or an io_uring ring (`uring.rs`, yielding to local processes as `local_yield.rs` decides)
//! each. This module holds what they share: how a relay ends ([`RelayEnd`]), the idle rule (`idle_limit`), and the
//! pair handed to a thread (`Job`, `Traffic`, `Command`).
//!
//! Semantics are the same everywhere: full duplex, a FIN passed on once everything before it was written, the pair
//! closed when both directions are done, idle timeouts (`client_idle` while both directions are open,
//! `server_idle` once the client has finished sending, `client_idle` once the server has), and backpressure.

mod local_yield;
mod poll;
pub mod tasks;
pub(crate) mod threads;
mod uring;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::state::{Counters, ServerRuntime};

/// Why a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// No traffic in either direction for the idle timeout of the waiting side.
    Idle,
    Error(io::Error),
}

/// How long a relayed connection may stay silent, given which sides have finished sending (the rule of every relay).
pub(crate) fn idle_limit(
    client_done: bool,
    server_done: bool,
    client_idle: Duration,
    server_idle: Duration,
) -> Duration {
    if client_done {
        server_idle
    } else if server_done {
        client_idle
    } else {
        client_idle.min(server_idle)
    }
}

/// How often idle pairs are looked for.
pub(crate) const TICK: Duration = Duration::from_millis(250);
pub(crate) const CLIENT: usize = 0;
pub(crate) const SERVER: usize = 1;

/// A connected pair to relay until it ends; `done` gets why it ended.
pub(crate) struct Job {
    /// Blocking for an io_uring relay, non-blocking for a poll loop: as `listener::Listener::accept` gave it.
    pub client: std::net::TcpStream,
    /// Non-blocking (connected through tokio); an io_uring relay makes it blocking.
    pub server: std::net::TcpStream,
    pub traffic: Traffic,
    pub done: oneshot::Sender<RelayEnd>,
}

/// What either relay (poll loop or io_uring ring) keeps of a pair besides its sockets and bytes: its idle limits,
/// when bytes last moved, and the counters they go to.
pub(crate) struct Traffic {
    pub client_idle: Duration,
    pub server_idle: Duration,
    pub last_activity: Instant,
    /// The service's counters.
    pub service: Arc<Counters>,
    pub real: Arc<ServerRuntime>,
    /// This connection's own bytes, when someone wants them (the access log).
    pub conn: Option<Arc<Counters>>,
}

impl Traffic {
    pub(crate) fn new(
        client_idle: Duration,
        server_idle: Duration,
        service: Arc<Counters>,
        real: Arc<ServerRuntime>,
    ) -> Self {
        Traffic {
            client_idle,
            server_idle,
            last_activity: Instant::now(),
            service,
            real,
            conn: None,
        }
    }

    /// `n` bytes were read from side `from` at `now`: counted on the service's and the server's counters.
    pub(crate) fn read(&mut self, from: usize, n: usize, now: Instant) {
        self.last_activity = now;
        for counters in [&*self.service, &self.real.counters]
            .into_iter()
            .chain(self.conn.as_deref())
        {
            if from == CLIENT {
                counters.add_in(n)
            } else {
                counters.add_out(n)
            }
        }
    }

    /// Quiet past its limit at `now`, given which sides have sent their FIN (`eof`).
    pub(crate) fn idle(&self, eof: [bool; 2], now: Instant) -> bool {
        now.duration_since(self.last_activity)
            >= idle_limit(eof[CLIENT], eof[SERVER], self.client_idle, self.server_idle)
    }
}

pub(crate) enum Command {
    Add(u64, Job),
    /// End pair `id`; `reset`: with a RST to its client (its VIP was released).
    Close {
        id: u64,
        reset: bool,
    },
}

#[cfg(test)]
mod test_support {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};

    /// A connected loopback pair: (the end given to a relay, the far end).
    pub(crate) fn loopback_pair() -> (StdStream, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (near, _) = listener.accept().unwrap();
        (near, far)
    }

    /// A test pair's timeouts (60 s) and counters (a service and a server of their own).
    pub(crate) fn test_traffic() -> Traffic {
        Traffic::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Arc::new(Counters::default()),
            Arc::new(ServerRuntime::new(
                "s".into(),
                [127, 0, 0, 1].into(),
                Some(1),
                1,
            )),
        )
    }
}
