#![allow(clippy::unwrap_used)]
//! The daemon derives its TLS session-ticket keys from the node's `secret` file: a session `openssl s_client` got
//! from one `tandem run` resumes on another that holds the same secret (as the two nodes of a pair do, so
//! resumption survives a failover), and not on one with another secret. Three standalone daemons on loopback
//! (127.0.0.213-215, VIPs not managed), each serving a TLS service "horizon" on its own address (127.0.0.216-218)
//! with the same certificate file; no real server is needed for the handshakes (the answers are 503).

mod common;

use common::{KillOnDrop, Node, tandem, text, wait_for};
use std::path::Path;
use std::process::{Command, Stdio};

const VIP_PORT: u16 = 41452;

/// A standalone node `name` at `address` serving horizon on `vip`, holding `secret` and `certificate`.
fn node(root: &Path, name: &str, address: &str, vip: &str, admin: u16, secret: &Path) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        format!(
            "[cluster]\nname = \"tls-tickets\"\n[[service]]\nlabel = \"horizon\"\nvip = \"{vip}\"\n\
             ports = [{VIP_PORT}]\nmode = \"http\"\ntls = {{ certificates = [\"horizon.pem\"] }}\n\
             [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.219\"\nport = 41101\n"
        ),
    )
    .unwrap();
    std::fs::copy(secret, dir.join("secret")).unwrap();
    std::fs::copy(root.join("horizon.pem"), dir.join("horizon.pem")).unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"{name}\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"{address}\"\n\
             manage_vips = false\nstate_dir = \"state\"\n\
             [admin]\nlisten = \"{address}:{admin}\"\nsocket = \"admin.sock\"\n"
        ),
    )
    .unwrap();
    Node::new(dir)
}

fn keygen(path: &Path) {
    let made = tandem().arg("keygen").arg(path).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
}

/// `openssl s_client -tls1_3` to `vip` with `args`; one request sent, stdin held open 300 ms so the tickets
/// (sent after the handshake) arrive; stdout and stderr.
fn s_client(vip: &str, args: &[&str]) -> String {
    let mut child = KillOnDrop(Some(
        Command::new("openssl")
            .args([
                "s_client",
                "-tls1_3",
                "-ign_eof",
                "-servername",
                "horizon.example.org",
            ])
            .arg("-connect")
            .arg(format!("{vip}:{VIP_PORT}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut input = child.0.as_mut().and_then(|c| c.stdin.take()).unwrap();
    std::io::Write::write_all(&mut input, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(input);
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_session_resumes_on_another_daemon_with_the_same_secret_only() {
    let root = tempfile::tempdir().unwrap();
    let (shared, other) = (root.path().join("shared"), root.path().join("other"));
    keygen(&shared);
    keygen(&other);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["horizon.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(
        root.path().join("horizon.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    let mut lb1 = node(
        root.path(),
        "lb1",
        "127.0.0.213",
        "127.0.0.216",
        49195,
        &shared,
    );
    let mut lb2 = node(
        root.path(),
        "lb2",
        "127.0.0.214",
        "127.0.0.217",
        49196,
        &shared,
    );
    let mut lb3 = node(
        root.path(),
        "lb3",
        "127.0.0.215",
        "127.0.0.218",
        49197,
        &other,
    );
    for node in [&mut lb1, &mut lb2, &mut lb3] {
        node.start(&[]);
    }
    for (node, vip) in [
        (&lb1, "127.0.0.216"),
        (&lb2, "127.0.0.217"),
        (&lb3, "127.0.0.218"),
    ] {
        wait_for("the node serving TLS", || {
            !node.status().is_null()
                && common::served_certificate(&format!("{vip}:{VIP_PORT}"), "horizon.example.org")
                    .is_some()
        });
    }

    let session = root.path().join("session");
    let session = session.to_str().unwrap();
    let first = s_client("127.0.0.216", &["-sess_out", session]);
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let resumed = s_client("127.0.0.217", &["-sess_in", session]);
    assert!(resumed.contains("Reused, TLSv1.3"), "{resumed}");
    let full = s_client("127.0.0.218", &["-sess_in", session]);
    assert!(full.contains("New, TLSv1.3"), "{full}");
    let resumed_total = |node: &Node| {
        node.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("tandem_tls_resumed_total{service=\"horizon\"} "))
            .map(str::to_owned)
    };
    assert_eq!(
        resumed_total(&lb2).as_deref(),
        Some("1"),
        "{}",
        lb2.metrics()
    );
    assert_eq!(
        resumed_total(&lb3).as_deref(),
        Some("0"),
        "{}",
        lb3.metrics()
    );
}
