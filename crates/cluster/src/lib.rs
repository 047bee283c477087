//! tandem-cluster owns the pair's heartbeat and election:
//!
//! - [`wire`]: the heartbeat datagram (UDP 6694), bincode 2 encoded, HMAC-SHA256 authenticated, replay-guarded;
//! - `election`: the sans-IO state machine deciding which node holds the VIPs (inputs + injected clock -> actions);
//! - `driver`: the thin tokio task around both (socket, timers, ping nodes, status watch, admin commands).
//!
//! It does not touch the VIPs itself: the daemon implements `VipControl` with the vip crate. Protocol and rules are
//! documented in `docs/protocol.md`.

#[cfg(feature = "driver")]
pub mod driver;
pub mod election;
pub mod epoch;
pub mod ping;
pub mod wire;
