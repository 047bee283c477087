//! Value types shared by every part of tandem, so each concept has exactly one type: the cluster's
//! [`Secret`] (heartbeat, sync and admin keys; never printed, zeroised when dropped) and a node's
//! configured [`Role`]. Nothing here does I/O.

mod role;
mod secret;

pub use role::{Role, UnknownRole};
pub use secret::{MIN_SECRET_LEN, Secret, SecretTooShort};
