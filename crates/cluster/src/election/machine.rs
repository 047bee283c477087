//! The state machine proper: the [`Election`] and its counters, when it needs the next tick, how one input is
//! handled (the input's own step, then the decisions until they settle, then the heartbeat), the VIP operations and
//! the change of state. The decisions themselves live in the sibling files, one concern each.

use std::collections::VecDeque;

use super::config::ElectionConfig;
use super::messages::{Action, Event, Input, Reason, STOP_RESEND_MS, VipOp};
use crate::wire::{Heartbeat, NodeState, PingState, Role};

/// Counters kept by the election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Times this node became active.
    pub takeovers: u64,
    /// Times this node dropped the VIPs.
    pub releases: u64,
    pub split_brains: u64,
    pub heartbeats_built: u64,
    pub warn_time_exceeded: u64,
    pub vip_failures: u64,
}

/// The latest heartbeat of the peer and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub heartbeat: Heartbeat,
    pub last_heard_ms: u64,
    /// When the peer's heartbeats began to carry `heartbeat.state` (this run of the peer, heard without a
    /// silence): "standby for 5 min" on the page, not "since the last heartbeat".
    pub state_since_ms: u64,
}

/// A peer heard only in a wire version this node cannot parse: its frozen envelope, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompatiblePeer {
    pub node: String,
    pub version: u16,
    pub role: Option<Role>,
    pub boot_epoch: u64,
    /// The peer may have the VIPs on its interface.
    pub holds_vips: bool,
    pub last_heard_ms: u64,
}

/// A make-before-break handover under way: this node (`releasing`) still holds the VIPs and offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Overlap {
    /// When the handover began; the VIPs are removed `handover_overlap_ms` after this at the latest.
    pub(super) since_ms: u64,
    /// Sequence number of the first heartbeat carrying the offer: a peer acknowledging it without holding the
    /// VIPs has declined (a release before make-before-break, or the offer was not good enough for it).
    pub(super) offer_seq: Option<u64>,
    /// The peer declined once: the offer was made again, acknowledging its latest heartbeat (a peer of this
    /// release declines an offer written before it saw its own latest status, and takes the next).
    pub(super) declined_once: bool,
    /// When the peer was first seen acquiring (holding the VIPs, taking the offer).
    pub(super) peer_took_ms: Option<u64>,
    /// When the peer was first seen `active` holding the VIPs (added and announced).
    pub(super) peer_active_ms: Option<u64>,
}

/// A peer run found gone (`process`): its boot epoch and when it was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GoneRun {
    pub boot_epoch: u64,
    pub at_ms: u64,
}

/// What the peer's host has said since its daemon was first suspected gone (the rules are `process`'s); cleared by
/// any heartbeat from the peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Suspicion {
    /// Our heartbeat port was reported unreachable (ICMP).
    pub(super) port_unreachable: bool,
    /// A probe of the sync port was asked for and has not answered yet.
    pub(super) probing: bool,
    /// A probe of the sync port was refused (RST to our own SYN).
    pub(super) refused: bool,
    /// While waiting for the ICMP after the refusal: the next extra heartbeat, and the last one.
    pub(super) next_provoke_ms: u64,
    pub(super) provoke_until_ms: u64,
}

/// The election state machine of one node.
#[derive(Clone, Debug)]
pub struct Election {
    pub(super) cfg: ElectionConfig,
    pub(super) state: NodeState,
    /// Start of the start-up wait for a peer never heard (restarted by a change of timings while it runs).
    pub(super) started_ms: u64,
    pub(super) state_since_ms: u64,
    pub(super) seq: u64,
    pub(super) peer: Option<PeerView>,
    /// The peer's latest heartbeat was of a wire version this node cannot parse (then `peer` is None: its last
    /// readable heartbeat no longer describes it).
    pub(super) incompatible: Option<IncompatiblePeer>,
    /// The peer's silence is counted from here: when it was last heard, or when the timings last changed while it
    /// was alive (so a shorter dead time does not declare it dead at once).
    pub(super) peer_clock_ms: u64,
    pub(super) peer_warned: bool,
    pub(super) peer_dead_reported: bool,
    /// What the peer's host said since its daemon was first suspected gone (`process`); cleared by any heartbeat
    /// from the peer (a daemon that answers is alive, whatever its host said before).
    pub(super) process_suspicion: Option<Suspicion>,
    /// The peer was given up because its daemon is gone (not for silence): names the reason of the takeover.
    pub(super) peer_process_gone: bool,
    /// The run (boot epoch) whose daemon was found gone, and when: its heartbeats still in flight then are not proof
    /// of life (`peer::on_heartbeat`).
    pub(super) gone_run: Option<GoneRun>,
    pub(super) ping: PingState,
    pub(super) caught_up: bool,
    pub(super) config_generation: u64,
    pub(super) config_digest: [u8; 32],
    pub(super) servers_up: u32,
    pub(super) servers_total: u32,
    /// VIP operations issued and not yet reported, and whether addresses may be on the interface.
    pub(super) acquires_pending: u32,
    pub(super) releases_pending: u32,
    pub(super) announces_pending: u32,
    pub(super) addresses_present: bool,
    /// Where `Releasing` leads once the VIPs are gone.
    pub(super) release_then: NodeState,
    /// This node dropped the VIPs for its peer to take them (or, while `releasing`, is handing them over).
    pub(super) handover_pending: bool,
    /// `releasing` with the VIPs kept until the peer holds them (make-before-break); None once the removal is
    /// issued.
    pub(super) overlap: Option<Overlap>,
    /// The VIP operation issued last moves the role between two live nodes on purpose: an acquire while the peer
    /// still holds the VIPs (it offered them, make-before-break), or a release once the peer holds them. The VIP
    /// layer then drains the connections in flight (docs/protocol.md, "Draining a planned handover").
    pub(super) vip_op_handover: bool,
    /// Sequence number of the heartbeat that announced our claim.
    pub(super) claim_seq: Option<u64>,
    /// Sequence number of the first heartbeat of the current run of heartbeats that do (or do not) let the peer
    /// take the VIPs: a grant from the peer counts only if it acknowledges it.
    pub(super) status_seq: u64,
    /// When our recent heartbeats were built (sequence number, ms), oldest first, for about `dead_ms`: tells how
    /// fresh the peer's news of us is.
    pub(super) sent_at: VecDeque<(u64, u64)>,
    pub(super) last_sent_status: (bool, bool),
    pub(super) admin_request_until: Option<u64>,
    pub(super) request_flag_sent: bool,
    /// After releasing on purpose, a primary does not fail back until it is active again.
    pub(super) failback_suppressed: bool,
    pub(super) split_brain_episode: bool,
    pub(super) announce_on_contact: bool,
    pub(super) fault_since_ms: u64,
    pub(super) fault_reason: Option<String>,
    pub(super) next_send_ms: u64,
    pub(super) send_now: bool,
    /// When the final heartbeat was last repeated after a clean stop.
    pub(super) last_resend_ms: Option<u64>,
    /// [`Action::Stopped`] has been given.
    pub(super) stop_done: bool,
    pub(super) stats: ElectionStats,
}

impl Election {
    pub fn new(cfg: ElectionConfig, now_ms: u64) -> Self {
        let ping = if cfg.ping_nodes_configured {
            PingState::Reachable
        } else {
            PingState::NotConfigured
        };
        Self {
            cfg,
            state: NodeState::Init,
            started_ms: now_ms,
            state_since_ms: now_ms,
            seq: 0,
            peer: None,
            incompatible: None,
            peer_clock_ms: now_ms,
            peer_warned: false,
            peer_dead_reported: false,
            process_suspicion: None,
            peer_process_gone: false,
            gone_run: None,
            ping,
            caught_up: false,
            config_generation: 0,
            config_digest: [0; 32],
            servers_up: 0,
            servers_total: 0,
            acquires_pending: 0,
            releases_pending: 0,
            announces_pending: 0,
            addresses_present: false,
            release_then: NodeState::Standby,
            handover_pending: false,
            overlap: None,
            vip_op_handover: false,
            claim_seq: None,
            status_seq: 0,
            sent_at: VecDeque::new(),
            last_sent_status: (false, false),
            admin_request_until: None,
            request_flag_sent: false,
            failback_suppressed: false,
            split_brain_episode: false,
            announce_on_contact: false,
            fault_since_ms: now_ms,
            fault_reason: None,
            next_send_ms: now_ms,
            send_now: true,
            last_resend_ms: None,
            stop_done: false,
            stats: ElectionStats::default(),
        }
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.cfg
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Since when (ms) the node is in its current state.
    pub fn state_since_ms(&self) -> u64 {
        self.state_since_ms
    }

    /// True from the moment this node asks for the VIPs until their removal is confirmed.
    pub fn holds_vips(&self) -> bool {
        self.addresses_present || self.acquires_pending > 0
    }

    /// This node is `releasing` on purpose and lets the peer take the VIPs (make-before-break: it may still hold
    /// them, and removes them within `Timings::handover_overlap_ms`).
    pub fn handing_over(&self) -> bool {
        self.state == NodeState::Releasing && self.handover_pending && self.cfg.make_before_break
    }

    /// Whether the VIP operation issued last (the acquire or release in the actions just returned) is one side
    /// of a planned handover between two live nodes: the VIP layer may then drain (see the field's doc).
    pub fn vip_op_is_handover(&self) -> bool {
        self.vip_op_handover
    }

    pub fn peer(&self) -> Option<&PeerView> {
        self.peer.as_ref()
    }

    /// The peer has been heard within `dead_ms` (readable or not).
    pub fn peer_alive(&self, now_ms: u64) -> bool {
        self.live_peer(now_ms).is_some() || self.peer_incompatible(now_ms).is_some()
    }

    /// The peer is alive and speaks a wire version this node cannot parse. While so, this node never takes the VIPs
    /// (it cannot tell whether the peer holds them), keeps them if it holds them, and refuses admin takeover and
    /// release; the peer, a newer release, reads this node and decides with full information.
    pub fn peer_incompatible(&self, now_ms: u64) -> Option<&IncompatiblePeer> {
        self.incompatible
            .as_ref()
            .filter(|_| self.peer_within_dead_time(now_ms))
    }

    pub fn ping(&self) -> PingState {
        self.ping
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    pub fn fault_reason(&self) -> Option<&str> {
        self.fault_reason.as_deref()
    }

    pub fn stats(&self) -> ElectionStats {
        self.stats
    }

    /// The latest time at which the election needs a [`Input::Tick`] (absolute, same clock as `now_ms`).
    pub fn next_timeout(&self) -> u64 {
        let t = &self.cfg.timings;
        let mut next = u64::MAX;
        if self.cfg.has_peer {
            next = next.min(if self.send_now { 0 } else { self.next_send_ms });
            next = next.min(self.poll_due_ms());
        }
        if self.last_heard_ms().is_some() {
            if !self.peer_warned {
                next = next.min(self.peer_clock_ms.saturating_add(t.warn_ms));
            }
            if !self.peer_dead_reported {
                next = next.min(self.peer_clock_ms.saturating_add(t.dead_ms));
            }
        }
        match self.state {
            NodeState::Init => next = next.min(self.started_ms.saturating_add(t.init_dead_ms)),
            NodeState::Fault => {
                next = next.min(self.fault_since_ms.saturating_add(self.cfg.fault_retry_ms))
            }
            NodeState::Stopped if !self.stop_done => {
                let resend = self
                    .last_resend_ms
                    .map_or(0, |at| at.saturating_add(STOP_RESEND_MS));
                let linger_end = self
                    .state_since_ms
                    .saturating_add(self.cfg.shutdown_linger_ms);
                next = next.min(resend).min(linger_end);
            }
            NodeState::Releasing => {
                if let Some(o) = self.overlap {
                    next = next.min(self.overlap_deadline(o));
                }
            }
            _ => {}
        }
        if let Some(until) = self.admin_request_until {
            next = next.min(until);
        }
        if let Some(due) = self.provoke_due_ms() {
            next = next.min(due);
        }
        next
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.check_silence(now_ms, &mut out);
        match input {
            Input::Tick => {}
            Input::PeerHeartbeat(hb) => self.on_heartbeat(hb, now_ms, &mut out),
            Input::PeerIncompatible(hb) => self.on_incompatible(hb, now_ms, &mut out),
            Input::PeerPortUnreachable => self.on_port_unreachable(now_ms, &mut out),
            Input::PeerSessionLost => self.on_session_lost(now_ms, &mut out),
            Input::PeerProbeResult { refused } => self.on_probe_result(refused, now_ms, &mut out),
            Input::PingResult { reachable } => {
                let ping = if reachable {
                    PingState::Reachable
                } else {
                    PingState::Unreachable
                };
                if ping != self.ping {
                    self.ping = ping;
                    self.send_now = true;
                }
            }
            Input::AdminTakeover => self.on_admin_takeover(now_ms, &mut out),
            Input::AdminRelease => self.on_admin_release(now_ms, &mut out),
            Input::Shutdown => self.on_shutdown(now_ms, &mut out),
            Input::VipsAcquired => {
                self.acquires_pending = self.acquires_pending.saturating_sub(1);
                self.addresses_present = true;
                if self.state == NodeState::Acquiring && self.vip_idle() {
                    self.stats.takeovers += 1;
                    self.failback_suppressed = false;
                    self.admin_request_until = None;
                    self.set_state(NodeState::Active, Reason::VipsAcquired, now_ms, &mut out);
                }
            }
            Input::VipsReleased => {
                self.releases_pending = self.releases_pending.saturating_sub(1);
                if self.acquires_pending == 0 {
                    self.addresses_present = false;
                }
                if self.state == NodeState::Releasing && self.overlap.is_none() && self.vip_idle() {
                    self.stats.releases += 1;
                    let next = self.release_then;
                    self.set_state(next, Reason::VipsReleased, now_ms, &mut out);
                }
            }
            Input::VipsAnnounced => {
                self.announces_pending = self.announces_pending.saturating_sub(1);
            }
            Input::VipFailure { op, error } => self.on_vip_failure(op, error, now_ms, &mut out),
            Input::CaughtUp(caught_up) => {
                if caught_up != self.caught_up {
                    self.caught_up = caught_up;
                    self.send_now = true;
                }
            }
            Input::LocalConfig { generation, digest } => {
                self.config_generation = generation;
                self.config_digest = digest;
            }
            Input::LocalHealth { up, total } => {
                self.servers_up = up;
                self.servers_total = total;
            }
            Input::SetTimings {
                timings,
                auto_failback,
            } => self.set_timings(timings, auto_failback, now_ms, &mut out),
        }
        // A decision can enable the next one (init -> standby -> claim); a few passes always settle.
        for _ in 0..4 {
            let before = (self.state, self.claim_seq);
            self.evaluate(now_ms, &mut out);
            if before == (self.state, self.claim_seq) {
                break;
            }
        }
        self.update_request_flag(now_ms, &mut out);
        self.provoke_port_unreachable(now_ms);
        if self.cfg.has_peer
            && (self.send_now || now_ms >= self.next_send_ms || now_ms >= self.poll_due_ms())
        {
            let hb = self.build_heartbeat(now_ms);
            out.push(Action::SendHeartbeat(hb));
            self.send_now = false;
            self.next_send_ms = now_ms.saturating_add(self.cfg.timings.interval_ms);
        }
        if self.state == NodeState::Stopped && !self.stop_done {
            self.linger(now_ms, &mut out);
        }
        out
    }

    pub(super) fn on_vip_failure(
        &mut self,
        op: VipOp,
        error: String,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.stats.vip_failures += 1;
        match op {
            VipOp::Acquire => {
                self.acquires_pending = self.acquires_pending.saturating_sub(1);
                // Some addresses may have been added before the failure.
                self.addresses_present = true;
            }
            VipOp::Release => {
                self.releases_pending = self.releases_pending.saturating_sub(1);
                self.addresses_present = true;
            }
            VipOp::Announce => self.announces_pending = self.announces_pending.saturating_sub(1),
        }
        if self.state == NodeState::Stopped {
            return;
        }
        if matches!(
            self.state,
            NodeState::Acquiring | NodeState::Active | NodeState::Releasing
        ) {
            self.fault_reason = Some(format!("{} failed: {error}", op.as_str()));
            self.fault_since_ms = now;
            self.handover_pending = false;
            self.overlap = None;
            self.set_state(NodeState::Fault, Reason::VipFailure(error), now, out);
            // Never half active: take down whatever got added (retried from the fault state if this fails too).
            self.issue_release(out);
        }
    }

    pub(super) fn evaluate(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(until) = self.admin_request_until
            && now >= until
        {
            self.admin_request_until = None;
            out.push(Action::Event(Event::TakeoverRequestExpired));
        }
        if self.handover_pending && self.state != NodeState::Releasing {
            // The handover is over once the peer holds the VIPs, or moot if it cannot take them.
            let over = match self.live_peer(now) {
                // A peer we cannot read may still be taking the offer: it stands while the peer is alive.
                None => self.peer_incompatible(now).is_none(),
                Some(p) => p.holds_vips || matches!(p.state, NodeState::Fault | NodeState::Stopped),
            };
            if over {
                self.handover_pending = false;
            }
        }
        match self.state {
            NodeState::Init => {
                if !self.cfg.has_peer {
                    self.start_acquire(Reason::Standalone, now, out);
                } else if self.peer_alive(now) {
                    self.set_state(NodeState::Standby, Reason::PeerHeard, now, out);
                } else if now
                    >= self
                        .started_ms
                        .saturating_add(self.cfg.timings.init_dead_ms)
                {
                    self.start_acquire(Reason::InitDeadExpired, now, out);
                }
            }
            NodeState::Standby | NodeState::Claiming => self.evaluate_standby(now, out),
            NodeState::Acquiring | NodeState::Active => self.evaluate_holder(now, out),
            NodeState::Fault => {
                if now >= self.fault_since_ms.saturating_add(self.cfg.fault_retry_ms) {
                    if self.holds_vips() {
                        if self.releases_pending == 0 {
                            self.issue_release(out);
                        }
                        self.fault_since_ms = now;
                    } else {
                        self.fault_reason = None;
                        self.set_state(NodeState::Standby, Reason::FaultRetry, now, out);
                    }
                }
            }
            NodeState::Releasing => self.evaluate_overlap(now, out),
            NodeState::Stopped => {}
        }
    }

    pub(super) fn vip_idle(&self) -> bool {
        self.acquires_pending == 0 && self.releases_pending == 0
    }

    pub(super) fn start_acquire(&mut self, reason: Reason, now: u64, out: &mut Vec<Action>) {
        self.claim_seq = None;
        self.handover_pending = false;
        self.acquires_pending += 1;
        self.vip_op_handover = false;
        out.push(Action::AcquireVips);
        self.set_state(NodeState::Acquiring, reason, now, out);
    }

    pub(super) fn start_release(
        &mut self,
        reason: Reason,
        handover: bool,
        then: NodeState,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.release_then = then;
        self.handover_pending = handover;
        if handover && self.can_overlap(now) {
            // Make-before-break: keep the VIPs and offer them; removed once the peer holds them (bounded).
            self.overlap = Some(Overlap {
                since_ms: now,
                offer_seq: None,
                declined_once: false,
                peer_took_ms: None,
                peer_active_ms: None,
            });
        } else {
            self.issue_release(out);
        }
        self.set_state(NodeState::Releasing, reason, now, out);
    }

    pub(super) fn issue_release(&mut self, out: &mut Vec<Action>) {
        self.releases_pending += 1;
        self.vip_op_handover = false;
        out.push(Action::ReleaseVips);
    }

    pub(super) fn announce(&mut self, out: &mut Vec<Action>) {
        self.announces_pending += 1;
        out.push(Action::AnnounceVips);
    }

    pub(super) fn set_state(
        &mut self,
        to: NodeState,
        reason: Reason,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if to == self.state {
            return;
        }
        out.push(Action::Event(Event::StateChanged {
            from: self.state,
            to,
            reason,
        }));
        self.state = to;
        self.state_since_ms = now;
        self.send_now = true;
    }
}
