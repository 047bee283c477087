//! Ping nodes: is at least one of the configured addresses (typically the default gateway) reachable?
//!
//! ICMP echo on a raw socket (root), else on an unprivileged ICMP datagram socket (`net.ipv4.ping_group_range`),
//! else a UDP probe to a closed high port, where the ICMP "port unreachable" answer (ECONNREFUSED) proves the host
//! is up.
//!
//! Every echo request carries a fresh random identifier, sequence number and 16-byte payload nonce ([`EchoProbe`]);
//! a reply counts only if it comes from the probed address and echoes all of them, so a reply spoofed from the ping
//! node's address (which anyone on the path can forge) does not keep a cut-off node "reachable".
//!
//! [`PingVerdict`] debounces "did any node answer" for the election; [`PingNodes`] keeps each node's own record
//! (last answer, its round-trip time) for the status document and `/metrics` only.

use std::net::IpAddr;
use std::time::{Duration, Instant};

#[cfg(feature = "driver")]
mod probe;
#[cfg(feature = "driver")]
pub use probe::{probe, probe_any, probe_each, probe_rtt};

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

/// Length of the random payload an echo reply must carry back.
pub const NONCE_LEN: usize = 16;

/// One echo request's identity: what its reply must echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoProbe {
    /// The ICMP identifier (datagram ICMP sockets replace it with their own: not checked there).
    pub id: u16,
    pub seq: u16,
    /// Carried as the echo payload; a reply must return it unchanged.
    pub nonce: [u8; NONCE_LEN],
}

impl EchoProbe {
    /// A probe with a random identifier, sequence number and nonce (`None` if the system has no randomness).
    pub fn random() -> Option<Self> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 4 + NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[4..]);
        Some(Self {
            id: u16::from_be_bytes([bytes[0], bytes[1]]),
            seq: u16::from_be_bytes([bytes[2], bytes[3]]),
            nonce,
        })
    }

    /// The ICMP echo request (checksum filled for IPv4; the kernel fills it for ICMPv6).
    pub fn request(&self, v6: bool) -> Vec<u8> {
        let mut packet = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
        packet.extend_from_slice(&self.id.to_be_bytes());
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(&self.nonce);
        if !v6 {
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        packet
    }

    /// Is `packet` (as read from the socket) the echo reply to this probe? Raw IPv4 sockets deliver the IP header
    /// too; `check_id` is off for datagram ICMP sockets, where the kernel picks the identifier.
    pub fn is_reply(&self, packet: &[u8], v6: bool, has_ip_header: bool, check_id: bool) -> bool {
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
        if icmp.len() < 8 + NONCE_LEN {
            return false;
        }
        let reply_type = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
        icmp[0] == reply_type
            && icmp[1] == 0
            && (!check_id || u16::from_be_bytes([icmp[4], icmp[5]]) == self.id)
            && u16::from_be_bytes([icmp[6], icmp[7]]) == self.seq
            && icmp[8..8 + NONCE_LEN] == self.nonce
    }
}

/// The Internet checksum (RFC 1071); also used by the lab's flood drill for the IPv4 headers it forges.
pub fn checksum(data: &[u8]) -> u16 {
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

/// One ping node as [`PingNodes`] last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingNodeStatus {
    pub address: IpAddr,
    /// Answered within [`PingNodes::window`].
    pub reachable: bool,
    /// When the last valid echo reply (or UDP "port unreachable") arrived; `None` until the first.
    pub last_reply: Option<Instant>,
    /// Request to reply of that last answer.
    pub rtt: Option<Duration>,
}

/// Each ping node's last answer and its round-trip time. Observability only: the election's input stays the
/// debounced "any node answered" of [`PingVerdict`].
#[derive(Clone, Debug)]
pub struct PingNodes {
    window: Duration,
    /// `(address, last answer: when and its round trip)`, in configuration order.
    nodes: Vec<(IpAddr, Option<(Instant, Duration)>)>,
}

impl PingNodes {
    pub fn new(addresses: &[IpAddr], cfg: &PingConfig) -> Self {
        Self {
            window: Self::window(cfg),
            nodes: addresses.iter().map(|a| (*a, None)).collect(),
        }
    }

    /// How recent an answer must be for its node to count as reachable: as many rounds as the election's debounce
    /// waits (`fail_after`; a round lasts the period, or the timeout when a node stays silent), plus one timeout
    /// for the round in flight. A node that answers every round never drops out between two answers.
    pub fn window(cfg: &PingConfig) -> Duration {
        cfg.period.max(cfg.timeout) * cfg.fail_after.max(1) + cfg.timeout
    }

    /// Records one probe's outcome at `now`: `Some(rtt)` if the node answered. Silence changes nothing (the
    /// previous answer just ages); an address that is not a ping node is ignored.
    pub fn record(&mut self, address: IpAddr, rtt: Option<Duration>, now: Instant) {
        let Some(rtt) = rtt else { return };
        if let Some(entry) = self.nodes.iter_mut().find(|(a, _)| *a == address) {
            entry.1 = Some((now, rtt));
        }
    }

    /// Every node's record as of `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<PingNodeStatus> {
        self.nodes
            .iter()
            .map(|(address, last)| PingNodeStatus {
                address: *address,
                reachable: last
                    .is_some_and(|(at, _)| now.saturating_duration_since(at) <= self.window),
                last_reply: last.map(|(at, _)| at),
                rtt: last.map(|(_, rtt)| rtt),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_nodes_keep_each_nodes_last_answer_and_age_it_out() {
        let cfg = PingConfig {
            period: Duration::from_millis(200),
            timeout: Duration::from_millis(100),
            fail_after: 3,
        };
        assert_eq!(PingNodes::window(&cfg), Duration::from_millis(700));
        let gw: IpAddr = "192.0.2.1".parse().unwrap();
        let dns: IpAddr = "2001:db8::53".parse().unwrap();
        let mut book = PingNodes::new(&[gw, dns], &cfg);
        let t0 = Instant::now();
        let first = book.snapshot(t0);
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|n| !n.reachable && n.last_reply.is_none() && n.rtt.is_none())
        );

        book.record(gw, Some(Duration::from_micros(850)), t0);
        book.record(dns, None, t0);
        book.record("198.51.100.9".parse().unwrap(), Some(Duration::ZERO), t0);
        let s = book.snapshot(t0 + Duration::from_millis(10));
        assert_eq!(s[0].address, gw);
        assert!(s[0].reachable);
        assert_eq!(s[0].last_reply, Some(t0));
        assert_eq!(s[0].rtt, Some(Duration::from_micros(850)));
        assert_eq!(s[1].address, dns);
        assert!(!s[1].reachable, "the silent node stays unreachable");
        assert_eq!(
            book.snapshot(t0).len(),
            2,
            "unknown addresses are not added"
        );

        // Silence afterwards keeps the last answer; it counts until the window has passed.
        book.record(gw, None, t0 + Duration::from_millis(200));
        assert!(book.snapshot(t0 + Duration::from_millis(700))[0].reachable);
        let late = book.snapshot(t0 + Duration::from_millis(701));
        assert!(!late[0].reachable);
        assert_eq!(
            late[0].rtt,
            Some(Duration::from_micros(850)),
            "the last RTT stays on record"
        );

        // A new answer replaces the old one.
        let t1 = t0 + Duration::from_secs(1);
        book.record(gw, Some(Duration::from_millis(3)), t1);
        let again = book.snapshot(t1);
        assert!(again[0].reachable);
        assert_eq!(again[0].rtt, Some(Duration::from_millis(3)));
        assert_eq!(again[0].last_reply, Some(t1));
    }

    fn probe(id: u16, seq: u16) -> EchoProbe {
        EchoProbe {
            id,
            seq,
            nonce: *b"0123456789abcdef",
        }
    }

    #[test]
    fn echo_request_checksum_verifies() {
        let packet = probe(0x1234, 7).request(false);
        assert_eq!(
            checksum(&packet),
            0,
            "a packet including its checksum sums to zero"
        );
        assert_eq!(packet[0], 8);
        assert_eq!(&packet[8..], b"0123456789abcdef");
    }

    #[test]
    fn random_probes_differ() {
        let a = EchoProbe::random().unwrap();
        let b = EchoProbe::random().unwrap();
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn reply_matching() {
        let p = probe(9, 3);
        let mut reply = p.request(false);
        reply[0] = ECHO_REPLY_V4;
        assert!(p.is_reply(&reply, false, false, true));
        assert!(
            !probe(10, 3).is_reply(&reply, false, false, true),
            "other id"
        );
        assert!(
            probe(10, 3).is_reply(&reply, false, false, false),
            "id not checked on datagram sockets"
        );
        assert!(
            !probe(9, 4).is_reply(&reply, false, false, true),
            "other seq"
        );
        let mut with_ip = vec![0x45; 1];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(&reply);
        assert!(p.is_reply(&with_ip, false, true, true));
        assert!(!p.is_reply(&with_ip[..22], false, true, true), "truncated");
        assert!(!p.is_reply(&[], false, true, true));
        assert!(!p.is_reply(&[0x4f], false, true, true));
        let mut v6 = probe(1, 1).request(true);
        v6[0] = ECHO_REPLY_V6;
        assert!(probe(1, 1).is_reply(&v6, true, false, true));
    }

    #[test]
    fn a_spoofed_reply_without_the_nonce_is_refused() {
        let p = probe(9, 3);
        // A forger who sees neither the request nor its payload guesses id and seq right, not the nonce.
        let mut spoofed = EchoProbe {
            nonce: *b"tandem-ping-node",
            ..p
        }
        .request(false);
        spoofed[0] = ECHO_REPLY_V4;
        assert!(!p.is_reply(&spoofed, false, false, true));
        // A reply cut before the end of the nonce is refused too.
        let mut reply = p.request(false);
        reply[0] = ECHO_REPLY_V4;
        assert!(!p.is_reply(&reply[..8 + NONCE_LEN - 1], false, false, true));
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
