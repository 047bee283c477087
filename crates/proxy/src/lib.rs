//! tandem's data plane: the virtual services of `cluster.toml`, served on tokio.
//!
//! This crate owns the listeners on every VIP:port, TCP mode (a byte relay with half-close) and HTTP mode (the
//! native engine or hyper, behind the [`HttpEngine`] seam), balancing ([`balance`]), health checks ([`health`]),
//! persistence (tables from `tandem-stick`, or the http cookie), the per-server Drain/Halt/Online buttons, live
//! reload, and the counters that the status view and the metrics endpoint read.
//!
//! # Behaviour worth knowing
//! - **Listeners** are bound with IP_FREEBIND (IPV6_FREEBIND) and SO_REUSEADDR, so a VIP that is not (yet) on this
//!   node can be bound. A port that cannot be bound is recorded on its service ([`ServiceStatus::bind_errors`]) and
//!   logged naming the service; every other service runs. A reload retries missing listeners.
//! - **Health**: every real server starts **down** and takes traffic once it has passed `rise` consecutive checks
//!   (at the default 2 s interval and rise 2, a fresh start needs 2-4 s before a service answers). It goes down
//!   after `fall` consecutive failures. Checks are spread over the first interval so 69 servers do not fire at once.
//!   A probe never outlives 90% of the interval.
//! - **Connection limit** (`max_connections`, per service): at the limit the service stops accepting; further
//!   clients wait in the kernel's listen backlog (up to [`listener::BACKLOG`], capped by `net.core.somaxconn`) and
//!   are accepted as connections end; beyond the backlog the kernel drops SYNs and clients retry. Nobody is reset.
//! - **Retry**: a failed connect to the chosen server moves the client to another usable server (each tried once),
//!   so a connect failure reaches the client only when no usable server is left.
//! - **Weight 0** takes no new connections but, like Drain, still serves clients persistent to it.
//! - **Drain** (and weight 0): only persistent clients get new connections; for `last-successful` the shared entry
//!   moves away from a drained server, since the point is to move the writer. **Halt**: no new connections;
//!   existing ones finish, or are closed at once with `close_existing`. Admin states survive reloads.
//! - **Timeouts** (per service `proxy` settings): `connect_timeout_ms` bounds each connect; in TCP mode a
//!   connection with no byte moving in either direction is closed after the smaller of `client_timeout_ms` and
//!   `server_timeout_ms` (after `server_timeout_ms` once the client has half-closed, `client_timeout_ms` once the
//!   server has); a peer that stops reading counts as silence too. In HTTP mode
//!   `server_timeout_ms` bounds the wait for a response (504), `client_timeout_ms` closes idle keep-alive
//!   connections, and a request head must arrive within min(10 s, client timeout).
//! - **Counters**: `bytes_in` = bytes from clients, `bytes_out` = bytes to clients. In TCP mode a server's
//!   `current` counts connections; in HTTP mode it counts requests in flight (what least-connections balances).
//! - **Reload** ([`Proxy::reload`]): unchanged services are not touched (same runtime, connections, listeners,
//!   stick table); changed services get a new runtime that keeps the counters, unchanged servers (health state,
//!   counters, admin state) and the listeners of VIP:ports that remain; established connections are never cut by a
//!   reload. Removed services stop accepting; their established connections finish.
//! - **Shutdown** ([`Proxy::shutdown`]) closes the listeners, stops the checks and closes established connections.
//! - **Stick tables**: `source-ip` and `last-successful` services get a table in the shared [`SharedStickTables`]
//!   (reconciled on every reload, entries naming removed servers dropped, expired entries swept every second);
//!   all `now` values come from [`Proxy::clock`], which the replication session must share.
//!
//! # Modules
//! Each imports only modules listed above it (no import circles); `lib.rs` ties them together.
//! - `shared.rs`: the `lock` helper and `thread_tag`; imports nothing of the crate.
//! - [`balance`], [`listener`], `woken.rs` (futures polled only when woken): leaves.
//! - `buffer.rs`: the per-thread pool of read buffers, the short-read rule (`read_now`) and the cursor `Buf`.
//! - `pool/`: idle upstream connections per real server (`mod.rs`), each engine's pooled connection type
//!   (`hyper_conn.rs`, `h1_conn.rs`).
//! - [`state`]: [`ServiceRuntime`], [`ServerRuntime`], counters, admin state; holds the pools, knows no engine.
//! - [`health`]: the checks. `status.rs`: the [`ProxyStatus`] snapshot.
//! - [`relay`]: TCP mode's relay: what the relays share (`mod.rs`), in the connection task ([`relay::tasks`]), or on
//!   relay threads (`threads.rs`) running poll loops (`poll.rs`) or io_uring rings (`uring.rs`, `local_yield.rs`).
//! - `ctx.rs`: [`ConnCtx`], what every connection task needs (stick tables, clock, shutdown, relay threads).
//! - `route.rs`: server choice for one client (persistence, balancing, retry).
//! - `tcp.rs`: TCP mode's connection: connect with retry, then relay.
//! - `http/`: the [`HttpEngine`] seam and shared helpers (`mod.rs`); the hyper engine (`hyper_engine.rs`, with its
//!   counting I/O in `io.rs`).
//! - `h1/`: the native HTTP/1.1 engine ([`H1Engine`], `mod.rs`): the connection (`conn.rs`), one request on one
//!   upstream connection (`forward.rs`), bodies (`body.rs`), deadlines (`timer.rs`), writes (`io.rs`), heads
//!   (`head.rs`), chunked framing (`chunked.rs`), its threads (`threads.rs`) and batched io_uring sends
//!   (`batch.rs`).
//! - `lib.rs`: [`Proxy`]: start ([`ProxyOptions`]), reload, listeners and accept loops, buttons, status, shutdown.
//!
//! # Public API (what the daemon calls)
//! [`Proxy::start`] / [`Proxy::start_with_options`] with [`ProxyOptions`] (the HTTP engine, [`TcpRelay`], relay
//! yield; [`Proxy::start_with`] and [`Proxy::start_with_relay`] are shorthands), [`Proxy::reload`] -> [`ReloadReport`],
//! [`Proxy::set_server_state`] with [`AdminState`], [`Proxy::status`] -> [`ProxyStatus`] (serde),
//! [`Proxy::service`] (live atomic counters for metrics), [`Proxy::stick_tables`], [`Proxy::clock`],
//! [`Proxy::shutdown`].

pub mod balance;
mod buffer;
mod ctx;
mod h1;
pub mod health;
mod http;
pub mod listener;
mod pool;
pub mod relay;
mod route;
mod shared;
pub mod state;
mod status;
mod tcp;
mod woken;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_config::model::{ClusterConfig, HealthCheckConfig, Mode, PersistenceMode, Service};
use tandem_stick::{Clock, TableSpec};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

pub use ctx::{ConnCtx, SharedStickTables};
pub use h1::H1Engine;
pub use http::hyper_engine::HyperEngine;
pub use http::{HttpEngine, unavailable_page};
pub use state::{AdminState, LastCheck, ServerRuntime, ServiceRuntime};
pub use status::{ProxyStatus, ServerStatus, ServiceStatus};

use crate::balance::Balancer;
use crate::shared::lock;

/// How TCP-mode connections are relayed once both sides are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRelay {
    /// In the tokio task of the connection.
    Tasks,
    /// On this many dedicated threads, each one poll loop over its pairs: less CPU per message (no task wake-up per
    /// read); the connection's task only waits for the end, a halt with close or shutdown.
    Loops(usize),
    /// On this many dedicated threads, each one io_uring ring over its pairs: as `Loops`, with the `recv`/`send`
    /// system calls batched into one `io_uring_enter` per batch. Where io_uring cannot be set up (old kernel,
    /// `kernel.io_uring_disabled`, a container's seccomp filter) it falls back to `Loops`, with a warning.
    Uring(usize),
}

/// How the proxy serves, chosen by the caller (the library reads no environment variables).
#[derive(Clone)]
pub struct ProxyOptions {
    /// The clock of the stick tables' `now` values: the one every user of the tables shares.
    pub clock: Clock,
    /// The HTTP engine of HTTP-mode services.
    pub http_engine: Arc<dyn HttpEngine>,
    /// How TCP-mode connections are relayed.
    pub tcp_relay: TcpRelay,
    /// With [`TcpRelay::Uring`]: a ring may yield the CPU to a process on this host (a local backend) before it
    /// sleeps, so that the backend answers a whole batch first; it stops by itself for a while when a yield lasts
    /// far longer than the answers should (a busy neighbour). Off: never yield.
    pub relay_yield: bool,
}

impl Default for ProxyOptions {
    /// A fresh clock, the native HTTP engine in the runtime's tasks, TCP relayed in the connection tasks, relay
    /// yield on: what [`Proxy::start`] uses.
    fn default() -> Self {
        ProxyOptions {
            clock: Clock::new(),
            http_engine: Arc::new(H1Engine::in_runtime()),
            tcp_relay: TcpRelay::Tasks,
            relay_yield: true,
        }
    }
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("clock", &self.clock)
            .field("tcp_relay", &self.tcp_relay)
            .field("relay_yield", &self.relay_yield)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the proxy must be started from within a tokio runtime")]
    NoRuntime,
    #[error("cannot start the TCP relay threads: {0}")]
    RelayThreads(std::io::Error),
}

/// `set_server_state` named a service or server that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    #[error("no service {0:?}")]
    Service(String),
    #[error("service {service:?} has no server {server:?}")]
    Server { service: String, server: String },
}

/// What a reload did, by service label.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    /// Listeners that could not be bound: (service, address, error).
    pub bind_errors: Vec<(String, SocketAddr, String)>,
}

/// The running data plane. Cheap to clone; all clones control the same proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ConnCtx,
    engine: Arc<dyn HttpEngine>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cfg: Option<Arc<ClusterConfig>>,
    services: BTreeMap<String, Arc<ServiceRuntime>>,
    /// Health-check tasks by (service, server) runtime identity.
    checks: HashMap<usize, Check>,
    listeners: HashMap<SocketAddr, ListenerHandle>,
}

struct Check {
    cancel: CancellationToken,
    cfg: HealthCheckConfig,
    addr: SocketAddr,
    /// Keeps the runtime alive so the pointer key stays unique while the check runs.
    _server: Arc<ServerRuntime>,
}

struct ListenerHandle {
    service: watch::Sender<Arc<ServiceRuntime>>,
    cancel: CancellationToken,
    socket: Arc<listener::Listener>,
}

impl ListenerHandle {
    /// Stop listening now. shutdown(2) takes the socket out of LISTEN synchronously, so the same VIP:port can be
    /// bound again at once (a reload that removes and re-adds it), while the accept task exits on its own.
    fn close(&self) {
        self.socket.shutdown();
        self.cancel.cancel();
    }
}

impl Proxy {
    /// Bind every listener and start the health checks, with the default [`ProxyOptions`].
    pub fn start(cfg: Arc<ClusterConfig>, stick: SharedStickTables) -> Result<Proxy, StartError> {
        Self::start_with_options(cfg, stick, ProxyOptions::default())
    }

    /// As [`Proxy::start`], with the clock every user of `stick` shares and the HTTP engine to use; TCP mode relays
    /// in the connection tasks.
    pub fn start_with(
        cfg: Arc<ClusterConfig>,
        stick: SharedStickTables,
        clock: Clock,
        engine: Arc<dyn HttpEngine>,
    ) -> Result<Proxy, StartError> {
        Self::start_with_relay(cfg, stick, clock, engine, TcpRelay::Tasks)
    }

    /// As [`Proxy::start_with`], choosing how TCP mode relays (relay yield on).
    pub fn start_with_relay(
        cfg: Arc<ClusterConfig>,
        stick: SharedStickTables,
        clock: Clock,
        engine: Arc<dyn HttpEngine>,
        tcp: TcpRelay,
    ) -> Result<Proxy, StartError> {
        Self::start_with_options(
            cfg,
            stick,
            ProxyOptions {
                clock,
                http_engine: engine,
                tcp_relay: tcp,
                relay_yield: true,
            },
        )
    }

    /// Bind every listener and start the health checks, serving as `options` say.
    pub fn start_with_options(
        cfg: Arc<ClusterConfig>,
        stick: SharedStickTables,
        options: ProxyOptions,
    ) -> Result<Proxy, StartError> {
        let ProxyOptions {
            clock,
            http_engine: engine,
            tcp_relay: tcp,
            relay_yield,
        } = options;
        tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let relay_loops = match tcp {
            TcpRelay::Tasks => None,
            TcpRelay::Loops(threads) => Some(Arc::new(
                relay::threads::RelayLoops::start(threads).map_err(StartError::RelayThreads)?,
            )),
            TcpRelay::Uring(threads) => Some(Arc::new(
                match relay::threads::RelayLoops::start_uring(threads, relay_yield) {
                    Ok(loops) => loops,
                    Err(e) => {
                        tracing::warn!(error = %e, "io_uring unavailable; TCP mode relays on poll loops instead");
                        relay::threads::RelayLoops::start(threads)
                            .map_err(StartError::RelayThreads)?
                    }
                },
            )),
        };
        let ctx = ConnCtx {
            stick,
            clock,
            shutdown: CancellationToken::new(),
            relay_loops,
        };
        let proxy = Proxy {
            inner: Arc::new(Inner {
                ctx,
                engine,
                state: Mutex::new(State::default()),
            }),
        };
        proxy.reload(cfg);
        proxy.spawn_expiry();
        Ok(proxy)
    }

    /// How TCP mode relays: as asked in `start_with_relay`, except `Uring` where io_uring could not be set up
    /// (then `Loops`).
    pub fn tcp_relay(&self) -> TcpRelay {
        match &self.inner.ctx.relay_loops {
            None => TcpRelay::Tasks,
            Some(loops) if loops.uring => TcpRelay::Uring(loops.len()),
            Some(loops) => TcpRelay::Loops(loops.len()),
        }
    }

    /// The clock of the stick tables' `now` values (the replication session must use the same).
    pub fn clock(&self) -> Clock {
        self.inner.ctx.clock
    }

    pub fn stick_tables(&self) -> SharedStickTables {
        self.inner.ctx.stick.clone()
    }

    /// The configuration currently served.
    pub fn config(&self) -> Option<Arc<ClusterConfig>> {
        lock(&self.inner.state).cfg.clone()
    }

    /// Apply a new, already validated configuration. See the crate doc for what is kept.
    pub fn reload(&self, cfg: Arc<ClusterConfig>) -> ReloadReport {
        let mut st = lock(&self.inner.state);
        let mut report = ReloadReport::default();
        let mut next: BTreeMap<String, Arc<ServiceRuntime>> = BTreeMap::new();
        for svc in &cfg.services {
            if next.contains_key(&svc.label) {
                tracing::error!(service = %svc.label, "duplicate service label; ignoring the second one");
                continue;
            }
            let old = st.services.get(&svc.label);
            let cluster_fallback = cfg.fallback.clone();
            let rt = match old {
                Some(old)
                    if old.cfg == *svc
                        && old.fallback == effective_fallback(svc, cluster_fallback.clone()) =>
                {
                    report.unchanged.push(svc.label.clone());
                    old.clone()
                }
                Some(old) => {
                    report.changed.push(svc.label.clone());
                    Arc::new(build_service(svc, Some(old), cluster_fallback))
                }
                None => {
                    report.added.push(svc.label.clone());
                    Arc::new(build_service(svc, None, cluster_fallback))
                }
            };
            next.insert(svc.label.clone(), rt);
        }
        report.removed = st
            .services
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();

        self.reconcile_stick(&cfg);
        self.reconcile_checks(&mut st, &next);
        self.reconcile_listeners(&mut st, &next, &mut report);
        for label in &report.removed {
            tracing::info!(service = %label, "service removed; established connections finish");
        }
        st.services = next;
        st.cfg = Some(cfg);
        tracing::info!(
            added = report.added.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            removed = report.removed.len(),
            "proxy configuration applied"
        );
        report
    }

    fn reconcile_stick(&self, cfg: &ClusterConfig) {
        let specs = cfg
            .services
            .iter()
            .filter_map(|s| match s.persistence.mode {
                PersistenceMode::SourceIp | PersistenceMode::LastSuccessful => Some((
                    s.label.clone(),
                    TableSpec::from_config(
                        s.persistence.timeout_s,
                        s.persistence.table_size.max(1),
                    ),
                )),
                PersistenceMode::None | PersistenceMode::HttpCookie => None,
            });
        let now = self.inner.ctx.clock.now_ms();
        let mut tables = lock(&self.inner.ctx.stick);
        tables.reconcile(specs, now);
        for s in &cfg.services {
            let labels: Vec<&str> = s.servers.iter().map(|r| r.label.as_str()).collect();
            tables.retain_servers(&s.label, &labels);
        }
    }

    fn reconcile_checks(&self, st: &mut State, next: &BTreeMap<String, Arc<ServiceRuntime>>) {
        let mut wanted: HashMap<
            usize,
            (String, Arc<ServerRuntime>, SocketAddr, HealthCheckConfig),
        > = HashMap::new();
        for rt in next.values() {
            let port0 = rt.cfg.ports.first().copied().unwrap_or(0);
            for s in &rt.servers {
                let key = Arc::as_ptr(s) as usize;
                wanted.insert(
                    key,
                    (
                        rt.cfg.label.clone(),
                        s.clone(),
                        s.target(port0),
                        rt.cfg.health_check.clone(),
                    ),
                );
            }
        }
        st.checks.retain(|key, check| {
            let keep = wanted
                .get(key)
                .is_some_and(|(_, _, addr, cfg)| *addr == check.addr && *cfg == check.cfg);
            if !keep {
                check.cancel.cancel();
            }
            keep
        });
        let mut new: Vec<_> = wanted
            .into_iter()
            .filter(|(k, _)| !st.checks.contains_key(k))
            .collect();
        new.sort_by(|a, b| (&a.1.0, &a.1.1.label).cmp(&(&b.1.0, &b.1.1.label)));
        let count = new.len();
        for (i, (key, (service, server, addr, cfg))) in new.into_iter().enumerate() {
            let cancel = self.inner.ctx.shutdown.child_token();
            let delay =
                health::first_check_delay(i, count, Duration::from_millis(cfg.interval_ms.max(1)));
            tokio::spawn(health::run_checks(
                service,
                server.clone(),
                addr,
                cfg.clone(),
                delay,
                cancel.clone(),
            ));
            st.checks.insert(
                key,
                Check {
                    cancel,
                    cfg,
                    addr,
                    _server: server,
                },
            );
        }
    }

    fn reconcile_listeners(
        &self,
        st: &mut State,
        next: &BTreeMap<String, Arc<ServiceRuntime>>,
        report: &mut ReloadReport,
    ) {
        let mut wanted: HashMap<SocketAddr, Arc<ServiceRuntime>> = HashMap::new();
        for rt in next.values() {
            rt.clear_bind_errors();
            for &port in &rt.cfg.ports {
                let addr = SocketAddr::new(rt.cfg.vip, port);
                if wanted.contains_key(&addr) {
                    let e = format!("{addr} is already used by another service");
                    tracing::error!(service = %rt.cfg.label, %addr, "cannot listen: {e}");
                    rt.add_bind_error(e.clone());
                    report.bind_errors.push((rt.cfg.label.clone(), addr, e));
                    continue;
                }
                wanted.insert(addr, rt.clone());
            }
        }
        st.listeners.retain(|addr, l| match wanted.get(addr) {
            Some(rt) => {
                l.service.send_if_modified(|cur| {
                    if Arc::ptr_eq(cur, rt) {
                        false
                    } else {
                        *cur = rt.clone();
                        true
                    }
                });
                true
            }
            None => {
                l.close();
                false
            }
        });
        for (addr, rt) in wanted {
            if st.listeners.contains_key(&addr) {
                continue;
            }
            match listener::bind(addr) {
                Ok(l) => {
                    let socket = Arc::new(l);
                    let (tx, rx) = watch::channel(rt.clone());
                    let cancel = self.inner.ctx.shutdown.child_token();
                    tokio::spawn(accept_loop(
                        socket.clone(),
                        addr.port(),
                        rx,
                        cancel.clone(),
                        self.inner.clone(),
                    ));
                    st.listeners.insert(
                        addr,
                        ListenerHandle {
                            service: tx,
                            cancel,
                            socket,
                        },
                    );
                    tracing::info!(service = %rt.cfg.label, %addr, mode = ?rt.cfg.mode, "listening");
                }
                Err(e) => {
                    tracing::error!(service = %rt.cfg.label, %addr, error = %e, "cannot listen");
                    rt.add_bind_error(format!("{addr}: {e}"));
                    report
                        .bind_errors
                        .push((rt.cfg.label.clone(), addr, e.to_string()));
                }
            }
        }
    }

    /// The appliance's Drain / Halt / Online buttons for one server. Kept across reloads.
    pub fn set_server_state(
        &self,
        service: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), NotFound> {
        let st = lock(&self.inner.state);
        let svc = st
            .services
            .get(service)
            .ok_or_else(|| NotFound::Service(service.to_string()))?;
        let srv = svc.server(server).ok_or_else(|| NotFound::Server {
            service: service.to_string(),
            server: server.to_string(),
        })?;
        srv.set_admin_state(state);
        tracing::info!(service, server, ?state, "server admin state changed");
        Ok(())
    }

    /// Snapshot of every service and server.
    pub fn status(&self) -> ProxyStatus {
        let services: Vec<Arc<ServiceRuntime>> =
            lock(&self.inner.state).services.values().cloned().collect();
        let tables = lock(&self.inner.ctx.stick);
        ProxyStatus {
            services: services
                .iter()
                .map(|s| status::service_status(s, tables.get(&s.cfg.label).map_or(0, |t| t.len())))
                .collect(),
        }
    }

    /// The runtime of a service (for the metrics endpoint, which reads the atomic counters directly).
    pub fn service(&self, label: &str) -> Option<Arc<ServiceRuntime>> {
        lock(&self.inner.state).services.get(label).cloned()
    }

    /// Close the listeners, stop the checks and close every established connection.
    pub async fn shutdown(&self) {
        self.inner.ctx.shutdown.cancel();
        {
            let mut st = lock(&self.inner.state);
            for l in st.listeners.values() {
                l.close();
            }
            st.listeners.clear();
            st.checks.clear();
            // Idle upstream HTTP connections close when their handles go.
            for svc in st.services.values() {
                for server in svc.servers.iter().chain(svc.fallback_runtime.iter()) {
                    server.clear_pools();
                }
            }
        }
        // Let the connection tasks observe the cancellation.
        tokio::task::yield_now().await;
    }

    fn spawn_expiry(&self) {
        let ctx = self.inner.ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = ctx.clock.now_ms();
                let mut tables = lock(&ctx.stick);
                for (_, t) in tables.iter_mut() {
                    t.expire(now);
                }
            }
        });
    }
}

fn build_service(
    svc: &Service,
    old: Option<&Arc<ServiceRuntime>>,
    cluster_fallback: Option<tandem_config::model::FallbackServer>,
) -> ServiceRuntime {
    let servers = svc
        .servers
        .iter()
        .map(|s| {
            let prev = old.and_then(|o| o.server(&s.label));
            match prev {
                Some(p) if p.address == s.address && p.port == s.port => {
                    p.weight
                        .store(s.weight, std::sync::atomic::Ordering::Relaxed);
                    p.clone()
                }
                _ => {
                    let rt = ServerRuntime::new(s.label.clone(), s.address, s.port, s.weight);
                    if let Some(p) = prev {
                        rt.set_admin_state(p.admin_state());
                    }
                    Arc::new(rt)
                }
            }
        })
        .collect();
    let max = svc.proxy.max_connections;
    let limit = match old {
        Some(o) if o.cfg.proxy.max_connections == max => o.limit.clone(),
        _ => (max > 0).then(|| Arc::new(Semaphore::new(max as usize))),
    };
    let fallback = effective_fallback(svc, cluster_fallback);
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
        counters: old.map(|o| o.counters.clone()).unwrap_or_default(),
        failures: old
            .map(|o| o.failures.clone())
            .unwrap_or_else(|| Arc::new(AtomicU64::new(0))),
        limit,
        fallback,
        fallback_runtime,
        bind_errors: Mutex::new(Vec::new()),
        cookies: svc
            .servers
            .iter()
            .map(|s| {
                ::http::HeaderValue::from_str(&format!(
                    "{}={}; Path=/",
                    svc.persistence.cookie_name,
                    crate::http::encode_cookie_value(&s.label)
                ))
                .ok()
            })
            .collect(),
    }
}

/// HTTP services use their own fallback server, else the cluster's; TCP services have none.
fn effective_fallback(
    svc: &Service,
    cluster: Option<tandem_config::model::FallbackServer>,
) -> Option<tandem_config::model::FallbackServer> {
    if svc.mode == Mode::Http {
        svc.fallback.clone().or(cluster)
    } else {
        None
    }
}

async fn accept_loop(
    listener: Arc<listener::Listener>,
    vip_port: u16,
    mut service: watch::Receiver<Arc<ServiceRuntime>>,
    cancel: CancellationToken,
    inner: Arc<Inner>,
) {
    loop {
        let svc = service.borrow_and_update().clone();
        let permit = match &svc.limit {
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                _ = service.changed() => continue,
                _ = cancel.cancelled() => return,
            },
            None => None,
        };
        // io_uring relays want blocking sockets; everything else registers the socket with a tokio reactor.
        let blocking = svc.cfg.mode == Mode::Tcp
            && inner
                .ctx
                .relay_loops
                .as_ref()
                .is_some_and(|loops| loops.uring);
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = listener.accept(blocking) => r,
            _ = service.changed() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning.
                tracing::warn!(service = %svc.cfg.label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = inner.ctx.clone();
        match svc.cfg.mode {
            Mode::Tcp => {
                tokio::spawn(async move {
                    tcp::serve(stream, peer, vip_port, svc, ctx).await;
                    drop(permit);
                });
            }
            Mode::Http => {
                let fut = inner.engine.serve(stream, peer, vip_port, svc, ctx);
                tokio::spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
        }
    }
}
