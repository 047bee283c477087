//! tandem's floating addresses (VIPs).
//!
//! This crate owns moving the VIPs between the two nodes of a pair:
//! - [`FloatingVips`] is what the daemon uses: `acquire` adds every VIP and announces them, `release` stops the
//!   announcements and removes every VIP, `remove_stale` cleans up after a crash at start-up, `held` feeds status.
//! - [`VipManager`] adds and removes addresses on the VIP interface through rtnetlink, idempotently, and lists which
//!   configured VIPs are held.
//! - [`Announcer`] sends gratuitous ARP (IPv4, request or reply form) and unsolicited neighbour advertisements
//!   (IPv6) on an AF_PACKET socket, in a burst (default 5 rounds, 200 ms apart, the first at once) and an optional
//!   periodic refresh, stoppable at any time. The frames are built by [`frames`] with etherparse.
//!
//! Every failure is a typed [`VipError`] naming the action and the interface; none is swallowed, because the daemon
//! must show `fault` rather than claim to be active without its addresses.
//!
//! Sockets live in the network namespace of the thread that creates them, which is how the tests run everything
//! inside a throw-away namespace.

mod announce;
mod error;
mod floating;
pub mod frames;
mod netlink;
mod packet;
mod vip;

pub use announce::{AnnounceConfig, AnnounceSchedule, Announcement, Announcer};
pub use error::{VipAction, VipError};
pub use floating::FloatingVips;
pub use frames::ArpMode;
pub use netlink::{AddOutcome, LinkInfo, RemoveOutcome, VipManager};
pub use vip::Vip;
