//! Server selection, sans-IO: weighted least connections and smooth weighted round robin.
//!
//! The caller describes each server as a [`Candidate`] (weight, current connections, whether it may take a new
//! connection) and gets back the index of the chosen one. No clocks, no sockets: the state is only the smooth-WRR
//! "current weight" of each server.

use tandem_config::model::Balance;

/// One server as seen by the balancer at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Configured weight; 0 takes no new (non-persistent) connections.
    pub weight: u32,
    /// Connections (TCP mode) or in-flight requests (HTTP mode) currently on this server.
    pub active: u64,
    /// Healthy and in admin state Online.
    pub eligible: bool,
}

impl Candidate {
    fn usable(&self) -> bool {
        self.eligible && self.weight > 0
    }
}

/// Balancer state for one service.
#[derive(Debug, Clone)]
pub struct Balancer {
    algorithm: Balance,
    /// Smooth-WRR "current weight", one slot per server (resized when the server list changes).
    current: Vec<i64>,
}

impl Balancer {
    pub fn new(algorithm: Balance) -> Self {
        Self {
            algorithm,
            current: Vec::new(),
        }
    }

    pub fn algorithm(&self) -> Balance {
        self.algorithm
    }

    /// Index of the server for a new connection, or `None` when no candidate is usable.
    ///
    /// Weighted least connections picks the lowest `active / weight`; servers tied on that ratio share by smooth
    /// weighted round robin, so sequential short connections (always tied at zero) still follow the weights.
    pub fn pick(&mut self, candidates: &[Candidate]) -> Option<usize> {
        self.pick_with(candidates.len(), |i| candidates[i])
    }

    /// As [`Balancer::pick`], reading candidate `i` through `candidate(i)` (no allocation on the hot path).
    pub fn pick_with(&mut self, n: usize, candidate: impl Fn(usize) -> Candidate) -> Option<usize> {
        if self.current.len() != n {
            self.current = vec![0; n];
        }
        match self.algorithm {
            Balance::RoundRobin => self.smooth_wrr(n, |i| {
                let c = candidate(i);
                c.usable().then_some(c.weight)
            }),
            Balance::WeightedLeastConnections => {
                let mut best: Option<(usize, Candidate)> = None;
                for i in 0..n {
                    let c = candidate(i);
                    if c.usable() && best.is_none_or(|(_, b)| ratio_cmp(&c, &b).is_lt()) {
                        best = Some((i, c));
                    }
                }
                let (best_index, best) = best?;
                // Connection counts move under us (other workers); if none ties any more on the
                // second read, the least-loaded server of the first read is still a right answer.
                self.smooth_wrr(n, |i| {
                    let c = candidate(i);
                    (c.usable() && ratio_cmp(&c, &best).is_eq()).then_some(c.weight)
                })
                .or(Some(best_index))
            }
        }
    }

    /// nginx's smooth weighted round robin over the members (`Some(weight)`) given by `member`.
    fn smooth_wrr(&mut self, n: usize, member: impl Fn(usize) -> Option<u32>) -> Option<usize> {
        let mut total: i64 = 0;
        let mut chosen: Option<usize> = None;
        for i in 0..n {
            let Some(weight) = member(i) else { continue };
            let w = i64::from(weight);
            self.current[i] += w;
            total += w;
            if chosen.is_none_or(|b| self.current[i] > self.current[b]) {
                chosen = Some(i);
            }
        }
        let chosen = chosen?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

/// Compare `a.active / a.weight` with `b.active / b.weight` without division (weights are > 0 here).
fn ratio_cmp(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    let left = u128::from(a.active) * u128::from(b.weight);
    let right = u128::from(b.active) * u128::from(a.weight);
    left.cmp(&right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(weight: u32, active: u64) -> Candidate {
        Candidate {
            weight,
            active,
            eligible: true,
        }
    }

    #[test]
    fn least_connections_still_picks_when_counts_move_between_reads() {
        // Another worker opens a connection between the two reads of the only server's count: the
        // second read no longer ties with the first, and the answer must still be that server.
        let mut b = Balancer::new(Balance::WeightedLeastConnections);
        let reads = std::cell::Cell::new(0u64);
        let picked = b.pick_with(1, |_| {
            reads.set(reads.get() + 1);
            c(1, 1998 + reads.get())
        });
        assert_eq!(picked, Some(0));
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let mut b = Balancer::new(Balance::RoundRobin);
        let cands = [c(5, 0), c(1, 0), c(1, 0)];
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&cands).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weight_zero_and_ineligible_get_nothing() {
        for alg in [Balance::RoundRobin, Balance::WeightedLeastConnections] {
            let mut b = Balancer::new(alg);
            let cands = [
                c(0, 0),
                Candidate {
                    weight: 10,
                    active: 0,
                    eligible: false,
                },
                c(3, 7),
            ];
            for _ in 0..100 {
                assert_eq!(b.pick(&cands), Some(2));
            }
            assert_eq!(b.pick(&[c(0, 0)]), None);
            assert_eq!(b.pick(&[]), None);
        }
    }

    #[test]
    fn least_connections_prefers_lowest_ratio() {
        let mut b = Balancer::new(Balance::WeightedLeastConnections);
        // ratios: 10/100, 3/10, 1/100 -> third
        assert_eq!(b.pick(&[c(100, 10), c(10, 3), c(100, 1)]), Some(2));
        // 2/200 = 1/100 tie between 0 and 2; both get picked alternately
        let cands = [c(200, 2), c(10, 3), c(100, 1)];
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[b.pick(&cands).unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert_eq!(seen[0], 20);
        assert_eq!(seen[2], 10);
    }

    #[test]
    fn least_connections_under_load_tracks_weights() {
        // Simulate connections that stay open: every pick adds one to the chosen server.
        let mut b = Balancer::new(Balance::WeightedLeastConnections);
        let mut cands = [c(1, 0), c(2, 0), c(3, 0)];
        for _ in 0..600 {
            let i = b.pick(&cands).unwrap();
            cands[i].active += 1;
        }
        assert_eq!(
            [cands[0].active, cands[1].active, cands[2].active],
            [100, 200, 300]
        );
    }

    proptest! {
        #[test]
        fn distribution_matches_weights(weights in proptest::collection::vec(0u32..=256, 1..6), lc in any::<bool>()) {
            let alg = if lc { Balance::WeightedLeastConnections } else { Balance::RoundRobin };
            let mut b = Balancer::new(alg);
            let cands: Vec<Candidate> = weights.iter().map(|&w| c(w, 0)).collect();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..total {
                match b.pick(&cands) {
                    Some(i) => counts[i] += 1,
                    None => prop_assert_eq!(total, 0),
                }
            }
            // One full cycle of smooth WRR gives every server exactly its weight.
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], u64::from(w));
            }
        }

        #[test]
        fn never_picks_unusable(cands in proptest::collection::vec((0u32..5, 0u64..5, any::<bool>()), 0..8), lc in any::<bool>()) {
            let alg = if lc { Balance::WeightedLeastConnections } else { Balance::RoundRobin };
            let mut b = Balancer::new(alg);
            let cands: Vec<Candidate> = cands.into_iter().map(|(weight, active, eligible)| Candidate { weight, active, eligible }).collect();
            for _ in 0..20 {
                match b.pick(&cands) {
                    Some(i) => prop_assert!(cands[i].eligible && cands[i].weight > 0),
                    None => prop_assert!(cands.iter().all(|c| !c.eligible || c.weight == 0)),
                }
            }
        }
    }
}
