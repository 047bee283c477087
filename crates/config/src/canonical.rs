//! The canonical form of an accepted `cluster.toml` and its SHA-256 digest.
//!
//! The canonical form is TOML written from the validated model: every key explicit (defaults
//! filled in, per-service settings already merged with the cluster defaults), fixed key order,
//! fixed spacing, no comments, port runs written as ranges. Parsing it gives back the same
//! model, and two files that mean the same thing have the same canonical form, hence the same
//! digest, whatever their formatting, key order or comments.

use crate::cluster::fmt_ip;
use crate::model::*;
use ring::digest;
use std::fmt::Write;

/// Version of the canonical layout; part of the digested text so a change of layout can never
/// make two different configurations collide.
pub const CANONICAL_VERSION: u32 = 1;

/// The canonical TOML text of `config`.
pub fn canonical_toml(config: &ClusterConfig) -> String {
    let mut out = String::new();
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "# tandem canonical cluster.toml v{CANONICAL_VERSION}");
    let _ = writeln!(out, "[cluster]");
    let _ = writeln!(out, "name = {}", quote(&config.cluster.name));

    let hb = &config.heartbeat;
    let _ = writeln!(out, "\n[heartbeat]");
    let _ = writeln!(out, "interval_ms = {}", hb.interval_ms);
    let _ = writeln!(out, "dead_ms = {}", hb.dead_ms);
    let _ = writeln!(out, "warn_ms = {}", hb.warn_ms);
    let _ = writeln!(out, "init_dead_ms = {}", hb.init_dead_ms);
    let _ = writeln!(out, "auto_failback = {}", hb.auto_failback);
    let pings: Vec<String> = hb
        .ping_nodes
        .iter()
        .map(|p| quote(&p.to_string()))
        .collect();
    let _ = writeln!(out, "ping_nodes = [{}]", pings.join(", "));
    let _ = writeln!(out, "garp_count = {}", hb.garp_count);
    let _ = writeln!(out, "garp_spacing_ms = {}", hb.garp_spacing_ms);
    let _ = writeln!(out, "garp_refresh_ms = {}", hb.garp_refresh_ms);
    let _ = writeln!(out, "garp_form = {}", quote(garp_form_name(hb.garp_form)));
    let _ = writeln!(out, "conflict_check_ms = {}", hb.conflict_check_ms);
    // Written only when set otherwise: the digests of configurations from before it stay the same across the
    // upgrade that brought it (as `tls`), so a pair mid-upgrade does not see its configs differ.
    if hb.handover_drain_ms != crate::cluster::defaults::HANDOVER_DRAIN_MS {
        let _ = writeln!(out, "handover_drain_ms = {}", hb.handover_drain_ms);
    }

    let _ = writeln!(out, "\n[health_check]");
    write_health(&mut out, &config.health_check);
    let _ = writeln!(out, "\n[proxy]");
    write_proxy(&mut out, &config.proxy);
    if let Some(f) = &config.fallback {
        let _ = writeln!(out, "\n[fallback]");
        write_fallback(&mut out, f);
    }

    for s in &config.services {
        let _ = writeln!(out, "\n[[service]]");
        let _ = writeln!(out, "label = {}", quote(&s.label));
        let _ = writeln!(out, "vip = {}", quote(&s.vip.to_string()));
        let _ = writeln!(out, "ports = [{}]", port_runs(&s.ports).join(", "));
        let _ = writeln!(out, "mode = {}", quote(mode_name(s.mode)));
        let _ = writeln!(out, "balance = {}", quote(balance_name(s.balance)));
        let _ = writeln!(out, "persistence = {}", persistence_inline(&s.persistence));
        if let Some(tls) = &s.tls {
            let _ = writeln!(out, "tls = {}", tls_inline(tls));
        }
        let _ = writeln!(out, "[service.health_check]");
        write_health(&mut out, &s.health_check);
        let _ = writeln!(out, "[service.proxy]");
        write_proxy(&mut out, &s.proxy);
        if let Some(f) = &s.fallback {
            let _ = writeln!(out, "[service.fallback]");
            write_fallback(&mut out, f);
        }
        for r in &s.servers {
            let _ = writeln!(out, "[[service.server]]");
            let _ = writeln!(out, "label = {}", quote(&r.label));
            let _ = writeln!(out, "address = {}", quote(&r.address.to_string()));
            if let Some(p) = r.port {
                let _ = writeln!(out, "port = {p}");
            }
            let _ = writeln!(out, "weight = {}", r.weight);
        }
    }
    out
}

/// SHA-256 of the canonical form, lower-case hex.
pub fn digest(config: &ClusterConfig) -> String {
    let d = digest::digest(&digest::SHA256, canonical_toml(config).as_bytes());
    hex::encode(d.as_ref())
}

fn write_health(out: &mut String, h: &HealthCheckConfig) {
    let _ = writeln!(out, "interval_ms = {}", h.interval_ms);
    let _ = writeln!(out, "rise = {}", h.rise);
    let _ = writeln!(out, "fall = {}", h.fall);
    let _ = writeln!(out, "timeout_ms = {}", h.timeout_ms);
    match &h.check {
        CheckKind::Connect => {
            let _ = writeln!(out, "check = \"connect\"");
        }
        CheckKind::Http {
            path,
            expect_status,
        } => {
            let _ = writeln!(out, "check = \"http\"");
            let _ = writeln!(
                out,
                "http = {{ path = {}, expect_status = {expect_status} }}",
                quote(path)
            );
        }
    }
}

fn write_proxy(out: &mut String, p: &ProxyDefaults) {
    let _ = writeln!(out, "connect_timeout_ms = {}", p.connect_timeout_ms);
    let _ = writeln!(out, "client_timeout_ms = {}", p.client_timeout_ms);
    let _ = writeln!(out, "server_timeout_ms = {}", p.server_timeout_ms);
    let _ = writeln!(out, "max_connections = {}", p.max_connections);
}

fn write_fallback(out: &mut String, f: &FallbackServer) {
    let _ = writeln!(out, "address = {}", quote(&f.address.to_string()));
    let _ = writeln!(out, "port = {}", f.port);
}

/// `persistence` as an inline table with only the keys its mode uses (as written by operators).
pub fn persistence_inline(p: &Persistence) -> String {
    let mode = quote(persistence_mode_name(p.mode));
    match p.mode {
        PersistenceMode::None => format!("{{ mode = {mode} }}"),
        PersistenceMode::SourceIp | PersistenceMode::LastSuccessful => format!(
            "{{ mode = {mode}, timeout_s = {}, table_size = {} }}",
            p.timeout_s, p.table_size
        ),
        PersistenceMode::HttpCookie => format!(
            "{{ mode = {mode}, cookie_name = {} }}",
            quote(&p.cookie_name)
        ),
    }
}

/// `tls` as an inline table: each certificate by the name written in cluster.toml with its content's SHA-256 (so a
/// changed file is a changed configuration), never the node-local path it was read from.
pub fn tls_inline(tls: &TlsSettings) -> String {
    let files: Vec<String> = tls
        .certificates
        .iter()
        .map(|c| {
            format!(
                "{{ file = {}, sha256 = {} }}",
                quote(&c.file),
                quote(&c.sha256)
            )
        })
        .collect();
    let redirect = match tls.redirect_http {
        Some(port) => format!(", redirect_http = {port}"),
        None => String::new(),
    };
    format!("{{ certificates = [{}]{redirect} }}", files.join(", "))
}

/// Ports in order, consecutive ascending runs written as "a-b" ranges.
pub(crate) fn port_runs(ports: &[u16]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let start = ports[i];
        let mut end = start;
        while i + 1 < ports.len() && end < u16::MAX && ports[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if end == start {
            out.push(start.to_string());
        } else {
            out.push(format!("\"{start}-{end}\""));
        }
        i += 1;
    }
    out
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

pub fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::WeightedLeastConnections => "weighted-least-connections",
        Balance::RoundRobin => "round-robin",
    }
}

pub fn persistence_mode_name(m: PersistenceMode) -> &'static str {
    match m {
        PersistenceMode::None => "none",
        PersistenceMode::SourceIp => "source-ip",
        PersistenceMode::HttpCookie => "http-cookie",
        PersistenceMode::LastSuccessful => "last-successful",
    }
}

pub fn garp_form_name(g: GarpForm) -> &'static str {
    match g {
        GarpForm::Request => "request",
        GarpForm::Reply => "reply",
        GarpForm::Both => "both",
    }
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `address:port` with IPv6 in brackets.
pub fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    format!("{}:{port}", fmt_ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_runs_compress_consecutive_ports_in_order() {
        assert_eq!(port_runs(&[80]), vec!["80"]);
        assert_eq!(
            port_runs(&[80, 8000, 8001, 8002, 443, 65534, 65535]),
            vec!["80", "\"8000-8002\"", "443", "\"65534-65535\""]
        );
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
    }
}
