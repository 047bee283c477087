//! Bad and heavy clients: 10k idle connections, and real third-party tools (`redis-benchmark` against a real
//! `redis-server` through TCP mode).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tandem_config::model::Mode;
use tokio::net::TcpStream;

/// Not a test on its own: the body of the child process that holds the idle client connections of
/// `ten_thousand_idle_connections_stay_bounded_and_responsive` (a process may hold at most 20000 descriptors here,
/// and the clients plus the proxy plus the backends would need more). Returns at once unless spawned by that test.
#[test]
fn idle_clients_child_process() {
    let Ok(spec) = std::env::var("TANDEM_IDLE_CLIENTS") else {
        return;
    };
    let mut held = Vec::new();
    for part in spec.split(',') {
        let (addr, count) = part.split_once('=').unwrap();
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        for _ in 0..count.parse::<usize>().unwrap() {
            held.push(std::net::TcpStream::connect(addr).unwrap());
        }
    }
    use std::io::{Read, Write};
    println!("READY {}", held.len());
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink); // parent closes stdin (or kills us) to end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_bounded_and_responsive() {
    init_tracing();
    raise_nofile(20_000);
    let a = HttpBackend::start("a", sa("127.23.1.11:8001")).await;
    let t = Backend::start("t", sa("127.23.1.12:7001")).await;
    let http_vip = sa("127.23.1.1:8000");
    let tcp_vip = sa("127.23.1.1:7000");
    // The backends share this process with 10k connections being opened: relaxed health checks, so
    // what is measured is the proxy's memory and responsiveness, not a check timing out in the burst.
    let relaxed = |mut svc: tandem_config::model::Service| {
        svc.health_check = health(500, 1, 10);
        svc
    };
    let proxy = start(cluster(vec![
        relaxed(service(
            "web",
            http_vip,
            Mode::Http,
            vec![server("a", a.addr, 1)],
        )),
        relaxed(service(
            "tcp",
            tcp_vip,
            Mode::Tcp,
            vec![server("t", t.addr, 1)],
        )),
    ]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| {
        all_up(s, "web") && all_up(s, "tcp")
    })
    .await;
    let (http_n, tcp_n): (usize, usize) = match std::env::var("TANDEM_IDLE_SPLIT") {
        Ok(v) => {
            let (h, t) = v.split_once(',').unwrap();
            (h.parse().unwrap(), t.parse().unwrap())
        }
        Err(_) => (8000, 2000),
    };
    let rss_before = rss_kib();

    // 10k idle clients from a child process: 8000 on HTTP mode, 2000 on TCP mode (which also holds 2000 upstream
    // connections to the in-process backend).
    let mut child = Child(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "idle_clients_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "TANDEM_IDLE_CLIENTS",
                format!("{http_vip}={http_n},{tcp_vip}={tcp_n}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let ready = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.find("READY").map(|i| l[i..].to_string()))
        }),
    )
    .await
    .expect("child did not report READY within 30 s")
    .unwrap();
    assert_eq!(
        ready,
        Some(format!("READY {}", http_n + tcp_n)),
        "child could not open its connections"
    );
    wait_for(&proxy, Duration::from_secs(10), "all accepted", |s| {
        s.services
            .iter()
            .map(|x| x.current_connections)
            .sum::<u64>()
            == (http_n + tcp_n) as u64
    })
    .await;

    // Still responsive for everyone else.
    let t0 = Instant::now();
    for _ in 0..50 {
        let mut c = HttpClient::connect(http_vip).await;
        assert_eq!(c.get("/", &[]).await.body, "a");
        assert_eq!(who(tcp_vip).await.unwrap(), "t");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "50 request pairs took {took:?} with 10k idle connections"
    );

    // Memory of this process (proxy + backends): bounded per idle connection. TCP relays hold no buffer while
    // idle; hyper keeps a small read buffer per HTTP connection.
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!(
        "RSS grew by {grown} KiB for 10k idle client connections (+2k upstream, +2k backend)"
    );
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop(child);
    wait_for(&proxy, Duration::from_secs(10), "all closed", |s| {
        s.services
            .iter()
            .map(|x| x.current_connections)
            .sum::<u64>()
            == 0
    })
    .await;
    proxy.shutdown().await;
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_through_tcp_mode_has_no_errors() {
    init_tracing();
    let server_bin = require_binary("redis-server");
    let bench_bin = require_binary("redis-benchmark");
    let dir = tempfile::tempdir().unwrap();
    let redis_addr = sa("127.23.100.11:16379");
    let _redis = Child(
        Command::new(server_bin)
            .args([
                "--bind",
                "127.23.100.11",
                "--port",
                "16379",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let vip = sa("127.23.100.1:6379");
    let proxy = start_tcp_one("redis", vip, redis_addr, Duration::from_secs(10)).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bench_bin)
            .args([
                "-h",
                "127.23.100.1",
                "-p",
                "6379",
                "-n",
                "10000",
                "-c",
                "20",
                "-t",
                "set,get,incr,lpush,lpop",
                "-q",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "redis-benchmark failed: {stdout} {stderr}"
    );
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    for t in ["SET", "GET", "INCR", "LPUSH", "LPOP"] {
        assert!(
            stdout.contains(&format!("{t}:")),
            "no {t} result in: {stdout}"
        );
    }
    // A real redis client sees consistent data through the proxy.
    let mut s = TcpStream::connect(vip).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"*3\r\n$3\r\nSET\r\n$5\r\nmykey\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$5\r\nmykey\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"hello\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$5\r\nhello\r\n");
    let st = proxy.status();
    assert!(st.services[0].total_connections >= 100);
    assert_eq!(st.services[0].failures, 0);
    proxy.shutdown().await;
}
