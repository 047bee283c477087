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
//!
//! The round size alone does not see a peer that shares the thread's core: at a light load beside a co-located
//! backend the rounds hold 2-4 writes, yet each direct `send` wakes the backend, which then preempts the proxy to
//! answer (measured: 0.3 involuntary context switches per request written directly, 0.13 batched, +8% CPU per
//! request; see `docs/benchmarks.md`). So the governor also looks, every [`PREEMPTION_WINDOW`] writes, at how often
//! the thread was preempted meanwhile (the kernel's count, one system call): preempted at least once per
//! [`PREEMPTED_EVERY`] writes, it batches whatever the round size, until it is preempted less than once per
//! [`UNPREEMPTED_EVERY`] writes. With the proxy alone on its core the rate is far below both (0.002-0.015 per request).

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
/// Writes between two looks at the thread's involuntary context switches.
pub(super) const PREEMPTION_WINDOW: u32 = 256;
/// Batch while the thread is preempted at least once per this many writes...
pub(super) const PREEMPTED_EVERY: u32 = 20;
/// ...and stop once it is preempted less than once per this many.
pub(super) const UNPREEMPTED_EVERY: u32 = 50;

/// The mode of one thread, from the sizes of its rounds.
#[derive(Debug)]
pub(super) struct ModeGovernor {
    policy: WriteBatching,
    /// Mean writes per round, times [`SCALE`].
    mean: u32,
    /// The mode the round sizes ask for.
    by_rounds: WriteMode,
    /// Whether the thread is being preempted often (see the module doc).
    preempted: bool,
    /// Writes since the last look at the thread's involuntary context switches, and that count then.
    window_writes: u32,
    last_switches: Option<u64>,
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
    /// Looks at the context switches that found the thread often preempted.
    pub(super) preempted_windows: u64,
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
            by_rounds: mode,
            preempted: false,
            window_writes: 0,
            last_switches: None,
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
            self.window_writes = self.window_writes.saturating_add(writes);
            self.by_rounds = match self.by_rounds {
                WriteMode::Direct if self.mean >= BATCH_FROM * SCALE => WriteMode::Batched,
                WriteMode::Batched if self.mean <= DIRECT_AT * SCALE => WriteMode::Direct,
                same => same,
            };
            self.settle();
        }
        self.mode
    }

    /// Whether it is time to look at the thread's involuntary context switches ([`Self::preemptions`]).
    pub(super) fn wants_preemptions(&self) -> bool {
        self.policy == WriteBatching::Adaptive && self.window_writes >= PREEMPTION_WINDOW
    }

    /// The thread's involuntary context switches so far (the kernel's running count); the mode after them.
    pub(super) fn preemptions(&mut self, total: u64) -> WriteMode {
        let writes = u64::from(std::mem::take(&mut self.window_writes));
        if let Some(last) = self.last_switches.replace(total)
            && writes > 0
        {
            let switches = total.saturating_sub(last);
            self.preempted = if self.preempted {
                switches * u64::from(UNPREEMPTED_EVERY) >= writes
            } else {
                switches * u64::from(PREEMPTED_EVERY) >= writes
            };
            if self.preempted {
                self.stats.preempted_windows += 1;
            }
            self.settle();
        }
        self.mode
    }

    fn settle(&mut self) {
        let next = if self.preempted {
            WriteMode::Batched
        } else {
            self.by_rounds
        };
        if next != self.mode {
            self.stats.switches += 1;
            self.mode = next;
        }
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

    /// Runs `rounds` rounds of `writes` on `g` as the engine does, the thread being preempted `per_1000` times per
    /// 1000 writes (`thousandths`: the kernel's running count, times 1000); the mode after them.
    fn run(
        g: &mut ModeGovernor,
        thousandths: &mut u64,
        writes: u32,
        per_1000: u64,
        rounds: usize,
    ) -> WriteMode {
        for _ in 0..rounds {
            g.round(writes);
            *thousandths += u64::from(writes) * per_1000;
            if g.wants_preemptions() {
                g.preemptions(*thousandths / 1000);
            }
        }
        g.mode()
    }

    /// The shared layout at half rate: small rounds, but each direct write is answered by a backend on this core
    /// that preempts the thread (0.15 per write measured): the thread batches.
    #[test]
    fn small_rounds_of_a_preempted_thread_batch() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        let mut total = 0;
        assert_eq!(run(&mut g, &mut total, 3, 150, 10), WriteMode::Direct);
        // The first look only sets the baseline; the second decides.
        assert_eq!(run(&mut g, &mut total, 3, 150, 200), WriteMode::Batched);
        // Batched, the backend takes several writes per wake-up and preempts less (0.065 per write measured):
        // still above the lower threshold, so the thread stays batched.
        assert_eq!(run(&mut g, &mut total, 3, 65, 10_000), WriteMode::Batched);
        let (stats, _) = g.take_stats();
        assert_eq!(stats.switches, 1, "{stats:?}");
        assert!(stats.preempted_windows > 100, "{stats:?}");
    }

    /// The own layout: small rounds, the thread alone on its core (0.002-0.0075 preemptions per write measured):
    /// it writes directly; a preempted thread whose preemptions stop goes back to direct writes.
    #[test]
    fn a_thread_alone_on_its_core_writes_directly() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        let mut total = 0;
        assert_eq!(run(&mut g, &mut total, 3, 8, 10_000), WriteMode::Direct);
        assert_eq!(g.take_stats().0.switches, 0);
        assert_eq!(run(&mut g, &mut total, 3, 200, 1_000), WriteMode::Batched);
        assert_eq!(run(&mut g, &mut total, 3, 5, 1_000), WriteMode::Direct);
    }

    /// Between the thresholds the mode stays, whichever it is: one switch in all (the burst), none from the middle.
    #[test]
    fn preemptions_between_the_thresholds_keep_the_mode() {
        let between = 1000 / u64::from((PREEMPTED_EVERY + UNPREEMPTED_EVERY) / 2);
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        let mut total = 0;
        assert_eq!(
            run(&mut g, &mut total, 2, between, 5_000),
            WriteMode::Direct
        );
        run(&mut g, &mut total, 2, 500, 1_000);
        assert_eq!(
            run(&mut g, &mut total, 2, between, 5_000),
            WriteMode::Batched
        );
        assert_eq!(g.take_stats().0.switches, 1);
    }

    /// Large rounds batch whether or not the thread is preempted; fixed policies never look.
    #[test]
    fn preemptions_add_to_the_round_rule_and_fixed_policies_ignore_them() {
        let mut g = ModeGovernor::new(WriteBatching::Adaptive);
        let mut total = 0;
        assert_eq!(run(&mut g, &mut total, 40, 0, 1_000), WriteMode::Batched);
        for policy in [WriteBatching::Always, WriteBatching::Never] {
            let mut g = ModeGovernor::new(policy);
            let before = g.mode();
            let mut total = 0;
            assert_eq!(run(&mut g, &mut total, 2, 900, 5_000), before);
            assert!(!g.wants_preemptions());
        }
    }
}
