//! What `tandem check` prints: a human summary and the JSON object of the CLI contract.

use crate::canonical::{balance_name, endpoint, mode_name, persistence_mode_name};
use crate::cluster::LOCAL_SECTIONS;
use crate::loaded::{CheckedCertificate, Loaded};
use crate::model::*;
use crate::tls;
use serde_json::{Value, json};
use std::fmt::Write;

/// Where an operator manages what an appliance's non-replicated page did: tandem records these
/// `node.toml` sections (so a migrated configuration keeps them) but applies none of them.
const NOT_APPLIED_INSTEAD: &[(&str, &str)] = &[
    (
        "hostname_dns",
        "the host: /etc/hostname, /etc/resolv.conf or systemd-resolved",
    ),
    (
        "network",
        "the host's network configuration (ifupdown, systemd-networkd)",
    ),
    (
        "routing",
        "the host's network configuration (ifupdown, systemd-networkd)",
    ),
    ("date_time", "chrony or systemd-timesyncd on the host"),
    ("physical_advanced", "the host (ethtool, sysctl)"),
    (
        "portal_management",
        "tandem's admin endpoint: [admin] of node.toml",
    ),
    (
        "security",
        "the host (sshd, accounts); tandem's admin login is [admin] password_file",
    ),
    (
        "snmp",
        "snmpd on the host; tandem exports Prometheus metrics at /metrics",
    ),
    (
        "graphing",
        "Prometheus and the dashboard in deploy/grafana/tandem.json",
    ),
    ("license_key", "nothing: tandem needs no licence key"),
    (
        "backup_restore",
        "a copy of /etc/tandem and the state_dir (docs/operations.md)",
    ),
    (
        "software_updates",
        "apt: the tandem package (docs/upgrade.md)",
    ),
    (
        "firewall_script",
        "nftables on the host: deploy/nftables/tandem.nft",
    ),
    (
        "firewall_lockdown",
        "nftables on the host: deploy/nftables/tandem.nft",
    ),
];

/// The non-replicated appliance sections this node's `node.toml` holds, each as
/// `(section, appliance page, where to manage it instead)`: recorded, not applied by tandem.
pub fn not_applied(loaded: &Loaded) -> Vec<(&'static str, &'static str, &'static str)> {
    LOCAL_SECTIONS
        .iter()
        .filter(|(name, _)| loaded.node.local.sections.contains_key(*name))
        .map(|(name, page)| {
            let instead = NOT_APPLIED_INSTEAD
                .iter()
                .find(|(n, _)| n == name)
                .map_or("the host", |(_, i)| *i);
            (*name, *page, instead)
        })
        .collect()
}

/// `persistence` as written in cluster.toml: only the keys its mode uses.
pub fn persistence_json(p: &Persistence) -> Value {
    let mode = persistence_mode_name(p.mode);
    match p.mode {
        PersistenceMode::None => json!({ "mode": mode }),
        PersistenceMode::SourceIp | PersistenceMode::LastSuccessful => {
            json!({ "mode": mode, "timeout_s": p.timeout_s, "table_size": p.table_size })
        }
        PersistenceMode::HttpCookie => json!({ "mode": mode, "cookie_name": p.cookie_name }),
    }
}

/// The `tandem check --json` object: `cluster`, `node`, `services` (each with `label`, `vip`,
/// `ports`, `mode`, `persistence`, `servers`, ...), `generation`, `digest`, `warnings`.
pub fn check_json(loaded: &Loaded) -> Value {
    let c = &loaded.cluster;
    let services: Vec<Value> = c
        .services
        .iter()
        .map(|s| {
            let servers: Vec<Value> = s
                .servers
                .iter()
                .map(|r| {
                    json!({
                        "label": r.label,
                        "address": r.address.to_string(),
                        "port": r.port,
                        "weight": r.weight,
                    })
                })
                .collect();
            json!({
                "label": s.label,
                "vip": s.vip.to_string(),
                "ports": s.ports,
                "mode": mode_name(s.mode),
                "balance": balance_name(s.balance),
                "persistence": persistence_json(&s.persistence),
                "health_check": s.health_check,
                "servers": servers,
                "tls": tls_json(loaded, s),
            })
        })
        .collect();
    let n = &loaded.node.node;
    json!({
        "cluster": c.cluster.name,
        "node": {
            "name": n.name,
            "role": n.role,
            "address": n.address.to_string(),
            "peer": n.peer.map(|p| p.to_string()),
            "interface": n.interface,
        },
        "heartbeat": c.heartbeat,
        "tuning": loaded.node.tuning,
        "services": services,
        "generation": loaded.generation,
        "digest": loaded.digest,
        "warnings": loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "not_applied": not_applied(loaded)
            .into_iter()
            .map(|(section, page, instead)| json!({ "section": section, "page": page, "instead": instead }))
            .collect::<Vec<_>>(),
    })
}

/// A TLS service's certificates as `tandem check --json` lists them (`null` without TLS): each file with its
/// SHA-256, names and validity (Unix seconds and the UTC date), and the redirect port.
fn tls_json(loaded: &Loaded, s: &Service) -> Value {
    let Some(tls) = &s.tls else {
        return Value::Null;
    };
    let certificates: Vec<Value> = tls
        .certificates
        .iter()
        .map(|c| {
            let checked = checked(loaded, &s.label, &c.file);
            json!({
                "file": c.file,
                "path": c.path.display().to_string(),
                "sha256": c.sha256,
                "names": checked.map(|k| k.names.clone()).unwrap_or_default(),
                "not_before_unix": checked.map(|k| k.not_before_unix),
                "not_after_unix": checked.map(|k| k.not_after_unix),
                "expires": checked.map(|k| tls::utc_date(k.not_after_unix)),
            })
        })
        .collect();
    json!({ "certificates": certificates, "redirect_http": tls.redirect_http })
}

fn checked<'a>(loaded: &'a Loaded, service: &str, file: &str) -> Option<&'a CheckedCertificate> {
    loaded
        .certificates
        .iter()
        .find(|c| c.service == service && c.file == file)
}

/// The human summary `tandem check` prints when both files are valid.
pub fn check_summary(loaded: &Loaded) -> String {
    let c = &loaded.cluster;
    let n = &loaded.node.node;
    let mut out = String::new();
    let role = match n.role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    };
    let peer = n
        .peer
        .map_or("none (standalone)".to_string(), |p| p.to_string());
    let _ = writeln!(
        out,
        "OK: cluster \"{}\", node \"{}\" ({role}) at {}, peer {peer}",
        c.cluster.name, n.name, n.address
    );
    let _ = writeln!(
        out,
        "config generation {} digest {}",
        loaded.generation, loaded.digest
    );
    let hb = &c.heartbeat;
    let _ = writeln!(
        out,
        "heartbeat every {} ms, dead after {} ms, auto_failback {}; health checks every {} ms rise {} fall {}",
        hb.interval_ms,
        hb.dead_ms,
        hb.auto_failback,
        c.health_check.interval_ms,
        c.health_check.rise,
        c.health_check.fall
    );
    let _ = writeln!(out, "{} virtual services:", c.services.len());
    for s in &c.services {
        let ports = crate::canonical::port_runs(&s.ports)
            .iter()
            .map(|p| p.trim_matches('"').to_string())
            .collect::<Vec<_>>()
            .join(",");
        let servers = s
            .servers
            .iter()
            .map(|r| {
                let target = match r.port {
                    Some(p) => endpoint(r.address, p),
                    None => r.address.to_string(),
                };
                format!("{} {target} w{}", r.label, r.weight)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "  {:<20} {}:{:<12} {:<4} {:<16} -> {servers}",
            s.label,
            s.vip,
            ports,
            mode_name(s.mode),
            persistence_mode_name(s.persistence.mode),
        );
        if let Some(tls) = &s.tls {
            let redirect = match tls.redirect_http {
                Some(port) => format!(", plain HTTP on port {port} redirected to HTTPS"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "    TLS with {} certificate file(s) (chosen by SNI; the first without SNI or on no match){redirect}:",
                tls.certificates.len()
            );
            for c in &tls.certificates {
                match checked(loaded, &s.label, &c.file) {
                    Some(k) => {
                        let _ = writeln!(
                            out,
                            "      {}: {} (expires {})",
                            c.file,
                            k.names.join(", "),
                            tls::utc_date(k.not_after_unix)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "      {}", c.file);
                    }
                }
            }
        }
    }
    let recorded = not_applied(loaded);
    if !recorded.is_empty() {
        let _ = writeln!(
            out,
            "recorded, not applied by tandem ({} node-local appliance sections of node.toml; manage them on the host):",
            recorded.len()
        );
        for (section, page, instead) in recorded {
            let _ = writeln!(out, "  [{section}] ({page}): {instead}");
        }
    }
    for w in &loaded.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
