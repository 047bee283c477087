#![allow(clippy::unwrap_used)]
//! `tandem pair` as an operator runs it: `--accept` on the secondary (its printed code read from
//! its output), `--peer` on the primary with that code, both on loopback (127.0.0.2xx) with
//! temporary config directories. Right code: the same secret and cluster.toml on both, the peer
//! fields written and everything else in node.toml kept; wrong code: both fail and nothing is
//! written; a node already in a cluster: refused without --force.

mod common;

use common::{KillOnDrop, output_with_input, tandem, text};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = r#"# the cluster, edited on the primary
[cluster]
name = "pairing-test"
[heartbeat]
interval_ms = 50
dead_ms = 250
warn_ms = 150
init_dead_ms = 500
[[service]]
label = "web"
vip = "127.0.0.210"
ports = [41090]
mode = "tcp"
[[service.server]]
label = "ctl-1"
address = "127.0.0.209"
port = 41090
"#;

/// A fresh node: node.toml without a peer, no secret; `cluster` only on the primary.
fn fresh_node(root: &Path, name: &str, role: &str, address: &str, cluster: bool) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "# {name}: this node only (never replicated)\n[node]\nname = \"{name}\"   # the host's name\n\
             role = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"  # heartbeat and sync\n\
             heartbeat_port = 48694\nsync_port = 48778\nmanage_vips = false\nstate_dir = \"state\"\n\n\
             # admin: node-local\n[admin]\nlisten = \"{address}:48080\"\nsocket = \"admin.sock\"\n\
             [snmp]\ncommunity = \"node-local-marker-{name}\"\n"
        ),
    )
    .unwrap();
    if cluster {
        std::fs::write(dir.join("cluster.toml"), CLUSTER).unwrap();
    }
    dir
}

/// `tandem pair --accept` running, its stdout in a file.
struct Acceptor {
    child: KillOnDrop,
    out: PathBuf,
}

impl Acceptor {
    fn start(dir: &Path, extra: &[&str]) -> Acceptor {
        let out = dir.join("accept.out");
        let child = tandem()
            .arg("--config-dir")
            .arg(dir)
            .args(["pair", "--accept", "--wait", "30"])
            .args(extra)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join("accept.err")).unwrap())
            .spawn()
            .unwrap();
        Acceptor {
            child: KillOnDrop(Some(child)),
            out,
        }
    }

    /// The code as the operator reads it off the screen.
    fn code(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let shown = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(line) = shown.lines().find(|l| l.starts_with("one-time code: ")) {
                return line["one-time code: ".len()..].trim().to_string();
            }
            if let Some(status) = self.child.0.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "acceptor exited {status} before showing a code: {}",
                    self.output()
                );
            }
            assert!(Instant::now() < deadline, "no code shown: {shown}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        let dir = self.out.parent().unwrap();
        format!(
            "{}{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(dir.join("accept.err")).unwrap_or_default()
        )
    }

    /// Waits for the exit; returns (success, stdout + stderr).
    fn finish(&mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.0.as_mut().unwrap().try_wait().unwrap() {
                self.child.0 = None;
                return (status.success(), self.output());
            }
            assert!(Instant::now() < deadline, "acceptor still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }
}

/// `tandem pair --peer` on the primary, the code piped on standard input as a script does.
fn pair_peer(dir: &Path, peer: &str, code: &str, extra: &[&str]) -> Output {
    output_with_input(
        tandem()
            .arg("--config-dir")
            .arg(dir)
            .args(["pair", "--peer", peer])
            .args(extra),
        &format!("{code}\n"),
    )
}

fn check_ok(dir: &Path) {
    let out = tandem()
        .arg("--config-dir")
        .arg(dir)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "tandem check: {}", text(&out));
}

/// Every file name in `dir` (nothing staged may be left behind).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("accept."))
        .collect();
    names.sort();
    names
}

/// A valid code (its check digit right) that is not `shown`: what a mistaken or guessing
/// primary sends.
fn another_code(shown: &str) -> String {
    loop {
        let code = tandem_pair::Code::generate(&ring::rand::SystemRandom::new())
            .unwrap()
            .to_string();
        if code != shown {
            return code;
        }
    }
}

#[test]
fn the_right_code_pairs_two_fresh_nodes() {
    let root = tempfile::tempdir().unwrap();
    let primary = fresh_node(root.path(), "lb1", "primary", "127.0.0.201", true);
    let secondary = fresh_node(root.path(), "lb2", "primary", "127.0.0.202", false);
    let primary_node_before = std::fs::read_to_string(primary.join("node.toml")).unwrap();
    let secondary_node_before = std::fs::read_to_string(secondary.join("node.toml")).unwrap();

    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();
    assert!(acceptor.output().contains("tandem pair --peer 127.0.0.202"));
    // Through --code-file this time (stdin is used by the other tests).
    let code_file = root.path().join("code");
    std::fs::write(&code_file, format!("{code}\n")).unwrap();
    let out = tandem()
        .arg("--config-dir")
        .arg(&primary)
        .args(["pair", "--peer", "127.0.0.202", "--code-file"])
        .arg(&code_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "primary: {}", text(&out));
    assert!(
        text(&out).contains("paired with lb2 (127.0.0.202)"),
        "{}",
        text(&out)
    );
    let (ok, shown) = acceptor.finish();
    assert!(ok, "secondary: {shown}");
    assert!(shown.contains("paired with lb1 (127.0.0.201)"), "{shown}");

    // The same secret on both, private, made like `tandem keygen` (64 hex digits).
    let secret = std::fs::read_to_string(primary.join("secret")).unwrap();
    assert_eq!(secret.trim_end().len(), 64);
    assert!(secret.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::read_to_string(secondary.join("secret")).unwrap(),
        secret
    );
    for dir in [&primary, &secondary] {
        let mode = std::fs::metadata(dir.join("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", dir.display());
    }
    // cluster.toml byte for byte, comments included.
    assert_eq!(
        std::fs::read_to_string(secondary.join("cluster.toml")).unwrap(),
        CLUSTER
    );

    // node.toml: role and peer set, every other line as it was.
    let primary_node = std::fs::read_to_string(primary.join("node.toml")).unwrap();
    let secondary_node = std::fs::read_to_string(secondary.join("node.toml")).unwrap();
    assert!(
        primary_node.contains("role = \"primary\"\n"),
        "{primary_node}"
    );
    assert!(
        primary_node.contains("peer = \"127.0.0.202\"  # lb2"),
        "{primary_node}"
    );
    assert!(
        secondary_node.contains("role = \"secondary\"\n"),
        "{secondary_node}"
    );
    assert!(
        secondary_node.contains("peer = \"127.0.0.201\"  # lb1"),
        "{secondary_node}"
    );
    for (before, after) in [
        (&primary_node_before, &primary_node),
        (&secondary_node_before, &secondary_node),
    ] {
        let kept: Vec<&str> = before
            .lines()
            .filter(|l| !l.starts_with("role ="))
            .collect();
        for line in &kept {
            assert!(after.lines().any(|l| l == *line), "lost {line:?}:\n{after}");
        }
        assert_eq!(after.lines().count(), before.lines().count() + 1, "{after}");
    }
    assert!(secondary_node.contains("# admin: node-local"));
    assert!(secondary_node.contains("community = \"node-local-marker-lb2\""));

    // What was written passes `tandem check`, and nothing staged is left.
    check_ok(&primary);
    check_ok(&secondary);
    assert_eq!(names(&primary), ["cluster.toml", "node.toml", "secret"]);
    assert_eq!(names(&secondary), ["cluster.toml", "node.toml", "secret"]);
}

#[test]
fn a_typo_keeps_the_code_and_a_wrong_code_writes_nothing_on_either_side() {
    let root = tempfile::tempdir().unwrap();
    let primary = fresh_node(root.path(), "lb1", "primary", "127.0.0.203", true);
    let secondary = fresh_node(root.path(), "lb2", "secondary", "127.0.0.204", false);
    let before = |dir: &Path| std::fs::read_to_string(dir.join("node.toml")).unwrap();
    let (primary_before, secondary_before) = (before(&primary), before(&secondary));

    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();

    // A typo is caught on the primary before it connects: the acceptor keeps waiting.
    let mut typo: Vec<char> = code.chars().collect();
    typo[0] = if typo[0] == '1' { '2' } else { '1' };
    let typo: String = typo.into_iter().collect();
    let out = pair_peer(&primary, "127.0.0.204", &typo, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("typo"), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(200));
    assert!(acceptor.running(), "a typo must not end the acceptor");

    // A well-formed but wrong code: both sides fail.
    let out = pair_peer(&primary, "127.0.0.204", &another_code(&code), &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong code"), "{}", text(&out));
    let (ok, shown) = acceptor.finish();
    assert!(!ok, "the acceptor must fail: {shown}");
    assert!(shown.contains("wrong code"), "{shown}");
    assert!(shown.contains("code is used up"), "{shown}");

    // Nothing written, nothing staged left behind.
    assert_eq!(before(&primary), primary_before);
    assert_eq!(before(&secondary), secondary_before);
    assert_eq!(names(&primary), ["cluster.toml", "node.toml"]);
    assert_eq!(names(&secondary), ["node.toml"]);

    // The used-up code is refused: nobody listens any more.
    let out = pair_peer(&primary, "127.0.0.204", &code, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("cannot connect"), "{}", text(&out));
}

#[test]
fn a_node_already_in_a_cluster_is_refused_without_force() {
    let root = tempfile::tempdir().unwrap();
    let primary = fresh_node(root.path(), "lb1", "primary", "127.0.0.205", true);
    let secondary = fresh_node(root.path(), "lb2", "secondary", "127.0.0.206", false);

    // First pairing.
    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();
    let out = pair_peer(&primary, "127.0.0.206", &code, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(acceptor.finish().0);
    let secret = std::fs::read_to_string(primary.join("secret")).unwrap();

    // Both now belong to a cluster: each refuses on its own, before any code is shown or read.
    let out = tandem()
        .arg("--config-dir")
        .arg(&secondary)
        .args(["pair", "--accept", "--wait", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("already belongs to a cluster"), "{said}");
    assert!(said.contains("--force"), "{said}");
    assert!(!said.contains("one-time code"), "{said}");
    let out = pair_peer(&primary, "127.0.0.206", "00000-00000-00000", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already belongs to a cluster"),
        "{}",
        text(&out)
    );

    // With --force on both: paired again, with the primary's (kept) secret.
    std::fs::write(secondary.join("secret"), "x".repeat(64)).unwrap();
    std::fs::set_permissions(
        secondary.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut acceptor = Acceptor::start(&secondary, &["--force"]);
    let code = acceptor.code();
    let out = pair_peer(&primary, "127.0.0.206", &code, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let (ok, shown) = acceptor.finish();
    assert!(ok, "{shown}");
    assert_eq!(
        std::fs::read_to_string(primary.join("secret")).unwrap(),
        secret
    );
    assert_eq!(
        std::fs::read_to_string(secondary.join("secret")).unwrap(),
        secret
    );
    let node = std::fs::read_to_string(secondary.join("node.toml")).unwrap();
    assert_eq!(node.matches("peer =").count(), 1, "{node}");
    check_ok(&secondary);
}

#[test]
fn a_mismatch_found_before_the_code_is_tried_keeps_the_code() {
    let root = tempfile::tempdir().unwrap();
    let primary = fresh_node(root.path(), "lb1", "primary", "127.0.0.207", true);
    let secondary = fresh_node(root.path(), "lb2", "secondary", "127.0.0.208", false);
    // The secondary's heartbeat port differs from the primary's.
    let node = std::fs::read_to_string(secondary.join("node.toml")).unwrap();
    std::fs::write(
        secondary.join("node.toml"),
        node.replace("heartbeat_port = 48694", "heartbeat_port = 48695"),
    )
    .unwrap();
    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();
    let out = pair_peer(&primary, "127.0.0.208", &code, &[]);
    assert!(!out.status.success());
    let said = text(&out);
    // The secondary sees the primary's hello first and refuses it.
    assert!(said.contains("the peer refused"), "{said}");
    assert!(said.contains("48695") && said.contains("48694"), "{said}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(acceptor.running(), "the code was never tried: still valid");
    assert!(
        acceptor.output().contains("still valid"),
        "{}",
        acceptor.output()
    );
    assert_eq!(names(&primary), ["cluster.toml", "node.toml"]);

    // Fixed on the secondary's side (by restarting its acceptor with the right file, the same
    // way an operator would), the pairing goes through.
    drop(acceptor);
    std::fs::write(secondary.join("node.toml"), node).unwrap();
    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();
    let out = pair_peer(&primary, "127.0.0.208", &code, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(acceptor.finish().0);
}

#[test]
fn a_result_that_fails_check_on_the_secondary_is_written_nowhere() {
    let root = tempfile::tempdir().unwrap();
    let primary = fresh_node(root.path(), "lb1", "primary", "127.0.0.211", true);
    let secondary = fresh_node(root.path(), "lb2", "secondary", "127.0.0.212", false);
    // The secondary only takes VIPs in 10.0.0.0/8: the primary's 127.0.0.210 fails its check.
    let node = std::fs::read_to_string(secondary.join("node.toml")).unwrap();
    let node = node.replace(
        "manage_vips = false\n",
        "manage_vips = false\nvip_networks = [\"10.0.0.0/8\"]\n",
    );
    std::fs::write(secondary.join("node.toml"), &node).unwrap();
    let primary_node = std::fs::read_to_string(primary.join("node.toml")).unwrap();

    let mut acceptor = Acceptor::start(&secondary, &[]);
    let code = acceptor.code();
    let out = pair_peer(&primary, "127.0.0.212", &code, &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("the peer refused"), "{said}");
    assert!(said.contains("vip_networks"), "{said}");
    // The diagnostics name the real file, not the staged copy.
    assert!(said.contains("cluster.toml:"), "{said}");
    assert!(!said.contains(".pairing-"), "{said}");
    let (ok, shown) = acceptor.finish();
    assert!(!ok, "{shown}");
    assert!(shown.contains("vip_networks"), "{shown}");

    assert_eq!(
        std::fs::read_to_string(secondary.join("node.toml")).unwrap(),
        node
    );
    assert_eq!(
        std::fs::read_to_string(primary.join("node.toml")).unwrap(),
        primary_node
    );
    assert_eq!(names(&primary), ["cluster.toml", "node.toml"]);
    assert_eq!(names(&secondary), ["node.toml"]);
}
