//! The status document of one node, as types: what `GET /api/status` serves (schema in
//! `docs/admin-api.md`), what `tandem status` prints, what the System Overview page shows and what
//! `/metrics` exports. The daemon builds one [`Status`]; every reader takes fields from it, so a
//! reader cannot ask for a field the document does not have.
//!
//! Only data lives here (no I/O, no clocks): ages are already milliseconds, addresses are values.
//! Enums serialise as the strings the API has always carried.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

mod conflicts;
#[cfg(test)]
mod tests;

pub use conflicts::{VipClaimant, VipConflict, VipConflicts, mac_text};

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Status {
    pub node: Node,
    pub config: Config,
    pub cluster: Cluster,
    /// The sync session on TCP 7778; `null` on a standalone node.
    #[serde(default)]
    pub replication: Option<Replication>,
    pub services: Vec<Service>,
}

/// This node: identity, election state and VIPs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub address: IpAddr,
    pub state: NodeState,
    pub state_since_ms: u64,
    /// Why the node is in `fault`.
    pub fault: Option<String>,
    pub ping: Ping,
    /// Each ping node's own record (observability only: the election goes by `ping`); empty without ping nodes
    /// and from a node that predates it.
    #[serde(default)]
    pub ping_nodes: Vec<PingNode>,
    pub manage_vips: bool,
    pub interface: String,
    /// Every VIP of the configured services.
    pub vips: Vec<IpAddr>,
    /// The VIPs found on the interface at the last look.
    pub vips_held: Vec<IpAddr>,
    /// Duplicate-VIP detection: other MACs claiming this node's VIPs.
    #[serde(default)]
    pub vip_conflicts: VipConflicts,
    pub uptime_s: u64,
    /// `null` on a standalone node, and until the peer's first heartbeat.
    pub peer: Option<Peer>,
}

/// One ping node as this node's probes last heard it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct PingNode {
    pub address: IpAddr,
    /// Answered within the recent window (`fail_after` probe rounds plus one timeout).
    pub reachable: bool,
    /// Since its last answer; `null` until the first.
    pub last_reply_age_ms: Option<u64>,
    /// Round-trip time of that answer, in milliseconds; `null` until the first.
    pub rtt_ms: Option<f64>,
}

/// The peer as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Peer {
    pub name: String,
    /// `[node] peer` of this node's `node.toml`.
    pub address: Option<IpAddr>,
    pub role: Role,
    pub state: PeerState,
    pub alive: bool,
    pub last_heard_ms: u64,
    /// How long the peer's heartbeats have carried `state` (as this node heard them); `null` from a node that
    /// predates it.
    #[serde(default)]
    pub state_since_ms: Option<u64>,
    pub holds_vips: bool,
    pub config_generation: u64,
    /// Hex, as `config.digest`.
    pub config_digest: String,
    pub servers_up: u32,
    pub servers_total: u32,
}

/// The `cluster.toml` this node serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Config {
    pub generation: u64,
    pub digest: String,
    pub sync: ConfigSync,
    /// Reloads since start by outcome; zeros from a node that predates them.
    #[serde(default)]
    pub reloads: Reloads,
    /// Parts of it this node does not serve as written, and why: a TLS service whose certificates could not be
    /// loaded keeps its previous settings (or, new, is not served) until a reload retries it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// The labels of the services `not_applied` names, one each (`tandem_config_not_applied{service}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied_services: Vec<String>,
}

/// Reloads of `cluster.toml` since start: `tandem reload`, SIGHUP, the admin API, and on the secondary the
/// configurations the primary pushed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Reloads {
    pub ok: u64,
    /// Refused: invalid, or not applicable (the running configuration stays).
    pub rejected: u64,
}

/// Election counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Cluster {
    pub takeovers: u64,
    pub releases: u64,
    pub split_brains: u64,
    pub warn_time_exceeded: u64,
    pub vip_failures: u64,
    pub last_event: Option<String>,
    pub heartbeats: Heartbeats,
    /// Heartbeat wire versions (rolling upgrades: docs/protocol.md); all zero from a node that predates them.
    #[serde(default)]
    pub wire: Wire,
    /// VIP announcement frames sent since start; zeros from a node that predates them.
    #[serde(default)]
    pub garp_sent: GarpSent,
    /// Proxied connections closed because this node gave up their VIPs (client reset, server side closed); zero
    /// from a node that predates it.
    #[serde(default)]
    pub released_connections_closed: u64,
}

/// VIP announcement frames this node handed to the kernel since start, by address family.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct GarpSent {
    /// Gratuitous ARP frames (IPv4 VIPs).
    pub ipv4: u64,
    /// Unsolicited neighbour advertisements (IPv6 VIPs).
    pub ipv6: u64,
}

/// Which heartbeat wire versions this node and its peer speak.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Wire {
    /// The versions this node reads and speaks: `min..=max`.
    pub min: u16,
    pub max: u16,
    /// The version this node's heartbeats go out in now: the highest the peer reads too.
    pub speaking: u16,
    /// The version of the peer's latest authenticated heartbeat; `null` until heard.
    pub peer_version: Option<u16>,
    /// The peer is alive but speaks a version this node cannot read (its state is unknown: this node never takes
    /// over because of it); `null` otherwise.
    pub incompatible_peer: Option<IncompatiblePeer>,
    /// Authenticated heartbeats of a version this node cannot read, received since start.
    pub incompatible_received: u64,
}

/// A peer alive in a heartbeat wire version this node cannot read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct IncompatiblePeer {
    pub name: String,
    pub version: u16,
    pub last_heard_ms: u64,
}

impl Wire {
    /// One line for `tandem status` when the pair does not speak one version (a rolling upgrade in progress), or
    /// `None` when there is nothing to say.
    pub fn mixed(&self) -> Option<String> {
        if let Some(peer) = &self.incompatible_peer {
            return Some(format!(
                "peer {} speaks heartbeat wire version {}, this node reads {}..={}: peer alive, state unknown \
                 (upgrade this node next; it does not take over because of this)",
                peer.name, peer.version, self.min, self.max
            ));
        }
        match self.peer_version {
            Some(peer) if peer < self.max => Some(format!(
                "peer speaks older heartbeat wire version {peer}; this node (up to {}) answers in {}",
                self.max, self.speaking
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Heartbeats {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Heartbeats the peer should have sent that never arrived (gaps, counted when the next one arrives); 0 from
    /// a node that predates it.
    #[serde(default)]
    pub missed: u64,
    /// Dropped datagrams by reason, zeros included.
    pub rejected: BTreeMap<String, u64>,
}

/// Replication of the stick tables and the config push (TCP 7778).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Replication {
    pub connected: bool,
    /// `dial` or `accept`.
    pub direction: String,
    pub peer: String,
    pub protocol_version: Option<u16>,
    pub tables: Vec<TableSync>,
    pub last_ack_age_ms: Option<u64>,
    /// Connected, and no snapshot of the peer's tables in progress.
    pub caught_up: bool,
    pub config: ConfigPush,
    pub counters: SyncCounters,
    /// Why the last session closed.
    pub last_error: Option<String>,
    /// The kernel's smoothed round-trip time of the session's TCP connection, in microseconds; `null` while
    /// disconnected and from a node that predates it.
    #[serde(default)]
    pub rtt_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct TableSync {
    pub label: String,
    pub local_entries: u64,
    /// `null` when the peer has no such table or never said.
    pub peer_entries: Option<u64>,
    pub resyncing: bool,
}

/// Both nodes' config versions as the sync session knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ConfigPush {
    pub local: Option<ConfigVersion>,
    pub peer: Option<ConfigVersion>,
    pub in_sync: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ConfigVersion {
    pub generation: u64,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct SyncCounters {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sessions_opened: u64,
    /// Rejected inputs and closed sessions by reason, zeros included.
    pub rejected: BTreeMap<String, u64>,
    pub replication: ReplicationCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ReplicationCounters {
    pub resyncs_sent: u64,
    pub resyncs_received: u64,
    pub resync_fallbacks: u64,
    pub updates_sent: u64,
    pub updates_applied: u64,
    pub updates_duplicate: u64,
    pub entries_sent: u64,
    pub entries_applied: u64,
    pub entries_ignored: u64,
    pub unknown_table_messages: u64,
    /// Admin-state entries sent to the peer, applied from it, refused from it.
    #[serde(default)]
    pub admin_entries_sent: u64,
    #[serde(default)]
    pub admin_entries_applied: u64,
    #[serde(default)]
    pub admin_entries_refused: u64,
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Service {
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
    pub stick_table_size: u64,
    pub servers: Vec<Server>,
    /// Response classes, latency histograms, stick-table capacity, access-log counts; zeros from a node that
    /// predates them.
    #[serde(default)]
    pub traffic: ServiceTraffic,
}

impl Service {
    /// Real servers passing their health checks.
    pub fn servers_up(&self) -> usize {
        self.servers
            .iter()
            .filter(|server| server.health == Health::Up)
            .count()
    }
}

/// A service's data-path figures, read from the proxy's atomics when the document is built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ServiceTraffic {
    /// HTTP responses sent to clients by status class, the proxy's own (503, 502, 504, 400) included; all 0 for
    /// a TCP service.
    pub http_responses: HttpResponses,
    /// HTTP: from the request sent to the real server until its response head arrived (empty for TCP).
    pub response_seconds: Histogram,
    /// New connections to real servers, until established (a reused idle connection is no connect).
    pub connect_seconds: Histogram,
    /// Most entries the stick table holds (0: no table).
    pub stick_table_capacity: u64,
    /// Entries evicted to make room for new ones since the table was created.
    pub stick_table_evictions: u64,
    /// Access-log lines queued for the writer, and lines dropped because its queue was full.
    pub access_log_lines: u64,
    pub access_log_dropped: u64,
    /// TLS services only: handshakes and certificates (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServiceTls>,
}

/// A TLS service's handshakes since the node started and the certificates it serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ServiceTls {
    /// Completed handshakes, and of those: resumed ones, by version, by the protocol ALPN agreed.
    pub handshakes: u64,
    pub resumed: u64,
    pub tls12: u64,
    pub tls13: u64,
    pub alpn_h2: u64,
    pub alpn_http1: u64,
    pub failures: TlsFailures,
    pub certificates: Vec<TlsCertificate>,
}

/// Failed TLS handshakes by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct TlsFailures {
    /// Not done within the handshake timeout.
    pub timeout: u64,
    /// Not TLS (garbage), or a malformed or unexpected message.
    pub protocol: u64,
    /// No TLS version, cipher suite or other parameter in common.
    pub no_shared_parameters: u64,
    /// The client closed or reset the connection mid-handshake.
    pub closed: u64,
    pub other: u64,
}

impl TlsFailures {
    /// `(reason, count)` in the order of the metric's `reason` label values.
    pub fn reasons(&self) -> [(&'static str, u64); 5] {
        [
            ("timeout", self.timeout),
            ("protocol", self.protocol),
            ("no_shared_parameters", self.no_shared_parameters),
            ("closed", self.closed),
            ("other", self.other),
        ]
    }
}

/// One certificate a TLS service serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct TlsCertificate {
    /// The file as written in `cluster.toml`.
    pub file: String,
    /// The DNS names it covers (wildcards as written).
    pub names: Vec<String>,
    /// Its `notBefore`, Unix seconds (0 from a node that predates it).
    #[serde(default)]
    pub not_before_unix: i64,
    /// Its `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct HttpResponses {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// A status outside 100..=599.
    pub other: u64,
}

impl HttpResponses {
    /// `(class, count)` in the order of the metric's `code` label values.
    pub fn classes(&self) -> [(&'static str, u64); 6] {
        [
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
            ("other", self.other),
        ]
    }
}

/// A latency histogram: `cumulative[i]` observations took at most `le[i]` seconds, `count` in all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Histogram {
    pub le: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// A real server's health and retry history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct ServerEvents {
    /// Connects to this server that failed and were retried on another server.
    pub retries: u64,
    /// UP -> DOWN transitions.
    pub up_down: u64,
    /// Time spent down after having been up (the current down period included).
    pub downtime_ms: u64,
    /// How long the last completed health check took; `null` before the first.
    pub check_duration_ms: Option<f64>,
}

/// Fields that do not apply to `mode` are 0 / empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Persistence {
    pub mode: PersistenceMode,
    pub timeout_s: u64,
    pub table_size: u64,
    pub cookie_name: String,
}

/// One real server of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct Server {
    pub label: String,
    pub address: IpAddr,
    /// `null`: the port the client connected to.
    pub port: Option<u16>,
    pub weight: u32,
    pub health: Health,
    pub health_reason: String,
    /// How long `health` has held: since its last change, or since the server was configured; `null` from a
    /// node that predates it.
    #[serde(default)]
    pub health_since_ms: Option<u64>,
    pub admin_state: AdminState,
    /// Where `admin_state` came from; `null`: no operator ever set it (online since start).
    #[serde(default)]
    pub admin_source: Option<AdminSource>,
    pub current_connections: u64,
    pub total_connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub check_failures: u64,
    pub connect_failures: u64,
    /// Idle upstream connections kept for reuse (HTTP mode).
    pub idle_connections: u64,
    pub last_check: Option<LastCheck>,
    /// Retries, UP -> DOWN transitions, downtime, check duration; zeros from a node that predates them.
    #[serde(default)]
    pub events: ServerEvents,
}

/// Who set a server's admin state, and how this node learnt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct AdminSource {
    pub via: AdminVia,
    /// The node whose operator set it.
    pub set_by: String,
    /// When, in Unix milliseconds (the hybrid clock of `set_by`: its wall clock, or just after
    /// a later change it had seen).
    pub at_unix_ms: u64,
}

impl fmt::Display for AdminSource {
    /// "operator on lb1 at 2026-12-06 15:55:22 UTC", "replicated from the peer, set by an
    /// operator on lb2 at …", "restored from state_dir, set by an operator on lb1 at …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            AdminVia::Operator => f.write_str("operator")?,
            AdminVia::Replicated => f.write_str("replicated from the peer, set by an operator")?,
            AdminVia::Restored => f.write_str("restored from state_dir, set by an operator")?,
        }
        write!(f, " on {} at {}", self.set_by, UtcTime(self.at_unix_ms))
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub struct UtcTime(pub u64);

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = tandem_types::civil_from_days(days as i64);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }
}

/// The last completed health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct LastCheck {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub detail: String,
}

/// Declares a string-valued enum: serde names, `as_str`, `Display` and `ALL` from one list.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string the document carries.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A node's configured role.
    Role {
        Primary = "primary",
        Secondary = "secondary",
    }
}

string_enum! {
    /// A node's election state.
    NodeState {
        /// Just started: waiting up to `init_dead_ms` to hear the peer.
        Init = "init",
        Standby = "standby",
        /// Wants to become active; waits for the peer's grant.
        Claiming = "claiming",
        Acquiring = "acquiring",
        Active = "active",
        Releasing = "releasing",
        /// Adding or removing the VIPs failed.
        Fault = "fault",
        Stopped = "stopped",
    }
}

string_enum! {
    /// Whether the node reaches any configured ping node.
    Ping {
        NotConfigured = "notconfigured",
        Reachable = "reachable",
        Unreachable = "unreachable",
    }
}

string_enum! {
    /// A real server's health-check verdict.
    Health {
        Up = "up",
        Down = "down",
    }
}

string_enum! {
    /// The appliance's per-server buttons.
    AdminState {
        Online = "online",
        /// Only persistent clients get new connections.
        Drain = "drain",
        /// No new connections.
        Halt = "halt",
    }
}

string_enum! {
    /// How this node learnt a server's admin state.
    AdminVia {
        /// An operator on this node.
        Operator = "operator",
        /// From the peer over the sync session.
        Replicated = "replicated",
        /// Read from `state_dir` at start.
        Restored = "restored",
    }
}

string_enum! {
    Mode {
        Tcp = "tcp",
        Http = "http",
    }
}

string_enum! {
    Balance {
        WeightedLeastConnections = "weighted-least-connections",
        RoundRobin = "round-robin",
    }
}

string_enum! {
    PersistenceMode {
        None = "none",
        SourceIp = "source-ip",
        HttpCookie = "http-cookie",
        LastSuccessful = "last-successful",
    }
}

/// The peer's state: its own election state while its heartbeats arrive, `dead` once they stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// No heartbeat within `dead_ms`.
    Dead,
    #[serde(untagged)]
    Heard(NodeState),
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Dead => "dead",
            PeerState::Heard(state) => state.as_str(),
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether both nodes serve the same `cluster.toml`; one string in the document (`config.sync`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigSync {
    /// No peer configured.
    Standalone,
    /// Configured with a peer that has not been heard yet.
    PeerNotHeard,
    InSync,
    /// Why the versions differ.
    OutOfSync(String),
}

impl ConfigSync {
    const STANDALONE: &'static str = "standalone";
    const PEER_NOT_HEARD: &'static str = "peer not heard yet";
    const IN_SYNC: &'static str = "in sync";
    const OUT_OF_SYNC: &'static str = "config out of sync: ";

    /// Nothing to reconcile: in sync, or no peer at all (`tandem_config_in_sync` is 1).
    pub fn is_settled(&self) -> bool {
        matches!(self, ConfigSync::Standalone | ConfigSync::InSync)
    }
}

impl fmt::Display for ConfigSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSync::Standalone => f.write_str(Self::STANDALONE),
            ConfigSync::PeerNotHeard => f.write_str(Self::PEER_NOT_HEARD),
            ConfigSync::InSync => f.write_str(Self::IN_SYNC),
            ConfigSync::OutOfSync(reason) => write!(f, "{}{reason}", Self::OUT_OF_SYNC),
        }
    }
}

impl Serialize for ConfigSync {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigSync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            Self::STANDALONE => ConfigSync::Standalone,
            Self::PEER_NOT_HEARD => ConfigSync::PeerNotHeard,
            Self::IN_SYNC => ConfigSync::InSync,
            // Any other text is a difference the node explained in words.
            other => ConfigSync::OutOfSync(
                other
                    .strip_prefix(Self::OUT_OF_SYNC)
                    .unwrap_or(other)
                    .to_owned(),
            ),
        })
    }
}

/// The admin endpoint itself (`GET /api/admin`): where it listens and how a client checks it.
/// A document of its own, beside [`Status`], so the status schema stays as documented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEndpoint {
    /// `http://ADDRESS:PORT` or `https://ADDRESS:PORT` (`[admin] listen`).
    pub url: String,
    /// SHA-256 of the HTTPS certificate, `AB:CD:...`; `null` on plain HTTP.
    pub tls_fingerprint: Option<String>,
    /// The certificate was generated by the node (pin its fingerprint: `--admin-fingerprint`).
    pub self_signed: bool,
    /// `[admin] user` and `password_file` are set: POSTs over HTTP(S) are possible.
    pub credentials: bool,
    /// The local CLI's UNIX socket, when it is served.
    pub socket: Option<String>,
}
