//! Reading `[tuning]` of `node.toml` (engine, relay, worker threads, priorities) into [`Tuning`].

use crate::diag::Ctx;
use crate::model::{HttpEngineKind, HttpWriteBatching, TcpRelayKind, Tuning};
use crate::reader::{Section, Val, boolean, choice, int_in, table};

/// Keys of `[tuning]` (also how the other sections recognise a tuning key put in the wrong place).
pub(crate) const TUNING_KEYS: &[&str] = &[
    "http_engine",
    "http_write_batching",
    "http_poll_us",
    "tcp_relay",
    "relay_yield",
    "workers",
    "heartbeat_realtime",
];

/// Polling longer than this before sleeping is a typo (a millisecond of spinning per wait).
const MAX_HTTP_POLL_US: u64 = 1000;

/// More worker threads than this is a typo, not a machine.
const MAX_WORKERS: u64 = 1024;

const HTTP_ENGINES: &[(&str, HttpEngineKind)] = &[
    ("batched", HttpEngineKind::Batched),
    ("tasks", HttpEngineKind::Tasks),
    ("hyper", HttpEngineKind::Hyper),
];

const WRITE_BATCHINGS: &[(&str, HttpWriteBatching)] = &[
    ("adaptive", HttpWriteBatching::Adaptive),
    ("always", HttpWriteBatching::Always),
    ("never", HttpWriteBatching::Never),
];

const TCP_RELAYS: &[(&str, TcpRelayKind)] = &[
    ("auto", TcpRelayKind::Auto),
    ("uring", TcpRelayKind::Uring),
    ("poll", TcpRelayKind::Poll),
    ("tasks", TcpRelayKind::Tasks),
];

/// `[tuning]`, defaults for what is not written; `None` when something in it is wrong (reported).
pub(crate) fn read_tuning(ctx: &mut Ctx<'_>, v: Option<&Val<'_>>) -> Option<Tuning> {
    let mut tuning = Tuning::default();
    let Some(v) = v else {
        return Some(tuning);
    };
    let t = table(ctx, "tuning", v)?;
    let s = Section::new("[tuning]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, TUNING_KEYS, &|_| None);
    if let Some(e) = s
        .get("http_engine")
        .and_then(|e| choice(ctx, "http_engine", e, HTTP_ENGINES))
    {
        tuning.http_engine = e.v;
    }
    if let Some(b) = s
        .get("http_write_batching")
        .and_then(|b| choice(ctx, "http_write_batching", b, WRITE_BATCHINGS))
    {
        tuning.http_write_batching = b.v;
    }
    if let Some(p) = s
        .get("http_poll_us")
        .and_then(|p| int_in(ctx, "http_poll_us", p, 0, MAX_HTTP_POLL_US, ""))
        .and_then(|p| u32::try_from(p.v).ok())
    {
        tuning.http_poll_us = p;
    }
    if let Some(r) = s
        .get("tcp_relay")
        .and_then(|r| choice(ctx, "tcp_relay", r, TCP_RELAYS))
    {
        tuning.tcp_relay = r.v;
    }
    if let Some(y) = s
        .get("relay_yield")
        .and_then(|y| boolean(ctx, "relay_yield", y))
    {
        tuning.relay_yield = y.v;
    }
    if let Some(w) = s
        .get("workers")
        .and_then(|w| int_in(ctx, "workers", w, 0, MAX_WORKERS, ""))
        .and_then(|w| u32::try_from(w.v).ok())
    {
        tuning.workers = w;
    }
    if let Some(rt) = s
        .get("heartbeat_realtime")
        .and_then(|rt| boolean(ctx, "heartbeat_realtime", rt))
    {
        tuning.heartbeat_realtime = rt.v;
    }
    (ctx.diags.errors.len() == errors_before).then_some(tuning)
}
