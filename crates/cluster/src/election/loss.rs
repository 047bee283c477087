//! Heartbeats under random loss: a node that misses its peer's heartbeats asks again, and a node whose peer missed
//! ours answers at once, so a lossy link gets many chances to prove the peer alive within `dead_ms`, not one per
//! interval.
//!
//! Silence is the only evidence of a dead host, so with one heartbeat per interval a standby gives up a live peer as
//! soon as about `dead_ms / interval_ms` heartbeats in a row are lost: at the defaults (200/1000) and 30 % random loss
//! (0.3^4..0.3^5 per heartbeat) that happened within a minute in most runs of the lab's `heartbeat-loss` drill. Two
//! rules, with no new wire field:
//! - **poll**: once the peer is overdue by half an interval (silent for 1.5 intervals), heartbeats go out every
//!   `interval/4` (at least 1 ms) until it is heard again or declared dead (not to a peer that said `stopped`);
//! - **answer**: a heartbeat from the peer that acknowledges one of ours older than our latest gets our next heartbeat
//!   at once, if that is a loss and not two heartbeats crossing in flight: our latest left half an interval ago,
//!   or the newest one the peer acknowledges left 1.5 intervals ago (the peer is polling: each poll is answered).
//!
//! Traffic stays bounded: polls only during a silence, at most four per interval; at most one answer per heartbeat
//! received, and those are authenticated and replay-checked before they reach the election. The heartbeats sent are
//! ordinary ones, built as every other: nothing here changes what either node decides, only how soon it hears.

use super::machine::Election;
use crate::wire::{Heartbeat, NodeState};

impl Election {
    /// Spacing of polls while the peer is overdue.
    fn poll_spacing_ms(&self) -> u64 {
        (self.cfg.timings.interval_ms / 4).max(1)
    }

    /// When the next poll is due; `u64::MAX` while the peer is not overdue (or never heard, or given up).
    pub(super) fn poll_due_ms(&self) -> u64 {
        let t = &self.cfg.timings;
        // A stopped node repeats its news every 5 ms already, and its driver ends with the linger; a stopped peer
        // has nothing to prove (polling it would only race a restarted peer's first heartbeats with our answers).
        let peer_stopped = self
            .peer
            .as_ref()
            .is_some_and(|p| p.heartbeat.state == NodeState::Stopped);
        if !self.cfg.has_peer
            || self.peer_dead_reported
            || self.state == NodeState::Stopped
            || peer_stopped
            || self.last_heard_ms().is_none()
        {
            return u64::MAX;
        }
        let overdue_at = self
            .peer_clock_ms
            .saturating_add(t.interval_ms + t.interval_ms / 2);
        let last_sent = self.sent_at.back().map_or(0, |&(_, at)| at);
        overdue_at.max(last_sent.saturating_add(self.poll_spacing_ms()))
    }

    /// The peer's heartbeat says it missed our latest one: send the next at once.
    pub(super) fn answer_if_peer_missed_ours(&mut self, hb: &Heartbeat, now: u64) {
        let t = &self.cfg.timings;
        let Some(&(latest_seq, latest_sent_ms)) = self.sent_at.back() else {
            return;
        };
        // A peer that has not heard this incarnation yet is answered on first contact already (`on_heartbeat`);
        // answering it again would only race our first heartbeats (a rolling upgrade's newest version) with more.
        if hb.ack_epoch != self.cfg.boot_epoch || hb.ack_seq >= latest_seq {
            return;
        }
        // Lost rather than crossing this heartbeat in flight: our latest left half an interval ago (far above a
        // LAN's delay), or the newest one the peer has heard is 1.5 intervals old (it is polling: answer each poll).
        let half = (t.interval_ms / 2).max(1);
        let acked_sent_ms = self
            .sent_at
            .iter()
            .rev()
            .find(|&&(seq, _)| seq <= hb.ack_seq)
            .map_or(0, |&(_, at)| at);
        if now >= latest_sent_ms.saturating_add(half)
            || now >= acked_sent_ms.saturating_add(t.interval_ms + half)
        {
            self.send_now = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{LinkMode, Sim, SimParams};
    use super::super::{Event, Timings};
    use crate::wire::NodeState;

    /// A settled pair (lb1 active, lb2 standby) at INTERVAL/DEAD, link delays up to `max_delay_ms`.
    fn settled(interval_ms: u64, dead_ms: u64, max_delay_ms: u64, seed: u64) -> Sim {
        let mut params = SimParams::new(interval_ms);
        params.timings = Timings {
            interval_ms,
            dead_ms,
            warn_ms: (interval_ms + dead_ms) / 2,
            init_dead_ms: 3000,
        };
        params.max_delay_ms = max_delay_ms;
        params.seed = seed;
        let mut sim = Sim::new(params);
        sim.run_for(3500);
        assert!(sim.nodes[0].is_active() && sim.nodes[1].state() == Some(NodeState::Standby));
        sim
    }

    /// Runs `ms` of random loss at `percent` on a settled pair; the live peer given up as dead, as (node, time)s.
    fn false_deaths(sim: &mut Sim, percent: u64, ms: u64) -> Vec<(usize, u64)> {
        let since = sim.now;
        sim.set_mode(LinkMode::Lossy(percent));
        sim.run_for(ms);
        sim.set_mode(LinkMode::Healthy);
        sim.run_for(2000);
        (0..2)
            .filter_map(|i| {
                sim.first_event(i, since, |e| matches!(e, Event::PeerDead { .. }))
                    .map(|at| (i, at))
            })
            .collect()
    }

    #[test]
    fn thirty_percent_loss_at_the_defaults_moves_nothing_for_minutes() {
        // Before polls and answers, every one of these seeds gave a live peer up within the 2 minutes (7-116 s).
        for seed in 1..=16 {
            let mut sim = settled(200, 1000, 1, seed);
            let deaths = false_deaths(&mut sim, 30, 120_000);
            assert!(
                deaths.is_empty(),
                "seed {seed}: live peer declared dead {deaths:?}"
            );
            assert_eq!(sim.active_exits, [0, 0], "seed {seed}: the role moved");
            assert!(sim.nodes[0].is_active() && sim.nodes[1].state() == Some(NodeState::Standby));
            sim.assert_clean();
        }
    }

    #[test]
    fn ten_percent_loss_at_10_30_moves_nothing() {
        // Before: every seed gave a live peer up within 5 s (0.1^3 per interval).
        for seed in 1..=8 {
            let mut sim = settled(10, 30, 0, seed);
            let deaths = false_deaths(&mut sim, 10, 60_000);
            assert!(
                deaths.is_empty(),
                "seed {seed}: live peer declared dead {deaths:?}"
            );
            assert_eq!(sim.active_exits, [0, 0], "seed {seed}: the role moved");
            sim.assert_clean();
        }
    }

    #[test]
    fn a_healthy_link_sends_no_more_than_one_heartbeat_per_interval() {
        // Answers must not echo each other: with delays (reordering, acks crossing in flight) and without.
        for max_delay_ms in [0, 3, 20] {
            let mut sim = settled(200, 1000, max_delay_ms, 7);
            let before = [0, 1].map(|i| sim.nodes[i].e().stats().heartbeats_built);
            sim.run_for(60_000);
            for (i, before) in before.into_iter().enumerate() {
                let sent = sim.nodes[i].e().stats().heartbeats_built - before;
                assert!(
                    (295..=310).contains(&sent),
                    "node {i}, delay <= {max_delay_ms} ms: {sent} heartbeats in 60 s at 200 ms"
                );
            }
        }
    }

    #[test]
    fn polls_are_bounded_and_a_dead_host_still_takes_dead_ms() {
        let mut sim = settled(200, 1000, 1, 3);
        let before = sim.nodes[1].e().stats().heartbeats_built;
        let cut = sim.now;
        sim.set_mode(LinkMode::Cut);
        // the last heartbeat heard left at most one interval before the cut: dead_ms after it, not sooner
        sim.run_for(790);
        assert!(!sim.nodes[1].holds(), "taken over before dead_ms");
        // 1.5 intervals of silence, then one poll every 50 ms: at most ~4 per interval
        let polled = sim.nodes[1].e().stats().heartbeats_built - before;
        assert!(
            (8..=20).contains(&polled),
            "{polled} heartbeats in 790 ms of silence"
        );
        sim.run_for(1000);
        let dead_at = sim.first_event(1, cut, |e| matches!(e, Event::PeerDead { .. }));
        assert!(
            dead_at.is_some_and(|t| (800..=1001).contains(&(t - cut))),
            "{dead_at:?}"
        );
        // once the peer is given up, polls stop: back to one heartbeat per interval
        let at_death = sim.nodes[1].e().stats().heartbeats_built;
        sim.run_for(2000);
        let after = sim.nodes[1].e().stats().heartbeats_built - at_death;
        assert!(
            after <= 16,
            "{after} heartbeats in 2 s after the peer was given up"
        );
    }
}
