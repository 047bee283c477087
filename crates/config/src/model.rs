//! The validated configuration model. These types are the contract other crates build on:
//! add fields freely, but do not rename or remove existing ones.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `cluster.toml`: replicated from the primary to the secondary. No secrets, nothing node-specific.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster: ClusterSection,
    pub heartbeat: HeartbeatConfig,
    pub health_check: HealthCheckConfig,
    /// Proxy-wide defaults (timeouts, limits); each service may override.
    pub proxy: ProxyDefaults,
    /// Cluster-wide fallback server used by HTTP services when no real server is up.
    pub fallback: Option<FallbackServer>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSection {
    /// Cluster id: heartbeats and sync frames of another cluster are dropped.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatConfig {
    pub interval_ms: u64,
    pub dead_ms: u64,
    pub warn_ms: u64,
    pub init_dead_ms: u64,
    pub auto_failback: bool,
    pub ping_nodes: Vec<IpAddr>,
    /// Gratuitous ARP / unsolicited NA announcements after taking the VIPs.
    pub garp_count: u32,
    pub garp_spacing_ms: u64,
    /// Periodic re-announcement while active; 0 = off.
    pub garp_refresh_ms: u64,
    pub garp_form: GarpForm,
    /// Duplicate-VIP check: while active, probe every VIP this often and watch for other MACs claiming one;
    /// 0 = off. Absent from a serialised config of a release that predates it: the default.
    #[serde(default = "default_conflict_check_ms")]
    pub conflict_check_ms: u64,
    /// A planned handover drains for this long: the new holder forwards segments of connections it does not know
    /// to the old holder, which keeps the VIPs (unannounced) and serves what it had in flight; 0 = off.
    #[serde(default = "default_handover_drain_ms")]
    pub handover_drain_ms: u64,
}

fn default_handover_drain_ms() -> u64 {
    crate::cluster::defaults::HANDOVER_DRAIN_MS
}

fn default_conflict_check_ms() -> u64 {
    crate::cluster::defaults::CONFLICT_CHECK_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GarpForm {
    Request,
    Reply,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckConfig {
    pub interval_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// Must be shorter than the interval.
    pub timeout_ms: u64,
    pub check: CheckKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CheckKind {
    /// Connect to the real server's port (the guide's "Connect to Port").
    Connect,
    /// HTTP GET `path`, healthy when the status equals `expect_status`.
    Http { path: String, expect_status: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyDefaults {
    pub connect_timeout_ms: u64,
    /// Idle timeout on the client side.
    pub client_timeout_ms: u64,
    /// Idle timeout on the server side.
    pub server_timeout_ms: u64,
    /// Per-service connection limit (0 = unlimited).
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackServer {
    pub address: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub label: String,
    pub vip: IpAddr,
    /// Listening ports, ranges already expanded, in the order written.
    pub ports: Vec<u16>,
    pub mode: Mode,
    pub balance: Balance,
    pub persistence: Persistence,
    /// Effective health check (cluster defaults merged with this service's override).
    pub health_check: HealthCheckConfig,
    /// Effective proxy settings (cluster defaults merged with this service's override).
    pub proxy: ProxyDefaults,
    /// Effective fallback server: this service's own, else the cluster-wide one (already
    /// merged by the loader; `None` only when neither is configured).
    pub fallback: Option<FallbackServer>,
    pub servers: Vec<Server>,
    /// TLS termination (HTTP mode only): `tls = { certificates = [...], redirect_http = 80 }`.
    pub tls: Option<TlsSettings>,
}

/// TLS termination of an HTTP-mode service. Every port of the service speaks HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// In the order written; the certificate is chosen by SNI, the first one without SNI or on no match.
    pub certificates: Vec<CertificateFile>,
    /// A port on the same VIP where plain HTTP is answered with a redirect to `https://` (written
    /// `redirect_http = 80`, or `true` for port 80).
    pub redirect_http: Option<u16>,
}

/// One PEM file (chain and private key) named by a TLS service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFile {
    /// As written in `cluster.toml`: relative to its directory (the name the config push carries).
    pub file: String,
    /// Where it was read: `file` resolved against `cluster.toml`'s directory (node-local, never pushed).
    #[serde(skip)]
    pub path: PathBuf,
    /// SHA-256 hex of the file's bytes when the config was loaded: in the canonical form, so a changed
    /// certificate is a changed service (a reload swaps it) and the config digest covers the certificates.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcp,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    WeightedLeastConnections,
    /// Written "round-robin" (weighted round robin).
    RoundRobin,
}

/// Fields that do not apply to `mode` are 0 / empty (e.g. `table_size` for http-cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    pub mode: PersistenceMode,
    /// Expiry from last use in seconds; 0 = never expires.
    pub timeout_s: u64,
    /// Stick-table size for table-backed modes (source-ip, last-successful).
    pub table_size: usize,
    /// Cookie name for http-cookie persistence.
    pub cookie_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistenceMode {
    None,
    SourceIp,
    HttpCookie,
    LastSuccessful,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub label: String,
    pub address: IpAddr,
    /// Real-server port; `None` = the VIP port the client connected to (no translation).
    pub port: Option<u16>,
    /// 0..=256; 0 takes no new connections.
    pub weight: u32,
}

impl Server {
    /// The port to connect to for a client that arrived on `vip_port`.
    pub fn target_port(&self, vip_port: u16) -> u16 {
        self.port.unwrap_or(vip_port)
    }
}

/// `node.toml`: this node only; never replicated, never sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub admin: AdminConfig,
    /// The guide's non-replicated settings (hostname & DNS, interfaces, routing, ...), kept as written.
    pub local: LocalSettings,
    /// `[tuning]`: how this node's daemon runs its engines and threads (defaults when the section is absent).
    #[serde(default)]
    pub tuning: Tuning,
    /// `[hooks]`: commands run on cluster transitions (none when the section is absent).
    #[serde(default)]
    pub hooks: crate::hooks_section::Hooks,
    /// `[access_log]`: one line per HTTP request / TCP connection (off when the section is absent).
    #[serde(default)]
    pub access_log: crate::access_log_section::AccessLogConfig,
    /// `[metrics]`: the read-only Prometheus listener (none when the section is absent).
    #[serde(default)]
    pub metrics: crate::metrics_section::MetricsConfig,
    /// `[log]`: text (journald under systemd) or JSON lines.
    #[serde(default)]
    pub log: crate::log_section::LogConfig,
}

/// `[node] role`: the one role type every part uses.
pub use tandem_types::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSection {
    pub name: String,
    pub role: Role,
    /// Interface that carries the VIPs.
    pub interface: String,
    /// This node's heartbeat/sync address.
    pub address: IpAddr,
    /// `None`: standalone node that becomes active on its own.
    pub peer: Option<IpAddr>,
    pub heartbeat_port: u16,
    pub sync_port: u16,
    /// false: addresses are moved by something else (cloud, tests).
    pub manage_vips: bool,
    pub secret_file: PathBuf,
    pub state_dir: PathBuf,
    /// `vip_networks`: the networks a VIP may come from (empty: any). A `cluster.toml` with a VIP
    /// outside them, local or pushed by the primary, is refused on this node.
    #[serde(default)]
    pub vip_networks: Vec<IpNetwork>,
    /// The unprivileged account a daemon started as root switches to once its sockets are bound (it keeps
    /// only CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE and CAP_SYS_NICE); a missing account: it stays root
    /// and says so. Under systemd the unit's `User=` does this instead.
    pub user: String,
}

/// An IP network written `address/prefix` (`192.168.1.0/24`, `2001:db8::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpNetwork {
    /// `None` when the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Self { address, prefix })
    }

    /// Whether `ip` lies in this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            let keep = u32::from(prefix).min(width);
            if keep == 0 { 0 } else { bits >> (width - keep) }
        }
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("\"{text}\" is not a network like \"192.168.1.0/24\""))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("\"{address}\" in \"{text}\" is not an IP address"))?;
        prefix
            .parse::<u8>()
            .ok()
            .and_then(|prefix| IpNetwork::new(address, prefix))
            .ok_or_else(|| {
                format!("\"/{prefix}\" in \"{text}\" is not a prefix length for {address}")
            })
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Basic-auth user for actions that change state; `None` = no auth (loopback only).
    pub user: Option<String>,
    /// File holding the admin password's hash (`tandem password FILE`; node-local secret).
    pub password_file: Option<PathBuf>,
    /// The local CLI's UNIX socket (file permissions are its authentication).
    #[serde(default = "default_admin_socket")]
    pub socket: PathBuf,
    /// Host names the listener answers to besides IP literals and `localhost` (DNS-rebinding
    /// defence: any other `Host` header is refused).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// PEM certificate chain and key for HTTPS; without them a non-loopback listener serves a
    /// self-signed certificate generated in `state_dir`.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// `node::defaults::ADMIN_SOCKET`, written out so the model depends on no reader.
fn default_admin_socket() -> PathBuf {
    PathBuf::from("/run/tandem/admin.sock")
}

impl AdminConfig {
    /// Whether the listener speaks HTTPS: a configured certificate, or any non-loopback address.
    pub fn uses_tls(&self) -> bool {
        self.tls_certificate.is_some() || !self.listen.ip().is_loopback()
    }
}

/// Non-replicated appliance settings, one free-form table per WebUI page of the guide's table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalSettings {
    pub sections: std::collections::BTreeMap<String, toml::Table>,
}

/// `[tuning]` of `node.toml`: how this node's daemon serves (engines, relays, threads, priorities).
/// Node-local and never replicated: the two nodes may differ. `Default` is what the daemon does
/// without the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tuning {
    /// The engine of HTTP-mode services.
    pub http_engine: HttpEngineKind,
    /// When the `batched` engine's threads batch their small writes through io_uring.
    pub http_write_batching: HttpWriteBatching,
    /// The most microseconds a `batched` engine's thread polls for work before it sleeps, while work keeps coming
    /// that soon (adaptive); 0 sleeps at once.
    pub http_poll_us: u32,
    /// How TCP-mode connections are relayed once both sides are connected.
    pub tcp_relay: TcpRelayKind,
    /// io_uring relays may yield the CPU to a local backend before sleeping (see the proxy's
    /// `ProxyOptions::relay_yield`).
    pub relay_yield: bool,
    /// Worker threads of the runtime, the HTTP threads and the relay threads; 0 = one per core.
    pub workers: u32,
    /// The heartbeat thread asks for real-time priority (SCHED_RR; kept normal without CAP_SYS_NICE).
    pub heartbeat_realtime: bool,
}

/// `[tuning] http_poll_us` when not written.
pub const DEFAULT_HTTP_POLL_US: u32 = 0;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            http_engine: HttpEngineKind::Batched,
            http_write_batching: HttpWriteBatching::Adaptive,
            http_poll_us: DEFAULT_HTTP_POLL_US,
            tcp_relay: TcpRelayKind::Auto,
            relay_yield: true,
            workers: 0,
            heartbeat_realtime: true,
        }
    }
}

impl Tuning {
    /// `workers`, or one per core when 0 (2 when the core count is unknown).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        }
    }
}

/// `[tuning] http_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpEngineKind {
    /// The native engine on threads of its own (one per worker), small writes batched through
    /// io_uring; in the main runtime's tasks if those threads cannot start.
    Batched,
    /// The native engine in the main runtime's tasks, writes not batched.
    Tasks,
    /// The hyper engine: a fallback should a client or server disagree with the native one.
    Hyper,
}

impl HttpEngineKind {
    /// The name as written in `node.toml`.
    pub fn name(self) -> &'static str {
        match self {
            HttpEngineKind::Batched => "batched",
            HttpEngineKind::Tasks => "tasks",
            HttpEngineKind::Hyper => "hyper",
        }
    }
}

/// `[tuning] http_write_batching`: when the `batched` HTTP engine's threads batch their small writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpWriteBatching {
    /// While a thread's recent rounds of writes are large (saturated beside a local backend); written directly
    /// with a plain `send` while they are small.
    Adaptive,
    /// Always (the behaviour before `adaptive`).
    Always,
    /// Never: a plain `send` per write, on the engine's threads.
    Never,
}

/// `[tuning] tcp_relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpRelayKind {
    /// One io_uring ring per worker thread; poll loops (with a warning) where io_uring cannot be
    /// set up (old kernel, `kernel.io_uring_disabled`, a seccomp filter).
    Auto,
    /// io_uring rings only: the daemon does not start where io_uring cannot be set up (for
    /// measurements that must not silently run on the poll loops).
    Uring,
    /// One poll loop per worker thread.
    Poll,
    /// In each connection's task (the earliest way, kept as a fallback).
    Tasks,
}

impl TcpRelayKind {
    /// The name as written in `node.toml`.
    pub fn name(self) -> &'static str {
        match self {
            TcpRelayKind::Auto => "auto",
            TcpRelayKind::Uring => "uring",
            TcpRelayKind::Poll => "poll",
            TcpRelayKind::Tasks => "tasks",
        }
    }
}
