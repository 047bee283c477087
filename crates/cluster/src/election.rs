//! The election: which node of the pair holds the VIPs. Sans-IO: [`Election::handle`] takes an [`Input`] and the
//! current time in milliseconds (any monotonic origin) and returns [`Action`]s; [`Election::next_timeout`] says when
//! it next needs a [`Input::Tick`]. See `docs/protocol.md` for the rules in prose.
//!
//! The core safety argument: a node adds the VIPs only when (a) it has not heard its peer for `dead_ms` (or never,
//! after `init_dead_ms`), or (b) its peer's latest heartbeat says the peer holds no VIPs and grants it the role —
//! by handing over, by being stopped or in fault, or by acknowledging this node's claim while standing by. So two
//! nodes that hear each other never both add the VIPs; two that did not (a partition) resolve it as soon as one
//! heartbeat gets through: the primary (then the lower node name) keeps them, the other drops them.

use std::collections::VecDeque;
use std::fmt;

use crate::wire::{Heartbeat, NodeState, PingState, Role};

/// Heartbeat timings (`[heartbeat]` of cluster.toml), all in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// A heartbeat is sent this often (and at once on every change).
    pub interval_ms: u64,
    /// The peer is declared dead after this much silence.
    pub dead_ms: u64,
    /// Silence longer than this is logged and counted.
    pub warn_ms: u64,
    /// At start-up, how long to wait for a peer never heard before taking over.
    pub init_dead_ms: u64,
}

/// Everything the election needs to know about this node, filled by the daemon from cluster.toml and node.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// `[cluster] name`.
    pub cluster: String,
    /// `[node] name`.
    pub node: String,
    /// `[node] role`.
    pub role: Role,
    /// `[node] peer` is set. Without a peer the node becomes active on its own at once.
    pub has_peer: bool,
    pub timings: Timings,
    /// `[heartbeat] auto_failback`: a returning primary takes the active role back once caught up.
    pub auto_failback: bool,
    /// `[heartbeat] ping_nodes` is not empty.
    pub ping_nodes_configured: bool,
    /// This process's boot epoch (see [`crate::epoch`]).
    pub boot_epoch: u64,
    /// In fault, how long to wait before trying again (removing leftover VIPs, then standing by).
    pub fault_retry_ms: u64,
    /// After a clean stop, how long at most to keep repeating the final heartbeat until the peer confirms it took
    /// over (see [`Action::Stopped`]).
    pub shutdown_linger_ms: u64,
}

impl ElectionConfig {
    /// A config with the defaults for everything not given (no auto-failback, no ping nodes).
    pub fn new(
        cluster: &str,
        node: &str,
        role: Role,
        has_peer: bool,
        timings: Timings,
        boot_epoch: u64,
    ) -> Self {
        Self {
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            role,
            has_peer,
            timings,
            auto_failback: false,
            ping_nodes_configured: false,
            boot_epoch,
            fault_retry_ms: timings.dead_ms.max(1000),
            shutdown_linger_ms: timings.dead_ms.min(1000),
        }
    }
}

/// What happens to the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An authenticated, replay-checked heartbeat from the peer.
    PeerHeartbeat(Heartbeat),
    /// Time passed (call at [`Election::next_timeout`] or more often).
    Tick,
    /// Aggregate result of the ping nodes: can this node reach at least one?
    PingResult {
        reachable: bool,
    },
    /// `tandem takeover`.
    AdminTakeover,
    /// `tandem release`.
    AdminRelease,
    /// The daemon is stopping (SIGTERM): hand over cleanly, then stop.
    Shutdown,
    /// Results of the VIP layer, one per [`Action::AcquireVips`] / [`Action::ReleaseVips`] /
    /// [`Action::AnnounceVips`], in the order the actions were given.
    VipsAcquired,
    VipsReleased,
    VipsAnnounced,
    VipFailure {
        op: VipOp,
        error: String,
    },
    /// Stick tables and config are (or are no longer) caught up with the peer.
    CaughtUp(bool),
    /// This node's accepted cluster.toml changed.
    LocalConfig {
        generation: u64,
        digest: [u8; 32],
    },
    /// Health summary of the real servers.
    LocalHealth {
        up: u32,
        total: u32,
    },
    /// A reload changed `[heartbeat]`: new timings and auto-failback, applied live (`Election::set_timings` says
    /// what happens to the timers already running).
    SetTimings {
        timings: Timings,
        auto_failback: bool,
    },
}

/// A VIP-layer operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VipOp {
    Acquire,
    Release,
    Announce,
}

impl VipOp {
    pub fn as_str(self) -> &'static str {
        match self {
            VipOp::Acquire => "acquire",
            VipOp::Release => "release",
            VipOp::Announce => "announce",
        }
    }
}

/// What the election asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Encode, sign and send this heartbeat to the peer now.
    SendHeartbeat(Heartbeat),
    /// Add the VIPs and announce them (gratuitous ARP / unsolicited NA); report with `VipsAcquired` or `VipFailure`.
    AcquireVips,
    /// Remove the VIPs; report with `VipsReleased` or `VipFailure`.
    ReleaseVips,
    /// Announce the VIPs again; report with `VipsAnnounced` or `VipFailure`.
    AnnounceVips,
    /// Something worth a log line, a counter or an alert.
    Event(Event),
    /// The clean stop is over: the final heartbeats are out and the peer took over, or nobody is there to confirm
    /// (no peer, or not heard for `dead_ms`), or `shutdown_linger_ms` passed. The driver may end. Given once.
    Stopped,
}

/// While stopped and waiting for the peer to take over, the final heartbeat is repeated this often: a lost
/// datagram then costs milliseconds, not an interval.
pub const STOP_RESEND_MS: u64 = 5;

/// Why the state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Standalone,
    InitDeadExpired,
    PeerHeard,
    PeerDead,
    PeerStopped,
    PeerFault,
    HandoverFromPeer,
    ClaimStarted,
    ClaimGranted,
    ClaimYielded,
    PeerHoldsVips,
    AdminTakeover,
    AdminRelease,
    PeerRequestedTakeover,
    PingLost,
    SplitBrainLost,
    Shutdown,
    VipsAcquired,
    VipsReleased,
    VipFailure(String),
    FaultRetry,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Standalone => f.write_str("no peer configured"),
            Reason::InitDeadExpired => f.write_str("peer not heard within init_dead_ms"),
            Reason::PeerHeard => f.write_str("peer heard"),
            Reason::PeerDead => f.write_str("peer silent for dead_ms"),
            Reason::PeerStopped => f.write_str("peer stopped"),
            Reason::PeerFault => f.write_str("peer in fault"),
            Reason::HandoverFromPeer => f.write_str("peer handed over"),
            Reason::ClaimStarted => f.write_str("no node active: claiming"),
            Reason::ClaimGranted => f.write_str("peer granted the claim"),
            Reason::ClaimYielded => f.write_str("peer is preferred"),
            Reason::PeerHoldsVips => f.write_str("peer holds the VIPs"),
            Reason::AdminTakeover => f.write_str("admin takeover"),
            Reason::AdminRelease => f.write_str("admin release"),
            Reason::PeerRequestedTakeover => f.write_str("peer requested takeover"),
            Reason::PingLost => f.write_str("ping nodes unreachable here, reachable from peer"),
            Reason::SplitBrainLost => f.write_str("split brain: peer is preferred"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::VipsAcquired => f.write_str("VIPs added"),
            Reason::VipsReleased => f.write_str("VIPs removed"),
            Reason::VipFailure(e) => write!(f, "VIP operation failed: {e}"),
            Reason::FaultRetry => f.write_str("retrying after fault"),
        }
    }
}

/// Things the operator wants to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    StateChanged {
        from: NodeState,
        to: NodeState,
        reason: Reason,
    },
    /// The peer is heard (first time, or again after being declared dead).
    PeerUp { node: String },
    /// The peer restarted (new boot epoch) without being declared dead in between.
    PeerRestarted { node: String },
    /// Peer silent longer than `warn_ms`.
    PeerSilent { silent_ms: u64 },
    /// Peer silent longer than `dead_ms`.
    PeerDead { silent_ms: u64 },
    /// Both nodes held the VIPs when contact (re)appeared; `won` says whether this node keeps them.
    SplitBrain { peer: String, won: bool },
    /// This node asks the peer for the active role (admin takeover or auto-failback).
    TakeoverRequested { failback: bool },
    /// A takeover request was not honoured in time.
    TakeoverRequestExpired,
    /// New heartbeat timings (and auto-failback) took effect.
    TimingsChanged {
        timings: Timings,
        auto_failback: bool,
    },
    /// An admin command could not be carried out.
    Refused {
        command: &'static str,
        reason: String,
    },
}

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
}

/// The election state machine of one node.
#[derive(Clone, Debug)]
pub struct Election {
    cfg: ElectionConfig,
    state: NodeState,
    /// Start of the start-up wait for a peer never heard (restarted by a change of timings while it runs).
    started_ms: u64,
    state_since_ms: u64,
    seq: u64,
    peer: Option<PeerView>,
    /// The peer's silence is counted from here: when it was last heard, or when the timings last changed while it
    /// was alive (so a shorter dead time does not declare it dead at once).
    peer_clock_ms: u64,
    peer_warned: bool,
    peer_dead_reported: bool,
    ping: PingState,
    caught_up: bool,
    config_generation: u64,
    config_digest: [u8; 32],
    servers_up: u32,
    servers_total: u32,
    /// VIP operations issued and not yet reported, and whether addresses may be on the interface.
    acquires_pending: u32,
    releases_pending: u32,
    announces_pending: u32,
    addresses_present: bool,
    /// Where `Releasing` leads once the VIPs are gone.
    release_then: NodeState,
    /// This node dropped the VIPs for its peer to take them.
    handover_pending: bool,
    /// Sequence number of the heartbeat that announced our claim.
    claim_seq: Option<u64>,
    /// Sequence number of the first heartbeat of the current run of heartbeats that do (or do not) let the peer
    /// take the VIPs: a grant from the peer counts only if it acknowledges it.
    status_seq: u64,
    /// When our recent heartbeats were built (sequence number, ms), oldest first, for about `dead_ms`: tells how
    /// fresh the peer's news of us is.
    sent_at: VecDeque<(u64, u64)>,
    last_sent_status: (bool, bool),
    admin_request_until: Option<u64>,
    request_flag_sent: bool,
    /// After releasing on purpose, a primary does not fail back until it is active again.
    failback_suppressed: bool,
    split_brain_episode: bool,
    announce_on_contact: bool,
    fault_since_ms: u64,
    fault_reason: Option<String>,
    next_send_ms: u64,
    send_now: bool,
    /// When the final heartbeat was last repeated after a clean stop.
    last_resend_ms: Option<u64>,
    /// [`Action::Stopped`] has been given.
    stop_done: bool,
    stats: ElectionStats,
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
            peer_clock_ms: now_ms,
            peer_warned: false,
            peer_dead_reported: false,
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

    pub fn peer(&self) -> Option<&PeerView> {
        self.peer.as_ref()
    }

    /// The peer has been heard within `dead_ms`.
    pub fn peer_alive(&self, now_ms: u64) -> bool {
        self.live_peer(now_ms).is_some()
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
        }
        if self.peer.is_some() {
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
            _ => {}
        }
        if let Some(until) = self.admin_request_until {
            next = next.min(until);
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
                if self.state == NodeState::Releasing && self.vip_idle() {
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
        if self.cfg.has_peer && (self.send_now || now_ms >= self.next_send_ms) {
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

    /// After a clean stop: repeat "stopped, take over" every [`STOP_RESEND_MS`] until the peer confirms it holds
    /// the VIPs, then (or when nobody can confirm, or the linger time is up) give [`Action::Stopped`].
    fn linger(&mut self, now: u64, out: &mut Vec<Action>) {
        let peer_took_over = self
            .peer
            .as_ref()
            .is_some_and(|p| p.heartbeat.holds_vips && p.heartbeat.state != NodeState::Stopped);
        // Nobody to hand over to: a peer not heard for dead_ms will not confirm anything.
        let peer_gone = !self.peer_alive(now);
        let linger_over = now
            >= self
                .state_since_ms
                .saturating_add(self.cfg.shutdown_linger_ms);
        if !self.cfg.has_peer || peer_took_over || peer_gone || linger_over {
            self.stop_done = true;
            out.push(Action::Stopped);
            return;
        }
        if self
            .last_resend_ms
            .is_none_or(|at| now >= at.saturating_add(STOP_RESEND_MS))
        {
            self.last_resend_ms = Some(now);
            let hb = self.build_heartbeat(now);
            out.push(Action::SendHeartbeat(hb));
        }
    }

    /// The heartbeat this node would send now (consumes a sequence number).
    pub fn build_heartbeat(&mut self, now_ms: u64) -> Heartbeat {
        self.seq += 1;
        self.stats.heartbeats_built += 1;
        let (ack_epoch, ack_seq) = self
            .peer
            .as_ref()
            .map_or((0, 0), |p| (p.heartbeat.boot_epoch, p.heartbeat.seq));
        let holds = self.holds_vips();
        let hb = Heartbeat {
            cluster: self.cfg.cluster.clone(),
            node: self.cfg.node.clone(),
            role: self.cfg.role,
            state: self.state,
            boot_epoch: self.cfg.boot_epoch,
            seq: self.seq,
            holds_vips: holds,
            handover: !holds
                && (self.state == NodeState::Stopped
                    || (self.handover_pending && self.state == NodeState::Standby)),
            takeover_request: self.takeover_request(now_ms),
            caught_up: self.caught_up,
            ping: self.ping,
            ack_epoch,
            ack_seq,
            config_generation: self.config_generation,
            config_digest: self.config_digest,
            servers_up: self.servers_up,
            servers_total: self.servers_total,
        };
        // Remember where the current run of offering (or not offering) heartbeats began: news from the peer
        // older than that is not trusted as a grant.
        let status = self.offer_status();
        if status != self.last_sent_status {
            self.status_seq = self.seq;
        }
        self.last_sent_status = status;
        self.sent_at.push_back((self.seq, now_ms));
        let keep_from = now_ms.saturating_sub(self.cfg.timings.dead_ms);
        while self.sent_at.len() > 1 && self.sent_at.front().is_some_and(|&(_, at)| at < keep_from)
        {
            self.sent_at.pop_front();
        }
        hb
    }

    /// Did the peer write this after hearing from us less than `dead_ms` ago (by our heartbeat it acknowledges)?
    /// Until `dead_ms` after that heartbeat left, the peer cannot have given us up as dead and taken the VIPs back,
    /// so an offer it makes cannot be one it has already withdrawn that way.
    fn peer_news_is_fresh(&self, peer: &Heartbeat, now: u64) -> bool {
        if peer.ack_epoch != self.cfg.boot_epoch {
            return false;
        }
        self.sent_at
            .iter()
            .rev()
            .find(|&&(seq, _)| seq <= peer.ack_seq)
            .is_some_and(|&(_, at)| now < at.saturating_add(self.cfg.timings.dead_ms))
    }

    /// (may hold the VIPs, lets the peer take them): a grant from the peer is only trusted if it was written after
    /// the peer saw our current value. Holding in between makes an older offer of the peer stale: it is not taken
    /// twice.
    fn offer_status(&self) -> (bool, bool) {
        (self.holds_vips(), self.granting())
    }

    /// Would a heartbeat built now let the peer take the VIPs (handover, stopped, fault, or acknowledging its
    /// claim while standing by)?
    fn granting(&self) -> bool {
        let peer_claims = self
            .peer
            .as_ref()
            .is_some_and(|p| p.heartbeat.state == NodeState::Claiming);
        !self.holds_vips()
            && (matches!(self.state, NodeState::Stopped | NodeState::Fault)
                || (self.handover_pending && self.state == NodeState::Standby)
                || (matches!(self.state, NodeState::Init | NodeState::Standby) && peer_claims))
    }

    // ---- inputs -------------------------------------------------------------------------------------------------

    /// New `[heartbeat]` timings and auto-failback, taken live. The pair is meant to run the same timings (config
    /// push brings the new cluster.toml to the peer within moments); the rule for the switch is that no timer
    /// already running fires early or late because of the change itself:
    ///
    /// - a peer heard and not yet given up has its warn and dead deadlines restarted from `now` with the new
    ///   lengths: a shorter dead time does not declare it dead at once because its last heartbeat is already older
    ///   than that. A peer already declared dead stays dead (a longer dead time does not revive it);
    /// - a start-up wait still running (`Init`) restarts from `now` with the new `init_dead_ms`;
    /// - the keepalive cadence switches at the next send, which comes no later than one new interval from now (a
    ///   much shorter interval is not held back by a send scheduled on the old one);
    /// - the fault retry delay and the shutdown linger follow the dead time if they were derived from it
    ///   ([`ElectionConfig::new`]);
    /// - timings equal to the current ones move no timer (a reload that only flips auto-failback);
    /// - auto-failback on or off is weighed at once, in the same step (turning it off withdraws a failback request).
    ///
    /// Timings that break the relations the election needs (`interval_ms >= 1`, `dead_ms > interval_ms`) are
    /// refused: the config crate never lets them through, so a refusal here means a bug upstream.
    fn set_timings(
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
        if self.peer.is_some() && !self.peer_dead_reported {
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

    fn check_silence(&mut self, now: u64, out: &mut Vec<Action>) {
        let t = self.cfg.timings;
        let Some(peer) = &self.peer else { return };
        // Thresholds count from the peer clock; the events report the real silence.
        let counted = now.saturating_sub(self.peer_clock_ms);
        let silent = now.saturating_sub(peer.last_heard_ms);
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

    fn on_heartbeat(&mut self, hb: Heartbeat, now: u64, out: &mut Vec<Action>) {
        if hb.node == self.cfg.node || hb.cluster != self.cfg.cluster {
            return;
        }
        let was_alive = self.peer_alive(now);
        let previous = self.peer.take();
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
        self.peer = Some(PeerView {
            heartbeat: hb,
            last_heard_ms: now,
        });
        self.peer_clock_ms = now;
        self.peer_warned = false;
        self.peer_dead_reported = false;
    }

    fn on_admin_takeover(&mut self, now: u64, out: &mut Vec<Action>) {
        match self.state {
            NodeState::Active => {
                self.announce(out);
            }
            NodeState::Acquiring => {}
            NodeState::Releasing | NodeState::Stopped => {
                refuse(out, "takeover", format!("node is {}", self.state));
            }
            NodeState::Init | NodeState::Standby | NodeState::Claiming | NodeState::Fault => {
                let peer = self.live_peer(now).map(|p| p.ping);
                match peer {
                    Some(peer_ping) if !self.ping.ok() && peer_ping.ok() => {
                        refuse(
                            out,
                            "takeover",
                            "this node cannot reach any ping node and the peer can".into(),
                        );
                    }
                    Some(_) => {
                        if matches!(self.state, NodeState::Init | NodeState::Fault) {
                            self.set_state(NodeState::Standby, Reason::AdminTakeover, now, out);
                        }
                        let t = self.cfg.timings;
                        self.admin_request_until = Some(now + t.dead_ms + t.interval_ms);
                        // Asking for the role withdraws any offer of it still standing.
                        self.handover_pending = false;
                        self.send_now = true;
                    }
                    // Still starting and the peer not heard yet: acquiring blind could overlap with a peer whose
                    // heartbeats are on their way. The request stands; init ends as usual (peer heard, or
                    // init_dead_ms), and the request then wins the claim.
                    None if self.state == NodeState::Init => {
                        let t = self.cfg.timings;
                        self.admin_request_until =
                            Some(now + t.init_dead_ms.max(t.dead_ms) + t.interval_ms);
                        self.send_now = true;
                    }
                    None => self.start_acquire(Reason::AdminTakeover, now, out),
                }
            }
        }
    }

    fn on_admin_release(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.state != NodeState::Active {
            refuse(
                out,
                "release",
                format!("node is {}, not active", self.state),
            );
            return;
        }
        let my_ping = self.ping;
        let verdict = match self.live_peer(now) {
            None => Err("the peer is not heard".to_string()),
            Some(p) if p.state != NodeState::Standby || p.holds_vips => {
                Err(format!("the peer is {}, not standby", p.state))
            }
            Some(p) if !p.ping.ok() && my_ping.ok() => {
                Err("the peer cannot reach any ping node".to_string())
            }
            Some(_) => Ok(()),
        };
        match verdict {
            Err(reason) => refuse(out, "release", reason),
            Ok(()) => {
                self.failback_suppressed = true;
                self.start_release(Reason::AdminRelease, true, NodeState::Standby, now, out);
            }
        }
    }

    fn on_shutdown(&mut self, now: u64, out: &mut Vec<Action>) {
        self.admin_request_until = None;
        match self.state {
            NodeState::Acquiring | NodeState::Active => {
                self.start_release(Reason::Shutdown, true, NodeState::Stopped, now, out);
            }
            NodeState::Releasing => self.release_then = NodeState::Stopped,
            NodeState::Fault if self.holds_vips() => {
                self.start_release(Reason::Shutdown, true, NodeState::Stopped, now, out);
            }
            NodeState::Stopped => {}
            _ => {
                self.claim_seq = None;
                self.set_state(NodeState::Stopped, Reason::Shutdown, now, out);
            }
        }
    }

    fn on_vip_failure(&mut self, op: VipOp, error: String, now: u64, out: &mut Vec<Action>) {
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
            self.set_state(NodeState::Fault, Reason::VipFailure(error), now, out);
            // Never half active: take down whatever got added (retried from the fault state if this fails too).
            self.issue_release(out);
        }
    }

    // ---- decisions ----------------------------------------------------------------------------------------------

    fn evaluate(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(until) = self.admin_request_until
            && now >= until
        {
            self.admin_request_until = None;
            out.push(Action::Event(Event::TakeoverRequestExpired));
        }
        if self.handover_pending && self.state != NodeState::Releasing {
            // The handover is over once the peer holds the VIPs, or moot if it cannot take them.
            let over = match self.live_peer(now) {
                None => true,
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
            NodeState::Releasing | NodeState::Stopped => {}
        }
    }

    fn evaluate_standby(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(peer) = self.live_peer(now).cloned() else {
            let reason = if self.cfg.has_peer {
                Reason::PeerDead
            } else {
                Reason::Standalone
            };
            self.start_acquire(reason, now, out);
            return;
        };
        if peer.holds_vips {
            if self.state == NodeState::Claiming {
                self.claim_seq = None;
                self.set_state(NodeState::Standby, Reason::PeerHoldsVips, now, out);
            }
            return;
        }
        let grant_from_peer =
            peer.handover || matches!(peer.state, NodeState::Stopped | NodeState::Fault);
        let mutual_offer = peer.handover && self.handover_pending;
        if mutual_offer {
            // Both nodes offer the role to each other (each released before seeing the other's release): taking
            // the peer's offer could overlap with the peer taking ours. Withdraw ours; the claim below decides,
            // and a later offer of the peer counts once it acknowledges the withdrawal.
            self.handover_pending = false;
        } else if grant_from_peer && !self.peer_saw_my_status(&peer) {
            // The peer wrote this before it saw our current offer status (or an older incarnation of the peer wrote
            // it): it may be taking the VIPs right now. Wait for news that acknowledges it.
            return;
        }
        match peer.state {
            NodeState::Stopped => return self.start_acquire(Reason::PeerStopped, now, out),
            NodeState::Fault => return self.start_acquire(Reason::PeerFault, now, out),
            // Not holding VIPs in these states is transient; wait for the next heartbeat.
            NodeState::Releasing | NodeState::Acquiring | NodeState::Active => return,
            NodeState::Init | NodeState::Standby | NodeState::Claiming => {}
        }
        // An offer written on old news of us may already be withdrawn (the peer gave us up as dead and took the
        // VIPs back while it was on its way): then only the claim below, which the peer must grant, may move them.
        if peer.handover && !mutual_offer && self.peer_news_is_fresh(&peer, now) {
            return self.start_acquire(Reason::HandoverFromPeer, now, out);
        }
        let wins = !self.handover_pending && self.wins_claim(&peer, now);
        if !wins {
            if self.state == NodeState::Claiming {
                self.claim_seq = None;
                self.set_state(NodeState::Standby, Reason::ClaimYielded, now, out);
            }
            return;
        }
        match self.claim_seq {
            None => {
                // The claim goes out in the heartbeat sent at the end of this step.
                self.claim_seq = Some(self.seq + 1);
                self.send_now = true;
                self.set_state(NodeState::Claiming, Reason::ClaimStarted, now, out);
            }
            Some(claim_seq) => {
                let granted = matches!(peer.state, NodeState::Init | NodeState::Standby)
                    && peer.ack_epoch == self.cfg.boot_epoch
                    && peer.ack_seq >= claim_seq;
                if granted {
                    self.start_acquire(Reason::ClaimGranted, now, out);
                }
            }
        }
    }

    fn evaluate_holder(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(peer) = self.live_peer(now).cloned() else {
            self.split_brain_episode = false;
            return;
        };
        if peer.holds_vips {
            // Both hold the VIPs: only a partition can lead here (handovers never overlap). The peer may already be
            // dropping them (it noticed first): then this node only has to announce.
            let won = self.wins_split_brain(&peer);
            if !self.split_brain_episode {
                self.split_brain_episode = true;
                self.stats.split_brains += 1;
                out.push(Action::Event(Event::SplitBrain {
                    peer: peer.node.clone(),
                    won,
                }));
                if won && self.state == NodeState::Active {
                    self.announce(out);
                }
            }
            if !won && matches!(peer.state, NodeState::Active | NodeState::Acquiring) {
                self.start_release(Reason::SplitBrainLost, false, NodeState::Standby, now, out);
            }
            return;
        }
        if self.announce_on_contact {
            self.announce_on_contact = false;
            if self.state == NodeState::Active && !self.split_brain_episode {
                self.announce(out);
            }
        }
        if self.split_brain_episode && !peer.holds_vips {
            self.split_brain_episode = false;
            // The loser has dropped the addresses: make sure every neighbour points here.
            if self.state == NodeState::Active {
                self.announce(out);
            }
        }
        if self.state != NodeState::Active || peer.holds_vips || peer.state != NodeState::Standby {
            return;
        }
        if !self.ping.ok() && peer.ping.ok() {
            self.start_release(Reason::PingLost, true, NodeState::Standby, now, out);
        } else if peer.takeover_request && (peer.ping.ok() || !self.ping.ok()) {
            self.failback_suppressed = true;
            self.start_release(
                Reason::PeerRequestedTakeover,
                true,
                NodeState::Standby,
                now,
                out,
            );
        }
    }

    /// Who should claim when neither node holds the VIPs: reachability of the ping nodes first, then an explicit
    /// takeover request, then the primary, then the lower node name. Both nodes compute the same answer from the
    /// same two heartbeats.
    fn wins_claim(&self, peer: &Heartbeat, now: u64) -> bool {
        let mine = (
            self.ping.ok(),
            self.takeover_request(now),
            self.cfg.role == Role::Primary,
            std::cmp::Reverse((self.cfg.node.as_str(), self.cfg.boot_epoch)),
        );
        let theirs = (
            peer.ping.ok(),
            peer.takeover_request,
            peer.role == Role::Primary,
            std::cmp::Reverse((peer.node.as_str(), peer.boot_epoch)),
        );
        mine > theirs
    }

    /// Has the peer seen our latest heartbeat that let it take the VIPs?
    fn peer_saw_my_status(&self, peer: &Heartbeat) -> bool {
        // A change of offer decided but not sent yet cannot have been seen.
        let required = if self.offer_status() != self.last_sent_status {
            self.seq + 1
        } else {
            self.status_seq
        };
        // The epoch check also discards news from a peer that has not heard this incarnation of us yet.
        peer.ack_epoch == self.cfg.boot_epoch && peer.ack_seq >= required
    }

    /// Split brain: the primary keeps the VIPs; equal roles fall back to the lower node name.
    fn wins_split_brain(&self, peer: &Heartbeat) -> bool {
        let mine = (
            self.cfg.role == Role::Primary,
            std::cmp::Reverse((self.cfg.node.as_str(), self.cfg.boot_epoch)),
        );
        let theirs = (
            peer.role == Role::Primary,
            std::cmp::Reverse((peer.node.as_str(), peer.boot_epoch)),
        );
        mine > theirs
    }

    /// The takeover-request flag: a pending admin takeover, or a caught-up primary failing back.
    fn takeover_request(&self, now: u64) -> bool {
        self.admin_request_until.is_some_and(|until| now < until) || self.wants_failback(now)
    }

    fn wants_failback(&self, now: u64) -> bool {
        if !(self.cfg.auto_failback
            && self.cfg.role == Role::Primary
            && self.caught_up
            && !self.failback_suppressed
            && self.state == NodeState::Standby)
        {
            return false;
        }
        self.live_peer(now).is_some_and(|p| {
            p.role == Role::Secondary
                && p.state == NodeState::Active
                && p.holds_vips
                && (self.ping.ok() || !p.ping.ok())
        })
    }

    fn update_request_flag(&mut self, now: u64, out: &mut Vec<Action>) {
        let flag = self.takeover_request(now);
        if flag != self.request_flag_sent {
            self.request_flag_sent = flag;
            self.send_now = true;
            if flag {
                let failback = self.admin_request_until.is_none();
                out.push(Action::Event(Event::TakeoverRequested { failback }));
            }
        }
    }

    // ---- transitions --------------------------------------------------------------------------------------------

    fn live_peer(&self, now: u64) -> Option<&Heartbeat> {
        // Once declared dead, a peer stays dead until heard again (a longer dead time set meanwhile does not revive
        // it).
        if self.peer_dead_reported {
            return None;
        }
        self.peer
            .as_ref()
            .filter(|_| now < self.peer_clock_ms.saturating_add(self.cfg.timings.dead_ms))
            .map(|p| &p.heartbeat)
    }

    fn vip_idle(&self) -> bool {
        self.acquires_pending == 0 && self.releases_pending == 0
    }

    fn start_acquire(&mut self, reason: Reason, now: u64, out: &mut Vec<Action>) {
        self.claim_seq = None;
        self.handover_pending = false;
        self.acquires_pending += 1;
        out.push(Action::AcquireVips);
        self.set_state(NodeState::Acquiring, reason, now, out);
    }

    fn start_release(
        &mut self,
        reason: Reason,
        handover: bool,
        then: NodeState,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.release_then = then;
        self.handover_pending = handover;
        self.issue_release(out);
        self.set_state(NodeState::Releasing, reason, now, out);
    }

    fn issue_release(&mut self, out: &mut Vec<Action>) {
        self.releases_pending += 1;
        out.push(Action::ReleaseVips);
    }

    fn announce(&mut self, out: &mut Vec<Action>) {
        self.announces_pending += 1;
        out.push(Action::AnnounceVips);
    }

    fn set_state(&mut self, to: NodeState, reason: Reason, now: u64, out: &mut Vec<Action>) {
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

fn refuse(out: &mut Vec<Action>, command: &'static str, reason: String) {
    out.push(Action::Event(Event::Refused { command, reason }));
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

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
