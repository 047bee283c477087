//! Tracking the peer: its latest heartbeat, its silence (warn and dead deadlines), and how a live change of the
//! timings moves those deadlines.

use super::config::Timings;
use super::machine::{Election, IncompatiblePeer, PeerView};
use super::messages::{Action, Event, refuse};
use crate::wire::{Heartbeat, IncompatibleHeartbeat, NodeState, PingState, Role};

impl Election {
    /// New `[heartbeat]` timings and auto-failback, taken live. The rule for the switch: no timer already running
    /// fires early because of the change itself (one may fire later than under either timings alone, by less than
    /// the old dead time: failover is delayed once, never hastened into a false one):
    ///
    /// - a peer heard and not yet given up has its warn and dead deadlines restarted from `now` with the new
    ///   lengths: a shorter dead time does not declare it dead at once because its last heartbeat is already older
    ///   than that. A peer already declared dead stays dead (a longer dead time does not revive it);
    /// - a start-up wait still running (`Init`) restarts from `now` with the new `init_dead_ms`;
    /// - the keepalive cadence switches at the next send, which comes no later than one new interval from now (a
    ///   much shorter interval is not held back by a send scheduled on the old one);
    /// - the fault retry delay and the shutdown linger follow the dead time if they were derived from it
    ///   ([`ElectionConfig::new`](super::ElectionConfig::new));
    /// - timings equal to the current ones move no timer (a reload that only flips auto-failback);
    /// - auto-failback on or off is weighed at once, in the same step (turning it off withdraws a failback request).
    ///
    /// The pair is meant to run the same timings (config push brings the new cluster.toml to the peer within
    /// moments). While the two differ, each node's dead time must still exceed the other's interval, or one gives
    /// the other up between two of its heartbeats: a reload that cuts the dead time below the old interval, or
    /// raises the interval above the old dead time, should be done in two steps.
    ///
    /// Timings that break the relations the election needs (`interval_ms >= 1`, `dead_ms > interval_ms`) are
    /// refused: the config crate never lets them through, so a refusal here means a bug upstream.
    pub(super) fn set_timings(
        &mut self,
        timings: Timings,
        auto_failback: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if timings.interval_ms == 0 || timings.dead_ms <= timings.interval_ms {
            refuse(
                out,
                "set timings",
                format!(
                    "interval_ms {} / dead_ms {}: dead_ms must exceed interval_ms >= 1",
                    timings.interval_ms, timings.dead_ms
                ),
            );
            return;
        }
        let old = self.cfg.timings;
        if old == timings {
            // Only auto-failback changed (or nothing): no timer moves.
            if self.cfg.auto_failback != auto_failback {
                self.cfg.auto_failback = auto_failback;
                out.push(Action::Event(Event::TimingsChanged {
                    timings,
                    auto_failback,
                }));
            }
            return;
        }
        if self.last_heard_ms().is_some() && !self.peer_dead_reported {
            self.peer_clock_ms = now;
        }
        if self.state == NodeState::Init {
            self.started_ms = now;
        }
        self.next_send_ms = self
            .next_send_ms
            .min(now.saturating_add(timings.interval_ms));
        if self.cfg.fault_retry_ms == old.dead_ms.max(1000) {
            self.cfg.fault_retry_ms = timings.dead_ms.max(1000);
        }
        if self.cfg.shutdown_linger_ms == old.dead_ms.min(1000) {
            self.cfg.shutdown_linger_ms = timings.dead_ms.min(1000);
        }
        self.cfg.timings = timings;
        self.cfg.auto_failback = auto_failback;
        out.push(Action::Event(Event::TimingsChanged {
            timings,
            auto_failback,
        }));
    }

    pub(super) fn check_silence(&mut self, now: u64, out: &mut Vec<Action>) {
        let t = self.cfg.timings;
        let Some(last_heard) = self.last_heard_ms() else {
            return;
        };
        // Thresholds count from the peer clock; the events report the real silence.
        let counted = now.saturating_sub(self.peer_clock_ms);
        let silent = now.saturating_sub(last_heard);
        if !self.peer_warned && counted >= t.warn_ms {
            self.peer_warned = true;
            self.stats.warn_time_exceeded += 1;
            out.push(Action::Event(Event::PeerSilent { silent_ms: silent }));
        }
        if !self.peer_dead_reported && counted >= t.dead_ms {
            self.peer_dead_reported = true;
            out.push(Action::Event(Event::PeerDead { silent_ms: silent }));
        }
    }

    pub(super) fn on_heartbeat(&mut self, hb: Heartbeat, now: u64, out: &mut Vec<Action>) {
        if hb.node == self.cfg.node || hb.cluster != self.cfg.cluster {
            return;
        }
        // A heartbeat of the run just found gone, arriving within an interval of the finding, left before the
        // daemon died (delayed on the way): no proof of life. Later ones are (the finding was wrong: the peer lives).
        if self.gone_run.is_some_and(|gone| {
            gone.boot_epoch == hb.boot_epoch
                && now < gone.at_ms.saturating_add(self.cfg.timings.interval_ms)
        }) {
            return;
        }
        let was_alive = self.live_peer(now).is_some();
        let previous = self.peer.take();
        self.incompatible = None;
        match &previous {
            Some(p) if was_alive => {
                if p.heartbeat.boot_epoch != hb.boot_epoch || p.heartbeat.node != hb.node {
                    out.push(Action::Event(Event::PeerRestarted {
                        node: hb.node.clone(),
                    }));
                    self.send_now = true;
                }
                if meaningful(&p.heartbeat) != meaningful(&hb) {
                    // Answer changes at once: acknowledges claims and handovers within one round trip.
                    self.send_now = true;
                }
            }
            _ => {
                out.push(Action::Event(Event::PeerUp {
                    node: hb.node.clone(),
                }));
                self.send_now = true;
                // The peer may have held and announced the VIPs while we could not hear each other (even if it has
                // dropped them already): the active node announces again so neighbours point here.
                self.announce_on_contact = self.state == NodeState::Active;
            }
        }
        self.answer_if_peer_missed_ours(&hb, now);
        let state_since_ms = match &previous {
            Some(p)
                if was_alive
                    && p.heartbeat.state == hb.state
                    && p.heartbeat.boot_epoch == hb.boot_epoch =>
            {
                p.state_since_ms
            }
            _ => now,
        };
        self.peer = Some(PeerView {
            heartbeat: hb,
            last_heard_ms: now,
            state_since_ms,
        });
        self.restart_peer_clock(now);
    }

    /// A heartbeat in a wire version this node cannot parse: the peer is alive (its silence timers restart), but
    /// nothing it says is known, so the last readable heartbeat is dropped rather than trusted as current.
    pub(super) fn on_incompatible(
        &mut self,
        hb: IncompatibleHeartbeat,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if hb.node == self.cfg.node {
            return;
        }
        let previous = self.peer_incompatible(now);
        let news = previous.is_none_or(|p| p.version != hb.version || p.node != hb.node);
        // A change of "may hold the VIPs" deserves an answer at once, as a readable heartbeat's would.
        let holds_changed = previous.is_some_and(|p| p.holds_vips != hb.holds_vips);
        if news {
            out.push(Action::Event(Event::PeerIncompatible {
                node: hb.node.clone(),
                version: hb.version,
            }));
        }
        if news || holds_changed {
            // Our next heartbeat (in our own version) tells the newer peer at once where we stand.
            self.send_now = true;
        }
        self.peer = None;
        self.incompatible = Some(IncompatiblePeer {
            node: hb.node,
            version: hb.version,
            role: hb.role,
            boot_epoch: hb.boot_epoch,
            holds_vips: hb.holds_vips,
            last_heard_ms: now,
        });
        self.restart_peer_clock(now);
    }

    /// When the peer was last heard, in a readable version or not; `None` if never.
    pub(super) fn last_heard_ms(&self) -> Option<u64> {
        match (&self.peer, &self.incompatible) {
            (Some(peer), _) => Some(peer.last_heard_ms),
            (None, Some(peer)) => Some(peer.last_heard_ms),
            (None, None) => None,
        }
    }

    /// Any heartbeat from the peer, readable or not: its silence counts from now, and a suspicion or a finding
    /// that its daemon is gone no longer holds.
    fn restart_peer_clock(&mut self, now: u64) {
        self.peer_clock_ms = now;
        self.peer_warned = false;
        self.peer_dead_reported = false;
        self.process_suspicion = None;
        self.peer_process_gone = false;
    }

    pub(super) fn live_peer(&self, now: u64) -> Option<&Heartbeat> {
        self.peer
            .as_ref()
            .filter(|_| self.peer_within_dead_time(now))
            .map(|p| &p.heartbeat)
    }

    /// The peer, readable or not, was heard within the dead time. Once declared dead, a peer stays dead until
    /// heard again (a longer dead time set meanwhile does not revive it).
    pub(super) fn peer_within_dead_time(&self, now: u64) -> bool {
        !self.peer_dead_reported
            && now < self.peer_clock_ms.saturating_add(self.cfg.timings.dead_ms)
    }
}

/// The parts of a heartbeat whose change deserves an immediate answer.
fn meaningful(hb: &Heartbeat) -> (NodeState, bool, bool, bool, bool, PingState, Role) {
    (
        hb.state,
        hb.holds_vips,
        hb.handover,
        hb.takeover_request,
        hb.caught_up,
        hb.ping,
        hb.role,
    )
}
