//! Hostile or broken peers against a real acceptor on 127.0.0.0/8: garbage, wrong secret, a
//! replayed recorded session, an oversize frame, a peer that stops reading. Each is rejected
//! (and counted) or bounded; the acceptor keeps working for the real peer.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use ring::rand::SystemRandom;
use tandem_sync::handshake::{DialerHandshake, SessionKeys};
use tandem_sync::replication::ReplMsg;
use tandem_sync::session::Message;
use tandem_sync::{ConfigRole, RejectReason, SyncStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

/// Opens a session with the acceptor at `target` by hand (from 127.0.0.2, an unprivileged port),
/// with the right secret: the test then sends what it likes.
async fn open_by_hand(target: SocketAddr) -> (Reader, Writer, SessionKeys) {
    let s = raw_connect(ip(2), target).await;
    let (r, w) = s.into_split();
    let mut reader = FramedRead::new(r, tandem_sync::wire::length_codec(1 << 20));
    let mut writer = FramedWrite::new(w, tandem_sync::wire::length_codec(1 << 20));
    let (hs, hello) = DialerHandshake::start(&identity(SECRET), &SystemRandom::new()).unwrap();
    writer.send(Bytes::from(hello)).await.unwrap();
    let challenge = reader.next().await.unwrap().unwrap();
    let (proof, hs) = hs.on_challenge(&challenge).unwrap();
    writer.send(Bytes::from(proof)).await.unwrap();
    let confirm = reader.next().await.unwrap().unwrap();
    let keys = hs.on_confirm(&confirm).unwrap();
    (reader, writer, keys)
}

/// An accepting node B on 127.0.0.3 (at a port free there) whose peer is 127.0.0.2; returns it
/// with its listening address.
async fn acceptor(entries: u32) -> (Node, SocketAddr) {
    acceptor_on(ip(3), ip(2), entries).await
}

/// An accepting node on `own` (above `peer`, so it accepts) whose peer is `peer`.
async fn acceptor_on(
    own: std::net::IpAddr,
    peer: std::net::IpAddr,
    entries: u32,
) -> (Node, SocketAddr) {
    let t = tables();
    {
        let mut g = t.lock().unwrap();
        let nova = g.get_mut("nova_novncproxy").unwrap();
        for i in 0..entries {
            nova.set(&client(i), SERVERS[(i % 3) as usize], 0);
        }
    }
    start_accepting(own, |port| NodeSpec {
        local: SocketAddr::new(own, port),
        peer: SocketAddr::new(peer, port),
        secret: SECRET.to_vec(),
        role: ConfigRole::Primary,
        config: Some(config(1, "# c")),
        active: true,
        tables: t.clone(),
        settings: settings(),
    })
    .await
}

fn rejected(s: &SyncStatus, reason: RejectReason) -> u64 {
    s.counters
        .rejected
        .get(reason.as_str())
        .copied()
        .unwrap_or(0)
}

/// A real dialer on 127.0.0.2 with `secret`, for the acceptor at `target` (it dials from port 0;
/// its configured port, the acceptor's as in `node.toml`, is never bound).
async fn dialer(target: SocketAddr, secret: &[u8]) -> Node {
    start_dialing(NodeSpec {
        local: SocketAddr::new(ip(2), target.port()),
        peer: target,
        secret: secret.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: settings(),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversize_wrong_secret_and_wrong_source_are_rejected() {
    let (b, target) = acceptor(100).await;

    // Garbage bytes as a frame.
    let mut s = raw_connect(ip(2), target).await;
    s.write_all(&[0, 0, 0, 12]).await.unwrap();
    s.write_all(b"GET / HTTP/1").await.unwrap();
    wait_for("garbage counted", Duration::from_secs(5), || {
        rejected(&b.status(), RejectReason::Garbage) >= 1
    })
    .await;

    // An HTTP request: its first 4 bytes read as a ~1.2 GB length.
    let mut s = raw_connect(ip(2), target).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_for("oversize counted", Duration::from_secs(5), || {
        rejected(&b.status(), RejectReason::FrameTooLarge) >= 1
    })
    .await;

    // A frame just over the limit.
    let mut s = raw_connect(ip(2), target).await;
    let len = (settings().max_frame as u32) + 1;
    s.write_all(&len.to_be_bytes()).await.unwrap();
    let _ = s.write_all(&vec![0u8; 4096]).await;
    wait_for("oversize counted twice", Duration::from_secs(5), || {
        rejected(&b.status(), RejectReason::FrameTooLarge) >= 2
    })
    .await;

    // Random bytes of every length from a connection that then closes.
    for n in [1usize, 3, 5, 40, 300] {
        let mut s = raw_connect(ip(2), target).await;
        let junk: Vec<u8> = (0..n).map(|i| (i * 97 + 13) as u8).collect();
        let _ = s.write_all(&junk).await;
    }

    // A connection from an address other than the peer's.
    let _s = raw_connect(ip(9), target).await;
    wait_for("unexpected source counted", Duration::from_secs(5), || {
        rejected(&b.status(), RejectReason::UnexpectedSource) >= 1
    })
    .await;

    // The wrong secret: both sides refuse the proof.
    let wrong = dialer(target, b"this is not the cluster secret!!").await;
    wait_for("bad proof on the dialer", Duration::from_secs(5), || {
        rejected(&wrong.status(), RejectReason::BadProof) >= 1
    })
    .await;
    assert!(!wrong.status().connected && !b.status().connected);
    drop(wrong);

    // After all that, the real peer still gets a session and the tables.
    let good = dialer(target, SECRET).await;
    wait_for("real peer synced", Duration::from_secs(10), || {
        good.status().connected
            && good
                .status()
                .tables
                .iter()
                .any(|t| t.label == "nova_novncproxy" && t.local_entries == 100)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_recorded_session_is_refused() {
    let (b, target) = acceptor(50).await;
    // Record a genuine session through a relay on 127.0.0.2 (B's expected peer address).
    let relay_listener = listen_any_port(ip(2)).await;
    let relay_addr = relay_listener.local_addr().unwrap();
    let relay = Relay::start(relay_listener, target);
    let a = start_dialing(NodeSpec {
        local: SocketAddr::new(ip(1), target.port()),
        peer: relay_addr,
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: settings(),
    })
    .await;
    wait_for("recorded session synced", Duration::from_secs(10), || {
        a.status().tables.iter().any(|t| t.local_entries == 50)
    })
    .await;
    drop(a);
    let recorded = relay.to_acceptor.lock().unwrap().clone();
    drop(relay);
    assert!(recorded.len() > 100);
    let proofs_before = rejected(&b.status(), RejectReason::BadProof);

    // Replay every byte the dialer sent to a fresh session on the acceptor.
    let mut s = raw_connect(ip(2), target).await;
    let _ = s.write_all(&recorded).await;
    let mut buf = vec![0u8; 64 * 1024];
    // The acceptor answers the replayed hello with a fresh challenge, then closes on the proof.
    let mut got = 0;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(
        got < 1024,
        "no table data was sent to the replayer ({got} bytes)"
    );
    wait_for("replay refused", Duration::from_secs(5), || {
        rejected(&b.status(), RejectReason::BadProof) > proofs_before
    })
    .await;
    assert!(!b.status().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_stops_reading_is_dropped_with_bounded_memory() {
    // 300k entries: far more than the socket buffers, so the acceptor's writes block.
    let (b, target) = acceptor(300_000).await;
    // A peer with the secret that opens the session and then never reads nor writes.
    let (reader, _writer, _keys) = open_by_hand(target).await;
    wait_for("session open", Duration::from_secs(5), || {
        b.status().connected
    })
    .await;
    // Now stop reading. The acceptor fills the socket, stops reading its tables, and closes the
    // session after the silence/stall timeout (1.5 s here) instead of queueing 300k entries.
    wait_for("stalled session closed", Duration::from_secs(10), || {
        let s = b.status();
        !s.connected
            && (rejected(&s, RejectReason::PeerTimeout) + rejected(&s, RejectReason::PeerStalled))
                >= 1
    })
    .await;
    let s = b.status();
    let sent = s.counters.bytes_sent;
    // Snapshot of 300k entries is ~12 MB; only what fit in the socket buffers went out.
    assert!(
        sent < 8 * 1024 * 1024,
        "sent {sent} bytes to a peer that reads nothing"
    );
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_reordered_and_truncated_frames_close_the_session_and_are_counted() {
    let (b, target) = acceptor(10).await;
    let keepalive = || {
        Message::Repl(ReplMsg::Sizes {
            tables: vec![("nova_novncproxy".to_string(), 0)],
        })
    };
    let bad_macs = |b: &Node| rejected(&b.status(), RejectReason::BadMac);

    // Forged: random bytes of a plausible length in place of a sealed frame.
    let (_r, mut w, _keys) = open_by_hand(target).await;
    wait_for("session open", Duration::from_secs(5), || {
        b.status().connected
    })
    .await;
    w.send(Bytes::from(vec![0x5au8; 64])).await.unwrap();
    wait_for("forged frame refused", Duration::from_secs(5), || {
        bad_macs(&b) >= 1
    })
    .await;

    // Replayed: a genuine frame sent twice.
    let (_r, mut w, mut keys) = open_by_hand(target).await;
    let frame = keys.sealer.seal(&keepalive()).unwrap();
    w.send(Bytes::from(frame.clone())).await.unwrap();
    w.send(Bytes::from(frame)).await.unwrap();
    wait_for("replayed frame refused", Duration::from_secs(5), || {
        bad_macs(&b) >= 2
    })
    .await;

    // Reordered: the second frame first.
    let (_r, mut w, mut keys) = open_by_hand(target).await;
    let first = keys.sealer.seal(&keepalive()).unwrap();
    let second = keys.sealer.seal(&keepalive()).unwrap();
    w.send(Bytes::from(second)).await.unwrap();
    w.send(Bytes::from(first)).await.unwrap();
    wait_for("reordered frame refused", Duration::from_secs(5), || {
        bad_macs(&b) >= 3
    })
    .await;

    // Truncated: a genuine frame cut short, framed as a whole one.
    let (_r, mut w, mut keys) = open_by_hand(target).await;
    let frame = keys.sealer.seal(&keepalive()).unwrap();
    w.send(Bytes::from(frame[..frame.len() - 3].to_vec()))
        .await
        .unwrap();
    wait_for("truncated frame refused", Duration::from_secs(5), || {
        bad_macs(&b) >= 4
    })
    .await;

    // A flipped bit.
    let (_r, mut w, mut keys) = open_by_hand(target).await;
    let mut frame = keys.sealer.seal(&keepalive()).unwrap();
    frame[0] ^= 0x20;
    w.send(Bytes::from(frame)).await.unwrap();
    wait_for("tampered frame refused", Duration::from_secs(5), || {
        bad_macs(&b) >= 5
    })
    .await;

    // The acceptor is fine: a genuine peer gets the tables.
    let good = dialer(target, SECRET).await;
    wait_for("real peer synced", Duration::from_secs(10), || {
        good.status()
            .tables
            .iter()
            .any(|t| t.label == "nova_novncproxy" && t.local_entries == 10)
    })
    .await;
}

/// A dialer on 127.0.0.2 that dials from an ephemeral port, like an unprivileged daemon.
async fn unprivileged_dialer(target: SocketAddr) -> Node {
    let mut s = settings();
    s.limits.privileged_source_port = false;
    start_dialing(NodeSpec {
        local: SocketAddr::new(ip(2), target.port()),
        peer: target,
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: s,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_the_peer_address_do_not_keep_the_real_dialer_out() {
    let (b, target) = acceptor(10).await;
    // Four connections from the peer's address (any local user there can open them) that
    // say nothing: they would hold every handshake slot for the handshake timeout.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(raw_connect(ip(2), target).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The real dialer, even from an unprivileged port, evicts the oldest squatter at once: it
    // gets a session well before any squatter's handshake timeout (2 s here) would free a slot.
    let started = tokio::time::Instant::now();
    let good = unprivileged_dialer(target).await;
    wait_for("real peer connected", Duration::from_millis(1_500), || {
        good.status().connected
    })
    .await;
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert!(rejected(&b.status(), RejectReason::HandshakeEvicted) >= 1);
    drop(idle);
}

/// Whether this process may bind privileged ports (root or CAP_NET_BIND_SERVICE).
fn may_bind_privileged() -> bool {
    (600..700).any(|port| std::net::TcpListener::bind((ip(2), port)).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_unprivileged_ports_on_the_peer_host_cannot_starve_the_daemon() {
    if !may_bind_privileged() {
        eprintln!("skipped: binding a privileged source port is not permitted here");
        return;
    }
    // 127.0.0.12 and .13, used by no other test: the flood's spent ports harm no one else.
    let peer = ip(12);
    let (b, target) = acceptor_on(ip(13), peer, 10).await;
    // An unprivileged user on the peer host opens connections as fast as it can, each sending
    // a valid hello (no secret needed) and then nothing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let guess = identity(b"an unprivileged user's guess, 32+ bytes");
            let (_hs, hello) = DialerHandshake::start(&guess, &SystemRandom::new()).unwrap();
            let mut framed = Vec::new();
            framed.extend_from_slice(&(hello.len() as u32).to_be_bytes());
            framed.extend_from_slice(&hello);
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                if socket.bind(SocketAddr::new(peer, 0)).is_err() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let Ok(mut s) = socket.connect(target).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let _ = s.write_all(&framed).await;
                held.push_back(s);
                if held.len() > 64 {
                    held.pop_front();
                }
                opened += 1;
                tokio::task::yield_now().await;
            }
            opened
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The daemon dials from a privileged port: its handshakes have their own slots, which no
    // connection from an unprivileged port can evict (on loopback this flood rate does not
    // starve an unprivileged dialer either: the lane's guarantee is admission's unit test).
    let good = start_dialing(NodeSpec {
        local: SocketAddr::new(peer, target.port()),
        peer: target,
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: settings(),
    })
    .await;
    wait_for(
        "real peer connected despite the flood",
        Duration::from_secs(3),
        || good.status().connected,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flooder.await.unwrap();
    let evicted = rejected(&b.status(), RejectReason::HandshakeEvicted);
    eprintln!("flood: {opened} connections opened, {evicted} handshakes evicted");
    assert!(opened > 50, "the flood opened {opened} connections");
    assert!(rejected(&b.status(), RejectReason::HandshakeEvicted) >= 1);
}
