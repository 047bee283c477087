//! Value types shared by every part of tandem, so each concept has exactly one type: the cluster's
//! [`Secret`] (heartbeat, sync and admin keys; never printed, zeroised when dropped) and a node's
//! configured [`Role`]; and the civil date of a day count ([`civil_from_days`]). Nothing here does I/O, except
//! [`exit_order`], which renumbers descriptors so that a killed daemon's peer learns of it first.

mod calendar;
pub mod exit_order;
mod role;
mod secret;

pub use calendar::civil_from_days;
pub use role::{Role, UnknownRole};
pub use secret::{MIN_SECRET_LEN, Secret, SecretTooShort};
