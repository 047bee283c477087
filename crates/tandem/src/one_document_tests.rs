//! One typed status document, three readers: the System Overview page, `tandem status` text and
//! `/metrics` must each show the same bind error and server states.

#![allow(clippy::unwrap_used)]

use crate::{metrics, render};
use std::net::IpAddr;
use tandem_status::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn server(label: &str, health: Health, admin_state: AdminState) -> Server {
    Server {
        label: label.into(),
        address: ip("127.0.0.11"),
        port: Some(3306),
        weight: 100,
        health,
        health_reason: String::new(),
        health_since_ms: Some(1000),
        admin_state,
        admin_source: None,
        current_connections: 2,
        total_connections: 7,
        bytes_in: 10,
        bytes_out: 20,
        check_failures: 0,
        connect_failures: 0,
        idle_connections: 0,
        last_check: None,
        events: Default::default(),
    }
}

const BIND_ERROR: &str = "127.0.0.250:3306: Address already in use (os error 98)";

/// An active primary with a standby peer; `mysql` could not bind, and its servers are up,
/// drained, down and halted.
fn document() -> Status {
    Status {
        node: Node {
            name: "lb1".into(),
            role: Role::Primary,
            address: ip("127.0.0.21"),
            state: NodeState::Active,
            state_since_ms: 5000,
            fault: None,
            ping: Ping::NotConfigured,
            ping_nodes: Vec::new(),
            manage_vips: false,
            interface: "lo".into(),
            vips: vec![ip("127.0.0.250")],
            vips_held: vec![ip("127.0.0.250")],
            vip_conflicts: tandem_status::VipConflicts {
                check_ms: 1000,
                probes_sent: 42,
                in_conflict: 1,
                vips: vec![tandem_status::VipConflict {
                    vip: ip("127.0.0.250"),
                    detected: 2,
                    current: true,
                    claimants: vec![tandem_status::VipClaimant {
                        mac: "02:7e:00:00:01:66".into(),
                        kind: "arp-request".into(),
                        first_seen_unix_ms: 1_796_500_000_000,
                        last_seen_unix_ms: 1_796_500_004_000,
                        last_seen_age_ms: 300,
                        frames: 7,
                        current: true,
                    }],
                }],
            },
            uptime_s: 60,
            peer: Some(Peer {
                name: "lb2".into(),
                address: Some(ip("127.0.0.22")),
                role: Role::Secondary,
                state: PeerState::Heard(NodeState::Standby),
                alive: true,
                last_heard_ms: 40,
                state_since_ms: Some(60_000),
                holds_vips: false,
                config_generation: 2,
                config_digest: "00112233445566778899".into(),
                servers_up: 2,
                servers_total: 4,
            }),
        },
        config: Config {
            generation: 2,
            digest: "00112233445566778899".into(),
            sync: ConfigSync::InSync,
            reloads: Default::default(),
            not_applied: Vec::new(),
            not_applied_services: Vec::new(),
        },
        cluster: Cluster {
            takeovers: 1,
            releases: 0,
            split_brains: 0,
            warn_time_exceeded: 0,
            vip_failures: 0,
            last_event: None,
            heartbeats: Heartbeats {
                sent: 300,
                send_errors: 0,
                received: 298,
                missed: 0,
                rejected: [("bad_mac".to_owned(), 2)].into(),
            },
            wire: Default::default(),
            garp_sent: Default::default(),
            released_connections_closed: 0,
        },
        replication: None,
        services: vec![Service {
            label: "mysql".into(),
            vip: ip("127.0.0.250"),
            ports: vec![3306],
            mode: Mode::Tcp,
            balance: Balance::WeightedLeastConnections,
            persistence: Persistence {
                mode: PersistenceMode::LastSuccessful,
                timeout_s: 0,
                table_size: 1000,
                cookie_name: String::new(),
            },
            current_connections: 1,
            total_connections: 10,
            bytes_in: 1,
            bytes_out: 2,
            failures: 0,
            bind_errors: vec![BIND_ERROR.into()],
            stick_table_size: 1,
            traffic: Default::default(),
            servers: vec![
                server("Overcloud-controller-1", Health::Up, AdminState::Online),
                server("drained-1", Health::Up, AdminState::Drain),
                server("down-1", Health::Down, AdminState::Online),
                server("halted-1", Health::Up, AdminState::Halt),
            ],
        }],
    }
}

#[test]
fn page_text_and_metrics_show_the_same_document() {
    let status = document();

    // The page's script renders the document it carries (and then /api/status): what it shows
    // is checked in a browser (tests/browser.rs); here, that it carries this very document.
    let html = tandem_admin::render_overview(&status);
    assert!(html.contains(BIND_ERROR), "page: {html}");
    let open = r#"<script type="application/json" id="tandem-status">"#;
    let start = html.find(open).unwrap() + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    let carried: Status = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(carried, status);

    let text = render::status_text(&status);
    assert!(text.contains(BIND_ERROR), "text: {text}");
    assert!(text.contains("state ACTIVE"));
    assert!(text.contains("lb2 at 127.0.0.22, state standby, last heard 40 ms ago"));
    assert!(text.contains("generation 2, digest 0011223344556677, in sync"));
    assert!(text.contains("Overcloud-controller-1"));
    assert!(text.contains("up/online w100"));
    assert!(text.contains("up/drain w100"));
    assert!(text.contains("down/online w100"));
    assert!(text.contains("up/halt w100"));
    assert!(
        text.contains("CONFLICT  127.0.0.250 claimed by 02:7e:00:00:01:66 (arp-request)"),
        "text: {text}"
    );

    let metrics = metrics::render(&status);
    for line in [
        r#"tandem_service_listen_errors{service="mysql"} 1"#,
        r#"tandem_service_servers_up{service="mysql"} 3"#,
        r#"tandem_server_up{server="down-1",service="mysql"} 0"#,
        r#"tandem_server_up{server="drained-1",service="mysql"} 1"#,
        r#"tandem_server_admin_state{server="drained-1",service="mysql",state="drain"} 1"#,
        r#"tandem_server_admin_state{server="drained-1",service="mysql",state="online"} 0"#,
        r#"tandem_server_admin_state{server="halted-1",service="mysql",state="halt"} 1"#,
        r#"tandem_node_state{state="active"} 1"#,
        r#"tandem_node_state{state="standby"} 0"#,
        r#"tandem_node_info{node="lb1",role="primary"} 1"#,
        r#"tandem_peer_up 1"#,
        r#"tandem_peer_last_heard_seconds 0.04"#,
        r#"tandem_vips_held 1"#,
        r#"tandem_vip_conflicts_total{vip="127.0.0.250"} 2"#,
        r#"tandem_vips_in_conflict 1"#,
        r#"tandem_vip_conflict_probes_total 42"#,
        r#"tandem_vip_conflict_check_seconds 1"#,
        r#"tandem_heartbeats_rejected_total{reason="bad_mac"} 2"#,
        r#"tandem_config_generation 2"#,
        r#"tandem_config_in_sync 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "metrics lack {line}:\n{metrics}"
        );
    }
}

#[test]
fn a_standalone_node_without_replication_renders_everywhere() {
    let mut status = document();
    status.node.peer = None;
    status.config.sync = ConfigSync::Standalone;
    status.services[0].bind_errors.clear();
    let text = render::status_text(&status);
    assert!(text.contains("peer      none (standalone)"));
    assert!(!text.contains("NOT LISTENING"));
    let metrics = metrics::render(&status);
    assert!(metrics.contains("tandem_peer_up 0"));
    assert!(metrics.contains("tandem_peer_last_heard_seconds -1"));
    assert!(metrics.contains(r#"tandem_service_listen_errors{service="mysql"} 0"#));
    assert!(!metrics.contains("tandem_sync_connected"));
    assert!(!tandem_admin::render_overview(&status).contains("Address already in use"));
}

#[test]
fn a_peer_out_of_sync_and_dead_reads_so() {
    let mut status = document();
    if let Some(peer) = status.node.peer.as_mut() {
        peer.state = PeerState::Dead;
        peer.alive = false;
    }
    status.config.sync = ConfigSync::OutOfSync("peer runs generation 1".into());
    let text = render::status_text(&status);
    assert!(text.contains("state dead"));
    assert!(text.contains("config out of sync: peer runs generation 1"));
    let metrics = metrics::render(&status);
    assert!(metrics.contains("tandem_peer_up 0"));
    assert!(metrics.contains("tandem_config_in_sync 0"));
}

/// The document above with a sync session to the peer.
fn with_replication() -> Status {
    let mut status = document();
    status.replication = Some(Replication {
        connected: true,
        direction: "dial".into(),
        peer: "127.0.0.22:7778".into(),
        protocol_version: Some(1),
        tables: vec![TableSync {
            label: "mysql".into(),
            local_entries: 3,
            peer_entries: Some(2),
            resyncing: false,
        }],
        last_ack_age_ms: Some(250),
        caught_up: true,
        config: ConfigPush {
            local: None,
            peer: None,
            in_sync: true,
            reason: None,
        },
        counters: SyncCounters {
            frames_sent: 1,
            frames_received: 1,
            bytes_sent: 1,
            bytes_received: 1,
            sessions_opened: 1,
            rejected: [("bad_mac".to_owned(), 0)].into(),
            replication: ReplicationCounters {
                resyncs_sent: 1,
                resyncs_received: 0,
                resync_fallbacks: 0,
                updates_sent: 4,
                updates_applied: 0,
                updates_duplicate: 0,
                entries_sent: 0,
                entries_applied: 0,
                entries_ignored: 0,
                unknown_table_messages: 0,
                admin_entries_sent: 0,
                admin_entries_applied: 0,
                admin_entries_refused: 0,
            },
        },
        last_error: None,
        rtt_us: None,
    });
    status
}

#[test]
fn replication_reaches_text_and_metrics() {
    let status = with_replication();
    let text = render::status_text(&status);
    assert!(text.contains("sync      connected (caught up), last ack 250 ms ago"));
    assert!(text.contains("tables    local/peer entries: mysql 3/2"));
    let metrics = metrics::render(&status);
    assert!(metrics.contains("tandem_sync_connected 1"));
    assert!(metrics.contains("tandem_sync_last_ack_age_seconds 0.25"));
    assert!(metrics.contains(r#"tandem_sync_table_entries{service="mysql",side="peer"} 2"#));
}

#[test]
fn every_metric_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    let metrics = metrics::render(&with_replication());
    let names: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    assert!(names.len() > 40, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
}

/// A rolling upgrade in progress reaches the text and the metrics: an older peer, then a peer this node cannot
/// read (alive, counted as up, its version exported).
#[test]
fn a_mixed_version_pair_reads_so() {
    let mut status = document();
    status.cluster.wire = Wire {
        min: 1,
        max: 2,
        speaking: 1,
        peer_version: Some(1),
        incompatible_peer: None,
        incompatible_received: 0,
    };
    let text = render::status_text(&status);
    assert!(
        text.contains(
            "upgrade   peer speaks older heartbeat wire version 1; this node (up to 2) answers in 1"
        ),
        "{text}"
    );
    let metrics = metrics::render(&status);
    assert!(
        metrics.contains("tandem_heartbeat_wire_version{of=\"peer\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tandem_heartbeat_wire_version{of=\"speaking\"} 1"));
    assert!(metrics.contains("tandem_peer_incompatible 0"));

    status.node.peer = None;
    status.cluster.wire = Wire {
        min: 1,
        max: 1,
        speaking: 1,
        peer_version: Some(2),
        incompatible_peer: Some(IncompatiblePeer {
            name: "lb2".into(),
            version: 2,
            last_heard_ms: 30,
        }),
        incompatible_received: 7,
    };
    let text = render::status_text(&status);
    assert!(
        text.contains("peer      lb2, alive in heartbeat wire version 2 (unreadable here), last heard 30 ms ago"),
        "{text}"
    );
    assert!(
        text.contains("upgrade   peer lb2 speaks heartbeat wire version 2, this node reads 1..=1")
    );
    let metrics = metrics::render(&status);
    assert!(metrics.contains("tandem_peer_incompatible 2"), "{metrics}");
    assert!(metrics.contains("tandem_peer_up 1"));
    assert!(metrics.contains("tandem_heartbeats_incompatible_total 7"));
}
