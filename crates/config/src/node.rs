//! Reading `node.toml` (this node only; never replicated) into the validated [`NodeConfig`].

use crate::cluster::LOCAL_SECTIONS;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{
    At, Section, Val, array, boolean, choice, int_in, ip, label, port, string, table, to_toml_table,
};
use crate::tuning::{TUNING_KEYS, read_tuning};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::de::DeTable;

/// Defaults of `node.toml` (documented in docs/configuration.md).
pub mod defaults {
    pub const HEARTBEAT_PORT: u16 = 6694;
    pub const SYNC_PORT: u16 = 7778;
    /// Relative to the directory holding node.toml.
    pub const SECRET_FILE: &str = "secret";
    pub const STATE_DIR: &str = "/var/lib/tandem";
    /// The account a daemon started as root switches to (created by the package).
    pub const USER: &str = "tandem";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9080";
    /// The local CLI's UNIX socket (a `RuntimeDirectory=tandem` under systemd).
    pub const ADMIN_SOCKET: &str = "/run/tandem/admin.sock";
    /// `[hooks] timeout_ms`.
    pub const HOOK_TIMEOUT_MS: u64 = 10_000;
}

/// Where the cross-file checks point back into `node.toml`.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpans {
    pub address: At<IpAddr>,
    /// `None` when the default was used.
    pub admin_listen: Option<std::ops::Range<usize>>,
    pub state_dir: std::ops::Range<usize>,
    pub secret_file: std::ops::Range<usize>,
    /// `[admin] password_file`'s value, when given.
    pub password_file: Option<std::ops::Range<usize>>,
}

/// What cross-file checks need, known even when other parts of node.toml are wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeFacts {
    pub address: Option<IpAddr>,
    pub peer: Option<IpAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// `None` when the default was used.
    pub admin_span: Option<std::ops::Range<usize>>,
    /// `[node] vip_networks` (empty: any VIP).
    pub vip_networks: Vec<IpNetwork>,
}

impl NodeFacts {
    pub(crate) fn of(node: &NodeConfig) -> Self {
        Self {
            address: Some(node.node.address),
            peer: node.node.peer,
            admin_listen: Some(node.admin.listen),
            admin_span: None,
            vip_networks: node.node.vip_networks.clone(),
        }
    }
}

pub(crate) struct ParsedNode {
    /// `None` when node.toml has errors.
    pub config: Option<NodeConfig>,
    pub spans: Option<NodeSpans>,
    pub facts: NodeFacts,
}

const CLUSTER_SECTIONS: &[&str] = &[
    "cluster",
    "heartbeat",
    "health_check",
    "proxy",
    "fallback",
    "service",
    "services",
];
const NODE_KEYS: &[&str] = &[
    "name",
    "role",
    "interface",
    "address",
    "peer",
    "heartbeat_port",
    "sync_port",
    "manage_vips",
    "secret_file",
    "state_dir",
    "vip_networks",
    "user",
];

fn misplaced_top(key: &str) -> Option<String> {
    if TUNING_KEYS.contains(&key) {
        return Some(format!("`{key}` belongs in the [tuning] section"));
    }
    CLUSTER_SECTIONS.contains(&key).then(|| {
        format!("`{key}` belongs in cluster.toml: it is cluster-wide and replicated to the peer")
    })
}

fn misplaced_in_node(key: &str) -> Option<String> {
    if TUNING_KEYS.contains(&key) {
        return Some(format!(
            "`{key}` belongs in the [tuning] section, not in [node]"
        ));
    }
    if crate::cluster::HEARTBEAT_KEYS.contains(&key) {
        return Some(format!(
            "`{key}` belongs in cluster.toml [heartbeat]: both nodes must use the same timings"
        ));
    }
    if matches!(key, "vip" | "vips" | "cluster" | "cluster_name") {
        return Some(format!(
            "`{key}` belongs in cluster.toml: it is cluster-wide and replicated to the peer"
        ));
    }
    None
}

/// Parses and validates `node.toml`. Relative paths are resolved against `base_dir` (the
/// directory holding node.toml) when given.
pub(crate) fn parse(ctx: &mut Ctx<'_>, src: &str, base_dir: Option<&Path>) -> Option<ParsedNode> {
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        for e in &syntax {
            ctx.error(&e.span().unwrap_or(0..0), e.message().to_string());
        }
        return None;
    }
    let root = Section::new("node.toml", 0..0, doc.get_ref());
    let mut top: Vec<&str> = vec![
        "node",
        "admin",
        "tuning",
        "hooks",
        "access_log",
        "metrics",
        "log",
    ];
    top.extend(LOCAL_SECTIONS.iter().map(|(n, _)| *n));
    root.finish(ctx, &top, &misplaced_top);

    let mut facts = NodeFacts::default();
    let node = read_node(ctx, &root, base_dir, &mut facts);
    let admin = read_admin(ctx, root.get("admin"), base_dir, &mut facts);
    let tuning = read_tuning(ctx, root.get("tuning"));
    let hooks = read_hooks(ctx, root.get("hooks"));
    let access_log = crate::access_log_section::read_access_log(ctx, root.get("access_log"));

    let mut local = LocalSettings::default();
    for (name, _) in LOCAL_SECTIONS {
        if let Some(v) = root.get(name)
            && let Some(t) = table(ctx, name, v)
        {
            local.sections.insert((*name).to_string(), to_toml_table(t));
        }
    }

    let (Some((node, mut spans)), Some(admin), Some(tuning), Some(hooks)) =
        (node, admin, tuning, hooks)
    else {
        return Some(ParsedNode {
            config: None,
            spans: None,
            facts,
        });
    };
    spans.admin_listen = admin.listen_span;
    spans.password_file = admin.password_file_span;
    let admin = admin.config;
    check_ports(ctx, &node, &admin, &spans);
    let taken = [
        ("admin listener", admin.listen),
        ("sync port", SocketAddr::new(node.address, node.sync_port)),
    ];
    let metrics = crate::metrics_section::read_metrics(ctx, root.get("metrics"), &taken);
    let log = crate::log_section::read_log(ctx, root.get("log"));
    let config = (!ctx.has_errors()).then_some(NodeConfig {
        node,
        admin,
        local,
        tuning,
        hooks,
        access_log: access_log.unwrap_or_default(),
        metrics: metrics.unwrap_or_default(),
        log: log.unwrap_or_default(),
    });
    Some(ParsedNode {
        config,
        spans: Some(spans),
        facts,
    })
}

fn resolve(base_dir: Option<&Path>, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    match base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

fn path_value(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Val<'_>,
    base_dir: Option<&Path>,
) -> Option<PathBuf> {
    let s = string(ctx, key, v)?;
    if s.v.trim().is_empty() {
        ctx.error(&v.span(), format!("`{key}` must not be empty"));
        return None;
    }
    Some(resolve(base_dir, s.v))
}

fn read_node(
    ctx: &mut Ctx<'_>,
    root: &Section<'_, '_>,
    base_dir: Option<&Path>,
    facts: &mut NodeFacts,
) -> Option<(NodeSection, NodeSpans)> {
    let Some(v) = root.get("node") else {
        ctx.error(
            &root.span,
            "missing required section [node] (with `name`, `role` and `address`)",
        );
        return None;
    };
    let t = table(ctx, "node", v)?;
    let s = Section::new("[node]", v.span(), t);
    s.finish(ctx, NODE_KEYS, &misplaced_in_node);

    let name = s.required(ctx, "name").and_then(|n| label(ctx, "name", n));
    let role = match s.get("role") {
        Some(r) => choice(
            ctx,
            "role",
            r,
            &[("primary", Role::Primary), ("secondary", Role::Secondary)],
        ),
        None => {
            ctx.error(
                &s.span,
                "missing required key `role` in [node] (\"primary\" or \"secondary\")",
            );
            None
        }
    };
    let address = s
        .required(ctx, "address")
        .and_then(|a| ip(ctx, "address", a));
    let peer = match s.get("peer") {
        Some(p) => ip(ctx, "peer", p).map(Some),
        None => Some(None),
    };
    let heartbeat_port = match s.get("heartbeat_port") {
        Some(p) => port(ctx, "heartbeat_port", p).map(|a| a.v),
        None => Some(defaults::HEARTBEAT_PORT),
    };
    let sync_port = match s.get("sync_port") {
        Some(p) => port(ctx, "sync_port", p).map(|a| a.v),
        None => Some(defaults::SYNC_PORT),
    };
    let manage_vips = match s.get("manage_vips") {
        Some(m) => boolean(ctx, "manage_vips", m).map(|a| a.v),
        None => Some(true),
    };
    let interface = match s.get("interface") {
        Some(i) => string(ctx, "interface", i).and_then(|name| {
            let n = name.v;
            if n.is_empty()
                || n.len() > 15
                || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
            {
                ctx.error(
                    &i.span(),
                    format!("`interface` = \"{n}\" is not a valid interface name (1-15 characters, no '/', ':' or spaces)"),
                );
                None
            } else {
                Some(n.to_string())
            }
        }),
        None if manage_vips == Some(true) => {
            ctx.error(
                &s.span,
                "missing required key `interface` in [node] (the interface that carries the VIPs; or set manage_vips = false)",
            );
            None
        }
        None => Some(String::new()),
    };
    let (secret_file, secret_span) = match s.get("secret_file") {
        Some(f) => (path_value(ctx, "secret_file", f, base_dir), f.span()),
        None => (
            Some(resolve(base_dir, defaults::SECRET_FILE)),
            s.span.clone(),
        ),
    };
    let (state_dir, state_span) = match s.get("state_dir") {
        Some(f) => (path_value(ctx, "state_dir", f, base_dir), f.span()),
        None => (Some(PathBuf::from(defaults::STATE_DIR)), s.span.clone()),
    };

    let user = match s.get("user") {
        Some(u) => string(ctx, "user", u).and_then(|name| {
            let n = name.v;
            let valid = !n.is_empty()
                && n.len() <= 32
                && n != "root"
                && n.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if valid {
                Some(n.to_string())
            } else {
                ctx.error(
                    &u.span(),
                    format!(
                        "`user` = \"{n}\" is not a usable account name (lower-case letters, digits, '_' and '-', \
                         at most 32, not root): it is the unprivileged user a daemon started as root switches to"
                    ),
                );
                None
            }
        }),
        None => Some(defaults::USER.to_string()),
    };

    let vip_networks = match s.get("vip_networks") {
        Some(v) => networks(ctx, "vip_networks", v),
        None => Some(Vec::new()),
    };
    facts.vip_networks = vip_networks.clone().unwrap_or_default();
    facts.address = address.as_ref().map(|a| a.v);
    facts.peer = peer.as_ref().and_then(|p| p.as_ref().map(|p| p.v));
    if let (Some(a), Some(Some(p))) = (&address, &peer) {
        if a.v == p.v {
            ctx.error(
                &p.span,
                format!("`peer` {} is this node's own `address`", p.v),
            );
        } else if a.v.is_ipv4() != p.v.is_ipv4() {
            ctx.error(
                &p.span,
                format!(
                    "`peer` {} and `address` {} are of different IP families",
                    p.v, a.v
                ),
            );
        }
    }

    let node = NodeSection {
        name: name?.v,
        role: role?.v,
        interface: interface?,
        address: address.as_ref()?.v,
        peer: peer.as_ref()?.as_ref().map(|p| p.v),
        heartbeat_port: heartbeat_port?,
        sync_port: sync_port?,
        manage_vips: manage_vips?,
        secret_file: secret_file?,
        state_dir: state_dir?,
        vip_networks: vip_networks?,
        user: user?,
    };
    let spans = NodeSpans {
        address: address?,
        admin_listen: None,
        state_dir: state_span,
        secret_file: secret_span,
        password_file: None,
    };
    Some((node, spans))
}

/// A list of `address/prefix` strings (`vip_networks`).
fn networks(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<Vec<IpNetwork>> {
    let items = array(ctx, key, v)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(text) = string(ctx, key, item) else {
            ok = false;
            continue;
        };
        match text.v.trim().parse::<IpNetwork>() {
            Ok(network) => out.push(network),
            Err(reason) => {
                ctx.error(&item.span(), format!("`{key}`: {reason}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `[admin]` read, with where its keys were written.
struct AdminRead {
    config: AdminConfig,
    /// `None` when the default was used.
    listen_span: Option<std::ops::Range<usize>>,
    password_file_span: Option<std::ops::Range<usize>>,
}

const ADMIN_KEYS: &[&str] = &[
    "listen",
    "user",
    "password_file",
    "socket",
    "hostnames",
    "tls_certificate",
    "tls_key",
];

/// A host name the admin listener answers to: letters, digits, `-` and `.`, not an IP literal.
fn hostname(ctx: &mut Ctx<'_>, v: &Val<'_>) -> Option<String> {
    let text = string(ctx, "hostnames", v)?.v.trim().to_ascii_lowercase();
    let valid = !text.is_empty()
        && text.len() <= 253
        && text.parse::<IpAddr>().is_err()
        && text
            .split('.')
            .all(|part| !part.is_empty() && part.len() <= 63)
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        ctx.error(
            &v.span(),
            format!(
                "`hostnames`: \"{text}\" is not a host name (letters, digits, '-' and '.'; IP addresses need no entry)"
            ),
        );
        return None;
    }
    Some(text)
}

fn read_admin(
    ctx: &mut Ctx<'_>,
    v: Option<&Val<'_>>,
    base_dir: Option<&Path>,
    facts: &mut NodeFacts,
) -> Option<AdminRead> {
    let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    facts.admin_listen = Some(default_listen);
    let Some(v) = v else {
        return Some(AdminRead {
            config: AdminConfig {
                listen: default_listen,
                user: None,
                password_file: None,
                socket: PathBuf::from(defaults::ADMIN_SOCKET),
                hostnames: Vec::new(),
                tls_certificate: None,
                tls_key: None,
            },
            listen_span: None,
            password_file_span: None,
        });
    };
    let t = table(ctx, "admin", v)?;
    let s = Section::new("[admin]", v.span(), t);
    s.finish(ctx, ADMIN_KEYS, &|_| None);
    let listen = match s.get("listen") {
        Some(l) => string(ctx, "listen", l).and_then(|text| match text.v.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                ctx.error(&l.span(), "`listen`: port 0 is not allowed (1..=65535)");
                None
            }
            Ok(addr) => Some((addr, Some(l.span()))),
            Err(_) => {
                ctx.error(
                    &l.span(),
                    format!(
                        "`listen` = \"{}\" is not an address:port like \"127.0.0.1:9080\" or \"[::1]:9080\"",
                        text.v
                    ),
                );
                None
            }
        }),
        None => Some((default_listen, None)),
    };
    facts.admin_listen = listen.as_ref().map(|(a, _)| *a);
    facts.admin_span = listen.as_ref().and_then(|(_, s)| s.clone());
    let user = match s.get("user") {
        Some(u) => label(ctx, "user", u).map(|a| Some(a.v)),
        None => Some(None),
    };
    let password_file = match s.get("password_file") {
        Some(p) => path_value(ctx, "password_file", p, base_dir).map(Some),
        None => Some(None),
    };
    let socket = match s.get("socket") {
        Some(p) => path_value(ctx, "socket", p, base_dir).and_then(|path| {
            // sun_path holds 108 bytes with the terminating NUL.
            if path.as_os_str().len() > 107 {
                ctx.error(
                    &p.span(),
                    format!(
                        "`socket`: {} is longer than a UNIX socket path may be (107 bytes)",
                        path.display()
                    ),
                );
                None
            } else {
                Some(path)
            }
        }),
        None => Some(PathBuf::from(defaults::ADMIN_SOCKET)),
    };
    let hostnames = match s.get("hostnames") {
        Some(h) => array(ctx, "hostnames", h).and_then(|items| {
            let names: Vec<Option<String>> = items.iter().map(|i| hostname(ctx, i)).collect();
            names.into_iter().collect::<Option<Vec<String>>>()
        }),
        None => Some(Vec::new()),
    };
    let tls_certificate = match s.get("tls_certificate") {
        Some(p) => path_value(ctx, "tls_certificate", p, base_dir).map(Some),
        None => Some(None),
    };
    let tls_key = match s.get("tls_key") {
        Some(p) => path_value(ctx, "tls_key", p, base_dir).map(Some),
        None => Some(None),
    };
    if let (Some(Some(_)), Some(None)) = (&tls_certificate, &tls_key) {
        ctx.error(
            &s.span,
            "[admin] sets `tls_certificate` but no `tls_key`: give both (PEM files)",
        );
        return None;
    }
    if let (Some(None), Some(Some(_))) = (&tls_certificate, &tls_key)
        && let Some(k) = s.key_span("tls_key")
    {
        ctx.error(
            &k,
            "[admin] sets `tls_key` but no `tls_certificate`: give both (PEM files)",
        );
        return None;
    }
    if let (Some(Some(_)), Some(None)) = (&user, &password_file) {
        ctx.error(
            &s.span,
            "[admin] sets `user` but no `password_file`: give both, or neither for no authentication",
        );
        return None;
    }
    if let (Some(None), Some(Some(_))) = (&user, &password_file)
        && let Some(k) = s.key_span("password_file")
    {
        ctx.error(&k, "[admin] sets `password_file` but no `user`: give both");
        return None;
    }
    let (listen, span) = listen?;
    let user = user?;
    if user.is_none() && !listen.ip().is_loopback() {
        // Off loopback the listener speaks HTTPS (configured or self-signed); without
        // credentials anyone on the network could read the status and nobody could act.
        ctx.error(
            span.as_ref().unwrap_or(&s.span),
            format!(
                "admin `listen` {listen} is reachable from the network: set `user` and `password_file` \
                 (`tandem password FILE`), or listen on a loopback address like 127.0.0.1:9080"
            ),
        );
        return None;
    }
    Some(AdminRead {
        config: AdminConfig {
            listen,
            user,
            password_file: password_file?,
            socket: socket?,
            hostnames: hostnames?,
            tls_certificate: tls_certificate?,
            tls_key: tls_key?,
        },
        listen_span: span,
        password_file_span: s.get("password_file").map(|p| p.span()),
    })
}

/// The admin listener must not take the sync port on the node's own address.
fn check_ports(ctx: &mut Ctx<'_>, node: &NodeSection, admin: &AdminConfig, spans: &NodeSpans) {
    let ip = admin.listen.ip();
    if admin.listen.port() == node.sync_port && (ip == node.address || ip.is_unspecified()) {
        let span = spans
            .admin_listen
            .clone()
            .unwrap_or(spans.address.span.clone());
        ctx.error(
            &span,
            format!(
                "admin `listen` {} takes the sync port {} on this node's address",
                admin.listen, node.sync_port
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// [hooks]

/// What can happen to this node that a hook may be told about (the `on_*` keys of `[hooks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// This node became active (holds the VIPs).
    Active,
    /// This node became standby.
    Standby,
    /// This node entered fault (adding or removing the VIPs failed).
    Fault,
    /// The peer fell silent for longer than `dead_ms`.
    PeerLost,
    /// The peer was heard (first time, or again after it was lost).
    PeerFound,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Active,
        HookEvent::Standby,
        HookEvent::Fault,
        HookEvent::PeerLost,
        HookEvent::PeerFound,
    ];

    /// The `[hooks]` key naming its command.
    pub fn key(self) -> &'static str {
        match self {
            HookEvent::Active => "on_active",
            HookEvent::Standby => "on_standby",
            HookEvent::Fault => "on_fault",
            HookEvent::PeerLost => "on_peer_lost",
            HookEvent::PeerFound => "on_peer_found",
        }
    }

    /// The event as a hook sees it (its first argument and `TANDEM_EVENT`).
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Active => "active",
            HookEvent::Standby => "standby",
            HookEvent::Fault => "fault",
            HookEvent::PeerLost => "peer-lost",
            HookEvent::PeerFound => "peer-found",
        }
    }
}

/// `[hooks]`: commands run when this node's cluster state changes, like keepalived's `notify_master`,
/// `notify_backup` and `notify_fault`. Each command is an argv array run without a shell; the daemon appends the
/// event, the node's new state and the reason, and sets them in the environment too (docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hooks {
    pub on_active: Option<Vec<String>>,
    pub on_standby: Option<Vec<String>>,
    pub on_fault: Option<Vec<String>>,
    pub on_peer_lost: Option<Vec<String>>,
    pub on_peer_found: Option<Vec<String>>,
    /// A hook still running after this long is killed with its whole process group.
    pub timeout_ms: u64,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            on_active: None,
            on_standby: None,
            on_fault: None,
            on_peer_lost: None,
            on_peer_found: None,
            timeout_ms: defaults::HOOK_TIMEOUT_MS,
        }
    }
}

impl Hooks {
    /// The argv configured for `event`, if any.
    pub fn command(&self, event: HookEvent) -> Option<&[String]> {
        match event {
            HookEvent::Active => self.on_active.as_deref(),
            HookEvent::Standby => self.on_standby.as_deref(),
            HookEvent::Fault => self.on_fault.as_deref(),
            HookEvent::PeerLost => self.on_peer_lost.as_deref(),
            HookEvent::PeerFound => self.on_peer_found.as_deref(),
        }
    }

    fn slot(&mut self, event: HookEvent) -> &mut Option<Vec<String>> {
        match event {
            HookEvent::Active => &mut self.on_active,
            HookEvent::Standby => &mut self.on_standby,
            HookEvent::Fault => &mut self.on_fault,
            HookEvent::PeerLost => &mut self.on_peer_lost,
            HookEvent::PeerFound => &mut self.on_peer_found,
        }
    }

    /// No hook configured.
    pub fn is_empty(&self) -> bool {
        HookEvent::ALL.iter().all(|e| self.command(*e).is_none())
    }
}

/// Limits of `[hooks]`: a hook that needs more than five minutes holds up every hook queued behind it.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 300_000;
/// Arguments per hook command, and bytes per argument: a typo, not a command, beyond these.
const MAX_HOOK_ARGS: usize = 64;
const MAX_HOOK_ARG_BYTES: usize = 4096;

fn hook_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = HookEvent::ALL.iter().map(|e| e.key()).collect();
    keys.push("timeout_ms");
    keys
}

/// keepalived's names, and other keys an operator coming from it may write.
fn misplaced_in_hooks(key: &str) -> Option<String> {
    let instead = match key {
        "notify_master" | "on_master" | "master" => "on_active",
        "notify_backup" | "on_backup" | "backup" => "on_standby",
        "notify_fault" => "on_fault",
        "notify" | "notify_stop" => {
            return Some(format!(
                "`{key}` is keepalived's; tandem runs one command per event (on_active, on_standby, on_fault, \
                 on_peer_lost, on_peer_found) and passes the event as the first argument, so the same script \
                 may be named in several of them"
            ));
        }
        "timeout" | "timeout_s" | "notify_timeout" => "timeout_ms",
        _ => return None,
    };
    Some(format!(
        "unknown key `{key}` in [hooks]; tandem calls it `{instead}`"
    ))
}

/// `[hooks]`: defaults (nothing run) when absent; `None` when something in it is wrong (reported).
fn read_hooks(ctx: &mut Ctx<'_>, v: Option<&Val<'_>>) -> Option<Hooks> {
    let mut hooks = Hooks::default();
    let Some(v) = v else {
        return Some(hooks);
    };
    let t = table(ctx, "hooks", v)?;
    let s = Section::new("[hooks]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, &hook_keys(), &misplaced_in_hooks);
    for event in HookEvent::ALL {
        if let Some(command) = s.get(event.key()) {
            *hooks.slot(event) = hook_command(ctx, event.key(), command);
        }
    }
    if let Some(t) = s.get("timeout_ms").and_then(|t| {
        int_in(
            ctx,
            "timeout_ms",
            t,
            1,
            MAX_HOOK_TIMEOUT_MS,
            " ms; hooks run one at a time, so a long one delays the next",
        )
    }) {
        hooks.timeout_ms = t.v;
    }
    (ctx.diags.errors.len() == errors_before).then_some(hooks)
}

/// One hook command: an argv array whose first element is an absolute path. A program that is missing or not
/// executable is a warning, not an error: the load balancer must start even when a notification script is not
/// installed yet (or `tandem check` runs on another machine); the daemon logs the failure each time the hook runs.
fn hook_command(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<Vec<String>> {
    if let Some(text) = v.get_ref().as_str() {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` = \"{text}\" is a string; a hook is an argv array run without a shell, e.g. \
                 [\"/usr/local/sbin/lb-notify\", \"--quiet\"] (for shell syntax say so: [\"/bin/sh\", \"-c\", \"...\"])"
            ),
        );
        return None;
    }
    let items = array(ctx, key, v)?;
    if items.is_empty() {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` is empty: give the command as an argv array, e.g. [\"/usr/local/sbin/lb-notify\"], \
                 or leave the key out"
            ),
        );
        return None;
    }
    if items.len() > MAX_HOOK_ARGS {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` has {} elements; at most {MAX_HOOK_ARGS} (use a script for more)",
                items.len()
            ),
        );
        return None;
    }
    let mut argv = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(arg) = string(ctx, key, item) else {
            ok = false;
            continue;
        };
        if arg.v.contains('\0') {
            ctx.error(
                &item.span(),
                format!("`{key}`: an argument cannot contain a NUL character"),
            );
            ok = false;
        } else if arg.v.len() > MAX_HOOK_ARG_BYTES {
            ctx.error(
                &item.span(),
                format!("`{key}`: an argument longer than {MAX_HOOK_ARG_BYTES} bytes"),
            );
            ok = false;
        }
        argv.push(arg.v.to_string());
    }
    if !ok {
        return None;
    }
    let program = Path::new(&argv[0]);
    let program_span = items[0].span();
    if !program.is_absolute() {
        ctx.error(
            &program_span,
            format!(
                "`{key}`: the program \"{}\" must be an absolute path (hooks are run without a shell and without \
                 a PATH search), e.g. \"/usr/local/sbin/{}\"",
                argv[0],
                program
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "lb-notify".into())
            ),
        );
        return None;
    }
    match std::fs::metadata(program) {
        Err(error) => ctx.warn(
            &program_span,
            format!(
                "`{key}`: {} cannot be used ({error}); the hook will fail each time it runs",
                program.display()
            ),
        ),
        Ok(meta) if !meta.is_file() => ctx.warn(
            &program_span,
            format!(
                "`{key}`: {} is not a regular file; the hook will fail each time it runs",
                program.display()
            ),
        ),
        Ok(meta) if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 => {
            ctx.warn(
                &program_span,
                format!(
                    "`{key}`: {} is not executable (chmod +x); the hook will fail each time it runs",
                    program.display()
                ),
            )
        }
        Ok(_) => {}
    }
    Some(argv)
}

#[cfg(test)]
mod hooks_tests {
    #![allow(clippy::unwrap_used)]
    use super::{HookEvent, Hooks, parse};
    use crate::diag::{Ctx, Diagnostics};
    use std::os::unix::fs::PermissionsExt;

    const NODE: &str =
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n";

    /// node.toml with `hooks` appended: the config (if accepted) and every diagnostic as `file:line:col: text`.
    fn read(hooks: &str) -> (Option<Hooks>, Vec<String>, Vec<String>) {
        let text = format!("{NODE}{hooks}");
        let mut ctx = Ctx::new("node.toml", &text);
        let parsed = parse(&mut ctx, &text, None);
        let config = parsed.and_then(|p| p.config).filter(|_| !ctx.has_errors());
        let Diagnostics { errors, warnings } = ctx.diags;
        (
            config.map(|c| c.hooks),
            errors.iter().map(ToString::to_string).collect(),
            warnings.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn absent_section_runs_nothing_with_the_default_timeout() {
        let (hooks, errors, warnings) = read("");
        let hooks = hooks.unwrap();
        assert!(errors.is_empty() && warnings.is_empty());
        assert!(hooks.is_empty());
        assert_eq!(hooks.timeout_ms, 10_000);
        assert_eq!(hooks, Hooks::default());
    }

    #[test]
    fn every_hook_is_read_as_an_argv_array() {
        let (hooks, errors, warnings) = read(
            "[hooks]\non_active = [\"/bin/sh\", \"-c\", \"echo $1\", \"x\"]\non_standby = [\"/bin/true\"]\n\
             on_fault = [\"/bin/true\", \"fault\"]\non_peer_lost = [\"/bin/true\"]\non_peer_found = [\"/bin/true\"]\n\
             timeout_ms = 2500\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        let hooks = hooks.unwrap();
        assert_eq!(
            hooks.command(HookEvent::Active).unwrap(),
            ["/bin/sh", "-c", "echo $1", "x"]
        );
        assert_eq!(
            hooks.command(HookEvent::Fault).unwrap(),
            ["/bin/true", "fault"]
        );
        for event in HookEvent::ALL {
            assert!(hooks.command(event).is_some(), "{event:?}");
        }
        assert_eq!(hooks.timeout_ms, 2500);
    }

    #[test]
    fn a_shell_string_an_empty_array_and_a_relative_program_are_errors_at_their_value() {
        let (hooks, errors, _) = read(
            "[hooks]\non_active = \"/usr/local/bin/notify active\"\non_standby = []\non_fault = [\"notify\"]\n\
             on_peer_lost = [\"/bin/true\", 3]\n",
        );
        assert!(hooks.is_none());
        let all = errors.join("\n");
        assert!(
            all.contains("node.toml:7:13: `on_active` = \"/usr/local/bin/notify active\" is a string; a hook is an argv array"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:8:14: `on_standby` is empty"),
            "{all}"
        );
        assert!(
            all.contains(
                "node.toml:9:13: `on_fault`: the program \"notify\" must be an absolute path"
            ),
            "{all}"
        );
        assert!(
            all.contains("node.toml:10:30: `on_peer_lost` must be a string, found an integer"),
            "{all}"
        );
        assert_eq!(errors.len(), 4, "{all}");
    }

    #[test]
    fn keepalived_names_and_typos_say_what_tandem_calls_them() {
        let (hooks, errors, _) = read(
            "[hooks]\nnotify_master = [\"/bin/true\"]\nnotify_backup = [\"/bin/true\"]\non_actve = [\"/bin/true\"]\n\
             timeout = 5\n",
        );
        assert!(hooks.is_none());
        let all = errors.join("\n");
        assert!(
            all.contains(
                "node.toml:7:1: unknown key `notify_master` in [hooks]; tandem calls it `on_active`"
            ),
            "{all}"
        );
        assert!(
            all.contains("`notify_backup`") && all.contains("`on_standby`"),
            "{all}"
        );
        assert!(
            all.contains(
                "node.toml:9:1: unknown key `on_actve` in [hooks]; did you mean `on_active`?"
            ),
            "{all}"
        );
        assert!(all.contains("tandem calls it `timeout_ms`"), "{all}");
    }

    #[test]
    fn the_timeout_is_bounded() {
        for bad in ["0", "300001", "-5", "\"10s\""] {
            let (hooks, errors, _) = read(&format!("[hooks]\ntimeout_ms = {bad}\n"));
            assert!(hooks.is_none(), "{bad}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("node.toml:7:14: `timeout_ms`")),
                "{bad}: {errors:?}"
            );
        }
        let (hooks, errors, _) = read("[hooks]\ntimeout_ms = 300000\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(hooks.unwrap().timeout_ms, 300_000);
    }

    #[test]
    fn a_missing_or_unexecutable_program_is_a_warning_and_the_node_still_starts() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("notify.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let missing = dir.path().join("not-there");
        let (hooks, errors, warnings) = read(&format!(
            "[hooks]\non_active = [\"{}\"]\non_standby = [\"{}\"]\non_fault = [\"{}\"]\n",
            script.display(),
            missing.display(),
            dir.path().display()
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let hooks = hooks.unwrap();
        assert_eq!(
            hooks.command(HookEvent::Active).unwrap(),
            [script.display().to_string()]
        );
        let all = warnings.join("\n");
        assert!(
            all.contains("node.toml:7:14: `on_active`")
                && all.contains("not executable (chmod +x)"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:8:15: `on_standby`") && all.contains("No such file"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:9:13: `on_fault`") && all.contains("not a regular file"),
            "{all}"
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, _, warnings) = read(&format!(
            "[hooks]\non_active = [\"{}\"]\n",
            script.display()
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn hooks_round_trip_through_serde_and_default_when_absent() {
        let (hooks, _, _) =
            read("[hooks]\non_peer_lost = [\"/bin/true\", \"lost\"]\ntimeout_ms = 700\n");
        let hooks = hooks.unwrap();
        let json = serde_json::to_string(&hooks).unwrap();
        assert_eq!(serde_json::from_str::<Hooks>(&json).unwrap(), hooks);
        assert_eq!(
            serde_json::from_str::<Hooks>("{}").unwrap(),
            Hooks::default()
        );
    }
}
