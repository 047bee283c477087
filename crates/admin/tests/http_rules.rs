#![allow(clippy::unwrap_used)]
//! The admin listener's rules with real HTTP requests against a served listener on loopback:
//! Host (DNS rebinding), Origin, X-Requested-By, credentials, limits, TLS with the generated
//! certificate and a pinned rustls client, and the UNIX socket.

use base64::Engine;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_admin::{
    ActionResult, AdminBackend, AdminEndpoint, Credentials, HttpOptions, ServerAction, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct-horse-battery";

#[derive(Default)]
struct Fake {
    actions: AtomicUsize,
}

fn status() -> Status {
    // The documented example: a whole document without building one here.
    let doc = include_str!("../../../docs/admin-api.md");
    let section = &doc[doc.find("## Status document").unwrap()..];
    let start = section.find("```json\n").unwrap() + 8;
    let end = start + section[start..].find("```").unwrap();
    serde_json::from_str(&section[start..end]).unwrap()
}

impl AdminBackend for Fake {
    fn status(&self) -> Status {
        status()
    }
    fn metrics(&self) -> String {
        "tandem_up 1\n".into()
    }
    fn server_action(&self, service: &str, server: &str, _: ServerAction) -> ActionResult {
        self.actions.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{service}/{server}: done"))
    }
    async fn takeover(&self) -> ActionResult {
        self.actions.fetch_add(1, Ordering::SeqCst);
        Ok("taken".into())
    }
    async fn release(&self) -> ActionResult {
        Ok("released".into())
    }
    async fn reload(&self) -> ActionResult {
        Ok("reloaded".into())
    }
}

fn endpoint() -> Arc<AdminEndpoint> {
    Arc::new(AdminEndpoint {
        url: "http://127.0.0.1".into(),
        tls_fingerprint: None,
        self_signed: false,
        credentials: true,
        socket: None,
    })
}

fn credentials() -> Credentials {
    Credentials {
        user: "ops".into(),
        hash: tandem_config::password::PasswordHash::new(
            PASSWORD.as_bytes(),
            tandem_config::password::MIN_ITERATIONS,
        )
        .unwrap(),
        file: None,
    }
}

async fn start(addr: &str, options: impl FnOnce(&mut HttpOptions)) -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut opts = HttpOptions::new(listener.local_addr().unwrap());
    options(&mut opts);
    let backend = Arc::new(Fake::default());
    tokio::spawn(tandem_admin::serve(
        listener,
        backend.clone(),
        opts,
        endpoint(),
    ));
    backend
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn send(addr: &str, request: String) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn request(method: &str, path: &str, host: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// The error message of a JSON error answer.
fn error_of(answer: &Answer) -> String {
    let value: serde_json::Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("not JSON: {}", answer.body));
    assert_eq!(value["ok"], false, "{}", answer.body);
    value["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn posts_need_credentials_the_header_and_no_foreign_origin() {
    let addr = "127.0.0.1:29190";
    let backend = start(addr, |o| o.credentials = Some(credentials())).await;
    let post = |extra: String| send(addr, request("POST", "/api/takeover", addr, &extra));

    // No credentials.
    let answer = post("X-Requested-By: t\r\n".into()).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"tandem\""),
        "{}",
        answer.head
    );
    error_of(&answer);
    // Wrong password, wrong user.
    let answer = post(format!("X-Requested-By: t\r\n{}", basic("ops", "nope"))).await;
    assert_eq!(answer.status, 401);
    assert!(error_of(&answer).contains("wrong"));
    let answer = post(format!("X-Requested-By: t\r\n{}", basic("root", PASSWORD))).await;
    assert_eq!(answer.status, 401);
    // Good credentials but no X-Requested-By.
    let answer = post(basic("ops", PASSWORD)).await;
    assert_eq!(answer.status, 403);
    assert!(error_of(&answer).contains("X-Requested-By"));
    // A foreign Origin (a web page elsewhere), even with everything else right.
    let answer = post(format!(
        "X-Requested-By: t\r\nOrigin: http://evil.example\r\n{}",
        basic("ops", PASSWORD)
    ))
    .await;
    assert_eq!(answer.status, 403);
    assert!(error_of(&answer).contains("Origin"));
    assert_eq!(backend.actions.load(Ordering::SeqCst), 0, "nothing acted");
    // The listener's own Origin (the page) and no Origin (the CLI) pass.
    let answer = post(format!(
        "X-Requested-By: t\r\nOrigin: http://{addr}\r\n{}",
        basic("ops", PASSWORD)
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = post(format!("X-Requested-By: t\r\n{}", basic("ops", PASSWORD))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(backend.actions.load(Ordering::SeqCst), 2);
    // Reads stay open on loopback.
    let answer = send(addr, request("GET", "/api/status", addr, "")).await;
    assert_eq!(answer.status, 200);
    // An unknown path answers JSON too.
    let answer = send(addr, request("GET", "/nope", addr, "")).await;
    assert_eq!(answer.status, 404);
    error_of(&answer);
}

#[tokio::test]
async fn without_credentials_posts_are_refused_over_http() {
    let addr = "127.0.0.1:29191";
    let backend = start(addr, |_| {}).await;
    let answer = send(
        addr,
        request(
            "POST",
            "/api/servers/a/b/drain",
            addr,
            "X-Requested-By: t\r\n",
        ),
    )
    .await;
    assert_eq!(answer.status, 403);
    let message = error_of(&answer);
    assert!(
        message.contains("tandem") && message.contains("socket"),
        "{message}"
    );
    assert!(message.contains("password_file"), "{message}");
    assert_eq!(backend.actions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn host_must_be_an_address_or_a_listed_name() {
    let addr = "127.0.0.1:29192";
    start(addr, |o| o.hostnames = vec!["lb1.example".into()]).await;
    for (host, status) in [
        (addr, 200),
        ("localhost:29192", 200),
        ("lb1.example:29192", 200),
        ("rebind.attacker.example:29192", 421),
        ("rebind.attacker.example", 421),
    ] {
        let answer = send(addr, request("GET", "/api/status", host, "")).await;
        assert_eq!(answer.status, status, "{host}: {}", answer.body);
        if status == 421 {
            assert!(error_of(&answer).contains("hostnames"));
        }
    }
    // /metrics is not exempt from the Host rule.
    let answer = send(addr, request("GET", "/metrics", "evil.example", "")).await;
    assert_eq!(answer.status, 421);
}

#[tokio::test]
async fn reads_need_credentials_off_loopback_except_metrics() {
    let addr = "127.0.0.1:29193";
    start(addr, |o| {
        o.credentials = Some(credentials());
        // As a listener on a network address would be.
        o.reads_need_credentials = true;
    })
    .await;
    for path in ["/", "/api/status", "/api/admin"] {
        let answer = send(addr, request("GET", path, addr, "")).await;
        assert_eq!(answer.status, 401, "{path}");
    }
    let answer = send(addr, request("GET", "/metrics", addr, "")).await;
    assert_eq!(answer.status, 200);
    let answer = send(
        addr,
        request("GET", "/api/status", addr, &basic("ops", PASSWORD)),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn wrong_guesses_are_throttled_and_cheap() {
    let addr = "127.0.0.1:29194";
    start(addr, |o| o.credentials = Some(credentials())).await;
    let started = Instant::now();
    let mut throttled = 0;
    for i in 0..30 {
        let answer = send(
            addr,
            request(
                "POST",
                "/api/takeover",
                addr,
                &format!(
                    "X-Requested-By: t\r\n{}",
                    basic("ops", &format!("guess{i}"))
                ),
            ),
        )
        .await;
        if answer.status == 429 {
            throttled += 1;
        } else {
            assert_eq!(answer.status, 401);
        }
    }
    assert!(throttled >= 15, "only {throttled} of 30 throttled");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn limits_bodies_heads_and_idle_connections() {
    let addr = "127.0.0.1:29195";
    start(addr, |o| {
        o.credentials = Some(credentials());
        o.limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    // A body above the bound.
    let answer = send(
        addr,
        format!(
            "POST /api/takeover HTTP/1.1\r\nHost: {addr}\r\nX-Requested-By: t\r\n{}Content-Length: 100000\r\nConnection: close\r\n\r\n",
            basic("ops", PASSWORD)
        ),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    // A client that sends nothing is closed after the header timeout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle connection not closed");
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "an idle connection got an answer: {read:?}"
    );
    // Same after a kept-alive request.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut raw))
        .await
        .expect("kept-alive idle connection not closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn https_with_the_generated_certificate_and_a_pinned_client() {
    let addr = "127.0.0.1:29196";
    let dir = tempfile::tempdir().unwrap();
    let identity =
        tandem_admin::tls::self_signed_identity(dir.path(), &[], &["127.0.0.1".parse().unwrap()])
            .unwrap();
    let fingerprint = identity.fingerprint.clone();
    start(addr, |o| {
        o.credentials = Some(credentials());
        o.tls = Some(identity);
    })
    .await;
    // Plain HTTP on the HTTPS port gets nothing useful.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(request("GET", "/metrics", addr, "").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("tandem_up"));

    // A rustls client that accepts exactly this certificate.
    let pin = tandem_admin::tls::parse_fingerprint(&fingerprint).unwrap();
    let (status, body) = https_get(addr, pin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("tandem_up 1"));
    // Origin must be the https one on a TLS listener.
    let (status, _) = https_post(addr, pin, &format!("Origin: http://{addr}\r\n")).await;
    assert_eq!(status, 403);
    let (status, _) = https_post(addr, pin, &format!("Origin: https://{addr}\r\n")).await;
    assert_eq!(status, 200);
    // Another pin is refused by the client.
    assert!(https_get(addr, [0u8; 32], "/metrics").await.is_err());
}

async fn https_connect(
    addr: &str,
    pin: [u8; 32],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = tandem_admin::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pin { pin, provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

async fn https_get(addr: &str, pin: [u8; 32], path: &str) -> std::io::Result<(u16, String)> {
    let mut tls = https_connect(addr, pin).await?;
    tls.write_all(request("GET", path, addr, "").as_bytes())
        .await?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let answer = parse(&raw);
    Ok((answer.status, answer.body))
}

async fn https_post(addr: &str, pin: [u8; 32], extra: &str) -> (u16, String) {
    let mut tls = https_connect(addr, pin).await.unwrap();
    let extra = format!("X-Requested-By: t\r\n{extra}{}", basic("ops", PASSWORD));
    tls.write_all(request("POST", "/api/takeover", addr, &extra).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let answer = parse(&raw);
    (answer.status, answer.body)
}

#[derive(Debug)]
struct Pin {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let seen = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if seen.as_ref() == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn the_socket_serves_without_credentials_and_keeps_others_out() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Others may walk the directory: only the socket's own mode keeps them out.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("admin.sock");
    let (listener, mode) = tandem_admin::socket::bind_socket_for_group(&path, None).unwrap();
    assert_eq!(mode, 0o600);
    let backend = Arc::new(Fake::default());
    tokio::spawn(tandem_admin::serve_unix(
        listener,
        backend.clone(),
        Default::default(),
        endpoint(),
    ));
    // No credentials, no X-Requested-By, any Host: the file's permissions decide.
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"POST /api/takeover HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert_eq!(parse(&raw).status, 200, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(backend.actions.load(Ordering::SeqCst), 1);

    // A user without access (nobody) is refused by the kernel.
    let path_text = path.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('connected')\nexcept PermissionError: print('refused')",
                &path_text,
            ])
            .output()
    })
    .await
    .unwrap();
    if let Ok(output) = output
        && output.status.success()
    {
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "refused",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("setpriv or python3 unavailable: the mode bits above are the check");
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let addr = "127.0.0.1:29197";
    start(addr, |o| {
        o.limits.max_connections = 2;
        o.limits.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Two clients that send nothing hold both slots until the header timeout closes them.
    let _idle = [
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let answer = send(addr, request("GET", "/metrics", addr, "")).await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "served at once past the cap ({:?})",
        started.elapsed()
    );
}
