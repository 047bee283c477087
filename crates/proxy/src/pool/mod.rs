//! Idle upstream HTTP/1.1 connections of one real server, reused across client requests (one pool per engine kind;
//! each engine's pooled connection type is in [`hyper_conn`] and [`h1_conn`]).

pub(crate) mod h1_conn;
pub(crate) mod hyper_conn;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shared::{lock, thread_tag};

/// Most idle connections kept per server; more are closed.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are not reused (servers commonly close keep-alive at 5-60 s).
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

/// An idle upstream connection that can tell whether it is still worth reusing.
pub(crate) trait Reusable {
    /// Checked when taken from the pool: still open, nothing unexpected received.
    fn usable_now(&mut self) -> bool;
    /// Checked when given back: not closed.
    fn worth_keeping(&mut self) -> bool;
    /// The [`thread_tag`] of the thread whose reactor reports the connection's readiness (0: none in particular).
    fn home(&self) -> u64 {
        0
    }
}

#[derive(Debug)]
pub(crate) struct UpstreamPool<T> {
    idle: Mutex<Vec<(T, Instant)>>,
}

impl<T> Default for UpstreamPool<T> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Reusable> UpstreamPool<T> {
    /// Most recently used idle connection that is still open and ready, if any; one at home on this thread first.
    /// A connection from another thread works as well, but each of its readiness events then wakes this thread from
    /// the other (HTTP mode runs one runtime per thread, each with its own reactor).
    pub(crate) fn take(&self) -> Option<T> {
        let here = thread_tag();
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        loop {
            let pick = idle
                .iter()
                .rposition(|(conn, _)| conn.home() == here)
                .or_else(|| idle.len().checked_sub(1))?;
            let (mut conn, since) = idle.remove(pick);
            if now.duration_since(since) < MAX_IDLE_AGE && conn.usable_now() {
                return Some(conn);
            }
        }
    }

    pub(crate) fn put(&self, mut conn: T) {
        if !conn.worth_keeping() {
            return;
        }
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        // Oldest first: drop the ones too old to be reused.
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= MAX_IDLE_AGE)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }
}

impl<T> UpstreamPool<T> {
    pub(crate) fn clear(&self) {
        lock(&self.idle).clear();
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.idle).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn {
        home: u64,
        id: u32,
        open: bool,
    }

    impl Reusable for Conn {
        fn usable_now(&mut self) -> bool {
            self.open
        }
        fn worth_keeping(&mut self) -> bool {
            true
        }
        fn home(&self) -> u64 {
            self.home
        }
    }

    #[test]
    fn connections_of_this_thread_are_taken_first_then_the_most_recent() {
        let elsewhere = std::thread::spawn(thread_tag).join().unwrap();
        let here = thread_tag();
        assert_ne!(here, elsewhere);
        let pool = UpstreamPool::default();
        for (home, id, open) in [
            (elsewhere, 1, true),
            (here, 2, true),
            (here, 3, false),
            (elsewhere, 4, true),
        ] {
            pool.put(Conn { home, id, open });
        }
        // 3 is this thread's most recent but closed: dropped, and 2 is taken before the more recent 4.
        assert_eq!(pool.take().map(|c| c.id), Some(2));
        assert_eq!(pool.take().map(|c| c.id), Some(4));
        assert_eq!(pool.take().map(|c| c.id), Some(1));
        assert!(pool.take().is_none());
    }
}
