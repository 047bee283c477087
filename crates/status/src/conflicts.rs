//! Duplicate-VIP detection in the status document: which VIPs another MAC claimed, which MAC, when.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The duplicate-VIP check of this node (`[heartbeat] conflict_check_ms`); zeros and an empty list from a node
/// that predates it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct VipConflicts {
    /// The check interval in use; 0 when off (`conflict_check_ms = 0`, `manage_vips = false`, or the interface
    /// cannot be watched: see the log).
    pub check_ms: u64,
    /// Probe frames (ARP probes, DAD neighbour solicitations) sent since start.
    pub probes_sent: u64,
    /// VIPs claimed by another MAC now (within the last 3 check intervals, while this node is active).
    pub in_conflict: u32,
    /// Every VIP another MAC claimed while this node was active, since start, in configuration order.
    pub vips: Vec<VipConflict>,
}

/// One VIP that another MAC claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct VipConflict {
    pub vip: IpAddr,
    /// Conflicts (episodes) detected since start: a MAC starts claiming the VIP.
    pub detected: u64,
    /// Claimed by another MAC now.
    pub current: bool,
    /// The MACs that claimed it (at most 4, most recently heard first).
    pub claimants: Vec<VipClaimant>,
}

/// One MAC that claimed a VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub struct VipClaimant {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The frame of its last claim: `arp-request`, `arp-reply`, `neighbour-advertisement`, `neighbour-solicitation`.
    pub kind: String,
    /// Wall-clock time (Unix ms) of its first and last claim.
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    /// Milliseconds since its last claim.
    pub last_seen_age_ms: u64,
    /// Claims heard from it.
    pub frames: u64,
    /// Claiming now.
    pub current: bool,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
