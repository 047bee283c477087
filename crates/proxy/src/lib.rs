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
//! - **TLS** ([`tls`]): an HTTP-mode service with `tls` terminates TLS on all its ports (rustls on ring, TLS 1.2
//!   and 1.3, certificate by SNI, ALPN `h2` and `http/1.1`, tickets and a session cache, a handshake timeout of
//!   min(10 s, client timeout)); HTTP/1.1 over TLS is served by the native engine (on its threads, TLS records
//!   encrypted into its batched writes) when it is the engine, h2 (towards the client; HTTP/1.1 towards the
//!   servers, over the same pools) by the hyper engine's request path; `X-Forwarded-Proto: https` replaces the
//!   client's, and the persistence cookie is `Secure`. `redirect_http` adds a plain listener on the VIP answering 308 to
//!   `https://`. A reload that changes the certificates builds a new runtime (established connections keep their
//!   configuration); certificates that cannot be loaded (or whose file changed after the check) keep the running
//!   runtime ([`ReloadReport::tls_errors`]) and [`Proxy::config`] keeps that service's previous entry (a new one is
//!   left out), so the next plan from it retries the service.
//! - **Counters**: `bytes_in` = bytes from clients, `bytes_out` = bytes to clients. In TCP mode a server's
//!   `current` counts connections; in HTTP mode it counts requests in flight (what least-connections balances).
//!   Per service also: HTTP responses by class (the proxy's own 400/502/503/504 included), histograms of the
//!   response time (request sent to response head) and of connects to real servers; per server: retries (a failed
//!   connect moved elsewhere), UP -> DOWN transitions, downtime, the last check's duration.
//! - **Access log** ([`ProxyOptions::access_log`]): one line per HTTP request (native engine) and per TCP
//!   connection; formatted only for logged services, queued without waiting (a full queue drops the line and
//!   counts it).
//! - **Reload** ([`Proxy::apply_plan`], as the config crate's [`ReloadPlan`] says; [`Proxy::reload`] plans itself):
//!   unchanged services are not touched (same runtime, connections, listeners, checks, stick table); changed
//!   services get a new runtime that keeps the counters, the connection limit unless `max_connections` changed, the
//!   kept servers (health state, counters, admin state; a new weight applied in place) and the listeners of
//!   VIP:ports that remain; a replaced server (new address or port) starts down and keeps its admin state;
//!   established connections are never cut by a reload. Removed services stop accepting; their established
//!   connections finish. Listeners and checks follow the runtimes: a listener serves the runtime of the service
//!   that wants its VIP:port (every reload also retries the ones that could not be bound), a check runs per server
//!   runtime and restarts only where the plan says.
//! - **Shutdown** ([`Proxy::shutdown`]) closes the listeners, stops the checks and closes established connections.
//! - **Release** ([`Proxy::close_connections_of`], called when the node gives up VIPs): every connection accepted
//!   on those VIPs, in TCP and HTTP mode, is closed at once: the client reset (it fails fast instead of waiting on
//!   a connection nobody serves any more), the server side closed (a database rolls back the session's open
//!   transaction and frees its locks). The listeners stay.
//! - **Stick tables**: `source-ip` and `last-successful` services get a table in the shared [`SharedStickTables`]
//!   (reconciled on every reload, entries naming removed servers dropped, expired entries swept every second);
//!   all `now` values come from [`Proxy::clock`], which the replication session must share.
//!
//! # Modules
//! Each imports only modules listed above it (no import circles); `lib.rs` ties them together.
//! - `shared.rs`: the `lock` helper and `thread_tag`; imports nothing of the crate.
//! - [`balance`], [`listener`], `woken.rs` (futures polled only when woken): leaves.
//! - [`metrics`]: response classes and lock-free latency histograms (fixed buckets, relaxed atomics): a leaf.
//! - [`access_log`]: the access log's line formats and its writer thread, fed by a bounded queue that drops (and
//!   counts) instead of waiting.
//! - `buffer.rs`: the per-thread pool of read buffers, the short-read rule (`read_now`) and the cursor `Buf`.
//! - `pool/`: idle upstream connections per real server (`mod.rs`), each engine's pooled connection type
//!   (`hyper_conn.rs`, `h1_conn.rs`).
//! - [`state`]: [`ServiceRuntime`], [`ServerRuntime`], counters, admin state; holds the pools, knows no engine.
//! - [`health`]: the checks. `status.rs`: the [`ProxyStatus`] snapshot.
//! - [`relay`]: TCP mode's relay: what the relays share (`mod.rs`), in the connection task ([`relay::tasks`]), or on
//!   relay threads (`threads.rs`) running poll loops (`poll.rs`) or io_uring rings (`uring.rs`, `local_yield.rs`).
//! - `vip_conns.rs`: the connections of each VIP (a cancellation scope per VIP, ended by a release of the VIP:
//!   [`Proxy::close_connections_of`]) and the client reset (SO_LINGER 0) a released connection gets.
//! - `ctx.rs`: [`ConnCtx`], what every connection task needs (stick tables, clock, shutdown or its VIP's release,
//!   relay threads).
//! - `route.rs`: server choice for one client (persistence, balancing, retry).
//! - `tcp.rs`: TCP mode's connection: connect with retry, then relay.
//! - `http/`: the [`HttpEngine`] seam and shared helpers (`mod.rs`); the hyper engine (`hyper_engine.rs`, with its
//!   counting I/O in `io.rs`), whose request path also serves TLS connections (`serve_io`).
//! - [`tls`]: a TLS service's rustls configuration and SNI choice (`mod.rs`, imported by [`state`]), the TLS
//!   connection (`serve.rs`: handshake, then the hyper engine) and the redirect listener (`redirect.rs`).
//! - `h1/`: the native HTTP/1.1 engine ([`H1Engine`], `mod.rs`): the client side, plain or TLS (`client.rs`), the
//!   connection (`conn.rs`), one request on one
//!   upstream connection (`forward.rs`), bodies (`body.rs`), deadlines (`timer.rs`), writes (`io.rs`), heads
//!   (`head.rs`), chunked framing (`chunked.rs`), its threads (`threads.rs`) and batched io_uring sends
//!   (`batch.rs`), batched or direct by the size of the thread's rounds of writes (`write_mode.rs`).
//! - `reload.rs`: the next service runtimes from the running ones and a [`ReloadPlan`] (no I/O; the TLS sides are
//!   built by `lib.rs` beforehand, which reads the certificate files).
//! - `lib.rs`: [`Proxy`]: start ([`ProxyOptions`]), reload, listeners and accept loops, buttons, status, shutdown;
//!   `fuzzing` re-exports the HTTP/1 parsers for the fuzz targets (hidden, not an API).
//!
//! # Public API (what the daemon calls)
//! [`Proxy::start`] / [`Proxy::start_with_options`] with [`ProxyOptions`] (the HTTP engine, [`TcpRelay`], relay
//! yield; [`Proxy::start_with`] and [`Proxy::start_with_relay`] are shorthands), [`Proxy::apply_plan`] with the
//! [`ReloadPlan`] from [`Proxy::config`] to the new configuration -> [`ReloadReport`] ([`Proxy::reload`] plans
//! itself), [`Proxy::set_server_state`] with [`AdminState`], [`Proxy::status`] -> [`ProxyStatus`] (serde),
//! [`Proxy::service`] (live atomic counters for metrics), [`Proxy::stick_tables`], [`Proxy::clock`],
//! [`Proxy::close_connections_of`] / [`Proxy::released_connections_closed`], [`Proxy::shutdown`].

pub mod access_log;
pub mod balance;
mod buffer;
mod ctx;
mod h1;
pub mod health;
mod http;
pub mod listener;
mod log_gate;
pub mod metrics;
mod pool;
pub mod relay;
mod reload;
mod route;
mod shared;
pub mod state;
mod status;
mod tcp;
pub mod tls;
mod vip_conns;
mod woken;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_config::ReloadPlan;
use tandem_config::model::{ClusterConfig, HealthCheckConfig, Mode, PersistenceMode};
use tandem_stick::{Clock, TableSpec};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The native engine's parsers for the fuzz targets in `fuzz/` (which live outside this workspace): not an API,
/// nothing here is promised to stay.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::h1::chunked::{ChunkError, ChunkedScanner};
    pub use crate::h1::head::{
        Framing, HeadError, RequestInfo, ResponseInfo, parse_request, parse_response,
    };
}

pub use access_log::AccessLog;
pub use ctx::{ConnCtx, SharedStickTables};
pub use h1::{H1Engine, WriteBatching};
pub use http::hyper_engine::HyperEngine;
pub use http::{ConnectionJob, HttpEngine, unavailable_page};
pub use state::{AdminState, LastCheck, ServerRuntime, ServiceRuntime};
pub use status::{ProxyStatus, ServerStatus, ServiceStatus, TlsStatus};
pub use tls::tickets::TicketSecret;

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
    /// One line per HTTP request and TCP connection goes here; `None`: no access log.
    pub access_log: Option<AccessLog>,
    /// The root of the TLS session-ticket keys (the pair's shared secret), so that both nodes issue and accept
    /// the same tickets; `None`: keys random to this process.
    pub ticket_secret: Option<tls::tickets::TicketSecret>,
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
            access_log: None,
            ticket_secret: None,
        }
    }
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("clock", &self.clock)
            .field("tcp_relay", &self.tcp_relay)
            .field("relay_yield", &self.relay_yield)
            .field("access_log", &self.access_log)
            .field("ticket_secret", &self.ticket_secret)
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
    /// TLS services whose certificates could not be loaded: (service, error). A changed one kept its running
    /// configuration, an added one is not served; [`Proxy::config`] records them so (previous entry, or none), so
    /// the next reload to the same configuration retries them.
    pub tls_errors: Vec<(String, String)>,
    /// The plan given was made from another configuration than the one served, so the proxy planned again from the
    /// served one (the lists above are from that plan).
    pub replanned: bool,
}

/// The running data plane. Cheap to clone; all clones control the same proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: ConnCtx,
    engine: Arc<dyn HttpEngine>,
    /// The connections of each VIP, for [`Proxy::close_connections_of`].
    vip_conns: vip_conns::VipConns,
    /// Where new TLS services take their ticket keys from ([`ProxyOptions::ticket_secret`]).
    ticket_secret: Option<tls::tickets::TicketSecret>,
    state: Mutex<State>,
}

struct State {
    /// The configuration served (before the first apply: the new one without services).
    cfg: Arc<ClusterConfig>,
    services: BTreeMap<String, Arc<ServiceRuntime>>,
    /// Health-check tasks by (service, server) runtime identity.
    checks: HashMap<usize, Check>,
    listeners: HashMap<SocketAddr, ListenerHandle>,
    /// The last apply's [`ReloadReport::tls_errors`]: each apply retries every service that failed, so these are
    /// the services not served as configured now.
    tls_errors: Vec<(String, String)>,
}

struct Check {
    cancel: CancellationToken,
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
                access_log: None,
                ticket_secret: None,
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
            access_log,
            ticket_secret,
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
            vip: None,
            relay_loops,
            access_log,
        };
        let vip_conns = vip_conns::VipConns::new(ctx.shutdown.clone());
        // Planned from the same configuration without services, so that every service is added.
        let empty = Arc::new(ClusterConfig {
            services: Vec::new(),
            ..(*cfg).clone()
        });
        let proxy = Proxy {
            inner: Arc::new(Inner {
                ctx,
                engine,
                vip_conns,
                ticket_secret,
                state: Mutex::new(State {
                    cfg: empty.clone(),
                    services: BTreeMap::new(),
                    checks: HashMap::new(),
                    listeners: HashMap::new(),
                    tls_errors: Vec::new(),
                }),
            }),
        };
        let plan = ReloadPlan::new(&empty, &cfg);
        proxy.apply_plan(&empty, cfg, &plan);
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

    /// Reopen the access log's file (SIGHUP, after logrotate moved it); nothing without an access log.
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.inner.ctx.access_log {
            log.reopen();
        }
    }

    /// The clock of the stick tables' `now` values (the replication session must use the same).
    pub fn clock(&self) -> Clock {
        self.inner.ctx.clock
    }

    pub fn stick_tables(&self) -> SharedStickTables {
        self.inner.ctx.stick.clone()
    }

    /// The configuration currently served: what a plan for [`Proxy::apply_plan`] is made from. After a reload with
    /// [`ReloadReport::tls_errors`] it is not the one given: those services keep their previous entries.
    pub fn config(&self) -> Arc<ClusterConfig> {
        lock(&self.inner.state).cfg.clone()
    }

    /// TLS services not served as configured, and why (service, error): their certificates could not be loaded at
    /// the last apply, so they keep their previous settings (a new one is not served) until a reload retries them.
    pub fn tls_errors(&self) -> Vec<(String, String)> {
        lock(&self.inner.state).tls_errors.clone()
    }

    /// Apply a new, already validated configuration, planned here from the one served (see [`Proxy::apply_plan`]).
    /// For callers that have no plan of their own; the daemon, which plans once for every part, calls `apply_plan`.
    pub fn reload(&self, cfg: Arc<ClusterConfig>) -> ReloadReport {
        let from = self.config();
        let plan = ReloadPlan::new(&from, &cfg);
        self.apply_plan(&from, cfg, &plan)
    }

    /// Serve `cfg` (already validated) as `plan` says, where `plan` is `ReloadPlan::new(from, &cfg)` and `from` is
    /// the configuration this proxy serves ([`Proxy::config`]). See the crate doc for what is kept.
    ///
    /// When `from` is not the served configuration (another reload came first), the plan is made again from the
    /// served one, so a stale plan never leaves a service half updated; the report says so (`replanned`).
    pub fn apply_plan(
        &self,
        from: &ClusterConfig,
        cfg: Arc<ClusterConfig>,
        plan: &ReloadPlan,
    ) -> ReloadReport {
        let mut st = lock(&self.inner.state);
        // The same Arc in the usual case; otherwise one comparison of the whole configuration.
        let served = std::ptr::eq(from, &*st.cfg) || *from == *st.cfg;
        if served {
            self.apply(&mut st, cfg, plan, false)
        } else {
            tracing::warn!(
                "reload plan made from a configuration this proxy does not serve; planning again from the served one"
            );
            let plan = ReloadPlan::new(&st.cfg, &cfg);
            self.apply(&mut st, cfg, &plan, true)
        }
    }

    fn apply(
        &self,
        st: &mut State,
        cfg: Arc<ClusterConfig>,
        plan: &ReloadPlan,
        replanned: bool,
    ) -> ReloadReport {
        let labels = |list: Vec<&str>| list.into_iter().map(str::to_string).collect();
        let mut report = ReloadReport {
            added: labels(plan.added()),
            changed: labels(plan.changed()),
            unchanged: labels(plan.unchanged()),
            removed: labels(plan.removed()),
            bind_errors: Vec::new(),
            tls_errors: Vec::new(),
            replanned,
        };
        let tls = build_tls(&st.services, &cfg, plan, self.inner.ticket_secret.as_ref());
        let next = reload::next_services(&st.services, &cfg, plan, &tls);
        report.tls_errors = next.tls_errors.clone();
        self.reconcile_stick(&cfg);
        self.reconcile_checks(st, &next);
        self.reconcile_listeners(st, &next.services, &mut report);
        for label in &report.removed {
            tracing::info!(service = %label, "service removed; established connections finish");
        }
        st.services = next.services;
        st.cfg = if next.tls_errors.is_empty() {
            cfg
        } else {
            Arc::new(reload::served_config(&st.cfg, &cfg, &next.tls_errors))
        };
        st.tls_errors = next.tls_errors;
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

    /// Checks follow the server runtimes: a runtime no longer served loses its check, a new one gets one, a kept one
    /// keeps its check unless the plan restarts it.
    fn reconcile_checks(&self, st: &mut State, next: &reload::Next) {
        let mut wanted: HashMap<
            usize,
            (String, Arc<ServerRuntime>, SocketAddr, HealthCheckConfig),
        > = HashMap::new();
        for rt in next.services.values() {
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
        let restart: HashSet<usize> = next
            .restart_checks
            .iter()
            .map(|s| Arc::as_ptr(s) as usize)
            .collect();
        st.checks.retain(|key, check| {
            let keep = wanted.contains_key(key) && !restart.contains(key);
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
                cfg,
                delay,
                cancel.clone(),
            ));
            st.checks.insert(
                key,
                Check {
                    cancel,
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
            // A TLS service's redirect listener serves the same runtime on a port that is not one of its own.
            let redirect = rt
                .tls
                .as_ref()
                .and(rt.cfg.tls.as_ref())
                .and_then(|t| t.redirect_http);
            for &port in rt.cfg.ports.iter().chain(redirect.iter()) {
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
                        addr,
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
                .map(|s| {
                    let table = tables.get(&s.cfg.label).map(|t| t.stats());
                    status::service_status(s, table)
                })
                .collect(),
        }
    }

    /// The runtime of a service (for the metrics endpoint, which reads the atomic counters directly).
    pub fn service(&self, label: &str) -> Option<Arc<ServiceRuntime>> {
        lock(&self.inner.state).services.get(label).cloned()
    }

    /// This node gave up `vips`: every connection accepted on one of them (any service, any port, any engine) is
    /// closed now, its client reset (SO_LINGER 0: the client fails at once instead of waiting on a connection
    /// nobody serves) and its server side closed (so that, say, a database rolls back the session's open
    /// transaction and frees its locks). Returns how many connections were open on them; each closes in its own
    /// task or relay loop within moments. Listeners stay: connections that come once the VIPs are back are served.
    pub fn close_connections_of(&self, vips: &[IpAddr]) -> usize {
        self.inner.vip_conns.release(vips)
    }

    /// Connections closed by [`Proxy::close_connections_of`] since start.
    pub fn released_connections_closed(&self) -> u64 {
        self.inner.vip_conns.closed_total()
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

/// The TLS side of every service of `cfg` that terminates TLS and that the plan adds or changes (reads the
/// certificate files). A changed service keeps its session-ticket keys, so tickets issued before the reload resume;
/// a new one derives them from `tickets` when given.
fn build_tls(
    running: &BTreeMap<String, Arc<ServiceRuntime>>,
    cfg: &ClusterConfig,
    plan: &ReloadPlan,
    tickets: Option<&tls::tickets::TicketSecret>,
) -> reload::TlsBuilt {
    let unchanged: HashSet<&str> = plan.unchanged().into_iter().collect();
    let mut built = reload::TlsBuilt::new();
    for svc in &cfg.services {
        let Some(settings) = svc.tls.as_ref().filter(|_| reload::wants_tls(svc)) else {
            continue;
        };
        let old = running.get(&svc.label);
        if (unchanged.contains(svc.label.as_str()) && old.is_some())
            || built.contains_key(&svc.label)
        {
            continue;
        }
        let ticketer = old
            .and_then(|o| o.tls.as_ref())
            .map(|t| t.ticketer.clone())
            .or_else(|| tickets.map(|secret| secret.ticketer(&svc.label)));
        let result = tls::TlsService::build(settings, ticketer).map(Arc::new);
        built.insert(svc.label.clone(), result);
    }
    built
}

async fn accept_loop(
    listener: Arc<listener::Listener>,
    addr: SocketAddr,
    mut service: watch::Receiver<Arc<ServiceRuntime>>,
    cancel: CancellationToken,
    inner: Arc<Inner>,
) {
    let vip_port = addr.port();
    // The context of this VIP's connections, made again after a release of the VIP.
    let mut scope = inner.vip_conns.scope(addr.ip());
    let mut conn_ctx = inner.ctx.for_vip(scope.clone());
    loop {
        let mut svc = service.borrow_and_update().clone();
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
        // A reload that came while this connection waited in the backlog: the new runtime serves it (renewed
        // certificates, new servers), unless the socket was accepted for the other mode. (Its connection-limit
        // permit stays the one taken.)
        if service.has_changed().unwrap_or(false) {
            let newer = service.borrow_and_update().clone();
            if newer.cfg.mode == svc.cfg.mode {
                svc = newer;
            }
        }
        // Accepted after a release: the connection belongs to the VIP's next scope (checked after the accept, so
        // that the first connection once the VIP is back is not closed by the release before it).
        if scope.released() {
            scope = inner.vip_conns.scope(addr.ip());
            conn_ctx = inner.ctx.for_vip(scope.clone());
        }
        let open = vip_conns::OpenConn::new(&scope);
        let ctx = conn_ctx.clone();
        match svc.cfg.mode {
            Mode::Tcp => {
                tokio::spawn(async move {
                    tcp::serve(stream, peer, vip_port, svc, ctx).await;
                    drop((permit, open));
                });
            }
            Mode::Http => {
                let fut = if !svc.cfg.ports.contains(&vip_port) {
                    Box::pin(tls::redirect::serve_redirect(stream, peer, svc, ctx))
                } else if svc.tls.is_some() {
                    let native = inner.engine.serves_tls_http1();
                    inner.engine.run(
                        peer,
                        Box::new(move || {
                            Box::pin(tls::serve::serve_tls(
                                stream, peer, vip_port, svc, ctx, native,
                            ))
                        }),
                    )
                } else {
                    inner.engine.serve(stream, peer, vip_port, svc, ctx)
                };
                tokio::spawn(async move {
                    fut.await;
                    drop((permit, open));
                });
            }
        }
    }
}
