//! The election: which node of the pair holds the VIPs. Sans-IO: [`Election::handle`] takes an [`Input`] and the
//! current time in milliseconds (any monotonic origin) and returns [`Action`]s; [`Election::next_timeout`] says when
//! it next needs a [`Input::Tick`]. See `docs/protocol.md` for the rules in prose.
//!
//! The core safety argument: a node adds the VIPs only when (a) it has not heard its peer for `dead_ms` (or never,
//! after `init_dead_ms`), or (b) its peer's latest heartbeat says the peer holds no VIPs and grants it the role —
//! by handing over, by being stopped or in fault, or by acknowledging this node's claim while standing by. So two
//! nodes that hear each other never both add the VIPs unintentionally; the one planned exception is (c) the peer's
//! heartbeat says it is `releasing` with `holds_vips` and `handover` (a make-before-break handover): it has
//! committed to removing its VIPs as soon as this node holds them, and within `Timings::handover_max_overlap_ms`
//! at the latest, so the overlap is bounded and a planned handover leaves no instant without a holder. Two that did not (a partition) resolve it as soon as one
//! heartbeat gets through: the primary (then the lower node name) keeps them, the other drops them. A peer heard only
//! in a wire version this node cannot read ([`Input::PeerIncompatible`], a rolling upgrade) is alive with an unknown
//! state: never a reason to take the VIPs, and a split brain with it is resolved on its frozen envelope.
//!
//! The files, one concern each: `config` (timings and the node's place in the pair), `messages` (inputs,
//! actions, events), `machine` (the state machine, its timer and the VIP steps), `peer` (the peer's heartbeat,
//! silence and deadlines, live timing changes), `heartbeat` (what we send and how fresh the peer's news of us is),
//! `claims` (offers, grants, claims, split brain), `handover` (admin takeover/release, clean stop and its linger),
//! `failback` (the takeover-request flag), `loss` (polls and answers that carry the pair through random heartbeat loss),
//! `process` (a peer whose daemon is gone while its host lives).

mod claims;
mod config;
mod failback;
mod handover;
mod heartbeat;
mod loss;
mod machine;
mod messages;
mod peer;
mod process;

pub use config::{
    ElectionConfig, HANDOVER_GRACE_MS, MIN_HANDOVER_OVERLAP_MS, MIN_HANDOVER_TAKEN_MS, Timings,
};
pub use machine::{Election, ElectionStats, IncompatiblePeer, PeerView};
pub use messages::{Action, Event, Input, Reason, STOP_RESEND_MS, VipOp};
pub use process::{PROVOKE_EVERY_MS, PROVOKE_FOR_MS};

#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
