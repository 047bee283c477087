//! Stick-table replication, sans-IO (after HAProxy's peers protocol).
//!
//! Each node is at once a *sender* of its own tables and a *receiver* of the peer's; tables are
//! matched by service label. When a session opens, each side tells the other which of its
//! tables it already holds and up to which update id ([`ReplMsg::Resume`]); the sender then
//! either streams its change log from there or, if it cannot (new process, table recreated, log
//! wrapped), sends a chunked full snapshot first. Updates are acknowledged by id; the sender
//! keeps at most [`ReplicationSettings::max_unacked`] ids in flight per table, so a peer that
//! reads too slowly makes the change log wrap and the table fall back to a snapshot instead of
//! memory growing.
//!
//! A standby node mirrors the peer's snapshot exactly (entries it was not sent are dropped); an
//! active node applies the peer's updates (the peer's own changes) but not its snapshots, so a
//! restarted, empty or stale peer can never wipe or resurrect entries of the tables that are
//! serving clients. When a node steps down it asks the peer for a fresh snapshot of every table.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use tandem_stick::{Entry, SnapshotCursor, StickTable, StickTables, Update};

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
}

#[derive(Debug, Clone)]
enum OutState {
    Snapshot {
        cursor: Option<SnapshotCursor>,
        start: u64,
        begun: bool,
    },
    Streaming {
        sent: u64,
    },
}

#[derive(Debug, Clone)]
struct OutTable {
    log: LogId,
    state: OutState,
    acked: u64,
}

#[derive(Debug, Clone)]
enum InState {
    /// Receiving a snapshot; `replace` = mirror it exactly (standby).
    Resyncing {
        log: LogId,
        start: u64,
        replace: bool,
    },
    Streaming {
        log: LogId,
        up_to: u64,
    },
}

/// Sender-side memory of one local table across sessions.
#[derive(Debug, Clone, Copy)]
struct LocalLog {
    generation: u32,
    high_id: u64,
}

/// The replication state of one node (kept across sessions) and of its current session.
#[derive(Debug)]
pub struct Replicator {
    settings: ReplicationSettings,
    process: u64,
    local_logs: HashMap<String, LocalLog>,
    /// What we hold of the peer's tables (survives reconnects, not restarts).
    resume: HashMap<String, (LogId, u64)>,
    connected: bool,
    active: bool,
    /// Sending side of the session; `None` until the peer's `Resume`.
    out: Option<BTreeMap<String, OutTable>>,
    inbound: HashMap<String, InState>,
    acked_sent: HashMap<String, u64>,
    known_local: Vec<String>,
    queue: VecDeque<ReplMsg>,
    rr_next: Option<String>,
    peer_sizes: BTreeMap<String, u64>,
    sizes_heard: bool,
    last_ack_ms: Option<u64>,
    counters: ReplCounters,
}

fn local_labels(tables: &StickTables) -> Vec<String> {
    let mut labels: Vec<String> = tables.iter().map(|(l, _)| l.to_string()).collect();
    labels.sort();
    labels
}

fn entry_bytes(entry: &Entry) -> usize {
    24 + entry.server.len()
}

fn update_bytes(update: &Update) -> usize {
    32 + update.server.as_ref().map_or(0, |s| s.len())
}

/// Splits `items` into runs of at most `max_bytes` (by `size`), each at least one item.
fn split_by_bytes<T>(items: Vec<T>, max_bytes: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0;
    for item in items {
        let s = size(&item);
        if !run.is_empty() && bytes + s > max_bytes {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += s;
        run.push(item);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

impl Replicator {
    /// `process` must be random per daemon process (a fresh log identity after a restart).
    pub fn new(settings: ReplicationSettings, process: u64) -> Self {
        Self {
            settings,
            process,
            local_logs: HashMap::new(),
            resume: HashMap::new(),
            connected: false,
            active: false,
            out: None,
            inbound: HashMap::new(),
            acked_sent: HashMap::new(),
            known_local: Vec::new(),
            queue: VecDeque::new(),
            rr_next: None,
            peer_sizes: BTreeMap::new(),
            sizes_heard: false,
            last_ack_ms: None,
            counters: ReplCounters::default(),
        }
    }

    pub fn counters(&self) -> &ReplCounters {
        &self.counters
    }

    /// Entries per table the peer last reported.
    pub fn peer_sizes(&self) -> &BTreeMap<String, u64> {
        &self.peer_sizes
    }

    /// When the peer last acknowledged anything (ms, caller's clock).
    pub fn last_ack_ms(&self) -> Option<u64> {
        self.last_ack_ms
    }

    /// Connected, the peer's table sizes heard, and every table both nodes have is past its
    /// snapshot (what a returning primary waits for before taking over again).
    pub fn caught_up(&self, tables: &StickTables) -> bool {
        self.connected
            && self.sizes_heard
            && local_labels(tables)
                .iter()
                .filter(|label| self.peer_sizes.contains_key(*label))
                .all(|label| matches!(self.inbound.get(label), Some(InState::Streaming { .. })))
    }

    /// Labels of the peer's tables currently being received as a snapshot.
    pub fn resyncing_tables(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inbound
            .iter()
            .filter(|(_, s)| matches!(s, InState::Resyncing { .. }))
            .map(|(l, _)| l.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether this node serves clients (its tables are authoritative).
    pub fn set_active(&mut self, active: bool, tables: &StickTables) {
        let stepped_down = self.active && !active;
        self.active = active;
        if stepped_down && self.connected {
            let labels = local_labels(tables);
            if !labels.is_empty() {
                self.queue
                    .push_back(ReplMsg::RequestResync { tables: labels });
            }
        }
    }

    fn log_id(&mut self, label: &str, table: &StickTable) -> LogId {
        let high = table.last_update_id();
        let log = self
            .local_logs
            .entry(label.to_string())
            .or_insert(LocalLog {
                generation: 0,
                high_id: high,
            });
        if high < log.high_id {
            log.generation = log.generation.wrapping_add(1);
        }
        log.high_id = high;
        LogId {
            process: self.process,
            generation: log.generation,
        }
    }

    /// A session opened: queue our `Resume`.
    pub fn on_session_open(&mut self, tables: &StickTables) {
        self.connected = true;
        self.out = None;
        self.inbound.clear();
        self.acked_sent.clear();
        self.queue.clear();
        self.rr_next = None;
        self.known_local = local_labels(tables);
        // Forget resume points of tables we no longer have.
        let known = &self.known_local;
        self.resume.retain(|label, _| known.contains(label));
        let mut points: Vec<ResumePoint> = self
            .resume
            .iter()
            .map(|(table, (log, up_to))| ResumePoint {
                table: table.clone(),
                log: *log,
                up_to: *up_to,
            })
            .collect();
        points.sort_by(|a, b| a.table.cmp(&b.table));
        for p in &points {
            self.acked_sent.insert(p.table.clone(), p.up_to);
            self.inbound.insert(
                p.table.clone(),
                InState::Streaming {
                    log: p.log,
                    up_to: p.up_to,
                },
            );
        }
        self.queue.push_back(ReplMsg::Resume { points });
        self.sizes_heard = false;
        let sizes = self.sizes_message(tables);
        self.queue.push_back(sizes);
    }

    pub fn on_session_closed(&mut self) {
        self.connected = false;
        self.out = None;
        self.queue.clear();
        // A snapshot cut short leaves no resume point: the next session starts it again.
        for (label, state) in self.inbound.drain() {
            if matches!(state, InState::Resyncing { .. }) {
                self.resume.remove(&label);
            }
        }
    }

    /// Applies one message from the authenticated peer.
    pub fn on_message(
        &mut self,
        message: ReplMsg,
        tables: &mut StickTables,
        now: u64,
    ) -> Result<(), ProtocolViolation> {
        match message {
            ReplMsg::Resume { points } => self.on_resume(points, tables),
            ReplMsg::RequestResync { tables: labels } => {
                let Some(out) = self.out.as_mut() else {
                    return Err(ProtocolViolation("resync requested before resume".into()));
                };
                for label in labels {
                    if let Some(t) = out.get_mut(&label) {
                        let start = tables.get(&label).map_or(0, |t| t.last_update_id());
                        t.state = OutState::Snapshot {
                            cursor: Some(SnapshotCursor::START),
                            start,
                            begun: false,
                        };
                    }
                }
                Ok(())
            }
            ReplMsg::ResyncBegin { table, log, start } => {
                self.resume.remove(&table);
                let Some(local) = tables.get_mut(&table) else {
                    self.counters.unknown_table_messages += 1;
                    self.inbound.remove(&table);
                    return Ok(());
                };
                // Resets the duplicate filter (update ids start over with this log); an
                // active node never ends the resync, so nothing of its own is dropped.
                local.begin_resync();
                self.inbound.insert(
                    table,
                    InState::Resyncing {
                        log,
                        start,
                        replace: !self.active,
                    },
                );
                Ok(())
            }
            ReplMsg::Entries { table, entries } => {
                let Some(local) = tables.get_mut(&table) else {
                    self.counters.unknown_table_messages += 1;
                    return Ok(());
                };
                let Some(InState::Resyncing { replace, .. }) = self.inbound.get(&table) else {
                    return Err(ProtocolViolation(format!(
                        "entries for {table:?} outside a snapshot"
                    )));
                };
                if *replace {
                    for entry in &entries {
                        local.apply_remote_entry(entry, now);
                    }
                    self.counters.entries_applied += entries.len() as u64;
                } else {
                    // Active: our table is authoritative. Merging the standby's copy back would
                    // resurrect entries we deleted since; its own changes come as updates.
                    self.counters.entries_ignored += entries.len() as u64;
                }
                Ok(())
            }
            ReplMsg::ResyncEnd { table } => {
                let Some(local) = tables.get_mut(&table) else {
                    self.counters.unknown_table_messages += 1;
                    return Ok(());
                };
                let Some(InState::Resyncing {
                    log,
                    start,
                    replace,
                }) = self.inbound.get(&table).cloned()
                else {
                    return Err(ProtocolViolation(format!(
                        "end of a snapshot of {table:?} never begun"
                    )));
                };
                if replace {
                    local.end_resync();
                }
                self.counters.resyncs_received += 1;
                self.resume.insert(table.clone(), (log, start));
                self.inbound
                    .insert(table, InState::Streaming { log, up_to: start });
                Ok(())
            }
            ReplMsg::Updates {
                table,
                log,
                updates,
                up_to,
            } => {
                let Some(local) = tables.get_mut(&table) else {
                    self.counters.unknown_table_messages += 1;
                    return Ok(());
                };
                let Some(InState::Streaming {
                    log: expected,
                    up_to: applied,
                }) = self.inbound.get_mut(&table)
                else {
                    return Err(ProtocolViolation(format!(
                        "updates for {table:?} before its snapshot"
                    )));
                };
                if *expected != log {
                    return Err(ProtocolViolation(format!(
                        "updates for {table:?} from another log"
                    )));
                }
                for update in &updates {
                    if local.apply_remote(update, now) {
                        self.counters.updates_applied += 1;
                    } else {
                        self.counters.updates_duplicate += 1;
                    }
                }
                *applied = (*applied).max(up_to);
                self.resume.insert(table, (log, *applied));
                Ok(())
            }
            ReplMsg::Ack { points } => {
                self.last_ack_ms = Some(now);
                if let Some(out) = self.out.as_mut() {
                    for p in points {
                        if let Some(t) = out.get_mut(&p.table)
                            && t.log == p.log
                        {
                            t.acked = t.acked.max(p.up_to);
                        }
                    }
                }
                Ok(())
            }
            ReplMsg::Sizes { tables: sizes } => {
                self.sizes_heard = true;
                self.peer_sizes = sizes.into_iter().collect();
                Ok(())
            }
        }
    }

    fn on_resume(
        &mut self,
        points: Vec<ResumePoint>,
        tables: &StickTables,
    ) -> Result<(), ProtocolViolation> {
        if self.out.is_some() {
            return Err(ProtocolViolation("second resume in one session".into()));
        }
        let points: HashMap<String, ResumePoint> =
            points.into_iter().map(|p| (p.table.clone(), p)).collect();
        let mut out = BTreeMap::new();
        for (label, table) in tables.iter() {
            let log = self.log_id(label, table);
            let state = match points.get(label) {
                Some(p)
                    if p.log == log
                        && p.up_to <= table.last_update_id()
                        && table.updates_since(p.up_to, 0, 0).is_ok() =>
                {
                    OutState::Streaming { sent: p.up_to }
                }
                resume => {
                    if resume.is_some() {
                        self.counters.resync_fallbacks += 1;
                    }
                    OutState::Snapshot {
                        cursor: Some(SnapshotCursor::START),
                        start: table.last_update_id(),
                        begun: false,
                    }
                }
            };
            let acked = points
                .get(label)
                .filter(|p| p.log == log)
                .map_or(0, |p| p.up_to);
            out.insert(label.to_string(), OutTable { log, state, acked });
        }
        self.out = Some(out);
        Ok(())
    }

    /// Messages produced and not yet handed out by [`Self::poll_message`].
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Keepalive content: our table sizes.
    pub fn sizes_message(&self, tables: &StickTables) -> ReplMsg {
        let mut sizes: Vec<(String, u64)> = tables
            .iter()
            .map(|(l, t)| (l.to_string(), t.len() as u64))
            .collect();
        sizes.sort();
        ReplMsg::Sizes { tables: sizes }
    }

    /// Notices tables added or removed locally (live reload): new ones are requested from the
    /// peer and offered to it.
    fn sync_local_tables(&mut self, tables: &StickTables) {
        let labels = local_labels(tables);
        if labels == self.known_local {
            return;
        }
        let added: Vec<String> = labels
            .iter()
            .filter(|l| !self.known_local.contains(l))
            .cloned()
            .collect();
        for removed in self.known_local.iter().filter(|l| !labels.contains(l)) {
            self.resume.remove(removed);
            self.inbound.remove(removed);
            self.acked_sent.remove(removed);
        }
        if !added.is_empty() {
            self.queue
                .push_back(ReplMsg::RequestResync { tables: added });
        }
        self.known_local = labels;
    }

    /// The next message to send, if any. Call until `None` whenever there is room to send.
    pub fn poll_message(&mut self, tables: &StickTables, now: u64) -> Option<ReplMsg> {
        if !self.connected {
            return None;
        }
        if let Some(m) = self.queue.pop_front() {
            return Some(m);
        }
        self.sync_local_tables(tables);
        if let Some(m) = self.queue.pop_front() {
            return Some(m);
        }
        if let Some(ack) = self.ack_message() {
            return Some(ack);
        }
        // A snapshot chunk of only free or expired slots yields no message: keep going.
        while self.queue.is_empty() && self.produce(tables, now) {}
        self.queue.pop_front()
    }

    fn ack_message(&mut self) -> Option<ReplMsg> {
        let mut points = Vec::new();
        for (table, state) in &self.inbound {
            if let InState::Streaming { log, up_to } = state
                && self.acked_sent.get(table).is_none_or(|a| a < up_to)
            {
                points.push(ResumePoint {
                    table: table.clone(),
                    log: *log,
                    up_to: *up_to,
                });
            }
        }
        if points.is_empty() {
            return None;
        }
        for p in &points {
            self.acked_sent.insert(p.table.clone(), p.up_to);
        }
        points.sort_by(|a, b| a.table.cmp(&b.table));
        Some(ReplMsg::Ack { points })
    }

    /// Fills the queue with the next table's data (round robin over tables).
    fn produce(&mut self, tables: &StickTables, now: u64) -> bool {
        if self.out.is_none() {
            return false;
        }
        // Refresh the set: new local tables are snapshotted, dropped ones forgotten.
        let labels = local_labels(tables);
        let mut logs = Vec::new();
        for label in &labels {
            if let Some(table) = tables.get(label) {
                logs.push((label.clone(), self.log_id(label, table)));
            }
        }
        let out = self.out.get_or_insert_with(BTreeMap::new);
        out.retain(|label, _| labels.contains(label));
        for (label, log) in logs {
            let table_start = tables.get(&label).map_or(0, |t| t.last_update_id());
            let entry = out.entry(label).or_insert(OutTable {
                log,
                state: OutState::Snapshot {
                    cursor: Some(SnapshotCursor::START),
                    start: table_start,
                    begun: false,
                },
                acked: 0,
            });
            if entry.log != log {
                // Table recreated: its ids start over, the peer needs a snapshot.
                *entry = OutTable {
                    log,
                    state: OutState::Snapshot {
                        cursor: Some(SnapshotCursor::START),
                        start: table_start,
                        begun: false,
                    },
                    acked: 0,
                };
            }
        }
        let order: Vec<String> = match &self.rr_next {
            Some(next) => out
                .range(next.clone()..)
                .chain(out.range(..next.clone()))
                .map(|(l, _)| l.clone())
                .collect(),
            None => out.keys().cloned().collect(),
        };
        for label in order {
            let Some(table) = tables.get(&label) else {
                continue;
            };
            let Some(t) = self.out.as_mut().and_then(|o| o.get_mut(&label)) else {
                continue;
            };
            let produced = Self::produce_table(
                &self.settings,
                &mut self.counters,
                &mut self.queue,
                &label,
                t,
                table,
                now,
            );
            if produced {
                // Next time, start after this table.
                self.rr_next = self
                    .out
                    .as_ref()
                    .and_then(|o| o.range(label.clone()..).nth(1).map(|(l, _)| l.clone()));
                return true;
            }
        }
        false
    }

    fn produce_table(
        settings: &ReplicationSettings,
        counters: &mut ReplCounters,
        queue: &mut VecDeque<ReplMsg>,
        label: &str,
        t: &mut OutTable,
        table: &StickTable,
        now: u64,
    ) -> bool {
        match &mut t.state {
            OutState::Snapshot {
                cursor,
                start,
                begun,
            } => {
                if !*begun {
                    *begun = true;
                    counters.resyncs_sent += 1;
                    queue.push_back(ReplMsg::ResyncBegin {
                        table: label.to_string(),
                        log: t.log,
                        start: *start,
                    });
                    return true;
                }
                match cursor.take() {
                    Some(c) => {
                        let (entries, next) = table.snapshot_chunk(c, settings.chunk_entries, now);
                        *cursor = next;
                        counters.entries_sent += entries.len() as u64;
                        for run in split_by_bytes(entries, settings.max_message_bytes, entry_bytes)
                        {
                            queue.push_back(ReplMsg::Entries {
                                table: label.to_string(),
                                entries: run,
                            });
                        }
                        if next.is_none() {
                            queue.push_back(ReplMsg::ResyncEnd {
                                table: label.to_string(),
                            });
                            let start = *start;
                            t.state = OutState::Streaming { sent: start };
                            t.acked = start;
                        }
                        true
                    }
                    None => {
                        queue.push_back(ReplMsg::ResyncEnd {
                            table: label.to_string(),
                        });
                        t.state = OutState::Streaming { sent: *start };
                        true
                    }
                }
            }
            OutState::Streaming { sent } => {
                if table.last_update_id() <= *sent {
                    return false;
                }
                if sent.saturating_sub(t.acked) >= settings.max_unacked {
                    return false;
                }
                match table.updates_since(*sent, settings.batch_updates, now) {
                    Ok(batch) => {
                        let up_to = batch.up_to;
                        if batch.updates.is_empty() {
                            // Every item after `sent` expired meanwhile: no entry to ship, but
                            // the peer is still told how far the log went, so it acknowledges
                            // it (else the unacked window would stall on ids it never saw) and
                            // resumes from there. With no item left at all, everything up to
                            // the newest id is done.
                            let done = if up_to == *sent {
                                table.last_update_id()
                            } else {
                                up_to
                            };
                            if done <= *sent {
                                return false;
                            }
                            *sent = done;
                            queue.push_back(ReplMsg::Updates {
                                table: label.to_string(),
                                log: t.log,
                                updates: Vec::new(),
                                up_to: done,
                            });
                            return true;
                        }
                        *sent = up_to;
                        counters.updates_sent += batch.updates.len() as u64;
                        let runs =
                            split_by_bytes(batch.updates, settings.max_message_bytes, update_bytes);
                        let n = runs.len();
                        for (i, run) in runs.into_iter().enumerate() {
                            // Only the last run may claim `up_to`: earlier ones end at their last id.
                            let run_up_to = if i + 1 == n {
                                up_to
                            } else {
                                run.last().map_or(up_to, |u| u.id)
                            };
                            queue.push_back(ReplMsg::Updates {
                                table: label.to_string(),
                                log: t.log,
                                updates: run,
                                up_to: run_up_to,
                            });
                        }
                        true
                    }
                    Err(_) => {
                        counters.resync_fallbacks += 1;
                        t.state = OutState::Snapshot {
                            cursor: Some(SnapshotCursor::START),
                            start: table.last_update_id(),
                            begun: false,
                        };
                        Self::produce_table(settings, counters, queue, label, t, table, now)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
