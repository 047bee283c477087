//! The operators' admin states (Online / Drain / Halt per real server) as both nodes agree on
//! them, sans-IO: a last-writer-wins map keyed by `(service, server)`, ordered by a hybrid
//! logical clock.
//!
//! Every change an operator makes gets a [`Stamp`]: the wall clock in milliseconds, a counter
//! for changes within the same millisecond (or while the clock lags a stamp already seen), and
//! the name of the node the operator used. Stamps are totally ordered (wall, counter, node), so
//! [`AdminStates::merge_remote`] keeps, per server, the entry with the greatest stamp: merging is
//! commutative, associative and idempotent, and two nodes that exchanged their entries hold the
//! same states whatever the order of the messages. A node that has seen a stamp stamps its own
//! later changes after it, even if its clock is behind, so "drain on lb1, then online on lb2"
//! always ends online. Two changes made while the nodes could not talk are ordered by their wall
//! clocks: the later one wins on both sides once they meet again (docs/protocol.md, "Admin
//! states").
//!
//! [`AdminStates`] also remembers how this node learnt each state ([`Origin`]) for the status,
//! and a revision per change so the sync session sends only what changed since its last look.
//! [`SharedAdminStates`] is the daemon's and the sync task's common handle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// At most this many entries are kept (a peer cannot make a node grow without bound).
pub const MAX_ENTRIES: usize = 65_536;
/// Longest service or server label and node name accepted from the peer or a file (bytes).
pub const MAX_LABEL_BYTES: usize = 256;

/// The appliance's per-server buttons, as they persist and replicate. `Halt` with "close
/// existing connections" closes them once, on the node where the operator pressed it; what
/// persists and replicates is `Halt`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum AdminMode {
    #[default]
    Online,
    Drain,
    Halt,
}

impl AdminMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminMode::Online => "online",
            AdminMode::Drain => "drain",
            AdminMode::Halt => "halt",
        }
    }
}

/// A hybrid-logical-clock stamp. Field order is the comparison order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Unix milliseconds (the wall clock of the node that made the change, or later).
    pub wall_ms: u64,
    /// Orders changes within one `wall_ms`.
    pub counter: u32,
    /// The node whose operator made the change (breaks the last ties).
    pub node: String,
}

/// One server's admin state with the stamp of the change that set it (what goes on the wire
/// and into the state file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdminEntry {
    pub service: String,
    pub server: String,
    pub mode: AdminMode,
    pub stamp: Stamp,
}

impl AdminEntry {
    /// Why the entry is refused from the peer or a file, if it is.
    pub fn invalid(&self) -> Option<String> {
        for (what, text) in [
            ("service", &self.service),
            ("server", &self.server),
            ("node", &self.stamp.node),
        ] {
            if text.is_empty() || text.len() > MAX_LABEL_BYTES {
                return Some(format!(
                    "{what} label of {} bytes (1 to {MAX_LABEL_BYTES})",
                    text.len()
                ));
            }
        }
        None
    }

    /// The merge order: the stamp, then (for stamps that should never be equal) the mode, so
    /// the winner never depends on the order entries arrive in.
    fn rank(&self) -> (&Stamp, AdminMode) {
        (&self.stamp, self.mode)
    }
}

/// How this node learnt an entry (status only; never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An operator on this node.
    Operator,
    /// From the peer over the sync session.
    Replicated,
    /// Read from the state file at start (it was set before this process started).
    Restored,
}

/// An entry as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    pub entry: AdminEntry,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
struct Slot {
    mode: AdminMode,
    stamp: Stamp,
    origin: Origin,
    /// The revision of this node's map when the slot last changed.
    revision: u64,
}

/// What [`AdminStates::merge_remote`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entries that won and changed this node's map.
    pub changed: Vec<AdminEntry>,
    /// Entries older than (or equal to) what this node holds.
    pub stale: usize,
    /// Entries refused: bad labels, or new keys beyond [`MAX_ENTRIES`].
    pub refused: usize,
}

/// The admin states of every server, as this node knows them.
#[derive(Debug, Clone)]
pub struct AdminStates {
    node: String,
    slots: BTreeMap<(String, String), Slot>,
    /// The greatest (wall, counter) this node has stamped or seen.
    clock: (u64, u32),
    revision: u64,
}

impl AdminStates {
    /// An empty map for node `node` (its name stamps this node's changes).
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            slots: BTreeMap::new(),
            clock: (0, 0),
            revision: 0,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Bumped by every change; [`Self::changes_since`] takes it back.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The next stamp of this node at wall time `now_ms`: after everything stamped or seen.
    fn next_stamp(&mut self, now_ms: u64) -> Stamp {
        let (wall, counter) = self.clock;
        self.clock = if now_ms > wall {
            (now_ms, 0)
        } else if counter < u32::MAX {
            (wall, counter + 1)
        } else {
            (wall.saturating_add(1), 0)
        };
        Stamp {
            wall_ms: self.clock.0,
            counter: self.clock.1,
            node: self.node.clone(),
        }
    }

    /// Stamps seen are "before" every later local change.
    fn observe(&mut self, stamp: &Stamp) {
        self.clock = self.clock.max((stamp.wall_ms, stamp.counter));
    }

    /// An operator on this node set `mode` at wall time `now_ms`: the entry to send the peer.
    pub fn apply_local(
        &mut self,
        service: &str,
        server: &str,
        mode: AdminMode,
        now_ms: u64,
    ) -> AdminEntry {
        let stamp = self.next_stamp(now_ms);
        self.revision += 1;
        self.slots.insert(
            (service.to_owned(), server.to_owned()),
            Slot {
                mode,
                stamp: stamp.clone(),
                origin: Origin::Operator,
                revision: self.revision,
            },
        );
        AdminEntry {
            service: service.to_owned(),
            server: server.to_owned(),
            mode,
            stamp,
        }
    }

    /// Merges entries from the peer (or, with `origin` [`Origin::Restored`], from the state
    /// file): each one replaces ours when its stamp is greater.
    pub fn merge(
        &mut self,
        entries: impl IntoIterator<Item = AdminEntry>,
        origin: Origin,
    ) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        for entry in entries {
            if entry.invalid().is_some() {
                outcome.refused += 1;
                continue;
            }
            self.observe(&entry.stamp);
            let key = (entry.service.clone(), entry.server.clone());
            match self.slots.get(&key) {
                Some(slot) if (&slot.stamp, slot.mode) >= entry.rank() => {
                    outcome.stale += 1;
                    continue;
                }
                None if self.slots.len() >= MAX_ENTRIES => {
                    outcome.refused += 1;
                    continue;
                }
                _ => {}
            }
            self.revision += 1;
            self.slots.insert(
                key,
                Slot {
                    mode: entry.mode,
                    stamp: entry.stamp.clone(),
                    origin,
                    revision: self.revision,
                },
            );
            outcome.changed.push(entry);
        }
        outcome
    }

    /// Merges the peer's entries (see [`Self::merge`]).
    pub fn merge_remote(&mut self, entries: impl IntoIterator<Item = AdminEntry>) -> MergeOutcome {
        self.merge(entries, Origin::Replicated)
    }

    /// Drops the entries `keep` refuses (servers no longer configured); returns them.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) -> Vec<AdminEntry> {
        let mut dropped = Vec::new();
        self.slots.retain(|(service, server), slot| {
            let kept = keep(service, server);
            if !kept {
                dropped.push(entry_of(service, server, slot));
            }
            kept
        });
        if !dropped.is_empty() {
            self.revision += 1;
        }
        dropped
    }

    /// Every entry, sorted by service and server (the full exchange of a new session).
    pub fn snapshot(&self) -> Vec<AdminEntry> {
        self.changes_since(0)
    }

    /// Entries changed after revision `revision`, sorted by service and server.
    pub fn changes_since(&self, revision: u64) -> Vec<AdminEntry> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.revision > revision)
            .map(|((service, server), slot)| entry_of(service, server, slot))
            .collect()
    }

    /// Every entry with how this node learnt it, sorted by service and server.
    pub fn held(&self) -> Vec<HeldEntry> {
        self.slots
            .iter()
            .map(|((service, server), slot)| HeldEntry {
                entry: entry_of(service, server, slot),
                origin: slot.origin,
            })
            .collect()
    }

    /// One server's entry.
    pub fn get(&self, service: &str, server: &str) -> Option<HeldEntry> {
        self.slots
            .get(&(service.to_owned(), server.to_owned()))
            .map(|slot| HeldEntry {
                entry: entry_of(service, server, slot),
                origin: slot.origin,
            })
    }
}

fn entry_of(service: &str, server: &str, slot: &Slot) -> AdminEntry {
    AdminEntry {
        service: service.to_owned(),
        server: server.to_owned(),
        mode: slot.mode,
        stamp: slot.stamp.clone(),
    }
}

/// Unix milliseconds now (0 before 1970).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type ChangeHook = Box<dyn Fn(&[AdminEntry]) + Send + Sync>;

struct Shared {
    states: Mutex<AdminStates>,
    on_remote_change: ChangeHook,
}

/// The admin states shared by the daemon (operator actions, restore, status) and the sync task
/// (the peer's changes). The hook runs, outside the lock, after the peer's entries changed
/// anything, so the daemon can apply and save them.
#[derive(Clone)]
pub struct SharedAdminStates(Arc<Shared>);

impl std::fmt::Debug for SharedAdminStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedAdminStates")
            .field(&*self.lock())
            .finish()
    }
}

impl SharedAdminStates {
    pub fn new(
        states: AdminStates,
        on_remote_change: impl Fn(&[AdminEntry]) + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(Shared {
            states: Mutex::new(states),
            on_remote_change: Box::new(on_remote_change),
        }))
    }

    /// The map (a poisoned lock is taken over: the map is valid after every method).
    pub fn lock(&self) -> MutexGuard<'_, AdminStates> {
        self.0
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Merges the peer's entries and runs the hook when anything changed.
    pub fn merge_remote(&self, entries: Vec<AdminEntry>) -> MergeOutcome {
        let outcome = self.lock().merge_remote(entries);
        if !outcome.changed.is_empty() {
            (self.0.on_remote_change)(&outcome.changed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
