//! Session tickets shared by the pair: a session `openssl s_client` got from one proxy resumes on another proxy
//! started with the same ticket secret (what the other node of a pair is after a failover), by TLS 1.3 and TLS 1.2
//! tickets; a proxy with another secret, or with none (rustls' own random keys, the control), makes a full handshake.
//! Four proxies in this process, each a TLS service "web" on its own 127.40.20.x address, one certificate file.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::tls::*;
use common::*;
use tandem_proxy::{Proxy, ProxyOptions, TicketSecret};

const SECRET: &[u8] = b"the pair's shared secret, 32+ bytes long";

async fn start_with_secret(
    vip: SocketAddr,
    backend: SocketAddr,
    certificate: &tandem_config::model::CertificateFile,
    secret: Option<&[u8]>,
) -> Proxy {
    let cfg = cluster(vec![tls_service(
        "web",
        vip,
        backend,
        vec![certificate.clone()],
        None,
    )]);
    let options = ProxyOptions {
        ticket_secret: secret.map(TicketSecret::from_cluster_secret),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start_with_options(cfg, Default::default(), options).unwrap();
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    proxy
}

/// `openssl s_client` to `vip` for horizon.example.org with `args`, sending one HTTP/1.0 request and reading the
/// answer (so that the TLS 1.3 tickets, sent after the handshake, are in); stdout and stderr together.
async fn s_client(vip: SocketAddr, args: &[&str]) -> String {
    let program = require_binary("openssl");
    let mut all: Vec<String> = [
        "s_client",
        "-connect",
        &vip.to_string(),
        "-servername",
        "horizon.example.org",
        "-ign_eof",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(program)
            .args(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(input);
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_proxy_with_the_same_secret_only() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = HttpBackend::start("b1", sa("127.40.20.10:8080")).await;
    let cert = certificate(dir.path(), "horizon.pem", &["horizon.example.org"]);
    let (a, b, other, none) = (
        sa("127.40.20.1:8443"),
        sa("127.40.20.2:8443"),
        sa("127.40.20.3:8443"),
        sa("127.40.20.4:8443"),
    );
    let _a = start_with_secret(a, backend.addr, &cert, Some(SECRET)).await;
    let proxy_b = start_with_secret(b, backend.addr, &cert, Some(SECRET)).await;
    let _other = start_with_secret(
        other,
        backend.addr,
        &cert,
        Some(b"another pair's secret, 32+ bytes long"),
    )
    .await;
    let _none = start_with_secret(none, backend.addr, &cert, None).await;

    for (version, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let sess = dir.path().join(format!("session{version}"));
        let sess = sess.to_str().unwrap();
        let first = s_client(a, &[version, "-sess_out", sess]).await;
        assert!(first.contains(&format!("New, {name}")), "{first}");
        assert!(first.contains(" 200 OK"), "{first}");
        // The other node of the pair: resumed, and it serves the request.
        let resumed = s_client(b, &[version, "-sess_in", sess]).await;
        assert!(resumed.contains(&format!("Reused, {name}")), "{resumed}");
        assert!(resumed.contains(" 200 OK"), "{resumed}");
        // Another secret, and rustls' per-process keys: a full handshake, served all the same.
        for vip in [other, none] {
            let full = s_client(vip, &[version, "-sess_in", sess]).await;
            assert!(full.contains(&format!("New, {name}")), "{vip}: {full}");
            assert!(full.contains(" 200 OK"), "{vip}: {full}");
        }
    }
    let tls = &proxy_b.service("web").unwrap().metrics.tls;
    assert_eq!(tls.resumed.load(Ordering::Relaxed), 2);
}
