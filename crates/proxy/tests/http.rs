//! HTTP mode end to end: keep-alive and upstream reuse, headers, cookie persistence (also with curl), fallback and
//! 503, bad clients and stuck servers; every scenario on both HTTP engines.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tandem_config::model::{FallbackServer, Mode, PersistenceMode};
use tandem_proxy::AdminState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn keep_alive_reuse_forwarded_for_and_hop_by_hop(e: Engine) {
    init_tracing();
    let a = HttpBackend::start("a", e.sa("127.21.1.11:8001")).await;
    let vip = e.sa("127.21.1.1:8000");
    let proxy = e.start(cluster(vec![service(
        "web",
        vip,
        Mode::Http,
        vec![server("a", a.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    let checks_conns = a.connections.load(std::sync::atomic::Ordering::Relaxed);

    let mut c = HttpClient::connect(vip).await;
    for i in 0..200 {
        let r = c
            .get(
                "/",
                &[
                    ("connection", "keep-alive, x-foo"),
                    ("x-foo", "secret"),
                    ("x-forwarded-for", "10.9.9.9"),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "a");
        assert_eq!(
            r.headers["x-seen-xff"], "10.9.9.9, 127.0.0.1",
            "request {i}"
        );
        assert_eq!(r.headers["x-seen-via"], "");
        assert_eq!(
            r.headers["x-seen-foo"], "",
            "x-foo was named in Connection: hop-by-hop"
        );
        assert!(!r.headers.contains_key("via"));
    }
    // One upstream connection served all 200 requests (health checks connect too, so compare against that).
    let upstream = a.connections.load(std::sync::atomic::Ordering::Relaxed) - checks_conns;
    let checks_during = 200; // generous bound for checks during the loop (50 ms interval)
    assert!(upstream < checks_during, "upstream connections {upstream}");
    // The engine puts the upstream connection back in the pool just after the response is written, so the client
    // can read the response a moment before that.
    wait_for(
        &proxy,
        Duration::from_secs(2),
        "the upstream connection back in the pool",
        |s| s.services[0].servers[0].idle_connections == 1,
    )
    .await;
    let st = proxy.status();
    let srv = &st.services[0].servers[0];
    assert_eq!(
        srv.total_connections, 200,
        "server total counts requests in HTTP mode"
    );
    assert_eq!(srv.idle_connections, 1);
    assert_eq!(st.services[0].total_connections, 1, "one client connection");
    assert!(st.services[0].bytes_in > 200 * 30 && st.services[0].bytes_out > 200 * 30);

    // Bodies both ways, with a large response.
    let r = c
        .request("POST", "/upload", &[], vec![b'z'; 1_000_000])
        .await;
    assert_eq!(r.body, "a 1000000");
    let r = c.get("/big/3000000", &[]).await;
    assert_eq!(r.body.len(), 3_000_000);
    proxy.shutdown().await;
}

async fn cookie_persistence_inserts_label_with_nocache_and_honours_it(e: Engine) {
    init_tracing();
    let a = HttpBackend::start("Overcloud-controller-1", e.sa("127.21.2.11:8001")).await;
    let b = HttpBackend::start("Overcloud-controller-2", e.sa("127.21.2.12:8001")).await;
    let vip = e.sa("127.21.2.1:80");
    let mut svc = service(
        "horizon",
        vip,
        Mode::Http,
        vec![
            server("Overcloud-controller-1", a.addr, 1),
            server("Overcloud-controller-2", b.addr, 1),
        ],
    );
    svc.persistence = persistence(PersistenceMode::HttpCookie, 0);
    let proxy = e.start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "horizon")
    })
    .await;

    let mut c = HttpClient::connect(vip).await;
    let r = c.get("/", &[]).await;
    let backend = r.body.clone();
    let set_cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert_eq!(
        set_cookie,
        format!("SERVERID={backend}; Path=/"),
        "cookie names the server label, not its address"
    );
    assert_eq!(r.headers["cache-control"], "no-cache=\"set-cookie\"");
    let cookie = format!("SERVERID={backend}");
    for _ in 0..30 {
        let r = c.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(r.body, backend);
        assert!(
            !r.headers.contains_key("set-cookie"),
            "no new cookie while it is honoured"
        );
    }
    // Without a cookie, both servers are used.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(c.get("/", &[]).await.body);
    }
    assert_eq!(seen.len(), 2);

    // Drain keeps the cookie's clients; halt moves them and re-issues the cookie.
    proxy
        .set_server_state("horizon", &backend, AdminState::Drain)
        .unwrap();
    assert_eq!(c.get("/", &[("cookie", &cookie)]).await.body, backend);
    for _ in 0..10 {
        assert_ne!(
            c.get("/", &[]).await.body,
            backend,
            "drained server takes no new clients"
        );
    }
    proxy
        .set_server_state(
            "horizon",
            &backend,
            AdminState::Halt {
                close_existing: false,
            },
        )
        .unwrap();
    let r = c.get("/", &[("cookie", &cookie)]).await;
    assert_ne!(r.body, backend);
    assert_eq!(
        r.headers["set-cookie"].to_str().unwrap(),
        format!("SERVERID={}; Path=/", r.body)
    );
    proxy.shutdown().await;
}

async fn curl_with_cookie_jar_stays_on_one_server(e: Engine) {
    init_tracing();
    let curl = require_binary("curl");
    let a = HttpBackend::start("web-a", e.sa("127.21.3.11:8001")).await;
    let b = HttpBackend::start("web-b", e.sa("127.21.3.12:8001")).await;
    let vip = e.sa("127.21.3.1:8080");
    let mut svc = service(
        "horizon",
        vip,
        Mode::Http,
        vec![server("web-a", a.addr, 1), server("web-b", b.addr, 1)],
    );
    svc.persistence = persistence(PersistenceMode::HttpCookie, 0);
    svc.balance = tandem_config::model::Balance::RoundRobin;
    let proxy = e.start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "horizon")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("jar");
    let jar2 = jar.clone();
    let run = move |with_jar: bool| {
        let mut cmd = std::process::Command::new(&curl);
        cmd.args(["-s", "--max-time", "5"]);
        if with_jar {
            cmd.arg("-c").arg(&jar2).arg("-b").arg(&jar2);
        }
        let out = cmd.arg(format!("http://{vip}/")).output().unwrap();
        assert!(out.status.success(), "curl failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let first = tokio::task::spawn_blocking(move || {
        let first = run(true);
        for _ in 0..20 {
            assert_eq!(
                run(true),
                first,
                "curl with a cookie jar must stay on {first}"
            );
        }
        // Without the jar round robin alternates.
        let x = run(false);
        let y = run(false);
        assert_ne!(x, y);
        first
    })
    .await
    .unwrap();
    let jar_text = std::fs::read_to_string(dir.path().join("jar")).unwrap();
    assert!(
        jar_text.contains(&format!("SERVERID\t{first}")),
        "jar: {jar_text}"
    );
    proxy.shutdown().await;
}

async fn no_server_up_gives_fallback_then_503_naming_the_service(e: Engine) {
    init_tracing();
    let fb = HttpBackend::start("sorry-server", e.sa("127.21.4.20:8001")).await;
    let vip = e.sa("127.21.4.1:8000");
    let vip2 = e.sa("127.21.4.1:8002");
    // Real servers that do not exist (nothing listens there).
    let mut with_fb = service(
        "keystone",
        vip,
        Mode::Http,
        vec![server("a", e.sa("127.21.4.11:8001"), 1)],
    );
    with_fb.fallback = Some(FallbackServer {
        address: fb.addr.ip(),
        port: fb.addr.port(),
    });
    let without = service(
        "glance",
        vip2,
        Mode::Http,
        vec![server("a", e.sa("127.21.4.11:8001"), 1)],
    );
    let proxy = e.start(cluster(vec![with_fb, without]));
    let mut c = HttpClient::connect(vip).await;
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "sorry-server");
    let mut c2 = HttpClient::connect(vip2).await;
    let r = c2.get("/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("glance"), "{}", r.body);
    // Still a keep-alive connection afterwards.
    assert_eq!(c2.get("/", &[]).await.status, 503);
    proxy.shutdown().await;
}

async fn http_connect_failure_moves_the_request_to_another_server(e: Engine) {
    init_tracing();
    let a = HttpBackend::start("a", e.sa("127.21.5.11:8001")).await;
    let b = HttpBackend::start("b", e.sa("127.21.5.12:8001")).await;
    let vip = e.sa("127.21.5.1:8000");
    let mut svc = service(
        "api",
        vip,
        Mode::Http,
        vec![server("a", a.addr, 1), server("b", b.addr, 1)],
    );
    svc.health_check = health(5000, 1, 3);
    svc.balance = tandem_config::model::Balance::RoundRobin;
    let proxy = e.start(cluster(vec![svc]));
    // First checks are spread over the interval: wait for both.
    wait_for(&proxy, Duration::from_secs(8), "up", |s| all_up(s, "api")).await;
    let mut c = HttpClient::connect(vip).await;
    for _ in 0..4 {
        assert_eq!(c.get("/", &[]).await.status, 200);
    }
    a.kill();
    // a still looks healthy (slow checks) and its pooled connections just died: every request must succeed.
    for _ in 0..50 {
        let r = c.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "b");
    }
    let st = proxy.status();
    assert_eq!(server_health(&st, "api", "a"), "up", "test premise");
    let a_st = st.services[0]
        .servers
        .iter()
        .find(|s| s.label == "a")
        .unwrap();
    assert!(a_st.connect_failures >= 20, "{}", a_st.connect_failures);
    proxy.shutdown().await;
}

async fn garbage_slowloris_and_stuck_server_do_not_hurt(e: Engine) {
    init_tracing();
    let a = HttpBackend::start("a", e.sa("127.21.6.11:8001")).await;
    let mute_addr = e.sa("127.21.6.12:8001");
    let mute_task = mute_backend(mute_addr).await;
    let vip = e.sa("127.21.6.1:8000");
    let mut svc = service("web", vip, Mode::Http, vec![server("a", a.addr, 1)]);
    svc.proxy.client_timeout_ms = 500;
    let stuck_vip = e.sa("127.21.6.1:8002");
    let mut stuck = service(
        "stuck",
        stuck_vip,
        Mode::Http,
        vec![server("m", mute_addr, 1)],
    );
    stuck.proxy.server_timeout_ms = 300;
    let proxy = e.start(cluster(vec![svc, stuck]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "web") && all_up(s, "stuck")
    })
    .await;

    // Garbage: answered with 400 (or closed), never forwarded, never a panic.
    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\r\nHost: x\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(vip).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 505"),
            "{text}"
        );
    }
    let requests_before = a.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests_before, 0, "garbage never reaches the backend");

    // Slowloris: a header trickled one byte every 100 ms is cut after the header/idle timeout.
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(vip).await.unwrap();
        let t0 = Instant::now();
        for b in
            b"GET / HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .iter()
        {
            if s.write_all(&[*b]).await.is_err() {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut x = [0u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut x)).await
            {
                return t0.elapsed();
            }
        }
        panic!("slowloris connection was never closed");
    });
    // Meanwhile normal clients are served promptly.
    for _ in 0..20 {
        let t0 = Instant::now();
        let mut c = HttpClient::connect(vip).await;
        assert_eq!(c.get("/", &[]).await.body, "a");
        assert!(t0.elapsed() < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut_after = slow.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(3),
        "slowloris cut after {cut_after:?}"
    );

    // Stuck server: 504 after the server timeout.
    let mut c = HttpClient::connect(stuck_vip).await;
    let t0 = Instant::now();
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 504);
    assert!(r.body.contains("stuck"));
    assert!(t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(2));
    mute_task.abort();
    proxy.shutdown().await;
}

async fn websocket_style_upgrade_is_tunnelled(e: Engine) {
    init_tracing();
    // A raw backend that answers an Upgrade with 101 and then echoes bytes.
    let baddr = e.sa("127.21.7.11:8001");
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
                let text = String::from_utf8_lossy(&head).to_lowercase();
                assert!(text.contains("upgrade: websocket"), "{text}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let vip = e.sa("127.21.7.1:6080");
    let proxy = e.start(cluster(vec![service(
        "novnc",
        vip,
        Mode::Http,
        vec![server("a", baddr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "novnc")).await;
    let mut s = TcpStream::connect(vip).await.unwrap();
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
    s.write_all(b"hello tunnel").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello tunnel");
    proxy.shutdown().await;
}

/// A node that gives up a VIP closes what it proxied for it: a client waiting for a response and an idle client of
/// the released VIP are reset and the waiting request's upstream connection is closed within moments; a request on
/// another VIP goes on waiting, and the released VIP serves new connections afterwards.
async fn release_resets_clients_and_closes_servers_of_the_released_vips_only(e: Engine) {
    init_tracing();
    let mut backend = WatchedBackend::start(e.sa("127.27.1.11:8001"), false).await;
    let (released, kept) = (e.sa("127.27.1.1:8000"), e.sa("127.27.1.2:8000"));
    let proxy = e.start(cluster(vec![
        service(
            "rel",
            released,
            Mode::Http,
            vec![server("a", backend.addr, 1)],
        ),
        service("kept", kept, Mode::Http, vec![server("a", backend.addr, 1)]),
    ]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "rel") && all_up(s, "kept")
    })
    .await;
    let within = Duration::from_secs(2);
    let request = b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut waiting = Vec::new();
    for vip in [released, kept] {
        let mut c = TcpStream::connect(vip).await.unwrap();
        c.write_all(request).await.unwrap();
        let Some(Seen::Data(id)) = backend.next(within).await else {
            panic!("the backend did not get the request sent to {vip}");
        };
        waiting.push((c, id));
    }
    let mut idle = TcpStream::connect(released).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(proxy.close_connections_of(&[released.ip()]), 2);
    assert!(
        was_reset(&mut waiting[0].0, within).await,
        "waiting client not reset"
    );
    assert!(was_reset(&mut idle, within).await, "idle client not reset");
    assert_eq!(backend.next(within).await, Some(Seen::Closed(waiting[0].1)));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "closing took {took:?}");
    // The other VIP's request is still waiting on its server; the released VIP takes new requests.
    assert_eq!(backend.next(Duration::from_millis(200)).await, None);
    let mut again = TcpStream::connect(released).await.unwrap();
    again.write_all(request).await.unwrap();
    assert!(matches!(backend.next(within).await, Some(Seen::Data(_))));
    let mut one = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), waiting[1].0.read(&mut one))
            .await
            .is_err(),
        "the other VIP's client was disturbed"
    );
    assert_eq!(proxy.released_connections_closed(), 2);
    proxy.shutdown().await;
}

on_both_engines!(
    keep_alive_reuse_forwarded_for_and_hop_by_hop,
    release_resets_clients_and_closes_servers_of_the_released_vips_only,
    cookie_persistence_inserts_label_with_nocache_and_honours_it,
    curl_with_cookie_jar_stays_on_one_server,
    no_server_up_gives_fallback_then_503_naming_the_service,
    http_connect_failure_moves_the_request_to_another_server,
    garbage_slowloris_and_stuck_server_do_not_hurt,
    websocket_style_upgrade_is_tunnelled,
);
