#![allow(clippy::unwrap_used)]
//! Property tests of the stick table:
//! 1. model-based: set / lookup / remove / peek / expire / eviction against a plain reference
//!    model, with time moving by steps of 0 (same millisecond) or more;
//! 2. replication: a full resync (chunked, the source changing between chunks) followed by the
//!    incremental stream, applied to another table, reproduces the source — under any
//!    interleaving of source changes, expiries on both sides, reconnects (fresh resync), log
//!    overflow (resync needed), duplicate and late updates.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use proptest::prelude::*;
use tandem_stick::{SnapshotCursor, StickKey, StickTable, TableSpec, Update};

const SERVERS: [&str; 3] = ["Overcloud-controller-0", "Overcloud-controller-1", "c2"];

fn key(k: u8) -> StickKey {
    if k == 0 {
        StickKey::Service
    } else {
        StickKey::SourceIp(IpAddr::from([192, 0, 2, k]))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, usize),
    Lookup(u8),
    Remove(u8),
    Peek(u8),
    Expire,
    Advance(u64),
    /// An update from the peer: server (None = delete) and remaining lifetime.
    Remote(u8, Option<usize>, u64),
}

fn op(keys: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..keys, 0..SERVERS.len()).prop_map(|(k, s)| Op::Set(k, s)),
        3 => (0..keys).prop_map(Op::Lookup),
        1 => (0..keys).prop_map(Op::Remove),
        1 => (0..keys).prop_map(Op::Peek),
        1 => Just(Op::Expire),
        3 => prop_oneof![Just(0u64), 1..40u64, 40..400u64].prop_map(Op::Advance),
    ]
}

/// Local operations mixed with updates from the peer (arbitrary remaining lifetimes).
fn model_op(keys: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => op(keys),
        2 => (0..keys, prop::option::weighted(0.8, 0..SERVERS.len()), 0..700u64)
            .prop_map(|(k, s, remaining)| Op::Remote(k, s, remaining)),
    ]
}

fn spec() -> impl Strategy<Value = TableSpec> {
    (
        prop_oneof![Just(None), (1..600u64).prop_map(Some)],
        1..8usize,
    )
        .prop_map(|(timeout_ms, capacity)| TableSpec {
            timeout_ms,
            capacity,
        })
}

/// The reference: a plain map, scanned for the minimum on eviction.
struct Model {
    spec: TableSpec,
    /// key -> (server, deadline, use sequence)
    entries: HashMap<u8, (usize, u64, u64)>,
    seq: u64,
    evicted: u64,
}

impl Model {
    fn expired(&self, deadline: u64, now: u64) -> bool {
        self.spec.timeout_ms.is_some() && deadline <= now
    }
    fn fresh(&mut self, now: u64) -> (u64, u64) {
        self.seq += 1;
        (now + self.spec.timeout_ms.unwrap_or(0), self.seq)
    }
    fn live(&mut self, k: u8, now: u64) -> bool {
        match self.entries.get(&k) {
            Some(&(_, deadline, _)) if self.expired(deadline, now) => {
                self.entries.remove(&k);
                false
            }
            Some(_) => true,
            None => false,
        }
    }
    fn set(&mut self, k: u8, server: usize, now: u64) {
        if !self.live(k, now) {
            while self.entries.len() >= self.spec.capacity {
                let (&victim, &(_, deadline, _)) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, deadline, seq))| (*deadline, *seq))
                    .unwrap();
                if !self.expired(deadline, now) {
                    self.evicted += 1;
                }
                self.entries.remove(&victim);
            }
        }
        let (deadline, seq) = self.fresh(now);
        self.entries.insert(k, (server, deadline, seq));
    }
    fn lookup(&mut self, k: u8, now: u64) -> Option<usize> {
        if !self.live(k, now) {
            return None;
        }
        let (deadline, seq) = self.fresh(now);
        let e = self.entries.get_mut(&k).unwrap();
        e.1 = deadline;
        e.2 = seq;
        Some(e.0)
    }
    fn remove(&mut self, k: u8, now: u64) -> Option<usize> {
        if !self.live(k, now) {
            return None;
        }
        self.entries.remove(&k).map(|e| e.0)
    }
    fn peek(&self, k: u8, now: u64) -> Option<(usize, Option<u64>)> {
        let &(server, deadline, _) = self.entries.get(&k)?;
        if self.expired(deadline, now) {
            return None;
        }
        Some((server, self.spec.timeout_ms.map(|_| deadline - now)))
    }
    fn remote(&mut self, k: u8, server: Option<usize>, remaining: u64, now: u64) {
        let deadline = match (server, self.spec.timeout_ms) {
            (None, _) => None,
            (Some(_), Some(timeout)) => {
                (remaining.min(timeout) > 0).then(|| now + remaining.min(timeout))
            }
            (Some(_), None) => Some(now),
        };
        match (server, deadline) {
            (Some(server), Some(deadline)) => {
                self.seq += 1;
                self.entries.insert(k, (server, deadline, self.seq));
            }
            _ => {
                self.entries.remove(&k);
            }
        }
    }
    fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        if self.spec.timeout_ms.is_some() {
            self.entries.retain(|_, e| e.1 > now);
        }
        before - self.entries.len()
    }
}

fn server_index(label: &str) -> usize {
    SERVERS.iter().position(|s| *s == label).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_reference_model(spec in spec(), ops in prop::collection::vec(model_op(10), 1..200)) {
        let mut table = StickTable::new(spec);
        let mut model = Model { spec, entries: HashMap::new(), seq: 0, evicted: 0 };
        let mut now = 1_000u64;
        let mut remote_id = 0;
        for op in ops {
            match op {
                Op::Set(k, s) => {
                    table.set(&key(k), SERVERS[s], now);
                    model.set(k, s, now);
                }
                Op::Lookup(k) => {
                    let got = table.lookup(&key(k), now).map(|l| server_index(&l));
                    prop_assert_eq!(got, model.lookup(k, now), "lookup {}", k);
                }
                Op::Remove(k) => {
                    let got = table.remove(&key(k), now).map(|l| server_index(&l));
                    prop_assert_eq!(got, model.remove(k, now), "remove {}", k);
                }
                Op::Peek(k) => {
                    let got = table.peek(&key(k), now).map(|e| (server_index(&e.server), e.remaining_ms));
                    prop_assert_eq!(got, model.peek(k, now), "peek {}", k);
                }
                Op::Expire => prop_assert_eq!(table.expire(now), model.expire(now)),
                Op::Advance(dt) => now += dt,
                Op::Remote(k, s, remaining) => {
                    remote_id += 1;
                    let update = Update {
                        id: remote_id,
                        key: key(k),
                        server: s.map(|s| SERVERS[s].into()),
                        remaining_ms: spec.timeout_ms.map(|_| remaining),
                    };
                    prop_assert!(table.apply_remote(&update, now));
                    model.remote(k, s, remaining, now);
                }
            }
            prop_assert_eq!(table.len(), model.entries.len());
            prop_assert_eq!(table.stats().evicted, model.evicted);
        }
        for k in 0..10 {
            let got = table.peek(&key(k), now).map(|e| (server_index(&e.server), e.remaining_ms));
            prop_assert_eq!(got, model.peek(k, now));
        }
    }
}

// ------------------------------------------------------------------------------ replication

#[derive(Debug, Clone)]
enum Event {
    /// A change on the source.
    Local(Op),
    /// The sender sends its next snapshot chunk (if resyncing) of at most this many entries.
    Chunk(usize),
    /// The sender sends its next log batch (if streaming) of at most this many updates.
    Batch(usize),
    /// An update already delivered in this session is delivered again (index into history).
    Duplicate(usize),
    /// The receiver sweeps its expired entries.
    ExpireReceiver,
    /// The session breaks and a new one starts with a full resync.
    Reconnect,
    /// The session breaks and the new one resumes the stream from an earlier acknowledged id
    /// (index into the acks of this session): updates already applied are sent again.
    Resume(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => op(16).prop_map(Event::Local),
        3 => (1..5usize).prop_map(Event::Chunk),
        3 => (1..6usize).prop_map(Event::Batch),
        1 => any::<usize>().prop_map(Event::Duplicate),
        1 => Just(Event::ExpireReceiver),
        // A plain weight, not a filter: a filter retries until it passes (so it never made reconnects rarer) and
        // every retry counts against proptest's local-reject limit, which long runs (x60 cases) exceeded.
        1 => Just(Event::Reconnect),
        1 => any::<usize>().prop_map(Event::Resume),
    ]
}

enum Phase {
    Snapshot { start: u64, cursor: SnapshotCursor },
    Streaming { sent: u64 },
}

/// The sync session between a source and a receiver, minus the wire.
struct Session {
    phase: Phase,
    /// Updates delivered since the last resync began.
    history: Vec<Update>,
    /// Positions the receiver acknowledged since the last resync (streaming only).
    acks: Vec<u64>,
    /// Highest update id delivered since the last resync.
    high: u64,
    resyncs: usize,
}

impl Session {
    fn start(source: &StickTable, receiver: &mut StickTable) -> Self {
        receiver.begin_resync();
        Session {
            phase: Phase::Snapshot {
                start: source.last_update_id(),
                cursor: SnapshotCursor::START,
            },
            history: Vec::new(),
            acks: Vec::new(),
            high: 0,
            resyncs: 1,
        }
    }

    fn restart(&mut self, source: &StickTable, receiver: &mut StickTable) {
        let resyncs = self.resyncs + 1;
        *self = Session::start(source, receiver);
        self.resyncs = resyncs;
    }

    fn chunk(&mut self, source: &StickTable, receiver: &mut StickTable, max: usize, now: u64) {
        if let Phase::Snapshot { start, cursor } = self.phase {
            let (entries, next) = source.snapshot_chunk(cursor, max, now);
            for entry in &entries {
                receiver.apply_remote_entry(entry, now);
            }
            self.phase = match next {
                Some(cursor) => Phase::Snapshot { start, cursor },
                None => {
                    receiver.end_resync();
                    self.acks.push(start);
                    Phase::Streaming { sent: start }
                }
            };
        }
    }

    /// Returns whether anything was delivered.
    fn batch(
        &mut self,
        source: &StickTable,
        receiver: &mut StickTable,
        max: usize,
        now: u64,
    ) -> bool {
        let Phase::Streaming { sent } = self.phase else {
            return false;
        };
        match source.updates_since(sent, max, now) {
            Ok(batch) => {
                for update in &batch.updates {
                    assert!(update.id > sent);
                    let applied = receiver.apply_remote(update, now);
                    assert_eq!(applied, update.id > self.high, "only fresh updates applied");
                    self.high = self.high.max(update.id);
                    self.history.push(update.clone());
                }
                self.acks.push(batch.up_to);
                self.phase = Phase::Streaming { sent: batch.up_to };
                batch.up_to != sent
            }
            Err(_) => {
                self.restart(source, receiver);
                true
            }
        }
    }

    fn finish(&mut self, source: &StickTable, receiver: &mut StickTable, now: u64) {
        for _ in 0..10_000 {
            match self.phase {
                Phase::Snapshot { .. } => self.chunk(source, receiver, 3, now),
                Phase::Streaming { .. } => {
                    if !self.batch(source, receiver, 4, now) {
                        return;
                    }
                }
            }
        }
        panic!("session did not converge");
    }
}

/// Live entries: key -> (server, remaining).
fn dump(table: &StickTable, now: u64) -> BTreeMap<String, (String, Option<u64>)> {
    let mut out = BTreeMap::new();
    let mut cursor = Some(SnapshotCursor::START);
    let mut chunks = 0;
    while let Some(c) = cursor {
        chunks += 1;
        assert!(chunks < 100_000, "snapshot does not end");
        let (entries, next) = table.snapshot_chunk(c, 7, now);
        for e in entries {
            let previous = out.insert(
                format!("{:?}", e.key),
                (e.server.to_string(), e.remaining_ms),
            );
            assert!(previous.is_none(), "key twice in one table");
        }
        cursor = next;
    }
    out
}

fn apply_local(table: &mut StickTable, op: &Op, now: &mut u64) {
    match *op {
        Op::Set(k, s) => table.set(&key(k), SERVERS[s], *now),
        Op::Lookup(k) => {
            table.lookup(&key(k), *now);
        }
        Op::Remove(k) => {
            table.remove(&key(k), *now);
        }
        Op::Peek(_) => {}
        Op::Expire => {
            table.expire(*now);
        }
        Op::Advance(dt) => *now += dt,
        Op::Remote(..) => unreachable!("the source only changes locally"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn resync_then_stream_reproduces_the_source(
        spec in spec(),
        log_capacity in prop_oneof![2..12usize, Just(10_000)],
        granularity in prop_oneof![Just(0u64), 1..50u64],
        prefill in prop::collection::vec(op(16), 0..40),
        events in prop::collection::vec(event(), 1..250),
    ) {
        let mut source = StickTable::with_log_capacity(spec, log_capacity);
        source.set_touch_granularity_ms(granularity);
        let mut receiver = StickTable::new(spec);
        let mut now = 5_000u64;
        for op in &prefill {
            apply_local(&mut source, op, &mut now);
        }
        let mut session = Session::start(&source, &mut receiver);
        for event in &events {
            match event {
                Event::Local(op) => apply_local(&mut source, op, &mut now),
                Event::Chunk(max) => session.chunk(&source, &mut receiver, *max, now),
                Event::Batch(max) => {
                    session.batch(&source, &mut receiver, *max, now);
                }
                Event::Duplicate(i) => {
                    if !session.history.is_empty() {
                        let update = session.history[i % session.history.len()].clone();
                        prop_assert!(!receiver.apply_remote(&update, now), "duplicate applied");
                    }
                }
                Event::ExpireReceiver => {
                    receiver.expire(now);
                }
                Event::Reconnect => session.restart(&source, &mut receiver),
                Event::Resume(i) => {
                    if matches!(session.phase, Phase::Streaming { .. }) && !session.acks.is_empty() {
                        let ack = session.acks[i % session.acks.len()];
                        session.phase = Phase::Streaming { sent: ack };
                    }
                }
            }
        }
        session.finish(&source, &mut receiver, now);

        // The receiver never logs what it learned from the peer.
        prop_assert_eq!(receiver.last_update_id(), 0);
        let want = dump(&source, now);
        let got = dump(&receiver, now);
        let tolerance = if spec.timeout_ms.is_some() { granularity } else { 0 };
        for (k, (server, remaining)) in &got {
            let Some((want_server, want_remaining)) = want.get(k) else {
                return Err(TestCaseError::fail(format!("receiver has {k} the source does not")));
            };
            prop_assert_eq!(server, want_server, "server of {}", k);
            match (remaining, want_remaining) {
                (Some(r), Some(w)) => prop_assert!(r <= w && w - r <= tolerance.saturating_sub(1),
                    "{}: remaining {} vs source {} (granularity {})", k, r, w, granularity),
                (r, w) => prop_assert_eq!(r, w),
            }
        }
        for (k, (_, remaining)) in &want {
            if !got.contains_key(k) {
                // Only an entry whose last touches stayed under the granularity step can have
                // expired on the receiver first.
                prop_assert!(remaining.is_some_and(|r| r < tolerance),
                    "receiver lacks {} (remaining {:?}, granularity {})", k, remaining, granularity);
            }
        }
        prop_assert!(receiver.len() <= spec.capacity + receiver.stats().capacity * 4 + 1024);
    }
}
