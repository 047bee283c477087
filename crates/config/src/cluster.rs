//! Reading `cluster.toml` into the validated [`ClusterConfig`], reporting every problem at once.

use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{
    At, Section, Val, array, boolean, choice, int_in, integer, ip, label, port, port_number,
    string, table,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// Defaults of `cluster.toml` (documented in docs/configuration.md).
pub mod defaults {
    pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
    /// `dead_ms` defaults to this many intervals (200 ms -> 1000 ms).
    pub const DEAD_INTERVALS: u64 = 5;
    pub const INIT_DEAD_MIN_MS: u64 = 3000;
    pub const GARP_COUNT: u32 = 5;
    pub const GARP_SPACING_MS: u64 = 200;
    pub const GARP_REFRESH_MS: u64 = 0;
    pub const HEALTH_INTERVAL_MS: u64 = 2000;
    pub const HEALTH_RISE: u32 = 2;
    pub const HEALTH_FALL: u32 = 5;
    /// Default check timeout: this, or half the interval when that is shorter.
    pub const HEALTH_TIMEOUT_MS: u64 = 1000;
    pub const HTTP_CHECK_PATH: &str = "/";
    pub const HTTP_CHECK_STATUS: u16 = 200;
    pub const CONNECT_TIMEOUT_MS: u64 = 4000;
    pub const CLIENT_TIMEOUT_MS: u64 = 50_000;
    pub const SERVER_TIMEOUT_MS: u64 = 50_000;
    pub const MAX_CONNECTIONS: u32 = 0;
    pub const PERSISTENCE_TIMEOUT_S: u64 = 1800;
    pub const PERSISTENCE_TABLE_SIZE: usize = 100_000;
    pub const COOKIE_NAME: &str = "TANDEMSRV";
    pub const WEIGHT: u32 = 100;
    pub const MAX_WEIGHT: u32 = 256;
    /// Listeners one service may open (ranges included).
    pub const MAX_PORTS_PER_SERVICE: usize = 4096;
}
use defaults as d;

/// What the cross-file checks and reports need to point back into `cluster.toml`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterSpans {
    pub ping_nodes: Vec<At<IpAddr>>,
    pub services: Vec<ServiceSpans>,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceSpans {
    pub label: String,
    pub vip: At<IpAddr>,
    /// Each expanded port with the span of the array element it came from.
    pub ports: Vec<At<u16>>,
}

/// The non-replicated settings of the guide (section 14.1.1): `node.toml` section name and the
/// WebUI page it stands for.
pub const LOCAL_SECTIONS: &[(&str, &str)] = &[
    ("hostname_dns", "Hostname & DNS"),
    ("network", "Network Interface Configuration"),
    ("routing", "Routing"),
    ("date_time", "System Date & time"),
    ("physical_advanced", "Physical - Advanced Configuration"),
    ("portal_management", "Portal Management"),
    ("security", "Security"),
    ("snmp", "SNMP Configuration"),
    ("graphing", "Graphing"),
    ("license_key", "License Key"),
    ("backup_restore", "Backup & Restore"),
    ("software_updates", "Software Updates"),
    ("firewall_script", "Firewall Script"),
    ("firewall_lockdown", "Firewall Lockdown Wizard"),
];

/// Other names an operator may use for a non-replicated setting.
const LOCAL_ALIASES: &[(&str, &str)] = &[
    ("hostname", "hostname_dns"),
    ("dns", "hostname_dns"),
    ("interfaces", "network"),
    ("bonding", "network"),
    ("vlans", "network"),
    ("vlan", "network"),
    ("routes", "routing"),
    ("gateway", "routing"),
    ("ntp", "date_time"),
    ("time", "date_time"),
    ("timezone", "date_time"),
    ("physical", "physical_advanced"),
    ("portal", "portal_management"),
    ("license", "license_key"),
    ("backup", "backup_restore"),
    ("updates", "software_updates"),
    ("firewall", "firewall_script"),
    ("lockdown", "firewall_lockdown"),
];

/// Keys of `node.toml` that must never appear in the replicated file.
const NODE_KEYS: &[&str] = &[
    "node",
    "admin",
    "role",
    "peer",
    "interface",
    "address",
    "heartbeat_port",
    "sync_port",
    "manage_vips",
    "secret_file",
    "state_dir",
    "listen",
    "user",
    "password_file",
];

/// Explains a key of `cluster.toml` that belongs in `node.toml`, if it is one.
fn misplaced_in_cluster(key: &str) -> Option<String> {
    let k = key.to_ascii_lowercase().replace('-', "_");
    if let Some((name, page)) = LOCAL_SECTIONS.iter().find(|(n, _)| *n == k) {
        return Some(format!(
            "`{name}` belongs in node.toml: {page} is a non-replicated setting, kept on each node"
        ));
    }
    if let Some((_, section)) = LOCAL_ALIASES.iter().find(|(a, _)| *a == k) {
        return Some(format!(
            "`{key}` belongs in node.toml (section [{section}]): it is a non-replicated setting, kept on each node"
        ));
    }
    if k.contains("secret") || k.contains("password") {
        return Some(format!(
            "`{key}` belongs in node.toml: cluster.toml is replicated and carries no secrets"
        ));
    }
    if k == "tuning" || crate::tuning::TUNING_KEYS.contains(&k.as_str()) {
        return Some(format!(
            "`{key}` belongs in node.toml [tuning]: it tunes one node and is never replicated"
        ));
    }
    if NODE_KEYS.contains(&k.as_str()) {
        return Some(format!(
            "`{key}` belongs in node.toml: it is node-specific and never replicated"
        ));
    }
    None
}

fn misplaced_in_section(key: &str) -> Option<String> {
    let k = key.to_ascii_lowercase();
    if k.contains("secret") || k.contains("password") {
        return Some(format!(
            "`{key}` belongs in node.toml: cluster.toml is replicated and carries no secrets"
        ));
    }
    None
}

const TOP_KEYS: &[&str] = &[
    "cluster",
    "heartbeat",
    "health_check",
    "proxy",
    "fallback",
    "service",
];
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
];
const HEALTH_KEYS: &[&str] = &["interval_ms", "rise", "fall", "timeout_ms", "check", "http"];
const PROXY_KEYS: &[&str] = &[
    "connect_timeout_ms",
    "client_timeout_ms",
    "server_timeout_ms",
    "max_connections",
];
const SERVICE_KEYS: &[&str] = &[
    "label",
    "vip",
    "ports",
    "mode",
    "balance",
    "persistence",
    "health_check",
    "proxy",
    "fallback",
    "server",
];
const SERVER_KEYS: &[&str] = &["label", "address", "port", "weight"];
const PERSISTENCE_KEYS: &[&str] = &["mode", "timeout_s", "table_size", "cookie_name"];

pub(crate) struct ParsedCluster {
    /// `None` when cluster.toml has errors.
    pub config: Option<ClusterConfig>,
    /// Known even when there are errors (except syntax errors), for the cross-file checks.
    pub spans: ClusterSpans,
}

/// Parses and validates `cluster.toml`; `None` when `ctx` holds at least one error.
pub(crate) fn parse(ctx: &mut Ctx<'_>, src: &str) -> Option<ParsedCluster> {
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        // The recovered document is unreliable: report syntax errors only, so that nothing
        // below is a consequence of them.
        for e in &syntax {
            ctx.error(&e.span().unwrap_or(0..0), e.message().to_string());
        }
        return None;
    }
    let root_table = doc.get_ref();
    let root = Section::new("cluster.toml", 0..0, root_table);
    root.finish(ctx, TOP_KEYS, &misplaced_in_cluster);

    let name = read_cluster_section(ctx, &root);
    let (heartbeat, ping_spans) = read_heartbeat(ctx, root.get("heartbeat"));
    let health_input = root
        .get("health_check")
        .map(|v| read_health(ctx, v, "[health_check]"))
        .unwrap_or_default();
    let health = resolve_health(ctx, &HealthInput::default(), &health_input);
    let proxy_input = root
        .get("proxy")
        .map(|v| read_proxy(ctx, v, "[proxy]"))
        .unwrap_or_default();
    let proxy = resolve_proxy(&ProxyInput::default(), &proxy_input);
    let fallback = root
        .get("fallback")
        .and_then(|v| read_fallback(ctx, v, "[fallback]"));

    let defaults = ServiceDefaults {
        health: health_input,
        proxy: proxy_input,
        fallback: fallback.clone(),
    };
    let mut drafts = Vec::new();
    if let Some(v) = root.get("service") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    drafts.push(read_service(ctx, item, &defaults));
                }
            }
            DeValue::Table(_) => ctx.error(
                &v.span(),
                "`service` must be an array of tables: write [[service]], not [service]",
            ),
            other => ctx.error(
                &v.span(),
                format!(
                    "`service` must be an array of tables ([[service]]), found {}",
                    crate::reader::kind(other)
                ),
            ),
        }
    } else {
        ctx.warn(
            &(0..0),
            "no [[service]] defined: this cluster balances nothing",
        );
    }
    check_services(ctx, &drafts);

    let spans = ClusterSpans {
        ping_nodes: ping_spans,
        services: drafts
            .iter()
            .filter_map(|d| {
                Some(ServiceSpans {
                    label: d.label.as_ref()?.v.clone(),
                    vip: d.vip.clone()?,
                    ports: d.ports.clone(),
                })
            })
            .collect(),
    };
    let config = match (name, heartbeat, health) {
        (Some(name), Some(heartbeat), Some(health)) if !ctx.has_errors() => drafts
            .into_iter()
            .map(ServiceDraft::finish)
            .collect::<Option<Vec<Service>>>()
            .map(|services| ClusterConfig {
                cluster: ClusterSection { name },
                heartbeat,
                health_check: health,
                proxy,
                fallback,
                services,
            }),
        _ => None,
    };
    Some(ParsedCluster { config, spans })
}

fn no_hint(_: &str) -> Option<String> {
    None
}

fn read_cluster_section(ctx: &mut Ctx<'_>, root: &Section<'_, '_>) -> Option<String> {
    let Some(v) = root.get("cluster") else {
        ctx.error(
            &root.span,
            "missing required section [cluster] (with `name`, the cluster id)",
        );
        return None;
    };
    let t = table(ctx, "cluster", v)?;
    let s = Section::new("[cluster]", v.span(), t);
    s.finish(ctx, &["name"], &misplaced_in_cluster);
    let name = s.required(ctx, "name")?;
    label(ctx, "name", name).map(|a| a.v)
}

fn read_heartbeat(
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
    let mut ok = ping_ok;
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
    };
    (Some(config), ping)
}

/// Health-check keys as written in one table (cluster defaults or a service override).
#[derive(Debug, Clone, Default)]
struct HealthInput {
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

fn read_health(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> HealthInput {
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
fn resolve_health(
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

#[derive(Debug, Clone, Default)]
struct ProxyInput {
    connect_timeout_ms: Option<u64>,
    client_timeout_ms: Option<u64>,
    server_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
}

fn read_proxy(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> ProxyInput {
    let Some(t) = table(ctx, "proxy", v) else {
        return ProxyInput::default();
    };
    let s = Section::new(name, v.span(), t);
    s.finish(ctx, PROXY_KEYS, &misplaced_in_section);
    let ms = |ctx: &mut Ctx<'_>, key: &str| {
        s.get(key)
            .and_then(|v| int_in(ctx, key, v, 1, 86_400_000, " ms"))
            .map(|a| a.v)
    };
    ProxyInput {
        connect_timeout_ms: ms(ctx, "connect_timeout_ms"),
        client_timeout_ms: ms(ctx, "client_timeout_ms"),
        server_timeout_ms: ms(ctx, "server_timeout_ms"),
        max_connections: s
            .get("max_connections")
            .and_then(|v| int_in(ctx, "max_connections", v, 0, 10_000_000, ""))
            .and_then(|a| u32::try_from(a.v).ok()),
    }
}

fn resolve_proxy(base: &ProxyInput, local: &ProxyInput) -> ProxyDefaults {
    ProxyDefaults {
        connect_timeout_ms: local
            .connect_timeout_ms
            .or(base.connect_timeout_ms)
            .unwrap_or(d::CONNECT_TIMEOUT_MS),
        client_timeout_ms: local
            .client_timeout_ms
            .or(base.client_timeout_ms)
            .unwrap_or(d::CLIENT_TIMEOUT_MS),
        server_timeout_ms: local
            .server_timeout_ms
            .or(base.server_timeout_ms)
            .unwrap_or(d::SERVER_TIMEOUT_MS),
        max_connections: local
            .max_connections
            .or(base.max_connections)
            .unwrap_or(d::MAX_CONNECTIONS),
    }
}

fn read_fallback(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> Option<FallbackServer> {
    let t = table(ctx, "fallback", v)?;
    let s = Section::new(name, v.span(), t);
    s.finish(ctx, &["address", "port"], &misplaced_in_section);
    let address = s
        .required(ctx, "address")
        .and_then(|a| ip(ctx, "address", a));
    let port = s.required(ctx, "port").and_then(|p| port(ctx, "port", p));
    Some(FallbackServer {
        address: address?.v,
        port: port?.v,
    })
}

struct ServiceDefaults {
    health: HealthInput,
    proxy: ProxyInput,
    fallback: Option<FallbackServer>,
}

/// A service as far as it could be read; cross-service checks run on drafts so that a broken
/// service still takes part in duplicate and VIP:port checks.
struct ServiceDraft {
    label: Option<At<String>>,
    vip: Option<At<IpAddr>>,
    ports: Vec<At<u16>>,
    ports_ok: bool,
    mode: Option<Mode>,
    balance: Option<Balance>,
    persistence: Option<Persistence>,
    health: Option<HealthCheckConfig>,
    proxy: ProxyDefaults,
    fallback: Result<Option<FallbackServer>, ()>,
    servers: Option<Vec<Server>>,
}

impl ServiceDraft {
    fn finish(self) -> Option<Service> {
        let label = self.label?;
        let vip = self.vip?;
        if !self.ports_ok {
            return None;
        }
        Some(Service {
            label: label.v,
            vip: vip.v,
            ports: self.ports.iter().map(|p| p.v).collect(),
            mode: self.mode?,
            balance: self.balance?,
            persistence: self.persistence?,
            health_check: self.health?,
            proxy: self.proxy,
            fallback: self.fallback.ok()?,
            servers: self.servers?,
        })
    }
}

fn read_service(ctx: &mut Ctx<'_>, v: &Val<'_>, defaults: &ServiceDefaults) -> ServiceDraft {
    let mut draft = ServiceDraft {
        label: None,
        vip: None,
        ports: Vec::new(),
        ports_ok: false,
        mode: None,
        balance: None,
        persistence: None,
        health: None,
        proxy: resolve_proxy(&defaults.proxy, &ProxyInput::default()),
        fallback: Err(()),
        servers: None,
    };
    let Some(t) = table(ctx, "service", v) else {
        return draft;
    };
    let header = v.span();
    draft.label = Section::new("[[service]]", header.clone(), t)
        .required(ctx, "label")
        .and_then(|l| label(ctx, "label", l));
    let name = match &draft.label {
        Some(l) => format!("service \"{}\"", l.v),
        None => "[[service]]".to_string(),
    };
    let s = Section::new(name.clone(), header.clone(), t);
    s.finish(ctx, SERVICE_KEYS, &misplaced_in_section);
    draft.vip = s.required(ctx, "vip").and_then(|a| ip(ctx, "vip", a));
    if let Some(p) = s.required(ctx, "ports") {
        let (ports, ok) = read_ports(ctx, p, &name);
        draft.ports = ports;
        draft.ports_ok = ok;
    }
    let mode = match s.get("mode") {
        Some(m) => choice(ctx, "mode", m, &[("tcp", Mode::Tcp), ("http", Mode::Http)]).map(|a| a.v),
        None => Some(Mode::Tcp),
    };
    draft.mode = mode;
    draft.balance = match s.get("balance") {
        Some(b) => choice(
            ctx,
            "balance",
            b,
            &[
                (
                    "weighted-least-connections",
                    Balance::WeightedLeastConnections,
                ),
                ("round-robin", Balance::RoundRobin),
            ],
        )
        .map(|a| a.v),
        None => Some(Balance::WeightedLeastConnections),
    };
    draft.persistence = match s.get("persistence") {
        Some(p) => read_persistence(ctx, p, &name, mode),
        None => Some(persistence_for(PersistenceMode::None)),
    };
    let local_health = s
        .get("health_check")
        .map(|h| read_health(ctx, h, &format!("{name} health_check")))
        .unwrap_or_default();
    draft.health = resolve_health(ctx, &defaults.health, &local_health);
    let local_proxy = s
        .get("proxy")
        .map(|p| read_proxy(ctx, p, &format!("{name} proxy")))
        .unwrap_or_default();
    draft.proxy = resolve_proxy(&defaults.proxy, &local_proxy);
    draft.fallback = match s.get("fallback") {
        Some(f) => read_fallback(ctx, f, &format!("{name} fallback"))
            .map(Some)
            .ok_or(()),
        None => Ok(defaults.fallback.clone()),
    };
    draft.servers = read_servers(ctx, &s, &name, &draft.ports);
    draft
}

/// Expands `ports = [80, "8000-8010", "443"]`; the bool is false when something was wrong.
fn read_ports(ctx: &mut Ctx<'_>, v: &Val<'_>, service: &str) -> (Vec<At<u16>>, bool) {
    let mut out: Vec<At<u16>> = Vec::new();
    let Some(items) = array(ctx, "ports", v) else {
        return (out, false);
    };
    if items.is_empty() {
        ctx.error(&v.span(), "`ports` must list at least one port");
        return (out, false);
    }
    let mut ok = true;
    for item in items {
        let span = item.span();
        let range = match item.get_ref() {
            DeValue::Integer(_) => integer(ctx, "ports", item)
                .and_then(|n| port_number(ctx, "ports", n, &span))
                .map(|p| (p, p)),
            DeValue::String(s) => parse_range(ctx, s, &span),
            other => {
                ctx.error(
                    &span,
                    format!(
                        "`ports` entries must be port numbers or ranges like \"8000-8010\", found {}",
                        crate::reader::kind(other)
                    ),
                );
                None
            }
        };
        let Some((lo, hi)) = range else {
            ok = false;
            continue;
        };
        for p in lo..=hi {
            if let Some(first) = out.iter().find(|q| q.v == p) {
                let line = ctx.line_of(&first.span);
                ctx.error(
                    &span,
                    format!("port {p} is listed twice in {service} (first at line {line})"),
                );
                ok = false;
                break;
            }
            out.push(At::new(p, span.clone()));
        }
        if out.len() > d::MAX_PORTS_PER_SERVICE {
            ctx.error(
                &span,
                format!(
                    "{service} listens on more than {} ports",
                    d::MAX_PORTS_PER_SERVICE
                ),
            );
            return (out, false);
        }
    }
    (out, ok)
}

fn parse_range(ctx: &mut Ctx<'_>, s: &str, span: &Range<usize>) -> Option<(u16, u16)> {
    let bad = |ctx: &mut Ctx<'_>| {
        ctx.error(
            span,
            format!("`ports`: \"{s}\" is not a port or a range like \"8000-8010\""),
        );
        None
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let (Ok(lo), Ok(hi)) = (lo.parse::<u64>(), hi.parse::<u64>()) else {
        return bad(ctx);
    };
    let lo = port_number(ctx, "ports", i128::from(lo), span)?;
    let hi = port_number(ctx, "ports", i128::from(hi), span)?;
    if lo > hi {
        ctx.error(
            span,
            format!("`ports`: range \"{s}\" runs backwards (start is above end)"),
        );
        return None;
    }
    Some((lo, hi))
}

/// Persistence with the fields that do not apply to `mode` zeroed (see docs/configuration.md).
pub(crate) fn persistence_for(mode: PersistenceMode) -> Persistence {
    match mode {
        PersistenceMode::None => Persistence {
            mode,
            timeout_s: 0,
            table_size: 0,
            cookie_name: String::new(),
        },
        PersistenceMode::SourceIp | PersistenceMode::LastSuccessful => Persistence {
            mode,
            timeout_s: d::PERSISTENCE_TIMEOUT_S,
            table_size: d::PERSISTENCE_TABLE_SIZE,
            cookie_name: String::new(),
        },
        PersistenceMode::HttpCookie => Persistence {
            mode,
            timeout_s: 0,
            table_size: 0,
            cookie_name: d::COOKIE_NAME.to_string(),
        },
    }
}

const PERSISTENCE_MODES: &[(&str, PersistenceMode)] = &[
    ("none", PersistenceMode::None),
    ("source-ip", PersistenceMode::SourceIp),
    ("http-cookie", PersistenceMode::HttpCookie),
    ("last-successful", PersistenceMode::LastSuccessful),
];

fn read_persistence(
    ctx: &mut Ctx<'_>,
    v: &Val<'_>,
    service: &str,
    service_mode: Option<Mode>,
) -> Option<Persistence> {
    // `persistence = "source-ip"` is shorthand for `{ mode = "source-ip" }`.
    let (mode, mode_span, t) = match v.get_ref() {
        DeValue::String(_) => {
            let m = choice(ctx, "persistence", v, PERSISTENCE_MODES)?;
            (m.v, m.span, None)
        }
        DeValue::Table(t) => {
            let s = Section::new(format!("{service} persistence"), v.span(), t);
            s.finish(ctx, PERSISTENCE_KEYS, &no_hint);
            match s.get("mode") {
                Some(m) => {
                    let m = choice(ctx, "mode", m, PERSISTENCE_MODES)?;
                    (m.v, m.span, Some(t))
                }
                None => (PersistenceMode::None, v.span(), Some(t)),
            }
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`persistence` must be a table like {{ mode = \"source-ip\" }} or a mode name, found {}",
                    crate::reader::kind(other)
                ),
            );
            return None;
        }
    };
    let mut p = persistence_for(mode);
    let mut ok = true;
    if mode == PersistenceMode::HttpCookie && service_mode == Some(Mode::Tcp) {
        ctx.error(
            &mode_span,
            format!(
                "http-cookie persistence needs mode = \"http\" ({service} is in tcp mode; use source-ip)"
            ),
        );
        ok = false;
    }
    let Some(t) = t else {
        return ok.then_some(p);
    };
    let s = Section::new(format!("{service} persistence"), v.span(), t);
    let mode_name = PERSISTENCE_MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("", |(n, _)| n);
    let applies = |key: &str| match key {
        "timeout_s" | "table_size" => {
            matches!(
                mode,
                PersistenceMode::SourceIp | PersistenceMode::LastSuccessful
            )
        }
        "cookie_name" => mode == PersistenceMode::HttpCookie,
        _ => true,
    };
    for key in ["timeout_s", "table_size", "cookie_name"] {
        let Some(value) = s.get(key) else { continue };
        if !applies(key) {
            let span = s.key_span(key).unwrap_or(value.span());
            let why = match key {
                "cookie_name" => "only http-cookie uses a cookie",
                _ if mode == PersistenceMode::HttpCookie => {
                    "the cookie carries the server; there is no table"
                }
                _ => "there is no persistence table",
            };
            ctx.error(
                &span,
                format!("`{key}` does not apply to persistence mode \"{mode_name}\" ({why})"),
            );
            ok = false;
            continue;
        }
        match key {
            "timeout_s" => match int_in(ctx, key, value, 0, 31_536_000, " s") {
                Some(a) => p.timeout_s = a.v,
                None => ok = false,
            },
            "table_size" => match int_in(ctx, key, value, 1, 10_000_000, " entries") {
                Some(a) => p.table_size = usize::try_from(a.v).unwrap_or(d::PERSISTENCE_TABLE_SIZE),
                None => ok = false,
            },
            _ => match string(ctx, key, value) {
                Some(name) if is_cookie_token(name.v) => p.cookie_name = name.v.to_string(),
                Some(name) => {
                    ctx.error(
                        &value.span(),
                        format!(
                            "`cookie_name` = \"{}\" is not a valid cookie name (1-64 letters, digits, '-', '_', '.')",
                            name.v
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            },
        }
    }
    ok.then_some(p)
}

fn is_cookie_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A server's label and (address, port) as read, for duplicate checks.
type SeenServer = (Option<At<String>>, Option<(At<IpAddr>, Option<u16>)>);

fn read_servers(
    ctx: &mut Ctx<'_>,
    s: &Section<'_, '_>,
    service: &str,
    ports: &[At<u16>],
) -> Option<Vec<Server>> {
    let Some(v) = s.get("server") else {
        ctx.warn(
            &s.span,
            format!(
                "{service} has no [[service.server]]: its clients go to the fallback or are refused"
            ),
        );
        return Some(Vec::new());
    };
    let items = match v.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(_) => {
            ctx.error(
                &v.span(),
                "`server` must be an array of tables: write [[service.server]], not [service.server]",
            );
            return None;
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`server` must be an array of tables ([[service.server]]), found {}",
                    crate::reader::kind(other)
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    let mut servers = Vec::new();
    // (label, address, port) as read, for duplicate checks.
    let mut seen: Vec<SeenServer> = Vec::new();
    for item in items.iter() {
        let Some(t) = table(ctx, "server", item) else {
            ok = false;
            continue;
        };
        let head = Section::new(format!("{service} server"), item.span(), t);
        let lbl = head
            .required(ctx, "label")
            .and_then(|l| label(ctx, "label", l));
        let name = match &lbl {
            Some(l) => format!("{service} server \"{}\"", l.v),
            None => format!("{service} server"),
        };
        let ss = Section::new(name, item.span(), t);
        ss.finish(ctx, SERVER_KEYS, &misplaced_in_section);
        let address = ss
            .required(ctx, "address")
            .and_then(|a| ip(ctx, "address", a));
        let port_v = match ss.get("port") {
            Some(p) => match port(ctx, "port", p) {
                Some(p) => Some(Some(p.v)),
                None => None,
            },
            None => Some(None),
        };
        let weight = match ss.get("weight") {
            Some(w) => int_in(ctx, "weight", w, 0, u64::from(d::MAX_WEIGHT), "")
                .and_then(|a| u32::try_from(a.v).ok()),
            None => Some(d::WEIGHT),
        };

        if let Some(l) = &lbl
            && let Some(first) = seen
                .iter()
                .filter_map(|(fl, _)| fl.as_ref())
                .find(|fl| fl.v == l.v)
        {
            let line = ctx.line_of(&first.span);
            ctx.error(
                &l.span,
                format!(
                    "server \"{}\" is listed twice in {service} (first at line {line})",
                    l.v
                ),
            );
            ok = false;
        }
        if let (Some(addr), Some(p)) = (&address, port_v) {
            let clash = seen.iter().find_map(|(fl, fa)| {
                let (fa, fp) = fa.as_ref()?;
                if fa.v != addr.v {
                    return None;
                }
                // Same target for some VIP port: both translate to the same port, or one
                // translates to a port the other reaches untranslated.
                let same = match (fp, p) {
                    (None, None) => true,
                    (Some(a), Some(b)) => *a == b,
                    (Some(x), None) => ports.iter().any(|q| q.v == *x),
                    (None, Some(x)) => ports.iter().any(|q| q.v == x),
                };
                same.then(|| (fl.clone(), fa.span.clone()))
            });
            if let Some((first_label, first_span)) = clash {
                let line = ctx.line_of(&first_span);
                let target = match p {
                    Some(p) => format!("{}:{p}", fmt_ip(addr.v)),
                    None => format!("{} (on the VIP port)", addr.v),
                };
                let other = first_label.map_or(String::new(), |fl| format!(" as \"{}\"", fl.v));
                ctx.error(
                    &addr.span,
                    format!(
                        "server {target} is listed twice in {service} (first{other} at line {line})"
                    ),
                );
                ok = false;
            }
        }
        seen.push((lbl.clone(), address.clone().zip(port_v)));
        match (lbl, address, port_v, weight) {
            (Some(l), Some(a), Some(p), Some(w)) => servers.push(Server {
                label: l.v,
                address: a.v,
                port: p,
                weight: w,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(servers)
}

pub(crate) fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A ports entry clashing with another service: (entry span, other service, its span, first
/// clashing port, how many ports clash).
type PortClash = (Range<usize>, String, Range<usize>, u16, usize);

/// Duplicate labels and VIP:port claimed by two services.
fn check_services(ctx: &mut Ctx<'_>, drafts: &[ServiceDraft]) {
    let mut labels: HashMap<&str, Range<usize>> = HashMap::new();
    for draft in drafts {
        if let Some(l) = &draft.label {
            if let Some(first) = labels.get(l.v.as_str()) {
                let line = ctx.line_of(first);
                ctx.error(
                    &l.span,
                    format!(
                        "duplicate service label \"{}\" (first defined at line {line})",
                        l.v
                    ),
                );
            } else {
                labels.insert(&l.v, l.span.clone());
            }
        }
    }
    let mut claimed: HashMap<(IpAddr, u16), (String, Range<usize>)> = HashMap::new();
    for draft in drafts {
        let Some(vip) = &draft.vip else { continue };
        let me = draft
            .label
            .as_ref()
            .map_or("(unlabelled)".to_string(), |l| l.v.clone());
        // One error per ports entry, naming the first clashing port and counting the rest.
        let mut clashes: Vec<PortClash> = Vec::new();
        for p in &draft.ports {
            match claimed.get(&(vip.v, p.v)) {
                Some((other, other_span)) => {
                    match clashes.iter_mut().find(|c| c.0 == p.span && c.1 == *other) {
                        Some(c) => c.4 += 1,
                        None => clashes.push((
                            p.span.clone(),
                            other.clone(),
                            other_span.clone(),
                            p.v,
                            1,
                        )),
                    }
                }
                None => {
                    claimed.insert((vip.v, p.v), (me.clone(), p.span.clone()));
                }
            }
        }
        for (span, other, other_span, port, count) in clashes {
            let line = ctx.line_of(&other_span);
            let more = match count {
                1 => String::new(),
                n => format!(" (and {} more ports of this entry)", n - 1),
            };
            ctx.error(
                &span,
                format!(
                    "{}:{port} is already used by service \"{other}\" (line {line}){more}",
                    fmt_ip(vip.v)
                ),
            );
        }
    }
}
