//! `[health_check]` and a service's `health_check` override, merged over the defaults.

use super::defaults as d;
use super::misplaced::{misplaced_in_section, no_hint};
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{At, Section, Val, choice, int_in, string, table};

const HEALTH_KEYS: &[&str] = &["interval_ms", "rise", "fall", "timeout_ms", "check", "http"];

/// Health-check keys as written in one table (cluster defaults or a service override).
#[derive(Debug, Clone, Default)]
pub(super) struct HealthInput {
    interval_ms: Option<At<u64>>,
    rise: Option<At<u64>>,
    fall: Option<At<u64>>,
    timeout_ms: Option<At<u64>>,
    check: Option<At<CheckSel>>,
    http: Option<HttpInput>,
    /// Some key was present but unreadable (already reported).
    bad: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckSel {
    Connect,
    Http,
}

#[derive(Debug, Clone)]
struct HttpInput {
    path: Option<At<String>>,
    expect_status: Option<At<u16>>,
}

pub(super) fn read_health(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> HealthInput {
    let mut out = HealthInput::default();
    let Some(t) = table(ctx, "health_check", v) else {
        out.bad = true;
        return out;
    };
    let s = Section::new(name, v.span(), t);
    s.finish(ctx, HEALTH_KEYS, &misplaced_in_section);
    let mut read = |ctx: &mut Ctx<'_>, key: &str, min: u64, max: u64, unit: &str| {
        let value = s.get(key)?;
        let r = int_in(ctx, key, value, min, max, unit);
        if r.is_none() {
            out.bad = true;
        }
        r
    };
    let interval_ms = read(ctx, "interval_ms", 10, 3_600_000, " ms");
    let rise = read(ctx, "rise", 1, 1000, "");
    let fall = read(ctx, "fall", 1, 1000, "");
    let timeout_ms = read(ctx, "timeout_ms", 1, 3_600_000, " ms");
    out.interval_ms = interval_ms;
    out.rise = rise;
    out.fall = fall;
    out.timeout_ms = timeout_ms;
    if let Some(c) = s.get("check") {
        out.check = choice(
            ctx,
            "check",
            c,
            &[("connect", CheckSel::Connect), ("http", CheckSel::Http)],
        );
        out.bad |= out.check.is_none();
    }
    if let Some(h) = s.get("http") {
        let key_span = s.key_span("http").unwrap_or(h.span());
        match table(ctx, "http", h) {
            Some(ht) => {
                let hs = Section::new(format!("{name} http"), h.span(), ht);
                hs.finish(ctx, &["path", "expect_status"], &no_hint);
                let path = hs.get("path").and_then(|p| {
                    let sp = string(ctx, "path", p)?;
                    if !sp.v.starts_with('/')
                        || sp.v.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        ctx.error(
                            &p.span(),
                            format!(
                                "`path` = \"{}\" must start with '/' and contain no spaces",
                                sp.v
                            ),
                        );
                        return None;
                    }
                    Some(At::new(sp.v.to_string(), sp.span))
                });
                let expect_status = hs.get("expect_status").and_then(|st| {
                    int_in(ctx, "expect_status", st, 100, 599, "")
                        .and_then(|a| u16::try_from(a.v).ok().map(|n| At::new(n, a.span)))
                });
                out.bad |= hs.get("path").is_some() && path.is_none();
                out.bad |= hs.get("expect_status").is_some() && expect_status.is_none();
                if let Some(CheckSel::Connect) = out.check.as_ref().map(|c| c.v) {
                    ctx.error(
                        &key_span,
                        "`http` check options given but `check` = \"connect\"; use check = \"http\"",
                    );
                    out.bad = true;
                }
                out.http = Some(HttpInput {
                    path,
                    expect_status,
                });
            }
            None => out.bad = true,
        }
    }
    out
}

/// The local value if written, else the inherited one; `true` when it is the local one.
fn pick<T: Clone>(local: &Option<At<T>>, base: &Option<At<T>>) -> (Option<At<T>>, bool) {
    match local {
        Some(l) => (Some(l.clone()), true),
        None => (base.clone(), false),
    }
}

/// Merges `local` over `base` and validates the result. Problems that come only from `base`
/// were reported when `base` was resolved, so they are not repeated here.
pub(super) fn resolve_health(
    ctx: &mut Ctx<'_>,
    base: &HealthInput,
    local: &HealthInput,
) -> Option<HealthCheckConfig> {
    if local.bad || base.bad {
        return None;
    }
    let (interval, interval_local) = pick(&local.interval_ms, &base.interval_ms);
    let (timeout, timeout_local) = pick(&local.timeout_ms, &base.timeout_ms);
    let interval_v = interval.as_ref().map_or(d::HEALTH_INTERVAL_MS, |a| a.v);
    let timeout_v = match &timeout {
        Some(t) => t.v,
        None => (interval_v / 2).clamp(1, d::HEALTH_TIMEOUT_MS),
    };
    if timeout_v >= interval_v {
        let span = match (&timeout, &interval) {
            (Some(t), _) if timeout_local => Some(t.span.clone()),
            (_, Some(i)) if interval_local => Some(i.span.clone()),
            _ => None,
        };
        match span {
            Some(span) => ctx.error(
                &span,
                format!(
                    "health check `timeout_ms` ({timeout_v}) must be shorter than `interval_ms` ({interval_v})"
                ),
            ),
            None => return None,
        }
        return None;
    }
    let rise = pick(&local.rise, &base.rise).0.map_or(d::HEALTH_RISE, |a| {
        u32::try_from(a.v).unwrap_or(d::HEALTH_RISE)
    });
    let fall = pick(&local.fall, &base.fall).0.map_or(d::HEALTH_FALL, |a| {
        u32::try_from(a.v).unwrap_or(d::HEALTH_FALL)
    });
    let selection = local
        .check
        .as_ref()
        .map(|c| c.v)
        .or(local.http.as_ref().map(|_| CheckSel::Http))
        .or(base.check.as_ref().map(|c| c.v))
        .or(base.http.as_ref().map(|_| CheckSel::Http))
        .unwrap_or(CheckSel::Connect);
    let check = match selection {
        CheckSel::Connect => CheckKind::Connect,
        CheckSel::Http => {
            let path = local
                .http
                .as_ref()
                .and_then(|h| h.path.clone())
                .or(base.http.as_ref().and_then(|h| h.path.clone()))
                .map_or(d::HTTP_CHECK_PATH.to_string(), |p| p.v);
            let expect_status = local
                .http
                .as_ref()
                .and_then(|h| h.expect_status.clone())
                .or(base.http.as_ref().and_then(|h| h.expect_status.clone()))
                .map_or(d::HTTP_CHECK_STATUS, |s| s.v);
            CheckKind::Http {
                path,
                expect_status,
            }
        }
    };
    Some(HealthCheckConfig {
        interval_ms: interval_v,
        rise,
        fall,
        timeout_ms: timeout_v,
        check,
    })
}
