//! One `[[service]]` with its ports, and the checks across services (labels, VIP:port).

use super::defaults as d;
use super::health::{HealthInput, read_health, resolve_health};
use super::misplaced::misplaced_in_section;
use super::persistence::{persistence_for, read_persistence};
use super::proxy::{ProxyInput, read_fallback, read_proxy, resolve_proxy};
use super::servers::{fmt_ip, read_servers};
use super::tls_section::{CertificateSource, read_tls};
use crate::diag::Ctx;
use crate::loaded::CheckedCertificate;
use crate::model::*;
use crate::reader::{At, Section, Val, array, choice, integer, ip, label, port_number, table};
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use toml::de::DeValue;

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
    "tls",
];

pub(super) struct ServiceDefaults {
    pub health: HealthInput,
    pub proxy: ProxyInput,
    pub fallback: Option<FallbackServer>,
}

/// A service as far as it could be read; cross-service checks run on drafts so that a broken
/// service still takes part in duplicate and VIP:port checks.
pub(super) struct ServiceDraft {
    pub label: Option<At<String>>,
    pub vip: Option<At<IpAddr>>,
    pub ports: Vec<At<u16>>,
    pub ports_ok: bool,
    pub mode: Option<Mode>,
    pub balance: Option<Balance>,
    pub persistence: Option<Persistence>,
    pub health: Option<HealthCheckConfig>,
    pub proxy: ProxyDefaults,
    pub fallback: Result<Option<FallbackServer>, ()>,
    pub servers: Option<Vec<Server>>,
    pub tls: Result<Option<TlsSettings>, ()>,
    /// `tls.redirect_http` with its span: a VIP:port of this service too.
    pub redirect: Option<At<u16>>,
    pub certificates: Vec<CheckedCertificate>,
}

impl ServiceDraft {
    pub(super) fn finish(self) -> Option<Service> {
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
            tls: self.tls.ok()?,
        })
    }
}

pub(super) fn read_service(
    ctx: &mut Ctx<'_>,
    v: &Val<'_>,
    defaults: &ServiceDefaults,
    certificates: &CertificateSource,
) -> ServiceDraft {
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
        tls: Ok(None),
        redirect: None,
        certificates: Vec::new(),
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
    let tls = read_tls(
        ctx,
        s.get("tls"),
        &name,
        draft.label.as_ref().map(|l| l.v.as_str()),
        mode,
        &draft.ports,
        certificates,
    );
    draft.tls = tls.settings;
    draft.redirect = tls.redirect;
    draft.certificates = tls.certificates;
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
    let mut seen = std::collections::HashSet::new();
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
        // The limit first: a range is checked against the ports before it in one pass over a set, so even
        // `"1-65535"` costs a few thousand steps, not billions.
        if out.len() + usize::from(hi - lo) + 1 > d::MAX_PORTS_PER_SERVICE {
            ctx.error(
                &span,
                format!(
                    "{service} listens on more than {} ports",
                    d::MAX_PORTS_PER_SERVICE
                ),
            );
            return (out, false);
        }
        for p in lo..=hi {
            if !seen.insert(p) {
                let Some(first) = out.iter().find(|q| q.v == p) else {
                    continue;
                };
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

/// A ports entry clashing with another service: (entry span, other service, its span, first
/// clashing port, how many ports clash).
type PortClash = (Range<usize>, String, Range<usize>, u16, usize);

/// Duplicate labels and VIP:port claimed by two services.
pub(super) fn check_services(ctx: &mut Ctx<'_>, drafts: &[ServiceDraft]) {
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
        report_clashes(ctx, vip.v, clashes);
    }
    // The redirect ports last, so that a clash always points at the `redirect_http` that takes a used port.
    for draft in drafts {
        let (Some(vip), Some(redirect)) = (&draft.vip, &draft.redirect) else {
            continue;
        };
        let me = draft
            .label
            .as_ref()
            .map_or("(unlabelled)".to_string(), |l| l.v.clone());
        match claimed.get(&(vip.v, redirect.v)) {
            Some((other, other_span)) if *other != me => {
                let line = ctx.line_of(other_span);
                ctx.error(
                    &redirect.span,
                    format!(
                        "`redirect_http`: {}:{} is already used by service \"{other}\" (line {line})",
                        fmt_ip(vip.v),
                        redirect.v
                    ),
                );
            }
            _ => {
                claimed.insert((vip.v, redirect.v), (me, redirect.span.clone()));
            }
        }
    }
}

/// One error per clashing ports entry.
fn report_clashes(ctx: &mut Ctx<'_>, vip: IpAddr, clashes: Vec<PortClash>) {
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
                fmt_ip(vip)
            ),
        );
    }
}
