//! Sync benchmark on loopback (127.0.0.1 -> 127.0.0.2): replication lag (update on the active
//! node -> applied on the standby) at 10k and 100k updates/s, and full resync time of 1M entries.
//!
//! `cargo run --release -p tandem-sync --example sync_bench`
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_stick::{Clock, StickKey, StickTables, TableSpec};
use tandem_sync::{
    ConfigRole, ConfigSink, Identity, Secret, SharedTables, SyncHandle, SyncParams, SyncSettings,
    spawn_sync,
};

struct NoConfig;
impl ConfigSink for NoConfig {
    fn offer(
        &mut self,
        _: &[u8],
        _: &[tandem_sync::ConfigFile],
        _: u64,
        _: &str,
    ) -> Result<(), String> {
        Ok(())
    }
}

fn tables() -> SharedTables {
    let mut t = StickTables::new();
    t.reconcile(
        [(
            "nova_novncproxy".to_string(),
            TableSpec::from_config(3600, 2_000_000),
        )],
        0,
    );
    Arc::new(Mutex::new(t))
}

fn key(i: u32) -> StickKey {
    StickKey::SourceIp(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

async fn start_pair(
    port: u16,
    a: SharedTables,
    b: SharedTables,
    clock: Clock,
) -> (SyncHandle, SyncHandle) {
    let identity = Identity::new(
        "bench",
        Secret::new(b"bench-secret-0123456789-0123456789".to_vec()).unwrap(),
    );
    let la = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), port);
    let lb = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
    let params = |local, peer, role| SyncParams {
        local,
        peer,
        identity: identity.clone(),
        role,
        settings: SyncSettings::default(),
    };
    let hb = spawn_sync(
        params(lb, la, ConfigRole::Secondary),
        b,
        clock,
        Box::new(NoConfig),
        None,
        false,
    )
    .await
    .unwrap();
    let ha = spawn_sync(
        params(la, lb, ConfigRole::Primary),
        a,
        clock,
        Box::new(NoConfig),
        None,
        true,
    )
    .await
    .unwrap();
    (ha, hb)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Clients whose entries the lag test keeps updating (a steady-state table: no growth).
const LAG_KEYS: u32 = 50_000;

async fn lag(rate: u32, seconds: u32, port: u16) {
    let clock = Clock::new();
    let (a, b) = (tables(), tables());
    {
        let mut t = a.lock().unwrap();
        let table = t.get_mut("nova_novncproxy").unwrap();
        for i in 0..LAG_KEYS {
            table.set(&key(i), "Overcloud-controller-1", 0);
        }
    }
    let (ha, hb) = start_pair(port, a.clone(), b.clone(), clock).await;
    let mut st = hb.status();
    let ready = tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| s.caught_up && s.tables[0].local_entries == LAG_KEYS as u64),
    )
    .await
    .is_ok();
    assert!(ready, "initial resync did not finish");
    let base = Instant::now();
    let total = rate * seconds;
    let stop = Arc::new(AtomicBool::new(false));
    // Producer: every half millisecond, the updates due by now. Update n moves client n % K to
    // a server label carrying n and its send time (µs).
    let producer = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while sent < total {
                let due = ((base.elapsed().as_secs_f64() * rate as f64) as u32).min(total);
                if due > sent {
                    let mut t = a.lock().unwrap();
                    let table = t.get_mut("nova_novncproxy").unwrap();
                    let now = clock.now_ms();
                    for n in sent..due {
                        let us = base.elapsed().as_micros();
                        table.set(&key(n % LAG_KEYS), &format!("{n}:{us}"), now);
                    }
                    sent = due;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    // Observer: updates arrive in log order; follow them in order and time each arrival.
    let observer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lags = Vec::with_capacity(total as usize);
            let mut next = 0u32;
            let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 10);
            while next < total && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                {
                    let t = b.lock().unwrap();
                    let table = t.get("nova_novncproxy").unwrap();
                    let now = clock.now_ms();
                    while next < total {
                        let Some(e) = table.peek(&key(next % LAG_KEYS), now) else {
                            break;
                        };
                        let Some((n, us)) = e.server.split_once(':') else {
                            break;
                        };
                        let (n, sent_us): (u32, u128) = (n.parse().unwrap(), us.parse().unwrap());
                        if n < next {
                            break;
                        }
                        lags.push(
                            (base.elapsed().as_micros().saturating_sub(sent_us)) as f64 / 1000.0,
                        );
                        next += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            lags
        })
    };
    producer.join().unwrap();
    let mut lags = tokio::task::spawn_blocking(move || observer.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    lags.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let s = ha.status().borrow().clone();
    println!(
        "lag at {rate:>6} updates/s for {seconds} s: applied {}/{total}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} frames, {:.1} MB sent)",
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        s.counters.frames_sent,
        s.counters.bytes_sent as f64 / 1e6,
    );
}

async fn resync(entries: u32, port: u16) {
    let clock = Clock::new();
    let (a, b) = (tables(), tables());
    {
        let mut t = a.lock().unwrap();
        let table = t.get_mut("nova_novncproxy").unwrap();
        for i in 0..entries {
            table.set(
                &key(i),
                [
                    "Overcloud-controller-1",
                    "Overcloud-controller-2",
                    "Overcloud-controller-3",
                ][(i % 3) as usize],
                0,
            );
        }
    }
    let started = Instant::now();
    let (_ha, hb) = start_pair(port, a, b.clone(), clock).await;
    let mut st = hb.status();
    // (The `Ref` returned by `wait_for` holds the status lock: never keep it.)
    let connected = tokio::time::timeout(Duration::from_secs(5), st.wait_for(|s| s.connected))
        .await
        .is_ok();
    let connected_at = started.elapsed();
    assert!(connected);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = b.lock().unwrap().get("nova_novncproxy").unwrap().len();
        if n as u32 >= entries || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = started.elapsed();
    let n = b.lock().unwrap().get("nova_novncproxy").unwrap().len();
    if std::env::var_os("SYNC_BENCH_DEBUG").is_some() {
        eprintln!("{:#?}", hb.status().borrow().clone());
    }
    println!(
        "full resync of {entries} entries: {n} received in {:.0} ms ({:.0} ms after the session opened)",
        total.as_secs_f64() * 1000.0,
        (total - connected_at).as_secs_f64() * 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base_port = 17_000 + (std::process::id() % 20_000) as u16;
    let only_resync: Option<u32> = std::env::var("SYNC_BENCH_RESYNC")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(n) = only_resync {
        resync(n, base_port + 3).await;
        return;
    }
    lag(10_000, 3, base_port).await;
    lag(100_000, 3, base_port + 1).await;
    resync(1_000_000, base_port + 2).await;
}
