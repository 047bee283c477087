//! tandem's floating addresses (VIPs).
//!
//! This crate owns moving the VIPs between the two nodes of a pair:
//! - [`VipManager`] adds and removes addresses on the VIP interface through rtnetlink, idempotently, lists which
//!   configured VIPs are held, and drops VIPs left behind by a crash ([`VipManager::remove_stale`]).
//!
//! Everything works in the network namespace of the thread that creates the sockets, which is how the tests run it
//! inside a throw-away namespace.

mod error;
mod netlink;
mod vip;

pub use error::{VipAction, VipError};
pub use netlink::{AddOutcome, LinkInfo, RemoveOutcome, VipManager};
pub use vip::Vip;
