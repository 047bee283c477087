use std::sync::{Arc, Mutex};

use super::*;
use crate::election::Timings;

/// Records every VIP call with its time; shared between the two nodes to check ordering.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<Call>>>);

/// (when, node, operation)
type Call = (Instant, String, &'static str);

impl Journal {
    fn calls(&self, node: &str, op: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, o)| n == node && *o == op)
            .map(|(t, _, _)| *t)
            .collect()
    }
}

struct FakeVips {
    node: String,
    journal: Journal,
    fail_acquire: bool,
}

impl FakeVips {
    fn record(&self, op: &'static str) {
        self.journal
            .0
            .lock()
            .unwrap()
            .push((Instant::now(), self.node.clone(), op));
    }
}

impl VipControl for FakeVips {
    async fn acquire(&mut self, drain: Option<IpAddr>) -> Result<(), String> {
        self.record("acquire");
        if drain.is_some() {
            self.record("acquire draining the peer");
        }
        if self.fail_acquire {
            Err("simulated: no such device".into())
        } else {
            Ok(())
        }
    }
    async fn release(&mut self, drain: Option<IpAddr>) -> Result<(), String> {
        self.record("release");
        if drain.is_some() {
            self.record("release draining through the peer");
        }
        Ok(())
    }
    async fn announce(&mut self) -> Result<(), String> {
        self.record("announce");
        Ok(())
    }
    async fn fall_silent(&mut self) {
        self.record("fall silent");
    }
}

const SECRET: &[u8] = b"test secret for the pair";

/// Short enough to keep tests quick, long enough that a busy 2-core test machine starving a task for a few tens of
/// milliseconds does not make a node declare its peer dead.
fn timings() -> Timings {
    Timings {
        interval_ms: 20,
        dead_ms: 150,
        warn_ms: 80,
        init_dead_ms: 500,
    }
}

async fn pair(journal: &Journal) -> (ClusterHandle, ClusterHandle) {
    let this_release = (MIN_WIRE_VERSION, WIRE_VERSION);
    pair_of_releases(journal, None, this_release, this_release).await
}

/// A pair where lb1 (wire versions `lb1`) starts at once and lb2 (`lb2`) after `lb2_after` (None: both at once).
async fn pair_of_releases(
    journal: &Journal,
    lb2_after: Option<Duration>,
    lb1: (u16, u16),
    lb2: (u16, u16),
) -> (ClusterHandle, ClusterHandle) {
    let s1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let c1 = ElectionConfig::new(
        "openstack",
        "lb1",
        Role::Primary,
        true,
        timings(),
        crate::epoch::clock_epoch(),
    );
    let c2 = ElectionConfig::new(
        "openstack",
        "lb2",
        Role::Secondary,
        true,
        timings(),
        crate::epoch::clock_epoch(),
    );
    let mut d1 = DriverConfig::new(c1, a1, Some(a2), crate::wire::test_secret(SECRET));
    d1.wire_versions = lb1;
    let mut d2 = DriverConfig::new(c2, a2, Some(a1), crate::wire::test_secret(SECRET));
    d2.wire_versions = lb2;
    let v1 = FakeVips {
        node: "lb1".into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let v2 = FakeVips {
        node: "lb2".into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let n1 = spawn_on(d1, s1, v1).unwrap();
    if let Some(after) = lb2_after {
        tokio::time::sleep(after).await;
    }
    (n1, spawn_on(d2, s2, v2).unwrap())
}

/// Over real sockets: a newer release (lb2 reads 1..=2) joins an active older one (1..=1) and answers in version 1;
/// a release the older node cannot read at all (2..=2) is shown as an incompatible peer on both sides, counted,
/// and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_of_different_wire_versions_in_one_pair() {
    let journal = Journal::default();
    let (mut n1, mut n2) =
        pair_of_releases(&journal, Some(Duration::from_millis(600)), (1, 1), (1, 2)).await;
    let s2 = wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Standby && s.wire.peer_version == Some(1)
    })
    .await;
    assert_eq!((s2.wire.min, s2.wire.max, s2.wire.speaking), (1, 2, 1));
    assert!(s2.wire.incompatible_peer.is_none());
    let s1 = wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.peer.as_ref().is_some_and(|p| p.alive) && s.wire.peer_version == Some(1)
    })
    .await;
    assert_eq!(s1.state, NodeState::Active);
    assert_eq!(s1.takeovers, 1);
    assert_eq!(journal.calls("lb2", "acquire").len(), 0);
    n1.crash().await;
    n2.crash().await;

    let journal = Journal::default();
    let (mut n1, mut n2) =
        pair_of_releases(&journal, Some(Duration::from_millis(600)), (1, 1), (2, 2)).await;
    let s2 = wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.wire.incompatible_peer.is_some()
    })
    .await;
    assert_eq!(
        s2.wire.incompatible_peer.as_ref().map(|p| p.version),
        Some(1)
    );
    assert_eq!(s2.wire.speaking, 2);
    let s1 = wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.wire.incompatible_peer.is_some() && s.heartbeats.incompatible >= 5
    })
    .await;
    assert_eq!(
        s1.wire
            .incompatible_peer
            .as_ref()
            .map(|p| (p.name.as_str(), p.version)),
        Some(("lb2", 2))
    );
    // Well past dead_ms and init_dead_ms: still one active node, the same one; the standby never acquired.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s1 = n1.status.borrow().clone();
    let s2 = n2.status.borrow().clone();
    assert_eq!(s1.state, NodeState::Active);
    assert_eq!(s2.state, NodeState::Standby);
    assert!(s1.wire.incompatible_peer.is_some() && s2.wire.incompatible_peer.is_some());
    assert_eq!(journal.calls("lb2", "acquire").len(), 0);
    assert_eq!(journal.calls("lb1", "release").len(), 0);
    assert_eq!(
        s1.heartbeats.rejected.total(),
        0,
        "{:?}",
        s1.heartbeats.rejected
    );
    // Takeover on the older-version side of the peer is refused with the reason.
    n2.commands.send(Command::Takeover).await.unwrap();
    let s2 = wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.last_event
            .as_deref()
            .is_some_and(|e| e.contains("takeover refused"))
    })
    .await;
    assert!(s2.last_event.unwrap().contains("wire version 1"));
    n1.crash().await;
    n2.crash().await;
}

async fn wait_for(
    rx: &mut watch::Receiver<ClusterStatus>,
    within: Duration,
    f: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let result = tokio::time::timeout(within, rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match result {
        Ok(Ok(status)) => status,
        _ => panic!(
            "condition not reached within {within:?}: {:#?}",
            *rx.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_elects_the_primary_and_reports_the_peer() {
    let journal = Journal::default();
    let (mut n1, mut n2) = pair(&journal).await;
    let s1 = wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    let s2 = wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Standby
            && s.peer
                .as_ref()
                .is_some_and(|p| p.state == NodeState::Active)
    })
    .await;
    assert!(s1.holds_vips && !s2.holds_vips);
    assert_eq!(s2.peer.as_ref().unwrap().name, "lb1");
    assert!(s2.peer_last_heard_age().unwrap() < Duration::from_millis(50));
    let s1 = wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.heartbeats.received > 5
    })
    .await;
    assert!(s1.heartbeats.sent > 5);
    assert_eq!(s1.heartbeats.rejected.total(), 0);
    assert_eq!(journal.calls("lb2", "acquire").len(), 0);
    n1.abort();
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_the_active_is_taken_over_within_dead_time() {
    let journal = Journal::default();
    let (mut n1, mut n2) = pair(&journal).await;
    wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(2), |s| s.peer.is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let crashed = Instant::now();
    n1.abort();
    wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    let took = journal.calls("lb2", "acquire")[0] - crashed;
    assert!(
        journal.calls("lb2", "acquire draining the peer").is_empty(),
        "a crashed peer has nothing to drain"
    );
    let t = timings();
    eprintln!(
        "crash takeover: {took:?} (dead_ms {} interval_ms {})",
        t.dead_ms, t.interval_ms
    );
    assert!(
        // Not before dead_ms after the last heartbeat (sent up to an interval, plus scheduling delay, before).
        took >= Duration::from_millis(t.dead_ms - t.interval_ms - 10),
        "too early: {took:?}"
    );
    // dead_ms + one interval, plus scheduling slack on a loaded 2-core test machine.
    assert!(
        took <= Duration::from_millis(t.dead_ms + t.interval_ms + 20),
        "too late: {took:?}"
    );
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_hands_over_in_under_50_ms_make_before_break() {
    let journal = Journal::default();
    let (mut n1, mut n2) = pair(&journal).await;
    wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(2), |s| s.peer.is_some()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stop = Instant::now();
    n1.shutdown().await.unwrap();
    let stopped_in = stop.elapsed();
    wait_for(&mut n2.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Active
    })
    .await;
    let released = journal.calls("lb1", "release")[0];
    let acquired = journal.calls("lb2", "acquire")[0];
    eprintln!(
        "clean stop: release after {:?}, peer acquire after {:?}",
        released - stop,
        acquired - stop
    );
    assert!(
        acquired <= released,
        "make-before-break: the peer added the VIPs before the stopping node dropped its own"
    );
    assert!(
        released - acquired < Duration::from_millis(50),
        "overlap {:?}",
        released - acquired
    );
    assert!(
        acquired - stop < Duration::from_millis(50),
        "handover took {:?}",
        acquired - stop
    );
    assert!(
        stopped_in < Duration::from_millis(500),
        "the driver lingers only until the peer took over"
    );
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_takeover_commands_move_the_role() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tandem_cluster=info")
        .try_init();
    let journal = Journal::default();
    let (mut n1, mut n2) = pair(&journal).await;
    wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(2), |s| s.peer.is_some()).await;
    let t = Instant::now();
    n1.commands.send(Command::Release).await.unwrap();
    wait_for(&mut n2.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Standby
    })
    .await;
    // Make-before-break: lb2 added the VIPs before lb1 removed its own.
    let acquired = journal.calls("lb2", "acquire")[0];
    assert!(acquired <= journal.calls("lb1", "release")[0]);
    assert!(acquired - t < Duration::from_millis(50));
    // The giver stopped announcing when it offered them, before the taker added them.
    let silent = journal.calls("lb1", "fall silent");
    assert_eq!(silent.len(), 1);
    assert!(silent[0] <= acquired);
    // Both sides of a planned handover drain: the taker forwards, the giver keeps serving what it had.
    assert_eq!(journal.calls("lb2", "acquire draining the peer").len(), 1);
    assert_eq!(
        journal
            .calls("lb1", "release draining through the peer")
            .len(),
        1
    );
    let t = Instant::now();
    n1.commands.send(Command::Takeover).await.unwrap();
    wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Active && s.takeovers == 2
    })
    .await;
    let s2 = wait_for(&mut n2.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Standby
    })
    .await;
    let reacquired = journal.calls("lb1", "acquire")[1];
    assert!(reacquired <= journal.calls("lb2", "release")[0]);
    assert!(reacquired - t < Duration::from_millis(50));
    assert!(s2.releases >= 1, "{s2:#?}");
    assert_eq!(s2.releases, 1, "{s2:#?}");
    n1.abort();
    n2.abort();
}

/// A man in the middle: lb1 and lb2 each have one of its sockets as their peer address, and it forwards what each
/// sends to the other. A test injects datagrams through `to_lb1`, so they come from lb1's peer address (the kernel
/// drops anything else at lb1's connected socket), and replays what lb2 sent (`captured`).
struct Relay {
    /// lb1's peer address: what arrives here from lb1 goes to lb2.
    to_lb1: Arc<UdpSocket>,
    lb1: SocketAddr,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(lb1: SocketAddr) -> (Self, SocketAddr, SocketAddr) {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let captured = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (a, b, captured) = (a.clone(), b.clone(), captured.clone());
            async move {
                let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
                // lb2 may restart on another port: answer wherever it last spoke from.
                let mut lb2: Option<SocketAddr> = None;
                loop {
                    tokio::select! {
                        Ok((n, from)) = a.recv_from(&mut buf_a) => {
                            if from == lb1 && let Some(to) = lb2 {
                                let _ = b.send_to(&buf_a[..n], to).await;
                            }
                        }
                        Ok((n, from)) = b.recv_from(&mut buf_b) => {
                            lb2 = Some(from);
                            captured.lock().unwrap().push(buf_b[..n].to_vec());
                            let _ = a.send_to(&buf_b[..n], lb1).await;
                        }
                    }
                }
            }
        });
        let relay = Self {
            to_lb1: a,
            lb1,
            captured,
            task,
        };
        (relay, a_addr, b_addr)
    }

    async fn inject(&self, datagram: &[u8]) {
        self.to_lb1.send_to(datagram, self.lb1).await.unwrap();
    }

    fn captured(&self) -> Vec<Vec<u8>> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// lb1 (primary) and lb2 (secondary) talking through a [`Relay`]; lb2's boot epoch is given.
async fn relayed_pair(
    journal: &Journal,
    lb2_epoch: u64,
) -> (ClusterHandle, ClusterHandle, Relay, SocketAddr) {
    let s1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a1 = s1.local_addr().unwrap();
    let (relay, peer_of_lb1, peer_of_lb2) = Relay::start(a1).await;
    let (c1, v1) = node("lb1", Role::Primary, a1, peer_of_lb1, journal);
    let n1 = spawn_on(c1, s1, v1).unwrap();
    let n2 = relayed_lb2(journal, lb2_epoch, peer_of_lb2).await;
    (n1, n2, relay, peer_of_lb2)
}

async fn relayed_lb2(journal: &Journal, epoch: u64, peer: SocketAddr) -> ClusterHandle {
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a2 = s2.local_addr().unwrap();
    let (mut c2, v2) = node("lb2", Role::Secondary, a2, peer, journal);
    c2.election.boot_epoch = epoch;
    c2.election.auto_failback = false;
    spawn_on(c2, s2, v2).unwrap()
}

/// A heartbeat of "lb2" that claims the VIPs, from a forger without the key.
fn forged_heartbeat(epoch: u64, seq: u64) -> Vec<u8> {
    let mut hb = Election::new(
        ElectionConfig::new("openstack", "lb2", Role::Primary, true, timings(), epoch),
        0,
    )
    .build_heartbeat(0);
    hb.seq = seq;
    hb.state = NodeState::Active;
    hb.holds_vips = true;
    HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"wrong key"))
        .encode(&hb)
        .unwrap()
}

async fn settled(n1: &mut ClusterHandle, n2: &mut ClusterHandle) {
    wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Standby && s.peer.as_ref().is_some_and(|p| p.alive)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_garbage_datagrams_are_counted_and_ignored() {
    let journal = Journal::default();
    let (mut n1, mut n2, relay, _) = relayed_pair(&journal, crate::epoch::clock_epoch()).await;
    settled(&mut n1, &mut n2).await;
    // From the peer's own address: a forger with the wrong key claiming to be lb2 holding the VIPs, and garbage.
    relay.inject(&forged_heartbeat(u64::MAX, 1)).await;
    relay.inject(b"hello").await;
    relay.inject(&[0u8; 1000]).await;
    let s1 = wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.heartbeats.rejected.get(Reject::BadMac) == 1
            && s.heartbeats.rejected.get(Reject::Truncated) == 1
            && s.heartbeats.rejected.get(Reject::Oversize) == 1
    })
    .await;
    assert_eq!(
        s1.state,
        NodeState::Active,
        "a forged split brain moves nothing"
    );
    // From any other address the kernel drops them before the driver sees them (connected socket).
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(b"hello", n1.local_addr).await.unwrap();
    stranger
        .send_to(&forged_heartbeat(u64::MAX, 2), n1.local_addr)
        .await
        .unwrap();
    // Had the forged heartbeat (boot epoch u64::MAX) been accepted, every genuine one would now be "stale".
    tokio::time::sleep(Duration::from_millis(250)).await;
    let s1 = n1.status.borrow().clone();
    assert_eq!(s1.heartbeats.rejected.get(Reject::Stale), 0);
    assert_eq!(s1.heartbeats.rejected.total(), 3, "{s1:#?}");
    assert!(
        s1.peer
            .as_ref()
            .is_some_and(|p| p.alive && p.role == Role::Secondary)
    );
    n1.abort();
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_junk_forgeries_and_replays_is_counted_without_republishing_the_status() {
    let journal = Journal::default();
    let (mut n1, mut n2, relay, _) = relayed_pair(&journal, crate::epoch::clock_epoch()).await;
    settled(&mut n1, &mut n2).await;
    // Count every status publish from here on.
    let publishes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = tokio::spawn({
        let mut rx = n1.status.clone();
        let publishes = publishes.clone();
        async move {
            let _ = rx.borrow_and_update();
            while rx.changed().await.is_ok() {
                publishes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = n1.status.borrow().clone();
    let genuine = relay.captured();
    assert!(genuine.len() > 3, "lb2's heartbeats were relayed");
    // Rounds of 100 datagrams (small enough for the socket buffer), each round waited for: 20 junk of random
    // lengths, 20 forged heartbeats, 20 from another cluster, 20 replays of lb2's genuine heartbeats, 20 truncated.
    let mut other = Election::new(
        ElectionConfig::new("ceph", "lb2", Role::Primary, true, timings(), 1),
        0,
    )
    .build_heartbeat(0);
    other.cluster = "ceph".into();
    let foreign = HeartbeatCodec::new("ceph", &crate::wire::test_secret(b"ceph key"))
        .encode(&other)
        .unwrap();
    let rounds = 20u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let started = Instant::now();
    for round in 0..rounds {
        for i in 0..20u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 40 + (seed % 400) as usize;
            let junk: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
            relay.inject(&junk).await;
            relay.inject(&forged_heartbeat(7, round * 20 + i + 1)).await;
            relay.inject(&foreign).await;
            relay.inject(&genuine[(i as usize) % 3]).await;
            relay.inject(&genuine[0][..20]).await;
        }
        let want = (round + 1) * 100;
        wait_for(&mut n1.status, Duration::from_secs(2), |s| {
            s.heartbeats.rejected.total() - before.heartbeats.rejected.total() >= want
        })
        .await;
    }
    let flood = started.elapsed();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s1 = n1.status.borrow().clone();
    let got = |r| s1.heartbeats.rejected.get(r) - before.heartbeats.rejected.get(r);
    assert_eq!(got(Reject::BadMac), rounds * 20);
    assert_eq!(got(Reject::ForeignCluster), rounds * 20);
    assert_eq!(got(Reject::Replay), rounds * 20);
    assert_eq!(got(Reject::Truncated), rounds * 20);
    // Random junk: no TNDH magic (truncated below 38 bytes never happens at 40+).
    assert_eq!(got(Reject::Malformed), rounds * 20);
    assert_eq!(
        s1.heartbeats.rejected.total() - before.heartbeats.rejected.total(),
        rounds * 100
    );
    // The peer's real heartbeats went on being accepted during the burst.
    let received = s1.heartbeats.received - before.heartbeats.received;
    let expected = flood.as_millis() as u64 / timings().interval_ms;
    assert!(
        received * 2 >= expected,
        "{received} heartbeats accepted in {flood:?}"
    );
    assert_eq!(s1.state, NodeState::Active);
    assert!(
        s1.peer
            .as_ref()
            .is_some_and(|p| p.alive && p.state == NodeState::Standby)
    );
    assert_eq!(n2.status.borrow().state, NodeState::Standby);
    // Publishes follow the heartbeats and the rejection cadence, not the 2000 datagrams.
    let published = publishes.load(std::sync::atomic::Ordering::Relaxed);
    let sent = s1.heartbeats.sent - before.heartbeats.sent;
    let cap = received + sent + flood.as_millis() as u64 / REJECT_PUBLISH_MS + 40;
    eprintln!(
        "{} datagrams, {received} heartbeats accepted, {published} status publishes in {flood:?}",
        rounds * 100
    );
    assert!(published <= cap, "{published} publishes (cap {cap})");
    counter.abort();
    n1.abort();
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_with_a_lower_epoch_is_let_back_in_and_old_replays_are_not() {
    let journal = Journal::default();
    let old_epoch = crate::epoch::clock_epoch();
    let (mut n1, mut n2, relay, peer_of_lb2) = relayed_pair(&journal, old_epoch).await;
    settled(&mut n1, &mut n2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old_heartbeats = relay.captured();
    assert!(
        old_heartbeats.len() >= 5,
        "{} captured",
        old_heartbeats.len()
    );
    // lb2 crashes and comes back having lost its state file with the clock an hour behind.
    n2.crash().await;
    let mut n2 = relayed_lb2(&journal, old_epoch - 3_600_000_000, peer_of_lb2).await;
    // Refused as stale at first; let back in once the old epoch has been silent for dead_ms (150 ms). Without the
    // recovery, lb1 would hear nobody from here on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let back = wait_for(&mut n1.status, Duration::from_secs(2), |s| {
        s.heartbeats.rejected.get(Reject::Stale) > 0 && s.peer.as_ref().is_some_and(|p| p.alive)
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Standby && s.peer.as_ref().is_some_and(|p| p.alive)
    })
    .await;
    assert_eq!(back.state, NodeState::Active, "lb1 never moved");
    // Replays of the old incarnation (a higher epoch than the current one) stay out.
    let stale_before = n1.status.borrow().heartbeats.rejected.get(Reject::Stale);
    for datagram in old_heartbeats.iter().rev().take(5) {
        relay.inject(datagram).await;
    }
    let s1 = wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.heartbeats.rejected.get(Reject::Stale) >= stale_before + 5
    })
    .await;
    assert!(
        s1.peer
            .as_ref()
            .is_some_and(|p| p.alive && p.state == NodeState::Standby)
    );
    assert_eq!(s1.takeovers, 1);
    assert!(journal.calls("lb2", "acquire").is_empty());
    n1.abort();
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_node_is_active_and_failing_vips_show_as_fault() {
    let journal = Journal::default();
    let cfg = ElectionConfig::new("openstack", "solo", Role::Primary, false, timings(), 1);
    let driver_cfg = DriverConfig::new(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        None,
        crate::wire::test_secret(SECRET),
    );
    let vips = FakeVips {
        node: "solo".into(),
        journal: journal.clone(),
        fail_acquire: true,
    };
    let mut n = spawn(driver_cfg, vips).await.unwrap();
    let s = wait_for(&mut n.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Fault
    })
    .await;
    assert_eq!(
        s.fault.as_deref(),
        Some("acquire failed: simulated: no such device")
    );
    assert_eq!(s.vip_failures, 1);
    n.shutdown().await.unwrap();

    let cfg = ElectionConfig::new("openstack", "solo", Role::Primary, false, timings(), 2);
    let mut driver_cfg = DriverConfig::new(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        None,
        crate::wire::test_secret(SECRET),
    );
    driver_cfg.ping_nodes = vec!["127.0.0.1".parse().unwrap()];
    driver_cfg.election.ping_nodes_configured = true;
    let vips = FakeVips {
        node: "solo2".into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let mut n = spawn(driver_cfg, vips).await.unwrap();
    let s = wait_for(&mut n.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Active
    })
    .await;
    assert!(s.holds_vips);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n.status.borrow().ping,
        PingState::Reachable,
        "loopback answers ping"
    );
    let mut status = n.status.clone();
    n.shutdown().await.unwrap();
    assert_eq!(
        journal.calls("solo2", "release").len(),
        1,
        "a clean stop drops the VIPs"
    );
    let last = status.borrow_and_update().clone();
    assert!(last.driver_finished && last.state == NodeState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_works_over_ipv6_loopback() {
    let (Ok(s1), Ok(s2)) = (
        UdpSocket::bind("[::1]:0").await,
        UdpSocket::bind("[::1]:0").await,
    ) else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let journal = Journal::default();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let c1 = ElectionConfig::new("openstack", "lb1", Role::Secondary, true, timings(), 5);
    let c2 = ElectionConfig::new("openstack", "lb2", Role::Secondary, true, timings(), 6);
    let v1 = FakeVips {
        node: "lb1".into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let v2 = FakeVips {
        node: "lb2".into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let mut n1 = spawn_on(
        DriverConfig::new(c1, a1, Some(a2), crate::wire::test_secret(SECRET)),
        s1,
        v1,
    )
    .unwrap();
    let mut n2 = spawn_on(
        DriverConfig::new(c2, a2, Some(a1), crate::wire::test_secret(SECRET)),
        s2,
        v2,
    )
    .unwrap();
    // Equal roles: the lower name wins.
    settled(&mut n1, &mut n2).await;
    n1.abort();
    n2.abort();
}

fn node(
    name: &str,
    role: Role,
    me: SocketAddr,
    peer: SocketAddr,
    journal: &Journal,
) -> (DriverConfig, FakeVips) {
    let mut cfg = ElectionConfig::new(
        "openstack",
        name,
        role,
        true,
        timings(),
        crate::epoch::clock_epoch(),
    );
    cfg.auto_failback = true;
    let vips = FakeVips {
        node: name.into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    (
        DriverConfig::new(cfg, me, Some(peer), crate::wire::test_secret(SECRET)),
        vips,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_standby_never_moves_the_active_and_failback_waits_for_caught_up() {
    let journal = Journal::default();
    let s1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    // lb2 (secondary) starts alone and becomes active after init_dead_ms.
    let (c2, v2) = node("lb2", Role::Secondary, a2, a1, &journal);
    let mut n2 = spawn_on(c2, s2, v2).unwrap();
    wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    drop(s1);
    // The primary restarts ten times, crashing or stopping cleanly, never caught up: lb2 never moves.
    for round in 0..10 {
        let s1 = UdpSocket::bind(a1).await.unwrap();
        let (c1, v1) = node("lb1", Role::Primary, a1, a2, &journal);
        let mut n1 = spawn_on(c1, s1, v1).unwrap();
        wait_for(&mut n1.status, Duration::from_secs(1), |s| {
            s.state == NodeState::Standby
                && s.peer
                    .as_ref()
                    .is_some_and(|p| p.state == NodeState::Active)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20 + round * 5)).await;
        if round % 2 == 0 {
            n1.crash().await;
        } else {
            n1.shutdown().await.unwrap();
        }
    }
    let s2_status = n2.status.borrow().clone();
    assert_eq!(s2_status.state, NodeState::Active);
    assert_eq!(s2_status.takeovers, 1, "lb2 never left active");
    assert!(journal.calls("lb1", "acquire").is_empty());
    // Now the primary returns and reports caught up: auto-failback hands the role back cleanly.
    let s1 = UdpSocket::bind(a1).await.unwrap();
    let (c1, v1) = node("lb1", Role::Primary, a1, a2, &journal);
    let mut n1 = spawn_on(c1, s1, v1).unwrap();
    wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Standby && s.peer.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        n1.status.borrow().state,
        NodeState::Standby,
        "no failback before caught up"
    );
    let t = Instant::now();
    n1.commands.send(Command::CaughtUp(true)).await.unwrap();
    wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Active
    })
    .await;
    wait_for(&mut n2.status, Duration::from_secs(1), |s| {
        s.state == NodeState::Standby
    })
    .await;
    let acquired = journal.calls("lb1", "acquire")[0];
    assert!(
        acquired <= journal.calls("lb2", "release")[0],
        "make-before-break: the primary added the VIPs before lb2 released them"
    );
    eprintln!("failback after caught-up: {:?}", acquired - t);
    assert!(acquired - t < Duration::from_millis(50));
    n1.abort();
    n2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_timings_command_changes_the_cadence_without_moving_the_role() {
    let journal = Journal::default();
    let (mut n1, mut n2) = pair(&journal).await;
    settled(&mut n1, &mut n2).await;
    // Twice as slow: 40 ms heartbeats, 300 ms dead time.
    let slower = Timings {
        interval_ms: 40,
        dead_ms: 300,
        warn_ms: 160,
        init_dead_ms: 600,
    };
    for node in [&n2, &n1] {
        node.commands
            .send(Command::SetTimings {
                timings: slower,
                auto_failback: false,
            })
            .await
            .unwrap();
    }
    let s1 = wait_for(&mut n1.status, Duration::from_secs(1), |s| {
        s.last_event
            .as_deref()
            .is_some_and(|e| e.starts_with("heartbeat timings: interval 40 ms"))
    })
    .await;
    let sent_before = s1.heartbeats.sent;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s1 = n1.status.borrow().clone();
    let s2 = n2.status.borrow().clone();
    let sent = s1.heartbeats.sent - sent_before;
    // About 10 heartbeats in 400 ms at the new interval (20 at the old one); wide bounds for a busy machine.
    assert!((5..=15).contains(&sent), "{sent} heartbeats in 400 ms");
    assert_eq!(s1.state, NodeState::Active);
    assert_eq!(s2.state, NodeState::Standby);
    assert_eq!(s1.takeovers, 1);
    assert_eq!(journal.calls("lb2", "acquire").len(), 0);
    assert_eq!(journal.calls("lb1", "release").len(), 0);
    n1.abort();
    n2.abort();
}

/// The peer's "port unreachable" raises only the socket's error readiness: it must wake the driver and be read at
/// once (not at the next send, an interval later).
#[tokio::test(flavor = "current_thread")]
async fn port_unreachable_wakes_the_socket_and_is_read_as_refused() {
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(target).await.unwrap();
    let hb = super::socket::HbSocket::Registered(socket);
    hb.send(b"x", target, true).await.unwrap();
    tokio::time::timeout(Duration::from_millis(500), hb.readable())
        .await
        .expect("woken by the error")
        .unwrap();
    let mut batch = super::batch::RecvBatch::new();
    let first = hb.recv(&mut batch).map(|_| ());
    assert_eq!(
        first.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    let then = hb.recv(&mut batch).map(|_| ());
    assert_eq!(
        then.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
    // Read and cleared: no further wake-up.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), hb.readable())
            .await
            .is_err()
    );
}

/// A killed daemon on a live host (its socket closed, its sync port refusing): the standby takes over after the
/// ICMP and the probe, well before dead_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_is_taken_over_before_dead_time() {
    let journal = Journal::default();
    let s1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let t = Timings {
        interval_ms: 20,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 500,
    };
    let epoch = crate::epoch::clock_epoch();
    let c1 = ElectionConfig::new("openstack", "lb1", Role::Primary, true, t, epoch);
    let c2 = ElectionConfig::new("openstack", "lb2", Role::Secondary, true, t, epoch);
    let d1 = DriverConfig::new(c1, a1, Some(a2), crate::wire::test_secret(SECRET));
    let mut d2 = DriverConfig::new(c2, a2, Some(a1), crate::wire::test_secret(SECRET));
    // lb1's "sync port": a port nothing listens on once lb1 is gone.
    let sync = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    d2.probe_port = Some(sync.local_addr().unwrap().port());
    let vips = |node: &str| FakeVips {
        node: node.into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let mut n1 = spawn_on(d1, s1, vips("lb1")).unwrap();
    let mut n2 = spawn_on(d2, s2, vips("lb2")).unwrap();
    settled(&mut n1, &mut n2).await;
    // While lb1 lives its sync port accepts: a report alone moves nothing (probed as accepted).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let crashed = Instant::now();
    n1.abort();
    drop(sync);
    wait_for(&mut n2.status, Duration::from_secs(2), |s| {
        s.state == NodeState::Active
    })
    .await;
    let took = journal.calls("lb2", "acquire")[0] - crashed;
    eprintln!("killed daemon takeover: {took:?} (interval 20 ms, dead 1000 ms)");
    assert!(took < Duration::from_millis(300), "took {took:?}");
    assert!(
        n2.status
            .borrow()
            .last_event
            .as_deref()
            .is_some_and(|e| e.contains("VIPs added") || e.contains("daemon gone")),
        "{:?}",
        n2.status.borrow().last_event
    );
    n2.abort();
}

/// The sync session's end, reported by the daemon (`Command::PeerSessionLost`): from a live lb1 it moves nothing (its
/// sync port accepts the probe); from a killed one the standby takes over within milliseconds, without waiting for
/// its next heartbeat (one a second here) to meet the ICMP: the report sends one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_from_a_killed_daemon_is_taken_over_at_once_and_from_a_live_one_never() {
    let journal = Journal::default();
    let s1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let t = Timings {
        interval_ms: 1000,
        dead_ms: 5000,
        warn_ms: 3000,
        init_dead_ms: 500,
    };
    let epoch = crate::epoch::clock_epoch();
    let c1 = ElectionConfig::new("openstack", "lb1", Role::Primary, true, t, epoch);
    let c2 = ElectionConfig::new("openstack", "lb2", Role::Secondary, true, t, epoch);
    let d1 = DriverConfig::new(c1, a1, Some(a2), crate::wire::test_secret(SECRET));
    let mut d2 = DriverConfig::new(c2, a2, Some(a1), crate::wire::test_secret(SECRET));
    let sync = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    d2.probe_port = Some(sync.local_addr().unwrap().port());
    let vips = |node: &str| FakeVips {
        node: node.into(),
        journal: journal.clone(),
        fail_acquire: false,
    };
    let mut n1 = spawn_on(d1, s1, vips("lb1")).unwrap();
    let mut n2 = spawn_on(d2, s2, vips("lb2")).unwrap();
    settled(&mut n1, &mut n2).await;
    for _ in 0..3 {
        n2.commands.send(Command::PeerSessionLost).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(n2.status.borrow().state, NodeState::Standby);
    assert!(journal.calls("lb2", "acquire").is_empty());
    let crashed = Instant::now();
    n1.crash().await;
    drop(sync);
    n2.commands.send(Command::PeerSessionLost).await.unwrap();
    wait_for(&mut n2.status, Duration::from_secs(3), |s| {
        s.state == NodeState::Active
    })
    .await;
    let took = journal.calls("lb2", "acquire")[0] - crashed;
    eprintln!("session lost takeover: {took:?} (interval 1000 ms, dead 5000 ms)");
    assert!(took < Duration::from_millis(150), "took {took:?}");
    n2.abort();
}

#[test]
fn missed_heartbeats_are_the_intervals_of_a_gap() {
    assert_eq!(missed_in_gap(200, 200), 0);
    assert_eq!(
        missed_in_gap(300, 200),
        0,
        "half an interval late is on time"
    );
    assert_eq!(missed_in_gap(301, 200), 1);
    assert_eq!(missed_in_gap(400, 200), 1);
    assert_eq!(missed_in_gap(1_000, 200), 4);
    assert_eq!(missed_in_gap(60_000, 200), 299);
    assert_eq!(missed_in_gap(5, 0), 4, "a zero interval counts as 1 ms");
}
