//! The API the daemon and the CLI use: load/check with generations, reload plan, peer configs,
//! defaults and path resolution.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use tandem_config::*;

const CLUSTER: &str = r#"
[cluster]
name = "lab"

[[service]]
label = "web"
vip = "10.0.0.100"
ports = [80, "8000-8002"]
mode = "http"
persistence = { mode = "http-cookie" }
[[service.server]]
label = "web1"
address = "10.0.1.1"
[[service.server]]
label = "web2"
address = "10.0.1.2"
port = 8080
weight = 50

[[service]]
label = "db"
vip = "10.0.0.100"
ports = [3306]
persistence = "last-successful"
health_check = { interval_ms = 500 }
[[service.server]]
label = "db1"
address = "10.0.2.1"
"#;

fn node_toml(state_dir: &Path) -> String {
    format!(
        r#"
[node]
name = "lb1"
role = "primary"
address = "10.0.0.1"
peer = "10.0.0.2"
manage_vips = false
state_dir = "{}"
"#,
        state_dir.display()
    )
}

fn write_pair(dir: &Path, cluster: &str) {
    fs::write(dir.join("cluster.toml"), cluster).unwrap();
    fs::write(dir.join("node.toml"), node_toml(&dir.join("state"))).unwrap();
}

#[test]
fn defaults_are_filled_in() {
    let c = parse_cluster_str(CLUSTER, "cluster.toml").unwrap();
    assert_eq!(
        (
            c.heartbeat.interval_ms,
            c.heartbeat.dead_ms,
            c.heartbeat.warn_ms,
            c.heartbeat.init_dead_ms
        ),
        (200, 1000, 500, 3000)
    );
    assert!(!c.heartbeat.auto_failback);
    assert_eq!(c.heartbeat.garp_form, GarpForm::Request);
    assert_eq!(c.heartbeat.conflict_check_ms, 1000);
    assert_eq!(
        (
            c.health_check.interval_ms,
            c.health_check.rise,
            c.health_check.fall,
            c.health_check.timeout_ms
        ),
        (2000, 2, 5, 1000)
    );
    assert_eq!(c.health_check.check, CheckKind::Connect);
    assert_eq!(c.proxy.connect_timeout_ms, 4000);
    assert_eq!(c.proxy.client_timeout_ms, 50_000);
    let web = &c.services[0];
    assert_eq!(web.ports, vec![80, 8000, 8001, 8002]);
    assert_eq!(web.balance, Balance::WeightedLeastConnections);
    assert_eq!(web.persistence.cookie_name, "TANDEMSRV");
    assert_eq!(web.servers[0].weight, 100);
    assert_eq!(web.servers[0].port, None);
    assert_eq!(web.servers[0].target_port(8001), 8001);
    assert_eq!(web.servers[1].target_port(80), 8080);
    let db = &c.services[1];
    assert_eq!(db.mode, Mode::Tcp);
    assert_eq!(db.persistence.mode, PersistenceMode::LastSuccessful);
    assert_eq!(db.persistence.table_size, 100_000);
    assert_eq!(db.persistence.timeout_s, 1800);
    // Override merged over the defaults; derived timeout follows the shorter interval.
    assert_eq!(
        (
            db.health_check.interval_ms,
            db.health_check.rise,
            db.health_check.timeout_ms
        ),
        (500, 2, 250)
    );
}

#[test]
fn load_records_generations_and_check_does_not() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), CLUSTER);
    let checked = check_dir(dir.path()).unwrap();
    assert_eq!(checked.generation, 1);
    assert!(!dir.path().join("state").exists(), "check writes nothing");

    let first = load_dir(dir.path(), ExpiredCertificates::Serve).unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.digest, checked.digest);
    assert_eq!(first.cluster_text, CLUSTER);
    // Same meaning, different formatting: same digest, same generation.
    let reformatted = CLUSTER
        .replace(" = ", "=")
        .replace("[cluster]", "# comment\n[cluster]");
    write_pair(dir.path(), &reformatted);
    let again = load_dir(dir.path(), ExpiredCertificates::Serve).unwrap();
    assert_eq!((again.generation, &again.digest), (1, &first.digest));
    // A real change: new digest, next generation; check predicts it.
    let changed = CLUSTER.replace("weight = 50", "weight = 60");
    write_pair(dir.path(), &changed);
    assert_eq!(check_dir(dir.path()).unwrap().generation, 2);
    let second = load_dir(dir.path(), ExpiredCertificates::Serve).unwrap();
    assert_eq!(second.generation, 2);
    assert_ne!(second.digest, first.digest);
    let plan = ReloadPlan::new(&first.cluster, &second.cluster);
    assert_eq!(plan.changed(), vec!["web"]);
    let ServiceChange::Changed(d) = &plan.service("web").unwrap().change else {
        panic!("{plan:?}");
    };
    let web2 = d.servers.iter().find(|s| s.label == "web2").unwrap();
    assert_eq!(
        web2.change,
        ServerChange::Kept {
            weight: Some(60),
            check_restarts: false
        }
    );
    assert!(!d.listeners_changed);
}

#[test]
fn unwritable_state_dir_is_reported_at_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cluster.toml"), CLUSTER).unwrap();
    // state_dir is a regular file: cannot hold the generation record.
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, "").unwrap();
    fs::write(dir.path().join("node.toml"), node_toml(&blocker)).unwrap();
    let err = load_dir(dir.path(), ExpiredCertificates::Serve).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        err.errors[0]
            .message
            .contains("cannot record the config generation")
    );
    assert_eq!(err.errors[0].position(), "8:13");
}

#[test]
fn missing_files_are_reported_without_position() {
    let dir = tempfile::tempdir().unwrap();
    let err = check_dir(dir.path()).unwrap_err();
    assert_eq!(err.errors.len(), 2);
    assert!(err.errors.iter().all(|e| e.line.is_none()));
    assert!(err.to_string().contains("cannot read"));
}

#[test]
fn reload_plan_lists_added_removed_and_changed_services() {
    let old = parse_cluster_str(CLUSTER, "old").unwrap();
    let new_text = CLUSTER
        .replace("ports = [3306]", "ports = [3306, 3307]")
        .replace("label = \"web\"", "label = \"www\"")
        .replace(
            "[cluster]\nname = \"lab\"",
            "[cluster]\nname = \"lab\"\n[heartbeat]\nauto_failback = true",
        );
    let new = parse_cluster_str(&new_text, "new").unwrap();
    let plan = ReloadPlan::new(&old, &new);
    assert_eq!(plan.added(), vec!["www"]);
    assert_eq!(plan.removed(), vec!["web"]);
    assert_eq!(plan.changed(), vec!["db"]);
    match &plan.service("db").unwrap().change {
        ServiceChange::Changed(d) => assert!(d.listeners_changed),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.auto_failback, Some(true));
    assert!(!plan.health_defaults_changed);
    let shown = plan.to_string();
    assert!(shown.contains("1 service added (www)"), "{shown}");
    assert!(ReloadPlan::new(&old, &old).is_empty());
    assert_eq!(ReloadPlan::new(&old, &old).to_string(), "no changes");
}

#[test]
fn peer_config_is_checked_against_this_node() {
    let node = parse_node_str(&node_toml(Path::new("/tmp/x")), "node.toml", None).unwrap();
    let ok = parse_cluster_for_node(CLUSTER, "from-peer", &node);
    assert!(ok.is_ok());
    let bad = CLUSTER.replace(
        "vip = \"10.0.0.100\"\nports = [3306]",
        "vip = \"10.0.0.1\"\nports = [3306]",
    );
    let err = parse_cluster_for_node(&bad, "from-peer", &node).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(err.errors[0].to_string().starts_with("from-peer:"));
    assert!(err.errors[0].message.contains("this node's own address"));
}

#[test]
fn relative_paths_resolve_against_the_node_file_directory() {
    let text = "[node]\nname = \"a\"\nrole = \"secondary\"\naddress = \"::1\"\nmanage_vips = false\nsecret_file = \"keys/secret\"\nstate_dir = \"/abs/state\"\n[admin]\nlisten = \"[::1]:9090\"\nuser = \"ops\"\npassword_file = \"pw\"\n";
    let n = parse_node_str(text, "node.toml", Some(Path::new("/etc/tandem"))).unwrap();
    assert_eq!(n.node.secret_file, Path::new("/etc/tandem/keys/secret"));
    assert_eq!(n.node.state_dir, Path::new("/abs/state"));
    assert_eq!(
        n.admin.password_file.as_deref(),
        Some(Path::new("/etc/tandem/pw"))
    );
    assert_eq!(n.admin.listen.port(), 9090);
    assert_eq!(n.node.peer, None);
    assert_eq!((n.node.heartbeat_port, n.node.sync_port), (6694, 7778));
    // Defaults: secret next to node.toml, admin on loopback 9080.
    let minimal =
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\ninterface = \"eth0\"\n";
    let n = parse_node_str(minimal, "node.toml", Some(Path::new("/etc/tandem"))).unwrap();
    assert_eq!(n.node.secret_file, Path::new("/etc/tandem/secret"));
    assert_eq!(n.node.state_dir, Path::new("/var/lib/tandem"));
    assert_eq!(n.admin.listen.to_string(), "127.0.0.1:9080");
    assert!(n.node.manage_vips);
}

#[test]
fn warnings_do_not_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(
        dir.path(),
        &CLUSTER.replace(
            "[cluster]\nname = \"lab\"",
            "[cluster]\nname = \"lab\"\n[heartbeat]\ninterval_ms = 600\ndead_ms = 1000",
        ),
    );
    let loaded = check_dir(dir.path()).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("less than two heartbeat intervals")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("secret file not found")),
        "{warnings:?}"
    );
}

#[test]
fn tuning_defaults_to_what_the_daemon_always_did() {
    let minimal =
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n";
    let n = parse_node_str(minimal, "node.toml", None).unwrap();
    assert_eq!(n.tuning, Tuning::default());
    assert_eq!(n.tuning.http_engine, HttpEngineKind::Batched);
    assert_eq!(n.tuning.http_write_batching, HttpWriteBatching::Adaptive);
    assert_eq!(n.tuning.tcp_relay, TcpRelayKind::Auto);
    assert!(n.tuning.relay_yield && n.tuning.heartbeat_realtime);
    assert_eq!(n.tuning.workers, 0);
    assert!(n.tuning.worker_threads() >= 1);
}

#[test]
fn tuning_is_read_from_node_toml() {
    let text = "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n\
        [tuning]\nhttp_engine = \"hyper\"\nhttp_write_batching = \"always\"\nhttp_poll_us = 40\ntcp_relay = \"poll\"\nrelay_yield = false\nworkers = 3\nheartbeat_realtime = false\n";
    let n = parse_node_str(text, "node.toml", None).unwrap();
    assert_eq!(
        n.tuning,
        Tuning {
            http_engine: HttpEngineKind::Hyper,
            http_write_batching: HttpWriteBatching::Always,
            http_poll_us: 40,
            tcp_relay: TcpRelayKind::Poll,
            relay_yield: false,
            workers: 3,
            heartbeat_realtime: false,
        }
    );
    assert_eq!(n.tuning.worker_threads(), 3);
    for (name, kind) in [
        ("tasks", HttpEngineKind::Tasks),
        ("batched", HttpEngineKind::Batched),
    ] {
        let t = text.replace("\"hyper\"", &format!("\"{name}\""));
        assert_eq!(
            parse_node_str(&t, "node.toml", None)
                .unwrap()
                .tuning
                .http_engine,
            kind
        );
        assert_eq!(kind.name(), name);
    }
    for (name, kind) in [
        ("auto", TcpRelayKind::Auto),
        ("uring", TcpRelayKind::Uring),
        ("tasks", TcpRelayKind::Tasks),
    ] {
        let t = text.replace("\"poll\"", &format!("\"{name}\""));
        assert_eq!(
            parse_node_str(&t, "node.toml", None)
                .unwrap()
                .tuning
                .tcp_relay,
            kind
        );
        assert_eq!(kind.name(), name);
    }
}

#[test]
fn tuning_errors_are_all_reported_with_positions() {
    let text = "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n\
        [tuning]\nhttp_engine = 1\nworkers = -1\nfoo = true\nhttp_poll_us = 5000\n";
    let err = parse_node_str(text, "node.toml", None).unwrap_err();
    let got: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.iter()
            .any(|e| e.starts_with("node.toml:10:16: `http_poll_us` = 5000 is out of range")),
        "{got:?}"
    );
    assert!(
        got[0].starts_with("node.toml:7:15: `http_engine` must be a string"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("node.toml:8:11: `workers` = -1 is out of range"),
        "{got:?}"
    );
    assert!(
        got[2].starts_with("node.toml:9:1: unknown key `foo` in [tuning]"),
        "{got:?}"
    );
    let not_table = "tuning = 1\n[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n";
    let err = parse_node_str(not_table, "node.toml", None).unwrap_err();
    assert!(
        err.to_string().contains("`tuning` must be a table"),
        "{err}"
    );
}

#[test]
fn tuning_round_trips_through_serde() {
    let t = Tuning {
        http_engine: HttpEngineKind::Tasks,
        http_write_batching: HttpWriteBatching::Never,
        http_poll_us: 0,
        tcp_relay: TcpRelayKind::Uring,
        relay_yield: false,
        workers: 8,
        heartbeat_realtime: true,
    };
    let json = serde_json::to_value(t).unwrap();
    assert_eq!(json["http_engine"], "tasks");
    assert_eq!(json["tcp_relay"], "uring");
    assert_eq!(serde_json::from_value::<Tuning>(json).unwrap(), t);
    // A document without the section (an older serialised NodeConfig) gets the defaults.
    assert_eq!(
        serde_json::from_str::<Tuning>("{}").unwrap(),
        Tuning::default()
    );
}
