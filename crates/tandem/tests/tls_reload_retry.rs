#![allow(clippy::unwrap_used)]
//! A certificate that changes between the check and the proxy's load (start-up, `tandem reload`) is reported, and
//! retried by the next reload. One `tandem run` on loopback (127.0.0.231, peer absent, VIPs not managed) whose
//! `horizon.pem` is a FIFO handing out scripted bytes per open: the check and the proxy each open it once per load,
//! so the file changing between the two is made certain. At start-up the node runs without the service and
//! `tandem status` says so (`NOT APPLIED`); `tandem reload` of the same files serves it. A `tandem reload` where the
//! proxy reads other bytes exits 1 naming the service, the file and the reason, logs it, status shows it, and the
//! old certificate is still served; the same reload again, the file now steady, exits 0 and the new certificate is
//! served. `tandem_config_not_applied{service="horizon"}` on `/metrics` follows: 1 while not applied, else 0.

mod common;

use common::{Node, serve_fifo, tandem, text, wait_for};

const ADMIN: u16 = 49186;
const VIP: &str = "127.0.0.235";
const VIP_PORT: u16 = 41447;

fn cluster_toml() -> String {
    format!(
        r#"[cluster]
name = "tls-retry"
[[service]]
label = "horizon"
vip = "{VIP}"
ports = [{VIP_PORT}]
mode = "http"
tls = {{ certificates = ["horizon.pem"] }}
[[service.server]]
label = "ctl-1"
address = "127.0.0.236"
port = 41096
"#
    )
}

/// A self-signed ECDSA P-256 certificate for horizon.example.org: its PEM and the file (certificate then key).
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["horizon.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// The leaf certificate `openssl s_client` is handed for horizon.example.org, as PEM (None while not served).
fn served_certificate() -> Option<String> {
    common::served_certificate(&format!("{VIP}:{VIP_PORT}"), "horizon.example.org")
}

#[test]
fn a_certificate_that_changed_after_the_check_fails_the_reload_and_the_next_reload_retries_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lb1");
    std::fs::create_dir_all(&dir).unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(dir.join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    std::fs::write(dir.join("cluster.toml"), cluster_toml()).unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"lb1\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.231\"\n\
             peer = \"127.0.0.232\"\nheartbeat_port = 46800\nsync_port = 47884\nmanage_vips = false\n\
             state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.231:{ADMIN}\"\nsocket = \"admin.sock\"\n"
        ),
    )
    .unwrap();

    let (a_cert, a_file) = certificate();
    let (b_cert, b_file) = certificate();
    let (_, c_file) = certificate();
    // Each load opens the file once: the check, then (for a new or changed service) the proxy.
    serve_fifo(
        dir.join("horizon.pem"),
        vec![
            // Start-up: the check reads A, the proxy C.
            a_file.clone(),
            c_file.clone(),
            // Reload: A and A.
            a_file.clone(),
            a_file,
            // Reload: B and C.
            b_file.clone(),
            c_file,
            // Reload: B and B.
            b_file.clone(),
            b_file.clone(),
            // Reload: the check reads B; the proxy serves it all already.
            b_file,
        ],
    );
    let mut lb1 = Node::new(dir);
    lb1.start(&[]);
    // The node runs without the service and says so.
    wait_for("the node answering", || !lb1.status().is_null());
    let not_applied = |lb1: &Node| lb1.status()["config"]["not_applied"].clone();
    let changed = "horizon.pem: the file changed after the configuration was checked";
    assert!(
        not_applied(&lb1)[0].as_str().is_some_and(
            |p| p.starts_with(&format!("TLS service \"horizon\" is not served: {changed}"))
        ),
        "{}",
        lb1.status()
    );
    let shown = lb1.cli(&["status"]);
    assert!(
        text(&shown).contains("NOT APPLIED: TLS service \"horizon\" is not served: horizon.pem"),
        "{}",
        text(&shown)
    );
    assert!(
        lb1.log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("the service is not served")),
        "{}",
        lb1.log()
    );
    assert_eq!(served_certificate(), None);
    let not_applied_metric = |lb1: &Node, value: u8| {
        let metrics = lb1.metrics();
        let line = format!("tandem_config_not_applied{{service=\"horizon\"}} {value}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    };
    not_applied_metric(&lb1, 1);

    // The same files again: retried, not "unchanged".
    let reload = lb1.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(text(&reload).contains("1 added"), "{}", text(&reload));
    wait_for("the node serving certificate A", || {
        served_certificate().as_deref() == Some(a_cert.as_str())
    });
    assert!(not_applied(&lb1).is_null(), "{}", lb1.status());
    not_applied_metric(&lb1, 0);

    let reload = lb1.cli(&["reload"]);
    assert_eq!(reload.status.code(), Some(1), "{}", text(&reload));
    let said = text(&reload);
    let keeps = format!(
        "TLS service \"horizon\" keeps its running configuration and certificates: {changed}"
    );
    assert!(
        said.contains(&keeps) && said.contains("run `tandem reload` again"),
        "{said}"
    );
    assert!(
        lb1.log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains(&keeps)),
        "{}",
        lb1.log()
    );
    assert!(
        not_applied(&lb1)[0]
            .as_str()
            .is_some_and(|p| p.starts_with(&keeps)),
        "{}",
        lb1.status()
    );
    assert_eq!(served_certificate().as_deref(), Some(a_cert.as_str()));
    not_applied_metric(&lb1, 1);

    // Same cluster.toml, same certificate bytes as that reload's check: retried, not "unchanged".
    let reload = lb1.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(text(&reload).contains("1 changed"), "{}", text(&reload));
    wait_for("the node serving certificate B", || {
        served_certificate().as_deref() == Some(b_cert.as_str())
    });
    assert!(not_applied(&lb1).is_null(), "{}", lb1.status());
    not_applied_metric(&lb1, 0);
    let reload = lb1.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(text(&reload).contains("unchanged"), "{}", text(&reload));
}
