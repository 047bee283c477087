//! Many idle TLS connections: what each costs the proxy in memory (this binary runs only this test, so the process's
//! RSS is the proxy's and the test client's sockets), the service serving meanwhile, and a release of the VIP closing
//! them. Every address is on 127.0.0.0/8.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Connections held; each one's handshake is done, then the client's TLS state is dropped (only its socket kept).
/// All must be done within the 10 s a connection may stay without a request; a debug build on a loaded 2-core
/// machine does 150-300 handshakes/s (client and server in this process), so 600.
const CONNECTIONS: usize = 600;

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
    // Four clients at once; each connection must be idle-held before the 10 s limit on a first request.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (tls, name) = (tls.clone(), name.clone());
        clients.push(tokio::spawn(async move {
            let mut held = Vec::with_capacity(CONNECTIONS / 4);
            for _ in 0..CONNECTIONS / 4 {
                let s = TcpStream::connect(vip).await.unwrap();
                let done = tls.connect(name.clone(), s).await.unwrap();
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
        "{CONNECTIONS} idle TLS connections (handshakes in {took:?}): {per_conn:.1} KiB each (process RSS)"
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
