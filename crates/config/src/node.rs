//! Reading `node.toml` (this node only; never replicated) into the validated [`NodeConfig`].

use crate::cluster::LOCAL_SECTIONS;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{
    At, Section, Val, boolean, choice, ip, label, port, string, table, to_toml_table,
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
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9080";
}

/// Where the cross-file checks point back into `node.toml`.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpans {
    pub address: At<IpAddr>,
    /// `None` when the default was used.
    pub admin_listen: Option<std::ops::Range<usize>>,
    pub state_dir: std::ops::Range<usize>,
    pub secret_file: std::ops::Range<usize>,
}

/// What cross-file checks need, known even when other parts of node.toml are wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeFacts {
    pub address: Option<IpAddr>,
    pub peer: Option<IpAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// `None` when the default was used.
    pub admin_span: Option<std::ops::Range<usize>>,
}

impl NodeFacts {
    pub(crate) fn of(node: &NodeConfig) -> Self {
        Self {
            address: Some(node.node.address),
            peer: node.node.peer,
            admin_listen: Some(node.admin.listen),
            admin_span: None,
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
    let mut top: Vec<&str> = vec!["node", "admin", "tuning"];
    top.extend(LOCAL_SECTIONS.iter().map(|(n, _)| *n));
    root.finish(ctx, &top, &misplaced_top);

    let mut facts = NodeFacts::default();
    let node = read_node(ctx, &root, base_dir, &mut facts);
    let admin = read_admin(ctx, root.get("admin"), base_dir, &mut facts);
    let tuning = read_tuning(ctx, root.get("tuning"));

    let mut local = LocalSettings::default();
    for (name, _) in LOCAL_SECTIONS {
        if let Some(v) = root.get(name)
            && let Some(t) = table(ctx, name, v)
        {
            local.sections.insert((*name).to_string(), to_toml_table(t));
        }
    }

    let (Some((node, mut spans)), Some((admin, admin_span)), Some(tuning)) = (node, admin, tuning)
    else {
        return Some(ParsedNode {
            config: None,
            spans: None,
            facts,
        });
    };
    spans.admin_listen = admin_span;
    check_ports(ctx, &node, &admin, &spans);
    let config = (!ctx.has_errors()).then_some(NodeConfig {
        node,
        admin,
        local,
        tuning,
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
    };
    let spans = NodeSpans {
        address: address?,
        admin_listen: None,
        state_dir: state_span,
        secret_file: secret_span,
    };
    Some((node, spans))
}

type AdminRead = (AdminConfig, Option<std::ops::Range<usize>>);

fn read_admin(
    ctx: &mut Ctx<'_>,
    v: Option<&Val<'_>>,
    base_dir: Option<&Path>,
    facts: &mut NodeFacts,
) -> Option<AdminRead> {
    let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    facts.admin_listen = Some(default_listen);
    let Some(v) = v else {
        return Some((
            AdminConfig {
                listen: default_listen,
                user: None,
                password_file: None,
            },
            None,
        ));
    };
    let t = table(ctx, "admin", v)?;
    let s = Section::new("[admin]", v.span(), t);
    s.finish(ctx, &["listen", "user", "password_file"], &|_| None);
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
        ctx.warn(
            span.as_ref().unwrap_or(&s.span),
            format!("admin API on {listen} is reachable from the network without authentication; set `user` and `password_file`"),
        );
    }
    Some((
        AdminConfig {
            listen,
            user,
            password_file: password_file?,
        },
        span,
    ))
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
