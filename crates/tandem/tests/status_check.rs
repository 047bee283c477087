//! `tandem status --check` against a running daemon, as a monitoring system runs it: one line and
//! the plugin exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) as the node's state changes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{KillOnDrop, tandem};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Accepts and closes connections: enough for a TCP health check to pass.
fn backend(addr: &str) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap();
    let accept = listener.try_clone().unwrap();
    std::thread::spawn(move || for _ in accept.incoming() {});
    listener
}

fn cluster_toml(extra: &str) -> String {
    format!(
        "[cluster]\nname = \"check-test\"\n[health_check]\ninterval_ms = 100\nrise = 1\nfall = 1\n\
         [[service]]\nlabel = \"db\"\nvip = \"127.0.0.70\"\nports = [24306]\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.71\"\nport = 24306\n\
         [[service.server]]\nlabel = \"ctl-2\"\naddress = \"127.0.0.72\"\nport = 24306\n{extra}"
    )
}

fn check(dir: &Path) -> Output {
    tandem()
        .arg("--config-dir")
        .arg(dir)
        .args(["status", "--check"])
        .output()
        .unwrap()
}

/// Polls `status --check` until it exits with `code` (health checks run every 100 ms).
fn wait_for_code(dir: &Path, code: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = check(dir);
        if output.status.code() == Some(code) {
            let line = String::from_utf8_lossy(&output.stdout).to_string();
            assert_eq!(line.lines().count(), 1, "{line}");
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "status --check never exited {code}: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_check_exit_codes_follow_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();

    // Before the daemon runs: UNKNOWN, one line, exit 3.
    std::fs::write(path.join("cluster.toml"), cluster_toml("")).unwrap();
    std::fs::write(
        path.join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26695\nmanage_vips = false\nstate_dir = \"{0}/state\"\n\
             [admin]\nlisten = \"127.0.0.1:29081\"\nsocket = \"{0}/admin.sock\"\n",
            path.display()
        ),
    )
    .unwrap();
    let output = check(path);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("TANDEM UNKNOWN - "),
        "{}",
        text(&output)
    );

    let _ctl1 = backend("127.0.0.71:24306");
    let daemon = KillOnDrop(Some(
        tandem()
            .arg("run")
            .arg("--config-dir")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));

    // ctl-2 has nothing listening: one server down is a WARNING.
    let line = wait_for_code(path, 1);
    assert!(line.starts_with("TANDEM WARNING - solo active"), "{line}");
    assert!(line.contains("1 server(s) down: db/ctl-2"), "{line}");
    assert!(line.contains("| servers_up=1;;;0;2"), "{line}");

    // It comes up: OK.
    let _ctl2 = backend("127.0.0.72:24306");
    let line = wait_for_code(path, 0);
    assert!(
        line.starts_with("TANDEM OK - solo active, no peer, 1 services, 2/2 servers up"),
        "{line}"
    );

    // A service none of whose servers answers is an outage: CRITICAL.
    std::fs::write(
        path.join("cluster.toml"),
        cluster_toml(
            "[[service]]\nlabel = \"web\"\nvip = \"127.0.0.70\"\nports = [24307]\nmode = \"tcp\"\n\
             [[service.server]]\nlabel = \"ctl-3\"\naddress = \"127.0.0.73\"\nport = 24307\n",
        ),
    )
    .unwrap();
    let reload = tandem()
        .arg("--config-dir")
        .arg(path)
        .arg("reload")
        .output()
        .unwrap();
    assert!(reload.status.success(), "{}", text(&reload));
    let line = wait_for_code(path, 2);
    assert!(line.starts_with("TANDEM CRITICAL - "), "{line}");
    assert!(line.contains("all servers of web down"), "{line}");

    // `status` without --check still exits 0 whatever the state, once it could read it.
    let plain = tandem()
        .arg("--config-dir")
        .arg(path)
        .arg("status")
        .output()
        .unwrap();
    assert!(plain.status.success(), "{}", text(&plain));

    drop(daemon);
    wait_for_code(path, 3);
}
