//! What changed between two accepted cluster configurations, for live reload.

use crate::model::*;
use std::fmt;

/// Differences between two cluster configurations; services are matched by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// The cluster id changed: the peers no longer recognise each other's frames.
    pub cluster_renamed: bool,
    pub heartbeat_changed: bool,
    pub health_defaults_changed: bool,
    pub proxy_defaults_changed: bool,
    pub fallback_changed: bool,
    /// Labels of services only in the new configuration, in its order.
    pub added: Vec<String>,
    /// Labels of services only in the old configuration, in its order.
    pub removed: Vec<String>,
    pub changed: Vec<ServiceChange>,
}

/// How one service (same label in both) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceChange {
    pub label: String,
    /// VIP or ports changed: listeners must be opened/closed.
    pub listeners_changed: bool,
    /// Other settings that changed, by key name: "mode", "balance", "persistence",
    /// "health_check", "proxy", "fallback".
    pub settings_changed: Vec<&'static str>,
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
    /// Servers (same label) whose address, port or weight changed.
    pub servers_changed: Vec<String>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// Lists what differs from `old` to `new`.
pub fn diff(old: &ClusterConfig, new: &ClusterConfig) -> ConfigDiff {
    let mut out = ConfigDiff {
        cluster_renamed: old.cluster != new.cluster,
        heartbeat_changed: old.heartbeat != new.heartbeat,
        health_defaults_changed: old.health_check != new.health_check,
        proxy_defaults_changed: old.proxy != new.proxy,
        fallback_changed: old.fallback != new.fallback,
        ..ConfigDiff::default()
    };
    let find = |list: &'_ [Service], label: &str| list.iter().position(|s| s.label == label);
    for s in &new.services {
        if find(&old.services, &s.label).is_none() {
            out.added.push(s.label.clone());
        }
    }
    for o in &old.services {
        let Some(i) = find(&new.services, &o.label) else {
            out.removed.push(o.label.clone());
            continue;
        };
        let n = &new.services[i];
        if o == n {
            continue;
        }
        let mut c = ServiceChange {
            label: o.label.clone(),
            listeners_changed: o.vip != n.vip || o.ports != n.ports,
            ..ServiceChange::default()
        };
        let settings: [(&'static str, bool); 6] = [
            ("mode", o.mode != n.mode),
            ("balance", o.balance != n.balance),
            ("persistence", o.persistence != n.persistence),
            ("health_check", o.health_check != n.health_check),
            ("proxy", o.proxy != n.proxy),
            ("fallback", o.fallback != n.fallback),
        ];
        c.settings_changed = settings
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| *k)
            .collect();
        for r in &n.servers {
            match o.servers.iter().find(|x| x.label == r.label) {
                None => c.servers_added.push(r.label.clone()),
                Some(x) if x != r => c.servers_changed.push(r.label.clone()),
                Some(_) => {}
            }
        }
        for r in &o.servers {
            if !n.servers.iter().any(|x| x.label == r.label) {
                c.servers_removed.push(r.label.clone());
            }
        }
        out.changed.push(c);
    }
    out
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no changes");
        }
        let mut lines: Vec<String> = Vec::new();
        for (flag, what) in [
            (self.cluster_renamed, "cluster name changed"),
            (self.heartbeat_changed, "heartbeat settings changed"),
            (
                self.health_defaults_changed,
                "health-check defaults changed",
            ),
            (self.proxy_defaults_changed, "proxy defaults changed"),
            (self.fallback_changed, "fallback server changed"),
        ] {
            if flag {
                lines.push(what.to_string());
            }
        }
        for a in &self.added {
            lines.push(format!("service \"{a}\" added"));
        }
        for r in &self.removed {
            lines.push(format!("service \"{r}\" removed"));
        }
        for c in &self.changed {
            let mut parts: Vec<String> = Vec::new();
            if c.listeners_changed {
                parts.push("vip/ports".to_string());
            }
            parts.extend(c.settings_changed.iter().map(|s| s.to_string()));
            parts.extend(c.servers_added.iter().map(|s| format!("+server {s}")));
            parts.extend(c.servers_removed.iter().map(|s| format!("-server {s}")));
            parts.extend(c.servers_changed.iter().map(|s| format!("~server {s}")));
            lines.push(format!(
                "service \"{}\" changed: {}",
                c.label,
                parts.join(", ")
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}
