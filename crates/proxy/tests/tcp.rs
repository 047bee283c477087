//! TCP mode end to end: balancing, retry, health timing, drain/halt, persistence, transfers, half-close, limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tandem_config::model::{Balance, Mode, PersistenceMode};
use tandem_proxy::AdminState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn distribution(balance: Balance, net: &str) {
    init_tracing();
    let backends = [
        Backend::start("a", sa(&format!("{net}.11:7001"))).await,
        Backend::start("b", sa(&format!("{net}.12:7001"))).await,
        Backend::start("c", sa(&format!("{net}.13:7001"))).await,
    ];
    let weights = [100u32, 60, 40];
    let vip = sa(&format!("{net}.1:7000"));
    let mut svc = service(
        "dist",
        vip,
        Mode::Tcp,
        backends
            .iter()
            .zip(weights)
            .map(|(b, w)| server(&b.name, b.addr, w))
            .collect(),
    );
    svc.balance = balance;
    let proxy = start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "servers up", |s| {
        all_up(s, "dist")
    })
    .await;

    let total = 10_000usize;
    let counts = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    if balance == Balance::RoundRobin {
        // Short connections from 16 concurrent clients.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let counts = counts.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..total / 16 {
                    let name = who(vip).await.unwrap();
                    *counts.lock().unwrap().entry(name).or_default() += 1;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    } else {
        // Least connections balances open connections: 10 rounds of 1000 connections held open together.
        raise_nofile(65536);
        for _ in 0..10 {
            let mut held = Vec::new();
            for _ in 0..1000 {
                let (name, s) = hold(vip).await;
                *counts.lock().unwrap().entry(name).or_default() += 1;
                held.push(s);
            }
            drop(held);
            wait_for(&proxy, Duration::from_secs(5), "connections closed", |s| {
                s.services[0].current_connections == 0
            })
            .await;
        }
    }
    let counts = counts.lock().unwrap().clone();
    let sum: usize = counts.values().sum();
    assert_eq!(sum, total);
    let wsum: u32 = weights.iter().sum();
    for (b, w) in backends.iter().zip(weights) {
        let expected = total as f64 * f64::from(w) / f64::from(wsum);
        let got = *counts.get(&b.name).unwrap_or(&0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{balance:?}: server {} got {got}, expected {expected} (counts {counts:?})",
            b.name
        );
    }
    let st = proxy.status();
    assert_eq!(st.services[0].total_connections, total as u64);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_distribution_follows_weights() {
    distribution(Balance::RoundRobin, "127.20.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_distribution_follows_weights() {
    distribution(Balance::WeightedLeastConnections, "127.20.2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_server() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.3.11:7001")).await;
    let b = Backend::start("b", sa("127.20.3.12:7001")).await;
    let vip = sa("127.20.3.1:7000");
    let mut svc = service(
        "retry",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1), server("b", b.addr, 1)],
    );
    // Slow checks: the killed server stays "up" for seconds, so only the retry can save the clients.
    svc.health_check = health(2000, 1, 3);
    svc.balance = Balance::RoundRobin;
    let proxy = start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "servers up", |s| {
        all_up(s, "retry")
    })
    .await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..100 {
        assert_eq!(who(vip).await.unwrap(), "b");
    }
    let st = proxy.status();
    assert_eq!(
        server_health(&st, "retry", "a"),
        "up",
        "test premise: a still looks healthy"
    );
    let a_status = st.services[0]
        .servers
        .iter()
        .find(|s| s.label == "a")
        .unwrap();
    assert!(
        a_status.connect_failures >= 40,
        "connect failures on a: {}",
        a_status.connect_failures
    );
    // With no server left at all the client is closed, not hung.
    b.kill();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(who(vip).await.is_err());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_and_revived_follows_rise_and_fall() {
    init_tracing();
    let addr = sa("127.20.4.11:7001");
    let a = Backend::start("a", addr).await;
    let b = Backend::start("b", sa("127.20.4.12:7001")).await;
    let vip = sa("127.20.4.1:7000");
    let mut svc = service(
        "killrevive",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1), server("b", b.addr, 1)],
    );
    svc.health_check = health(50, 2, 3);
    let started = Instant::now();
    let proxy = start(cluster(vec![svc]));
    // Starts down; up after `rise` (2) checks, i.e. within ~2 intervals plus the first-check spread.
    assert_eq!(server_health(&proxy.status(), "killrevive", "a"), "down");
    wait_for(&proxy, Duration::from_secs(2), "servers up", |s| {
        all_up(s, "killrevive")
    })
    .await;
    let rise_time = started.elapsed();
    assert!(
        rise_time >= Duration::from_millis(50),
        "up too early: {rise_time:?}"
    );
    assert!(
        rise_time < Duration::from_millis(400),
        "up too late: {rise_time:?}"
    );

    a.kill();
    let killed = Instant::now();
    wait_for(&proxy, Duration::from_secs(2), "a down", |s| {
        server_health(s, "killrevive", "a") == "down"
    })
    .await;
    let fall_time = killed.elapsed();
    // fall = 3 failed checks at 50 ms: between 2 and ~4 intervals.
    assert!(
        fall_time >= Duration::from_millis(90),
        "down too early: {fall_time:?}"
    );
    assert!(
        fall_time < Duration::from_millis(400),
        "down too late: {fall_time:?}"
    );
    let st = proxy.status();
    let a_status = st.services[0]
        .servers
        .iter()
        .find(|s| s.label == "a")
        .unwrap();
    assert!(
        a_status.health_reason.contains("refused"),
        "reason: {}",
        a_status.health_reason
    );
    assert!(a_status.check_failures >= 3);
    for _ in 0..20 {
        assert_eq!(who(vip).await.unwrap(), "b");
    }

    let a2 = Backend::start("a", addr).await;
    let revived = Instant::now();
    wait_for(&proxy, Duration::from_secs(2), "a up again", |s| {
        server_health(s, "killrevive", "a") == "up"
    })
    .await;
    let rise_again = revived.elapsed();
    assert!(
        rise_again >= Duration::from_millis(40),
        "up again too early: {rise_again:?}"
    );
    assert!(
        rise_again < Duration::from_millis(300),
        "up again too late: {rise_again:?}"
    );
    let mut seen_a = false;
    for _ in 0..20 {
        seen_a |= who(vip).await.unwrap() == "a";
    }
    assert!(seen_a);
    drop(a2);
    proxy.shutdown().await;
}

/// 20 distinct client addresses (127.20.N.100+i) persist by source address.
async fn clients_sticky(vip: std::net::SocketAddr, net: &str, n: usize) -> HashMap<usize, String> {
    let mut map = HashMap::new();
    for i in 0..n {
        let src = ip(&format!("{net}.{}", 100 + i));
        let first = who_from(vip, Some(src)).await.unwrap();
        for _ in 0..4 {
            assert_eq!(
                who_from(vip, Some(src)).await.unwrap(),
                first,
                "client {src} moved"
            );
        }
        map.insert(i, first);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_persistence_holds_and_rebalances_when_server_dies() {
    init_tracing();
    let net = "127.20.5";
    let backends = [
        Backend::start("a", sa(&format!("{net}.11:7001"))).await,
        Backend::start("b", sa(&format!("{net}.12:7001"))).await,
        Backend::start("c", sa(&format!("{net}.13:7001"))).await,
    ];
    let vip = sa(&format!("{net}.1:7000"));
    let mut svc = service(
        "srcip",
        vip,
        Mode::Tcp,
        backends
            .iter()
            .map(|b| server(&b.name, b.addr, 1))
            .collect(),
    );
    svc.persistence = persistence(PersistenceMode::SourceIp, 300);
    let proxy = start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "servers up", |s| {
        all_up(s, "srcip")
    })
    .await;
    let map = clients_sticky(vip, net, 20).await;
    let distinct: std::collections::HashSet<_> = map.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "clients are spread over the servers: {map:?}"
    );
    assert_eq!(proxy.status().services[0].stick_table_size, 20);
    {
        let tables = proxy.stick_tables();
        let mut t = tables.lock().unwrap();
        let key = tandem_stick::StickKey::SourceIp(ip(&format!("{net}.100")));
        assert_eq!(
            t.get_mut("srcip")
                .unwrap()
                .lookup(&key, proxy.clock().now_ms())
                .as_deref(),
            Some(map[&0].as_str())
        );
    }

    // Kill the server of client 0: its clients move, once, and stay on the new server.
    let victim = map[&0].clone();
    backends.iter().find(|b| b.name == victim).unwrap().kill();
    wait_for(&proxy, Duration::from_secs(2), "victim down", |s| {
        server_health(s, "srcip", &victim) == "down"
    })
    .await;
    let after = clients_sticky(vip, net, 20).await;
    for i in 0..20 {
        if map[&i] == victim {
            assert_ne!(after[&i], victim);
        } else {
            assert_eq!(
                after[&i], map[&i],
                "client {i} on a healthy server must not move"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_successful_keeps_everyone_on_one_server_and_never_moves_back() {
    init_tracing();
    let net = "127.20.6";
    let a_addr = sa(&format!("{net}.11:7001"));
    let a = Backend::start("a", a_addr).await;
    let b = Backend::start("b", sa(&format!("{net}.12:7001"))).await;
    let c = Backend::start("c", sa(&format!("{net}.13:7001"))).await;
    let vip = sa(&format!("{net}.1:3306"));
    let mut svc = service(
        "mysql",
        vip,
        Mode::Tcp,
        vec![
            server("a", a.addr, 100),
            server("b", b.addr, 100),
            server("c", c.addr, 100),
        ],
    );
    svc.persistence = persistence(PersistenceMode::LastSuccessful, 0);
    svc.health_check = health(50, 2, 2);
    let proxy = start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "servers up", |s| {
        all_up(s, "mysql")
    })
    .await;

    // Concurrent clients from many addresses all land on one server.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let src = ip(&format!("{net}.{}", 100 + i));
        tasks.push(tokio::spawn(async move {
            who_from(vip, Some(src)).await.unwrap()
        }));
    }
    let mut names = std::collections::HashSet::new();
    for t in tasks {
        names.insert(t.await.unwrap());
    }
    assert_eq!(names.len(), 1, "{names:?}");
    let first = names.into_iter().next().unwrap();
    assert_eq!(proxy.status().services[0].stick_table_size, 1);

    // The writer node fails: everyone moves to one other server.
    let backends = [&a, &b, &c];
    backends.iter().find(|x| x.name == first).unwrap().kill();
    wait_for(&proxy, Duration::from_secs(2), "down", |s| {
        server_health(s, "mysql", &first) == "down"
    })
    .await;
    let second = who(vip).await.unwrap();
    assert_ne!(second, first);
    for _ in 0..20 {
        assert_eq!(who(vip).await.unwrap(), second);
    }
    // The failed node returns: the entry does not move back.
    let revived = Backend::start(
        &first,
        backends.iter().find(|x| x.name == first).unwrap().addr,
    )
    .await;
    wait_for(&proxy, Duration::from_secs(2), "up", |s| {
        server_health(s, "mysql", &first) == "up"
    })
    .await;
    for _ in 0..20 {
        assert_eq!(who(vip).await.unwrap(), second);
    }
    // Draining the writer moves it too (and again it stays moved).
    proxy
        .set_server_state("mysql", &second, AdminState::Drain)
        .unwrap();
    let third = who(vip).await.unwrap();
    assert_ne!(third, second);
    proxy
        .set_server_state("mysql", &second, AdminState::Online)
        .unwrap();
    for _ in 0..20 {
        assert_eq!(who(vip).await.unwrap(), third);
    }
    drop(revived);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_persistent_clients_and_halt_stops_everything() {
    init_tracing();
    let net = "127.20.7";
    let a = Backend::start("a", sa(&format!("{net}.11:7001"))).await;
    let b = Backend::start("b", sa(&format!("{net}.12:7001"))).await;
    let vip = sa(&format!("{net}.1:7000"));
    let mut svc = service(
        "dh",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1), server("b", b.addr, 1)],
    );
    svc.persistence = persistence(PersistenceMode::SourceIp, 300);
    let proxy = start(cluster(vec![svc]));
    wait_for(&proxy, Duration::from_secs(5), "servers up", |s| {
        all_up(s, "dh")
    })
    .await;

    // Find a client address persistent to "a".
    let mut sticky_src = None;
    for i in 0..40 {
        let src = ip(&format!("{net}.{}", 100 + i));
        if who_from(vip, Some(src)).await.unwrap() == "a" {
            sticky_src = Some(src);
            break;
        }
    }
    let sticky = sticky_src.expect("some client lands on a");
    let (held_name, mut held) = hold(vip).await;

    proxy
        .set_server_state("dh", "a", AdminState::Drain)
        .unwrap();
    assert_eq!(
        who_from(vip, Some(sticky)).await.unwrap(),
        "a",
        "drain keeps persistent clients"
    );
    for i in 50..80 {
        let src = ip(&format!("{net}.{}", 100 + i));
        assert_eq!(
            who_from(vip, Some(src)).await.unwrap(),
            "b",
            "drain takes no new clients"
        );
    }

    let st = proxy.status();
    let a_st = st.services[0]
        .servers
        .iter()
        .find(|s| s.label == "a")
        .unwrap();
    assert_eq!(a_st.admin_state, AdminState::Drain);

    proxy
        .set_server_state(
            "dh",
            "a",
            AdminState::Halt {
                close_existing: false,
            },
        )
        .unwrap();
    assert_eq!(
        who_from(vip, Some(sticky)).await.unwrap(),
        "b",
        "halt re-balances persistent clients"
    );
    // The established connection still works.
    held.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // Halt with close_existing closes the established connections of that server.
    let (n2, mut held2) = hold(vip).await; // goes to b (a halted)
    assert_eq!(n2, "b");
    let target = held_name.clone();
    proxy
        .set_server_state(
            "dh",
            &target,
            AdminState::Halt {
                close_existing: true,
            },
        )
        .unwrap();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(2), held.read(&mut one))
        .await
        .unwrap();
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "held connection on {target} must be closed: {r:?}"
    );
    if target == "a" {
        held2.write_all(b"x").await.unwrap();
        held2.read_exact(&mut one).await.unwrap();
    }

    proxy
        .set_server_state("dh", "a", AdminState::Online)
        .unwrap();
    proxy
        .set_server_state("dh", "b", AdminState::Online)
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 100..140 {
        seen.insert(
            who_from(vip, Some(ip(&format!("{net}.{}", i))))
                .await
                .unwrap(),
        );
    }
    assert_eq!(seen.len(), 2);
    assert!(
        proxy
            .set_server_state("dh", "zz", AdminState::Online)
            .is_err()
    );
    assert!(
        proxy
            .set_server_state("nope", "a", AdminState::Online)
            .is_err()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_transfer_keeps_checksum() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.8.11:7001")).await;
    let vip = sa("127.20.8.1:7000");
    let proxy = start(cluster(vec![service(
        "bulk",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "bulk")).await;
    let (name, stream) = hold(vip).await;
    assert_eq!(name, "a");
    let (mut r, mut w) = stream.into_split();
    const TOTAL: usize = 100 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut chunk = vec![0u8; 256 * 1024];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut sent = 0;
        while sent < TOTAL {
            for b in chunk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            ctx.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
        ctx.finish()
    });
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        got += n;
    }
    let sent_digest = writer.await.unwrap();
    assert_eq!(got, TOTAL);
    assert_eq!(ctx.finish().as_ref(), sent_digest.as_ref());
    let st = proxy.status();
    assert_eq!(st.services[0].bytes_in, TOTAL as u64);
    assert_eq!(st.services[0].bytes_out, TOTAL as u64 + 2); // + "a\n"
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_other_direction_open() {
    init_tracing();
    // A backend that reads until the client's FIN, then answers with the byte count, waits, and answers again.
    let baddr = sa("127.20.9.11:7001");
    let listener = bind_retry(baddr).await;
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut data = Vec::new();
                s.read_to_end(&mut data).await.unwrap();
                s.write_all(format!("got {}\n", data.len()).as_bytes())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.write_all(b"still here\n").await.unwrap();
            });
        }
    });
    let vip = sa("127.20.9.1:7000");
    let proxy = start_tcp_one("half", vip, baddr, Duration::from_secs(5)).await;
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(&[7u8; 12345]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "got 12345\nstill here\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_queues_in_backlog_and_timeouts_close_idle_and_stuck() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.10.11:7001")).await;
    // A backend that accepts and never answers.
    let mute_addr = sa("127.20.10.12:7001");
    let mute_task = mute_backend(mute_addr).await;
    let vip = sa("127.20.10.1:7000");
    let mut limited = service("limited", vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    limited.proxy.max_connections = 2;
    limited.proxy.client_timeout_ms = 300;
    limited.proxy.server_timeout_ms = 300;
    let mute_vip = sa("127.20.10.1:7002");
    let mut stuck = service(
        "stuck",
        mute_vip,
        Mode::Tcp,
        vec![server("m", mute_addr, 1)],
    );
    stuck.proxy.server_timeout_ms = 200;
    let proxy = start(cluster(vec![limited, stuck]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "limited") && all_up(s, "stuck")
    })
    .await;

    let (_, c1) = hold(vip).await;
    let (_, _c2) = hold(vip).await;
    // Third client: TCP-connected (kernel backlog) but not served while two are open.
    let mut c3 = TcpStream::connect(vip).await.unwrap();
    let mut b = [0u8; 2];
    assert!(
        tokio::time::timeout(Duration::from_millis(150), c3.read_exact(&mut b))
            .await
            .is_err()
    );
    drop(c1);
    tokio::time::timeout(Duration::from_secs(2), c3.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"a\n");

    // Idle client connections are closed after the idle timeout.
    let t0 = Instant::now();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), c3.read(&mut one))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_millis(1500),
        "idle close after {idle:?}"
    );

    // A server that never answers: the client is closed after the server timeout; the proxy stays responsive.
    let mut s = TcpStream::connect(mute_vip).await.unwrap();
    s.write_all(b"hello?").await.unwrap();
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut one))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    assert!(t0.elapsed() < Duration::from_secs(2));
    mute_task.abort();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbindable_port_is_a_service_error_and_others_run() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.11.11:7001")).await;
    // Occupy the port of the "blocked" service (no SO_REUSEADDR tricks let two listeners share it).
    let squatter = std::net::TcpListener::bind("127.20.11.1:7005").unwrap();
    let ok_vip = sa("127.20.11.1:7000");
    let proxy = start(cluster(vec![
        service(
            "blocked",
            sa("127.20.11.1:7005"),
            Mode::Tcp,
            vec![server("a", a.addr, 1)],
        ),
        service("fine", ok_vip, Mode::Tcp, vec![server("a", a.addr, 1)]),
    ]));
    let st = proxy.status();
    let blocked = st.services.iter().find(|s| s.label == "blocked").unwrap();
    assert_eq!(blocked.bind_errors.len(), 1, "{:?}", blocked.bind_errors);
    assert!(blocked.bind_errors[0].contains("127.20.11.1:7005"));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "fine")).await;
    assert_eq!(who(ok_vip).await.unwrap(), "a");
    // Freed port: the next reload binds it.
    drop(squatter);
    let report = proxy.reload(proxy.config());
    assert!(report.bind_errors.is_empty(), "{report:?}");
    assert!(
        proxy
            .status()
            .services
            .iter()
            .all(|s| s.bind_errors.is_empty())
    );
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "blocked")
    })
    .await;
    assert_eq!(who(sa("127.20.11.1:7005")).await.unwrap(), "a");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_listeners_and_established_connections() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.12.11:7001")).await;
    let vip = sa("127.20.12.1:7000");
    let proxy = start_tcp_one("bye", vip, a.addr, Duration::from_secs(5)).await;
    let (_, mut held) = hold(vip).await;
    proxy.shutdown().await;
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(2), held.read(&mut one))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(
        TcpStream::connect(vip).await.is_err(),
        "listener closed at once"
    );
}

/// A client that sends without end to a server that never reads is held back by TCP flow control through the proxy:
/// what it manages to write is bounded by the socket buffers on the way (the proxy keeps at most one read buffer per
/// blocked direction), not by how long it keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_to_a_server_that_never_reads_is_held_back() {
    init_tracing();
    let baddr = sa("127.20.13.11:7001");
    let listener = bind_retry(baddr).await;
    let (keep_tx, mut keep_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            // Accept and hold the connection open without ever reading.
            let _ = keep_tx.send(s);
        }
    });
    let vip = sa("127.20.13.1:7000");
    let proxy = start_tcp_one("flood", vip, baddr, Duration::from_secs(5)).await;
    let mut c = TcpStream::connect(vip).await.unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_millis(1500), c.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break, // blocked: flow control reached the client
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the client could write for 6 s without being held back ({written} bytes)"
    );
    assert!(
        written < 64 << 20,
        "{written} bytes got in before the client was held back"
    );
    while keep_rx.try_recv().is_ok() {}
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_options_from_the_caller_are_used_and_yield_off_relays_the_same() {
    init_tracing();
    let a = Backend::start("a", sa("127.20.14.11:7001")).await;
    let vip = sa("127.20.14.1:7000");
    let cfg = cluster(vec![service(
        "opts",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1)],
    )]);
    let proxy = tandem_proxy::Proxy::start_with_options(
        cfg,
        Default::default(),
        tandem_proxy::ProxyOptions {
            tcp_relay: tandem_proxy::TcpRelay::Uring(1),
            relay_yield: false,
            ..Default::default()
        },
    )
    .unwrap();
    // Where io_uring cannot be set up the proxy falls back to a poll loop; either way the option was taken.
    assert!(matches!(
        proxy.tcp_relay(),
        tandem_proxy::TcpRelay::Uring(1) | tandem_proxy::TcpRelay::Loops(1)
    ));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "opts")).await;
    for _ in 0..3 {
        assert_eq!(who(vip).await.unwrap(), "a");
    }
    proxy.shutdown().await;
}

/// A node that gives up a VIP closes what it proxied for it: every connection of that VIP (each of its ports) has
/// its client reset and its server side closed within moments; connections of another VIP go on, and the released
/// VIP serves again afterwards (its next connections are not closed by the earlier release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_resets_clients_and_closes_servers_of_the_released_vips_only() {
    init_tracing();
    let mut backend = WatchedBackend::start(sa("127.26.1.11:7001"), true).await;
    let (released, kept) = (sa("127.26.1.1:7000"), sa("127.26.1.2:7000"));
    let mut two_ports = service(
        "rel",
        released,
        Mode::Tcp,
        vec![server("a", backend.addr, 1)],
    );
    two_ports.ports.push(7002);
    let proxy = start(cluster(vec![
        two_ports,
        service("kept", kept, Mode::Tcp, vec![server("a", backend.addr, 1)]),
    ]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "rel") && all_up(s, "kept")
    })
    .await;
    let within = Duration::from_secs(2);
    async fn echoed(c: &mut TcpStream) {
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"ping");
    }
    let mut conns = Vec::new();
    for vip in [released, sa("127.26.1.1:7002"), kept] {
        let mut c = TcpStream::connect(vip).await.unwrap();
        echoed(&mut c).await;
        let Some(Seen::Data(id)) = backend.next(within).await else {
            panic!("the backend did not see the connection to {vip}");
        };
        conns.push((c, id));
    }
    let started = Instant::now();
    assert_eq!(proxy.close_connections_of(&[ip("127.26.1.1")]), 2);
    for (c, _) in &mut conns[..2] {
        assert!(was_reset(c, within).await, "the client was not reset");
    }
    let mut closed = Vec::new();
    while closed.len() < 2 {
        match backend.next(within).await {
            Some(Seen::Closed(id)) => closed.push(id),
            other => panic!("expected the server sides to close, got {other:?}"),
        }
    }
    closed.sort();
    assert_eq!(closed, vec![conns[0].1, conns[1].1]);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "closing took {took:?}");
    // The other VIP's connection is untouched; the released VIP serves new connections, which a later release
    // closes again.
    echoed(&mut conns[2].0).await;
    let mut again = TcpStream::connect(released).await.unwrap();
    echoed(&mut again).await;
    assert!(matches!(backend.next(within).await, Some(Seen::Data(_))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    echoed(&mut again).await;
    assert_eq!(proxy.close_connections_of(&[ip("127.26.1.1")]), 1);
    assert!(was_reset(&mut again, within).await);
    assert!(matches!(backend.next(within).await, Some(Seen::Closed(_))));
    echoed(&mut conns[2].0).await;
    assert_eq!(proxy.released_connections_closed(), 3);
    // A shutdown is not a release: the client sees its connection end, without a reset.
    proxy.shutdown().await;
    assert!(!was_reset(&mut conns[2].0, within).await);
}
