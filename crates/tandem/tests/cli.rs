#![allow(clippy::unwrap_used)]
//! The `tandem` binary end to end on loopback: check, keygen, and a standalone daemon driven by the
//! CLI (status, drain/halt/online, reload good and bad, metrics, SIGTERM).

mod common;

use common::{banner_backend, repo_root, tandem, terminate, text};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_json_lists_the_23_openstack_services() {
    let example = repo_root().join("deploy/examples/openstack");
    let output = tandem()
        .args(["check", "--json", "--cluster"])
        .arg(example.join("cluster.toml"))
        .arg("--node")
        .arg(example.join("node-lb1.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = report["services"].as_array().unwrap();
    assert_eq!(services.len(), 23);
    let mysql = services.iter().find(|s| s["label"] == "mysql").unwrap();
    assert_eq!(mysql["vip"], "192.168.1.250");
    assert_eq!(mysql["ports"], serde_json::json!([3306]));
    assert_eq!(mysql["mode"], "tcp");
    assert_eq!(mysql["persistence"]["mode"], "last-successful");
    assert_eq!(mysql["servers"].as_array().unwrap().len(), 3);
    assert_eq!(report["digest"].as_str().unwrap().len(), 64);
}

#[test]
fn check_reports_every_error_with_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.toml"),
        "[cluster]\nname = \"x\"\n[[service]]\nlabel = \"a\"\nvip = \"10.0.0.300\"\nports = [0]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.toml"),
        "[node]\nname = \"n\"\nrole = \"boss\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let output = tandem()
        .args(["check", "--config-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster.toml:5:7:"), "{stderr}");
    assert!(stderr.contains("cluster.toml:6:"), "{stderr}");
    assert!(stderr.contains("node.toml:3:8:"), "{stderr}");
}

/// `tandem check` on a TLS service: each certificate listed with its names and expiry; a renewed-too-late one
/// (expired) fails with `file:line:col` at its entry and exit 1; one expiring within 30 days is a warning.
#[test]
fn check_lists_certificates_and_refuses_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let pem = |name: &str, until: (i32, u8, u8)| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.self_signed(&key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    };
    std::fs::write(
        dir.path().join("good.pem"),
        pem("horizon.example.org", (2090, 1, 1)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("old.pem"),
        pem("old.example.org", (2021, 1, 1)),
    )
    .unwrap();
    let cluster = |files: &str| {
        format!(
            "[cluster]\nname = \"x\"\n[[service]]\nlabel = \"horizon\"\nvip = \"127.0.0.31\"\nports = [41443]\n\
             mode = \"http\"\ntls = {{ certificates = [{files}] }}\n[[service.server]]\nlabel = \"a\"\n\
             address = \"127.0.0.32\"\nport = 80\n"
        )
    };
    std::fs::write(
        dir.path().join("node.toml"),
        "[node]\nname = \"n\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.30\"\n\
         manage_vips = false\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let check = || {
        tandem()
            .args(["check", "--config-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    std::fs::write(dir.path().join("cluster.toml"), cluster(r#""good.pem""#)).unwrap();
    let output = check();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("good.pem: horizon.example.org (expires 2090-01-01)"),
        "{stdout}"
    );
    std::fs::write(
        dir.path().join("cluster.toml"),
        cluster(r#""good.pem", "old.pem""#),
    )
    .unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "cluster.toml:8:37: service \"horizon\" tls: certificate \"old.pem\" expired on 2021-01-01"
        ),
        "{stderr}"
    );
}

#[test]
fn keygen_writes_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    let output = tandem().arg("keygen").arg(&file).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&file).unwrap();
    let again = tandem().arg("keygen").arg(&file).output().unwrap();
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "the secret was overwritten"
    );
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn cli(&self, args: &[&str]) -> Output {
        tandem()
            .arg("--config-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }
    fn status(&self) -> serde_json::Value {
        let output = self.cli(&["status", "--json"]);
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

fn cluster_toml(extra_service: &str) -> String {
    format!(
        r#"[cluster]
name = "cli-test"
[health_check]
interval_ms = 100
rise = 1
fall = 2
[[service]]
label = "db"
vip = "127.0.0.60"
ports = [23306]
mode = "tcp"
persistence = {{ mode = "last-successful", timeout_s = 0, table_size = 1000 }}
[[service.server]]
label = "ctl-1"
address = "127.0.0.61"
port = 23306
[[service.server]]
label = "ctl-2"
address = "127.0.0.62"
port = 23306
{extra_service}"#
    )
}

fn start_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), cluster_toml("")).unwrap();
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26694\nmanage_vips = false\nstate_dir = \"{}/state\"\n\
             [admin]\nlisten = \"127.0.0.1:29080\"\nsocket = \"{}/admin.sock\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = daemon.cli(&["status", "--json"]);
        if output.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let up = status["services"][0]["servers"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["health"] == "up").count());
            if status["node"]["state"] == "active" && up == 2 {
                return daemon;
            }
        }
        assert!(
            Instant::now() < deadline,
            "daemon not ready: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn banner_through(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    line
}

#[test]
fn daemon_served_and_operated_through_the_cli() {
    let _ctl1 = banner_backend("127.0.0.61:23306", "ctl-1");
    let _ctl2 = banner_backend("127.0.0.62:23306", "ctl-2");
    let mut daemon = start_daemon();

    // last-successful: every connection goes to the same controller.
    let first = banner_through("127.0.0.60:23306");
    for _ in 0..10 {
        assert_eq!(banner_through("127.0.0.60:23306"), first);
    }

    // Drain moves the last-successful entry away (the point of draining a Galera writer).
    let output = daemon.cli(&["server", "drain", "db", &first]);
    assert!(output.status.success(), "{}", text(&output));
    let other = banner_through("127.0.0.60:23306");
    assert_ne!(other, first);
    let status = daemon.status();
    let drained = status["services"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == first.as_str())
        .unwrap()
        .clone();
    assert_eq!(drained["admin_state"], "drain");
    let output = daemon.cli(&["server", "online", "db", &first]);
    assert!(output.status.success(), "{}", text(&output));
    let output = daemon.cli(&["server", "halt", "db", "no-such-server"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no-such-server"),
        "{}",
        text(&output)
    );

    // A broken cluster.toml is refused with file:line:col and nothing changes.
    let cluster = daemon.dir.path().join("cluster.toml");
    let generation = daemon.status()["config"]["generation"].clone();
    std::fs::write(&cluster, cluster_toml("[[service]]\nlabel = \"db\"\n")).unwrap();
    let output = daemon.cli(&["reload"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("cluster.toml:"), "{}", text(&output));
    assert_eq!(daemon.status()["config"]["generation"], generation);
    assert_eq!(banner_through("127.0.0.60:23306"), other);

    // A good one is applied live: a new service appears, the generation moves on.
    let _web = banner_backend("127.0.0.63:23307", "ctl-3");
    std::fs::write(
        &cluster,
        cluster_toml(
            "[[service]]\nlabel = \"extra\"\nvip = \"127.0.0.60\"\nports = [23307]\nmode = \"tcp\"\n\
             [[service.server]]\nlabel = \"ctl-3\"\naddress = \"127.0.0.63\"\n",
        ),
    )
    .unwrap();
    let output = daemon.cli(&["reload"]);
    assert!(output.status.success(), "{}", text(&output));
    let status = daemon.status();
    assert_eq!(
        status["config"]["generation"],
        generation.as_u64().unwrap() + 1
    );
    assert_eq!(status["services"].as_array().unwrap().len(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while banner_through_opt("127.0.0.60:23307").as_deref() != Some("ctl-3") {
        assert!(Instant::now() < deadline, "new service never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The unchanged service kept its persistence.
    assert_eq!(banner_through("127.0.0.60:23306"), other);

    // Metrics for Prometheus.
    let metrics = http_get("127.0.0.1:29080", "/metrics");
    assert!(
        metrics.contains("tandem_node_state{state=\"active\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tandem_server_up{server=\"ctl-1\",service=\"db\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tandem_config_generation 2"), "{metrics}");
    let page = http_get("127.0.0.1:29080", "/");
    assert!(page.contains("System Overview") && page.contains("ctl-2"));

    // SIGTERM: a clean exit.
    let status = terminate(&mut daemon.child).expect("daemon did not stop on SIGTERM");
    assert!(status.success(), "exit status {status}");
}

fn banner_through_opt(addr: &str) -> Option<String> {
    TcpStream::connect(addr).ok()?;
    Some(banner_through(addr))
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// `[tuning]` in node.toml chooses the engine, relay, workers, yielding and priority (no environment variables):
/// a daemon told to relay TCP and serve HTTP in its tasks says so in its log and serves through them.
#[test]
fn tuning_in_node_toml_chooses_engine_and_relay() {
    let _ctl = banner_backend("127.0.0.71:23307", "ctl-t");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.toml"),
        "[cluster]\nname = \"tuning-test\"\n[health_check]\ninterval_ms = 100\nrise = 1\nfall = 2\n\
         [[service]]\nlabel = \"db\"\nvip = \"127.0.0.70\"\nports = [23307]\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"ctl-t\"\naddress = \"127.0.0.71\"\nport = 23307\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26695\nsync_port = 27779\nmanage_vips = false\nstate_dir = \"{}/state\"\n\
             [admin]\nlisten = \"127.0.0.1:29081\"\nsocket = \"{}/admin.sock\"\n\
             [tuning]\nworkers = 1\ntcp_relay = \"tasks\"\nhttp_engine = \"tasks\"\nrelay_yield = false\n\
             heartbeat_realtime = false\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let checked = tandem()
        .arg("check")
        .arg("--config-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    let log_path = dir.path().join("daemon.log");
    let child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while banner_through_opt("127.0.0.70:23307").as_deref() != Some("ctl-t") {
        assert!(
            Instant::now() < deadline,
            "no banner through the VIP; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("TCP mode relays in the connection tasks ([tuning] tcp_relay = \"tasks\")"),
        "{log}"
    );
    assert!(
        log.contains("HTTP mode in the runtime's tasks, writes not batched ([tuning] http_engine = \"tasks\")"),
        "{log}"
    );
    drop(daemon);
}

/// `tandem --version` names the version and the commit (12 hex digits, `-dirty` for a changed tree) and exits 0.
#[test]
fn version_names_the_commit() {
    let output = tandem().arg("--version").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let expected_start = format!("tandem {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(
        line.starts_with(&expected_start) && line.ends_with(')'),
        "{line}"
    );
    let commit = &line[expected_start.len()..line.len() - 1];
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        hash == "unknown" || (hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
}
