//! TLS termination with real clients: curl (HTTP/1.1 and HTTP/2, SNI by --resolve), `openssl s_client` (SNI choice,
//! version refusal, resumption by ticket and by session id), garbage, truncated and stalled handshakes, many idle TLS
//! connections, the redirect listener, certificate swaps on reload. Certificates are ECDSA P-256 from rcgen. Every
//! address is on 127.0.0.0/8.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tandem_config::model::{ClusterConfig, PersistenceMode};
use tandem_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start_up(cfg: Arc<ClusterConfig>, label: &str) -> Proxy {
    let proxy = start(cfg);
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, label)).await;
    proxy
}

/// Runs a client binary off the runtime's threads (it talks to the proxy in this process).
async fn run(program: &str, args: Vec<String>, stdin: &'static [u8]) -> Output {
    let program = require_binary(program);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, stdin).unwrap();
        // s_client quits at the end of its input (without -ign_eof); keep it open briefly so it reads the answer.
        std::thread::sleep(Duration::from_millis(300));
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// curl over HTTPS to `name` (resolved to `vip`), trusting only `trust`; returns (exit ok, stdout with headers).
async fn curl(vip: SocketAddr, name: &str, trust: &Path, extra: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-D".into(),
        "-".into(),
        "--max-time".into(),
        "10".into(),
        "--resolve".into(),
        format!("{name}:{}:{}", vip.port(), vip.ip()),
        "--cacert".into(),
        trust.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("https://{name}:{}/path?q=1", vip.port()));
    let out = run("curl", args, b"").await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_lowercase(),
    )
}

/// `openssl s_client` to `vip` with `args`, sending an HTTP/1.0 request; stdout and stderr together.
async fn s_client(vip: SocketAddr, args: &[&str]) -> String {
    let mut all: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        vip.to_string(),
        "-ign_eof".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = run("openssl", all, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_and_h2_with_sni_choice_and_forwarded_proto() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.1.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.1.10:8080")).await;
    let certs = vec![
        certificate(dir.path(), "horizon.pem", &["horizon.example.org"]),
        certificate(dir.path(), "api.pem", &["*.api.example.org"]),
    ];
    let _proxy = start_up(
        cluster(vec![tls_service("web", vip, backend.addr, certs, None)]),
        "web",
    )
    .await;
    let (d, horizon, api) = (dir.path(), "horizon.pem", "api.pem");

    // HTTP/1.1 (the native engine), the first certificate by its exact name; a client's X-Forwarded-Proto is
    // replaced by ours.
    let (ok, out) = curl(
        vip,
        "horizon.example.org",
        &ca(d, horizon),
        &["--http1.1", "-H", "X-Forwarded-Proto: http"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.starts_with("http/1.1 200"), "{out}");
    assert!(out.contains("x-seen-proto: https\r\n"), "{out}");
    assert!(out.contains("x-seen-xff: 127.0.0.1"), "{out}");
    assert!(
        out.contains("x-seen-host: horizon.example.org:8443"),
        "{out}"
    );
    // HTTP/2 towards the client, HTTP/1.1 towards the server.
    let (ok, out) = curl(vip, "horizon.example.org", &ca(d, horizon), &["--http2"]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("http/2 200"), "{out}");
    assert!(out.contains("x-seen-proto: https"), "{out}");
    assert!(out.contains("x-seen-version: http/1.1"), "{out}");
    assert!(
        out.contains("x-seen-host: horizon.example.org:8443"),
        "{out}"
    );
    // The wildcard certificate for a name under it: trusting only it works, trusting the first fails.
    let (ok, out) = curl(vip, "keystone.api.example.org", &ca(d, api), &["--http2"]).await;
    assert!(ok, "{out}");
    let (ok, _) = curl(vip, "keystone.api.example.org", &ca(d, horizon), &[]).await;
    assert!(!ok, "the wildcard name must get the wildcard certificate");
    // No match: the first certificate (curl then refuses the name, but the chain is the first one's).
    let (ok, _) = curl(
        vip,
        "other.example.org",
        &ca(d, horizon),
        &[
            "--connect-to",
            "other.example.org:8443:horizon.example.org:8443",
        ],
    )
    .await;
    assert!(
        !ok,
        "the first certificate does not cover other.example.org"
    );
    let out = s_client(
        vip,
        &[
            "-servername",
            "other.example.org",
            "-CAfile",
            ca(d, horizon).to_str().unwrap(),
            "-verify_return_error",
        ],
    )
    .await;
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(backend.requests.load(Ordering::Relaxed) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sni_version_refusal_and_resumption() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.2.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.2.10:8080")).await;
    let certs = vec![
        certificate(dir.path(), "horizon.pem", &["horizon.example.org"]),
        certificate(dir.path(), "api.pem", &["*.api.example.org"]),
    ];
    let proxy = start_up(
        cluster(vec![tls_service("web", vip, backend.addr, certs, None)]),
        "web",
    )
    .await;
    let d = dir.path();
    let api_ca = ca(d, "api.pem");
    let horizon_ca = ca(d, "horizon.pem");

    // SNI: the wildcard certificate verifies against its own certificate only.
    let out = s_client(
        vip,
        &[
            "-servername",
            "nova.api.example.org",
            "-CAfile",
            api_ca.to_str().unwrap(),
            "-verify_return_error",
        ],
    )
    .await;
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains(" 200 OK"), "{out}");
    let out = s_client(
        vip,
        &[
            "-servername",
            "nova.api.example.org",
            "-CAfile",
            horizon_ca.to_str().unwrap(),
            "-verify_return_error",
        ],
    )
    .await;
    assert!(!out.contains("Verify return code: 0 (ok)"), "{out}");
    // No SNI at all: the first certificate.
    let out = s_client(
        vip,
        &[
            "-noservername",
            "-CAfile",
            horizon_ca.to_str().unwrap(),
            "-verify_return_error",
        ],
    )
    .await;
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    // TLS 1.1 (and older) is refused.
    let before = proxy.service("web").unwrap().metrics.tls.failures();
    let out = s_client(vip, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    assert!(!out.contains(" 200 OK"), "{out}");
    assert!(out.contains("Cipher is (NONE)"), "{out}");
    let after = proxy.service("web").unwrap().metrics.tls.failures();
    assert_eq!(after[2], before[2] + 1, "no shared version: {after:?}");

    // TLS 1.3 resumption with a ticket.
    let sess = d.join("s13");
    let first = s_client(vip, &["-tls1_3", "-sess_out", sess.to_str().unwrap()]).await;
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let again = s_client(vip, &["-tls1_3", "-sess_in", sess.to_str().unwrap()]).await;
    assert!(again.contains("Reused, TLSv1.3"), "{again}");
    // TLS 1.2 resumption with a ticket, and by session id without tickets.
    for (name, extra) in [("s12t", None), ("s12id", Some("-no_ticket"))] {
        let sess = d.join(name);
        let mut args = vec!["-tls1_2", "-sess_out", sess.to_str().unwrap()];
        args.extend(extra);
        let first = s_client(vip, &args).await;
        assert!(first.contains("New, TLSv1.2"), "{first}");
        args[1] = "-sess_in";
        let again = s_client(vip, &args).await;
        assert!(again.contains("Reused, TLSv1.2"), "{name}: {again}");
    }
    let tls = &proxy.service("web").unwrap().metrics.tls;
    assert!(tls.resumed.load(Ordering::Relaxed) >= 3);
    assert!(tls.tls12.load(Ordering::Relaxed) >= 4);
    // The client that refused the certificate aborted its handshake: four completed TLS 1.3 ones.
    assert!(tls.tls13.load(Ordering::Relaxed) >= 4);
    // The status snapshot (what /metrics renders) carries the same figures and the certificates.
    let st = proxy.status();
    let web = st.services.iter().find(|s| s.label == "web").unwrap();
    let t = web.tls.as_ref().unwrap();
    assert_eq!(t.handshakes, tls.handshakes.load(Ordering::Relaxed));
    assert_eq!(t.failures[2], after[2]);
    let files: Vec<&str> = t.certificates.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(files, ["horizon.pem", "api.pem"]);
    assert_eq!(t.certificates[1].names, ["*.api.example.org"]);
    assert!(t.certificates[0].not_after_unix > 0);
}

/// The first bytes a TLS 1.3 client sends (its ClientHello), from rustls' client.
fn client_hello() -> Vec<u8> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "horizon.example.org".try_into().unwrap())
            .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Whether the proxy closes `s` within `within` (EOF or reset, after any bytes it sends).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// `read()` once `done` holds of it, or after a second.
async fn settled<T>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let v = read();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_stalled_handshakes_fail_and_the_service_serves() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.3.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.3.10:8080")).await;
    let certs = vec![certificate(
        dir.path(),
        "horizon.pem",
        &["horizon.example.org"],
    )];
    let mut svc = tls_service("web", vip, backend.addr, certs, None);
    // The handshake timeout is min(10 s, client timeout).
    svc.proxy.client_timeout_ms = 1000;
    let proxy = start_up(cluster(vec![svc]), "web").await;
    let tls = || proxy.service("web").unwrap().metrics.tls.failures();

    // Garbage (a plain HTTP request to the TLS port): an alert or a close at once, counted as a protocol error.
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_millis(500)).await);
    // Random bytes with a handshake record header.
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x10, 1, 0, 0, 0x0c, 0xff, 0xfe, 0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ])
    .await
    .unwrap();
    assert!(closed_within(&mut s, Duration::from_millis(500)).await);
    // (The handshake drops the socket before the failure is counted: wait for the count.)
    let f = settled(tls, |f| f[1] >= 2).await;
    assert_eq!(f[1], 2, "protocol errors: {f:?}");

    // A truncated ClientHello, then the client closes: counted as closed.
    let hello = client_hello();
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(&hello[..hello.len() / 2]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed_within(&mut s, Duration::from_millis(500)).await);
    // A client that stalls mid-handshake is closed at the handshake timeout (1 s here), not before.
    let mut stalled = TcpStream::connect(vip).await.unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let started = Instant::now();
    assert!(!closed_within(&mut stalled, Duration::from_millis(600)).await);
    // Meanwhile the service serves.
    let (ok, out) = curl(
        vip,
        "horizon.example.org",
        &ca(dir.path(), "horizon.pem"),
        &[],
    )
    .await;
    assert!(ok, "{out}");
    assert!(closed_within(&mut stalled, Duration::from_millis(1500)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let f = settled(tls, |f| f[0] >= 1 && f[3] >= 1).await;
    assert_eq!((f[0], f[3]), (1, 1), "timeout and closed: {f:?}");
    let t = &proxy.service("web").unwrap().metrics.tls;
    assert_eq!(t.handshakes.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_and_secure_cookie() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.4.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.4.10:8080")).await;
    let certs = vec![certificate(
        dir.path(),
        "horizon.pem",
        &["horizon.example.org"],
    )];
    let mut svc = tls_service("web", vip, backend.addr, certs, Some(8080));
    svc.persistence = persistence(PersistenceMode::HttpCookie, 0);
    let _proxy = start_up(cluster(vec![svc]), "web").await;

    let out = run(
        "curl",
        vec![
            "-sS".into(),
            "-D".into(),
            "-".into(),
            "-o".into(),
            "/dev/null".into(),
            "--max-time".into(),
            "5".into(),
            "-H".into(),
            "Host: horizon.example.org".into(),
            "http://127.40.4.1:8080/dashboard/?a=b".into(),
        ],
        b"",
    )
    .await;
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 308"), "{head}");
    assert!(
        head.contains("location: https://horizon.example.org:8443/dashboard/?a=b"),
        "{head}"
    );
    assert_eq!(backend.requests.load(Ordering::Relaxed), 0);
    // Following it lands on the TLS service; its persistence cookie is Secure.
    let (ok, out) = curl(
        vip,
        "horizon.example.org",
        &ca(dir.path(), "horizon.pem"),
        &["--http1.1"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("set-cookie: serverid=a; path=/; secure"),
        "{out}"
    );
}

async fn get_over(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: horizon.example.org\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_certificates_and_keeps_established_connections() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.5.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.5.10:8080")).await;
    let old = certificate(dir.path(), "old.pem", &["horizon.example.org"]);
    let proxy = start_up(
        cluster(vec![tls_service("web", vip, backend.addr, vec![old], None)]),
        "web",
    )
    .await;
    let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
    let mut established = connector(&ca(dir.path(), "old.pem"))
        .connect(name.clone(), TcpStream::connect(vip).await.unwrap())
        .await
        .unwrap();
    assert!(get_over(&mut established).await.starts_with("HTTP/1.1 200"));

    // A new certificate (another file): the service changes, new connections get the new certificate.
    let new = certificate(dir.path(), "new.pem", &["horizon.example.org"]);
    let report = proxy.reload(cluster(vec![tls_service(
        "web",
        vip,
        backend.addr,
        vec![new.clone()],
        None,
    )]));
    assert_eq!(report.changed, ["web"]);
    assert!(report.tls_errors.is_empty(), "{report:?}");
    let fresh = connector(&ca(dir.path(), "new.pem"))
        .connect(name.clone(), TcpStream::connect(vip).await.unwrap())
        .await;
    assert!(fresh.is_ok(), "the new certificate is served");
    assert!(
        connector(&ca(dir.path(), "old.pem"))
            .connect(name.clone(), TcpStream::connect(vip).await.unwrap())
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The established connection goes on with its old configuration.
    assert!(get_over(&mut established).await.starts_with("HTTP/1.1 200"));

    // A file that changed after the check is refused: the running certificate stays.
    let mut tampered = certificate(dir.path(), "tampered.pem", &["horizon.example.org"]);
    tampered.sha256 = new.sha256.clone();
    let tampered_path = tampered.path.clone();
    let with_tampered = cluster(vec![tls_service(
        "web",
        vip,
        backend.addr,
        vec![tampered],
        None,
    )]);
    let report = proxy.reload(with_tampered.clone());
    assert_eq!(report.tls_errors.len(), 1, "{report:?}");
    assert_eq!(report.tls_errors[0].0, "web", "{report:?}");
    assert!(
        report.tls_errors[0].1.starts_with("tampered.pem: ")
            && report.tls_errors[0].1.contains("changed"),
        "{report:?}"
    );
    assert!(
        connector(&ca(dir.path(), "new.pem"))
            .connect(name.clone(), TcpStream::connect(vip).await.unwrap())
            .await
            .is_ok(),
        "the running certificate is still served"
    );
    let served_file = || {
        proxy
            .service("web")
            .unwrap()
            .tls
            .as_ref()
            .unwrap()
            .certificates[0]
            .file
            .clone()
    };
    assert_eq!(served_file(), "new.pem");
    assert_eq!(proxy.tls_errors(), report.tls_errors);
    // The failed service is not recorded as served: the same configuration, once the file holds what was checked,
    // is tried again and served.
    std::fs::copy(dir.path().join("new.pem"), &tampered_path).unwrap();
    let report = proxy.reload(with_tampered.clone());
    assert!(report.tls_errors.is_empty(), "{report:?}");
    assert_eq!(report.changed, ["web"], "{report:?}");
    assert_eq!(served_file(), "tampered.pem");
    assert!(proxy.tls_errors().is_empty());
    assert!(
        connector(&ca(dir.path(), "new.pem"))
            .connect(name, TcpStream::connect(vip).await.unwrap())
            .await
            .is_ok(),
        "the fixed certificate is served"
    );
    let report = proxy.reload(with_tampered);
    assert_eq!(report.unchanged, ["web"], "served now: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_engine_serves_tls_http1_too() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.7.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.7.10:8080")).await;
    let certs = vec![certificate(
        dir.path(),
        "horizon.pem",
        &["horizon.example.org"],
    )];
    let proxy = Proxy::start_with(
        cluster(vec![tls_service("web", vip, backend.addr, certs, None)]),
        Default::default(),
        tandem_stick::Clock::new(),
        Arc::new(tandem_proxy::HyperEngine),
    )
    .unwrap();
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    for version in ["--http1.1", "--http2"] {
        let (ok, out) = curl(
            vip,
            "horizon.example.org",
            &ca(dir.path(), "horizon.pem"),
            &[version, "-H", "X-Forwarded-Proto: http"],
        )
        .await;
        assert!(ok, "{out}");
        assert!(out.contains(" 200"), "{out}");
        // Ours replaces the client's.
        assert!(out.contains("x-seen-proto: https\r\n"), "{version}: {out}");
    }
    let tls = &proxy.service("web").unwrap().metrics.tls;
    assert_eq!(tls.http1.load(Ordering::Relaxed), 1);
    assert_eq!(tls.h2.load(Ordering::Relaxed), 1);
}

/// The HTTPS service "web" on `vip` (certificate `horizon.pem` for horizon.example.org in `dir`) in front of one
/// backend "b1" on `backend`, up.
async fn horizon(dir: &Path, vip: SocketAddr, backend: SocketAddr) -> (Proxy, HttpBackend) {
    let backend = HttpBackend::start("b1", backend).await;
    let certs = vec![certificate(dir, "horizon.pem", &["horizon.example.org"])];
    let proxy = start_up(
        cluster(vec![tls_service("web", vip, backend.addr, certs, None)]),
        "web",
    )
    .await;
    (proxy, backend)
}

/// Reads one HTTP/1.1 response with a Content-Length or chunked body off `s` (no trailers); returns (head, body
/// length on the wire after the head).
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end + 4]).to_lowercase();
            let body = &data[end + 4..];
            let complete = match head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                Some(n) => body.len() >= n.trim().parse::<usize>().unwrap(),
                None => body.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                return (head, body.to_vec());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed inside a response");
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_engine_over_tls_relays_bodies_and_upgrades() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.8.1:8443");
    let (_proxy, _backend) = horizon(dir.path(), vip, sa("127.40.8.10:8080")).await;
    let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
    let mut s = connector(&ca(dir.path(), "horizon.pem"))
        .connect(name, TcpStream::connect(vip).await.unwrap())
        .await
        .unwrap();
    // Several requests on one TLS connection: a large body up, large and chunked bodies down.
    let upload = vec![b'u'; 300_000];
    s.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&upload).await.unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"b1 300000");
    s.write_all(b"GET /big/1000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.contains("x-seen-proto: https"), "{head}");
    assert_eq!(body.len(), 1_000_000);
    s.write_all(b"GET /chunked/70000 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(body.len() > 70_000);

    // An Upgrade over TLS becomes a tunnel: bytes both ways, decrypted towards the server.
    let baddr = sa("127.40.8.11:8001");
    let listener = bind_retry(baddr).await;
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return; // health check
                    }
                    head.push(b[0]);
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let ws_vip = sa("127.40.8.2:8443");
    let certs = vec![certificate(dir.path(), "ws.pem", &["ws.example.org"])];
    let ws = start_up(
        cluster(vec![tls_service("ws", ws_vip, baddr, certs, None)]),
        "ws",
    )
    .await;
    let name = rustls::pki_types::ServerName::try_from("ws.example.org").unwrap();
    let mut s = connector(&ca(dir.path(), "ws.pem"))
        .connect(name, TcpStream::connect(ws_vip).await.unwrap())
        .await
        .unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    let big = vec![b'w'; 100_000];
    s.write_all(&big).await.unwrap();
    let mut echoed = vec![0u8; big.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, big);
    drop(s);
    ws.shutdown().await;
}

/// A TLS client trusting every certificate in `trust`.
fn connector_for(trust: &[PathBuf]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for file in trust {
        for c in CertificateDer::pem_file_iter(file).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swaps_under_load_fail_no_request() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.9.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.9.10:8080")).await;
    let files: Vec<_> = (0..4)
        .map(|i| certificate(dir.path(), &format!("c{i}.pem"), &["horizon.example.org"]))
        .collect();
    let trust: Vec<PathBuf> = (0..4)
        .map(|i| ca(dir.path(), &format!("c{i}.pem")))
        .collect();
    let cfg = |i: usize| {
        cluster(vec![tls_service(
            "web",
            vip,
            backend.addr,
            vec![files[i].clone()],
            None,
        )])
    };
    let proxy = start_up(cfg(0), "web").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    // Four clients: new connections (handshake each time) and keep-alive requests on them, until stopped.
    for _ in 0..4 {
        let (tls, stop) = (connector_for(&trust), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
                let s = match TcpStream::connect(vip).await {
                    Ok(s) => s,
                    Err(e) => {
                        failed.push(format!("connect: {e}"));
                        continue;
                    }
                };
                let mut s = match tls.connect(name, s).await {
                    Ok(s) => s,
                    Err(e) => {
                        failed.push(format!("handshake: {e}"));
                        continue;
                    }
                };
                for _ in 0..3 {
                    let (head, body) =
                        read_after(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
                    if head.starts_with("http/1.1 200") && body == b"b1" {
                        ok += 1;
                    } else {
                        failed.push(head);
                    }
                }
            }
            (ok, failed)
        }));
    }
    for i in 1..=6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let report = proxy.reload(cfg(i % 4));
        assert_eq!(report.changed, ["web"], "{report:?}");
        assert!(report.tls_errors.is_empty(), "{report:?}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 20, "only {ok} requests");
    // The last swap is what new connections get.
    assert_eq!(
        proxy
            .service("web")
            .unwrap()
            .tls
            .as_ref()
            .unwrap()
            .certificates[0]
            .file,
        "c2.pem"
    );
}

/// Sends `request` on `s` and reads its response.
async fn read_after(
    s: &mut tokio_rustls::client::TlsStream<TcpStream>,
    request: &[u8],
) -> (String, Vec<u8>) {
    s.write_all(request).await.unwrap();
    read_response(s).await
}

/// With the `aws-lc-rs` feature the handshakes are aws-lc-rs': a client offering the hybrid post-quantum group
/// first gets it (ring has no X25519MLKEM768 and would settle on X25519), and the connection serves a request.
#[cfg(feature = "aws-lc-rs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_lc_rs_build_handshakes_on_aws_lc_rs() {
    use rustls::NamedGroup;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    init_tracing();
    assert_eq!(tandem_proxy::tls::PROVIDER_NAME, "aws-lc-rs");
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.10.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.10.10:8080")).await;
    let certs = vec![certificate(
        dir.path(),
        "horizon.pem",
        &["horizon.example.org"],
    )];
    let _proxy = start_up(
        cluster(vec![tls_service("web", vip, backend.addr, certs, None)]),
        "web",
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca(dir.path(), "horizon.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    assert_eq!(provider.kx_groups[0].name(), NamedGroup::X25519MLKEM768);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, TcpStream::connect(vip).await.unwrap())
        .await
        .unwrap();
    let group = s
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .map(|g| g.name());
    assert_eq!(group, Some(NamedGroup::X25519MLKEM768));
    assert!(get_over(&mut s).await.starts_with("HTTP/1.1 200"));
}

/// A stream that keeps a copy of every byte read from it (the raw TLS records the server sent).
struct Tapped {
    inner: TcpStream,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Tapped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl tokio::io::AsyncWrite for Tapped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Start offsets of the TLS records in `raw` (a byte stream that starts at a record boundary).
fn record_starts(raw: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 5 <= raw.len() {
        starts.push(at);
        at += 5 + usize::from(u16::from_be_bytes([raw[at + 3], raw[at + 4]]));
    }
    assert_eq!(at, raw.len(), "the stream ends inside a record");
    starts
}

/// A small answer (head and body read from the server together) leaves the native engine as one TLS record, so a
/// client decrypts one record per answer: two cost OpenSSL's clients two more reads and a decryption each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_answer_is_one_tls_record() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.11.1:8443");
    let (_proxy, _backend) = horizon(dir.path(), vip, sa("127.40.11.10:8080")).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tapped = Tapped {
        inner: TcpStream::connect(vip).await.unwrap(),
        seen: seen.clone(),
    };
    let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
    let mut s = connector(&ca(dir.path(), "horizon.pem"))
        .connect(name, tapped)
        .await
        .unwrap();
    // The first answer also follows the session tickets; the later ones are alone on the wire.
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"b1");
    for _ in 0..5 {
        let mark = seen.lock().unwrap().len();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.contains("x-seen-proto: https"), "{head}");
        assert_eq!(body, b"b1");
        let raw = seen.lock().unwrap().clone();
        let records = record_starts(&raw)
            .into_iter()
            .filter(|&at| at >= mark)
            .count();
        assert_eq!(records, 1, "records of one small answer");
    }
}
