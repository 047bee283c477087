//! Turning `std::time::Instant` into the `u64` milliseconds every table call takes.

use std::time::Instant;

/// Milliseconds from `base` to `now` (0 if `now` is earlier), the time unit of every table call.
pub fn millis_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX)
}

/// A monotonic millisecond clock relative to a fixed base, shared by everything that calls the
/// tables of one process (so all `now` values are comparable).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    /// A clock whose zero is `base`.
    pub fn starting_at(base: Instant) -> Self {
        Self { base }
    }

    /// Milliseconds since the base, now.
    pub fn now_ms(&self) -> u64 {
        millis_since(self.base, Instant::now())
    }

    /// Milliseconds since the base at `instant`.
    pub fn at(&self, instant: Instant) -> u64 {
        millis_since(self.base, instant)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn millis_relative_to_base() {
        let base = Instant::now();
        let clock = Clock::starting_at(base);
        assert_eq!(clock.at(base), 0);
        assert_eq!(clock.at(base + Duration::from_millis(1500)), 1500);
        assert_eq!(millis_since(base + Duration::from_secs(1), base), 0);
        assert!(clock.now_ms() < 60_000);
    }
}
