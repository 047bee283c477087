//! What goes into the election and what comes out: inputs, actions, events and the reasons for a change of state.

use std::fmt;

use super::config::Timings;
use crate::wire::{Heartbeat, IncompatibleHeartbeat, NodeState};

/// What happens to the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An authenticated, replay-checked heartbeat from the peer.
    PeerHeartbeat(Heartbeat),
    /// An authenticated, replay-checked heartbeat from the peer in a wire version this node cannot parse (a newer
    /// release during a rolling upgrade), of which only the frozen envelope was read: the peer is alive, its state
    /// unknown but for whether it may hold the VIPs. It keeps the peer from being declared dead and never lets this
    /// node take the VIPs (see `Election::peer_incompatible`).
    PeerIncompatible(IncompatibleHeartbeat),
    /// The peer's host answered one of our heartbeats with ICMP port unreachable (a connected UDP socket reports
    /// it as `ECONNREFUSED`): nothing listens on the heartbeat port, so the peer's daemon may be gone while its host
    /// lives. Never a reason to take over by itself (anyone who knows the ports can forge the ICMP): if the peer was
    /// alive, the election asks for [`Action::ProbePeerProcess`] and waits for its [`Input::PeerProbeResult`].
    PeerPortUnreachable,
    /// The sync session with the peer was closed or reset from the peer's side (FIN or RST): a killed daemon's
    /// kernel closes its sockets at once, so this comes within a round trip of the death. A clean stop has said
    /// goodbye before (its `stopped` heartbeats) and is not suspected. Never a reason to take over by itself: the
    /// election probes the sync port ([`Action::ProbePeerProcess`]) and sends a heartbeat at once, whose ICMP port
    /// unreachable ([`Input::PeerPortUnreachable`]) is the other half of the proof.
    PeerSessionLost,
    /// The answer to [`Action::ProbePeerProcess`]: `refused` is true when a fresh TCP connection to the peer's sync
    /// port was refused (RST to our own SYN, which an off-path sender cannot forge without our sequence number).
    /// False for a connection accepted, timed out or failed otherwise: the peer is not given up for it.
    PeerProbeResult {
        refused: bool,
    },
    /// Time passed (call at [`Election::next_timeout`](super::Election::next_timeout) or more often).
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
    /// Confirm that the peer's daemon is gone while its host lives: open a fresh TCP connection to the peer's sync
    /// port (bounded to a few ms) and report with [`Input::PeerProbeResult`] (`refused` only for a RST).
    ProbePeerProcess,
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
    PeerProcessGone,
    PeerIncompatible,
    PeerStopped,
    PeerFault,
    HandoverFromPeer,
    /// A make-before-break handover the peer could not complete (it died or failed adding the VIPs): this node,
    /// still holding them, stays active.
    HandoverAborted,
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
            Reason::PeerProcessGone => {
                f.write_str("peer's daemon gone (port unreachable, sync port refused)")
            }
            Reason::PeerIncompatible => {
                f.write_str("peer alive in a wire version this node cannot read")
            }
            Reason::PeerStopped => f.write_str("peer stopped"),
            Reason::PeerFault => f.write_str("peer in fault"),
            Reason::HandoverFromPeer => f.write_str("peer handed over"),
            Reason::HandoverAborted => {
                f.write_str("peer could not take the VIPs over (dead or in fault): kept them")
            }
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
    /// The peer is heard in a wire version this node cannot parse (first time, or another version than before):
    /// alive, state unknown.
    PeerIncompatible { node: String, version: u16 },
    /// The peer restarted (new boot epoch) without being declared dead in between.
    PeerRestarted { node: String },
    /// Peer silent longer than `warn_ms`.
    PeerSilent { silent_ms: u64 },
    /// Peer silent longer than `dead_ms`.
    PeerDead { silent_ms: u64 },
    /// The peer's host refused both its heartbeat port (ICMP port unreachable) and a fresh connection to its sync
    /// port (RST), with no heartbeat in between: its daemon is gone; the peer is given up at once, not after
    /// `dead_ms`.
    PeerProcessGone { silent_ms: u64 },
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

pub(super) fn refuse(out: &mut Vec<Action>, command: &'static str, reason: String) {
    out.push(Action::Event(Event::Refused { command, reason }));
}
