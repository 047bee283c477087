//! Deterministic tests of the session policy: two engines exchanging sealed frames in memory on
//! a clock the test sets (no sockets, no sleeps).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use ring::rand::SystemRandom;
use tandem_stick::{StickKey, TableSpec};
use tandem_types::Secret;

use super::*;
use crate::config_push::ConfigVersion;
use crate::handshake::{AcceptorHandshake, DialerHandshake};

const KEEPALIVE: u64 = 1_000;
const PEER_TIMEOUT: u64 = 5_000;

/// Records the generations offered to it; accepts them all.
struct Recording(Arc<Mutex<Vec<u64>>>);

impl ConfigSink for Recording {
    fn offer(
        &mut self,
        _bytes: &[u8],
        _files: &[crate::config_push::ConfigFile],
        generation: u64,
        _digest: &str,
    ) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push(generation);
        Ok(())
    }
}

struct Node {
    engine: SyncEngine,
    tables: StickTables,
    offers: Arc<Mutex<Vec<u64>>>,
}

fn identity() -> Identity {
    Identity::new(
        "c",
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
    )
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 7778)
}

fn local_config(generation: u64) -> LocalConfig {
    LocalConfig {
        bytes: format!("# generation {generation}\n").into_bytes(),
        files: Vec::new(),
        version: ConfigVersion {
            generation,
            digest: format!("d{generation}"),
        },
    }
}

/// Node 1 (the lower address: it dials) or node 2; node 1 is the primary.
fn node(me: u8, config: Option<LocalConfig>) -> Node {
    node_with(me, config, None)
}

fn node_with(me: u8, config: Option<LocalConfig>, admin: Option<SharedAdminStates>) -> Node {
    let params = SyncParams {
        local: addr(me),
        peer: addr(3 - me),
        identity: identity(),
        role: if me == 1 {
            ConfigRole::Primary
        } else {
            ConfigRole::Secondary
        },
        settings: SyncSettings {
            timers: SessionTimers {
                keepalive_ms: KEEPALIVE,
                peer_timeout_ms: PEER_TIMEOUT,
            },
            admin_states: admin,
            ..SyncSettings::default()
        },
    };
    let mut tables = StickTables::new();
    tables.reconcile([("nova".to_string(), TableSpec::from_config(0, 100))], 0);
    let offers = Arc::new(Mutex::new(Vec::new()));
    Node {
        engine: SyncEngine::new(
            &params,
            config,
            Box::new(Recording(offers.clone())),
            u64::from(me),
            0,
        ),
        tables,
        offers,
    }
}

/// Authenticates a session between the two and opens it on both at `now`.
fn connect(dialer: &mut Node, acceptor: &mut Node, now: u64) {
    let id = identity();
    let rng = SystemRandom::new();
    let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
    let (a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (proof, d) = d.on_challenge(&challenge).unwrap();
    let (confirm, acceptor_keys) = a.on_proof(&proof).unwrap();
    let dialer_keys = d.on_confirm(&confirm).unwrap();
    dialer
        .engine
        .open(dialer_keys, now, &dialer.tables, true, None);
    acceptor
        .engine
        .open(acceptor_keys, now, &acceptor.tables, false, None);
}

/// Everything `from` sends at `now` with unlimited room.
fn drain(from: &mut Node, now: u64) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(frame) = from.engine.next_frame(now, || &from.tables).unwrap() {
        frames.push(frame);
    }
    frames
}

fn deliver(frames: Vec<Vec<u8>>, to: &mut Node, now: u64) {
    for frame in frames {
        to.engine.on_frame(&frame, now, || &mut to.tables).unwrap();
    }
}

/// Exchanges frames both ways at `now` until neither side has anything to send.
fn settle(a: &mut Node, b: &mut Node, now: u64) {
    loop {
        let (to_b, to_a) = (drain(a, now), drain(b, now));
        if to_b.is_empty() && to_a.is_empty() {
            return;
        }
        deliver(to_b, b, now);
        deliver(to_a, a, now);
    }
}

fn peer_entries(n: &Node, now: u64) -> Option<u64> {
    let status = n.engine.status(now, &n.tables, &RejectCounters::default());
    status.tables[0].peer_entries
}

fn client(i: u8) -> StickKey {
    StickKey::source_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
}

#[test]
fn keepalive_carries_table_sizes_every_keepalive_interval_busy_or_idle() {
    let (mut a, mut b) = (node(1, None), node(2, None));
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    assert_eq!(peer_entries(&b, 0), Some(0));
    // An update goes out at once; the sizes the peer sees only with the next keepalive.
    a.tables
        .get_mut("nova")
        .unwrap()
        .set(&client(1), "web-1", 500);
    settle(&mut a, &mut b, 500);
    assert_eq!(b.tables.get("nova").unwrap().len(), 1);
    assert_eq!(peer_entries(&b, 500), Some(0));
    assert!(drain(&mut a, KEEPALIVE - 1).is_empty(), "idle: nothing due");
    let keepalive = drain(&mut a, KEEPALIVE);
    assert_eq!(keepalive.len(), 1, "one frame: the sizes");
    deliver(keepalive, &mut b, KEEPALIVE);
    assert_eq!(peer_entries(&b, KEEPALIVE), Some(1));
    assert!(drain(&mut a, KEEPALIVE + 1).is_empty());
    assert_eq!(
        drain(&mut a, 2 * KEEPALIVE).len(),
        1,
        "and again a period later"
    );
}

#[test]
fn a_silent_peer_closes_the_session_at_the_peer_timeout() {
    let (mut a, mut b) = (node(1, None), node(2, None));
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    // The first tick is at once, then every batch interval; silence bounds the wait too.
    assert_eq!(b.engine.next_timeout(), Some(0));
    b.engine.on_timer(0).unwrap();
    assert_eq!(b.engine.next_timeout(), Some(2));
    b.engine.on_timer(PEER_TIMEOUT - 1).unwrap();
    let closed = b.engine.on_timer(PEER_TIMEOUT).unwrap_err();
    assert_eq!(closed.reason, RejectReason::PeerTimeout);
    // Anything heard restarts the wait.
    let (mut a, mut b) = (node(1, None), node(2, None));
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    deliver(drain(&mut a, 3_000 + KEEPALIVE), &mut b, 3_000);
    b.engine.on_timer(3_000 + PEER_TIMEOUT - 1).unwrap();
    assert_eq!(
        b.engine.on_timer(3_000 + PEER_TIMEOUT).unwrap_err().reason,
        RejectReason::PeerTimeout
    );
}

#[test]
fn a_write_queue_full_for_the_peer_timeout_is_a_stalled_peer() {
    let (mut a, mut b) = (node(1, None), node(2, None));
    connect(&mut a, &mut b, 0);
    a.engine.on_timer(0).unwrap();
    a.engine.write_queue(100, true).unwrap();
    // The stall deadline is a timeout of its own (sooner than silence here).
    a.engine.on_timer(4_000).unwrap();
    a.engine.on_timer(4_500).unwrap();
    assert!(a.engine.next_timeout().unwrap() <= 100 + PEER_TIMEOUT);
    a.engine.write_queue(100 + PEER_TIMEOUT - 1, true).unwrap();
    let stalled = a.engine.write_queue(100 + PEER_TIMEOUT, true).unwrap_err();
    assert_eq!(stalled.reason, RejectReason::PeerStalled);
    // Room again in between starts the count over.
    let (mut a, mut b) = (node(1, None), node(2, None));
    connect(&mut a, &mut b, 0);
    a.engine.write_queue(100, true).unwrap();
    a.engine.write_queue(200, false).unwrap();
    a.engine.write_queue(300, true).unwrap();
    a.engine.write_queue(100 + PEER_TIMEOUT, true).unwrap();
    assert!(a.engine.write_queue(300 + PEER_TIMEOUT, true).is_err());
}

#[test]
fn reconnect_back_off_doubles_to_its_cap_and_restarts_after_a_session() {
    let (mut a, mut b) = (node(1, None), node(2, None));
    let failed = Rejection::new(RejectReason::Io, "connect: refused");
    let waits: Vec<u64> = (0..8)
        .map(|_| a.engine.dial_failed(&failed).as_millis() as u64)
        .collect();
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    connect(&mut a, &mut b, 0);
    a.engine.close();
    b.engine.close();
    assert_eq!(
        a.engine.session_closed(&failed),
        Some(Duration::from_millis(100))
    );
    assert_eq!(a.engine.dial_failed(&failed), Duration::from_millis(100));
    assert_eq!(a.engine.dial_failed(&failed), Duration::from_millis(200));
    // The accepting node waits for the peer instead.
    assert_eq!(b.engine.session_closed(&failed), None);
    let status = a.engine.status(0, &a.tables, &RejectCounters::default());
    assert_eq!(status.last_error, Some(failed.to_string()));
}

#[test]
fn status_is_published_on_changes_and_on_a_period() {
    let (mut a, mut b) = (node(1, Some(local_config(7))), node(2, None));
    // At start, then never on a period while the dialer has no session.
    assert!(a.engine.publish_due(0));
    assert!(!a.engine.publish_due(10_000));
    assert_eq!(a.engine.next_timeout(), None);
    // The accepting node refreshes every IDLE_PUBLISH_MS while waiting.
    assert!(b.engine.publish_due(0));
    assert_eq!(b.engine.next_timeout(), Some(IDLE_PUBLISH_MS));
    assert!(!b.engine.publish_due(IDLE_PUBLISH_MS - 1));
    assert!(b.engine.publish_due(IDLE_PUBLISH_MS));
    // In a session: every PUBLISH_MS, and at once on a config change.
    connect(&mut a, &mut b, 1_000);
    assert!(!b.engine.publish_due(1_000 + PUBLISH_MS - 1));
    assert!(b.engine.publish_due(1_000 + PUBLISH_MS));
    deliver(drain(&mut a, 1_300), &mut b, 1_300);
    assert!(b.engine.publish_due(1_300), "the primary's offer arrived");
    assert!(!b.engine.publish_due(1_301));
    b.engine.close();
    assert!(b.engine.publish_due(1_302), "the session ended");
}

#[test]
fn the_primary_pushes_its_config_and_both_see_it_in_sync() {
    let (mut a, mut b) = (node(1, Some(local_config(7))), node(2, None));
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    assert_eq!(*b.offers.lock().unwrap(), [7]);
    let status = |n: &Node| n.engine.status(0, &n.tables, &RejectCounters::default());
    assert!(status(&a).config.in_sync && status(&b).config.in_sync);
    assert!(status(&a).connected && status(&b).caught_up);
    // A reload on the primary goes out before any table data.
    a.engine.set_local_config(local_config(8));
    a.tables
        .get_mut("nova")
        .unwrap()
        .set(&client(2), "web-2", 10);
    let frames = drain(&mut a, 10);
    assert!(frames.len() >= 3);
    // `Running` then `Offer`, then the update.
    deliver(frames[..2].to_vec(), &mut b, 10);
    assert_eq!(*b.offers.lock().unwrap(), [7, 8]);
    assert_eq!(b.tables.get("nova").unwrap().len(), 0);
    deliver(frames[2..].to_vec(), &mut b, 10);
    settle(&mut a, &mut b, 10);
    assert_eq!(b.tables.get("nova").unwrap().len(), 1);
}

#[test]
fn no_session_no_frames_and_inputs_are_ignored() {
    let mut a = node(1, None);
    assert_eq!(a.engine.next_frame(0, || &a.tables).unwrap(), None);
    a.engine.on_timer(PEER_TIMEOUT * 2).unwrap();
    a.engine.write_queue(PEER_TIMEOUT * 2, true).unwrap();
    a.engine.on_frame(b"junk", 0, || &mut a.tables).unwrap();
    assert!(!a.engine.connected());
}

/// A node keeping admin states; the hook records what the peer changed.
fn admin_node(me: u8) -> (Node, SharedAdminStates, Arc<Mutex<Vec<AdminEntry>>>) {
    let changed = Arc::new(Mutex::new(Vec::new()));
    let record = changed.clone();
    let shared = SharedAdminStates::new(
        crate::admin_states::AdminStates::new(format!("lb{me}")),
        move |entries| record.lock().unwrap().extend(entries.iter().cloned()),
    );
    (node_with(me, None, Some(shared.clone())), shared, changed)
}

#[test]
fn admin_states_follow_the_peer_and_are_exchanged_in_full_on_every_session() {
    use crate::admin_states::AdminMode;
    let (mut a, states_a, _) = admin_node(1);
    let (mut b, states_b, changed_b) = admin_node(2);
    // Set before any session: sent in the full exchange when it opens.
    states_a
        .lock()
        .apply_local("mysql", "c1", AdminMode::Drain, 1_000);
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    assert_eq!(states_b.lock().snapshot(), states_a.lock().snapshot());
    assert_eq!(changed_b.lock().unwrap().len(), 1);
    // A change during the session goes out with the next frames.
    states_b
        .lock()
        .apply_local("mysql", "c2", AdminMode::Halt, 2_000);
    settle(&mut a, &mut b, 10);
    assert_eq!(
        states_a.lock().get("mysql", "c2").map(|h| h.entry.mode),
        Some(AdminMode::Halt)
    );
    // Apart: both change c1; the later wall clock wins on both once they meet again.
    a.engine.close();
    b.engine.close();
    states_a
        .lock()
        .apply_local("mysql", "c1", AdminMode::Online, 5_000);
    states_b
        .lock()
        .apply_local("mysql", "c1", AdminMode::Halt, 4_000);
    connect(&mut a, &mut b, 20);
    settle(&mut a, &mut b, 20);
    for states in [&states_a, &states_b] {
        assert_eq!(
            states.lock().get("mysql", "c1").map(|h| h.entry.mode),
            Some(AdminMode::Online)
        );
    }
    assert_eq!(states_a.lock().snapshot(), states_b.lock().snapshot());
    let status = a.engine.status(20, &a.tables, &RejectCounters::default());
    assert!(status.counters.replication.admin_entries_sent >= 3);
    assert_eq!(status.counters.replication.admin_entries_applied, 1);
}

#[test]
fn a_node_without_admin_states_refuses_the_peers() {
    use crate::admin_states::AdminMode;
    let (mut a, states_a, _) = admin_node(1);
    let mut b = node(2, None);
    states_a
        .lock()
        .apply_local("mysql", "c1", AdminMode::Drain, 1_000);
    connect(&mut a, &mut b, 0);
    settle(&mut a, &mut b, 0);
    let status = b.engine.status(0, &b.tables, &RejectCounters::default());
    assert_eq!(status.counters.replication.admin_entries_refused, 1);
}

#[test]
fn admin_messages_stay_within_the_message_bound() {
    use crate::admin_states::{AdminMode, Stamp};
    let entry = |i: usize| AdminEntry {
        service: "s".repeat(200),
        server: format!("server-{i}"),
        mode: AdminMode::Drain,
        stamp: Stamp {
            wall_ms: 1,
            counter: 0,
            node: "lb1".into(),
        },
    };
    let runs = admin_runs((0..100).map(entry).collect(), 2_000);
    assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 100);
    assert!(runs.len() > 1);
    for run in &runs {
        let bytes: usize = run
            .iter()
            .map(|e| 24 + e.service.len() + e.server.len() + e.stamp.node.len())
            .sum();
        assert!(bytes <= 2_000, "{bytes}");
    }
    // One entry larger than the bound still goes out, alone.
    assert_eq!(admin_runs(vec![entry(0)], 10).len(), 1);
}
