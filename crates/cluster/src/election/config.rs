//! What the election is told about this node: `[heartbeat]` timings and the node's place in the pair.

use crate::wire::Role;

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

/// A make-before-break handover: once the peer reports holding the VIPs as `active` (added and announced), the
/// giving node keeps its own this much longer, for a SYN already on its way to it.
pub const HANDOVER_GRACE_MS: u64 = 2;
/// The least [`Timings::handover_overlap_ms`]: time for the peer to answer an offer on a loaded host.
pub const MIN_HANDOVER_OVERLAP_MS: u64 = 20;
/// The least [`Timings::handover_taken_ms`]: time for the peer to add and announce on a loaded host.
pub const MIN_HANDOVER_TAKEN_MS: u64 = 250;

impl Timings {
    /// How long a make-before-break offer waits for the peer to take it (to report it acquires) before the giving
    /// node removes its VIPs anyway: one interval, at least [`MIN_HANDOVER_OVERLAP_MS`]. A lost datagram costs
    /// this, never a split brain.
    pub fn handover_overlap_ms(&self) -> u64 {
        self.interval_ms.max(MIN_HANDOVER_OVERLAP_MS)
    }

    /// Once the peer acquires, how much longer the giving node waits for it to be active before removing its VIPs
    /// anyway: one dead time, at least [`MIN_HANDOVER_TAKEN_MS`]. It normally removes them [`HANDOVER_GRACE_MS`]
    /// after the peer is active; the longest overlap is `handover_overlap_ms + handover_taken_ms`.
    pub fn handover_taken_ms(&self) -> u64 {
        self.dead_ms.max(MIN_HANDOVER_TAKEN_MS)
    }

    /// The longest a planned handover keeps the VIPs on both nodes (plus the removal itself).
    pub fn handover_max_overlap_ms(&self) -> u64 {
        self.handover_overlap_ms() + self.handover_taken_ms()
    }
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
    /// over (see [`Action::Stopped`](super::Action::Stopped)).
    pub shutdown_linger_ms: u64,
    /// Planned handovers are make-before-break: the giving node keeps its VIPs until the peer holds and has
    /// announced them (bounded, see `docs/protocol.md`, "Clean handover"). Always true in the daemon; false models
    /// the releases before it (break-before-make, and never taking an offer from a node that still holds the
    /// VIPs) in the simulator's rolling-upgrade runs.
    pub make_before_break: bool,
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
            make_before_break: true,
        }
    }
}
