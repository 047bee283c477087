//! `docs/admin-api.md` against the type: its example is a valid document (every struct denies
//! unknown fields in test builds), and every field the type has is named in it.

#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::Value;
use std::net::Ipv4Addr;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");
    std::fs::read_to_string(path).unwrap()
}

/// The JSON block under "## Status document".
fn documented_example(doc: &str) -> &str {
    let section = &doc[doc.find("## Status document").unwrap()..];
    let start = section.find("```json\n").unwrap() + "```json\n".len();
    let end = start + section[start..].find("```").unwrap();
    &section[start..end]
}

/// A document in which every optional part is present and every list has an element.
fn fully_populated() -> Status {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let counts = BTreeMap::from([("bad_mac".to_owned(), 1)]);
    Status {
        node: Node {
            name: "lb1".into(),
            role: Role::Primary,
            address: ip,
            state: NodeState::Active,
            state_since_ms: 1,
            fault: Some("why".into()),
            ping: Ping::Reachable,
            ping_nodes: vec![PingNode {
                address: ip,
                reachable: true,
                last_reply_age_ms: Some(1),
                rtt_ms: Some(0.5),
            }],
            manage_vips: true,
            interface: "lo".into(),
            vips: vec![ip],
            vips_held: vec![ip],
            vip_conflicts: VipConflicts {
                check_ms: 1000,
                probes_sent: 1,
                in_conflict: 1,
                vips: vec![VipConflict {
                    vip: ip,
                    detected: 1,
                    current: true,
                    claimants: vec![VipClaimant {
                        mac: "02:7e:00:00:01:66".into(),
                        kind: "arp-request".into(),
                        first_seen_unix_ms: 1,
                        last_seen_unix_ms: 1,
                        last_seen_age_ms: 1,
                        frames: 1,
                        current: true,
                    }],
                }],
            },
            uptime_s: 1,
            peer: Some(Peer {
                name: "lb2".into(),
                address: Some(ip),
                role: Role::Secondary,
                state: PeerState::Dead,
                alive: false,
                last_heard_ms: 1,
                state_since_ms: Some(1),
                holds_vips: false,
                config_generation: 1,
                config_digest: "00".into(),
                servers_up: 1,
                servers_total: 1,
            }),
        },
        config: Config {
            generation: 1,
            digest: "00".into(),
            sync: ConfigSync::OutOfSync("peer runs generation 2".into()),
            reloads: Reloads { ok: 1, rejected: 1 },
            not_applied: vec!["TLS service \"web\" is not served: web.pem: bad".into()],
            not_applied_services: vec!["web".into()],
        },
        cluster: Cluster {
            takeovers: 1,
            releases: 1,
            split_brains: 1,
            warn_time_exceeded: 1,
            vip_failures: 1,
            last_event: Some("event".into()),
            heartbeats: Heartbeats {
                sent: 1,
                send_errors: 1,
                received: 1,
                missed: 1,
                rejected: counts.clone(),
            },
            wire: Wire {
                min: 1,
                max: 1,
                speaking: 1,
                peer_version: Some(1),
                // Its shape is described in prose in docs/admin-api.md (the example shows a settled pair).
                incompatible_peer: None,
                incompatible_received: 3,
            },
            garp_sent: GarpSent { ipv4: 1, ipv6: 1 },
            released_connections_closed: 4,
        },
        replication: Some(Replication {
            connected: true,
            direction: "dial".into(),
            peer: "127.0.0.2:7778".into(),
            protocol_version: Some(1),
            tables: vec![TableSync {
                label: "mysql".into(),
                local_entries: 1,
                peer_entries: Some(1),
                resyncing: false,
            }],
            last_ack_age_ms: Some(1),
            caught_up: true,
            config: ConfigPush {
                local: Some(ConfigVersion {
                    generation: 1,
                    digest: "00".into(),
                }),
                peer: Some(ConfigVersion {
                    generation: 1,
                    digest: "00".into(),
                }),
                in_sync: true,
                reason: Some("why".into()),
            },
            counters: SyncCounters {
                frames_sent: 1,
                frames_received: 1,
                bytes_sent: 1,
                bytes_received: 1,
                sessions_opened: 1,
                rejected: counts,
                replication: ReplicationCounters {
                    resyncs_sent: 1,
                    resyncs_received: 1,
                    resync_fallbacks: 1,
                    updates_sent: 1,
                    updates_applied: 1,
                    updates_duplicate: 1,
                    entries_sent: 1,
                    entries_applied: 1,
                    entries_ignored: 1,
                    unknown_table_messages: 1,
                    admin_entries_sent: 1,
                    admin_entries_applied: 1,
                    admin_entries_refused: 1,
                },
            },
            last_error: Some("closed".into()),
            rtt_us: Some(1),
        }),
        services: vec![Service {
            label: "mysql".into(),
            vip: ip,
            ports: vec![3306],
            mode: Mode::Tcp,
            balance: Balance::RoundRobin,
            persistence: Persistence {
                mode: PersistenceMode::SourceIp,
                timeout_s: 1,
                table_size: 1,
                cookie_name: String::new(),
            },
            current_connections: 1,
            total_connections: 1,
            bytes_in: 1,
            bytes_out: 1,
            failures: 1,
            bind_errors: vec!["127.0.0.1:3306: address in use".into()],
            stick_table_size: 1,
            servers: vec![Server {
                label: "db1".into(),
                address: ip,
                port: Some(3306),
                weight: 100,
                health: Health::Down,
                health_reason: "refused".into(),
                health_since_ms: Some(1),
                admin_state: AdminState::Halt,
                admin_source: Some(AdminSource {
                    via: AdminVia::Replicated,
                    set_by: "lb2".into(),
                    at_unix_ms: 1,
                }),
                current_connections: 1,
                total_connections: 1,
                bytes_in: 1,
                bytes_out: 1,
                check_failures: 1,
                connect_failures: 1,
                idle_connections: 1,
                last_check: Some(LastCheck {
                    at_unix_ms: 1,
                    ok: false,
                    detail: "refused".into(),
                }),
                events: ServerEvents {
                    retries: 1,
                    up_down: 1,
                    downtime_ms: 1,
                    check_duration_ms: Some(0.5),
                },
            }],
            traffic: ServiceTraffic {
                http_responses: HttpResponses {
                    informational: 1,
                    success: 1,
                    redirection: 1,
                    client_error: 1,
                    server_error: 1,
                    other: 1,
                },
                response_seconds: Histogram {
                    le: vec![0.5],
                    cumulative: vec![1],
                    count: 2,
                    sum_seconds: 1.5,
                },
                connect_seconds: Histogram::default(),
                stick_table_capacity: 1,
                stick_table_evictions: 1,
                access_log_lines: 1,
                access_log_dropped: 1,
                tls: Some(ServiceTls {
                    handshakes: 1,
                    resumed: 1,
                    tls12: 1,
                    tls13: 1,
                    alpn_h2: 1,
                    alpn_http1: 1,
                    failures: TlsFailures::default(),
                    certificates: vec![TlsCertificate {
                        file: "a.pem".into(),
                        names: vec!["a.example.org".into()],
                        not_before_unix: 1,
                        not_after_unix: 1,
                    }],
                }),
            },
        }],
    }
}

/// Every object key, with its path, except the keys of free-form maps (counts by reason).
fn keys(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                out.push((key.clone(), child_path.clone()));
                if key != "rejected" {
                    keys(child, &child_path, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                keys(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_documented_example_is_a_status_document() {
    let doc = doc();
    let example: Value = serde_json::from_str(documented_example(&doc)).unwrap();
    let status: Status = serde_json::from_value(example.clone())
        .unwrap_or_else(|error| panic!("docs/admin-api.md example: {error}"));
    // Nothing of the example is lost or reshaped on the way through the type.
    assert_eq!(serde_json::to_value(&status).unwrap(), example);
}

#[test]
fn every_field_of_the_type_is_documented() {
    let doc = doc();
    let example = documented_example(&doc);
    let mut found = Vec::new();
    keys(
        &serde_json::to_value(fully_populated()).unwrap(),
        "",
        &mut found,
    );
    let missing: Vec<_> = found
        .iter()
        .filter(|(key, _)| !example.contains(&format!("\"{key}\"")))
        .map(|(_, path)| path.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "fields missing from docs/admin-api.md: {missing:?}"
    );
}

#[test]
fn every_state_string_is_documented() {
    let doc = doc();
    let states = Role::ALL
        .iter()
        .map(|s| s.as_str())
        .chain(NodeState::ALL.iter().map(|s| s.as_str()))
        .chain(Ping::ALL.iter().map(|s| s.as_str()))
        .chain(Health::ALL.iter().map(|s| s.as_str()))
        .chain(AdminState::ALL.iter().map(|s| s.as_str()))
        .chain(AdminVia::ALL.iter().map(|s| s.as_str()))
        .chain([PeerState::Dead.as_str()]);
    for state in states {
        assert!(
            doc.contains(&format!("`{state}`")),
            "`{state}` not in docs/admin-api.md"
        );
    }
}

#[test]
fn a_document_survives_the_wire() {
    let status = fully_populated();
    let text = serde_json::to_string(&status).unwrap();
    assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), status);
}

#[test]
fn states_read_as_the_strings_the_api_always_carried() {
    let as_json = |value: Value| value.as_str().unwrap().to_owned();
    assert_eq!(
        as_json(serde_json::to_value(PeerState::Heard(NodeState::Standby)).unwrap()),
        "standby"
    );
    assert_eq!(
        as_json(serde_json::to_value(PeerState::Dead).unwrap()),
        "dead"
    );
    assert_eq!(
        serde_json::from_str::<PeerState>("\"active\"").unwrap(),
        PeerState::Heard(NodeState::Active)
    );
    assert_eq!(
        as_json(serde_json::to_value(Ping::NotConfigured).unwrap()),
        "notconfigured"
    );
    assert_eq!(
        as_json(serde_json::to_value(Balance::WeightedLeastConnections).unwrap()),
        "weighted-least-connections"
    );
    for sync in [
        ConfigSync::Standalone,
        ConfigSync::PeerNotHeard,
        ConfigSync::InSync,
        ConfigSync::OutOfSync("peer runs generation 4".into()),
    ] {
        let text = serde_json::to_value(&sync).unwrap();
        assert_eq!(serde_json::from_value::<ConfigSync>(text).unwrap(), sync);
    }
    assert_eq!(
        serde_json::to_value(ConfigSync::OutOfSync("versions differ".into())).unwrap(),
        "config out of sync: versions differ"
    );
    assert!(ConfigSync::Standalone.is_settled() && ConfigSync::InSync.is_settled());
    assert!(!ConfigSync::PeerNotHeard.is_settled());
}

#[test]
fn admin_sources_read_as_sentences_with_utc_times() {
    assert_eq!(UtcTime(0).to_string(), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        UtcTime(951_782_400_000).to_string(),
        "2000-02-29 00:00:00 UTC"
    );
    assert_eq!(
        UtcTime(1_796_572_522_999).to_string(),
        "2026-12-06 15:55:22 UTC"
    );
    let source = |via| AdminSource {
        via,
        set_by: "lb2".into(),
        at_unix_ms: 1_796_572_522_000,
    };
    assert_eq!(
        source(AdminVia::Operator).to_string(),
        "operator on lb2 at 2026-12-06 15:55:22 UTC"
    );
    assert_eq!(
        source(AdminVia::Replicated).to_string(),
        "replicated from the peer, set by an operator on lb2 at 2026-12-06 15:55:22 UTC"
    );
    assert!(
        source(AdminVia::Restored)
            .to_string()
            .starts_with("restored from state_dir, set by an operator on lb2")
    );
}

#[test]
fn a_mixed_version_pair_is_described_and_a_settled_one_is_not() {
    let mut wire = Wire {
        min: 1,
        max: 2,
        speaking: 2,
        peer_version: Some(2),
        incompatible_peer: None,
        incompatible_received: 0,
    };
    assert_eq!(wire.mixed(), None);
    wire.peer_version = None;
    assert_eq!(wire.mixed(), None, "peer not heard yet");
    wire.peer_version = Some(1);
    wire.speaking = 1;
    assert!(
        wire.mixed()
            .unwrap()
            .contains("older heartbeat wire version 1")
    );
    wire.incompatible_peer = Some(IncompatiblePeer {
        name: "lb2".into(),
        version: 3,
        last_heard_ms: 5,
    });
    assert!(
        wire.mixed()
            .unwrap()
            .contains("peer lb2 speaks heartbeat wire version 3")
    );
}
