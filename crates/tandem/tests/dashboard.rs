#![allow(clippy::unwrap_used)]
//! The monitoring files an operator imports name only metrics a running pair serves: every `tandem_*` name in the
//! Grafana dashboard (`deploy/grafana/tandem.json`) and in the alert rules (`deploy/prometheus/tandem-alerts.yml`)
//! is scraped from the two `/metrics` endpoints of a live pair on loopback (127.0.0.91 / 127.0.0.92); and every
//! family those endpoints serve is documented in `docs/metrics.md`. The pair is scraped on its read-only
//! `[metrics] listen` listeners, which serve `GET /metrics` and nothing else.

mod common;

use common::{KillOnDrop, repo_root, tandem};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

struct Node {
    dir: PathBuf,
    admin: String,
    metrics: String,
    _child: KillOnDrop,
}

/// `METHOD path` on `addr`: the status code and the body.
fn http(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    http(addr, "GET", path).and_then(|(code, body)| (code == 200).then_some(body))
}

fn start(root: &Path, name: &str, role: &str, address: &str, peer: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root.join("secret"), dir.join("secret")).unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        "[cluster]\nname = \"dashboard-test\"\n[heartbeat]\ninterval_ms = 50\ndead_ms = 250\nwarn_ms = 150\n\
         init_dead_ms = 500\n[health_check]\ninterval_ms = 200\nrise = 1\nfall = 2\n\
         [[service]]\nlabel = \"db\"\nvip = \"127.0.0.93\"\nports = [41090]\nmode = \"tcp\"\n\
         persistence = { mode = \"source-ip\", timeout_s = 60, table_size = 100 }\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.94\"\nport = 41090\n\
         [[service]]\nlabel = \"web\"\nvip = \"127.0.0.93\"\nports = [41091]\nmode = \"http\"\n\
         [[service.server]]\nlabel = \"app-1\"\naddress = \"127.0.0.94\"\nport = 41091\n\
         [[service]]\nlabel = \"horizon\"\nvip = \"127.0.0.93\"\nports = [41092]\nmode = \"http\"\n\
         tls = { certificates = [\"horizon.pem\"] }\n\
         [[service.server]]\nlabel = \"app-1\"\naddress = \"127.0.0.94\"\nport = 41091\n",
    )
    .unwrap();
    // The TLS service's certificate (the TLS families are served for it), the same file on both nodes.
    let certificate = root.join("horizon.pem");
    if !certificate.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["horizon.example.org".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(
            &certificate,
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )
        .unwrap();
    }
    std::fs::copy(&certificate, dir.join("horizon.pem")).unwrap();
    let admin = format!("{address}:49082");
    let metrics = format!("{address}:49101");
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"{name}\"\nrole = \"{role}\"\ninterface = \"lo\"\naddress = \"{address}\"\n\
             peer = \"{peer}\"\nheartbeat_port = 46696\nsync_port = 47780\nmanage_vips = false\n\
             state_dir = \"state\"\n[admin]\nlisten = \"{admin}\"\nsocket = \"admin.sock\"\n\
             [metrics]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    Node {
        dir,
        admin,
        metrics,
        _child: KillOnDrop(Some(child)),
    }
}

/// Metric family names in Prometheus text: `# TYPE` lines and sample lines.
fn families(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
            // A histogram's or summary's samples carry suffixes of their family's name.
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(family) = name.strip_suffix(suffix) {
                    names.insert(family.to_string());
                }
            }
        }
    }
    names
}

/// Every `tandem_*` metric name a file mentions.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tandem_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded_by_word {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alert_rules_name_only_metrics_a_pair_serves() {
    let root = tempfile::tempdir().unwrap();
    let keygen = tandem()
        .arg("keygen")
        .arg(root.path().join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let lb1 = start(root.path(), "lb1", "primary", "127.0.0.91", "127.0.0.92");
    let lb2 = start(root.path(), "lb2", "secondary", "127.0.0.92", "127.0.0.91");

    // Wait until the pair is formed and replication is up, so the pair and sync families are all there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (scraped, missing) = loop {
        let mut scraped = BTreeSet::new();
        for node in [&lb1, &lb2] {
            if let Some(text) = http_get(&node.metrics, "/metrics") {
                scraped.extend(families(&text));
            }
        }
        let wanted: BTreeSet<String> = names_in(&repo_root().join("deploy/grafana/tandem.json"))
            .into_iter()
            .chain(names_in(
                &repo_root().join("deploy/prometheus/tandem-alerts.yml"),
            ))
            .collect();
        let missing: Vec<String> = wanted.difference(&scraped).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (scraped, missing);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        missing.is_empty(),
        "named in deploy/grafana/tandem.json or deploy/prometheus/tandem-alerts.yml but not served by /metrics: \
         {missing:?}\n(served: {scraped:?})\nlb1 log:\n{}",
        std::fs::read_to_string(lb1.dir.join("log")).unwrap_or_default()
    );
    assert!(scraped.len() > 20, "{scraped:?}");

    // The metrics listener serves nothing but GET /metrics; the admin listener serves metrics too.
    for path in ["/", "/api/status", "/api/admin", "/metrics/../api/status"] {
        let answer = http(&lb1.metrics, "GET", path).map(|(code, _)| code);
        assert_eq!(answer, Some(404), "GET {path} on the metrics listener");
    }
    let post = http(&lb1.metrics, "POST", "/metrics").map(|(code, _)| code);
    assert_eq!(post, Some(405));
    let takeover = http(&lb1.metrics, "POST", "/api/takeover").map(|(code, _)| code);
    assert_eq!(takeover, Some(404));
    assert!(http_get(&lb1.admin, "/metrics").is_some_and(|m| m.contains("tandem_node_state")));

    // The other direction: whatever a live pair serves, the operator can look up.
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    let documented = |name: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        doc.contains(&format!("`{name}`")) || doc.contains(&format!("`{base}`"))
    };
    let undocumented: Vec<&String> = scraped
        .iter()
        .filter(|n| n.starts_with("tandem_") || n.starts_with("process_"))
        .filter(|n| !documented(n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served by /metrics but missing from docs/metrics.md: {undocumented:?}"
    );
    for family in [
        "tandem_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(scraped.contains(family), "{family} not served: {scraped:?}");
    }
}
