//! Throughput and memory of one stick table at 1M entries.
//! Run: `cargo run --release -p tandem-stick --example stick_bench [entries]`
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tandem_stick::{SnapshotCursor, StickKey, StickTable, TableSpec};

/// Counts live heap bytes, so bytes per entry is measured, not estimated.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SERVERS: [&str; 3] = [
    "Overcloud-controller-0",
    "Overcloud-controller-1",
    "Overcloud-controller-2",
];

fn key(i: u32) -> StickKey {
    StickKey::SourceIp(IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes()))
}

/// xorshift: a fixed, cheap pseudo-random order of existing keys.
fn shuffled(n: u32) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(n)) as u32
        })
        .collect()
}

fn rate(label: &str, ops: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<44} {:>12.0} ops/s  ({ops} in {:.3} s, {:.0} ns/op)",
        ops as f64 / secs,
        secs,
        secs * 1e9 / ops as f64
    );
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let spec = TableSpec {
        timeout_ms: Some(300_000),
        capacity: n as usize,
    };
    let order = shuffled(n);
    let mut now = 1_000u64;

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut table = StickTable::new(spec);
    let start = Instant::now();
    for i in 0..n {
        table.set(&key(i), SERVERS[(i % 3) as usize], now);
        if i % 1024 == 0 {
            now += 1;
        }
    }
    rate(
        "insert (new keys, growing to capacity)",
        u64::from(n),
        start,
    );
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "memory at {n} entries: {:.1} MiB, {:.1} bytes/entry (entries, index, expiry order, log)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / f64::from(n)
    );

    let start = Instant::now();
    let mut hits = 0u64;
    for &i in &order {
        hits += u64::from(table.lookup(&key(i), now).is_some());
        now += u64::from(i % 64 == 0);
    }
    rate("lookup + touch (hit, random order)", u64::from(n), start);
    assert_eq!(hits, u64::from(n));

    let start = Instant::now();
    for i in 0..n {
        assert!(table.lookup(&key(n + i), now).is_none());
    }
    rate("lookup (miss)", u64::from(n), start);

    let start = Instant::now();
    for &i in &order {
        table.set(&key(i), SERVERS[((i + 1) % 3) as usize], now);
    }
    rate("set (existing key, server changes)", u64::from(n), start);

    let start = Instant::now();
    for i in 0..n {
        table.set(&key(n + i), SERVERS[(i % 3) as usize], now);
        now += u64::from(i % 1024 == 0);
    }
    rate("insert into full table (evicts LRU)", u64::from(n), start);
    let stats = table.stats();
    println!(
        "after churn: {} entries, {} tombstones, {} log items, {:.1} bytes/entry",
        stats.entries,
        stats.tombstones,
        stats.log_items,
        (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / f64::from(n)
    );

    // Full resync: snapshot in chunks of 10k, applied to an empty table.
    let mut receiver = StickTable::new(spec);
    let start = Instant::now();
    let mut cursor = Some(SnapshotCursor::START);
    let mut sent = 0u64;
    let mut longest_chunk = 0f64;
    receiver.begin_resync();
    while let Some(c) = cursor {
        let chunk_start = Instant::now();
        let (entries, next) = table.snapshot_chunk(c, 10_000, now);
        longest_chunk = longest_chunk.max(chunk_start.elapsed().as_secs_f64());
        for e in &entries {
            receiver.apply_remote_entry(e, now);
        }
        sent += entries.len() as u64;
        cursor = next;
    }
    receiver.end_resync();
    rate("full resync (snapshot 10k chunks + apply)", sent, start);
    println!(
        "  longest snapshot_chunk(10k): {:.2} ms",
        longest_chunk * 1e3
    );
    assert_eq!(receiver.len(), table.len());

    resync_under_churn(&mut table, spec, &mut now, n);

    let start = Instant::now();
    let mut after = table.stats().log_floor;
    let mut read = 0u64;
    loop {
        let batch = table.updates_since(after, 4096, now).unwrap();
        if batch.updates.is_empty() {
            break;
        }
        read += batch.updates.len() as u64;
        after = batch.up_to;
    }
    rate("read whole change log (batches of 4096)", read, start);

    let start = Instant::now();
    let expired = table.expire(now + 300_000);
    rate("expire (every entry)", expired as u64, start);
}

/// A full resync of the whole table while the source keeps changing (1000 sets, lookups and
/// removes between chunks), then the log from the snapshot's start: the receiver must end up
/// with exactly the source's entries.
fn resync_under_churn(table: &mut StickTable, spec: TableSpec, now: &mut u64, n: u32) {
    let mut receiver = StickTable::new(spec);
    let start = Instant::now();
    let log_start = table.last_update_id();
    let mut cursor = Some(SnapshotCursor::START);
    let mut churn = 0u32;
    receiver.begin_resync();
    while let Some(c) = cursor {
        let (entries, next) = table.snapshot_chunk(c, 10_000, *now);
        for e in &entries {
            receiver.apply_remote_entry(e, *now);
        }
        cursor = next;
        for _ in 0..1000 {
            churn = churn.wrapping_add(7919);
            let k = key(churn % (2 * n));
            match churn % 5 {
                0 => {
                    table.remove(&k, *now);
                }
                1 | 2 => table.set(&k, SERVERS[(churn % 3) as usize], *now),
                _ => {
                    table.lookup(&k, *now);
                }
            }
        }
        *now += 5;
    }
    receiver.end_resync();
    let mut after = log_start;
    let mut streamed = 0usize;
    loop {
        let batch = table.updates_since(after, 4096, *now).unwrap();
        if batch.updates.is_empty() {
            break;
        }
        for u in &batch.updates {
            receiver.apply_remote(u, *now);
        }
        streamed += batch.updates.len();
        after = batch.up_to;
    }
    let elapsed = start.elapsed();
    let dump = |t: &StickTable| {
        let mut all = Vec::with_capacity(t.len());
        let mut cursor = Some(SnapshotCursor::START);
        while let Some(c) = cursor {
            let (entries, next) = t.snapshot_chunk(c, 65_536, *now);
            all.extend(
                entries
                    .into_iter()
                    .map(|e| (format!("{:?}", e.key), e.server, e.remaining_ms)),
            );
            cursor = next;
        }
        all.sort();
        all
    };
    let (want, got) = (dump(table), dump(&receiver));
    // Touches under the granularity step are not logged: the receiver's lifetimes may be up to
    // one step shorter, never longer.
    let step = table.touch_granularity_ms();
    let same = want.len() == got.len()
        && want.iter().zip(&got).all(|(w, g)| {
            w.0 == g.0
                && w.1 == g.1
                && matches!((w.2, g.2), (Some(w), Some(g)) if g <= w && w - g < step.max(1))
        });
    println!(
        "resync under churn: {} entries + {streamed} streamed updates in {:.3} s, receiver matches source: {same}",
        got.len(),
        elapsed.as_secs_f64()
    );
    assert!(same, "receiver differs from the source");
}
