//! tandem's floating addresses (VIPs).
//!
//! This crate owns moving the VIPs between the two nodes of a pair:
//! - [`FloatingVips`] is what the daemon uses: `acquire` adds every VIP and announces them, `release` stops the
//!   announcements and removes every VIP, `remove_stale` cleans up after a crash at start-up, `held` feeds status.
//! - [`VipManager`] adds and removes addresses on the VIP interface through rtnetlink, idempotently, and lists which
//!   configured VIPs are held.
//! - [`Announcer`] sends gratuitous ARP (IPv4, request or reply form) and unsolicited neighbour advertisements
//!   (IPv6) on an AF_PACKET socket, in a burst (default 5 rounds, 200 ms apart, the first at once) and an optional
//!   periodic refresh, stoppable at any time, and counts the frames the kernel took ([`AnnounceCounts`]). The frames
//!   are built by [`frames`] with etherparse.
//!
//! - Duplicate-VIP detection: [`ConflictDetector`] (sans-IO, in [`conflict`]) decides from the claims heard on the
//!   wire ([`claim`] parses them and builds the probes) when to probe, what is a conflict, when to log it and when to
//!   re-announce; [`ClaimSocket`] is the filtered AF_PACKET socket it listens and probes on.
//!
//! Every failure is a typed [`VipError`] naming the action and the interface; none is swallowed, because the daemon
//! must show `fault` rather than claim to be active without its addresses.
//!
//! ```no_run
//! # async fn daemon() -> Result<(), tandem_vip::VipError> {
//! use tandem_vip::{AnnounceConfig, FloatingVips, Vip};
//!
//! let vips: Vec<Vip> = vec!["192.168.1.250".parse()?];
//! let mut floating = FloatingVips::new("eth0", vips, AnnounceConfig::default())?;
//! floating.remove_stale().await?; // start-up, not active
//! floating.acquire().await?;      // became active: add all, announce (first round sent before this returns)
//! if let Some(e) = floating.announce_error() {
//!     eprintln!("a later announcement round failed: {e}"); // -> fault
//! }
//! floating.release().await?;      // handing over: stop announcing, remove all
//! # Ok(())
//! # }
//! ```
//!
//! Dropping a `FloatingVips` stops its announcements but leaves the addresses as they are: a clean stop calls
//! `release` first, and a crash is cleaned up by `remove_stale` on the next start.
//!
//! Sockets live in the network namespace of the thread that creates them, which is how the tests run everything
//! inside a throw-away namespace.

mod announce;
pub mod claim;
pub mod conflict;
mod error;
mod floating;
pub mod frames;
mod listen;
mod netlink;
mod packet;
mod vip;

pub use announce::{AnnounceConfig, AnnounceCounts, AnnounceSchedule, Announcement, Announcer};
pub use claim::{Claim, ClaimKind};
pub use conflict::{Claimant, ConflictAction, ConflictDetector, VipConflict};
pub use error::{VipAction, VipError};
pub use floating::FloatingVips;
pub use frames::ArpMode;
pub use listen::ClaimSocket;
pub use netlink::{AddOutcome, LinkInfo, RemoveOutcome, VipManager};
pub use vip::Vip;
