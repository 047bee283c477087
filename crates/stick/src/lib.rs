//! Persistence ("stick") tables: the in-memory maps from a persistence key (a client's source
//! address, or one shared entry per service) to the *label* of the real server that key sticks
//! to, with a size bound, expiry from last use, and a change log that replication ships to the
//! peer.
//!
//! This crate owns only the tables. It is sans-IO: it never reads a clock (every call takes
//! `now`, milliseconds of a monotonic clock — see [`Clock`]), never touches a socket, and never
//! chooses a server (the proxy does; the table only remembers its choice).
//!
//! # Using a table (the proxy)
//! ```
//! use tandem_stick::{StickKey, StickTable, TableSpec};
//! let mut table = StickTable::new(TableSpec::from_config(300, 10_000)); // timeout_s, table_size
//! let key = StickKey::source_ip("10.0.0.7".parse().unwrap());
//! assert_eq!(table.lookup(&key, 1_000), None);          // no entry: balance, then remember
//! table.set(&key, "Overcloud-controller-1", 1_000);
//! assert_eq!(table.lookup(&key, 2_000).as_deref(), Some("Overcloud-controller-1"));
//! ```
//! A lookup *touches* the entry: its lifetime counts again from that use. When the table is full
//! a new key evicts the entry closest to expiry, which for a table with one timeout is the least
//! recently used one. Call [`StickTable::expire_up_to`] now and then (say every second, at most
//! 10k entries a call) to free the memory of expired entries; lookups never return an expired
//! entry either way. Time never goes
//! back for a table: a `now` below one it has already seen counts as that one, so callers that
//! read the clock before taking a lock are fine.
//!
//! # Replicating a table (the sync session)
//! Every local change (set, a touch that moves the expiry, remove, eviction) gives the key a
//! fresh, strictly increasing update id in the table's change log. The log keeps **at most one
//! item per key**: a newer change of a key supersedes its older item, and items are turned into
//! [`Update`]s only when read, from the entry's *current* state. So a hot key costs one log item
//! however often it is used, and a reader always gets the latest server and remaining lifetime.
//! Touches that only refresh the expiry are further coalesced: they get a new id only when the
//! expiry crosses a multiple of the table's touch granularity
//! ([`StickTable::set_touch_granularity_ms`]; by default timeout/64, at most 1 s), so the peer's
//! copy of an entry may expire up to that much earlier than ours, never later. The log is bounded
//! (by default `capacity + capacity/4 + 1024` items, of which at most `capacity/4 + 1024` deletes,
//! see [`StickTable::with_log_capacity`]); a reader that falls behind what it still holds gets
//! [`ResyncNeeded`].
//!
//! Sender, on connect (full resync), then forever (incremental):
//! ```
//! # use tandem_stick::{StickKey, StickTable, TableSpec, SnapshotCursor};
//! # let mut table = StickTable::new(TableSpec::from_config(300, 10_000));
//! # let now = 0;
//! let start = table.last_update_id();              // 1. remember where the log stands
//! let mut cursor = Some(SnapshotCursor::START);
//! while let Some(c) = cursor {                     // 2. send the snapshot in chunks; the
//!     let (entries, next) = table.snapshot_chunk(c, 1024, now); //  table may change between
//!     cursor = next;                               //    chunks: the log covers those changes
//!     # let _ = entries;
//! }
//! let mut sent = start;                            // 3. then stream the log from `start`
//! match table.updates_since(sent, 4096, now) {
//!     Ok(batch) => { sent = batch.up_to; /* send batch.updates */ }
//!     Err(_resync_needed) => { /* the peer fell too far behind: go back to 1. */ }
//! }
//! ```
//! Receiver: [`StickTable::begin_resync`], [`StickTable::apply_remote_entry`] for every snapshot
//! entry, [`StickTable::end_resync`] (drops what the peer no longer has), then
//! [`StickTable::apply_remote`] for every update. Remote changes never enter the receiver's own
//! change log, so nothing bounces back. Updates whose id is not above the last one applied since
//! `begin_resync` (duplicates, late re-sends) are ignored.
//!
//! Expiry is not replicated: both sides hold the remaining lifetime and expire on their own. An
//! eviction or a remove is replicated as a delete. Entries from the peer never evict others for
//! capacity (mid-resync the peer's deleted entries arrive before their deletes); a memory guard of
//! 4 x capacity + 1024 entries applies, and the next local insert brings the table back under
//! its capacity. Changes that both nodes make from the same configuration
//! ([`StickTables::reconcile`], [`StickTables::retain_servers`]) are not logged.
//!
//! Cost: every local operation is O(1) (hash index, intrusive lists), except that entries from
//! the peer whose lifetime is shorter than a fresh one are kept in an O(log n) ordered set until
//! used here. `examples/stick_bench.rs` measures throughput and bytes per entry at 1M entries.

mod clock;
mod labels;
mod table;
mod tables;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use clock::{Clock, millis_since};
pub use table::{SnapshotCursor, StickTable, TableStats};
pub use tables::{ReconcileSummary, StickTables};

/// A real server's label, as written in `cluster.toml` (never its address). Shared, cheap to clone.
pub type ServerLabel = Arc<str>;

/// What an entry is keyed by. New kinds are added at the end so the encoding of the existing
/// ones (bincode encodes the variant index) stays the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StickKey {
    /// `source-ip` persistence: the client's address (build it with [`StickKey::source_ip`] so
    /// an IPv4 client seen on an IPv6 socket gets the same key).
    SourceIp(IpAddr),
    /// `last-successful` persistence: the one entry the whole service shares.
    Service,
}

impl StickKey {
    /// The `source-ip` key of a client, with IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// turned into plain IPv4, so one client has one key whichever socket it came through.
    pub fn source_ip(client: IpAddr) -> Self {
        Self::SourceIp(client.to_canonical())
    }
}

/// Size and lifetime of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// Lifetime of an entry after its last use; `None` = never expires (the guide's timeout 0).
    pub timeout_ms: Option<u64>,
    /// Most entries the table holds (at least 1 is used); when full, a new key evicts the entry
    /// closest to expiry (the least recently used).
    pub capacity: usize,
}

impl TableSpec {
    /// From `cluster.toml`'s `persistence = { timeout_s, table_size }`: `timeout_s = 0` means the
    /// entries never expire.
    pub fn from_config(timeout_s: u64, table_size: usize) -> Self {
        Self {
            timeout_ms: (timeout_s > 0).then(|| timeout_s.saturating_mul(1000)),
            capacity: table_size,
        }
    }
}

/// One change of one key, read from the change log (what the sync session ships).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Position in the sending table's change log; strictly increasing per table.
    pub id: u64,
    pub key: StickKey,
    /// The server the key sticks to; `None` = the key was deleted.
    pub server: Option<ServerLabel>,
    /// Lifetime left when the update was read; `None` for a delete or a never-expiring table.
    pub remaining_ms: Option<u64>,
}

/// One live entry, as carried by a snapshot chunk or returned by [`StickTable::peek`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: StickKey,
    pub server: ServerLabel,
    /// Lifetime left at the time it was read; `None` = never expires.
    pub remaining_ms: Option<u64>,
}

/// A batch read from the change log by [`StickTable::updates_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateBatch {
    /// The updates in increasing id order.
    pub updates: Vec<Update>,
    /// Pass this as `after` next time: the id of the last log item looked at (items of entries
    /// that expired meanwhile are skipped, not returned), or the `after` given if none.
    pub up_to: u64,
}

/// The change log no longer holds every update after the requested id: the reader must do a
/// full resync (snapshot, then the log from [`StickTable::last_update_id`] taken before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stick-table change log no longer holds updates after id {requested} (oldest kept after {floor}): full resync needed"
)]
pub struct ResyncNeeded {
    pub requested: u64,
    pub floor: u64,
}
