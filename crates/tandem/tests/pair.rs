#![allow(clippy::unwrap_used)]
//! Two `tandem run` processes on loopback (127.0.0.71 primary, 127.0.0.72 secondary, VIPs not
//! managed): election, config push over TCP 7778, the secondary refusing a local edit, a pushed
//! config that fails validation on the secondary, takeover and release through the CLI, and the
//! node-local file never reaching the peer.

mod common;

use common::{Node, terminate, text, wait_for};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

impl Node {
    fn sigterm(&mut self) {
        if let Some(child) = self.child.as_mut() {
            assert!(terminate(child).is_some(), "no exit after SIGTERM");
            self.child = None;
        }
    }
}

fn cluster_toml(extra: &str) -> String {
    cluster_toml_with(HEARTBEAT_FAST, extra)
}

const HEARTBEAT_FAST: &str = "interval_ms = 50\ndead_ms = 250\nwarn_ms = 150\ninit_dead_ms = 500";

fn cluster_toml_with(heartbeat: &str, extra: &str) -> String {
    format!(
        r#"[cluster]
name = "pair-test"
[heartbeat]
{heartbeat}
[health_check]
interval_ms = 200
rise = 1
fall = 2
[[service]]
label = "web"
vip = "127.0.0.75"
ports = [41080]
mode = "tcp"
[[service.server]]
label = "ctl-1"
address = "127.0.0.76"
port = 41080
{extra}"#
    )
}

fn node(root: &Path, name: &str, role: &str, address: &str, peer: &str, admin: u16) -> Node {
    node_on(root, name, role, (address, peer), admin, (46694, 47778))
}

/// A node of a pair whose heartbeat and sync ports are `ports` (so two pairs can run at once).
fn node_on(
    root: &Path,
    name: &str,
    role: &str,
    (address, peer): (&str, &str),
    admin: u16,
    (heartbeat_port, sync_port): (u16, u16),
) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.toml"), cluster_toml("")).unwrap();
    std::fs::copy(root.join("secret"), dir.join("secret")).unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"{name}\"\nrole = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"\n\
             peer = \"{peer}\"\nheartbeat_port = {heartbeat_port}\nsync_port = {sync_port}\nmanage_vips = false\n\
             state_dir = \"state\"\n[admin]\nlisten = \"{address}:{admin}\"\nsocket = \"admin.sock\"\n\
             [snmp]\ncommunity = \"node-local-marker-{name}\"\n"
        ),
    )
    .unwrap();
    Node::new(dir)
}

#[test]
fn a_pair_elects_pushes_config_and_hands_over() {
    let root = tempfile::tempdir().unwrap();
    common::keygen(&root.path().join("secret"));
    let mut lb1 = node(
        root.path(),
        "lb1",
        "primary",
        "127.0.0.71",
        "127.0.0.72",
        49080,
    );
    let mut lb2 = node(
        root.path(),
        "lb2",
        "secondary",
        "127.0.0.72",
        "127.0.0.71",
        49080,
    );
    lb1.start(&[]);
    lb2.start(&[]);

    wait_for("one active, one standby", || {
        lb1.status()["node"]["state"] == "active" && lb2.status()["node"]["state"] == "standby"
    });
    // The heartbeat carries both digests at once; the sync session follows within its first dial.
    wait_for("config in sync and the sync session up", || {
        let (s1, s2) = (lb1.status(), lb2.status());
        s1["config"]["sync"] == "in sync"
            && s2["config"]["sync"] == "in sync"
            && s2["replication"]["connected"] == true
    });
    assert_eq!(lb2.status()["node"]["peer"]["name"], "lb1");

    // A reload on the primary reaches the secondary: same generation and digest, file written.
    let edited = cluster_toml(
        "[[service]]\nlabel = \"extra\"\nvip = \"127.0.0.75\"\nports = [41081]\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.76\"\n",
    );
    std::fs::write(lb1.dir.join("cluster.toml"), &edited).unwrap();
    let output = lb1.cli(&["reload"]);
    assert!(output.status.success(), "{}", text(&output));
    let primary = lb1.status()["config"].clone();
    wait_for("the secondary to apply the pushed config", || {
        let secondary = lb2.status()["config"].clone();
        secondary["digest"] == primary["digest"] && secondary["generation"] == primary["generation"]
    });
    assert_eq!(
        std::fs::read_to_string(lb2.dir.join("cluster.toml")).unwrap(),
        edited
    );
    assert!(lb2.dir.join("cluster.toml.prev").exists());
    assert_eq!(lb2.status()["services"].as_array().unwrap().len(), 2);
    // node.toml never travelled: the secondary's copy has only its own marker.
    let lb2_node = std::fs::read_to_string(lb2.dir.join("node.toml")).unwrap();
    assert!(!lb2_node.contains("node-local-marker-lb1"));

    // A local edit on the secondary is refused and changes nothing.
    std::fs::write(lb2.dir.join("cluster.toml"), cluster_toml("")).unwrap();
    let output = lb2.cli(&["reload"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("primary"), "{}", text(&output));
    assert_eq!(lb2.status()["config"]["digest"], primary["digest"]);
    std::fs::write(lb2.dir.join("cluster.toml"), &edited).unwrap();

    // A config that passes the primary but fails on the secondary's own checks (a VIP equal to
    // the secondary's address) is refused there: both report out of sync, nothing changes on lb2.
    let clash = cluster_toml(
        "[[service]]\nlabel = \"clash\"\nvip = \"127.0.0.72\"\nports = [41082]\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.76\"\n",
    );
    std::fs::write(lb1.dir.join("cluster.toml"), &clash).unwrap();
    let output = lb1.cli(&["reload"]);
    if output.status.success() {
        wait_for("both nodes to report out of sync", || {
            lb1.status()["config"]["sync"]
                .as_str()
                .is_some_and(|s| s.starts_with("config out of sync"))
                && lb2.status()["config"]["digest"] == primary["digest"]
        });
        assert_eq!(
            std::fs::read_to_string(lb2.dir.join("cluster.toml")).unwrap(),
            edited
        );
        std::fs::write(lb1.dir.join("cluster.toml"), &edited).unwrap();
        let output = lb1.cli(&["reload"]);
        assert!(output.status.success(), "{}", text(&output));
        wait_for("back in sync", || {
            lb1.status()["config"]["sync"] == "in sync"
        });
    }

    // takeover on the secondary, then release back: always exactly one active.
    let output = lb2.cli(&["takeover"]);
    assert!(output.status.success(), "{}", text(&output));
    wait_for("lb2 active, lb1 standby", || {
        lb2.status()["node"]["state"] == "active" && lb1.status()["node"]["state"] == "standby"
    });
    let output = lb2.cli(&["release"]);
    assert!(output.status.success(), "{}", text(&output));
    wait_for("lb1 active again", || {
        lb1.status()["node"]["state"] == "active" && lb2.status()["node"]["state"] == "standby"
    });

    // A clean stop of the active node hands over at once.
    let stopped = Instant::now();
    lb1.sigterm();
    wait_for("lb2 active after lb1 stopped", || {
        lb2.status()["node"]["state"] == "active"
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "handover took {:?}",
        stopped.elapsed()
    );

    // The secondary restarted while the primary is down runs its last synced config.
    lb2.sigterm();
    lb2.start(&[]);
    wait_for("lb2 active alone with the synced config", || {
        let status = lb2.status();
        status["node"]["state"] == "active" && status["config"]["digest"] == primary["digest"]
    });
}

/// New `[heartbeat]` timings reach the election of both nodes without a restart: the pair starts at 50/250 ms,
/// the primary's reload raises the dead time to 4 s, then the primary is frozen (SIGSTOP) for 1.5 s. Under the
/// old timings the secondary would take over after 250 ms; under the new ones it must stay standby.
#[test]
fn heartbeat_timings_change_live_on_both_nodes() {
    let root = tempfile::tempdir().unwrap();
    common::keygen(&root.path().join("secret"));
    let pair = (("127.0.0.81", "127.0.0.82"), (46695, 47779));
    let mut lb1 = node_on(root.path(), "lb1", "primary", pair.0, 49081, pair.1);
    let mut lb2 = node_on(
        root.path(),
        "lb2",
        "secondary",
        (pair.0.1, pair.0.0),
        49081,
        pair.1,
    );
    lb1.start(&[]);
    lb2.start(&[]);
    wait_for("one active, one standby, config in sync", || {
        let (s1, s2) = (lb1.status(), lb2.status());
        s1["node"]["state"] == "active"
            && s2["node"]["state"] == "standby"
            && s1["config"]["sync"] == "in sync"
            && s2["config"]["sync"] == "in sync"
    });

    let slow = cluster_toml_with(
        "interval_ms = 100\ndead_ms = 4000\nwarn_ms = 2000\ninit_dead_ms = 4000",
        "",
    );
    std::fs::write(lb1.dir.join("cluster.toml"), &slow).unwrap();
    let output = lb1.cli(&["reload"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("heartbeat"), "{}", text(&output));
    let primary = lb1.status()["config"].clone();
    wait_for("the secondary to apply the pushed timings", || {
        lb2.status()["config"]["digest"] == primary["digest"]
    });
    // The secondary's election takes the timings from its command queue right after the push; a heartbeat of
    // the primary at the new cadence confirms the primary is alive under them too.
    std::thread::sleep(Duration::from_millis(300));

    let pid = lb1.child.as_ref().unwrap().id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let frozen = Instant::now();
    let mut secondary_states = Vec::new();
    while frozen.elapsed() < Duration::from_millis(1500) {
        secondary_states.push(lb2.status()["node"]["state"].clone());
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(
        secondary_states.iter().all(|s| s == "standby"),
        "the secondary left standby while the primary was frozen for 1.5 s under a 4 s dead time: {secondary_states:?}"
    );
    wait_for("lb1 still active after it resumed", || {
        lb1.status()["node"]["state"] == "active" && lb2.status()["node"]["state"] == "standby"
    });
}

/// An outgoing connection that took the sync port as its local port (a health check on a host whose ephemeral
/// range covers it) stops the listening node's start with the reason and the sysctl that prevents it; the CI
/// lab met this as a daemon that "exited silently" (daemon/ports.rs).
#[test]
fn a_sync_port_held_by_an_outgoing_connection_stops_the_start_with_the_remedy() {
    let root = tempfile::tempdir().unwrap();
    common::keygen(&root.path().join("secret"));
    // 127.0.0.74 > 127.0.0.73: lb2 is the side that listens (the other dials).
    let (address, peer, sync_port) = ("127.0.0.74", "127.0.0.73", 47791);
    let mut lb2 = node_on(
        root.path(),
        "lb2",
        "secondary",
        (address, peer),
        49083,
        (46695, sync_port),
    );
    // What an ephemeral port looks like: bound by connect()'s caller without SO_REUSEADDR, connected.
    let server = std::net::TcpListener::bind("127.0.0.73:47792").unwrap();
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    holder
        .bind(
            &format!("{address}:{sync_port}")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    holder
        .connect(
            &"127.0.0.73:47792"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let _accepted = server.accept().unwrap();

    lb2.start(&[]);
    let mut child = lb2.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon kept running: {}",
            lb2.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = lb2.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "starting the sync session on {address}:{sync_port}"
        )) && log.contains("Address already in use"),
        "{log}"
    );
    // Default ranges (32768-60999) cover 47791: the remedy is named; a host with another range gets the other hint.
    assert!(
        log.contains("net.ipv4.ip_local_reserved_ports=")
            || log.contains("another process listens there"),
        "{log}"
    );
    // A reset, not a FIN: no TIME_WAIT keeps the port from the next run of this test.
    holder.set_linger(Some(Duration::ZERO)).unwrap();
    drop(holder);
}
