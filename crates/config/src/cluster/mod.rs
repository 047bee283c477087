//! Reading `cluster.toml` into the validated [`ClusterConfig`], reporting every problem at once.
//! This module reads the file's top level and `[cluster]`; each other section has a file here.

mod health;
mod heartbeat;
mod misplaced;
mod persistence;
mod proxy;
mod servers;
mod service;
mod tls_section;

pub mod defaults;

pub(crate) use heartbeat::HEARTBEAT_KEYS;
pub use misplaced::LOCAL_SECTIONS;
pub(crate) use servers::fmt_ip;
pub(crate) use tls_section::CertificateSource;
pub use tls_section::MAX_CERTIFICATES_PER_SERVICE;

use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{At, Section, label, table};
use health::{HealthInput, read_health, resolve_health};
use heartbeat::read_heartbeat;
use misplaced::misplaced_in_cluster;
use proxy::{ProxyInput, read_fallback, read_proxy, resolve_proxy};
use service::{ServiceDefaults, ServiceDraft, check_services, read_service};
use std::net::IpAddr;
use toml::de::{DeTable, DeValue};

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

const TOP_KEYS: &[&str] = &[
    "cluster",
    "heartbeat",
    "health_check",
    "proxy",
    "fallback",
    "service",
];

pub(crate) struct ParsedCluster {
    /// `None` when cluster.toml has errors.
    pub config: Option<ClusterConfig>,
    /// Known even when there are errors (except syntax errors), for the cross-file checks.
    pub spans: ClusterSpans,
    /// Every certificate file read (also when there are errors elsewhere).
    pub certificates: Vec<crate::loaded::CheckedCertificate>,
}

/// Parses and validates `cluster.toml`; `None` when `ctx` holds at least one error.
pub(crate) fn parse(
    ctx: &mut Ctx<'_>,
    src: &str,
    certificates: &CertificateSource,
) -> Option<ParsedCluster> {
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
                    drafts.push(read_service(ctx, item, &defaults, certificates));
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
    let checked = drafts
        .iter_mut()
        .flat_map(|d| std::mem::take(&mut d.certificates))
        .collect();
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
    Some(ParsedCluster {
        config,
        spans,
        certificates: checked,
    })
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
