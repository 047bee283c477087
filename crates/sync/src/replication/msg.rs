//! What replication says on the wire, its tunables and its counters: the vocabulary the sending
//! and receiving sides share.

use serde::{Deserialize, Serialize};
use tandem_stick::{Entry, Update};

use crate::admin_states::AdminEntry;

/// Identity of one table's change log: ids are only comparable within the same log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogId {
    /// Random per sync instance (so per daemon process).
    pub process: u64,
    /// Bumped when the sender sees the table recreated (its ids went backwards).
    pub generation: u32,
}

/// "I hold your table `table` of log `log` up to update id `up_to`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    pub table: String,
    pub log: LogId,
    pub up_to: u64,
}

/// Replication messages on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplMsg {
    /// First replication message of a session from each side: the peer's tables we hold.
    Resume { points: Vec<ResumePoint> },
    /// Please send a full snapshot of these tables (we stepped down, or a table appeared here).
    RequestResync { tables: Vec<String> },
    /// A snapshot of `table` follows; after it, updates continue after id `start`.
    ResyncBegin {
        table: String,
        log: LogId,
        start: u64,
    },
    /// One chunk of the snapshot.
    Entries { table: String, entries: Vec<Entry> },
    /// The snapshot of `table` is complete.
    ResyncEnd { table: String },
    /// Change-log updates of `table`; the receiver may resume after `up_to`.
    Updates {
        table: String,
        log: LogId,
        updates: Vec<Update>,
        up_to: u64,
    },
    /// Acknowledgement: updates applied up to these points.
    Ack { points: Vec<ResumePoint> },
    /// Entries per table on the sender (also the keepalive).
    Sizes { tables: Vec<(String, u64)> },
    /// Operators' admin states with their stamps: all of them when a session opens, then each
    /// change. Merged last-writer-wins by the engine (`crate::admin_states`), not the tables.
    AdminStates { entries: Vec<AdminEntry> },
}

/// Tunables of replication.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// Entries per snapshot chunk (before the byte bound).
    pub chunk_entries: usize,
    /// Updates per batch (before the byte bound).
    pub batch_updates: usize,
    /// Most bytes of entries/updates per message (keep well under the frame limit).
    pub max_message_bytes: usize,
    /// Most update ids sent and not yet acknowledged, per table.
    pub max_unacked: u64,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            chunk_entries: 2048,
            batch_updates: 2048,
            max_message_bytes: 256 * 1024,
            max_unacked: 65_536,
        }
    }
}

/// A replication message that breaks the protocol (the session is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replication protocol violation: {0}")]
pub struct ProtocolViolation(pub String);

/// Counters of replication, kept across sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplCounters {
    /// Full snapshots sent (per table).
    pub resyncs_sent: u64,
    /// Full snapshots received and completed (per table).
    pub resyncs_received: u64,
    /// Snapshots started because the peer fell behind the change log.
    pub resync_fallbacks: u64,
    pub updates_sent: u64,
    pub updates_applied: u64,
    /// Updates ignored as duplicates or late re-sends.
    pub updates_duplicate: u64,
    pub entries_sent: u64,
    pub entries_applied: u64,
    /// Snapshot entries not applied because this node is active (its tables are authoritative).
    pub entries_ignored: u64,
    /// Messages about a table this node does not have (ignored).
    pub unknown_table_messages: u64,
    /// Admin-state entries sent to the peer (full exchanges and changes).
    pub admin_entries_sent: u64,
    /// Admin-state entries of the peer that changed this node's states.
    pub admin_entries_applied: u64,
    /// Admin-state entries of the peer refused (bad labels, beyond the bound, or this node keeps
    /// no admin states).
    pub admin_entries_refused: u64,
}
