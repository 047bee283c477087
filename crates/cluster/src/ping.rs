//! Ping nodes: is at least one of the configured addresses (typically the default gateway) reachable?
//!
//! ICMP echo on a raw socket (root), else on an unprivileged ICMP datagram socket (`net.ipv4.ping_group_range`),
//! else a UDP probe to a closed high port, where the ICMP "port unreachable" answer (ECONNREFUSED) proves the host
//! is up.

use std::time::Duration;

#[cfg(feature = "driver")]
mod probe;
#[cfg(feature = "driver")]
pub use probe::{probe, probe_any};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// How ping probes are paced and judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingConfig {
    /// One probe round (every ping node at once) this often.
    pub period: Duration,
    /// A reply later than this counts as lost.
    pub timeout: Duration,
    /// Consecutive failed rounds before "unreachable" (one success is enough to be reachable again).
    pub fail_after: u32,
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_millis(200),
            timeout: Duration::from_millis(200),
            fail_after: 3,
        }
    }
}

/// Builds an ICMP echo request (checksum filled for IPv4; the kernel fills it for ICMPv6).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"tandem-ping-node");
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Is `packet` (as read from the socket) the echo reply to (`id`, `seq`)? Raw IPv4 sockets deliver the IP header
/// too; `check_id` is off for datagram ICMP sockets, where the kernel picks the identifier.
pub fn is_echo_reply(
    packet: &[u8],
    v6: bool,
    has_ip_header: bool,
    check_id: bool,
    id: u16,
    seq: u16,
) -> bool {
    let icmp = if has_ip_header {
        let Some(first) = packet.first() else {
            return false;
        };
        let header_len = usize::from(first & 0x0f) * 4;
        match packet.get(header_len..) {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        packet
    };
    if icmp.len() < 8 {
        return false;
    }
    let reply_type = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    icmp[0] == reply_type
        && icmp[1] == 0
        && (!check_id || u16::from_be_bytes([icmp[4], icmp[5]]) == id)
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// Debounces rounds into a reachability verdict.
#[derive(Clone, Debug)]
pub struct PingVerdict {
    fail_after: u32,
    failures: u32,
    reachable: bool,
}

impl PingVerdict {
    pub fn new(fail_after: u32) -> Self {
        Self {
            fail_after: fail_after.max(1),
            failures: 0,
            reachable: true,
        }
    }

    /// Records one round; returns the verdict.
    pub fn record(&mut self, answered: bool) -> bool {
        if answered {
            self.failures = 0;
            self.reachable = true;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.fail_after {
                self.reachable = false;
            }
        }
        self.reachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let packet = echo_request(false, 0x1234, 7);
        assert_eq!(
            checksum(&packet),
            0,
            "a packet including its checksum sums to zero"
        );
        assert_eq!(packet[0], 8);
    }

    #[test]
    fn reply_matching() {
        let mut reply = echo_request(false, 9, 3);
        reply[0] = ECHO_REPLY_V4;
        assert!(is_echo_reply(&reply, false, false, true, 9, 3));
        assert!(
            !is_echo_reply(&reply, false, false, true, 10, 3),
            "other id"
        );
        assert!(
            is_echo_reply(&reply, false, false, false, 10, 3),
            "id not checked on datagram sockets"
        );
        assert!(
            !is_echo_reply(&reply, false, false, true, 9, 4),
            "other seq"
        );
        let mut with_ip = vec![0x45; 1];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(&reply);
        assert!(is_echo_reply(&with_ip, false, true, true, 9, 3));
        assert!(
            !is_echo_reply(&with_ip[..22], false, true, true, 9, 3),
            "truncated"
        );
        assert!(!is_echo_reply(&[], false, true, true, 9, 3));
        assert!(!is_echo_reply(&[0x4f], false, true, true, 9, 3));
        let mut v6 = echo_request(true, 1, 1);
        v6[0] = ECHO_REPLY_V6;
        assert!(is_echo_reply(&v6, true, false, true, 1, 1));
    }

    #[test]
    fn verdict_needs_consecutive_failures() {
        let mut v = PingVerdict::new(3);
        assert!(v.record(false));
        assert!(v.record(false));
        assert!(!v.record(false));
        assert!(v.record(true));
        assert!(v.record(false));
    }
}
