//! Two real sync drivers on 127.0.0.0/8 (through a recording relay): replication, resume,
//! config push, and what is (not) on the wire (frames are encrypted: no client address, no
//! pushed configuration, no secret).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tandem_stick::StickKey;
use tandem_sync::ConfigRole;

struct Pair {
    a: Node,
    b: Node,
    relay: Relay,
}

impl Pair {
    /// Stops both nodes and returns every byte the relay carried, both directions.
    fn into_wire(self) -> Vec<u8> {
        drop(self.a);
        drop(self.b);
        let mut wire = self.relay.to_acceptor.lock().unwrap().clone();
        wire.extend_from_slice(&self.relay.to_dialer.lock().unwrap());
        wire
    }
}

/// A (127.0.0.1, dials) -> relay (127.0.0.2) -> B (127.0.0.3, accepts). Each listener gets a
/// port free on its own address; A dials from port 0 (its configured port only gets its presence
/// listener, if free).
async fn pair(
    a_cfg: (bool, Option<tandem_sync::LocalConfig>),
    b_cfg: (bool, Option<tandem_sync::LocalConfig>),
    a_tables: tandem_sync::SharedTables,
) -> Pair {
    let relay_listener = listen_any_port(ip(2)).await;
    let relay_addr = relay_listener.local_addr().unwrap();
    let (b, b_addr) = start_accepting(ip(3), |port| NodeSpec {
        local: SocketAddr::new(ip(3), port),
        peer: relay_addr,
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: b_cfg.1.clone(),
        active: b_cfg.0,
        tables: tables(),
        settings: settings(),
    })
    .await;
    let relay = Relay::start(relay_listener, b_addr);
    let a = start_dialing(NodeSpec {
        local: SocketAddr::new(ip(1), b_addr.port()),
        peer: relay_addr,
        secret: SECRET.to_vec(),
        role: ConfigRole::Primary,
        config: a_cfg.1,
        active: a_cfg.0,
        tables: a_tables,
        settings: settings(),
    })
    .await;
    Pair { a, b, relay }
}

fn fill(tables: &tandem_sync::SharedTables, from: u32, to: u32, now: u64) {
    let mut t = tables.lock().unwrap();
    let nova = t.get_mut("nova_novncproxy").unwrap();
    for i in from..to {
        nova.set(&client(i), SERVERS[(i % 3) as usize], now);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resync_then_incremental_then_resume_after_a_cut() {
    let a_tables = tables();
    let clock_hint = tandem_stick::Clock::new();
    fill(&a_tables, 0, 20_000, clock_hint.now_ms());
    a_tables
        .lock()
        .unwrap()
        .get_mut("mysql")
        .unwrap()
        .set(&StickKey::Service, SERVERS[1], 0);
    let p = pair((true, Some(config(1, "a"))), (false, None), a_tables).await;
    let keys = || (0..20_100).map(client).chain([StickKey::Service]);

    wait_for("full resync", Duration::from_secs(10), || {
        same_entries(&p.a.tables, &p.b.tables, p.a.now(), p.b.now(), keys())
    })
    .await;
    wait_for("status caught up", Duration::from_secs(5), || {
        let s = p.b.status();
        s.connected
            && s.caught_up
            && s.tables
                .iter()
                .any(|t| t.label == "nova_novncproxy" && t.local_entries == 20_000)
    })
    .await;
    wait_for("peer sizes reported", Duration::from_secs(5), || {
        p.a.status()
            .tables
            .iter()
            .any(|t| t.peer_entries == Some(20_000))
    })
    .await;
    // Both ends publish the kernel's RTT of the session socket (loopback: present and small).
    for node in [&p.a, &p.b] {
        let rtt = node.status().rtt_us;
        assert!(rtt.is_some_and(|us| us < 100_000), "rtt_us {rtt:?}");
    }

    // Incremental: new clients and a moved MySQL writer.
    fill(&p.a.tables, 20_000, 20_100, p.a.now());
    p.a.tables.lock().unwrap().get_mut("mysql").unwrap().set(
        &StickKey::Service,
        SERVERS[2],
        p.a.now(),
    );
    wait_for("incremental updates", Duration::from_secs(5), || {
        same_entries(&p.a.tables, &p.b.tables, p.a.now(), p.b.now(), keys())
    })
    .await;
    wait_for("ack", Duration::from_secs(5), || {
        p.a.status().last_ack_age_ms.is_some_and(|age| age < 2_000)
    })
    .await;
    let resyncs_before = p.b.status().counters.replication.resyncs_received;
    let sent_before = p.a.status().counters.replication.resyncs_sent;

    // Cut the connection, change things meanwhile, and let the dialer reconnect.
    p.relay.cut();
    fill(&p.a.tables, 30_000, 30_050, p.a.now());
    p.a.tables
        .lock()
        .unwrap()
        .get_mut("nova_novncproxy")
        .unwrap()
        .remove(&client(5), p.a.now());
    wait_for("reconnect", Duration::from_secs(10), || {
        p.a.status().counters.sessions_opened >= 2 && p.a.status().connected
    })
    .await;
    let keys2 = || {
        (0..20_100)
            .chain(30_000..30_050)
            .map(client)
            .chain([StickKey::Service])
    };
    wait_for("resumed updates", Duration::from_secs(5), || {
        same_entries(&p.a.tables, &p.b.tables, p.a.now(), p.b.now(), keys2())
    })
    .await;
    assert_eq!(
        p.b.status().counters.replication.resyncs_received,
        resyncs_before,
        "resumed from the ack, no resync"
    );
    assert_eq!(p.a.status().counters.replication.resyncs_sent, sent_before);
    assert!(p.a.status().counters.frames_sent > 0 && p.b.status().counters.frames_received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_accepted_then_refused_then_accepted() {
    let p = pair(
        (
            true,
            Some(config(5, "[cluster]\nname = \"openstack\"\n# v5\n")),
        ),
        (false, Some(config(4, "old"))),
        tables(),
    )
    .await;
    wait_for("config in sync", Duration::from_secs(5), || {
        p.a.status().config.in_sync && p.b.status().config.in_sync
    })
    .await;
    {
        let offers = p.b.sink.offers.lock().unwrap();
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].1, 5);
        assert!(String::from_utf8_lossy(&offers[0].0).contains("# v5"));
    }
    assert_eq!(p.b.status().config.local.unwrap().generation, 5);
    assert_eq!(p.a.status().config.peer.unwrap().generation, 5);

    // An invalid file: refused, both report out of sync with the reason, B keeps generation 5.
    p.a.handle.set_local_config(config(6, "INVALID = 1"));
    wait_for("refusal reported", Duration::from_secs(5), || {
        let s = p.a.status();
        !s.config.in_sync
            && s.config
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("unknown field"))
    })
    .await;
    let b = p.b.status();
    assert!(!b.config.in_sync);
    assert_eq!(b.config.local.unwrap().generation, 5);

    // Fixed on the primary: pushed and applied.
    p.a.handle.set_local_config(config(7, "# v7"));
    wait_for("in sync again", Duration::from_secs(5), || {
        p.a.status().config.in_sync && p.b.status().config.local.is_some_and(|v| v.generation == 7)
    })
    .await;
    assert_eq!(p.b.sink.offers.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_node_local_ever_crosses_the_wire() {
    // The daemon reads node.toml and the secret file; the sync task gets only the parsed values.
    const MARKER: &str = "NODE-LOCAL-MARKER-7f3a";
    let node_toml = format!(
        "[node]\nname = \"{MARKER}\"\nrole = \"primary\"\nsecret_file = \"/etc/tandem/secret\"\n[admin]\nlisten = \"127.0.0.1:9080\"\npassword = \"{MARKER}-password\"\n"
    );
    assert!(node_toml.contains(MARKER));
    let cluster_toml = "[cluster]\nname = \"openstack\"\n# CLUSTER-MARKER\n";
    let a_tables = tables();
    fill(&a_tables, 0, 500, 0);
    let p = pair(
        (true, Some(config(9, cluster_toml))),
        (false, Some(config(8, "x"))),
        a_tables,
    )
    .await;
    wait_for("synced", Duration::from_secs(5), || {
        p.b.status().config.in_sync && p.b.status().tables.iter().any(|t| t.local_entries == 500)
    })
    .await;
    p.a.handle
        .set_local_config(config(10, "# CLUSTER-MARKER second"));
    wait_for("pushed", Duration::from_secs(5), || {
        p.b.status()
            .config
            .local
            .is_some_and(|v| v.generation == 10)
    })
    .await;
    assert!(
        p.b.sink
            .offers
            .lock()
            .unwrap()
            .iter()
            .any(|o| String::from_utf8_lossy(&o.0).contains("# CLUSTER-MARKER")),
        "positive control: cluster.toml was sent"
    );
    let wire = p.into_wire();
    assert!(wire.len() > 10_000, "the session carried data");
    let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(b"# CLUSTER-MARKER"),
        "cluster.toml travels encrypted"
    );
    assert!(
        !contains(SECRET),
        "the shared secret must never be on the wire"
    );
    assert!(!contains(&SECRET[..12]), "not even part of it");
    assert!(
        !contains(MARKER.as_bytes()),
        "node.toml content must never be on the wire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_while_disconnected_is_pushed_on_reconnect() {
    let p = pair((true, Some(config(1, "# one"))), (false, None), tables()).await;
    wait_for("in sync", Duration::from_secs(5), || {
        p.b.status().config.in_sync
    })
    .await;
    // Break the link for good while the primary reloads.
    p.relay.cut();
    p.a.handle.set_local_config(config(2, "# two"));
    wait_for("reconnected and pushed", Duration::from_secs(10), || {
        p.b.status().config.local.is_some_and(|v| v.generation == 2) && p.a.status().config.in_sync
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_then_restart_of_the_old_active_keeps_every_entry() {
    let a_tables = tables();
    fill(&a_tables, 0, 2_000, 0);
    a_tables
        .lock()
        .unwrap()
        .get_mut("mysql")
        .unwrap()
        .set(&StickKey::Service, SERVERS[0], 0);
    let (b, b_addr) = start_accepting(ip(3), |port| NodeSpec {
        local: SocketAddr::new(ip(3), port),
        peer: SocketAddr::new(ip(1), port),
        secret: SECRET.to_vec(),
        role: ConfigRole::Secondary,
        config: None,
        active: false,
        tables: tables(),
        settings: settings(),
    })
    .await;
    // A dials (from port 0), so its configured port is never bound.
    let a_addr = SocketAddr::new(ip(1), b_addr.port());
    let spec_a = |t| NodeSpec {
        local: a_addr,
        peer: b_addr,
        secret: SECRET.to_vec(),
        role: ConfigRole::Primary,
        config: None,
        active: true,
        tables: t,
        settings: settings(),
    };
    let a = start_dialing(spec_a(a_tables.clone())).await;
    let keys = || (0..2_100).map(client).chain([StickKey::Service]);
    wait_for("replicated", Duration::from_secs(10), || {
        same_entries(&a.tables, &b.tables, a.now(), b.now(), keys())
    })
    .await;

    // The active node dies; B takes over and serves new clients.
    drop(a);
    b.handle.set_active(true);
    fill(&b.tables, 2_000, 2_100, b.now());

    // The old active comes back empty, as standby: it gets everything, B loses nothing.
    let a2 = start_dialing(NodeSpec {
        active: false,
        ..spec_a(tables())
    })
    .await;
    wait_for("restarted node caught up", Duration::from_secs(10), || {
        a2.status().caught_up && same_entries(&b.tables, &a2.tables, b.now(), a2.now(), keys())
    })
    .await;
    let b_nova = b
        .tables
        .lock()
        .unwrap()
        .get("nova_novncproxy")
        .unwrap()
        .len();
    assert_eq!(b_nova, 2_100);
    let writer = b
        .tables
        .lock()
        .unwrap()
        .get("mysql")
        .unwrap()
        .peek(&StickKey::Service, b.now())
        .unwrap();
    assert_eq!(
        &*writer.server, SERVERS[0],
        "all MySQL connections still go to one controller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_and_pushed_configs_never_cross_in_clear() {
    // Distinctive client addresses as stick keys, and a distinctive string in the pushed config.
    let clients: Vec<std::net::Ipv4Addr> =
        (70..=77).map(|last| [10, 99, 88, last].into()).collect();
    const CONFIG_MARKER: &str = "tandem-distinctive-7a9c-config-string";
    let a_tables = tables();
    {
        let mut t = a_tables.lock().unwrap();
        let nova = t.get_mut("nova_novncproxy").unwrap();
        for (i, c) in clients.iter().enumerate() {
            nova.set(&StickKey::SourceIp((*c).into()), SERVERS[i % 3], 0);
        }
    }
    let text = format!("[cluster]\nname = \"openstack\"\n# {CONFIG_MARKER}\n");
    let p = pair((true, Some(config(3, &text))), (false, None), a_tables).await;
    let keys = || clients.iter().map(|c| StickKey::SourceIp((*c).into()));
    wait_for("snapshot replicated", Duration::from_secs(10), || {
        same_entries(&p.a.tables, &p.b.tables, p.a.now(), p.b.now(), keys())
    })
    .await;
    // And an incremental update (the change log's path, not the snapshot's).
    let late: std::net::Ipv4Addr = [10, 99, 88, 78].into();
    p.a.tables
        .lock()
        .unwrap()
        .get_mut("nova_novncproxy")
        .unwrap()
        .set(&StickKey::SourceIp(late.into()), SERVERS[0], p.a.now());
    wait_for("update replicated", Duration::from_secs(5), || {
        p.b.tables
            .lock()
            .unwrap()
            .get("nova_novncproxy")
            .unwrap()
            .peek(&StickKey::SourceIp(late.into()), p.b.now())
            .is_some()
    })
    .await;
    wait_for("config pushed", Duration::from_secs(5), || {
        p.b.status().config.local.is_some_and(|v| v.generation == 3)
    })
    .await;
    assert!(
        p.b.sink
            .offers
            .lock()
            .unwrap()
            .iter()
            .any(|o| String::from_utf8_lossy(&o.0).contains(CONFIG_MARKER)),
        "positive control: the config was pushed"
    );
    let wire = p.into_wire();
    assert!(wire.len() > 300, "the session carried data");
    let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    for c in clients.iter().chain([&late]) {
        let raw = c.octets();
        let mut reversed = raw;
        reversed.reverse();
        let hex = format!("{:02x}{:02x}{:02x}{:02x}", raw[0], raw[1], raw[2], raw[3]);
        for (encoding, needle) in [
            ("dotted text", c.to_string().into_bytes()),
            ("raw 4 bytes", raw.to_vec()),
            ("raw 4 bytes, little endian", reversed.to_vec()),
            ("hex text", hex.into_bytes()),
        ] {
            assert!(
                !contains(&needle),
                "client {c} on the wire in clear ({encoding})"
            );
        }
    }
    assert!(
        !contains(CONFIG_MARKER.as_bytes()),
        "the pushed config on the wire"
    );
    assert!(
        !contains(b"distinctive"),
        "part of the pushed config on the wire"
    );
    assert!(!contains(SECRET), "the secret on the wire");
}
