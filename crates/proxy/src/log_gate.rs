//! Rate-limited logging of per-connection failures ("no real server available", "connect to real
//! server failed", "real server did not answer"): with every server of a service down, each client
//! connection would otherwise write a line, so a busy service could write thousands a second and
//! drown the journal. A gate lets one line through per interval and says how many it held back.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One line per this many milliseconds, per gate.
pub const LOG_INTERVAL_MS: u64 = 1000;

/// Milliseconds since the first call in this process (monotonic), for the gates' clocks.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Lets one event through per [`LOG_INTERVAL_MS`]; lock-free, so the data path never waits on it.
#[derive(Debug, Default)]
pub struct LogGate {
    /// When the last line was let through, +1 (0: never).
    last_ms: AtomicU64,
    /// Events held back since then.
    held: AtomicU64,
}

impl LogGate {
    /// [`LogGate::admit`] now. Read only when a failure happens, so the clock costs the data path nothing.
    pub fn admit_now(&self) -> Option<u64> {
        self.admit(now_ms())
    }

    /// `Some(held back since the last line)` when this event may be logged at `now_ms`, else `None`
    /// (and the event is counted for the next line).
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last - 1) >= LOG_INTERVAL_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The per-service gates of the failures logged per connection.
#[derive(Debug, Default)]
pub struct FailureLogs {
    pub no_server: LogGate,
    pub connect_failed: LogGate,
    pub server_timeout: LogGate,
    pub tls_handshake: LogGate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_count_of_those_held_back() {
        let gate = LogGate::default();
        assert_eq!(gate.admit(0), Some(0), "the first event is logged");
        for t in 1..500 {
            assert_eq!(gate.admit(t), None);
        }
        assert_eq!(gate.admit(999), None);
        assert_eq!(
            gate.admit(1000),
            Some(500),
            "held back: 499 + the one at 999"
        );
        assert_eq!(gate.admit(1001), None);
        assert_eq!(gate.admit(5000), Some(1));
    }

    #[test]
    fn concurrent_events_let_one_line_through_and_count_the_rest() {
        let gate = std::sync::Arc::new(LogGate::default());
        let admitted: u64 = (0..8)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || (0..1000).filter(|_| gate.admit(42).is_some()).count())
            })
            .map(|t| t.join().map_or(0, |n| n as u64))
            .sum();
        assert_eq!(admitted, 1);
        assert_eq!(gate.admit(1042), Some(7999));
    }
}
