//! Live reload's runtimes, as the config crate's [`ReloadPlan`] decides them: from the running services and a plan,
//! the next set of service runtimes and the kept servers whose health check restarts. No I/O and no comparison of
//! configurations: `lib.rs` swaps the set in, re-points the listeners and starts or stops the checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tandem_config::model::{ClusterConfig, FallbackServer, Service};
use tandem_config::{ReloadPlan, ServerChange, ServiceChange, ServiceDelta, effective_fallback};
use tokio::sync::Semaphore;

use crate::balance::Balancer;
use crate::metrics::ServiceMetrics;
use crate::state::{Counters, ServerRuntime, ServiceRuntime};
use crate::tls::TlsService;

/// The TLS side of the services a reload builds, by label (built by the caller, which reads the certificate files):
/// only services with `tls` in HTTP mode that are added or changed have an entry; `Err` says why it could not be
/// built.
pub(crate) type TlsBuilt = HashMap<String, Result<Arc<TlsService>, String>>;

/// The TLS side of `svc` from `built`: `Ok(None)` for a service without TLS.
fn tls_for(svc: &Service, built: &TlsBuilt) -> Result<Option<Arc<TlsService>>, String> {
    if !wants_tls(svc) {
        return Ok(None);
    }
    match built.get(&svc.label) {
        Some(Ok(tls)) => Ok(Some(tls.clone())),
        Some(Err(e)) => Err(e.clone()),
        None => Err("its TLS configuration was not built".into()),
    }
}

/// Whether `svc` terminates TLS (HTTP mode with `tls` set).
pub(crate) fn wants_tls(svc: &Service) -> bool {
    svc.tls.is_some() && svc.mode == tandem_config::model::Mode::Http
}

/// What the plan makes of the running services.
pub(crate) struct Next {
    /// The runtimes to serve, by label: kept ones as they are, the others new.
    pub(crate) services: BTreeMap<String, Arc<ServiceRuntime>>,
    /// Kept server runtimes whose health check restarts (new check settings or a new check address).
    pub(crate) restart_checks: Vec<Arc<ServerRuntime>>,
    /// Services whose TLS side could not be built, and why: a changed one keeps its running runtime, an added one is
    /// not served.
    pub(crate) tls_errors: Vec<(String, String)>,
}

/// The runtimes `cfg` is served with, given the running ones and the plan from the running configuration to `cfg`.
///
/// A plan that does not fit the running services (a caller's bug: `lib.rs` checks the plan's old side first) never
/// leaves `cfg` half served: a service the plan keeps or changes but that is not running is built new, and a service
/// of `cfg` the plan does not name is added.
pub(crate) fn next_services(
    running: &BTreeMap<String, Arc<ServiceRuntime>>,
    cfg: &ClusterConfig,
    plan: &ReloadPlan,
    tls: &TlsBuilt,
) -> Next {
    let mut next = Next {
        services: BTreeMap::new(),
        restart_checks: Vec::new(),
        tls_errors: Vec::new(),
    };
    let cluster_fallback = cfg.fallback.as_ref();
    for sp in &plan.services {
        if sp.change == ServiceChange::Removed {
            continue;
        }
        let Some(svc) = first_with_label(cfg, &sp.label) else {
            tracing::error!(service = %sp.label, "the reload plan names a service the new configuration lacks; ignored");
            continue;
        };
        let old = running.get(&sp.label);
        if sp.change == ServiceChange::Unchanged
            && let Some(old) = old
        {
            next.services.insert(sp.label.clone(), old.clone());
            continue;
        }
        let svc_tls = match tls_for(svc, tls) {
            Ok(t) => t,
            Err(e) => {
                match old {
                    Some(old) => {
                        tracing::error!(service = %sp.label, error = %e, "TLS cannot be set up; the service keeps its running configuration");
                        next.services.insert(sp.label.clone(), old.clone());
                    }
                    None => {
                        tracing::error!(service = %sp.label, error = %e, "TLS cannot be set up; the service is not served")
                    }
                }
                next.tls_errors.push((sp.label.clone(), e));
                continue;
            }
        };
        let rt = match (&sp.change, old) {
            (ServiceChange::Changed(delta), Some(old)) => Arc::new(changed_service(
                svc,
                old,
                delta,
                cluster_fallback,
                &mut next.restart_checks,
                svc_tls,
            )),
            (ServiceChange::Added, None) => Arc::new(new_service(svc, cluster_fallback, svc_tls)),
            (change, _) => {
                tracing::error!(service = %sp.label, ?change, "the reload plan does not fit the running services; the service is built anew");
                Arc::new(new_service(svc, cluster_fallback, svc_tls))
            }
        };
        next.services.insert(sp.label.clone(), rt);
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for svc in &cfg.services {
        if !seen.insert(&svc.label) {
            tracing::error!(service = %svc.label, "duplicate service label; ignoring the second one");
        } else if !next.services.contains_key(&svc.label)
            && !next.tls_errors.iter().any(|(l, _)| *l == svc.label)
        {
            tracing::error!(service = %svc.label, "the reload plan does not name this service; it is added");
            match tls_for(svc, tls) {
                Ok(svc_tls) => {
                    next.services.insert(
                        svc.label.clone(),
                        Arc::new(new_service(svc, cluster_fallback, svc_tls)),
                    );
                }
                Err(e) => next.tls_errors.push((svc.label.clone(), e)),
            }
        }
    }
    next
}

/// The configuration the proxy records as served after a reload to `cfg` from `served`: `cfg`, except that a
/// service whose TLS side could not be built keeps its entry from `served` (or is left out when it is new), as its
/// runtime does. So the next plan sees it as changed (or added) again and a reload with the same files retries it.
pub(crate) fn served_config(
    served: &ClusterConfig,
    cfg: &ClusterConfig,
    tls_errors: &[(String, String)],
) -> ClusterConfig {
    let failed = |label: &str| tls_errors.iter().any(|(l, _)| l == label);
    let mut seen: HashSet<&str> = HashSet::new();
    let services = cfg
        .services
        .iter()
        .filter_map(|svc| {
            // Only the first of a repeated label is served; the others stay as written.
            if !seen.insert(&svc.label) || !failed(&svc.label) {
                return Some(svc.clone());
            }
            first_with_label(served, &svc.label).cloned()
        })
        .collect();
    ClusterConfig {
        services,
        ..cfg.clone()
    }
}

/// The first service labelled `label` (the proxy serves the first of a repeated label, as the plan does).
fn first_with_label<'a>(cfg: &'a ClusterConfig, label: &str) -> Option<&'a Service> {
    cfg.services.iter().find(|s| s.label == label)
}

/// A service new to this proxy: new servers (down until checked), counters and limit.
fn new_service(
    svc: &Service,
    cluster_fallback: Option<&FallbackServer>,
    tls: Option<Arc<TlsService>>,
) -> ServiceRuntime {
    let servers = svc
        .servers
        .iter()
        .map(|s| {
            Arc::new(ServerRuntime::new(
                s.label.clone(),
                s.address,
                s.port,
                s.weight,
            ))
        })
        .collect();
    let max = svc.proxy.max_connections;
    service_runtime(
        svc,
        servers,
        Figures::default(),
        new_limit(max),
        cluster_fallback,
        tls,
    )
}

/// A changed service: a new runtime with the old counters, the servers as the plan says, and the old connection
/// limit when `keeps_limit`.
fn changed_service(
    svc: &Service,
    old: &ServiceRuntime,
    delta: &ServiceDelta,
    cluster_fallback: Option<&FallbackServer>,
    restart_checks: &mut Vec<Arc<ServerRuntime>>,
    tls: Option<Arc<TlsService>>,
) -> ServiceRuntime {
    let servers = svc
        .servers
        .iter()
        .map(|s| {
            let change = delta
                .servers
                .iter()
                .find(|p| p.label == s.label)
                .map(|p| p.change);
            let prev = old.server(&s.label);
            match (change, prev) {
                (
                    Some(ServerChange::Kept {
                        weight,
                        check_restarts,
                    }),
                    Some(p),
                ) => {
                    if let Some(w) = weight {
                        p.weight.store(w, Ordering::Relaxed);
                    }
                    if check_restarts {
                        restart_checks.push(p.clone());
                    }
                    p.clone()
                }
                (change, prev) => {
                    if !matches!(change, Some(ServerChange::Added | ServerChange::Replaced)) {
                        tracing::error!(service = %svc.label, server = %s.label, ?change, "the reload plan does not fit the running servers; the server is built anew");
                    }
                    let rt = ServerRuntime::new(s.label.clone(), s.address, s.port, s.weight);
                    // Replaced (new address or port): the operator's Drain/Halt/Online still applies.
                    if let Some(p) = prev {
                        rt.set_admin_state(p.admin_state());
                    }
                    Arc::new(rt)
                }
            }
        })
        .collect();
    let limit = if delta.keeps_limit {
        old.limit.clone()
    } else {
        new_limit(svc.proxy.max_connections)
    };
    let kept = Figures {
        counters: old.counters.clone(),
        failures: old.failures.clone(),
        metrics: old.metrics.clone(),
    };
    service_runtime(svc, servers, kept, limit, cluster_fallback, tls)
}

/// The connection-limit semaphore for `max` connections (0 = unlimited).
fn new_limit(max: u32) -> Option<Arc<Semaphore>> {
    (max > 0).then(|| Arc::new(Semaphore::new(max as usize)))
}

/// A service's counters and metrics, carried from runtime to runtime across reloads.
#[derive(Default)]
struct Figures {
    counters: Arc<Counters>,
    failures: Arc<AtomicU64>,
    metrics: Arc<ServiceMetrics>,
}

fn service_runtime(
    svc: &Service,
    servers: Vec<Arc<ServerRuntime>>,
    figures: Figures,
    limit: Option<Arc<Semaphore>>,
    cluster_fallback: Option<&FallbackServer>,
    tls: Option<Arc<TlsService>>,
) -> ServiceRuntime {
    let fallback = effective_fallback(svc, cluster_fallback);
    // A cookie set over TLS is sent back over TLS only.
    let secure = if tls.is_some() { "; Secure" } else { "" };
    let fallback_runtime = fallback.as_ref().map(|f| {
        Arc::new(ServerRuntime::new(
            "fallback".into(),
            f.address,
            Some(f.port),
            1,
        ))
    });
    ServiceRuntime {
        cfg: svc.clone(),
        servers,
        balancer: Mutex::new(Balancer::new(svc.balance)),
        counters: figures.counters,
        failures: figures.failures,
        metrics: figures.metrics,
        limit,
        fallback,
        fallback_runtime,
        bind_errors: Mutex::new(Vec::new()),
        cookies: svc
            .servers
            .iter()
            .map(|s| {
                ::http::HeaderValue::from_str(&format!(
                    "{}={}; Path=/{secure}",
                    svc.persistence.cookie_name,
                    crate::http::encode_cookie_value(&s.label)
                ))
                .ok()
            })
            .collect(),
        tls,
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
