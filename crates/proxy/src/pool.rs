//! Idle upstream HTTP/1.1 connections of one real server, reused across client requests (one pool per engine kind).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::lock;

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
    /// Most recently used idle connection that is still open and ready, if any.
    pub(crate) fn take(&self) -> Option<T> {
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        while let Some((mut conn, since)) = idle.pop() {
            if now.duration_since(since) < MAX_IDLE_AGE && conn.usable_now() {
                return Some(conn);
            }
        }
        None
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
