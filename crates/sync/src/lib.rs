//! tandem-sync: the one authenticated TCP session between the two nodes (port 7778).
//!
//! The daemon gives it the stick tables, a [`ConfigSink`] that validates and applies a pushed
//! `cluster.toml`, and reads back a [`SyncStatus`]. See `docs/protocol.md` for the wire format.
//!
//! What each module owns:
//! - [`wire`]: payload encoding (bincode), protocol version, frame size limit; with the `driver`
//!   feature also the socket's length-delimited codec.
//! - [`handshake`]: the challenge-response session opening (the dialer proves first) and key
//!   derivation.
//! - [`admission`]: which incoming connections may run a handshake (the peer's address only,
//!   per-source and global limits, evictions, failure back-off).
//! - [`frame`]: sealing and opening of encrypted, authenticated, counted frames (AEAD).
//! - [`session`]: one open session's framing state (seal, open, silence and keepalive checks).
//! - [`admin_states`]: the operators' Online/Drain/Halt per server, merged last-writer-wins by a
//!   hybrid logical clock; exchanged by the engine as replication messages.
//! - [`replication`]: stick-table replication (resume, snapshots, change log, acks).
//! - [`config_push`]: `cluster.toml` push from the primary to the secondary.
//! - [`engine`]: the policy around them: what is sent when (control messages, keepalive sizes,
//!   table data), the silence and stall timeouts, the polling tick, reconnect back-off and when
//!   the status is published, all on the caller's clock ([`SyncEngine::next_timeout`]).
//! - [`status`], [`reject`]: what is reported, and why input was refused.
//! - `driver` (feature `driver`, on by default): the thin tokio driver (`spawn_sync`) that
//!   dials or accepts, moves frames between the socket and the engine and sleeps until the
//!   engine's next deadline.
//!
//! Everything but `driver` is sans-IO and builds without tokio, tokio-util or futures:
//! `cargo build -p tandem-sync --no-default-features`,
//! `cargo test -p tandem-sync --no-default-features --lib`.
//!
//! # Wiring it into the daemon
#![cfg_attr(feature = "driver", doc = "```no_run")]
#![cfg_attr(not(feature = "driver"), doc = "```ignore")]
//! # async fn example(tables: tandem_sync::SharedTables, clock: tandem_stick::Clock) -> std::io::Result<()> {
//! use tandem_sync::*;
//! struct Sink; // the daemon's: validate like `tandem check`, write atomically, apply live
//! impl ConfigSink for Sink {
//!     fn offer(&mut self, bytes: &[u8], files: &[ConfigFile], generation: u64, digest: &str)
//!         -> Result<(), String> {
//!         # let _ = (bytes, files, generation, digest);
//!         Ok(())
//!     }
//! }
//! let secret = Secret::from_file_contents(&std::fs::read("/etc/tandem/secret")?)
//!     .map_err(std::io::Error::other)?;
//! let params = SyncParams {
//!     local: "192.168.1.21:7778".parse().unwrap(),   // node.address : node.sync_port
//!     peer: "192.168.1.22:7778".parse().unwrap(),    // node.peer : node.sync_port
//!     identity: Identity::new("openstack", secret),  // [cluster] name
//!     role: ConfigRole::Primary,                     // node.role
//!     settings: SyncSettings::default(),
//! };
//! let running = LocalConfig {
//!     bytes: std::fs::read("/etc/tandem/cluster.toml")?,
//!     files: Vec::new(),                             // the certificates it names, by name
//!     version: ConfigVersion { generation: 7, digest: "ab12…".into() },
//! };
//! let handle = spawn_sync(params, tables, clock, Box::new(Sink), Some(running), false).await?;
//! handle.set_active(true);            // from the election
//! let connected = handle.status().borrow().connected; // copy out: never hold the borrow
//! # let _ = connected;
//! # Ok(()) }
//! ```
//! `ConfigSink::offer` runs on the sync task: keep it to validation, a few small file writes and
//! handing the new configuration to the proxy. Never keep a `borrow()` of the status channel
//! across an `.await` (it blocks the publisher).

pub mod admin_states;
pub mod admission;
pub mod config_push;
#[cfg(feature = "driver")]
pub mod driver;
pub mod engine;
pub mod frame;
pub mod handshake;
pub mod reject;
pub mod replication;
pub mod session;
pub mod status;
pub mod wire;

pub use admin_states::{AdminEntry, AdminMode, AdminStates, Origin, SharedAdminStates};
pub use admission::HandshakeLimits;
pub use config_push::{
    ConfigFile, ConfigRole, ConfigSink, ConfigSyncState, ConfigVersion, FILES_PROTOCOL_VERSION,
    LocalConfig, check_file_name, check_files,
};
#[cfg(feature = "driver")]
pub use driver::{SharedTables, SyncHandle, spawn_sync};
pub use engine::{SyncEngine, SyncParams, SyncSettings, dials};
pub use handshake::Identity;
pub use reject::{RejectCounters, RejectLog, RejectReason, Rejection};
pub use status::{ConfigStatus, SyncCounters, SyncStatus, TableSyncStatus};
pub use tandem_types::{Secret, SecretTooShort};
