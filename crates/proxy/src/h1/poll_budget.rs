//! How long an HTTP thread keeps polling for work before it sleeps (`[tuning] http_poll_us`), sans-IO: fed how
//! long each wait for work lasted, it answers the next polling budget.
//!
//! Why: a thread that sleeps in `epoll_wait` must be woken by whoever makes its socket readable. A wake-up across
//! cores costs the waker a remote wake-up of the thread (and, when that core halted, an IPI, a VM exit under
//! virtualisation), and costs the sleeper a switch out and back in. Measured with the proxy alone on its core and
//! the client and nginx on the other (`docs/benchmarks.md`): tandem slept 0.3-0.45 times per request against
//! HAProxy's 0.04 (HAProxy, nearly saturated, seldom runs out of work), and the other core spent ~10% more per
//! request. Polling a few tens of microseconds before sleeping catches the next request when requests come that
//! often, and no socket then has a sleeper to wake.
//!
//! Polling is only worth its CPU while work comes within the budget, so the budget adapts as the kernel's
//! guest halt-polling does (`cpuidle-haltpoll`): a wait that ended within the limit (work would have been caught by
//! polling that long) grows the budget, doubling from [`GROW_FROM`] up to the limit; a wait longer than the limit
//! halves it, and under [`GROW_FROM`] it drops to zero, so an idle or lightly loaded thread does not poll at all.

use std::time::Duration;

/// The first budget after a short wait, and the smallest kept.
pub(super) const GROW_FROM: Duration = Duration::from_micros(5);

/// One thread's polling budget.
#[derive(Debug)]
pub(super) struct PollBudget {
    limit: Duration,
    budget: Duration,
}

impl PollBudget {
    /// Polls at most `limit` before sleeping; zero never polls.
    pub(super) fn new(limit: Duration) -> Self {
        PollBudget {
            limit,
            budget: Duration::ZERO,
        }
    }

    /// How long to poll for work now before sleeping.
    pub(super) fn budget(&self) -> Duration {
        self.budget
    }

    /// A wait for work (polling, then sleeping if the budget ran out) lasted `waited`.
    pub(super) fn waited(&mut self, waited: Duration) {
        if self.limit.is_zero() {
            return;
        }
        if waited <= self.limit {
            self.budget = (self.budget * 2).max(GROW_FROM).min(self.limit);
        } else {
            self.budget /= 2;
            if self.budget < GROW_FROM {
                self.budget = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn short_waits_grow_the_budget_to_the_limit_and_long_ones_shrink_it_to_zero() {
        let mut p = PollBudget::new(30 * US);
        assert_eq!(p.budget(), Duration::ZERO, "starts asleep");
        let grown: Vec<_> = (0..4)
            .map(|_| {
                p.waited(10 * US);
                p.budget()
            })
            .collect();
        assert_eq!(grown, [5 * US, 10 * US, 20 * US, 30 * US]);
        let shrunk: Vec<_> = (0..4)
            .map(|_| {
                p.waited(200 * US);
                p.budget()
            })
            .collect();
        assert_eq!(
            shrunk,
            [
                15 * US,
                7_500 * Duration::from_nanos(1),
                Duration::ZERO,
                Duration::ZERO
            ]
        );
    }

    #[test]
    fn a_zero_limit_never_polls() {
        let mut p = PollBudget::new(Duration::ZERO);
        for w in [0, 1, 5, 1000] {
            p.waited(Duration::from_micros(w));
            assert_eq!(p.budget(), Duration::ZERO);
        }
    }

    #[test]
    fn a_wait_exactly_at_the_limit_counts_as_short() {
        let mut p = PollBudget::new(20 * US);
        p.waited(20 * US);
        assert_eq!(p.budget(), GROW_FROM);
    }

    proptest! {
        /// Whatever the waits, the budget stays zero or within [GROW_FROM, limit].
        #[test]
        fn the_budget_stays_within_bounds(limit_us in 0u64..200, waits in proptest::collection::vec(0u64..1000, 0..64)) {
            let limit = Duration::from_micros(limit_us);
            let mut p = PollBudget::new(limit);
            for w in waits {
                p.waited(Duration::from_micros(w));
                let b = p.budget();
                prop_assert!(b <= limit);
                prop_assert!(b.is_zero() || b >= GROW_FROM.min(limit));
            }
        }
    }
}
