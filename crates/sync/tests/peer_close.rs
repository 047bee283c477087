//! The session's end as the election needs it: a session closed from the peer's side (its
//! process gone) is counted on `SyncHandle::peer_closes` at once, on either side, and the node that
//! dials answers connections to its own sync address while it lives (so a probe there is refused
//! only once its daemon is gone).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tandem_sync::ConfigRole;

/// A dialing node on 127.0.0.`a` and an accepting one on 127.0.0.`b` (a < b), connected.
async fn connected_pair(a: u8, b: u8) -> (Node, SocketAddr, Node) {
    let a_local = listen_any_port(ip(a)).await.local_addr().unwrap();
    let (acceptor, b_addr) = start_accepting(ip(b), |port| NodeSpec {
        local: SocketAddr::new(ip(b), port),
        peer: a_local,
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: settings(),
    })
    .await;
    let dialer = start_dialing(NodeSpec {
        local: a_local,
        peer: b_addr,
        secret: SECRET.to_vec(),
        role: ConfigRole::Primary,
        config: None,
        active: true,
        tables: tables(),
        settings: settings(),
    })
    .await;
    wait_for("the session", Duration::from_secs(5), || {
        dialer.status().connected && acceptor.status().connected
    })
    .await;
    (dialer, a_local, acceptor)
}

async fn refused(to: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(to).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialer_counts_the_acceptor_going_away() {
    let (dialer, _, acceptor) = connected_pair(41, 42).await;
    let closes = dialer.handle.peer_closes();
    assert_eq!(*closes.borrow(), 0);
    drop(acceptor);
    wait_for(
        "the dialer to count the close",
        Duration::from_secs(2),
        || *closes.borrow() == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_counts_the_dialer_going_away_whose_port_then_refuses() {
    let (dialer, dialer_addr, acceptor) = connected_pair(43, 44).await;
    let closes = acceptor.handle.peer_closes();
    // While the dialer lives its own sync address accepts (and closes) a probe; nothing is counted.
    for _ in 0..3 {
        let probe = tokio::net::TcpStream::connect(dialer_addr).await;
        assert!(probe.is_ok(), "{probe:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*closes.borrow(), 0);
    assert_eq!(*dialer.handle.peer_closes().borrow(), 0);
    drop(dialer);
    wait_for(
        "the acceptor to count the close",
        Duration::from_secs(2),
        || *closes.borrow() == 1,
    )
    .await;
    let mut gone = false;
    for _ in 0..100 {
        if refused(dialer_addr).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the dead dialer's sync address still accepts");
}
