//! One config change -> one reload plan, without I/O: what a new `cluster.toml` changes for the
//! proxy (per service and per server), the VIP set, the heartbeat and its announcements, and
//! which `node.toml` changes only take effect at a restart. The proxy and the daemon act on the
//! plan instead of comparing configurations themselves.

use crate::model::*;
use std::fmt;
use std::net::IpAddr;

/// The fallback server an HTTP service uses: its own, else the cluster's. TCP services have none
/// (a TCP client cannot be answered by a stand-in).
pub fn effective_fallback(
    service: &Service,
    cluster: Option<&FallbackServer>,
) -> Option<FallbackServer> {
    match service.mode {
        Mode::Http => service.fallback.clone().or_else(|| cluster.cloned()),
        Mode::Tcp => None,
    }
}

/// The floating addresses of a configuration: every service's VIP once, in order of first use.
pub fn service_vips(cluster: &ClusterConfig) -> Vec<IpAddr> {
    let mut vips: Vec<IpAddr> = Vec::new();
    for service in &cluster.services {
        if !vips.contains(&service.vip) {
            vips.push(service.vip);
        }
    }
    vips
}

/// Everything a new `cluster.toml` changes, from the old configuration to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Every service label of either configuration: the new configuration's services in its
    /// order, then the removed ones in the old order. A label given twice counts once, the first
    /// (as the proxy serves it).
    pub services: Vec<ServicePlan>,
    /// Addresses to add to or remove from the floating set (the union of the services' VIPs).
    pub vips: VipPlan,
    /// `[cluster] name` changed: heartbeats and sync frames carry the name, so the peers stop
    /// recognising each other until both run the new name.
    pub cluster_renamed: Option<Renamed>,
    /// The new heartbeat timings, when `interval_ms`, `dead_ms`, `warn_ms` or `init_dead_ms`
    /// changed (the daemon applies them live).
    pub heartbeat_timings: Option<HeartbeatTimings>,
    /// The new `auto_failback`, when it changed.
    pub auto_failback: Option<bool>,
    /// The new ping nodes, when the list changed.
    pub ping_nodes: Option<Vec<IpAddr>>,
    /// The new VIP announcement settings (`garp_*`, `conflict_check_ms`), when they changed.
    pub announce: Option<Announce>,
    /// `[health_check]` defaults changed (their effect on each service is in its plan).
    pub health_defaults_changed: bool,
    /// `[proxy]` defaults changed (their effect on each service is in its plan).
    pub proxy_defaults_changed: bool,
    /// The cluster-wide `[fallback]` changed (its effect on each service is in its plan).
    pub fallback_changed: bool,
}

/// The cluster's old and new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub from: String,
    pub to: String,
}

/// The timing part of `[heartbeat]`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatTimings {
    pub interval_ms: u64,
    pub dead_ms: u64,
    pub warn_ms: u64,
    pub init_dead_ms: u64,
}

impl HeartbeatTimings {
    pub fn of(heartbeat: &HeartbeatConfig) -> Self {
        HeartbeatTimings {
            interval_ms: heartbeat.interval_ms,
            dead_ms: heartbeat.dead_ms,
            warn_ms: heartbeat.warn_ms,
            init_dead_ms: heartbeat.init_dead_ms,
        }
    }
}

/// The VIP announcement part of `[heartbeat]` (gratuitous ARP / unsolicited NA, and the duplicate-VIP check that
/// re-announces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub garp_count: u32,
    pub garp_spacing_ms: u64,
    /// 0 = no periodic re-announcement.
    pub garp_refresh_ms: u64,
    pub garp_form: GarpForm,
    /// The duplicate-VIP check interval (0 = off).
    pub conflict_check_ms: u64,
}

impl Announce {
    pub fn of(heartbeat: &HeartbeatConfig) -> Self {
        Announce {
            garp_count: heartbeat.garp_count,
            garp_spacing_ms: heartbeat.garp_spacing_ms,
            garp_refresh_ms: heartbeat.garp_refresh_ms,
            garp_form: heartbeat.garp_form,
            conflict_check_ms: heartbeat.conflict_check_ms,
        }
    }
}

/// Changes to the floating address set. The order of the VIPs means nothing: only membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipPlan {
    /// In the new configuration only, in its order.
    pub added: Vec<IpAddr>,
    /// In the old configuration only, in its order.
    pub removed: Vec<IpAddr>,
}

impl VipPlan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What happens to one service (matched by label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub label: String,
    pub change: ServiceChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// New: a new runtime, listeners and health checks.
    Added,
    /// Gone: its listeners close, established connections finish.
    Removed,
    /// Same settings, servers and effective fallback: the proxy keeps its runtime as it is
    /// (listeners, connections, counters, checks, stick table).
    Unchanged,
    /// A new runtime that keeps the counters, the listeners of VIP:ports that remain, and the
    /// servers as [`ServiceDelta::servers`] says.
    Changed(ServiceDelta),
}

/// How a changed service changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDelta {
    /// VIP or ports changed: listeners open and close.
    pub listeners_changed: bool,
    /// The settings that changed, in declaration order of [`Setting`].
    pub settings: Vec<Setting>,
    /// `proxy.max_connections` is the same: the connection-limit semaphore (and the
    /// connections holding its permits) carries over.
    pub keeps_limit: bool,
    /// Per server: the new servers in their order, then the removed ones in the old order.
    pub servers: Vec<ServerPlan>,
}

impl ServiceDelta {
    /// Some server is added, removed, replaced or has a new weight.
    pub fn servers_changed(&self) -> bool {
        self.servers
            .iter()
            .any(|s| !matches!(s.change, ServerChange::Kept { weight: None, .. }))
    }
}

/// A setting of a service other than its listeners and servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    Mode,
    Balance,
    Persistence,
    HealthCheck,
    Proxy,
    /// The service's fallback server, or the one it inherits (HTTP services only).
    Fallback,
    /// TLS on or off, its certificate files (by name or content) or its redirect port.
    Tls,
}

impl Setting {
    /// The key as written in `cluster.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Mode => "mode",
            Setting::Balance => "balance",
            Setting::Persistence => "persistence",
            Setting::HealthCheck => "health_check",
            Setting::Proxy => "proxy",
            Setting::Fallback => "fallback",
            Setting::Tls => "tls",
        }
    }
}

/// What happens to one real server of a changed service (matched by label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPlan {
    pub label: String,
    pub change: ServerChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChange {
    /// New: a new runtime, starting down until its checks pass.
    Added,
    /// Gone: its connections finish; persistence entries naming it are dropped.
    Removed,
    /// Same address and port: its runtime (connections, counters, health, admin state) is kept.
    Kept {
        /// The new weight, when it changed (applied in place).
        weight: Option<u32>,
        /// Its health check restarts: the service's check settings changed, or the server has
        /// no port of its own and the service's first port (what it is checked on) changed.
        check_restarts: bool,
    },
    /// Same label, new address or port: a new runtime (starting down) that carries over the
    /// admin state (Drain/Halt/Online).
    Replaced,
}

impl ReloadPlan {
    /// What changes from `old` to `new` (both already validated).
    pub fn new(old: &ClusterConfig, new: &ClusterConfig) -> ReloadPlan {
        let (ho, hn) = (&old.heartbeat, &new.heartbeat);
        let changed = |a, b| (a != b).then_some(b);
        ReloadPlan {
            services: plan_services(old, new),
            vips: plan_vips(&service_vips(old), &service_vips(new)),
            cluster_renamed: (old.cluster.name != new.cluster.name).then(|| Renamed {
                from: old.cluster.name.clone(),
                to: new.cluster.name.clone(),
            }),
            heartbeat_timings: changed(HeartbeatTimings::of(ho), HeartbeatTimings::of(hn)),
            auto_failback: (ho.auto_failback != hn.auto_failback).then_some(hn.auto_failback),
            ping_nodes: (ho.ping_nodes != hn.ping_nodes).then(|| hn.ping_nodes.clone()),
            announce: (Announce::of(ho) != Announce::of(hn)).then(|| Announce::of(hn)),
            health_defaults_changed: old.health_check != new.health_check,
            proxy_defaults_changed: old.proxy != new.proxy,
            fallback_changed: old.fallback != new.fallback,
        }
    }

    /// Nothing to do: every service unchanged and nothing cluster-wide changed.
    pub fn is_empty(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.change == ServiceChange::Unchanged)
            && self.vips.is_empty()
            && self.cluster_renamed.is_none()
            && self.heartbeat_timings.is_none()
            && self.auto_failback.is_none()
            && self.ping_nodes.is_none()
            && self.announce.is_none()
            && !self.health_defaults_changed
            && !self.proxy_defaults_changed
            && !self.fallback_changed
    }

    /// The plan of the service labelled `label`.
    pub fn service(&self, label: &str) -> Option<&ServicePlan> {
        self.services.iter().find(|s| s.label == label)
    }

    /// Labels of the services with this kind of change, in plan order.
    fn labels(&self, pick: impl Fn(&ServiceChange) -> bool) -> Vec<&str> {
        self.services
            .iter()
            .filter(|s| pick(&s.change))
            .map(|s| s.label.as_str())
            .collect()
    }

    /// Labels of added services, in the new configuration's order.
    pub fn added(&self) -> Vec<&str> {
        self.labels(|c| *c == ServiceChange::Added)
    }

    /// Labels of removed services, in the old configuration's order.
    pub fn removed(&self) -> Vec<&str> {
        self.labels(|c| *c == ServiceChange::Removed)
    }

    /// Labels of changed services, in the new configuration's order.
    pub fn changed(&self) -> Vec<&str> {
        self.labels(|c| matches!(c, ServiceChange::Changed(_)))
    }

    /// Labels of unchanged services, in the new configuration's order.
    pub fn unchanged(&self) -> Vec<&str> {
        self.labels(|c| *c == ServiceChange::Unchanged)
    }
}

fn plan_services<'a>(old: &'a ClusterConfig, new: &'a ClusterConfig) -> Vec<ServicePlan> {
    let old_services = first_by_label(&old.services);
    let new_services = first_by_label(&new.services);
    let find =
        |list: &Vec<&'a Service>, label: &str| list.iter().find(|s| s.label == label).copied();
    let mut out: Vec<ServicePlan> = new_services
        .iter()
        .map(|n| ServicePlan {
            label: n.label.clone(),
            change: match find(&old_services, &n.label) {
                None => ServiceChange::Added,
                Some(o) => plan_service(o, old.fallback.as_ref(), n, new.fallback.as_ref()),
            },
        })
        .collect();
    out.extend(
        old_services
            .iter()
            .filter(|o| find(&new_services, &o.label).is_none())
            .map(|o| ServicePlan {
                label: o.label.clone(),
                change: ServiceChange::Removed,
            }),
    );
    out
}

/// The first service of each label (the proxy ignores a repeated label).
fn first_by_label(services: &[Service]) -> Vec<&Service> {
    let mut out: Vec<&Service> = Vec::new();
    for s in services {
        if !out.iter().any(|o| o.label == s.label) {
            out.push(s);
        }
    }
    out
}

fn plan_service(
    o: &Service,
    old_cluster_fallback: Option<&FallbackServer>,
    n: &Service,
    new_cluster_fallback: Option<&FallbackServer>,
) -> ServiceChange {
    let fallback_o = effective_fallback(o, old_cluster_fallback);
    let fallback_n = effective_fallback(n, new_cluster_fallback);
    if o == n && fallback_o == fallback_n {
        return ServiceChange::Unchanged;
    }
    let settings = [
        (Setting::Mode, o.mode != n.mode),
        (Setting::Balance, o.balance != n.balance),
        (Setting::Persistence, o.persistence != n.persistence),
        (Setting::HealthCheck, o.health_check != n.health_check),
        (Setting::Proxy, o.proxy != n.proxy),
        (
            Setting::Fallback,
            o.fallback != n.fallback || fallback_o != fallback_n,
        ),
        (Setting::Tls, o.tls != n.tls),
    ]
    .into_iter()
    .filter_map(|(s, changed)| changed.then_some(s))
    .collect();
    // Health checks run against the service's first port for servers without a port of their own.
    let first_port_changed = o.ports.first() != n.ports.first();
    let mut servers: Vec<ServerPlan> = n
        .servers
        .iter()
        .map(|s| {
            let change = match o.servers.iter().find(|p| p.label == s.label) {
                None => ServerChange::Added,
                Some(p) if p.address == s.address && p.port == s.port => ServerChange::Kept {
                    weight: (p.weight != s.weight).then_some(s.weight),
                    check_restarts: o.health_check != n.health_check
                        || (s.port.is_none() && first_port_changed),
                },
                Some(_) => ServerChange::Replaced,
            };
            ServerPlan {
                label: s.label.clone(),
                change,
            }
        })
        .collect();
    for p in &o.servers {
        let listed = servers.iter().any(|s| s.label == p.label);
        if !listed && !n.servers.iter().any(|s| s.label == p.label) {
            servers.push(ServerPlan {
                label: p.label.clone(),
                change: ServerChange::Removed,
            });
        }
    }
    ServiceChange::Changed(ServiceDelta {
        listeners_changed: o.vip != n.vip || o.ports != n.ports,
        settings,
        keeps_limit: o.proxy.max_connections == n.proxy.max_connections,
        servers,
    })
}

fn plan_vips(old: &[IpAddr], new: &[IpAddr]) -> VipPlan {
    VipPlan {
        added: new.iter().filter(|v| !old.contains(v)).copied().collect(),
        removed: old.iter().filter(|v| !new.contains(v)).copied().collect(),
    }
}

/// How a changed service is summed up in one phrase: "listeners, persistence, servers".
fn service_summary(d: &ServiceDelta) -> String {
    let mut parts: Vec<String> = Vec::new();
    if d.listeners_changed {
        parts.push("listeners".to_string());
    }
    parts.extend(d.settings.iter().map(|s| s.name().to_string()));
    if d.servers_changed() {
        let servers: Vec<String> = d
            .servers
            .iter()
            .filter_map(|s| match s.change {
                ServerChange::Added => Some(format!("+{}", s.label)),
                ServerChange::Removed => Some(format!("-{}", s.label)),
                ServerChange::Replaced => Some(format!("{} replaced", s.label)),
                ServerChange::Kept {
                    weight: Some(w), ..
                } => Some(format!("{} weight {w}", s.label)),
                ServerChange::Kept { weight: None, .. } => None,
            })
            .collect();
        parts.push(format!("servers {}", servers.join(" ")));
    }
    if parts.is_empty() {
        // Only an ineffective field differs (e.g. a fallback on a TCP service).
        parts.push("settings".to_string());
    }
    parts.join(", ")
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn addresses(list: &[IpAddr]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ReloadPlan {
    /// One line for the log: "2 services changed (keystone: servers -k1; mysql: persistence),
    /// heartbeat timings changed (applied live)"; "no changes" when the plan is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no changes");
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(r) = &self.cluster_renamed {
            parts.push(format!(
                "cluster renamed \"{}\" -> \"{}\" (the peers no longer recognise each other until both run the new name)",
                r.from, r.to
            ));
        }
        let added = self.added();
        if !added.is_empty() {
            parts.push(format!(
                "{} added ({})",
                plural(added.len(), "service"),
                added.join(", ")
            ));
        }
        let removed = self.removed();
        if !removed.is_empty() {
            parts.push(format!(
                "{} removed ({})",
                plural(removed.len(), "service"),
                removed.join(", ")
            ));
        }
        let changed: Vec<String> = self
            .services
            .iter()
            .filter_map(|s| match &s.change {
                ServiceChange::Changed(d) => Some(format!("{}: {}", s.label, service_summary(d))),
                _ => None,
            })
            .collect();
        if !changed.is_empty() {
            parts.push(format!(
                "{} changed ({})",
                plural(changed.len(), "service"),
                changed.join("; ")
            ));
        }
        if !self.vips.added.is_empty() {
            parts.push(format!("VIPs added ({})", addresses(&self.vips.added)));
        }
        if !self.vips.removed.is_empty() {
            parts.push(format!("VIPs removed ({})", addresses(&self.vips.removed)));
        }
        if self.heartbeat_timings.is_some() {
            parts.push("heartbeat timings changed (applied live)".to_string());
        }
        if let Some(a) = self.auto_failback {
            parts.push(format!("auto_failback now {a}"));
        }
        if self.ping_nodes.is_some() {
            parts.push("ping nodes changed".to_string());
        }
        if self.announce.is_some() {
            parts.push("VIP announcement settings changed".to_string());
        }
        for (changed, what) in [
            (
                self.health_defaults_changed,
                "health-check defaults changed",
            ),
            (self.proxy_defaults_changed, "proxy defaults changed"),
            (self.fallback_changed, "fallback server changed"),
        ] {
            if changed {
                parts.push(what.to_string());
            }
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// `node.toml` changes: none of them applies live (the daemon reads node.toml at start-up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// The keys that changed, as `section.key` (`node.address`, `admin.listen`,
    /// `tuning.workers`) or `local.SECTION` for a non-replicated section; each needs a restart.
    pub restart_needed: Vec<String>,
}

impl NodePlan {
    pub fn new(old: &NodeConfig, new: &NodeConfig) -> NodePlan {
        let (o, n) = (&old.node, &new.node);
        let (oa, na) = (&old.admin, &new.admin);
        let (ot, nt) = (&old.tuning, &new.tuning);
        let mut restart_needed: Vec<String> = [
            ("node.name", o.name != n.name),
            ("node.role", o.role != n.role),
            ("node.interface", o.interface != n.interface),
            ("node.address", o.address != n.address),
            ("node.peer", o.peer != n.peer),
            ("node.heartbeat_port", o.heartbeat_port != n.heartbeat_port),
            ("node.sync_port", o.sync_port != n.sync_port),
            ("node.manage_vips", o.manage_vips != n.manage_vips),
            ("node.secret_file", o.secret_file != n.secret_file),
            ("node.state_dir", o.state_dir != n.state_dir),
            ("admin.listen", oa.listen != na.listen),
            ("admin.user", oa.user != na.user),
            ("admin.password_file", oa.password_file != na.password_file),
            ("admin.socket", oa.socket != na.socket),
            ("admin.hostnames", oa.hostnames != na.hostnames),
            (
                "admin.tls_certificate",
                oa.tls_certificate != na.tls_certificate,
            ),
            ("admin.tls_key", oa.tls_key != na.tls_key),
            ("metrics.listen", old.metrics.listen != new.metrics.listen),
            ("log.format", old.log.format != new.log.format),
            ("access_log", old.access_log != new.access_log),
            ("node.vip_networks", o.vip_networks != n.vip_networks),
            ("node.user", o.user != n.user),
            ("tuning.http_engine", ot.http_engine != nt.http_engine),
            (
                "tuning.http_write_batching",
                ot.http_write_batching != nt.http_write_batching,
            ),
            ("tuning.http_poll_us", ot.http_poll_us != nt.http_poll_us),
            ("tuning.tcp_relay", ot.tcp_relay != nt.tcp_relay),
            ("tuning.relay_yield", ot.relay_yield != nt.relay_yield),
            ("tuning.workers", ot.workers != nt.workers),
            (
                "tuning.heartbeat_realtime",
                ot.heartbeat_realtime != nt.heartbeat_realtime,
            ),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key.to_string())
        .collect();
        let (ol, nl) = (&old.local.sections, &new.local.sections);
        let mut local: Vec<&String> = ol.keys().chain(nl.keys()).collect();
        local.sort();
        local.dedup();
        restart_needed.extend(
            local
                .into_iter()
                .filter(|k| ol.get(*k) != nl.get(*k))
                .map(|k| format!("local.{k}")),
        );
        NodePlan { restart_needed }
    }

    pub fn is_empty(&self) -> bool {
        self.restart_needed.is_empty()
    }

    /// One line per change: "node.address changed: restart needed".
    pub fn lines(&self) -> Vec<String> {
        self.restart_needed
            .iter()
            .map(|k| format!("{k} changed: restart needed"))
            .collect()
    }
}

impl fmt::Display for NodePlan {
    /// "node.toml unchanged", or "node.address, tuning.workers changed: restart needed".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "node.toml unchanged")
        } else {
            write!(
                f,
                "{} changed: restart needed",
                self.restart_needed.join(", ")
            )
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
