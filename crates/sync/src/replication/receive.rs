//! The receiving side of replication: what we hold of the peer's tables (resume points, kept
//! across sessions), each table's snapshot or stream in progress, applying entries and updates,
//! and the acknowledgements owed.

use std::collections::HashMap;

use tandem_stick::{Entry, StickTables, Update};

use super::msg::{LogId, ProtocolViolation, ReplCounters, ReplMsg, ResumePoint};

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

/// What we hold of the peer's tables.
#[derive(Debug, Default)]
pub(super) struct Receiver {
    /// Resume points (survive reconnects, not restarts).
    resume: HashMap<String, (LogId, u64)>,
    inbound: HashMap<String, InState>,
    acked_sent: HashMap<String, u64>,
}

impl Receiver {
    /// A session opened: forget the tables we no longer have (`known` are ours) and return the
    /// resume points to announce, sorted by table.
    pub(super) fn session_open(&mut self, known: &[String]) -> Vec<ResumePoint> {
        self.inbound.clear();
        self.acked_sent.clear();
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
        points
    }

    pub(super) fn session_closed(&mut self) {
        // A snapshot cut short leaves no resume point: the next session starts it again.
        for (label, state) in self.inbound.drain() {
            if matches!(state, InState::Resyncing { .. }) {
                self.resume.remove(&label);
            }
        }
    }

    /// The table was removed locally (live reload).
    pub(super) fn forget(&mut self, label: &str) {
        self.resume.remove(label);
        self.inbound.remove(label);
        self.acked_sent.remove(label);
    }

    /// Past its snapshot: streaming the peer's updates.
    pub(super) fn streaming(&self, label: &str) -> bool {
        matches!(self.inbound.get(label), Some(InState::Streaming { .. }))
    }

    /// Labels of the peer's tables currently being received as a snapshot, sorted.
    pub(super) fn resyncing_tables(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inbound
            .iter()
            .filter(|(_, s)| matches!(s, InState::Resyncing { .. }))
            .map(|(l, _)| l.clone())
            .collect();
        v.sort();
        v
    }

    /// `replace`: this node is standby, it mirrors the snapshot exactly.
    pub(super) fn on_resync_begin(
        &mut self,
        table: String,
        log: LogId,
        start: u64,
        replace: bool,
        tables: &mut StickTables,
        counters: &mut ReplCounters,
    ) {
        self.resume.remove(&table);
        let Some(local) = tables.get_mut(&table) else {
            counters.unknown_table_messages += 1;
            self.inbound.remove(&table);
            return;
        };
        // Resets the duplicate filter (update ids start over with this log); an active node
        // never ends the resync, so nothing of its own is dropped.
        local.begin_resync();
        self.inbound.insert(
            table,
            InState::Resyncing {
                log,
                start,
                replace,
            },
        );
    }

    pub(super) fn on_entries(
        &mut self,
        table: String,
        entries: Vec<Entry>,
        tables: &mut StickTables,
        now: u64,
        counters: &mut ReplCounters,
    ) -> Result<(), ProtocolViolation> {
        let Some(local) = tables.get_mut(&table) else {
            counters.unknown_table_messages += 1;
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
            counters.entries_applied += entries.len() as u64;
        } else {
            // Active: our table is authoritative. Merging the standby's copy back would
            // resurrect entries we deleted since; its own changes come as updates.
            counters.entries_ignored += entries.len() as u64;
        }
        Ok(())
    }

    pub(super) fn on_resync_end(
        &mut self,
        table: String,
        tables: &mut StickTables,
        counters: &mut ReplCounters,
    ) -> Result<(), ProtocolViolation> {
        let Some(local) = tables.get_mut(&table) else {
            counters.unknown_table_messages += 1;
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
        counters.resyncs_received += 1;
        self.resume.insert(table.clone(), (log, start));
        self.inbound
            .insert(table, InState::Streaming { log, up_to: start });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the fields of one `Updates` message and its context
    pub(super) fn on_updates(
        &mut self,
        table: String,
        log: LogId,
        updates: Vec<Update>,
        up_to: u64,
        tables: &mut StickTables,
        now: u64,
        counters: &mut ReplCounters,
    ) -> Result<(), ProtocolViolation> {
        let Some(local) = tables.get_mut(&table) else {
            counters.unknown_table_messages += 1;
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
                counters.updates_applied += 1;
            } else {
                counters.updates_duplicate += 1;
            }
        }
        *applied = (*applied).max(up_to);
        self.resume.insert(table, (log, *applied));
        Ok(())
    }

    /// An `Ack` for every stream applied further than last acknowledged.
    pub(super) fn ack_message(&mut self) -> Option<ReplMsg> {
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
}
