//! Whether an HTTP thread writes directly or batches its small writes through io_uring ([`super::batch`]), sans-IO:
//! fed the number of writes of each round (the writes made between two runs of the thread's flusher, i.e. by one
//! pass over the tasks that were runnable together), it answers the mode for the next writes.
//!
//! Why: batching pays when the rounds are large, as when the proxy runs saturated beside a backend on its own core
//! (a whole batch reaches the backend in one wake-up, and the proxy is not preempted by each answer; see
//! `docs/benchmarks.md`). When the rounds are small (the proxy is not saturated, or the backend runs on another
//! core), each batch costs an `io_uring_enter`, a second poll of every writer and a run of the flusher for only a
//! few sends: a plain `send` per write is cheaper there. The mean round size is a moving average, and the two
//! thresholds are far enough apart that the mode does not flap at a load between them.

/// How an HTTP thread of the native engine writes its small writes (`[tuning] http_write_batching`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteBatching {
    /// Batched while the thread's recent rounds of writes are large, written directly while they are small.
    #[default]
    Adaptive,
    /// Always batched through io_uring (the behaviour before adaptive batching).
    Always,
    /// Never batched: one plain system call per write, as in the runtime's tasks.
    Never,
}

/// What the next writes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteMode {
    /// A plain `send` from the writer's task.
    Direct,
    /// Queued, and issued with the rest of the round in one `io_uring_enter`.
    Batched,
}

/// Fixed-point scale of the mean round size.
const SCALE: u32 = 256;
/// The mean moves by 1/2^WEIGHT_SHIFT of the difference at each round: ~16 rounds to follow a change in load (rounds
/// last microseconds to a millisecond), smooth enough that a few odd rounds do not switch the mode.
const WEIGHT_SHIFT: u32 = 4;
/// Rounds larger than this count as this (one huge round must not hold the mode for long).
const MAX_COUNTED: u32 = 64;
/// Batch once the mean round holds at least this many writes...
pub(super) const BATCH_FROM: u32 = 8;
/// ...and write directly again once it has fallen to this many or fewer.
pub(super) const DIRECT_AT: u32 = 4;

/// The mode of one thread, from the sizes of its rounds.
#[derive(Debug)]
pub(super) struct ModeGovernor {
    policy: WriteBatching,
    /// Mean writes per round, times [`SCALE`].
    mean: u32,
    mode: WriteMode,
    stats: RoundStats,
}

/// Counts for the thread's periodic debug line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoundStats {
    pub(super) rounds: u64,
    pub(super) writes: u64,
    pub(super) batched_rounds: u64,
    pub(super) switches: u64,
}

impl ModeGovernor {
    pub(super) fn new(policy: WriteBatching) -> Self {
        let mode = match policy {
            WriteBatching::Always => WriteMode::Batched,
            WriteBatching::Adaptive | WriteBatching::Never => WriteMode::Direct,
        };
        ModeGovernor {
            policy,
            mean: 0,
            mode,
            stats: RoundStats::default(),
        }
    }

    /// The mode for the writes of the coming round.
    pub(super) fn mode(&self) -> WriteMode {
        self.mode
    }

    /// A round made `writes` small writes (0: the flusher ran for something else, not a round); the mode after it.
    pub(super) fn round(&mut self, writes: u32) -> WriteMode {
        if writes == 0 {
            return self.mode;
        }
        self.stats.rounds += 1;
        self.stats.writes += u64::from(writes);
        if self.mode == WriteMode::Batched {
            self.stats.batched_rounds += 1;
        }
        let sample = writes.min(MAX_COUNTED) * SCALE;
        // mean += (sample - mean) / 2^WEIGHT_SHIFT, in integers that stay within [0, MAX_COUNTED * SCALE].
        self.mean = self.mean - (self.mean >> WEIGHT_SHIFT) + (sample >> WEIGHT_SHIFT);
        if self.policy == WriteBatching::Adaptive {
            let next = match self.mode {
                WriteMode::Direct if self.mean >= BATCH_FROM * SCALE => WriteMode::Batched,
                WriteMode::Batched if self.mean <= DIRECT_AT * SCALE => WriteMode::Direct,
                same => same,
            };
            if next != self.mode {
                self.stats.switches += 1;
                self.mode = next;
            }
        }
        self.mode
    }

    /// Rounds counted since the last [`Self::take_stats`].
    pub(super) fn rounds(&self) -> u64 {
        self.stats.rounds
    }

    /// The counts since the last call, and the current mean round size.
    pub(super) fn take_stats(&mut self) -> (RoundStats, f64) {
        (
            std::mem::take(&mut self.stats),
            f64::from(self.mean) / f64::from(SCALE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(g: &mut ModeGovernor, writes: u32, rounds: usize) -> WriteMode {
        let mut mode = g.mode();
        for _ in 0..rounds {
            mode = g.round(writes);
        }
        mode
    }

    #[test]
    fn small_rounds_write_directly() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        assert_eq!(g.mode(), WriteMode::Direct);
        for writes in [1, 2, 1, 3, 2, 1, 2, 2] {
            assert_eq!(g.round(writes), WriteMode::Direct);
        }
        assert_eq!(feed(&mut g, 2, 1000), WriteMode::Direct);
    }

    #[test]
    fn large_rounds_batch_within_a_few_rounds_and_small_ones_end_it() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        let mut rounds = 0;
        while g.round(40) == WriteMode::Direct {
            rounds += 1;
            assert!(
                rounds < 10,
                "still direct after {rounds} rounds of 40 writes"
            );
        }
        assert_eq!(feed(&mut g, 40, 100), WriteMode::Batched);
        let mut rounds = 0;
        while g.round(1) == WriteMode::Batched {
            rounds += 1;
            assert!(
                rounds < 80,
                "still batched after {rounds} rounds of 1 write"
            );
        }
        assert_eq!(feed(&mut g, 1, 100), WriteMode::Direct);
    }

    /// Hysteresis: a load whose rounds sit between the thresholds keeps whichever mode it found.
    #[test]
    fn rounds_between_the_thresholds_keep_the_mode() {
        let middle = (BATCH_FROM + DIRECT_AT) / 2;
        assert!(DIRECT_AT < middle && middle < BATCH_FROM);
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        assert_eq!(feed(&mut g, middle, 1000), WriteMode::Direct);
        feed(&mut g, 40, 100);
        assert_eq!(feed(&mut g, middle, 1000), WriteMode::Batched);
        assert_eq!(g.take_stats().0.switches, 1);
    }

    /// A load alternating small and large rounds around the thresholds does not switch at every round.
    #[test]
    fn a_jittery_load_does_not_flap() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        for i in 0..10_000u32 {
            // Rounds of 2 to 10 writes (mean 6), in a fixed pseudo-random order.
            g.round(2 + (i.wrapping_mul(2_654_435_761) >> 29));
        }
        let (stats, _) = g.take_stats();
        assert_eq!(stats.rounds, 10_000);
        assert!(stats.switches <= 2, "{} switches", stats.switches);
    }

    #[test]
    fn one_huge_round_does_not_hold_batching() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        assert_eq!(
            g.round(1_000_000),
            WriteMode::Direct,
            "one round is not a load"
        );
        assert_eq!(feed(&mut g, 1_000_000, 2), WriteMode::Batched);
        // Each huge round counted as MAX_COUNTED: a few dozen small rounds bring the mean down again.
        assert_eq!(feed(&mut g, 1, 30), WriteMode::Direct);
    }

    #[test]
    fn rounds_without_writes_change_nothing() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        feed(&mut g, 40, 100);
        assert_eq!(feed(&mut g, 0, 1000), WriteMode::Batched);
        assert_eq!(g.take_stats().0.rounds, 100);
    }

    #[test]
    fn fixed_policies_never_switch() {
        let mut always = ModeGovernor::new(WriteBatching::Always);
        assert_eq!(feed(&mut always, 1, 1000), WriteMode::Batched);
        let mut never = ModeGovernor::new(WriteBatching::Never);
        assert_eq!(feed(&mut never, 64, 1000), WriteMode::Direct);
        let (stats, mean) = never.take_stats();
        assert_eq!(
            (stats.rounds, stats.writes, stats.switches),
            (1000, 64_000, 0)
        );
        assert!((mean - 64.0).abs() < 1.0, "mean {mean}");
    }
}
