//! Reading `node.toml` (this node only; never replicated) into the validated [`NodeConfig`].

use crate::cluster::LOCAL_SECTIONS;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{
    At, Section, Val, array, boolean, choice, ip, label, port, socket_addr, string, table,
    to_toml_table,
};
use crate::tuning::{TUNING_KEYS, read_tuning};
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
    pub const HOOK_TIMEOUT_MS: u64 = crate::hooks_section::DEFAULT_TIMEOUT_MS;
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
    let hooks = crate::hooks_section::read_hooks(ctx, root.get("hooks"));
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
        Some(l) => socket_addr(ctx, "listen", l, "\"127.0.0.1:9080\" or \"[::1]:9080\"")
            .map(|addr| (addr.v, Some(addr.span))),
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
