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
//!
//! Here: the session's life and the dispatch of messages. The wire vocabulary is in `msg`, the
//! sending side (log identities, resume, snapshot chunks, change-log batches, the unacked window)
//! in `send`, the receiving side (resume points, applying snapshots and updates, acks) in
//! `receive`. The two sides share only the message queue and the counters.

mod msg;
mod receive;
mod send;

use std::collections::{BTreeMap, VecDeque};

use tandem_stick::StickTables;

pub use msg::{LogId, ProtocolViolation, ReplCounters, ReplMsg, ReplicationSettings, ResumePoint};
use receive::Receiver;
pub(crate) use send::split_by_bytes;
use send::{Sender, local_labels};

/// The replication state of one node (kept across sessions) and of its current session.
#[derive(Debug)]
pub struct Replicator {
    sender: Sender,
    receiver: Receiver,
    connected: bool,
    active: bool,
    known_local: Vec<String>,
    queue: VecDeque<ReplMsg>,
    peer_sizes: BTreeMap<String, u64>,
    sizes_heard: bool,
    last_ack_ms: Option<u64>,
    counters: ReplCounters,
}

impl Replicator {
    /// `process` must be random per daemon process (a fresh log identity after a restart).
    pub fn new(settings: ReplicationSettings, process: u64) -> Self {
        Self {
            sender: Sender::new(settings, process),
            receiver: Receiver::default(),
            connected: false,
            active: false,
            known_local: Vec::new(),
            queue: VecDeque::new(),
            peer_sizes: BTreeMap::new(),
            sizes_heard: false,
            last_ack_ms: None,
            counters: ReplCounters::default(),
        }
    }

    pub fn counters(&self) -> &ReplCounters {
        &self.counters
    }

    /// For the engine's admin-state counters (the messages it handles itself).
    pub(crate) fn counters_mut(&mut self) -> &mut ReplCounters {
        &mut self.counters
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
                .all(|label| self.receiver.streaming(label))
    }

    /// Labels of the peer's tables currently being received as a snapshot.
    pub fn resyncing_tables(&self) -> Vec<String> {
        self.receiver.resyncing_tables()
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

    /// A session opened: queue our `Resume`.
    pub fn on_session_open(&mut self, tables: &StickTables) {
        self.connected = true;
        self.sender.reset();
        self.queue.clear();
        self.known_local = local_labels(tables);
        let points = self.receiver.session_open(&self.known_local);
        self.queue.push_back(ReplMsg::Resume { points });
        self.sizes_heard = false;
        let sizes = self.sizes_message(tables);
        self.queue.push_back(sizes);
    }

    pub fn on_session_closed(&mut self) {
        self.connected = false;
        self.sender.reset();
        self.queue.clear();
        self.receiver.session_closed();
    }

    /// Applies one message from the authenticated peer.
    pub fn on_message(
        &mut self,
        message: ReplMsg,
        tables: &mut StickTables,
        now: u64,
    ) -> Result<(), ProtocolViolation> {
        let counters = &mut self.counters;
        match message {
            ReplMsg::Resume { points } => self.sender.on_resume(points, tables, counters),
            ReplMsg::RequestResync { tables: labels } => self.sender.request_resync(labels, tables),
            ReplMsg::ResyncBegin { table, log, start } => {
                let replace = !self.active;
                self.receiver
                    .on_resync_begin(table, log, start, replace, tables, counters);
                Ok(())
            }
            ReplMsg::Entries { table, entries } => self
                .receiver
                .on_entries(table, entries, tables, now, counters),
            ReplMsg::ResyncEnd { table } => self.receiver.on_resync_end(table, tables, counters),
            ReplMsg::Updates {
                table,
                log,
                updates,
                up_to,
            } => self
                .receiver
                .on_updates(table, log, updates, up_to, tables, now, counters),
            ReplMsg::Ack { points } => {
                self.last_ack_ms = Some(now);
                self.sender.on_ack(points);
                Ok(())
            }
            ReplMsg::Sizes { tables: sizes } => {
                self.sizes_heard = true;
                self.peer_sizes = sizes.into_iter().collect();
                Ok(())
            }
            // The engine merges them before the tables are locked; none reach here.
            ReplMsg::AdminStates { .. } => Ok(()),
        }
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
            self.receiver.forget(removed);
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
        if let Some(ack) = self.receiver.ack_message() {
            return Some(ack);
        }
        // A snapshot chunk of only free or expired slots yields no message: keep going.
        while self.queue.is_empty()
            && self
                .sender
                .produce(tables, now, &mut self.counters, &mut self.queue)
        {}
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests;
