//! Live reload under load: unchanged services lose nothing, changed ones keep their listeners, connections, admin
//! states and stick tables; removed ones stop listening; added ones start. And the config crate's reload plan is
//! what decides: servers kept or replaced, the connection limit kept or new, a stale plan made again.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tandem_config::ReloadPlan;
use tandem_config::model::{Mode, PersistenceMode};
use tandem_proxy::AdminState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_on_unchanged_services() {
    init_tracing();
    let net = "127.22.1";
    let t1 = Backend::start("t1", sa(&format!("{net}.11:7001"))).await;
    let t2 = Backend::start("t2", sa(&format!("{net}.12:7001"))).await;
    let t3 = Backend::start("t3", sa(&format!("{net}.13:7001"))).await;
    let h1 = HttpBackend::start("h1", sa(&format!("{net}.21:8001"))).await;
    let h2 = HttpBackend::start("h2", sa(&format!("{net}.22:8001"))).await;

    let tcp_vip = sa(&format!("{net}.1:7000"));
    let http_vip = sa(&format!("{net}.1:8000"));
    let changed_vip = sa(&format!("{net}.1:7100"));
    let removed_vip = sa(&format!("{net}.1:7200"));
    let added_vip = sa(&format!("{net}.1:7300"));

    let mut tcp = service(
        "tcp-same",
        tcp_vip,
        Mode::Tcp,
        vec![server("t1", t1.addr, 1), server("t2", t2.addr, 1)],
    );
    tcp.persistence = persistence(PersistenceMode::SourceIp, 300);
    let http = service(
        "http-same",
        http_vip,
        Mode::Http,
        vec![server("h1", h1.addr, 1), server("h2", h2.addr, 1)],
    );
    let mut changed = service(
        "changing",
        changed_vip,
        Mode::Tcp,
        vec![server("t1", t1.addr, 1), server("t2", t2.addr, 1)],
    );
    changed.persistence = persistence(PersistenceMode::SourceIp, 300);
    let removed = service(
        "removed",
        removed_vip,
        Mode::Tcp,
        vec![server("t1", t1.addr, 1)],
    );
    let v1 = cluster(vec![tcp.clone(), http.clone(), changed.clone(), removed]);

    // v2: "changing" gets a new server, other weights and a slower check; "removed" goes; "added" comes.
    let mut changed2 = changed.clone();
    changed2.servers[0].weight = 3;
    changed2.servers.push(server("t3", t3.addr, 1));
    changed2.health_check = health(60, 1, 2);
    let added = service(
        "added",
        added_vip,
        Mode::Tcp,
        vec![server("t3", t3.addr, 1)],
    );
    let v2 = cluster(vec![tcp.clone(), http.clone(), changed2, added]);

    let proxy = start(v1.clone());
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        s.services
            .iter()
            .all(|x| x.servers.iter().all(|r| r.health == "up"))
    })
    .await;

    // State that must survive: admin states, stick entries, established connections.
    proxy
        .set_server_state("tcp-same", "t2", AdminState::Drain)
        .unwrap();
    proxy
        .set_server_state("changing", "t2", AdminState::Drain)
        .unwrap();
    let sticky_src = ip(&format!("{net}.200"));
    let sticky_server = who_from(tcp_vip, Some(sticky_src)).await.unwrap();
    let changed_sticky_src = ip(&format!("{net}.201"));
    let changed_sticky = who_from(changed_vip, Some(changed_sticky_src))
        .await
        .unwrap();
    let (_, mut held_same) = hold(tcp_vip).await;
    let (_, mut held_changed) = hold(changed_vip).await;
    let mut http_keepalive = HttpClient::connect(http_vip).await;
    assert_eq!(http_keepalive.get("/", &[]).await.status, 200);

    // Load on the unchanged services and on the changed one (its VIP:port stays) while reloading back and forth.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for vip in [tcp_vip, changed_vip] {
        for _ in 0..3 {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match who(vip).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("{vip}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }
    for _ in 0..3 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut c = HttpClient::connect(http_vip).await;
                for _ in 0..5 {
                    let r = c.get("/", &[]).await;
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }
        }));
    }
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = proxy.reload(if i % 2 == 0 { v2.clone() } else { v1.clone() });
        assert!(
            report.unchanged.contains(&"tcp-same".to_string())
                && report.unchanged.contains(&"http-same".to_string())
        );
        assert_eq!(report.changed, vec!["changing".to_string()]);
        assert!(report.bind_errors.is_empty(), "{report:?}");
    }
    // End on v2.
    let report = proxy.reload(v2.clone());
    assert_eq!(report.changed, vec!["changing".to_string()]);
    assert_eq!(report.added, vec!["added".to_string()]);
    assert_eq!(report.removed, vec!["removed".to_string()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 500, "too little load: {ok}");
    assert_eq!(
        failed, 0,
        "{failed} failed requests during reloads ({ok} ok)"
    );

    // Established connections and the keep-alive client survived.
    for held in [&mut held_same, &mut held_changed] {
        held.write_all(b"still").await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), held.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"still");
    }
    assert_eq!(http_keepalive.get("/", &[]).await.status, 200);

    // Admin states and stick entries kept (also for the changed service).
    let st = proxy.status();
    let state_of = |svc: &str, srv: &str| {
        st.services
            .iter()
            .find(|s| s.label == svc)
            .unwrap()
            .servers
            .iter()
            .find(|r| r.label == srv)
            .unwrap()
            .admin_state
    };
    assert_eq!(state_of("tcp-same", "t2"), AdminState::Drain);
    assert_eq!(state_of("changing", "t2"), AdminState::Drain);
    assert_eq!(
        who_from(tcp_vip, Some(sticky_src)).await.unwrap(),
        sticky_server
    );
    assert_eq!(
        who_from(changed_vip, Some(changed_sticky_src))
            .await
            .unwrap(),
        changed_sticky
    );
    let changing = st.services.iter().find(|s| s.label == "changing").unwrap();
    assert_eq!(changing.servers.len(), 3);
    assert_eq!(changing.servers[0].weight, 3);
    assert!(
        changing.total_connections > 100,
        "counters carried over: {}",
        changing.total_connections
    );

    // Removed service no longer listens; the added one serves once its server is up.
    assert!(TcpStream::connect(removed_vip).await.is_err());
    wait_for(&proxy, Duration::from_secs(5), "added up", |s| {
        all_up(s, "added")
    })
    .await;
    assert_eq!(who(added_vip).await.unwrap(), "t3");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_health_settings_keeps_servers_up_and_still_detects_failure() {
    init_tracing();
    let a = Backend::start("a", sa("127.22.2.11:7001")).await;
    let vip = sa("127.22.2.1:7000");
    let svc = service("svc", vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    let proxy = start(cluster(vec![svc.clone()]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "svc")).await;
    let mut svc2 = svc.clone();
    svc2.health_check = health(40, 3, 2);
    proxy.reload(cluster(vec![svc2]));
    // Still up right after the reload (no new rise period).
    assert!(all_up(&proxy.status(), "svc"));
    assert_eq!(who(vip).await.unwrap(), "a");
    a.kill();
    wait_for(&proxy, Duration::from_secs(2), "down", |s| {
        server_health(s, "svc", "a") == "down"
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_new_address_gets_a_new_runtime_and_keeps_its_drain() {
    init_tracing();
    let a = Backend::start("a", sa("127.22.3.11:7001")).await;
    let moved = Backend::start("moved", sa("127.22.3.12:7001")).await;
    let k = Backend::start("k", sa("127.22.3.13:7001")).await;
    let vip = sa("127.22.3.1:7000");
    let svc = service(
        "svc",
        vip,
        Mode::Tcp,
        vec![server("a", a.addr, 1), server("k", k.addr, 1)],
    );
    let proxy = start(cluster(vec![svc.clone()]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "svc")).await;
    proxy
        .set_server_state("svc", "a", AdminState::Drain)
        .unwrap();
    let before = proxy.service("svc").unwrap();

    let mut svc2 = svc.clone();
    svc2.servers[0] = server("a", moved.addr, 1);
    let v2 = cluster(vec![svc2]);
    let report = proxy.reload(v2);
    assert_eq!(report.changed, vec!["svc".to_string()]);
    assert!(!report.replanned);

    let after = proxy.service("svc").unwrap();
    let (old_a, new_a) = (before.server("a").unwrap(), after.server("a").unwrap());
    assert!(
        !Arc::ptr_eq(old_a, new_a),
        "a new runtime for the new address"
    );
    assert_eq!(new_a.target(0), moved.addr);
    assert_eq!(new_a.admin_state(), AdminState::Drain, "drain carried over");
    assert!(
        Arc::ptr_eq(before.server("k").unwrap(), after.server("k").unwrap()),
        "the unchanged server keeps its runtime"
    );
    // The new runtime is checked at the new address; drained, it takes no new clients.
    wait_for(&proxy, Duration::from_secs(5), "moved up", |s| {
        server_health(s, "svc", "a") == "up"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(who(vip).await.unwrap(), "k");
    }
    proxy
        .set_server_state("svc", "a", AdminState::Online)
        .unwrap();
    proxy
        .set_server_state("svc", "k", AdminState::Drain)
        .unwrap();
    assert_eq!(who(vip).await.unwrap(), "moved");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_service_keeps_its_runtime_connection_and_counters() {
    init_tracing();
    let a = Backend::start("a", sa("127.22.4.11:7001")).await;
    let b = Backend::start("b", sa("127.22.4.12:7001")).await;
    let same_vip = sa("127.22.4.1:7000");
    let other_vip = sa("127.22.4.1:7100");
    let same = service("same", same_vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    let other = service("other", other_vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    let proxy = start(cluster(vec![same.clone(), other.clone()]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "same") && all_up(s, "other")
    })
    .await;
    let (_, mut held) = hold(same_vip).await;
    let before = proxy.service("same").unwrap();
    let total = before.counters.total.load(Ordering::Relaxed);

    let mut other2 = other.clone();
    other2.servers.push(server("b", b.addr, 1));
    let v2 = cluster(vec![same, other2]);
    let report = proxy.reload(v2);
    assert_eq!(report.unchanged, vec!["same".to_string()]);
    assert_eq!(report.changed, vec!["other".to_string()]);

    let after = proxy.service("same").unwrap();
    assert!(Arc::ptr_eq(&before, &after), "the same runtime");
    assert_eq!(after.counters.total.load(Ordering::Relaxed), total);
    assert_eq!(
        after.counters.current.load(Ordering::Relaxed),
        1,
        "the held connection"
    );
    held.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(2), held.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_limit_replaces_the_semaphore_an_unchanged_one_carries_over() {
    init_tracing();
    let a = Backend::start("a", sa("127.22.5.11:7001")).await;
    let vip = sa("127.22.5.1:7000");
    let mut svc = service("svc", vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    svc.proxy.max_connections = 1;
    let proxy = start(cluster(vec![svc.clone()]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "svc")).await;
    let (_, _held) = hold(vip).await;
    // At the limit: the next client waits in the listen backlog.
    let waiting = tokio::spawn(who(vip));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "over the limit");

    // Another setting changes: the semaphore, and the permit the held connection has, carry over.
    let mut weight = svc.clone();
    weight.servers[0].weight = 5;
    let v2 = cluster(vec![weight.clone()]);
    let report = proxy.reload(v2);
    assert_eq!(report.changed, vec!["svc".to_string()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still at the limit of 1");

    // A new limit: a new semaphore, so the waiting client gets in.
    let mut bigger = weight;
    bigger.proxy.max_connections = 2;
    let v3 = cluster(vec![bigger]);
    proxy.reload(v3);
    let name = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(name, "a");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_from_another_configuration_is_made_again() {
    init_tracing();
    let a = Backend::start("a", sa("127.22.6.11:7001")).await;
    let one_vip = sa("127.22.6.1:7000");
    let two_vip = sa("127.22.6.1:7100");
    let one = service("one", one_vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    let two = service("two", two_vip, Mode::Tcp, vec![server("a", a.addr, 1)]);
    let proxy = start(cluster(vec![one.clone()]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "one")).await;
    let before = proxy.service("one").unwrap();

    // Planned from a configuration the proxy never served (another weight on "one").
    let mut stale_one = one.clone();
    stale_one.servers[0].weight = 9;
    let stale = cluster(vec![stale_one]);
    let v2 = cluster(vec![one, two]);
    let plan = ReloadPlan::new(&stale, &v2);
    assert_eq!(plan.changed(), vec!["one"]);
    let report = proxy.apply_plan(&stale, v2, &plan);
    assert!(report.replanned);
    assert_eq!(report.unchanged, vec!["one".to_string()]);
    assert_eq!(report.added, vec!["two".to_string()]);
    assert!(Arc::ptr_eq(&before, &proxy.service("one").unwrap()));
    wait_for(&proxy, Duration::from_secs(5), "two up", |s| {
        all_up(s, "two")
    })
    .await;
    assert_eq!(who(two_vip).await.unwrap(), "a");
    proxy.shutdown().await;
}
