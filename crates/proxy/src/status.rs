//! The serializable snapshot returned by [`crate::Proxy::status`].

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;
use tandem_config::model::{Balance, Mode, Persistence};
use tandem_stick::TableStats;

use crate::metrics::HistogramSnapshot;
use crate::tls::CertificateInfo;

use crate::state::{AdminState, LastCheck, ServerRuntime, ServiceRuntime};

#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub label: String,
    pub vip: IpAddr,
    pub ports: Vec<u16>,
    pub mode: Mode,
    pub balance: Balance,
    pub persistence: Persistence,
    pub current_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Clients turned away (or answered 503) because no real server could take them.
    pub failures: u64,
    /// Listeners of this service that could not be bound, with the reason.
    pub bind_errors: Vec<String>,
    pub stick_table_size: usize,
    /// Most entries the stick table holds (0: no table).
    pub stick_table_capacity: usize,
    /// Entries evicted to make room since the table was created.
    pub stick_table_evictions: u64,
    /// HTTP mode: responses sent to clients by class, in the order of [`crate::metrics::CODE_CLASSES`].
    pub http_responses: Option<[u64; 6]>,
    /// HTTP mode: from the request sent to the server until its response head was read.
    pub response_time: Option<HistogramSnapshot>,
    /// New connections to real servers.
    pub connect_time: HistogramSnapshot,
    pub access_log_lines: u64,
    pub access_log_dropped: u64,
    /// TLS services: handshakes and the certificates served.
    pub tls: Option<TlsStatus>,
    pub servers: Vec<ServerStatus>,
}

/// A TLS service's handshakes since start (kept across reloads) and its certificates now.
#[derive(Debug, Clone, Serialize)]
pub struct TlsStatus {
    pub handshakes: u64,
    pub resumed: u64,
    pub tls12: u64,
    pub tls13: u64,
    /// Completed handshakes by ALPN: `h2`, HTTP/1.1 (or no ALPN).
    pub h2: u64,
    pub http1: u64,
    /// Failed handshakes by reason, in the order of [`crate::metrics::HandshakeFailure::ALL`].
    pub failures: [u64; 5],
    pub certificates: Vec<CertificateInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub label: String,
    pub address: IpAddr,
    /// `None` = the port the client connected to.
    pub port: Option<u16>,
    pub weight: u32,
    /// "up" or "down".
    pub health: &'static str,
    pub health_reason: String,
    /// Unix ms when `health` last changed (or the server was created).
    pub health_since_unix_ms: u64,
    pub admin_state: AdminState,
    pub current_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub check_failures: u64,
    pub connect_failures: u64,
    /// Idle upstream connections kept for reuse (HTTP mode).
    pub idle_connections: usize,
    pub last_check: Option<LastCheck>,
    /// Connects that failed here and were retried on another server.
    pub retries: u64,
    /// UP -> DOWN transitions.
    pub up_down: u64,
    /// Time down after having been up (current down period included).
    pub downtime_ms: u64,
}

pub(crate) fn service_status(s: &ServiceRuntime, table: Option<TableStats>) -> ServiceStatus {
    let http = s.cfg.mode == Mode::Http;
    let m = &s.metrics;
    ServiceStatus {
        label: s.cfg.label.clone(),
        vip: s.cfg.vip,
        ports: s.cfg.ports.clone(),
        mode: s.cfg.mode,
        balance: s.cfg.balance,
        persistence: s.cfg.persistence.clone(),
        current_connections: s.counters.current.load(Ordering::Relaxed),
        total_connections: s.counters.total.load(Ordering::Relaxed),
        bytes_in: s.counters.bytes_in.load(Ordering::Relaxed),
        bytes_out: s.counters.bytes_out.load(Ordering::Relaxed),
        failures: s.failures.load(Ordering::Relaxed),
        bind_errors: s.bind_errors(),
        stick_table_size: table.map_or(0, |t| t.entries),
        stick_table_capacity: table.map_or(0, |t| t.capacity),
        stick_table_evictions: table.map_or(0, |t| t.evicted),
        http_responses: http.then(|| m.codes.snapshot()),
        response_time: http.then(|| m.response.snapshot()),
        connect_time: m.connect.snapshot(),
        access_log_lines: m.access_log_lines.load(Ordering::Relaxed),
        access_log_dropped: m.access_log_dropped.load(Ordering::Relaxed),
        tls: s.tls.as_ref().map(|tls| {
            let t = &m.tls;
            TlsStatus {
                handshakes: t.handshakes.load(Ordering::Relaxed),
                resumed: t.resumed.load(Ordering::Relaxed),
                tls12: t.tls12.load(Ordering::Relaxed),
                tls13: t.tls13.load(Ordering::Relaxed),
                h2: t.h2.load(Ordering::Relaxed),
                http1: t.http1.load(Ordering::Relaxed),
                failures: t.failures(),
                certificates: tls.certificates.clone(),
            }
        }),
        servers: s.servers.iter().map(|r| server_status(r)).collect(),
    }
}

fn server_status(r: &ServerRuntime) -> ServerStatus {
    ServerStatus {
        label: r.label.clone(),
        address: r.address,
        port: r.port,
        weight: r.weight.load(Ordering::Relaxed),
        health: if r.is_healthy() { "up" } else { "down" },
        health_reason: r.health_reason(),
        health_since_unix_ms: r.health_since_unix_ms(),
        admin_state: r.admin_state(),
        current_connections: r.counters.current.load(Ordering::Relaxed),
        total_connections: r.counters.total.load(Ordering::Relaxed),
        bytes_in: r.counters.bytes_in.load(Ordering::Relaxed),
        bytes_out: r.counters.bytes_out.load(Ordering::Relaxed),
        check_failures: r.check_failures.load(Ordering::Relaxed),
        connect_failures: r.connect_failures.load(Ordering::Relaxed),
        idle_connections: r.idle_connections(),
        last_check: r.last_check(),
        retries: r.retries.load(Ordering::Relaxed),
        up_down: r.up_down.load(Ordering::Relaxed),
        downtime_ms: r.downtime_ms(),
    }
}
