#![allow(clippy::unwrap_used)]
//! Admin states persist and follow the cluster, on a live pair on loopback (127.0.0.101 / 127.0.0.102), driven
//! through the CLI as an operator would: a drain on one node shows on the other (replicated); a node restarted
//! keeps it (restored from state_dir); a change made while a node was down wins when it comes back; a corrupt
//! state file is set aside and the node gets the states from its peer.

mod common;

use common::{Node, tandem};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl Node {
    fn setup(root: &Path, name: &str, role: &str, address: &str, peer: &str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(root.join("secret"), dir.join("secret")).unwrap();
        std::fs::write(
            dir.join("cluster.toml"),
            "[cluster]\nname = \"admin-states-test\"\n[heartbeat]\ninterval_ms = 50\ndead_ms = 250\n\
             warn_ms = 150\ninit_dead_ms = 500\n[health_check]\ninterval_ms = 200\nrise = 1\nfall = 2\n\
             [[service]]\nlabel = \"db\"\nvip = \"127.0.0.103\"\nports = [41190]\nmode = \"tcp\"\n\
             [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.104\"\nport = 41190\n\
             [[service.server]]\nlabel = \"ctl-2\"\naddress = \"127.0.0.105\"\nport = 41190\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("node.toml"),
            format!(
                "[node]\nname = \"{name}\"\nrole = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"\n\
                 peer = \"{peer}\"\nheartbeat_port = 46796\nsync_port = 47880\nmanage_vips = false\n\
                 state_dir = \"state\"\n[admin]\nlisten = \"{address}:49182\"\nsocket = \"admin.sock\"\n"
            ),
        )
        .unwrap();
        let mut node = Node::new(dir);
        node.start(&[]);
        node
    }

    /// SIGKILL: nothing of the process's memory survives, only what it wrote.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state/admin-states.json")
    }
}

/// `(admin_state, admin_source.via, admin_source.set_by)` of server `server` of service db.
fn server_state(status: &Value, server: &str) -> (String, String, String) {
    let servers = status["services"][0]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(found) = servers.iter().find(|s| s["label"] == server) else {
        return Default::default();
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        text(&found["admin_state"]),
        text(&found["admin_source"]["via"]),
        text(&found["admin_source"]["set_by"]),
    )
}

/// Polls `node` (bounded) until server `server` reads `want`; returns what it read last.
fn wait_for(node: &Node, server: &str, want: (&str, &str, &str)) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = server_state(&node.status(), server);
        if (seen.0.as_str(), seen.1.as_str(), seen.2.as_str()) == want || Instant::now() > deadline
        {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expect(seen: (&str, &str, &str)) -> (String, String, String) {
    (seen.0.into(), seen.1.into(), seen.2.into())
}

fn connected(node: &Node) -> bool {
    node.status()["replication"]["connected"] == Value::Bool(true)
}

fn wait_connected(a: &Node, b: &Node) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(connected(a) && connected(b)) {
        assert!(
            Instant::now() < deadline,
            "the pair never connected\nlb1:\n{}\nlb2:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_drain_follows_the_peer_survives_restarts_and_the_later_change_wins() {
    let root = tempfile::tempdir().unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(root.path().join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let mut lb1 = Node::setup(root.path(), "lb1", "primary", "127.0.0.101", "127.0.0.102");
    let mut lb2 = Node::setup(
        root.path(),
        "lb2",
        "secondary",
        "127.0.0.102",
        "127.0.0.101",
    );
    wait_connected(&lb1, &lb2);

    // An operator drains ctl-1 on lb1: lb2 has it from the peer, lb1 from its operator.
    let drain = lb1.cli(&["server", "drain", "db", "ctl-1"]);
    assert!(drain.status.success(), "{drain:?}");
    assert_eq!(
        wait_for(&lb2, "ctl-1", ("drain", "replicated", "lb1")),
        expect(("drain", "replicated", "lb1")),
        "lb2 log:\n{}",
        lb2.log()
    );
    assert_eq!(
        server_state(&lb1.status(), "ctl-1"),
        expect(("drain", "operator", "lb1"))
    );
    // An unknown server is refused and leaves nothing behind.
    let typo = lb1.cli(&["server", "drain", "db", "ctl-9"]);
    assert!(!typo.status.success());
    assert!(
        !std::fs::read_to_string(lb1.state_file())
            .unwrap()
            .contains("ctl-9")
    );

    // lb2 crashes and comes back: the drain is restored from its state_dir.
    assert!(
        std::fs::read_to_string(lb2.state_file())
            .unwrap()
            .contains("\"drain\"")
    );
    lb2.crash();
    lb2.start(&[]);
    assert_eq!(
        wait_for(&lb2, "ctl-1", ("drain", "restored", "lb1")),
        expect(("drain", "restored", "lb1")),
        "lb2 log:\n{}",
        lb2.log()
    );
    wait_connected(&lb1, &lb2);

    // While lb2 is down, ctl-1 goes back online on lb1 and ctl-2 is halted: lb2 restores its older drain, then
    // the full exchange brings the later changes.
    lb2.crash();
    assert!(
        lb1.cli(&["server", "online", "db", "ctl-1"])
            .status
            .success()
    );
    assert!(lb1.cli(&["server", "halt", "db", "ctl-2"]).status.success());
    lb2.start(&[]);
    assert_eq!(
        wait_for(&lb2, "ctl-1", ("online", "replicated", "lb1")),
        expect(("online", "replicated", "lb1")),
        "lb2 log:\n{}",
        lb2.log()
    );
    assert_eq!(
        wait_for(&lb2, "ctl-2", ("halt", "replicated", "lb1")),
        expect(("halt", "replicated", "lb1"))
    );

    // lb1's state file is corrupted while it is down: it starts anyway, sets the file aside and learns the
    // states back from lb2.
    lb1.crash();
    std::fs::write(
        lb1.state_file(),
        b"{\"format\": 1, \"node\": \"lb1\", \"states\": [{",
    )
    .unwrap();
    lb1.start(&[]);
    assert_eq!(
        wait_for(&lb1, "ctl-2", ("halt", "replicated", "lb1")),
        expect(("halt", "replicated", "lb1")),
        "lb1 log:\n{}",
        lb1.log()
    );
    assert!(lb1.dir.join("state/admin-states.json.corrupt").exists());
    assert!(
        lb1.log().contains("admin states file ignored"),
        "{}",
        lb1.log()
    );
    // And it saved them again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(lb1.state_file())
        .unwrap_or_default()
        .contains("\"halt\"")
    {
        assert!(
            Instant::now() < deadline,
            "lb1 never saved the replicated states"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
