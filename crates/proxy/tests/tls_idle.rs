//! Many idle keep-alive TLS connections (one request served on each): what each costs the proxy in memory (this
//! binary runs only this test, so the process's RSS is the proxy's and the test client's sockets), the service
//! serving meanwhile, and a release of the VIP closing them. Every address is on 127.0.0.0/8.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Connections held; on each the handshake and one request are done, then the client's TLS state is dropped (only
/// its socket kept). A debug build on a loaded 2-core machine does 70-300 handshakes/s (client and server in this
/// process).
const CONNECTIONS: usize = 1000;

/// One keep-alive request (the backend answers `b1`); the whole response.
async fn one_request(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    tokio::io::AsyncWriteExt::write_all(s, b"GET / HTTP/1.1\r\nHost: horizon.example.org\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"\r\n\r\nb1") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_tls_connections_cost_little_and_a_release_closes_them() {
    init_tracing();
    raise_nofile(20_000);
    let dir = tempfile::tempdir().unwrap();
    let vip = sa("127.40.6.1:8443");
    let backend = HttpBackend::start("b1", sa("127.40.6.10:8080")).await;
    let certs = vec![certificate(
        dir.path(),
        "horizon.pem",
        &["horizon.example.org"],
    )];
    let proxy = start(cluster(vec![tls_service(
        "web",
        vip,
        backend.addr,
        certs,
        None,
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    let tls = connector(&ca(dir.path(), "horizon.pem"));
    let name = rustls::pki_types::ServerName::try_from("horizon.example.org").unwrap();
    // Warm up (allocator arenas, the session caches), then measure.
    for _ in 0..50 {
        let s = TcpStream::connect(vip).await.unwrap();
        let _ = tls.connect(name.clone(), s).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let started = Instant::now();
    // Four clients at once.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (tls, name) = (tls.clone(), name.clone());
        clients.push(tokio::spawn(async move {
            let mut held = Vec::with_capacity(CONNECTIONS / 4);
            for _ in 0..CONNECTIONS / 4 {
                let s = TcpStream::connect(vip).await.unwrap();
                let mut done = tls.connect(name.clone(), s).await.unwrap();
                assert!(one_request(&mut done).await.ends_with("\r\n\r\nb1"));
                // Keep only the socket: the client's TLS state would be counted in this process too.
                let (tcp, _) = done.into_inner();
                held.push(tcp);
            }
            held
        }));
    }
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for c in clients {
        idle.extend(c.await.unwrap());
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_conn = (rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;
    eprintln!(
        "{CONNECTIONS} idle TLS connections (handshake and one request each, in {took:?}): {per_conn:.1} KiB each (process RSS)"
    );
    assert!(per_conn < 48.0, "{per_conn:.1} KiB per idle TLS connection");
    let st = proxy.status();
    let web = st.services.iter().find(|s| s.label == "web").unwrap();
    assert!(
        web.current_connections >= CONNECTIONS as u64,
        "{} open after {took:?}",
        web.current_connections
    );
    // The service still serves.
    let mut fresh = tls
        .connect(name.clone(), TcpStream::connect(vip).await.unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut fresh,
        b"GET / HTTP/1.1\r\nHost: horizon.example.org\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), fresh.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Releasing the VIP closes them all: the clients are reset.
    let open = proxy.close_connections_of(&[vip.ip()]);
    assert!(open >= CONNECTIONS, "{open}");
    for s in idle.iter_mut().take(100) {
        assert!(was_reset(s, Duration::from_secs(2)).await);
    }
}
