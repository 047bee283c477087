#![allow(clippy::unwrap_used)]
//! A pushed certificate that fails to load on the secondary is retried by `tandem reload` there, with the files
//! the push installed, and only with those. Two `tandem run` processes on loopback (127.0.0.191 primary,
//! 127.0.0.192 secondary, VIPs not managed); the primary serves a TLS service from the start and pushes it with
//! its certificate P. On the secondary `horizon.pem` is a FIFO handing out scripted bytes per open: the push's
//! install finds P there already (nothing to write), the proxy's load then reads another certificate C, so the
//! secondary takes the push (same digest as the primary) but keeps its running plain-HTTP service: status `not_applied`,
//! `tandem_config_not_applied{service="horizon"} 1`. A `tandem reload` there while the file reads C is refused (not
//! what the primary pushed: the secondary never serves files edited on it); one while it reads P serves the
//! service (metric 0), with the pushed `cluster.toml`, generation and digest untouched; the next is "unchanged".

mod common;

use common::{Node, serve_fifo, tandem, text, wait_for};
use std::path::Path;

const PORTS: (u16, u16) = (46804, 47888);
const ADMIN: u16 = 49190;

fn cluster_toml(tls: &str) -> String {
    format!(
        r#"[cluster]
name = "secondary-tls-retry"
[heartbeat]
interval_ms = 50
dead_ms = 250
warn_ms = 150
init_dead_ms = 500
[[service]]
label = "horizon"
vip = "127.0.0.195"
ports = [41449]
mode = "http"
{tls}
[[service.server]]
label = "ctl-1"
address = "127.0.0.196"
port = 41098
"#
    )
}

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

/// A self-signed ECDSA P-256 certificate for horizon.example.org: one PEM file, certificate then key.
fn certificate() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["horizon.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// Whether `node`'s `/metrics` has `tandem_config_not_applied{service="horizon"} value`.
fn not_applied_metric(node: &Node, value: u8) -> bool {
    let line = format!("tandem_config_not_applied{{service=\"horizon\"}} {value}");
    node.metrics().lines().any(|l| l == line)
}

#[test]
fn a_reload_on_the_secondary_retries_a_pushed_certificate_with_the_installed_files_only() {
    let root = tempfile::tempdir().unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(root.path().join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let tls = r#"tls = { certificates = ["horizon.pem"] }"#;
    let mut lb1 = node(
        root.path(),
        "lb1",
        "primary",
        "127.0.0.191",
        "127.0.0.192",
        tls,
    );
    let mut lb2 = node(
        root.path(),
        "lb2",
        "secondary",
        "127.0.0.192",
        "127.0.0.191",
        "",
    );
    let (pushed, other) = (certificate(), certificate());
    std::fs::write(lb1.dir.join("horizon.pem"), &pushed).unwrap();
    serve_fifo(
        lb2.dir.join("horizon.pem"),
        vec![
            // The push: install's comparison reads P (so the FIFO stays), the proxy's load C.
            pushed.clone(),
            other.clone(),
            // Reload: the check reads C.
            other,
            // Reload: the check and the proxy read P (and P stays, as a regular file).
            pushed.clone(),
            pushed.clone(),
        ],
    );
    lb1.start(&[]);
    lb2.start(&[]);

    // The secondary takes the push (the primary's digest and generation) but keeps serving its plain-HTTP horizon.
    let primary = || lb1.status()["config"].clone();
    let tls_of = |node: &Node| node.status()["services"][0]["traffic"]["tls"].clone();
    wait_for(
        "the secondary on the pushed config, not serving horizon",
        || {
            let config = lb2.status()["config"].clone();
            config["digest"].is_string()
                && config["digest"] == primary()["digest"]
                && config["not_applied_services"][0] == "horizon"
        },
    );
    let config = lb2.status()["config"].clone();
    assert_eq!(config["generation"], primary()["generation"]);
    assert!(
        config["not_applied"][0].as_str().is_some_and(|p| p.starts_with(
            "TLS service \"horizon\" keeps its running configuration and certificates: horizon.pem: the file \
             changed after the configuration was checked"
        )),
        "{config}"
    );
    assert!(tls_of(&lb2).is_null(), "{}", lb2.status());
    assert!(not_applied_metric(&lb2, 1), "{}", lb2.metrics());
    assert!(not_applied_metric(&lb1, 0), "{}", lb1.metrics());
    let pushed_toml = std::fs::read_to_string(lb2.dir.join("cluster.toml")).unwrap();
    assert_eq!(pushed_toml, cluster_toml(tls));

    // The installed file now reads another certificate than the pushed one: refused, nothing changes.
    let reload = lb2.cli(&["reload"]);
    assert_eq!(reload.status.code(), Some(1), "{}", text(&reload));
    assert!(
        text(&reload).contains("are not the ones the primary pushed"),
        "{}",
        text(&reload)
    );
    assert_eq!(lb2.status()["config"]["not_applied_services"][0], "horizon");

    // It reads the pushed certificate again (say, a permission fixed): the reload serves the service.
    let reload = lb2.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    let said = text(&reload);
    assert!(
        said.contains("retried the configuration pushed by the primary")
            && said.contains("1 changed"),
        "{said}"
    );
    let status = lb2.status();
    assert!(status["config"]["not_applied"].is_null(), "{status}");
    assert_eq!(status["config"]["digest"], primary()["digest"]);
    assert_eq!(status["config"]["generation"], primary()["generation"]);
    let horizon = &status["services"][0];
    assert_eq!(horizon["label"], "horizon", "{status}");
    assert_eq!(
        horizon["traffic"]["tls"]["certificates"][0]["file"], "horizon.pem",
        "{status}"
    );
    assert!(not_applied_metric(&lb2, 0), "{}", lb2.metrics());
    assert_eq!(
        std::fs::read_to_string(lb2.dir.join("cluster.toml")).unwrap(),
        pushed_toml
    );
    // The pair stays in step: the retry sent nothing that would make the primary push again or differ.
    wait_for("the pair in sync", || {
        lb1.status()["config"]["sync"] == "in sync" && lb2.status()["config"]["sync"] == "in sync"
    });

    // Served whole now: unchanged.
    let reload = lb2.cli(&["reload"]);
    assert!(reload.status.success(), "{}", text(&reload));
    assert!(text(&reload).contains("unchanged"), "{}", text(&reload));
}
