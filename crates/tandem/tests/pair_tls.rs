#![allow(clippy::unwrap_used)]
//! Certificates follow the config: two `tandem run` processes on loopback (127.0.0.81 primary, 127.0.0.82
//! secondary, VIPs not managed). The primary's `tandem reload` of a cluster.toml with a TLS service pushes the
//! certificate files with it: the secondary ends with identical files and the same digest; a renewed certificate
//! under the same name (cluster.toml untouched) is picked up by the reload and pushed too. Then a hostile
//! "primary" (this test, speaking the sync protocol with the shared secret) pushes a broken certificate, a file
//! named like the node's own secret, and a file the config does not name: each is refused and the secondary keeps
//! its running config and files.

mod common;

use common::{Node, tandem, terminate, text, wait_for};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_sync::{
    ConfigFile, ConfigRole, ConfigSink, ConfigVersion, Identity, LocalConfig, Secret, SyncParams,
    SyncSettings, spawn_sync,
};

const PORTS: (u16, u16) = (46794, 47878);
const ADMIN: u16 = 49180;

fn cluster_toml(tls: &str) -> String {
    format!(
        r#"[cluster]
name = "pair-tls"
[heartbeat]
interval_ms = 50
dead_ms = 250
warn_ms = 150
init_dead_ms = 500
[[service]]
label = "horizon"
vip = "127.0.0.85"
ports = [41443]
mode = "http"
{tls}
[[service.server]]
label = "ctl-1"
address = "127.0.0.86"
port = 41080
"#
    )
}

fn node(root: &Path, name: &str, role: &str, address: &str, peer: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.toml"), cluster_toml("")).unwrap();
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

/// A self-signed ECDSA P-256 certificate and its key, valid for years: one PEM file.
fn certificate(name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

fn reload(node: &Node) {
    let output = node.cli(&["reload"]);
    assert!(output.status.success(), "{}", text(&output));
}

fn in_step(a: &Node, b: &Node) -> bool {
    let (s1, s2) = (a.status()["config"].clone(), b.status()["config"].clone());
    s1["digest"].is_string()
        && s1["digest"] == s2["digest"]
        && s1["generation"] == s2["generation"]
        && s1["sync"] == "in sync"
}

#[test]
fn certificates_follow_the_config_and_a_bad_push_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(root.path().join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let mut lb1 = node(root.path(), "lb1", "primary", "127.0.0.81", "127.0.0.82");
    let mut lb2 = node(root.path(), "lb2", "secondary", "127.0.0.82", "127.0.0.81");
    lb1.start(&[]);
    lb2.start(&[]);
    wait_for("the pair in sync", || {
        in_step(&lb1, &lb2) && lb2.status()["replication"]["connected"] == true
    });

    // A TLS service with two certificates (one in a subdirectory) and a redirect: pushed with its files.
    let tls =
        r#"tls = { certificates = ["horizon.pem", "certs/keystone.pem"], redirect_http = 41081 }"#;
    let horizon = certificate("horizon.example.org");
    let keystone = certificate("keystone.example.org");
    std::fs::create_dir_all(lb1.dir.join("certs")).unwrap();
    std::fs::write(lb1.dir.join("horizon.pem"), &horizon).unwrap();
    std::fs::write(lb1.dir.join("certs/keystone.pem"), &keystone).unwrap();
    std::fs::write(lb1.dir.join("cluster.toml"), cluster_toml(tls)).unwrap();
    let before = lb1.status()["config"]["digest"].clone();
    reload(&lb1);
    assert_ne!(lb1.status()["config"]["digest"], before);
    wait_for("the secondary on the TLS config", || in_step(&lb1, &lb2));
    let read = |node: &Node, name: &str| std::fs::read_to_string(node.dir.join(name)).ok();
    assert_eq!(read(&lb2, "horizon.pem").as_deref(), Some(horizon.as_str()));
    assert_eq!(
        read(&lb2, "certs/keystone.pem").as_deref(),
        Some(keystone.as_str())
    );
    assert_eq!(read(&lb2, "cluster.toml"), read(&lb1, "cluster.toml"));
    assert!(!lb2.dir.join(".tandem-push").exists(), "staging removed");
    // The secondary's own check of what it received agrees on the digest.
    let check = lb2.cli(&["check", "--json"]);
    assert!(check.status.success(), "{}", text(&check));
    let checked: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(checked["digest"], lb1.status()["config"]["digest"]);
    assert_eq!(
        checked["services"][0]["tls"]["certificates"][1]["names"][0],
        "keystone.example.org"
    );

    // A renewed certificate, cluster.toml untouched: the reload re-reads it, the digest changes, the file is pushed.
    let renewed = certificate("horizon.example.org");
    std::fs::write(lb1.dir.join("horizon.pem"), &renewed).unwrap();
    let before = lb1.status()["config"].clone();
    reload(&lb1);
    let after = lb1.status()["config"].clone();
    assert_ne!(after["digest"], before["digest"]);
    wait_for("the renewed certificate on the secondary", || {
        in_step(&lb1, &lb2) && read(&lb2, "horizon.pem").as_deref() == Some(renewed.as_str())
    });
    assert_eq!(
        read(&lb2, "horizon.pem.prev").as_deref(),
        Some(horizon.as_str())
    );
    let running = lb2.status()["config"].clone();

    // The primary goes away; this test speaks for it, with the shared secret, and pushes bad sets.
    let mut child = lb1.child.take().unwrap();
    assert!(terminate(&mut child).is_some());
    let secret = std::fs::read(root.path().join("secret")).unwrap();
    let bad_certificate = vec![ConfigFile {
        name: "horizon.pem".into(),
        bytes: b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
    }];
    let reason = hostile_push(&secret, cluster_toml(tls), {
        let mut files = bad_certificate;
        files.push(ConfigFile {
            name: "certs/keystone.pem".into(),
            bytes: keystone.clone().into_bytes(),
        });
        files
    });
    assert!(reason.contains("horizon.pem"), "{reason}");
    // A file named like one of the node's own (its secret), even as a valid certificate: refused. (A name with
    // `..` or an absolute one never leaves a primary, and is refused by the secondary's sync layer before the
    // daemon sees it: tandem-sync's config_push tests.)
    let own = hostile_push(
        &secret,
        cluster_toml(r#"tls = { certificates = ["secret"] }"#),
        vec![ConfigFile {
            name: "secret".into(),
            bytes: renewed.clone().into_bytes(),
        }],
    );
    assert!(
        own.contains("would replace one of this node's own files"),
        "{own}"
    );
    let not_named = hostile_push(
        &secret,
        cluster_toml(""),
        vec![ConfigFile {
            name: "node.pem".into(),
            bytes: renewed.clone().into_bytes(),
        }],
    );
    assert!(
        not_named.contains("not a certificate the pushed cluster.toml names"),
        "{not_named}"
    );
    // Nothing changed on the secondary.
    assert_eq!(lb2.status()["config"]["digest"], running["digest"]);
    assert_eq!(read(&lb2, "horizon.pem").as_deref(), Some(renewed.as_str()));
    assert_eq!(read(&lb2, "cluster.toml"), read(&lb1, "cluster.toml"));
    assert!(!lb2.dir.join("node.pem").exists());
    assert_eq!(
        std::fs::read(lb2.dir.join("secret")).unwrap(),
        std::fs::read(root.path().join("secret")).unwrap()
    );
    assert!(!lb2.dir.join(".tandem-push").exists(), "staging removed");
}

/// Refuses nothing; the hostile primary never receives a push.
struct NoSink;

impl ConfigSink for NoSink {
    fn offer(&mut self, _: &[u8], _: &[ConfigFile], _: u64, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Pushes `cluster` and `files` to the secondary as the primary would (from 127.0.0.81), and returns the
/// secondary's refusal as the primary's status reports it.
fn hostile_push(secret: &[u8], cluster: String, files: Vec<ConfigFile>) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let sync_port = PORTS.1;
        let params = SyncParams {
            local: SocketAddr::from(([127, 0, 0, 81], sync_port)),
            peer: SocketAddr::from(([127, 0, 0, 82], sync_port)),
            identity: Identity::new("pair-tls", Secret::from_file_contents(secret).unwrap()),
            role: ConfigRole::Primary,
            settings: SyncSettings::default(),
        };
        let local = LocalConfig {
            bytes: cluster.into_bytes(),
            files,
            version: ConfigVersion {
                generation: 999,
                digest: "0".repeat(64),
            },
        };
        let tables = Arc::new(Mutex::new(tandem_stick::StickTables::new()));
        let handle = spawn_sync(
            params,
            tables,
            tandem_stick::Clock::new(),
            Box::new(NoSink),
            Some(local),
            false,
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reason = handle.status().borrow().config.reason.clone();
            if let Some(reason) = reason.as_ref().filter(|r| r.contains("peer refused")) {
                return reason.clone();
            }
            assert!(Instant::now() < deadline, "no refusal: {reason:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
