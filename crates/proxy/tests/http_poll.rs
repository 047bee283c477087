//! The native engine's threads polling for work before they sleep (`[tuning] http_poll_us`): they serve as before,
//! and once requests stop they stop polling and sleep. This binary runs only this test, so the process's
//! `tandem-http-*` threads are this proxy's. Every address is on 127.0.0.0/8.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tandem_config::model::Mode;
use tandem_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CPU time (clock ticks) of this process's HTTP engine threads so far.
fn http_thread_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("tandem-http-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        if fields.len() > 12 {
            ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_threads_serve_and_sleep_once_requests_stop() {
    init_tracing();
    let vip = sa("127.44.1.1:8080");
    let backend = HttpBackend::start("b1", sa("127.44.1.10:8080")).await;
    // A whole millisecond of polling: were it kept up while idle, the threads would burn their core.
    let engine = tandem_proxy::H1Engine::on_threads(
        2,
        tandem_proxy::WriteBatching::Adaptive,
        Duration::from_millis(1),
    )
    .unwrap();
    let proxy = Proxy::start_with(
        cluster(vec![service(
            "web",
            vip,
            Mode::Http,
            vec![server("b1", backend.addr, 1)],
        )]),
        Default::default(),
        tandem_stick::Clock::new(),
        Arc::new(engine),
    )
    .unwrap();
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;

    // Back-to-back requests on a few keep-alive connections: work comes sooner than the limit, so the threads poll.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TcpStream::connect(vip).await.unwrap());
    }
    let mut buf = vec![0u8; 4096];
    for _ in 0..500 {
        for c in &mut clients {
            c.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\nb1") {
                let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "closed inside an answer");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200"));
        }
    }

    // Idle (connections still open): the threads sleep.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = http_thread_ticks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let idle_ticks = http_thread_ticks() - before;
    let tick_hz = 100; // USER_HZ on Linux
    assert!(
        idle_ticks * 1000 / tick_hz < 100,
        "idle HTTP threads used {idle_ticks} ticks in 1 s: still polling"
    );
    drop(clients);
    proxy.shutdown().await;
}
