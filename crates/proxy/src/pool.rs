//! Idle upstream HTTP/1.1 connections of one real server, reused across client requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::Upstream;

use crate::state::lock;

/// Most idle connections kept per server; more are closed.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are not reused (servers commonly close keep-alive at 5-60 s).
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

#[derive(Default, Debug)]
pub(crate) struct UpstreamPool {
    idle: Mutex<Vec<(Upstream, Instant)>>,
}

impl UpstreamPool {
    /// Most recently used idle connection that is still open and ready, if any.
    pub(crate) fn take(&self) -> Option<Upstream> {
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        while let Some((sender, since)) = idle.pop() {
            if sender.is_ready() && now.duration_since(since) < MAX_IDLE_AGE {
                return Some(sender);
            }
        }
        None
    }

    pub(crate) fn put(&self, sender: Upstream) {
        if sender.is_closed() {
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
            idle.push((sender, Instant::now()));
        }
    }

    pub(crate) fn clear(&self) {
        lock(&self.idle).clear();
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.idle).len()
    }
}
