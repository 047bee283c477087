//! Two real sync drivers on 127.0.0.0/8 running different releases (a rolling upgrade): the session
//! speaks the highest common protocol version, the primary holds its config push to a newer peer
//! (by the session's offer, and by the heartbeat through `SyncHandle::hold_config_push`), and two
//! releases with no common version are refused, counted and retried.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tandem_sync::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tandem_sync::{ConfigFile, ConfigRole, FILES_PROTOCOL_VERSION, Identity, LocalConfig};

/// A node of the release speaking protocol versions `min..=max`.
struct Release {
    max: u16,
    min: u16,
}

const THIS: Release = Release {
    max: PROTOCOL_VERSION,
    min: MIN_PROTOCOL_VERSION,
};

impl Release {
    fn identity(&self) -> Identity {
        let mut id: Identity = identity(SECRET);
        id.version = self.max;
        id.min_version = self.min;
        id
    }
}

fn spec(local: SocketAddr, peer: SocketAddr, role: ConfigRole, config: LocalConfig) -> NodeSpec {
    NodeSpec {
        local,
        peer,
        secret: SECRET.to_vec(),
        role,
        config: Some(config),
        active: role == ConfigRole::Primary,
        tables: tables(),
        settings: settings(),
    }
}

/// The primary (127.0.0.1, dials) of release `a`, the secondary (127.0.0.3, accepts) of `b`.
async fn pair(
    a: &Release,
    a_config: LocalConfig,
    b: &Release,
    b_config: LocalConfig,
) -> (Node, Node) {
    let (secondary, b_addr) = start_accepting_as(ip(3), Some(b.identity()), |port| {
        let local = SocketAddr::new(ip(3), port);
        let peer = SocketAddr::new(ip(1), port);
        spec(local, peer, ConfigRole::Secondary, b_config.clone())
    })
    .await;
    let local = SocketAddr::new(ip(1), b_addr.port());
    let primary = try_start_as(
        spec(local, b_addr, ConfigRole::Primary, a_config),
        a.identity(),
    )
    .await
    .unwrap();
    (primary, secondary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_push_to_a_peer_of_a_newer_release() {
    let next = Release {
        max: PROTOCOL_VERSION + 1,
        min: PROTOCOL_VERSION,
    };
    let (a, b) = pair(&THIS, config(6, "# v6"), &next, config(5, "# v5")).await;
    wait_for("a session", Duration::from_secs(5), || {
        a.status().connected && b.status().connected
    })
    .await;
    assert_eq!(a.status().protocol_version, Some(PROTOCOL_VERSION));
    assert_eq!(b.status().protocol_version, Some(PROTOCOL_VERSION));
    wait_for("the held push reported", Duration::from_secs(5), || {
        a.status()
            .config
            .reason
            .is_some_and(|r| r.contains("push held: the peer runs a newer release"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.sink.offers.lock().unwrap().is_empty(),
        "nothing pushed to the newer release"
    );
    assert_eq!(b.status().config.local.unwrap().generation, 5);
    // The newer release as primary pushes to the older one, which validates as always.
    let (a, b) = pair(&next, config(8, "# v8"), &THIS, config(7, "# v7")).await;
    wait_for(
        "the push to the older release",
        Duration::from_secs(5),
        || b.status().config.local.is_some_and(|v| v.generation == 8),
    )
    .await;
    assert!(a.status().config.in_sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_holds_and_releases_the_push() {
    let (a, b) = pair(&THIS, config(5, "# v5"), &THIS, config(4, "# v4")).await;
    wait_for("config in sync", Duration::from_secs(5), || {
        a.status().config.in_sync && b.status().config.in_sync
    })
    .await;
    a.handle
        .hold_config_push(Some("peer lb2 speaks heartbeat wire version 9".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.handle.set_local_config(config(6, "# v6"));
    wait_for("the held push reported", Duration::from_secs(5), || {
        a.status()
            .config
            .reason
            .is_some_and(|r| r.contains("push held: peer lb2 speaks heartbeat wire version 9"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.sink.offers.lock().unwrap().len(),
        1,
        "only the first push, before the hold"
    );
    a.handle.hold_config_push(None);
    wait_for("the waiting file pushed", Duration::from_secs(5), || {
        a.status().config.in_sync && b.status().config.local.is_some_and(|v| v.generation == 6)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_without_a_common_version_are_refused_counted_and_retried() {
    let far = Release {
        max: PROTOCOL_VERSION + 2,
        min: PROTOCOL_VERSION + 1,
    };
    let (a, b) = pair(&THIS, config(5, "# v5"), &far, config(4, "# v4")).await;
    let refusals = |n: &Node| {
        let c = n.status().counters.rejected;
        c.get("version_unsupported").copied().unwrap_or(0)
            + c.get("refused_by_peer").copied().unwrap_or(0)
    };
    // Retried with back-off: refused again and again, never connected.
    wait_for("repeated refusals", Duration::from_secs(5), || {
        refusals(&a) >= 3 && refusals(&b) >= 3
    })
    .await;
    assert!(!a.status().connected && !b.status().connected);
    let error = a.status().last_error.unwrap_or_default();
    assert!(error.contains("protocol versions"), "{error}");
    assert!(b.sink.offers.lock().unwrap().is_empty());
}

/// A configuration with certificate files reaches a peer whose release carries files, files and all; the
/// release before files (protocol 2) is not pushed it, and the primary's status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_go_to_a_peer_that_carries_them_and_not_to_an_older_one() {
    let before_files = Release {
        max: FILES_PROTOCOL_VERSION - 1,
        min: MIN_PROTOCOL_VERSION,
    };
    let mut with_files = config(6, "# v6 with tls");
    with_files.files = vec![ConfigFile {
        name: "certs/horizon.pem".into(),
        bytes: b"-----BEGIN CERTIFICATE-----".to_vec(),
    }];
    let (a, b) = pair(&THIS, with_files.clone(), &before_files, config(5, "# v5")).await;
    wait_for(
        "the refusal to push reported",
        Duration::from_secs(5),
        || {
            a.status().config.reason.is_some_and(|r| {
                r.contains("cannot receive files") && r.contains("upgrade the peer")
            })
        },
    )
    .await;
    assert_eq!(
        b.status().protocol_version,
        Some(FILES_PROTOCOL_VERSION - 1)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.sink.offers.lock().unwrap().is_empty());
    assert_eq!(b.status().config.local.unwrap().generation, 5);

    let (a, b) = pair(&THIS, with_files.clone(), &THIS, config(5, "# v5")).await;
    wait_for("the push with its files", Duration::from_secs(5), || {
        b.status().config.local.is_some_and(|v| v.generation == 6)
    })
    .await;
    assert!(a.status().config.in_sync);
    assert_eq!(b.sink.files.lock().unwrap().last(), Some(&with_files.files));
}
