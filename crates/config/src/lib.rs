//! Loading, validating, versioning and planning the reload of tandem's two configuration files:
//! `cluster.toml` (replicated to the peer) and `node.toml` (this node only).
//!
//! Every problem is reported at once as `file:line:col: reason` ([`Diagnostics`]). An accepted
//! `cluster.toml` has a canonical form ([`canonical_toml`]) whose SHA-256 is its [`digest`],
//! and a generation number kept in `state_dir` ([`generation`]). What a new configuration
//! changes is one [`ReloadPlan`] (and a [`NodePlan`] for `node.toml`). The reference for both
//! files is `docs/configuration.md`.

mod access_log_section;
mod canonical;
mod cluster;
mod diag;
pub mod generation;
mod hooks_section;
mod loaded;
mod log_section;
mod metrics_section;
pub mod model;
mod node;
pub mod password;
mod plan;
mod reader;
mod report;
pub mod secret;
pub mod tls;
mod tuning;

pub use access_log_section::{
    AccessLogConfig, AccessLogPath, DEFAULT_ACCESS_LOG_QUEUE, MAX_ACCESS_LOG_QUEUE,
};
pub use canonical::{
    CANONICAL_VERSION, balance_name, canonical_toml, digest, endpoint, garp_form_name, mode_name,
    persistence_inline, persistence_mode_name, tls_inline,
};
pub use cluster::LOCAL_SECTIONS;
pub use cluster::MAX_CERTIFICATES_PER_SERVICE;
pub use cluster::defaults as cluster_defaults;
pub use diag::{Diagnostic, Diagnostics};
pub use hooks_section::{HookEvent, Hooks, MAX_HOOK_TIMEOUT_MS};
pub use loaded::{CheckedCertificate, Loaded, certificate_files};
pub use log_section::{LogConfig, LogFormat};
pub use metrics_section::MetricsConfig;
pub use model::*;
pub use node::defaults as node_defaults;
pub use plan::{
    Announce, HeartbeatTimings, NodePlan, ReloadPlan, Renamed, ServerChange, ServerPlan,
    ServiceChange, ServiceDelta, ServicePlan, Setting, VipPlan, effective_fallback, service_vips,
};
pub use report::{check_json, check_summary, persistence_json};

use cluster::{CertificateSource, ClusterSpans, ParsedCluster};
use diag::Ctx;
use node::{NodeFacts, NodeSpans, ParsedNode};
use std::path::Path;
pub use tls::ExpiredCertificates;

/// File names inside a config directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
pub const NODE_FILE: &str = "node.toml";

/// Now, as Unix seconds: the moment certificate validity is judged at by [`load`] and [`check`].
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parses and validates a cluster.toml text on its own. `file_name` names it in diagnostics. A TLS service's
/// certificate files cannot be found without a directory: use [`parse_cluster_in`] for those.
pub fn parse_cluster_str(text: &str, file_name: &str) -> Result<ClusterConfig, Diagnostics> {
    let source = CertificateSource {
        dir: None,
        now_unix: now_unix(),
        expired: ExpiredCertificates::Refuse,
    };
    let mut ctx = Ctx::new(file_name, text);
    match cluster::parse(&mut ctx, text, &source).and_then(|p| p.config) {
        Some(config) if !ctx.has_errors() => Ok(config),
        _ => Err(finish(ctx.diags)),
    }
}

/// Parses and validates a cluster.toml text whose certificate files are relative to `dir`, judging their
/// validity at `now_unix` (a certificate out of its dates is what `expired` says); also returns the certificates
/// read, and the warnings and alarms (no errors).
pub fn parse_cluster_in(
    text: &str,
    file_name: &str,
    dir: &Path,
    now_unix: i64,
    expired: ExpiredCertificates,
) -> Result<(ClusterConfig, Vec<CheckedCertificate>, Diagnostics), Diagnostics> {
    let source = CertificateSource {
        dir: Some(absolute_dir(dir)),
        now_unix,
        expired,
    };
    let mut ctx = Ctx::new(file_name, text);
    let parsed = cluster::parse(&mut ctx, text, &source);
    match parsed {
        Some(ParsedCluster {
            config: Some(config),
            certificates,
            ..
        }) if !ctx.has_errors() => Ok((config, certificates, finish(ctx.diags))),
        _ => Err(finish(ctx.diags)),
    }
}

/// Parses a cluster.toml text and checks it against this node's settings too (a ping node or
/// VIP equal to this node's or the peer's address, ...): what a secondary runs on a pushed
/// config before accepting it.
pub fn parse_cluster_for_node(
    text: &str,
    file_name: &str,
    node: &NodeConfig,
) -> Result<ClusterConfig, Diagnostics> {
    let source = CertificateSource {
        dir: None,
        now_unix: now_unix(),
        expired: ExpiredCertificates::Refuse,
    };
    parse_for_node(text, file_name, node, &source).map(|(config, _, _)| config)
}

/// [`parse_cluster_for_node`] with the certificate files relative to `dir` (a pushed config's staging
/// directory), judged at `now_unix` (a certificate out of its dates is what `expired` says: the secondary passes
/// [`ExpiredCertificates::Serve`], as the primary's daemon does, so the two never disagree on one); also returns
/// the certificates read, and the warnings and alarms (no errors).
pub fn parse_cluster_for_node_in(
    text: &str,
    file_name: &str,
    node: &NodeConfig,
    dir: &Path,
    now_unix: i64,
    expired: ExpiredCertificates,
) -> Result<(ClusterConfig, Vec<CheckedCertificate>, Diagnostics), Diagnostics> {
    let source = CertificateSource {
        dir: Some(absolute_dir(dir)),
        now_unix,
        expired,
    };
    parse_for_node(text, file_name, node, &source)
}

fn parse_for_node(
    text: &str,
    file_name: &str,
    node: &NodeConfig,
    source: &CertificateSource,
) -> Result<(ClusterConfig, Vec<CheckedCertificate>, Diagnostics), Diagnostics> {
    let mut ctx = Ctx::new(file_name, text);
    let parsed = cluster::parse(&mut ctx, text, source);
    if let Some(p) = &parsed {
        cross_check(&mut ctx, None, &p.spans, &NodeFacts::of(node));
    }
    match parsed {
        Some(ParsedCluster {
            config: Some(config),
            certificates,
            ..
        }) if !ctx.has_errors() => Ok((config, certificates, finish(ctx.diags))),
        _ => Err(finish(ctx.diags)),
    }
}

/// `dir` made absolute (as it is when relative to the working directory), so resolved certificate paths do
/// not depend on a later change of directory.
fn absolute_dir(dir: &Path) -> std::path::PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Parses and validates a node.toml text. Relative paths in it are resolved against
/// `base_dir` (the directory holding node.toml) when given.
pub fn parse_node_str(
    text: &str,
    file_name: &str,
    base_dir: Option<&Path>,
) -> Result<NodeConfig, Diagnostics> {
    let mut ctx = Ctx::new(file_name, text);
    match node::parse(&mut ctx, text, base_dir).and_then(|p| p.config) {
        Some(config) if !ctx.has_errors() => Ok(config),
        _ => Err(finish(ctx.diags)),
    }
}

/// Validates both files and records the generation in `state_dir` (what `tandem run` and `tandem reload`
/// use, with [`ExpiredCertificates::Serve`]).
pub fn load(
    cluster_path: &Path,
    node_path: &Path,
    expired: ExpiredCertificates,
) -> Result<Loaded, Diagnostics> {
    load_inner(cluster_path, node_path, true, now_unix(), expired)
}

/// Validates both files without writing anything; the generation is the one `load` would
/// assign (what `tandem check` uses: a certificate out of its dates is an error).
pub fn check(cluster_path: &Path, node_path: &Path) -> Result<Loaded, Diagnostics> {
    check_with(
        cluster_path,
        node_path,
        now_unix(),
        ExpiredCertificates::Refuse,
    )
}

/// [`check`] judging certificate validity at `now_unix` instead of the system clock.
pub fn check_at(
    cluster_path: &Path,
    node_path: &Path,
    now_unix: i64,
) -> Result<Loaded, Diagnostics> {
    check_with(
        cluster_path,
        node_path,
        now_unix,
        ExpiredCertificates::Refuse,
    )
}

/// [`check`] at `now_unix`, a certificate out of its dates being what `expired` says (`tandem release-vips`
/// must release the VIPs of a node whose certificate lapsed).
pub fn check_with(
    cluster_path: &Path,
    node_path: &Path,
    now_unix: i64,
    expired: ExpiredCertificates,
) -> Result<Loaded, Diagnostics> {
    load_inner(cluster_path, node_path, false, now_unix, expired)
}

/// `load` on `dir/cluster.toml` and `dir/node.toml`.
pub fn load_dir(dir: &Path, expired: ExpiredCertificates) -> Result<Loaded, Diagnostics> {
    load(&dir.join(CLUSTER_FILE), &dir.join(NODE_FILE), expired)
}

/// `check` on `dir/cluster.toml` and `dir/node.toml`.
pub fn check_dir(dir: &Path) -> Result<Loaded, Diagnostics> {
    check(&dir.join(CLUSTER_FILE), &dir.join(NODE_FILE))
}

fn finish(mut d: Diagnostics) -> Diagnostics {
    d.sort();
    d
}

fn read(path: &Path, diags: &mut Diagnostics) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            diags.errors.push(Diagnostic::whole_file(
                path.display().to_string(),
                format!("cannot read: {e}"),
            ));
            None
        }
    }
}

/// The directory relative paths in `node_path` are resolved against: the file's own directory
/// (`.` for a bare file name), made absolute.
pub fn node_base_dir(node_path: &Path) -> Option<std::path::PathBuf> {
    let parent = node_path.parent()?;
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).ok()
}

fn load_inner(
    cluster_path: &Path,
    node_path: &Path,
    persist: bool,
    now_unix: i64,
    expired: ExpiredCertificates,
) -> Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::default();
    let cluster_text = read(cluster_path, &mut diags);
    let node_text = read(node_path, &mut diags);
    let base_dir = node_base_dir(node_path);
    let certificate_source = CertificateSource {
        dir: node_base_dir(cluster_path),
        now_unix,
        expired,
    };

    let cluster_name = cluster_path.display().to_string();
    let node_name = node_path.display().to_string();
    let mut cctx = Ctx::new(cluster_name, cluster_text.as_deref().unwrap_or(""));
    let mut nctx = Ctx::new(node_name, node_text.as_deref().unwrap_or(""));
    let parsed_cluster: Option<ParsedCluster> = cluster_text
        .as_deref()
        .and_then(|t| cluster::parse(&mut cctx, t, &certificate_source));
    let parsed_node: Option<ParsedNode> = node_text
        .as_deref()
        .and_then(|t| node::parse(&mut nctx, t, base_dir.as_deref()));

    if let (Some(c), Some(n)) = (&parsed_cluster, &parsed_node) {
        cross_check(&mut cctx, Some(&mut nctx), &c.spans, &n.facts);
    }
    if let Some(ParsedNode {
        config: Some(config),
        spans: Some(spans),
        ..
    }) = &parsed_node
    {
        secret_check(&mut nctx, config, spans);
    }

    let mut result = None;
    if let (
        Some(ParsedCluster {
            config: Some(cluster_config),
            certificates,
            ..
        }),
        Some(ParsedNode {
            config: Some(node_config),
            spans: Some(node_spans),
            ..
        }),
        Some(text),
    ) = (parsed_cluster, parsed_node, cluster_text.clone())
        && !cctx.has_errors()
        && !nctx.has_errors()
    {
        let digest = digest(&cluster_config);
        let state_dir = &node_config.node.state_dir;
        let generation = if persist {
            generation::record(state_dir, &digest)
        } else {
            generation::peek(state_dir, &digest).or_else(|e| {
                // `check` must work on a machine without the state dir's permissions.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    Ok(1)
                } else {
                    Err(e)
                }
            })
        };
        match generation {
            Ok(generation) => {
                result = Some(Loaded {
                    cluster: cluster_config.clone(),
                    node: node_config.clone(),
                    cluster_path: cluster_path.to_path_buf(),
                    node_path: node_path.to_path_buf(),
                    cluster_text: text,
                    digest,
                    generation,
                    warnings: Vec::new(),
                    alarms: Vec::new(),
                    certificates: certificates.clone(),
                })
            }
            Err(e) => nctx.error(
                &node_spans.state_dir,
                format!(
                    "cannot record the config generation in {}: {e}",
                    generation::path(state_dir).display()
                ),
            ),
        }
    }
    diags.extend(cctx.diags);
    diags.extend(nctx.diags);
    let mut diags = finish(diags);
    match result {
        Some(mut loaded) if diags.errors.is_empty() => {
            loaded.warnings = std::mem::take(&mut diags.warnings);
            loaded.alarms = std::mem::take(&mut diags.alarms);
            Ok(loaded)
        }
        _ => Err(diags),
    }
}

/// Checks that need both files; they run even when either file has other errors.
fn cross_check(
    cctx: &mut Ctx<'_>,
    mut nctx: Option<&mut Ctx<'_>>,
    cspans: &ClusterSpans,
    node: &NodeFacts,
) {
    let node_file = nctx
        .as_ref()
        .map_or("node.toml".to_string(), |n| n.file().to_string());
    for p in &cspans.ping_nodes {
        if Some(p.v) == node.address {
            cctx.error(
                &p.span,
                format!(
                    "ping node {} is this node's own address ({node_file} [node] address)",
                    p.v
                ),
            );
        } else if Some(p.v) == node.peer {
            cctx.error(
                &p.span,
                format!(
                    "ping node {} is the peer ({node_file} [node] peer); ping nodes must be independent of the peer, e.g. the default gateway",
                    p.v
                ),
            );
        }
    }
    if !node.vip_networks.is_empty() {
        for s in &cspans.services {
            if node.vip_networks.iter().any(|n| n.contains(s.vip.v)) {
                continue;
            }
            let allowed: Vec<String> = node.vip_networks.iter().map(|n| n.to_string()).collect();
            cctx.error(
                &s.vip.span,
                format!(
                    "service \"{}\": VIP {} is outside this node's `vip_networks` ({node_file} [node] vip_networks = [{}]); \
                     this node will not claim it",
                    s.label,
                    s.vip.v,
                    allowed.join(", ")
                ),
            );
        }
    }
    for s in &cspans.services {
        let whose = if Some(s.vip.v) == node.address {
            "this node's own address"
        } else if Some(s.vip.v) == node.peer {
            "the peer's address"
        } else {
            continue;
        };
        cctx.error(
            &s.vip.span,
            format!(
                "service \"{}\": VIP {} is {whose} ({node_file}); a VIP must be a floating address",
                s.label, s.vip.v
            ),
        );
    }
    // The admin listener must not take a service's VIP:port.
    let Some(admin) = node.admin_listen else {
        return;
    };
    for s in &cspans.services {
        let same_ip = admin.ip() == s.vip.v
            || (admin.ip().is_unspecified() && admin.is_ipv4() == s.vip.v.is_ipv4());
        if !same_ip {
            continue;
        }
        if let Some(p) = s.ports.iter().find(|p| p.v == admin.port()) {
            let msg = format!(
                "admin `listen` {admin} takes port {} of service \"{}\"",
                p.v, s.label
            );
            match (nctx.as_deref_mut(), node.admin_span.clone()) {
                (Some(n), Some(span)) => n.error(&span, msg),
                _ => cctx.error(&p.span, msg),
            }
        }
    }
}

/// A missing or weak secret is reported by the daemon when it starts; `check` only warns, so
/// that an example directory without its secret still checks.
fn secret_check(nctx: &mut Ctx<'_>, node: &NodeConfig, spans: &NodeSpans) {
    match secret::load_secret(&node.node.secret_file) {
        Ok(_) => {}
        Err(e) if e.is_fatal() => nctx.error(&spans.secret_file, e.to_string()),
        Err(e) => nctx.warn(&spans.secret_file, e.to_string()),
    }
    if let Some(pw) = &node.admin.password_file {
        let span = spans
            .password_file
            .clone()
            .or(spans.admin_listen.clone())
            .unwrap_or(spans.secret_file.clone());
        if !pw.exists() {
            nctx.warn(
                &span,
                format!(
                    "{}: admin password file not found; state-changing requests over HTTP will be refused \
                     (the local socket still works); write it with `tandem password {}`",
                    pw.display(),
                    pw.display()
                ),
            );
        } else {
            match password::load_password_file(pw) {
                Ok(_) => {}
                // `check` as another user than the daemon's cannot read a 0600 file.
                Err(e @ password::PasswordError::Io { .. }) => nctx.warn(&span, e.to_string()),
                // Open to others, or a clear-text password: never serve with it.
                Err(e) => nctx.error(&span, e.to_string()),
            }
        }
    }
}

/// node.toml for the section tests: a valid `[node]` and `[admin]` (8 lines), then `extra`.
#[cfg(test)]
pub(crate) fn test_node(extra: &str) -> Result<NodeConfig, Diagnostics> {
    let text = format!(
        "[node]\nname = \"lb1\"\nrole = \"primary\"\ninterface = \"eth0\"\naddress = \"192.168.1.21\"\n\
         peer = \"192.168.1.22\"\n[admin]\nlisten = \"127.0.0.1:9080\"\n{extra}"
    );
    parse_node_str(&text, "node.toml", None)
}
