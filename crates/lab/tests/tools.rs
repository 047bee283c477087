//! The lab programs end to end on loopback: a backend, the probe against it (TCP and HTTP), the probe against a
//! closed port, the fill mode, and tnd-json.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two loopback ports the kernel hands out, both free right now. Fixed ports (this test used pid-derived ones in
/// 40000-55000) sit inside the ephemeral range, where any outgoing connection on the machine may hold them.
fn free_ports(address: &str) -> [u16; 2] {
    // Both listeners live until both ports are read, so the two differ.
    let any_port = std::net::SocketAddr::new(address.parse().unwrap(), 0);
    let a = std::net::TcpListener::bind(any_port).unwrap();
    let b = std::net::TcpListener::bind(any_port).unwrap();
    [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ]
}

/// A loopback port that refuses connections while the socket lives: bound, so nobody else can take it, but not
/// listening.
fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any_port.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// Starts tnd-backend on two free ports and waits for its ready file; returns it and its (tcp, http) ports. A port
/// taken by someone else between choosing it and the backend's bind makes the backend exit: that is retried on
/// fresh ports (bounded), any other early exit fails with the backend's own message.
fn start_backend(dir: &tempfile::TempDir, address: &str) -> (Backend, u16, u16) {
    for attempt in 1..=5 {
        let [tcp, http] = free_ports(address);
        let ready = dir.path().join(format!("ready-{attempt}"));
        let log = dir.path().join(format!("backend-{attempt}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tnd-backend"))
            .args(["--name", "ctl9", "--address", address])
            .args([
                "--ports",
                &format!("{tcp},{http}"),
                "--http-ports",
                &http.to_string(),
            ])
            .arg("--ready-file")
            .arg(&ready)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut backend = Backend(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Some(status) = backend.0.try_wait().unwrap() {
                let message = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    message.contains("Address already in use"),
                    "backend exited ({status}) before it was ready: {message}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "backend never became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        if ready.exists() {
            return (backend, tcp, http);
        }
    }
    panic!("every port pair chosen for the backend was taken before it could bind");
}

fn probe(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tnd-probe"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn probe_measures_a_backend_over_tcp_and_http_and_a_closed_port() {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, tcp, http) = start_backend(&dir, "127.0.0.1");
    let (_closed_socket, closed) = refusing_port();

    let tcp_target = format!("127.0.0.1:{tcp}");
    let s = probe(&[
        "--target",
        &tcp_target,
        "--interval-ms",
        "5",
        "--duration-ms",
        "300",
    ]);
    assert!(s["attempts"].as_u64().unwrap() >= 20, "{s}");
    assert_eq!(s["failed_requests"], 0, "{s}");
    assert_eq!(s["client_outage_ms"], 0.0, "{s}");
    assert_eq!(s["answered_by"]["ctl9"], s["successes"], "{s}");

    let http_target = format!("127.0.0.1:{http}");
    let s = probe(&[
        "--target",
        &http_target,
        "--mode",
        "http",
        "--interval-ms",
        "5",
        "--duration-ms",
        "300",
    ]);
    assert_eq!(s["failed_requests"], 0, "{s}");
    assert_eq!(s["answered_by"]["ctl9"], s["successes"], "{s}");

    // the wrong protocol on a port is a bad answer, not a success
    let s = probe(&[
        "--target",
        &http_target,
        "--interval-ms",
        "20",
        "--duration-ms",
        "100",
    ]);
    assert_eq!(s["successes"], 0, "{s}");

    let closed_target = format!("127.0.0.1:{closed}");
    let s = probe(&[
        "--target",
        &closed_target,
        "--interval-ms",
        "10",
        "--duration-ms",
        "100",
    ]);
    assert_eq!(s["successes"], 0, "{s}");
    assert_eq!(s["recovered"], false, "{s}");
    assert!(s["failures"]["refused"].as_u64().unwrap() > 0, "{s}");
    assert!(s["client_outage_ms"].as_f64().unwrap() >= 90.0, "{s}");

    let s = probe(&[
        "--target",
        &tcp_target,
        "--fill",
        "300",
        "--concurrency",
        "16",
    ]);
    assert_eq!(s["attempts"], 300, "{s}");
    assert_eq!(s["successes"], 300, "{s}");
}

/// The ipv6 drill's client and controllers: the backend listens on an IPv6 address and the probe reaches it over
/// IPv6, in both modes (the probe once opened IPv4 sockets only); IPv4 source ranges with an IPv6 target are refused.
#[test]
fn probe_and_backend_speak_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_backend, tcp, http) = start_backend(&dir, "::1");
    for (port, mode) in [(tcp, "tcp"), (http, "http")] {
        let target = format!("[::1]:{port}");
        let s = probe(&[
            "--target",
            &target,
            "--mode",
            mode,
            "--interval-ms",
            "5",
            "--duration-ms",
            "200",
        ]);
        assert!(s["attempts"].as_u64().unwrap() >= 10, "{mode}: {s}");
        assert_eq!(s["failed_requests"], 0, "{mode}: {s}");
        assert_eq!(s["answered_by"]["ctl9"], s["successes"], "{mode}: {s}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tnd-probe"))
        .args([
            "--target",
            &format!("[::1]:{tcp}"),
            "--sources",
            "10.77.0.0/24",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IPv6"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn probe_stops_on_its_stop_file() {
    let dir = tempfile::tempdir().unwrap();
    let stop: PathBuf = dir.path().join("stop");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tnd-probe"))
        .args([
            "--target",
            "127.0.0.1:9",
            "--interval-ms",
            "10",
            "--duration-ms",
            "20000",
            "--stop-file",
        ])
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&stop, b"").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn json_tool_builds_reads_and_compares() {
    let json = env!("CARGO_BIN_EXE_tnd-json");
    let out = Command::new(json)
        .args(["obj", "a=x", "n:=3", "m:={\"k\":[1,2]}"])
        .output()
        .unwrap();
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        built,
        serde_json::json!({"a": "x", "n": 3, "m": {"k": [1, 2]}})
    );

    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.json");
    let after = dir.path().join("after.json");
    std::fs::write(
        &before,
        r#"{"t":[{"label":"a","n":1}],"map":{"x":"1","y":"2","z":"3"}}"#,
    )
    .unwrap();
    std::fs::write(&after, r#"{"map":{"x":"1","y":"9"}}"#).unwrap();
    let get = Command::new(json)
        .args(["get", "t.label=a.n"])
        .arg(&before)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "1");
    let diff = Command::new(json)
        .args(["mapdiff", "map"])
        .arg(&before)
        .arg(&after)
        .output()
        .unwrap();
    let diff: Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert_eq!(
        diff,
        serde_json::json!({"before": 3, "after": 2, "compared": 2, "changed": 1, "missing": 1})
    );
    let bad = Command::new(json)
        .args(["get", "a"])
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn json_tool_tells_settled_health_from_servers_still_rising() {
    let json = env!("CARGO_BIN_EXE_tnd-json");
    let dir = tempfile::tempdir().unwrap();
    let status = |servers: &str| {
        let file = dir.path().join("status.json");
        std::fs::write(
            &file,
            format!(r#"{{"services":[{{"servers":[{servers}]}}]}}"#),
        )
        .unwrap();
        let out = Command::new(json)
            .arg("settled")
            .arg(&file)
            .output()
            .unwrap();
        let counts: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), counts)
    };
    let up = r#"{"health":"up","last_check":{"ok":true}}"#;
    let down = r#"{"health":"down","last_check":{"ok":false}}"#;
    let rising = r#"{"health":"down","last_check":{"ok":true}}"#;
    let unchecked = r#"{"health":"down","last_check":null}"#;
    let (ok, counts) = status(&format!("{up},{down}"));
    assert!(ok, "{counts}");
    assert_eq!(
        counts,
        serde_json::json!({"servers": 2, "settled": 2, "up": 1})
    );
    assert!(!status(&format!("{up},{rising}")).0);
    assert!(!status(&format!("{up},{unchecked}")).0);
    assert!(!status("").0, "no servers at all is not a settled pair");
}
