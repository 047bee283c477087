//! Defaults of `cluster.toml` (documented in docs/configuration.md).

pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
/// `dead_ms` defaults to this many intervals (200 ms -> 1000 ms).
pub const DEAD_INTERVALS: u64 = 5;
pub const INIT_DEAD_MIN_MS: u64 = 3000;
pub const GARP_COUNT: u32 = 5;
pub const GARP_SPACING_MS: u64 = 200;
pub const GARP_REFRESH_MS: u64 = 0;
/// Duplicate-VIP check: the active node probes its VIPs this often (0 = off).
pub const CONFLICT_CHECK_MS: u64 = 1000;
/// How long a planned handover drains the old holder's connections in flight (docs/protocol.md).
pub const HANDOVER_DRAIN_MS: u64 = 500;
/// The shortest non-zero `conflict_check_ms`.
pub const CONFLICT_CHECK_MIN_MS: u64 = 100;
pub const HEALTH_INTERVAL_MS: u64 = 2000;
pub const HEALTH_RISE: u32 = 2;
pub const HEALTH_FALL: u32 = 5;
/// Default check timeout: this, or half the interval when that is shorter.
pub const HEALTH_TIMEOUT_MS: u64 = 1000;
pub const HTTP_CHECK_PATH: &str = "/";
pub const HTTP_CHECK_STATUS: u16 = 200;
pub const CONNECT_TIMEOUT_MS: u64 = 4000;
pub const CLIENT_TIMEOUT_MS: u64 = 50_000;
pub const SERVER_TIMEOUT_MS: u64 = 50_000;
pub const MAX_CONNECTIONS: u32 = 0;
pub const PERSISTENCE_TIMEOUT_S: u64 = 1800;
pub const PERSISTENCE_TABLE_SIZE: usize = 100_000;
pub const COOKIE_NAME: &str = "TANDEMSRV";
pub const WEIGHT: u32 = 100;
pub const MAX_WEIGHT: u32 = 256;
/// Listeners one service may open (ranges included).
pub const MAX_PORTS_PER_SERVICE: usize = 4096;
