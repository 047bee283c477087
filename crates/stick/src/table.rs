//! One stick table: a slab of entries, a hash index over it, an expiry/eviction order, and the
//! change log threaded through the slab as a linked list.
//!
//! Layout, and why:
//! - `slots`: every entry lives in one `Slot` (about 56 bytes) addressed by a `u32`; freed slots
//!   are chained for reuse. Server labels are interned, so an entry holds a `u32`, not a string.
//! - `index`: a `hashbrown::HashTable<u32>` of slot numbers (5 bytes a bucket), hashed with std's
//!   randomly keyed SipHash because source addresses are chosen by clients.
//! - the order: entries are ordered by `(deadline, seq)`. For a table with a timeout the deadline
//!   is the expiry instant; without, it is the last-use instant; `seq` (a per-table use counter)
//!   breaks ties so entries used in the same millisecond still leave in use order. The smallest
//!   is both the next entry to expire and the eviction victim. A local use always makes an entry
//!   the largest (time never goes back for a table: a `now` below one already seen counts as
//!   that one), so locally used entries sit in an intrusive list, newest at the head: O(1) per
//!   use. Entries from the peer carry any remaining lifetime, so those that would not be the
//!   newest go to a `BTreeSet<(deadline, seq, slot)>` instead (O(log n)), until used here.
//! - the change log: live entries and *tombstones* (deleted keys whose delete is not yet read
//!   out) are linked in update-id order. A change unlinks the key's item and appends it at the
//!   tail with a fresh id (O(1)), so the log holds at most one item per key. Items carry no
//!   data: they are turned into [`Update`]s from the slot's current state when read. The log is
//!   bounded: past `log_capacity` items the oldest are dropped and `log_floor` rises; a reader
//!   behind the floor gets [`ResyncNeeded`].

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::labels::Labels;
use crate::{Entry, ResyncNeeded, ServerLabel, StickKey, TableSpec, Update, UpdateBatch};

/// No slot (end of a list).
const NIL: u32 = u32::MAX;
/// `Slot::server` of a deleted key kept in the log until its delete has been read or dropped.
const TOMBSTONE: u32 = u32::MAX;
/// `Slot::server` of an unused slot.
const FREE: u32 = u32::MAX - 1;
/// Every log id that is a multiple of this is an anchor (see `StickTable::anchors`).
const ANCHOR_EVERY: u64 = 64;
/// Largest capacity accepted (slot numbers are u32; live + remote overflow + tombstones fit).
const MAX_CAPACITY: usize = 1 << 28;

#[derive(Debug, Clone)]
struct Slot {
    /// Expiry instant (timed table) or last-use instant (never-expiring table).
    deadline: u64,
    /// Id of this key's item in the change log; 0 = not in the log.
    log_id: u64,
    seq: u32,
    /// Interned label id, or [`TOMBSTONE`] / [`FREE`].
    server: u32,
    /// Neighbours in the recent list (unused while `in_tree`).
    newer: u32,
    older: u32,
    log_prev: u32,
    /// Next item in the log, or next free slot for a free slot.
    log_next: u32,
    /// Resync generation this entry was last confirmed in (see `begin_resync`).
    generation: u32,
    /// Ordered by the remote tree rather than the recent list.
    in_tree: bool,
    key: StickKey,
}

impl Slot {
    fn is_live(&self) -> bool {
        self.server < FREE
    }
}

/// Where [`StickTable::snapshot_chunk`] continues. Only meaningful for the table that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotCursor(u32);

impl SnapshotCursor {
    /// The start of a snapshot.
    pub const START: Self = Self(0);
}

/// Figures of one table, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Live entries (expired ones not yet swept by [`StickTable::expire`] included).
    pub entries: usize,
    pub capacity: usize,
    pub timeout_ms: Option<u64>,
    /// Deleted keys kept only so that their delete can still be read from the log.
    pub tombstones: usize,
    /// Items in the change log.
    pub log_items: usize,
    pub log_capacity: usize,
    pub last_update_id: u64,
    /// Updates after this id are all in the log; readers behind it need a resync.
    pub log_floor: u64,
    /// Entries evicted to make room (since the table was created).
    pub evicted: u64,
    /// Entries dropped because they expired.
    pub expired: u64,
    /// Distinct server labels the entries point at.
    pub servers: usize,
}

/// A bounded, expiring map from [`StickKey`] to a server label, with a replication change log.
/// See the crate documentation for how the proxy and the sync session use it.
#[derive(Debug)]
pub struct StickTable {
    spec: TableSpec,
    slots: Vec<Slot>,
    free_head: u32,
    index: HashTable<u32>,
    hasher: RandomState,
    /// Newest and oldest of the recent list.
    recent_head: u32,
    recent_tail: u32,
    /// Entries from the peer that were not the newest when they came.
    remote_order: BTreeSet<(u64, u32, u32)>,
    /// Latest `now` seen (time never goes back for the table).
    clock: u64,
    labels: Labels,
    live: usize,
    tombstones: usize,
    seq: u32,
    next_id: u64,
    log_head: u32,
    log_tail: u32,
    log_len: usize,
    log_floor: u64,
    /// Log items whose id is a multiple of [`ANCHOR_EVERY`], by id: where a read of the log
    /// starts its walk, so finding the first item after an id is O(log n + ANCHOR_EVERY)
    /// rather than a walk over the whole backlog. An anchor leaves with its item.
    anchors: BTreeMap<u64, u32>,
    log_capacity: usize,
    log_capacity_explicit: bool,
    touch_granularity_ms: u64,
    touch_granularity_explicit: bool,
    generation: u32,
    resyncing: bool,
    peer_high_id: u64,
    evicted: u64,
    expired: u64,
}

fn normalized(spec: TableSpec) -> TableSpec {
    TableSpec {
        timeout_ms: spec.timeout_ms.filter(|&t| t > 0),
        capacity: spec.capacity.clamp(1, MAX_CAPACITY),
    }
}

fn default_log_capacity(capacity: usize) -> usize {
    capacity + capacity / 4 + 1024
}

/// Most live entries remote applies may bring (see `apply_remote_state`).
fn remote_limit(capacity: usize) -> usize {
    capacity.saturating_mul(4).saturating_add(1024)
}

fn default_touch_granularity(timeout_ms: Option<u64>) -> u64 {
    timeout_ms.map_or(0, |t| (t / 64).min(1000))
}

impl StickTable {
    /// An empty table. The change log keeps `capacity + capacity/4 + 1024` items by default.
    pub fn new(spec: TableSpec) -> Self {
        let spec = normalized(spec);
        Self {
            spec,
            slots: Vec::new(),
            free_head: NIL,
            index: HashTable::new(),
            hasher: RandomState::new(),
            recent_head: NIL,
            recent_tail: NIL,
            remote_order: BTreeSet::new(),
            clock: 0,
            labels: Labels::default(),
            live: 0,
            tombstones: 0,
            seq: 0,
            next_id: 1,
            log_head: NIL,
            log_tail: NIL,
            log_len: 0,
            log_floor: 0,
            anchors: BTreeMap::new(),
            log_capacity: default_log_capacity(spec.capacity),
            log_capacity_explicit: false,
            touch_granularity_ms: default_touch_granularity(spec.timeout_ms),
            touch_granularity_explicit: false,
            generation: 0,
            resyncing: false,
            peer_high_id: 0,
            evicted: 0,
            expired: 0,
        }
    }

    /// An empty table whose change log keeps at most `log_capacity` items (at least 1). Every
    /// live entry can hold one item, so less than `capacity` makes readers resync more often.
    pub fn with_log_capacity(spec: TableSpec, log_capacity: usize) -> Self {
        let mut table = Self::new(spec);
        table.set_log_capacity(log_capacity);
        table
    }

    /// The spec in force (capacity clamped to at least 1, timeout 0 read as none).
    pub fn spec(&self) -> TableSpec {
        self.spec
    }

    /// Live entries, counting expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Figures for status and metrics.
    pub fn stats(&self) -> TableStats {
        TableStats {
            entries: self.live,
            capacity: self.spec.capacity,
            timeout_ms: self.spec.timeout_ms,
            tombstones: self.tombstones,
            log_items: self.log_len,
            log_capacity: self.log_capacity,
            last_update_id: self.last_update_id(),
            log_floor: self.log_floor,
            evicted: self.evicted,
            expired: self.expired,
            servers: self.labels.len(),
        }
    }

    /// Sets how many items the change log keeps (at least 1), dropping the oldest if over.
    pub fn set_log_capacity(&mut self, log_capacity: usize) {
        self.log_capacity = log_capacity.clamp(1, 4 * MAX_CAPACITY);
        self.log_capacity_explicit = true;
        self.enforce_log_capacity();
    }

    /// Touches that only move the expiry are logged when the expiry crosses a multiple of this
    /// many milliseconds (0 = every touch is logged; still one item per key). The peer's copy
    /// of an entry can then expire up to this much earlier than ours. Default: timeout/64,
    /// at most 1000 ms.
    pub fn set_touch_granularity_ms(&mut self, granularity_ms: u64) {
        self.touch_granularity_ms = granularity_ms;
        self.touch_granularity_explicit = true;
    }

    /// The touch granularity in force (see [`Self::set_touch_granularity_ms`]).
    pub fn touch_granularity_ms(&self) -> u64 {
        self.touch_granularity_ms
    }

    // ---------------------------------------------------------------- local operations

    /// The server `key` sticks to, touching the entry (its lifetime starts again) — what the
    /// proxy calls for every new connection. An expired entry is dropped and `None` returned.
    pub fn lookup(&mut self, key: &StickKey, now: u64) -> Option<ServerLabel> {
        let now = self.advance_clock(now);
        let s = self.unexpired_slot(key, now)?;
        self.touch(s, now, false);
        self.labels.name(self.slots[s as usize].server).cloned()
    }

    /// The live slot of `key` at `now`; an entry found expired is dropped on the way (not
    /// replicated: the peer expires its own copy).
    fn unexpired_slot(&mut self, key: &StickKey, now: u64) -> Option<u32> {
        let s = self.find(key)?;
        if !self.slots[s as usize].is_live() {
            return None;
        }
        if self.is_expired(s, now) {
            self.expired += 1;
            self.remove_silently(s);
            return None;
        }
        Some(s)
    }

    /// The entry for `key` without touching it (status, tests).
    pub fn peek(&self, key: &StickKey, now: u64) -> Option<Entry> {
        let now = now.max(self.clock);
        let s = self.find(key)?;
        self.live_entry(s, now)
    }

    /// Makes `key` stick to `server` (a label), as a use: the lifetime starts again. Setting the
    /// server a key already has is just a touch. A new key in a full table first evicts the
    /// entry closest to expiry (replicated as a delete).
    pub fn set(&mut self, key: &StickKey, server: &str, now: u64) {
        let now = self.advance_clock(now);
        if let Some(s) = self.find(key) {
            let slot = &self.slots[s as usize];
            if slot.is_live() && !self.is_expired(s, now) {
                let same = self
                    .labels
                    .name(slot.server)
                    .is_some_and(|l| &**l == server);
                if !same {
                    let old = slot.server;
                    self.labels.release(old);
                    self.slots[s as usize].server = self.labels.acquire(server);
                }
                self.touch(s, now, !same);
                return;
            }
            // An expired entry or a tombstone: start the key afresh (its new log item
            // supersedes whatever the old one said).
            if slot.is_live() {
                self.expired += 1;
            }
            self.remove_silently(s);
        }
        self.make_room(now, self.spec.capacity);
        let label = self.labels.acquire(server);
        let deadline = self.fresh_deadline(now);
        let s = self.insert_slot(key.clone(), label, deadline);
        self.log_push(s);
        self.enforce_log_capacity();
    }

    /// Deletes `key` (replicated as a delete) and returns the server it stuck to.
    pub fn remove(&mut self, key: &StickKey, now: u64) -> Option<ServerLabel> {
        let now = self.advance_clock(now);
        let s = self.unexpired_slot(key, now)?;
        let label = self.labels.name(self.slots[s as usize].server).cloned();
        self.tombstone(s);
        label
    }

    /// Drops every entry expired at `now`; returns how many. Not replicated: the peer holds the
    /// same remaining lifetime and expires its copy itself.
    pub fn expire(&mut self, now: u64) -> usize {
        self.expire_up_to(now, usize::MAX)
    }

    /// As [`Self::expire`], dropping at most `max` entries (the soonest expired first), so a
    /// periodic sweep under the data plane's lock stays short even when a burst of entries
    /// expires together (about 0.3 us per entry). Returns how many were dropped.
    pub fn expire_up_to(&mut self, now: u64, max: usize) -> usize {
        let now = self.advance_clock(now);
        if self.spec.timeout_ms.is_none() {
            return 0;
        }
        let mut dropped = 0;
        while let Some((deadline, _, s)) = self.order_first() {
            if deadline > now || dropped >= max {
                break;
            }
            self.remove_silently(s);
            dropped += 1;
        }
        self.expired += dropped as u64;
        dropped
    }

    /// Drops the entries whose server is not kept (a server removed from the service), without
    /// logging: the peer applies the same configuration and does the same. Returns how many.
    pub fn retain_servers(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        let gone = self.labels.ids_not_kept(keep);
        if gone.is_empty() {
            return 0;
        }
        self.remove_where(|slot| gone.contains(&slot.server))
    }

    /// Applies a new spec, keeping entries: a new timeout keeps each entry's remaining lifetime
    /// (capped at the new timeout; from "never" the lifetime counts from the last use); a
    /// smaller capacity drops the entries closest to expiry. Not logged (the peer reloads the
    /// same configuration).
    pub fn set_spec(&mut self, spec: TableSpec, now: u64) {
        let now = self.advance_clock(now);
        let spec = normalized(spec);
        let old = self.spec;
        self.spec = spec;
        if old.timeout_ms != spec.timeout_ms {
            // Every mapping below is monotonic in the deadline, so the recent list stays in
            // order; only the tree's keys need rebuilding.
            let mut tree = Vec::with_capacity(self.remote_order.len());
            for (s, slot) in self.slots.iter_mut().enumerate() {
                if !slot.is_live() {
                    continue;
                }
                slot.deadline = match (old.timeout_ms, spec.timeout_ms) {
                    (Some(_), Some(new)) => slot.deadline.min(now.saturating_add(new)),
                    (Some(old), None) => slot.deadline.saturating_sub(old),
                    (None, Some(new)) => slot.deadline.saturating_add(new),
                    (None, None) => slot.deadline,
                };
                if slot.in_tree {
                    tree.push((slot.deadline, slot.seq, s as u32));
                }
            }
            self.remote_order = tree.into_iter().collect();
        }
        if !self.log_capacity_explicit {
            self.log_capacity = default_log_capacity(spec.capacity);
        }
        if !self.touch_granularity_explicit {
            self.touch_granularity_ms = default_touch_granularity(spec.timeout_ms);
        }
        while self.live > spec.capacity {
            let Some((_, _, victim)) = self.order_first() else {
                break;
            };
            self.evicted += 1;
            self.remove_silently(victim);
        }
        self.enforce_log_capacity();
    }

    // ---------------------------------------------------------------- replication, sending

    /// Id of the newest change so far (0 before any): take it before a snapshot, then read the
    /// log from it.
    pub fn last_update_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Up to `max` updates with an id above `after`, oldest first, each carrying the key's
    /// current state; `Err` when the log has dropped some of them (do a full resync).
    pub fn updates_since(
        &self,
        after: u64,
        max: usize,
        now: u64,
    ) -> Result<UpdateBatch, ResyncNeeded> {
        let now = now.max(self.clock);
        if after < self.log_floor {
            return Err(ResyncNeeded {
                requested: after,
                floor: self.log_floor,
            });
        }
        // Items are in id order: start from the nearest anchor at or before `after` and walk
        // forward to the first item after it.
        let first = if self.log_tail == NIL || self.slots[self.log_tail as usize].log_id <= after {
            NIL
        } else {
            let mut s = match self.anchors.range(..=after).next_back() {
                Some((_, &anchor)) => anchor,
                None => self.log_head,
            };
            while s != NIL && self.slots[s as usize].log_id <= after {
                s = self.slots[s as usize].log_next;
            }
            s
        };
        let mut updates = Vec::new();
        let mut up_to = after;
        let mut s = first;
        while s != NIL && updates.len() < max {
            let slot = &self.slots[s as usize];
            up_to = slot.log_id;
            if slot.server == TOMBSTONE {
                updates.push(Update {
                    id: slot.log_id,
                    key: slot.key.clone(),
                    server: None,
                    remaining_ms: None,
                });
            } else if let Some(entry) = self.live_entry(s, now) {
                updates.push(Update {
                    id: slot.log_id,
                    key: entry.key,
                    server: Some(entry.server),
                    remaining_ms: entry.remaining_ms,
                });
            }
            s = slot.log_next;
        }
        Ok(UpdateBatch { updates, up_to })
    }

    /// Up to `max` live entries (at least 1) from `cursor` on, with their remaining lifetime,
    /// and the cursor to continue from (`None` when done). The table may change between chunks:
    /// an entry added or changed meanwhile may be missed or sent twice, but it then also has a
    /// log item after the [`Self::last_update_id`] taken before the first chunk, so snapshot +
    /// log is complete. Each chunk costs O(max + skipped free slots).
    pub fn snapshot_chunk(
        &self,
        cursor: SnapshotCursor,
        max: usize,
        now: u64,
    ) -> (Vec<Entry>, Option<SnapshotCursor>) {
        let now = now.max(self.clock);
        let max = max.max(1);
        let mut entries = Vec::with_capacity(max.min(self.live));
        let mut s = cursor.0 as usize;
        while s < self.slots.len() && entries.len() < max {
            if let Some(entry) = self.live_entry(s as u32, now) {
                entries.push(entry);
            }
            s += 1;
        }
        let next = (s < self.slots.len()).then_some(SnapshotCursor(s as u32));
        (entries, next)
    }

    // ---------------------------------------------------------------- replication, receiving

    /// Applies an update read from the peer's log, keeping its remaining lifetime, without
    /// entering it in this table's log. Returns false (and changes nothing) when its id is not
    /// above the last one applied since [`Self::begin_resync`]: a duplicate or a late re-send.
    ///
    /// Remote entries do not evict others for capacity (the peer, with the same capacity,
    /// sends its evictions as deletes); only a memory guard of 4 x capacity + 1024 entries
    /// applies. The next local insert brings the table back under its capacity.
    pub fn apply_remote(&mut self, update: &Update, now: u64) -> bool {
        if update.id <= self.peer_high_id {
            return false;
        }
        self.peer_high_id = update.id;
        self.apply_remote_state(
            &update.key,
            update.server.as_deref(),
            update.remaining_ms,
            now,
        );
        true
    }

    /// Applies one entry of the peer's snapshot (see [`Self::begin_resync`]).
    pub fn apply_remote_entry(&mut self, entry: &Entry, now: u64) {
        self.apply_remote_state(&entry.key, Some(&entry.server), entry.remaining_ms, now);
    }

    /// A full resync from the peer begins: entries not sent again by the peer (nor used here)
    /// before [`Self::end_resync`] will be dropped, and update ids start over. If the session
    /// breaks before the end, just begin again on the next one.
    pub fn begin_resync(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.resyncing = true;
        self.peer_high_id = 0;
    }

    /// The peer's snapshot is complete: drops (unlogged) the entries neither it nor a local use
    /// confirmed since [`Self::begin_resync`]; returns how many. One pass over the table.
    pub fn end_resync(&mut self) -> usize {
        if !self.resyncing {
            return 0;
        }
        self.resyncing = false;
        let generation = self.generation;
        self.remove_where(|slot| slot.generation != generation)
    }

    /// Whether a resync is between [`Self::begin_resync`] and [`Self::end_resync`].
    pub fn is_resyncing(&self) -> bool {
        self.resyncing
    }

    // ---------------------------------------------------------------- internals

    fn advance_clock(&mut self, now: u64) -> u64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// The entry closest to expiry (the eviction victim): `(deadline, seq, slot)`.
    fn order_first(&self) -> Option<(u64, u32, u32)> {
        let oldest_recent = (self.recent_tail != NIL).then(|| {
            let slot = &self.slots[self.recent_tail as usize];
            (slot.deadline, slot.seq, self.recent_tail)
        });
        match (oldest_recent, self.remote_order.first().copied()) {
            (Some(recent), Some(remote)) => Some(if (remote.0, remote.1) < (recent.0, recent.1) {
                remote
            } else {
                recent
            }),
            (recent, remote) => recent.or(remote),
        }
    }

    /// Orders a live slot by its `(deadline, seq)`: at the head of the recent list when it is
    /// the newest (every local use), in the tree otherwise.
    fn order_insert(&mut self, s: u32) {
        let head = self.recent_head;
        let slot = &self.slots[s as usize];
        let newest = head == NIL || {
            let h = &self.slots[head as usize];
            (h.deadline, h.seq) <= (slot.deadline, slot.seq)
        };
        if !newest {
            self.remote_order.insert((slot.deadline, slot.seq, s));
            self.slots[s as usize].in_tree = true;
            return;
        }
        let slot = &mut self.slots[s as usize];
        slot.in_tree = false;
        slot.newer = NIL;
        slot.older = head;
        match head {
            NIL => self.recent_tail = s,
            h => self.slots[h as usize].newer = s,
        }
        self.recent_head = s;
    }

    fn order_remove(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        if slot.in_tree {
            slot.in_tree = false;
            self.remote_order.remove(&(slot.deadline, slot.seq, s));
            return;
        }
        let (newer, older) = (slot.newer, slot.older);
        slot.newer = NIL;
        slot.older = NIL;
        match newer {
            NIL => self.recent_head = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.recent_tail = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn find(&self, key: &StickKey) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&s| self.slots[s as usize].key == *key)
            .copied()
    }

    fn is_expired(&self, s: u32, now: u64) -> bool {
        self.spec.timeout_ms.is_some() && self.slots[s as usize].deadline <= now
    }

    fn fresh_deadline(&self, now: u64) -> u64 {
        match self.spec.timeout_ms {
            Some(timeout) => now.saturating_add(timeout),
            None => now,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn live_entry(&self, s: u32, now: u64) -> Option<Entry> {
        let slot = &self.slots[s as usize];
        if !slot.is_live() || self.is_expired(s, now) {
            return None;
        }
        Some(Entry {
            key: slot.key.clone(),
            server: self.labels.name(slot.server)?.clone(),
            remaining_ms: self.spec.timeout_ms.map(|_| slot.deadline - now),
        })
    }

    /// A local use of a live entry: new deadline, confirmed in this resync generation, and a
    /// log item when forced (server changed) or when the expiry crossed a granularity step.
    fn touch(&mut self, s: u32, now: u64, force_log: bool) {
        let deadline = self.fresh_deadline(now);
        let seq = self.next_seq();
        let generation = self.generation;
        self.order_remove(s);
        let slot = &mut self.slots[s as usize];
        let old_deadline = slot.deadline;
        slot.deadline = deadline;
        slot.seq = seq;
        slot.generation = generation;
        self.order_insert(s);
        let slot = &self.slots[s as usize];
        let granularity = self.touch_granularity_ms;
        let log = force_log
            || (self.spec.timeout_ms.is_some()
                && (slot.log_id == 0
                    || granularity == 0
                    || old_deadline / granularity != deadline / granularity));
        if log {
            self.log_push(s);
            self.enforce_log_capacity();
        }
    }

    /// Evicts (logged as deletes) until fewer than `limit` entries are live; an expired victim
    /// is simply expired.
    fn make_room(&mut self, now: u64, limit: usize) {
        while self.live >= limit {
            let Some((_, _, victim)) = self.order_first() else {
                return;
            };
            if self.is_expired(victim, now) {
                self.expired += 1;
                self.remove_silently(victim);
            } else {
                self.evicted += 1;
                self.tombstone(victim);
            }
        }
    }

    fn insert_slot(&mut self, key: StickKey, server: u32, deadline: u64) -> u32 {
        let seq = self.next_seq();
        let slot = Slot {
            deadline,
            log_id: 0,
            seq,
            server,
            newer: NIL,
            older: NIL,
            log_prev: NIL,
            log_next: NIL,
            generation: self.generation,
            in_tree: false,
            key,
        };
        let s = if self.free_head != NIL {
            let s = self.free_head;
            self.free_head = self.slots[s as usize].log_next;
            self.slots[s as usize] = slot;
            s
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        let Self {
            index,
            slots,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(&slots[s as usize].key);
        index.insert_unique(hash, s, |&x| hasher.hash_one(&slots[x as usize].key));
        self.order_insert(s);
        self.live += 1;
        s
    }

    /// Turns a live entry into a logged delete.
    fn tombstone(&mut self, s: u32) {
        self.order_remove(s);
        let slot = &mut self.slots[s as usize];
        self.labels.release(slot.server);
        slot.server = TOMBSTONE;
        self.live -= 1;
        self.tombstones += 1;
        self.log_push(s);
        self.enforce_log_capacity();
    }

    /// Forgets a slot entirely (expiry, remote delete, resync, config): no log item remains.
    fn remove_silently(&mut self, s: u32) {
        let slot = &self.slots[s as usize];
        if slot.is_live() {
            let server = slot.server;
            self.order_remove(s);
            self.labels.release(server);
            self.live -= 1;
        } else if slot.server == TOMBSTONE {
            self.tombstones -= 1;
        } else {
            return;
        }
        self.log_unlink(s);
        let Self {
            index,
            slots,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(&slots[s as usize].key);
        if let Ok(found) = index.find_entry(hash, |&x| x == s) {
            found.remove();
        }
        let slot = &mut self.slots[s as usize];
        slot.server = FREE;
        slot.key = StickKey::Service;
        slot.log_next = self.free_head;
        self.free_head = s;
    }

    fn remove_where(&mut self, drop: impl Fn(&Slot) -> bool) -> usize {
        let mut dropped = 0;
        for s in 0..self.slots.len() {
            let slot = &self.slots[s];
            if slot.is_live() && drop(slot) {
                self.remove_silently(s as u32);
                dropped += 1;
            }
        }
        dropped
    }

    fn log_unlink(&mut self, s: u32) {
        let slot = &self.slots[s as usize];
        if slot.log_id == 0 {
            return;
        }
        let (prev, next) = (slot.log_prev, slot.log_next);
        if slot.log_id.is_multiple_of(ANCHOR_EVERY) {
            self.anchors.remove(&slot.log_id);
        }
        match prev {
            NIL => self.log_head = next,
            p => self.slots[p as usize].log_next = next,
        }
        match next {
            NIL => self.log_tail = prev,
            n => self.slots[n as usize].log_prev = prev,
        }
        let slot = &mut self.slots[s as usize];
        slot.log_id = 0;
        slot.log_prev = NIL;
        slot.log_next = NIL;
        self.log_len -= 1;
    }

    /// Gives the key a fresh id at the tail of the log, superseding its previous item.
    fn log_push(&mut self, s: u32) {
        self.log_unlink(s);
        let id = self.next_id;
        self.next_id += 1;
        let tail = self.log_tail;
        let slot = &mut self.slots[s as usize];
        slot.log_id = id;
        slot.log_prev = tail;
        slot.log_next = NIL;
        match tail {
            NIL => self.log_head = s,
            t => self.slots[t as usize].log_next = s,
        }
        self.log_tail = s;
        self.log_len += 1;
        if id.is_multiple_of(ANCHOR_EVERY) {
            self.anchors.insert(id, s);
        }
    }

    fn enforce_log_capacity(&mut self) {
        let tombstone_limit = self
            .log_capacity
            .saturating_sub(self.spec.capacity)
            .max(1024);
        while (self.log_len > self.log_capacity || self.tombstones > tombstone_limit)
            && self.log_head != NIL
        {
            let s = self.log_head;
            self.log_floor = self.log_floor.max(self.slots[s as usize].log_id);
            if self.slots[s as usize].server == TOMBSTONE {
                self.remove_silently(s);
            } else {
                self.log_unlink(s);
            }
        }
    }

    fn apply_remote_state(
        &mut self,
        key: &StickKey,
        server: Option<&str>,
        remaining_ms: Option<u64>,
        now: u64,
    ) {
        let now = self.advance_clock(now);
        let existing = self.find(key);
        let deadline = match (server, self.spec.timeout_ms) {
            (None, _) => None,
            // Never longer than our own timeout; a peer without a timeout means "fresh".
            (Some(_), Some(timeout)) => match remaining_ms.unwrap_or(timeout).min(timeout) {
                0 => None,
                remaining => Some(now.saturating_add(remaining)),
            },
            (Some(_), None) => Some(now),
        };
        let (Some(server), Some(deadline)) = (server, deadline) else {
            if let Some(s) = existing {
                self.remove_silently(s);
            }
            return;
        };
        match existing {
            Some(s) => {
                let seq = self.next_seq();
                let generation = self.generation;
                let slot = &self.slots[s as usize];
                if slot.is_live() {
                    self.order_remove(s);
                    let slot = &self.slots[s as usize];
                    if self.labels.name(slot.server).is_none_or(|l| &**l != server) {
                        let old = slot.server;
                        self.labels.release(old);
                        self.slots[s as usize].server = self.labels.acquire(server);
                    }
                } else {
                    self.tombstones -= 1;
                    self.live += 1;
                    self.slots[s as usize].server = self.labels.acquire(server);
                }
                let slot = &mut self.slots[s as usize];
                slot.deadline = deadline;
                slot.seq = seq;
                slot.generation = generation;
                self.order_insert(s);
                self.log_unlink(s);
            }
            None => {
                let label = self.labels.acquire(server);
                self.insert_slot(key.clone(), label, deadline);
            }
        }
        // Remote entries do not evict for capacity: while a resync is under way, entries the
        // peer has since deleted arrive before their deletes, and evicting then could drop an
        // entry the peer still has and will not send again. The peer's own capacity bounds
        // what it sends; this limit only guards memory against a misbehaving peer.
        while self.live > remote_limit(self.spec.capacity) {
            let Some((_, _, victim)) = self.order_first() else {
                break;
            };
            self.evicted += 1;
            self.remove_silently(victim);
        }
    }
}

#[cfg(test)]
mod tests;
