//! What the sync session reports to `tandem status`, the admin API and metrics.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config_push::ConfigVersion;
use crate::replication::ReplCounters;

/// Replication figures of one table (matched by service label).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableSyncStatus {
    pub label: String,
    pub local_entries: u64,
    /// As last reported by the peer; `None` when the peer has no such table or never said.
    pub peer_entries: Option<u64>,
    /// A snapshot of the peer's table is being received.
    pub resyncing: bool,
}

/// Config sync state of both nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    pub local: Option<ConfigVersion>,
    pub peer: Option<ConfigVersion>,
    pub in_sync: bool,
    /// Why not in sync.
    pub reason: Option<String>,
}

/// Counters since the sync task started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounters {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sessions_opened: u64,
    /// Rejected inputs and closed sessions by reason (`garbage`, `bad_mac`, ...), zeros included.
    pub rejected: BTreeMap<String, u64>,
    pub replication: ReplCounters,
}

/// Snapshot of the sync session's state, published on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    pub connected: bool,
    /// `"dial"` or `"accept"` (see `docs/protocol.md` for the rule).
    pub direction: String,
    pub peer: String,
    /// Protocol version of the current session.
    pub protocol_version: Option<u16>,
    pub tables: Vec<TableSyncStatus>,
    /// Milliseconds since the peer last acknowledged updates.
    pub last_ack_age_ms: Option<u64>,
    /// Connected, and no snapshot of the peer's tables in progress.
    pub caught_up: bool,
    pub config: ConfigStatus,
    pub counters: SyncCounters,
    /// Why the last session closed.
    pub last_error: Option<String>,
    /// The kernel's smoothed round-trip time of the session's TCP connection (`TCP_INFO`), in microseconds; read
    /// by the driver (the engine leaves it `None`), at most once a second; `None` while disconnected.
    pub rtt_us: Option<u64>,
}
