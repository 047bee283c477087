//! tandem-cluster owns the pair's heartbeat and election:
//!
//! - [`wire`]: the heartbeat datagram (UDP 6694), bincode 2 encoded, HMAC-SHA256 authenticated, replay-guarded;
//! - [`election`]: the sans-IO state machine deciding which node holds the VIPs (inputs + injected clock -> actions
//!   and the time of the next tick). Its policy is all there: keepalive cadence, peer deadlines, live timing changes,
//!   claims and handovers, failback, and the clean stop's linger and resends (`Action::Stopped`), so the
//!   deterministic simulator (`election/sim.rs`, tests only) covers it;
//! - [`ping`]: ICMP echo packets and the debounced reachability verdict (sans-IO); the probes themselves with the
//!   driver;
//! - [`epoch`]: the boot epoch that tells the peer this process is a new incarnation;
//! - `driver` (feature `driver`, on by default): the thin tokio task around the election: socket -> input, timer ->
//!   input, actions -> socket / VIP layer / status watch, admin commands -> input.
//!
//! Everything but `driver` and the ping probes builds without tokio:
//! `cargo build -p tandem-cluster --no-default-features`, `cargo test -p tandem-cluster --no-default-features --lib`.
//!
//! It does not touch the VIPs itself: the daemon implements `VipControl` with the vip crate. Protocol and rules are
//! documented in `docs/protocol.md`.

#[cfg(feature = "driver")]
pub mod driver;
pub mod election;
pub mod epoch;
pub mod ping;
pub mod wire;
