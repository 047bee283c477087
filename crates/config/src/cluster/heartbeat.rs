//! `[heartbeat]`: timings, auto-failback, ping nodes, VIP announcements and the duplicate-VIP check.

use super::defaults as d;
use super::misplaced::misplaced_in_cluster;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{At, Section, Val, array, boolean, choice, int_in, ip, table};
use std::net::IpAddr;
use toml::de::DeTable;

/// Keys of `[heartbeat]` (also how node.toml recognises a heartbeat setting put in the wrong file).
pub(crate) const HEARTBEAT_KEYS: &[&str] = &[
    "interval_ms",
    "dead_ms",
    "warn_ms",
    "init_dead_ms",
    "auto_failback",
    "ping_nodes",
    "garp_count",
    "garp_spacing_ms",
    "garp_refresh_ms",
    "garp_form",
    "conflict_check_ms",
    "handover_drain_ms",
];

pub(super) fn read_heartbeat(
    ctx: &mut Ctx<'_>,
    v: Option<&Val<'_>>,
) -> (Option<HeartbeatConfig>, Vec<At<IpAddr>>) {
    let empty = DeTable::new();
    let (t, span) = match v {
        Some(v) => match table(ctx, "heartbeat", v) {
            Some(t) => (t, v.span()),
            None => return (None, Vec::new()),
        },
        None => (&empty, 0..0),
    };
    let s = Section::new("[heartbeat]", span.clone(), t);
    s.finish(ctx, HEARTBEAT_KEYS, &misplaced_in_cluster);
    let get = |ctx: &mut Ctx<'_>, key: &str, min: u64, max: u64| {
        s.get(key)
            .and_then(|v| int_in(ctx, key, v, min, max, " ms"))
    };
    let interval = get(ctx, "interval_ms", 10, 60_000);
    let dead = get(ctx, "dead_ms", 20, 600_000);
    let warn = get(ctx, "warn_ms", 10, 600_000);
    let init_dead = get(ctx, "init_dead_ms", 0, 3_600_000);
    let garp_spacing = get(ctx, "garp_spacing_ms", 0, 10_000);
    let garp_refresh = get(ctx, "garp_refresh_ms", 0, 3_600_000);
    let conflict_check = get(ctx, "conflict_check_ms", 0, 60_000);
    let handover_drain = get(ctx, "handover_drain_ms", 0, 10_000);
    let conflict_check_ok = match &conflict_check {
        Some(c) if c.v > 0 && c.v < d::CONFLICT_CHECK_MIN_MS => {
            ctx.error(
                &c.span,
                format!(
                    "`conflict_check_ms` ({}) must be 0 (off) or at least {} ms: every check probes every VIP",
                    c.v,
                    d::CONFLICT_CHECK_MIN_MS
                ),
            );
            false
        }
        _ => true,
    };
    let garp_count = s
        .get("garp_count")
        .and_then(|v| int_in(ctx, "garp_count", v, 1, 100, ""));
    let auto_failback = s
        .get("auto_failback")
        .and_then(|v| boolean(ctx, "auto_failback", v));
    let garp_form = s.get("garp_form").and_then(|v| {
        choice(
            ctx,
            "garp_form",
            v,
            &[
                ("request", GarpForm::Request),
                ("reply", GarpForm::Reply),
                ("both", GarpForm::Both),
            ],
        )
    });
    let mut ping = Vec::new();
    let mut ping_ok = true;
    if let Some(v) = s.get("ping_nodes")
        && let Some(items) = array(ctx, "ping_nodes", v)
    {
        for item in items {
            match ip(ctx, "ping_nodes", item) {
                Some(addr) => {
                    if let Some(first) = ping.iter().find(|p: &&At<IpAddr>| p.v == addr.v) {
                        let line = ctx.line_of(&first.span);
                        ctx.error(
                            &addr.span,
                            format!(
                                "ping node {} is listed twice (first at line {line})",
                                addr.v
                            ),
                        );
                        ping_ok = false;
                    } else {
                        ping.push(addr);
                    }
                }
                None => ping_ok = false,
            }
        }
    }

    let interval_v = interval.as_ref().map_or(d::HEARTBEAT_INTERVAL_MS, |a| a.v);
    let dead_v = dead
        .as_ref()
        .map_or(interval_v * d::DEAD_INTERVALS, |a| a.v);
    let mut ok = ping_ok && conflict_check_ok;
    if dead_v <= interval_v {
        let span = dead
            .as_ref()
            .or(interval.as_ref())
            .map_or(span.clone(), |a| a.span.clone());
        ctx.error(
            &span,
            format!("`dead_ms` ({dead_v}) must be greater than `interval_ms` ({interval_v})"),
        );
        ok = false;
    } else if dead_v < 2 * interval_v {
        let span = dead
            .as_ref()
            .or(interval.as_ref())
            .map_or(span.clone(), |a| a.span.clone());
        ctx.warn(
            &span,
            format!(
                "`dead_ms` ({dead_v}) is less than two heartbeat intervals ({interval_v} ms): one lost heartbeat causes a failover"
            ),
        );
    }
    let warn_v = match &warn {
        Some(w) => {
            if w.v < interval_v || w.v >= dead_v {
                ctx.error(
                    &w.span,
                    format!(
                        "`warn_ms` ({}) must be at least `interval_ms` ({interval_v}) and less than `dead_ms` ({dead_v})",
                        w.v
                    ),
                );
                ok = false;
            }
            w.v
        }
        None => (dead_v / 2).clamp(interval_v, dead_v.saturating_sub(1).max(interval_v)),
    };
    let init_dead_v = match &init_dead {
        Some(i) => {
            if i.v < dead_v {
                ctx.error(
                    &i.span,
                    format!(
                        "`init_dead_ms` ({}) must be at least `dead_ms` ({dead_v}): the peer needs time to start",
                        i.v
                    ),
                );
                ok = false;
            }
            i.v
        }
        None => (3 * dead_v).max(d::INIT_DEAD_MIN_MS),
    };
    let any_bad = [
        "interval_ms",
        "dead_ms",
        "warn_ms",
        "init_dead_ms",
        "garp_spacing_ms",
        "garp_refresh_ms",
        "garp_count",
        "auto_failback",
        "garp_form",
        "conflict_check_ms",
        "handover_drain_ms",
    ]
    .iter()
    .zip([
        interval.is_some(),
        dead.is_some(),
        warn.is_some(),
        init_dead.is_some(),
        garp_spacing.is_some(),
        garp_refresh.is_some(),
        garp_count.is_some(),
        auto_failback.is_some(),
        garp_form.is_some(),
        conflict_check.is_some(),
        handover_drain.is_some(),
    ])
    .any(|(k, read)| s.get(k).is_some() && !read);
    if any_bad || !ok {
        return (None, ping);
    }
    let config = HeartbeatConfig {
        interval_ms: interval_v,
        dead_ms: dead_v,
        warn_ms: warn_v,
        init_dead_ms: init_dead_v,
        auto_failback: auto_failback.is_some_and(|a| a.v),
        ping_nodes: ping.iter().map(|p| p.v).collect(),
        garp_count: garp_count
            .and_then(|a| u32::try_from(a.v).ok())
            .unwrap_or(d::GARP_COUNT),
        garp_spacing_ms: garp_spacing.map_or(d::GARP_SPACING_MS, |a| a.v),
        garp_refresh_ms: garp_refresh.map_or(d::GARP_REFRESH_MS, |a| a.v),
        garp_form: garp_form.map_or(GarpForm::Request, |a| a.v),
        conflict_check_ms: conflict_check.map_or(d::CONFLICT_CHECK_MS, |a| a.v),
        handover_drain_ms: handover_drain.map_or(d::HANDOVER_DRAIN_MS, |a| a.v),
    };
    (Some(config), ping)
}
