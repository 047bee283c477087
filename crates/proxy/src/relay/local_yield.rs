//! When the io_uring relay yields the CPU to a process on this host before it sleeps (sans-IO: fed the sends, the
//! measured length of each yield and whether answers were waiting after it, it answers whether to yield).
//!
//! Why yield: a backend sharing the core then answers the whole batch of requests just passed to it before the
//! relay runs again, instead of the relay going to sleep and being woken by each answer. Why not always: with a
//! CPU-bound process on the same core a yield hands it the rest of its time slice, and every request waits that
//! long. A yield is expected to last about as long as the peers need to answer what was just sent to them; one that
//! lasts far longer means the core went to someone who was not answering us. Two of those in a row turn yielding
//! off for [`BACKOFF`] (two, so that one timer or page fault on the way does not).
//!
//! A yield is also useless when no local peer is waiting to run on this core (the backend runs on another core, or
//! the proxy is not saturated): the system call returns at once and the relay sleeps anyway. So a yield after which
//! no answer is waiting makes the next ones rarer: after such a yield the relay goes to sleep without yielding
//! 1, 2, 4, ... up to [`FUTILE_SKIP_MAX`] times, and a yield that finds answers waiting ends the back-off.

use std::time::{Duration, Instant};

/// What a yield may take at most, whatever was sent: a process woken on this host gets the core within this.
const BASE: Duration = Duration::from_micros(200);
/// What a yield may take more per message just sent to a process on this host. A request and its answer are two
/// such messages when the client is local too; a small backend answer costs ~12 us of CPU on the benchmark
/// machine. Longer allowances let a busy neighbour keep the core for most of its time slice at every yield
/// (measured: 50 us per send cost 9% of req/s under load with a busy loop on the core).
const PER_SEND: Duration = Duration::from_micros(15);
/// Sends counted at most: past this, a batch does not buy a longer yield (64 sends: ~1.2 ms in all).
const MAX_SENDS: u32 = 64;
/// Over-long yields in a row that turn yielding off.
const OVERLONG_IN_A_ROW: u32 = 2;
/// How long yielding stays off then.
pub(crate) const BACKOFF: Duration = Duration::from_secs(1);
/// At most this many sleeps without a yield after futile yields in a row.
const FUTILE_SKIP_MAX: u32 = 64;

#[derive(Debug)]
pub(crate) struct YieldGovernor {
    enabled: bool,
    /// Messages sent to processes on this host since the last decision.
    sends: u32,
    /// Over-long yields in a row.
    overlong: u32,
    /// No yielding before this.
    off_until: Option<Instant>,
    /// Yields in a row after which no answer was waiting, and how many sleeps are still to go without a yield.
    futile: u32,
    skip: u32,
}

impl YieldGovernor {
    pub(crate) fn new(enabled: bool) -> Self {
        YieldGovernor {
            enabled,
            sends: 0,
            overlong: 0,
            off_until: None,
            futile: 0,
            skip: 0,
        }
    }

    /// A message went to a process on this host.
    pub(crate) fn sent_local(&mut self) {
        self.sends = self.sends.saturating_add(1);
    }

    /// About to sleep: `Some(budget)` if the thread should yield first, with what the yield may take before it
    /// counts as over-long. Starts a new count of sends either way.
    pub(crate) fn before_sleep(&mut self, now: Instant) -> Option<Duration> {
        let sends = std::mem::take(&mut self.sends);
        if !self.enabled || sends == 0 || self.off_until.is_some_and(|until| now < until) {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        Some(BASE + PER_SEND * sends.min(MAX_SENDS))
    }

    /// A yield with `budget` (from [`Self::before_sleep`]) kept the thread off the CPU for `took`; `answered`: work
    /// for the relay was waiting after it (completions of the ring).
    pub(crate) fn yielded(
        &mut self,
        budget: Duration,
        took: Duration,
        answered: bool,
        now: Instant,
    ) {
        if answered {
            self.futile = 0;
        } else {
            self.futile = self.futile.saturating_add(1);
            self.skip = 1u32
                .checked_shl(self.futile - 1)
                .unwrap_or(u32::MAX)
                .min(FUTILE_SKIP_MAX);
        }
        if took <= budget {
            self.overlong = 0;
            return;
        }
        self.overlong += 1;
        if self.overlong >= OVERLONG_IN_A_ROW {
            self.overlong = 0;
            self.off_until = Some(now + BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn yields_only_after_sending_to_this_host() {
        let now = Instant::now();
        let mut governor = YieldGovernor::new(true);
        assert_eq!(governor.before_sleep(now), None);
        governor.sent_local();
        governor.sent_local();
        assert_eq!(governor.before_sleep(now), Some(BASE + PER_SEND * 2));
        // The count starts again.
        assert_eq!(governor.before_sleep(now), None);
    }

    #[test]
    fn switched_off_never_yields() {
        let mut governor = YieldGovernor::new(false);
        governor.sent_local();
        assert_eq!(governor.before_sleep(Instant::now()), None);
    }

    #[test]
    fn a_busy_neighbour_turns_yielding_off_for_a_while() {
        let start = Instant::now();
        let mut governor = YieldGovernor::new(true);
        // One request at a time, and each yield hands the core to a busy loop for 1.5 ms.
        governor.sent_local();
        let budget = governor.before_sleep(start).unwrap();
        governor.yielded(budget, 1500 * US, true, start);
        governor.sent_local();
        let budget = governor.before_sleep(start).unwrap();
        governor.yielded(budget, 1500 * US, true, start);
        governor.sent_local();
        assert_eq!(governor.before_sleep(start + 999 * 1000 * US), None);
        governor.sent_local();
        assert!(governor.before_sleep(start + BACKOFF).is_some());
    }

    #[test]
    fn one_long_yield_or_a_long_answer_to_a_big_batch_does_not() {
        let now = Instant::now();
        let mut governor = YieldGovernor::new(true);
        for took in [5000 * US, 20 * US, 5000 * US, 30 * US] {
            governor.sent_local();
            let budget = governor.before_sleep(now).unwrap();
            governor.yielded(budget, took, true, now);
        }
        // 64 requests passed on at once: the backend may take ~0.8 ms to answer them all.
        for _ in 0..3 {
            for _ in 0..64 {
                governor.sent_local();
            }
            let budget = governor.before_sleep(now).unwrap();
            governor.yielded(budget, 800 * US, true, now);
        }
        governor.sent_local();
        assert!(governor.before_sleep(now).is_some());
    }

    /// Counts the yields of `sleeps` sleeps, each after one local send, `answered` saying whether each yield found
    /// answers waiting.
    fn yields_of(governor: &mut YieldGovernor, sleeps: usize, answered: bool) -> usize {
        let now = Instant::now();
        let mut yields = 0;
        for _ in 0..sleeps {
            governor.sent_local();
            if let Some(budget) = governor.before_sleep(now) {
                yields += 1;
                governor.yielded(budget, US, answered, now);
            }
        }
        yields
    }

    #[test]
    fn futile_yields_become_rare_and_an_answered_one_restores_them() {
        let mut governor = YieldGovernor::new(true);
        // The backend answers during every yield (it shares the core): a yield before every sleep.
        assert_eq!(yields_of(&mut governor, 100, true), 100);
        // Nobody answers (the backend runs elsewhere): 1, 2, 4, ... sleeps skipped, then one in FUTILE_SKIP_MAX + 1.
        let futile = yields_of(&mut governor, 10_000, false);
        assert!(
            (10_000 / (FUTILE_SKIP_MAX as usize + 1)..=10_000 / (FUTILE_SKIP_MAX as usize) + 8)
                .contains(&futile),
            "{futile} yields in 10000 sleeps"
        );
        // Answers again: within FUTILE_SKIP_MAX + 1 sleeps a yield probes, finds them, and yielding resumes.
        let mut sleeps = 0;
        while yields_of(&mut governor, 1, true) == 0 {
            sleeps += 1;
            assert!(sleeps <= FUTILE_SKIP_MAX, "no probe within {sleeps} sleeps");
        }
        assert_eq!(yields_of(&mut governor, 100, true), 100);
    }

    #[test]
    fn one_futile_yield_skips_only_the_next_sleep() {
        let now = Instant::now();
        let mut governor = YieldGovernor::new(true);
        governor.sent_local();
        let budget = governor.before_sleep(now).unwrap();
        governor.yielded(budget, US, false, now);
        governor.sent_local();
        assert_eq!(governor.before_sleep(now), None);
        governor.sent_local();
        let budget = governor.before_sleep(now).unwrap();
        governor.yielded(budget, US, true, now);
        assert_eq!(yields_of(&mut governor, 10, true), 10);
    }

    #[test]
    fn huge_batches_do_not_buy_unbounded_yields() {
        let mut governor = YieldGovernor::new(true);
        for _ in 0..100_000 {
            governor.sent_local();
        }
        assert_eq!(
            governor.before_sleep(Instant::now()),
            Some(BASE + PER_SEND * MAX_SENDS)
        );
    }
}
