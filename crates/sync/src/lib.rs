//! tandem-sync: the one authenticated TCP session between the two nodes (port 7778).
//!
//! Owns the sync wire format ([`wire`], [`frame`]), the session opening ([`handshake`]),
//! stick-table replication and `cluster.toml` push (sans-IO state machines) and the thin tokio
//! driver that runs them. The daemon gives it the stick tables, a [`ConfigSink`] that validates
//! and applies a pushed `cluster.toml`, and reads back a [`SyncStatus`]. See `PROTOCOL.md`.

pub mod config_push;
pub mod driver;
pub mod frame;
pub mod handshake;
pub mod reject;
pub mod replication;
pub mod secret;
pub mod session;
pub mod status;
pub mod wire;

pub use config_push::{ConfigRole, ConfigSink, ConfigSyncState, ConfigVersion, LocalConfig};
pub use driver::{SharedTables, SyncHandle, SyncParams, SyncSettings, dials, spawn_sync};
pub use handshake::Identity;
pub use reject::{RejectCounters, RejectReason, Rejection};
pub use secret::{Secret, SecretError};
pub use status::{ConfigStatus, SyncCounters, SyncStatus, TableSyncStatus};
