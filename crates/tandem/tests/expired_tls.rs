#![allow(clippy::unwrap_used)]
//! A lapsed certificate does not stop a node. Two `tandem run` processes on loopback (127.0.0.221 primary,
//! 127.0.0.222 secondary, VIPs not managed): the primary starts on a TLS service whose only certificate expired,
//! logs it as an error at its `cluster.toml` entry and serves it (curl -k gets the backend's answer, and
//! `openssl s_client` is handed exactly that expired certificate); the secondary accepts the pushed config with
//! the expired file (same digest) instead of refusing what the primary serves; `tandem reload` of another expired
//! certificate is applied and pushed too, and so is one not valid before 2099 (both nodes export its notBefore as
//! `tandem_tls_certificate_not_before_timestamp_seconds`). `tandem check` on the same files exits 1 with
//! file:line:col; `tandem release-vips` still runs.

mod common;

use common::{Node, tandem, text, wait_for};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

const PORTS: (u16, u16) = (46798, 47882);
const ADMIN: u16 = 49184;
const VIP: &str = "127.0.0.225";
const VIP_PORT: u16 = 41445;
const BACKEND: &str = "127.0.0.226:41094";

fn cluster_toml(tls: &str) -> String {
    format!(
        r#"[cluster]
name = "expired-tls"
[heartbeat]
interval_ms = 50
dead_ms = 250
warn_ms = 150
init_dead_ms = 500
[[service]]
label = "horizon"
vip = "{VIP}"
ports = [{VIP_PORT}]
mode = "http"
{tls}
[[service.server]]
label = "ctl-1"
address = "127.0.0.226"
port = 41094
"#
    )
}

const TLS: &str = r#"tls = { certificates = ["horizon.pem"] }"#;
/// The line of `tls = ...` in [`cluster_toml`] and its entry's column: what the diagnostics point at.
const ENTRY: &str = ":13:25:";

fn node(root: &Path, name: &str, role: &str, address: &str, peer: &str, tls: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.toml"), cluster_toml(tls)).unwrap();
    std::fs::copy(root.join("secret"), dir.join("secret")).unwrap();
    let (heartbeat_port, sync_port) = PORTS;
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"{name}\"\nrole = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"\n\
             peer = \"{peer}\"\nheartbeat_port = {heartbeat_port}\nsync_port = {sync_port}\nmanage_vips = false\n\
             state_dir = \"state\"\n[admin]\nlisten = \"{address}:{ADMIN}\"\nsocket = \"admin.sock\"\n"
        ),
    )
    .unwrap();
    Node::new(dir)
}

/// A self-signed ECDSA P-256 certificate for horizon.example.org valid from 2020-01-01 until the date given: the
/// certificate's PEM and the file (certificate then key).
fn expired_certificate(until: (i32, u8, u8)) -> (String, String) {
    certificate_valid((2020, 1, 1), until)
}

/// A self-signed ECDSA P-256 certificate for horizon.example.org valid `from` `until` (year, month, day).
fn certificate_valid(from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["horizon.example.org".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// A plain HTTP/1.1 backend answering `expired but served` to every request; lives while the listener does.
fn http_backend() -> TcpListener {
    let listener = TcpListener::bind(BACKEND).unwrap();
    let accept = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for stream in accept.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "expired but served\n";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    listener
}

/// `curl -k` through the TLS service: the body, or None while it is not served.
fn curl_insecure() -> Option<String> {
    let output = Command::new("curl")
        .args(["-k", "-sS", "--max-time", "5", "--resolve"])
        .arg(format!("horizon.example.org:{VIP_PORT}:{VIP}"))
        .arg(format!("https://horizon.example.org:{VIP_PORT}/"))
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The leaf certificate `openssl s_client` is handed for horizon.example.org, as PEM.
fn served_certificate() -> String {
    common::served_certificate(&format!("{VIP}:{VIP_PORT}"), "horizon.example.org")
        .expect("a certificate in s_client's output")
}

fn in_step(a: &Node, b: &Node) -> bool {
    let (s1, s2) = (a.status()["config"].clone(), b.status()["config"].clone());
    s1["digest"].is_string()
        && s1["digest"] == s2["digest"]
        && s1["generation"] == s2["generation"]
        && s1["sync"] == "in sync"
}

/// The error-level log line of the expired certificate, at its entry.
fn logs_the_alarm(log: &str, date: &str) -> bool {
    log.lines().any(|line| {
        line.contains("ERROR")
            && line.contains(ENTRY)
            && line.contains(&format!(
                "service \"horizon\" tls: certificate \"horizon.pem\" expired on {date}: clients will refuse it"
            ))
    })
}

#[test]
fn a_node_serves_an_expired_certificate_that_check_refuses() {
    let root = tempfile::tempdir().unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(root.path().join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let _backend = http_backend();
    let mut lb1 = node(
        root.path(),
        "lb1",
        "primary",
        "127.0.0.221",
        "127.0.0.222",
        TLS,
    );
    let (expired_cert, expired_file) = expired_certificate((2021, 1, 1));
    std::fs::write(lb1.dir.join("horizon.pem"), &expired_file).unwrap();

    // `tandem check` refuses the expired certificate at its entry.
    let check = lb1.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains(&format!(
            "cluster.toml{ENTRY} service \"horizon\" tls: certificate \"horizon.pem\" expired on 2021-01-01"
        )),
        "{stderr}"
    );

    // `tandem release-vips` (ExecStopPost) is not stopped by it either (here: VIPs not managed, nothing to do).
    let release = lb1.cli(&["release-vips"]);
    assert!(release.status.success(), "{}", text(&release));
    assert!(
        text(&release).contains("nothing to release"),
        "{}",
        text(&release)
    );

    // The daemon starts on the same files, logs the expired certificate as an error and serves it.
    lb1.start(&[]);
    // (503 until the first health check found the server up.)
    wait_for("the primary serving its TLS service", || {
        curl_insecure().as_deref() == Some("expired but served\n")
    });
    assert_eq!(served_certificate(), expired_cert);
    assert!(logs_the_alarm(&lb1.log(), "2021-01-01"), "{}", lb1.log());
    assert!(lb1.status()["config"]["digest"].is_string());

    // The secondary takes the pushed config with the expired certificate: the pair agrees on it.
    let mut lb2 = node(
        root.path(),
        "lb2",
        "secondary",
        "127.0.0.222",
        "127.0.0.221",
        "",
    );
    lb2.start(&[]);
    wait_for("the secondary on the primary's config", || {
        in_step(&lb1, &lb2) && lb2.status()["replication"]["connected"] == true
    });
    let read = |node: &Node, name: &str| std::fs::read_to_string(node.dir.join(name)).ok();
    assert_eq!(
        read(&lb2, "horizon.pem").as_deref(),
        Some(expired_file.as_str())
    );
    assert_eq!(read(&lb2, "cluster.toml"), read(&lb1, "cluster.toml"));
    assert!(logs_the_alarm(&lb2.log(), "2021-01-01"), "{}", lb2.log());
    // Its own `tandem check` refuses the files it serves, as the primary's does.
    let check = lb2.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));

    // `tandem reload` of another expired certificate is applied, served and pushed.
    let (older_cert, older_file) = expired_certificate((2020, 6, 1));
    std::fs::write(lb1.dir.join("horizon.pem"), &older_file).unwrap();
    let before = lb1.status()["config"]["digest"].clone();
    let reload = lb1.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(
        text(&reload).contains("expired on 2020-06-01: clients will refuse it"),
        "{}",
        text(&reload)
    );
    assert_ne!(lb1.status()["config"]["digest"], before);
    wait_for("the reloaded certificate served", || {
        served_certificate() == older_cert
    });
    assert!(logs_the_alarm(&lb1.log(), "2020-06-01"), "{}", lb1.log());
    wait_for("the secondary on the reloaded certificate", || {
        in_step(&lb1, &lb2) && read(&lb2, "horizon.pem").as_deref() == Some(older_file.as_str())
    });

    // A certificate not valid before 2099: the same (served with an error), and both nodes export its notBefore.
    let (future_cert, future_file) = certificate_valid((2099, 1, 1), (2100, 1, 1));
    std::fs::write(lb1.dir.join("horizon.pem"), &future_file).unwrap();
    let reload = lb1.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(
        text(&reload).contains("is not valid before 2099-01-01: clients will refuse it"),
        "{}",
        text(&reload)
    );
    wait_for("the not-yet-valid certificate served", || {
        served_certificate() == future_cert
    });
    let dates = "tandem_tls_certificate_not_before_timestamp_seconds\
                 {certificate=\"horizon.pem\",service=\"horizon\"} 4070908800";
    wait_for("both nodes exporting its notBefore", || {
        [&lb1, &lb2]
            .iter()
            .all(|node| node.metrics().lines().any(|l| l == dates))
    });
    let check = lb1.cli(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains(&format!(
            "cluster.toml{ENTRY} service \"horizon\" tls: certificate \"horizon.pem\" is not valid before 2099-01-01"
        )),
        "{}",
        text(&check)
    );
}
