//! `tandem run`: wires config, proxy, election, VIPs, replication and the admin endpoint together.
//! Every decision lives in the crates; this module only connects their inputs and outputs.
//!
//! [`Daemon`] is the hub; each concern is a file of its own: `startup` (process, runtimes, the
//! heartbeat thread, bringing the parts up and down), `vips` (the VIP layer as the election drives
//! it), `config_flow` (reload from disk, configs pushed by the primary), `upkeep` (background
//! watchers), `status` (the typed status document), `admin` (the admin endpoint's backend), `notify`
//! (systemd's READY/STATUS/RELOADING/STOPPING/WATCHDOG), `hooks` (node.toml `[hooks]` commands),
//! `conflicts` (duplicate-VIP detection), `drain` (the drain of a planned handover) and `ports` (the fixed ports
//! against the ephemeral range).

mod admin;
mod admin_states;
mod config_flow;
mod conflicts;
mod drain;
pub mod guardian;
mod hooks;
mod logging;
mod notify;
mod ports;
mod privileges;
mod pushed_files;
pub mod startup;
mod status;
mod upkeep;
mod vips;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tandem_cluster::driver::{ClusterHandle, ClusterStatus};
use tandem_cluster::election::Timings;
use tandem_config::{ClusterConfig, HeartbeatConfig, NodeConfig};
use tandem_proxy::Proxy;
use tandem_sync::{SyncHandle, SyncStatus};
use vips::VipState;

/// Writes `bytes` to `.NAME.tmp` beside `path`, fsyncs it, renames it over `path` and fsyncs the
/// directory: after a crash the file holds the old or the new content, never half of either.
/// (The pushed `cluster.toml` and the admin states; `tandem-config` and `tandem-cluster` keep their
/// own for the generation record and the boot epoch.)
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The previous file kept as `NAME.prev`, then the new one written atomically.
pub(crate) fn replace_keeping_previous(
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    if path.exists() {
        let mut previous = path.as_os_str().to_owned();
        previous.push(".prev");
        std::fs::copy(path, previous)?;
    }
    write_atomically(path, bytes)
}

/// The configuration being served, with its version.
#[derive(Clone)]
pub struct Current {
    pub cluster: Arc<ClusterConfig>,
    pub text: String,
    /// The certificate files `cluster.toml` names, as read when it was accepted (what the push carries).
    pub files: Vec<tandem_sync::ConfigFile>,
    pub digest: String,
    pub generation: u64,
}

/// The running node: the parts it wires together and the configuration it serves.
pub struct Daemon {
    node: NodeConfig,
    cluster_path: PathBuf,
    node_path: PathBuf,
    current: Mutex<Current>,
    proxy: Proxy,
    cluster: ClusterHandle,
    vips: Arc<tokio::sync::Mutex<VipState>>,
    /// GARP / NA frames sent, read without the VIP layer's lock.
    garp_sent: vips::GarpSent,
    /// Duplicate-VIP detection (conflicts.rs): the detector's record, read by status.
    conflicts: Arc<conflicts::ConflictState>,
    /// Addresses found on the interface at the last look (what `status` calls "VIPs held").
    vips_seen: Mutex<Vec<IpAddr>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// On the secondary: a push and `tandem reload`'s retry of the pushed configuration apply one at a time (the
    /// push is applied from the sync session's synchronous hand-over, so not under `reload_lock`).
    applying_pushed: Mutex<()>,
    started: Instant,
    /// The TCP 7778 session; absent on a standalone node.
    sync: std::sync::OnceLock<SyncHandle>,
    /// node.toml `[hooks]`, run on cluster transitions.
    hooks: Arc<hooks::HookRunner>,
    /// Operators' Drain/Halt/Online: saved in state_dir, replicated to the peer.
    admin_states: Arc<admin_states::DaemonAdminStates>,
    /// Reloads by outcome.
    reloads: config_flow::ReloadCounts,
}

impl Daemon {
    pub fn current(&self) -> Current {
        match self.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn cluster_status(&self) -> ClusterStatus {
        self.cluster.status.borrow().clone()
    }

    fn sync_status(&self) -> Option<SyncStatus> {
        self.sync.get().map(|sync| sync.status().borrow().clone())
    }
}

/// The election's timings from `[heartbeat]`: at start-up and on every reload that changes them.
pub(super) fn election_timings(heartbeat: &HeartbeatConfig) -> Timings {
    Timings {
        interval_ms: heartbeat.interval_ms,
        dead_ms: heartbeat.dead_ms,
        warn_ms: heartbeat.warn_ms,
        init_dead_ms: heartbeat.init_dead_ms,
    }
}

/// The config digest as the heartbeat carries it (hex as the config crate prints it).
pub fn digest_bytes(digest_hex: &str) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(digest_hex, &mut bytes).is_err() {
        tracing::error!(digest_hex, "config digest is not 64 hex digits");
    }
    bytes
}
