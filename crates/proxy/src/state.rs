//! Runtime state shared by listeners, connections, health checks and the status view: one [`ServiceRuntime`] per
//! service and one [`ServerRuntime`] per real server, with atomic counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tandem_config::model::{FallbackServer, Service};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::balance::{Balancer, Candidate};
use crate::metrics::ServiceMetrics;
use crate::pool::UpstreamPool;
use crate::pool::h1_conn::UpConn;
use crate::pool::hyper_conn::Upstream;
use crate::shared::lock;
use crate::tls::TlsService;

/// The appliance's per-server buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum AdminState {
    /// Normal operation.
    Online,
    /// Only persistent clients get new connections; existing connections finish.
    Drain,
    /// No new connections at all; existing ones finish unless `close_existing`, which closes them at once.
    Halt { close_existing: bool },
}

const ADMIN_ONLINE: u8 = 0;
const ADMIN_DRAIN: u8 = 1;
const ADMIN_HALT: u8 = 2;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Traffic counters. `bytes_in` = bytes received from clients (requests), `bytes_out` = bytes sent back to them.
#[derive(Debug, Default)]
pub struct Counters {
    pub current: AtomicU64,
    pub total: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    pub(crate) fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Result of the last health check, for the status view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastCheck {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub detail: String,
    /// How long the probe took (until its verdict: answer, refusal or timeout).
    pub duration_us: u64,
}

/// One real server of one service.
#[derive(Debug)]
pub struct ServerRuntime {
    pub label: String,
    pub address: IpAddr,
    pub port: Option<u16>,
    pub weight: AtomicU32,
    healthy: AtomicBool,
    health_reason: Mutex<String>,
    last_check: Mutex<Option<LastCheck>>,
    admin: AtomicU8,
    /// Cancelled by Halt{close_existing}; replaced by a fresh token afterwards.
    kill: Mutex<CancellationToken>,
    pub counters: Counters,
    pub check_failures: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connects to this server that failed and were retried on another server.
    pub retries: AtomicU64,
    /// UP -> DOWN transitions decided by the health checks.
    pub up_down: AtomicU64,
    /// Milliseconds spent down after having been up, not counting the current down period.
    downtime_ms: AtomicU64,
    /// Unix ms when the current down period began (after having been up); 0 while up or never up.
    down_since_ms: AtomicU64,
    /// Unix ms when the health verdict last changed (or the server was created): "up for 5 min".
    health_since_ms: AtomicU64,
    /// Idle upstream HTTP connections (HTTP mode), of the hyper engine and of the native one.
    pub(crate) pool: UpstreamPool<Upstream>,
    pub(crate) h1_pool: UpstreamPool<UpConn>,
}

impl ServerRuntime {
    pub(crate) fn new(label: String, address: IpAddr, port: Option<u16>, weight: u32) -> Self {
        Self {
            label,
            address,
            port,
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(false),
            health_reason: Mutex::new("not checked yet".into()),
            last_check: Mutex::new(None),
            admin: AtomicU8::new(ADMIN_ONLINE),
            kill: Mutex::new(CancellationToken::new()),
            counters: Counters::default(),
            check_failures: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            up_down: AtomicU64::new(0),
            downtime_ms: AtomicU64::new(0),
            down_since_ms: AtomicU64::new(0),
            health_since_ms: AtomicU64::new(now_unix_ms()),
            pool: UpstreamPool::default(),
            h1_pool: UpstreamPool::default(),
        }
    }

    pub fn target(&self, vip_port: u16) -> SocketAddr {
        SocketAddr::new(self.address, self.port.unwrap_or(vip_port))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn health_reason(&self) -> String {
        lock(&self.health_reason).clone()
    }

    pub(crate) fn set_health(&self, up: bool, reason: String) {
        // The reason first: whoever sees the new state also sees why.
        *lock(&self.health_reason) = reason;
        let was_up = self.healthy.swap(up, Ordering::AcqRel);
        let now = now_unix_ms();
        if was_up != up {
            self.health_since_ms.store(now, Ordering::Relaxed);
        }
        if was_up && !up {
            self.up_down.fetch_add(1, Ordering::Relaxed);
            self.down_since_ms.store(now.max(1), Ordering::Relaxed);
        } else if !was_up && up {
            let since = self.down_since_ms.swap(0, Ordering::Relaxed);
            if since > 0 {
                self.downtime_ms
                    .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            }
        }
        if !up {
            self.clear_pools();
        }
    }

    /// Milliseconds this server has been down after having been up (the current down period included); a server
    /// that has never been up counts none (`tandem_server_up` shows it).
    pub fn downtime_ms(&self) -> u64 {
        let since = self.down_since_ms.load(Ordering::Relaxed);
        let current = if since > 0 {
            now_unix_ms().saturating_sub(since)
        } else {
            0
        };
        self.downtime_ms.load(Ordering::Relaxed) + current
    }

    /// Unix ms when the health verdict last changed, or when the server was created.
    pub fn health_since_unix_ms(&self) -> u64 {
        self.health_since_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_health_reason(&self, reason: String) {
        *lock(&self.health_reason) = reason;
    }

    /// Records a check's result (`E` is the health checker's failure, shown as text).
    pub(crate) fn record_check<E: std::fmt::Display>(
        &self,
        result: &Result<(), E>,
        took: std::time::Duration,
    ) {
        if result.is_err() {
            self.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        let detail = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        *lock(&self.last_check) = Some(LastCheck {
            at_unix_ms: now_unix_ms(),
            ok: result.is_ok(),
            detail,
            duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        });
    }

    pub fn last_check(&self) -> Option<LastCheck> {
        lock(&self.last_check).clone()
    }

    pub fn admin_state(&self) -> AdminState {
        match self.admin.load(Ordering::Acquire) {
            ADMIN_ONLINE => AdminState::Online,
            ADMIN_DRAIN => AdminState::Drain,
            _ => AdminState::Halt {
                close_existing: false,
            },
        }
    }

    pub(crate) fn set_admin_state(&self, state: AdminState) {
        let v = match state {
            AdminState::Online => ADMIN_ONLINE,
            AdminState::Drain => ADMIN_DRAIN,
            AdminState::Halt { .. } => ADMIN_HALT,
        };
        self.admin.store(v, Ordering::Release);
        if let AdminState::Halt {
            close_existing: true,
        } = state
        {
            let mut kill = lock(&self.kill);
            kill.cancel();
            *kill = CancellationToken::new();
        }
        if v == ADMIN_HALT {
            self.clear_pools();
        }
    }

    /// Closes every idle upstream connection (server down, halted, removed).
    pub(crate) fn clear_pools(&self) {
        self.pool.clear();
        self.h1_pool.clear();
    }

    /// Idle upstream connections kept for reuse.
    pub fn idle_connections(&self) -> usize {
        self.pool.len() + self.h1_pool.len()
    }

    /// Token cancelled when this server is halted with `close_existing`.
    pub(crate) fn kill_token(&self) -> CancellationToken {
        lock(&self.kill).clone()
    }

    /// May take a new, non-persistent connection.
    pub fn usable_for_new(&self) -> bool {
        self.is_healthy()
            && self.admin.load(Ordering::Acquire) == ADMIN_ONLINE
            && self.weight.load(Ordering::Relaxed) > 0
    }

    /// May take a connection from a client that is persistent to it (drained and weight-0 servers still do).
    pub fn usable_for_persistent(&self) -> bool {
        self.is_healthy() && self.admin.load(Ordering::Acquire) != ADMIN_HALT
    }

    fn candidate(&self, excluded: bool) -> Candidate {
        Candidate {
            weight: self.weight.load(Ordering::Relaxed),
            active: self.counters.current.load(Ordering::Relaxed),
            eligible: !excluded && self.usable_for_new(),
        }
    }
}

/// RAII count of one connection (or in-flight request) on a service or server.
pub(crate) struct Active<'a>(&'a Counters);

impl<'a> Active<'a> {
    pub(crate) fn new(c: &'a Counters) -> Self {
        c.current.fetch_add(1, Ordering::Relaxed);
        c.total.fetch_add(1, Ordering::Relaxed);
        Active(c)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Owned variant of [`Active`] for counts that travel with a response body.
pub(crate) struct ActiveOwned(pub(crate) Arc<ServerRuntime>);

impl ActiveOwned {
    pub(crate) fn new(s: Arc<ServerRuntime>) -> Self {
        s.counters.current.fetch_add(1, Ordering::Relaxed);
        s.counters.total.fetch_add(1, Ordering::Relaxed);
        ActiveOwned(s)
    }
}

impl Drop for ActiveOwned {
    fn drop(&mut self) {
        self.0.counters.current.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One virtual service as currently configured. A reload that changes the service builds a new one (sharing the
/// counters and the unchanged servers); connections keep the one they started with.
#[derive(Debug)]
pub struct ServiceRuntime {
    pub cfg: Service,
    pub servers: Vec<Arc<ServerRuntime>>,
    pub(crate) balancer: Mutex<Balancer>,
    pub counters: Arc<Counters>,
    /// Connections refused or failed because no server could take them.
    pub failures: Arc<AtomicU64>,
    /// Response classes, latency histograms, access-log counts.
    pub metrics: Arc<ServiceMetrics>,
    /// `None` = unlimited.
    pub(crate) limit: Option<Arc<Semaphore>>,
    pub fallback: Option<FallbackServer>,
    pub(crate) fallback_runtime: Option<Arc<ServerRuntime>>,
    pub(crate) bind_errors: Mutex<Vec<String>>,
    /// Per server (same order): `NAME=label; Path=/` for http-cookie persistence (`; Secure` on TLS services).
    pub(crate) cookies: Vec<Option<::http::HeaderValue>>,
    /// TLS termination (HTTP mode with `tls` set): what the handshakes use; the certificates served.
    pub tls: Option<Arc<TlsService>>,
}

impl ServiceRuntime {
    pub(crate) fn bind_errors(&self) -> Vec<String> {
        lock(&self.bind_errors).clone()
    }

    pub(crate) fn clear_bind_errors(&self) {
        lock(&self.bind_errors).clear();
    }

    pub(crate) fn add_bind_error(&self, e: String) {
        lock(&self.bind_errors).push(e);
    }

    pub fn server(&self, label: &str) -> Option<&Arc<ServerRuntime>> {
        self.servers.iter().find(|s| s.label == label)
    }

    /// Balance among servers usable for a new connection, skipping `exclude` (servers whose connect just failed).
    pub(crate) fn balance(&self, exclude: &[usize]) -> Option<usize> {
        lock(&self.balancer).pick_with(self.servers.len(), |i| {
            self.servers[i].candidate(exclude.contains(&i))
        })
    }

    /// The `Set-Cookie` value naming server `i` (http-cookie persistence), built once per service.
    pub(crate) fn cookie_value(&self, i: usize) -> Option<::http::HeaderValue> {
        self.cookies.get(i).cloned().flatten()
    }

    pub(crate) fn index_of(&self, label: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.label == label)
    }
}
