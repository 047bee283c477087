#![allow(clippy::unwrap_used)]
//! node.toml `[hooks]` end to end on a loopback pair: hook scripts in a temp dir record their arguments and
//! environment when a node becomes active or standby and when the peer is found or lost; a hook that sleeps past
//! its timeout is killed with its children while the election goes on, and the hook queued behind it runs next;
//! a reload swaps the commands without a restart.

mod common;

use common::{Node, tandem, text, wait_for};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::time::Duration;

impl Node {
    fn state(&self) -> String {
        self.status()["node"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn script(path: &Path, body: &str) -> String {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// One recorded hook call: when (ms since the epoch), its arguments after the output file, and its environment.
#[derive(Debug, Clone)]
struct Call {
    at_ms: u128,
    args: Vec<String>,
    env: String,
}

fn calls(file: &Path) -> Vec<Call> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let at_ms = parts.next()?.parse().ok()?;
            let args = parts.next()?.split('|').map(str::to_string).collect();
            let env = parts.next()?.to_string();
            Some(Call { at_ms, args, env })
        })
        .collect()
}

fn find(file: &Path, event: &str) -> Option<Call> {
    calls(file)
        .into_iter()
        .find(|c| c.args.first().map(String::as_str) == Some(event))
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

const CLUSTER: &str = "[cluster]\nname = \"hooks-test\"\n[heartbeat]\ninterval_ms = 50\ndead_ms = 250\nwarn_ms = 150\n\
    init_dead_ms = 500\n[health_check]\ninterval_ms = 200\nrise = 1\nfall = 2\n\
    [[service]]\nlabel = \"web\"\nvip = \"127.0.0.165\"\nports = [38161]\nmode = \"tcp\"\n\
    [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.166\"\nport = 38161\n";

fn node_toml(name: &str, role: &str, address: &str, peer: &str, hooks: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"\npeer = \"{peer}\"\n\
         heartbeat_port = 36161\nsync_port = 37161\nmanage_vips = false\nstate_dir = \"state\"\n\
         [admin]\nlisten = \"{address}:29161\"\nsocket = \"admin.sock\"\n\
         [tuning]\nworkers = 1\nheartbeat_realtime = false\n[hooks]\n{hooks}"
    )
}

fn node(root: &Path, name: &str, node_toml: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.toml"), CLUSTER).unwrap();
    std::fs::copy(root.join("secret"), dir.join("secret")).unwrap();
    std::fs::write(dir.join("node.toml"), node_toml).unwrap();
    Node::new(dir)
}

#[test]
fn hooks_run_on_transitions_with_arguments_and_environment_and_a_slow_one_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let keygen = tandem()
        .arg("keygen")
        .arg(r.join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));

    // record.sh OUT EVENT STATE REASON: one line per call (time, arguments, environment).
    let record = script(
        &r.join("record.sh"),
        "out=$1; shift\n\
         printf '%s\\t%s|%s|%s\\t%s,%s,%s,%s,%s,%s\\n' \"$(date +%s%3N)\" \"$1\" \"$2\" \"$3\" \
         \"$TANDEM_EVENT\" \"$TANDEM_STATE\" \"$TANDEM_REASON\" \"$TANDEM_PEER\" \"$TANDEM_NODE\" \"${NOTIFY_SOCKET-unset}\" >> \"$out\"\n\
         echo \"recorded $1\"\n",
    );
    // slow.sh PIDS: notes its pid and its child's, then sleeps far past its timeout.
    let slow = script(
        &r.join("slow.sh"),
        "sleep 30 &\necho \"$(date +%s%3N) $$ $!\" > \"$1\"\nwait\n",
    );
    let (lb1_events, lb2_events, slow_pids) = (
        r.join("lb1.events"),
        r.join("lb2.events"),
        r.join("slow.pids"),
    );
    let lb1_hooks = format!(
        "on_active = [\"{slow}\", \"{}\"]\non_peer_found = [\"{record}\", \"{}\"]\n\
         on_peer_lost = [\"{record}\", \"{}\"]\ntimeout_ms = 500\n",
        slow_pids.display(),
        lb1_events.display(),
        lb1_events.display()
    );
    let lb2_hooks = format!(
        "on_active = [\"{record}\", \"{0}\"]\non_standby = [\"{record}\", \"{0}\"]\n\
         on_peer_found = [\"{record}\", \"{0}\"]\non_peer_lost = [\"{record}\", \"{0}\"]\n",
        lb2_events.display()
    );
    let mut lb1 = node(
        r,
        "lb1",
        &node_toml("lb1", "primary", "127.0.0.161", "127.0.0.162", &lb1_hooks),
    );
    let mut lb2 = node(
        r,
        "lb2",
        &node_toml("lb2", "secondary", "127.0.0.162", "127.0.0.161", &lb2_hooks),
    );

    // lb1 alone: active after init_dead_ms, and its slow on_active hook starts.
    lb1.start(&[]);
    wait_for("lb1's slow on_active hook to start", || {
        std::fs::read_to_string(&slow_pids).is_ok_and(|t| t.split_whitespace().count() == 3)
    });
    let noted = std::fs::read_to_string(&slow_pids).unwrap();
    let noted: Vec<&str> = noted.split_whitespace().collect();
    let slow_started_ms: u128 = noted[0].parse().unwrap();
    let pids: Vec<i32> = noted[1..].iter().map(|p| p.parse().unwrap()).collect();

    // While it sleeps, the election goes on: the peer starts, is found, and settles as standby behind an active
    // lb1 within the hook's timeout; lb1 answers its CLI all along.
    lb2.start(&[("NOTIFY_SOCKET", "/nonexistent/notify.sock")]);
    assert_eq!(lb1.state(), "active");
    wait_for("lb2 standby", || lb2.state() == "standby");
    assert_eq!(lb1.state(), "active");

    // The slow hook and its child are killed after 500 ms (SIGTERM to the group), and the peer-found hook queued
    // behind it runs right after, not 30 s later.
    wait_for("lb1's peer-found hook", || {
        find(&lb1_events, "peer-found").is_some()
    });
    let found = find(&lb1_events, "peer-found").unwrap();
    let waited = found.at_ms.saturating_sub(slow_started_ms);
    assert!(
        (450..3000).contains(&waited),
        "peer-found ran {waited} ms after the slow hook started (its timeout is 500 ms)"
    );
    for pid in &pids {
        wait_for("the slow hook's processes to be gone", || !alive(*pid));
    }
    wait_for("the timeout in lb1's log", || {
        lb1.log().contains("hook timed out")
    });
    let log = lb1.log();
    assert!(log.contains("on_active"), "{log}");
    assert!(
        log.contains("recorded peer-found"),
        "the hook's output is logged: {log}"
    );
    assert_eq!(found.args, ["peer-found", "active", "peer lb2 heard"]);
    assert_eq!(found.env, "peer-found,active,peer lb2 heard,lb2,lb1,unset");

    // lb2: peer found and standby, with the reason, its own name, the peer's, and no systemd socket.
    wait_for("lb2's standby hook", || {
        find(&lb2_events, "standby").is_some()
    });
    let standby = find(&lb2_events, "standby").unwrap();
    assert_eq!(standby.args[..2], ["standby", "standby"]);
    assert!(!standby.args[2].is_empty(), "{standby:?}");
    assert_eq!(
        standby.env,
        format!("standby,standby,{},lb1,lb2,unset", standby.args[2])
    );
    assert!(
        find(&lb2_events, "peer-found").is_some(),
        "{:?}",
        calls(&lb2_events)
    );

    // A reload swaps the commands: lb1's on_peer_lost now writes elsewhere.
    let after_reload = r.join("lb1.after-reload");
    let reloaded = lb1_hooks.replace(
        &format!(
            "on_peer_lost = [\"{record}\", \"{}\"]",
            lb1_events.display()
        ),
        &format!(
            "on_peer_lost = [\"{record}\", \"{}\"]",
            after_reload.display()
        ),
    );
    assert_ne!(reloaded, lb1_hooks);
    std::fs::write(
        lb1.dir.join("node.toml"),
        node_toml("lb1", "primary", "127.0.0.161", "127.0.0.162", &reloaded),
    )
    .unwrap();
    let output = lb1.cli(&["reload"]);
    assert!(output.status.success(), "{}", text(&output));

    // lb2 crashes: lb1 loses its peer (still active); the reloaded hook says so.
    let mut child = lb2.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("lb1's peer-lost hook", || {
        find(&after_reload, "peer-lost").is_some()
    });
    let lost = find(&after_reload, "peer-lost").unwrap();
    assert_eq!(lost.args[..2], ["peer-lost", "active"]);
    assert!(lost.args[2].contains("lb2"), "{lost:?}");
    assert!(lost.args[2].contains("dead"), "{lost:?}");
    assert!(
        find(&lb1_events, "peer-lost").is_none(),
        "the old command ran"
    );

    // lb2 comes back (standby again); its first run recorded standby and peer-found, the second does too.
    lb2.start(&[]);
    wait_for("lb2 standby again with its hooks", || {
        calls(&lb2_events)
            .iter()
            .filter(|c| c.args.first().map(String::as_str) == Some("standby"))
            .count()
            == 2
    });
    assert_eq!(lb1.state(), "active");
}

/// A node whose VIPs cannot be added goes to fault and `on_fault` says why. The interface does not exist, so no
/// address is touched anywhere (every VIP operation fails at the interface lookup).
#[test]
fn on_fault_names_the_vip_error() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let events = r.join("fault.events");
    let record = script(
        &r.join("record.sh"),
        "out=$1; shift\n\
         printf '%s\\t%s|%s|%s\\t%s,%s,%s,%s\\n' \"$(date +%s%3N)\" \"$1\" \"$2\" \"$3\" \
         \"$TANDEM_EVENT\" \"$TANDEM_STATE\" \"$TANDEM_PEER\" \"$TANDEM_NODE\" >> \"$out\"\n",
    );
    let dir = r.join("solo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        CLUSTER
            .replace("127.0.0.165", "127.0.0.167")
            .replace("38161", "38167"),
    )
    .unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"tnd-nohook0\"\naddress = \"127.0.0.168\"\n\
             heartbeat_port = 36168\nsync_port = 37168\nmanage_vips = true\nstate_dir = \"state\"\n\
             [admin]\nlisten = \"127.0.0.168:29168\"\nsocket = \"admin.sock\"\n\
             [tuning]\nworkers = 1\nheartbeat_realtime = false\n\
             [hooks]\non_fault = [\"{record}\", \"{0}\"]\non_active = [\"{record}\", \"{0}\"]\n",
            events.display()
        ),
    )
    .unwrap();
    let mut solo = Node::new(dir);
    solo.start(&[]);
    wait_for("the fault hook", || find(&events, "fault").is_some());
    let fault = find(&events, "fault").unwrap();
    assert_eq!(fault.args[..2], ["fault", "fault"]);
    assert!(
        fault.args[2].contains("cannot add VIP 127.0.0.167")
            && fault.args[2].contains("tnd-nohook0"),
        "{fault:?}"
    );
    assert_eq!(fault.env, "fault,fault,,solo");
    assert_eq!(solo.state(), "fault");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls(&events).len(), 1, "{:?}", calls(&events));
}
