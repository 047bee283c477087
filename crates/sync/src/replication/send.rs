//! The sending side of replication: our tables' log identities, the resume negotiation, and per
//! table either a snapshot in chunks or the change log in batches, round robin over tables,
//! within the unacknowledged window.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tandem_stick::{Entry, SnapshotCursor, StickTable, StickTables, Update};

use super::msg::{
    LogId, ProtocolViolation, ReplCounters, ReplMsg, ReplicationSettings, ResumePoint,
};

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

/// Sender-side memory of one local table across sessions.
#[derive(Debug, Clone, Copy)]
struct LocalLog {
    generation: u32,
    high_id: u64,
}

/// What we send of our tables: log identities across sessions, per-table progress in one.
#[derive(Debug)]
pub(super) struct Sender {
    settings: ReplicationSettings,
    process: u64,
    local_logs: HashMap<String, LocalLog>,
    /// `None` until the peer's `Resume`.
    out: Option<BTreeMap<String, OutTable>>,
    rr_next: Option<String>,
}

/// Labels of our tables, sorted.
pub(super) fn local_labels(tables: &StickTables) -> Vec<String> {
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
pub(crate) fn split_by_bytes<T>(
    items: Vec<T>,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
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

fn fresh_snapshot(start: u64) -> OutState {
    OutState::Snapshot {
        cursor: Some(SnapshotCursor::START),
        start,
        begun: false,
    }
}

impl Sender {
    pub(super) fn new(settings: ReplicationSettings, process: u64) -> Self {
        Self {
            settings,
            process,
            local_logs: HashMap::new(),
            out: None,
            rr_next: None,
        }
    }

    /// A session opened or closed: nothing is sent until the peer's next `Resume`.
    pub(super) fn reset(&mut self) {
        self.out = None;
        self.rr_next = None;
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

    /// The peer said what it holds of our tables: resume each from there, or snapshot it.
    pub(super) fn on_resume(
        &mut self,
        points: Vec<ResumePoint>,
        tables: &StickTables,
        counters: &mut ReplCounters,
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
                        counters.resync_fallbacks += 1;
                    }
                    fresh_snapshot(table.last_update_id())
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

    /// The peer asked for a fresh snapshot of these tables.
    pub(super) fn request_resync(
        &mut self,
        labels: Vec<String>,
        tables: &StickTables,
    ) -> Result<(), ProtocolViolation> {
        let Some(out) = self.out.as_mut() else {
            return Err(ProtocolViolation("resync requested before resume".into()));
        };
        for label in labels {
            if let Some(t) = out.get_mut(&label) {
                let start = tables.get(&label).map_or(0, |t| t.last_update_id());
                t.state = fresh_snapshot(start);
            }
        }
        Ok(())
    }

    /// The peer applied our updates up to these points (of our current logs).
    pub(super) fn on_ack(&mut self, points: Vec<ResumePoint>) {
        if let Some(out) = self.out.as_mut() {
            for p in points {
                if let Some(t) = out.get_mut(&p.table)
                    && t.log == p.log
                {
                    t.acked = t.acked.max(p.up_to);
                }
            }
        }
    }

    /// Fills the queue with the next table's data (round robin over tables).
    pub(super) fn produce(
        &mut self,
        tables: &StickTables,
        now: u64,
        counters: &mut ReplCounters,
        queue: &mut VecDeque<ReplMsg>,
    ) -> bool {
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
                state: fresh_snapshot(table_start),
                acked: 0,
            });
            if entry.log != log {
                // Table recreated: its ids start over, the peer needs a snapshot.
                *entry = OutTable {
                    log,
                    state: fresh_snapshot(table_start),
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
            let produced =
                Self::produce_table(&self.settings, counters, queue, &label, t, table, now);
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
                        t.state = fresh_snapshot(table.last_update_id());
                        Self::produce_table(settings, counters, queue, label, t, table, now)
                    }
                }
            }
        }
    }
}
