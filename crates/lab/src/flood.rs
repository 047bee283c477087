//! The flood drill's packets, built without sockets: IPv4 headers with a forged source address around UDP
//! datagrams (tandem's heartbeat port) or VRRP adverts (keepalived's), carrying random junk or forgeries that pass
//! every cheap check and fail only the authentication (a heartbeat signed with a wrong key; a VRRPv3 advert with a
//! wrong checksum).

use std::net::Ipv4Addr;

use tandem_cluster::election::{Election, ElectionConfig, Timings};
pub use tandem_cluster::ping::checksum;
use tandem_cluster::wire::{HeartbeatCodec, NodeState, Role};
use tandem_types::Secret;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// VRRP requires TTL 255 (RFC 5798 §5.1.1.3): every packet carries it so none is dropped for that alone.
const TTL: u8 = 255;

/// xorshift64*: fast, reproducible, good enough for junk (not for secrets).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// An IPv4 packet (20-byte header, no options) from `src` to `dst` carrying `payload` as protocol `proto`. The
/// kernel fills the header checksum and the identification of a raw IP_HDRINCL socket; we fill them anyway.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    p.extend_from_slice(&[TTL, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram (checksum 0: none, allowed over IPv4) inside an IPv4 packet.
pub fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4(src, dst, 17, &udp)
}

/// Random bytes of a random length in 1..=600 (some over the heartbeat's 512-byte limit, most without its magic).
pub fn junk(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.range(1, 600)];
    rng.fill(&mut bytes);
    bytes
}

/// A heartbeat of `cluster`/`node` claiming the VIPs, correctly laid out and encoded, signed with a random key:
/// it passes size, magic and version and fails only the tag (`bad_mac`).
pub fn forged_heartbeat(rng: &mut Rng, cluster: &str, node: &str) -> Vec<u8> {
    let timings = Timings {
        interval_ms: 200,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 3000,
    };
    let epoch = rng.next_u64();
    let cfg = ElectionConfig::new(cluster, node, Role::Primary, true, timings, epoch);
    let mut hb = Election::new(cfg, 0).build_heartbeat(0);
    hb.seq = rng.next_u64() >> 1;
    hb.state = NodeState::Active;
    hb.holds_vips = true;
    let mut key = [0u8; 32];
    rng.fill(&mut key);
    let Ok(secret) = Secret::new(key.to_vec()) else {
        return junk(rng);
    };
    HeartbeatCodec::new(cluster, &secret)
        .encode(&hb)
        .unwrap_or_else(|_| junk(rng))
}

/// A VRRPv3 advertisement for `vrid` at `priority` advertising `vip`, with a wrong checksum: it passes TTL,
/// version, type and VRID checks and fails only the integrity check (keepalived's nearest thing to a bad MAC).
pub fn forged_vrrp(rng: &mut Rng, vrid: u8, priority: u8, vip: Ipv4Addr) -> Vec<u8> {
    let mut advert = vec![0x31, vrid, priority, 1, 0, 100, 0, 0]; // v3 advert, 1 address, 1 s (in cs)
    advert.extend_from_slice(&vip.octets());
    let wrong = (rng.next_u64() as u16) | 1;
    advert[6..8].copy_from_slice(&wrong.to_be_bytes());
    advert
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_well_formed() {
        let p = ipv4_udp(
            Ipv4Addr::new(192, 168, 1, 22),
            6694,
            Ipv4Addr::new(192, 168, 1, 21),
            6694,
            b"hello",
        );
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(checksum(&p[..20]), 0, "the IP header checksum verifies");
        assert_eq!(&p[12..16], &[192, 168, 1, 22]);
        assert_eq!(p[8], 255);
        assert_eq!(p[9], 17);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 13);
    }

    #[test]
    fn forgeries_fail_only_the_tag() {
        let mut rng = Rng::new(7);
        let forged = forged_heartbeat(&mut rng, "openstack", "lb2");
        assert_eq!(&forged[..4], b"TNDH");
        let secret = Secret::new(vec![b'k'; 32]).unwrap();
        assert_eq!(
            HeartbeatCodec::new("openstack", &secret).decode(&forged),
            Err(tandem_cluster::wire::Reject::BadMac)
        );
        let advert = forged_vrrp(&mut rng, 51, 100, Ipv4Addr::new(192, 168, 1, 250));
        assert_eq!(advert[0], 0x31);
        assert_eq!(advert[1], 51);
    }

    #[test]
    fn junk_lengths_stay_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let j = junk(&mut rng);
            assert!((1..=600).contains(&j.len()));
        }
    }
}
