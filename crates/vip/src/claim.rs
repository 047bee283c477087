//! Duplicate-VIP detection on the wire: the frames that claim an address, and the probes that ask who holds one.
//!
//! [`parse_claim`] reads one received Ethernet frame (any bytes: it never panics, truncated or malformed frames are
//! `None`) and says which IP address it claims for which MAC: an ARP request or reply whose sender IP is set (an
//! RFC 5227 probe, sender IP 0.0.0.0, claims nothing), a neighbour advertisement for its target, or a neighbour
//! solicitation sent from an address. [`arp_probe`] and [`dad_solicitation`] build the probes the active node
//! sends for its VIPs: any host holding the address answers them with a frame that [`parse_claim`] reads as a claim.
//! Pure functions, built and parsed with etherparse; the decision what a claim means is in [`crate::conflict`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Icmpv6Type, LinkSlice, NetSlice,
    PacketBuilder, SlicedPacket, TransportSlice,
};

use crate::frames::{BROADCAST_MAC, MIN_FRAME_LEN, NDP_HOP_LIMIT};

/// NDP option type "Source Link-Layer Address" (RFC 4861 section 4.6.1).
const NDP_OPTION_SOURCE_LL_ADDR: u8 = 1;
/// NDP option type "Target Link-Layer Address".
const NDP_OPTION_TARGET_LL_ADDR: u8 = 2;
/// At most this many NDP options are read per frame (a frame is at most a few hundred bytes anyway).
const MAX_NDP_OPTIONS: usize = 16;

/// What kind of frame made a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// ARP request with this sender IP (a gratuitous ARP, or a host resolving someone from this address).
    ArpRequest,
    /// ARP reply with this sender IP (an answer to a probe, or a gratuitous ARP in reply form).
    ArpReply,
    /// Neighbour advertisement for this target address.
    NeighbourAdvertisement,
    /// Neighbour solicitation sent from this address.
    NeighbourSolicitation,
}

impl ClaimKind {
    /// A short name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::ArpRequest => "arp-request",
            ClaimKind::ArpReply => "arp-reply",
            ClaimKind::NeighbourAdvertisement => "neighbour-advertisement",
            ClaimKind::NeighbourSolicitation => "neighbour-solicitation",
        }
    }
}

/// One frame saying "`ip` is at `mac`": what a client that hears it would put in its neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub ip: IpAddr,
    pub mac: [u8; 6],
    pub kind: ClaimKind,
}

/// The claim one Ethernet frame makes, if any. ARP: Ethernet/IPv4 requests and replies with a sender IP other than
/// 0.0.0.0, for the sender MAC of the ARP body (what a client learns). IPv6: ICMPv6 neighbour advertisements and
/// solicitations with hop limit 255 and a valid checksum (anything else a receiving host drops too), for the MAC of
/// the link-layer address option, else the frame's source. Every other frame, and every malformed one, is `None`.
pub fn parse_claim(frame: &[u8]) -> Option<Claim> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let source_mac = match &packet.link {
        Some(LinkSlice::Ethernet2(ethernet)) => ethernet.source(),
        _ => return None,
    };
    match packet.net.as_ref()? {
        NetSlice::Arp(arp) => {
            let arp = arp.to_packet().try_eth_ipv4().ok()?;
            let kind = match arp.operation {
                ArpOperation::REQUEST => ClaimKind::ArpRequest,
                ArpOperation::REPLY => ClaimKind::ArpReply,
                _ => return None,
            };
            let ip = Ipv4Addr::from(arp.sender_ipv4);
            // An RFC 5227 probe (ours among them) asks about an address without claiming it.
            (!ip.is_unspecified()).then_some(Claim {
                ip: IpAddr::V4(ip),
                mac: arp.sender_mac,
                kind,
            })
        }
        NetSlice::Ipv6(ipv6) => {
            let header = ipv6.header();
            if header.hop_limit() != NDP_HOP_LIMIT {
                return None;
            }
            let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
                return None;
            };
            let (source, destination) = (header.source(), header.destination());
            if !icmp.is_checksum_valid(source, destination) || icmp.code_u8() != 0 {
                return None;
            }
            let body = icmp.payload();
            let target: [u8; 16] = body.get(..16)?.try_into().ok()?;
            let options = body.get(16..).unwrap_or_default();
            match icmp.icmp_type() {
                Icmpv6Type::NeighborAdvertisement(_) => Some(Claim {
                    ip: IpAddr::V6(Ipv6Addr::from(target)),
                    mac: ndp_link_address(options, NDP_OPTION_TARGET_LL_ADDR).unwrap_or(source_mac),
                    kind: ClaimKind::NeighbourAdvertisement,
                }),
                Icmpv6Type::NeighborSolicitation => {
                    let from = Ipv6Addr::from(source);
                    // From :: it is duplicate address detection (ours among them): a question, not a claim.
                    (!from.is_unspecified()).then(|| Claim {
                        ip: IpAddr::V6(from),
                        mac: ndp_link_address(options, NDP_OPTION_SOURCE_LL_ADDR)
                            .unwrap_or(source_mac),
                        kind: ClaimKind::NeighbourSolicitation,
                    })
                }
                _ => None,
            }
        }
        NetSlice::Ipv4(_) => None,
    }
}

/// The MAC of the first link-layer address option of type `wanted` (RFC 4861 section 4.6.1: type, length in units
/// of 8 bytes, address). Stops at a zero length (invalid, and a loop for ever otherwise) or the end of the data.
fn ndp_link_address(mut options: &[u8], wanted: u8) -> Option<[u8; 6]> {
    for _ in 0..MAX_NDP_OPTIONS {
        let (&kind, rest) = options.split_first()?;
        let units = usize::from(*rest.first()?);
        if units == 0 {
            return None;
        }
        let option = options.get(..units * 8)?;
        if kind == wanted {
            return option.get(2..8)?.try_into().ok();
        }
        options = options.get(units * 8..)?;
    }
    None
}

/// An RFC 5227 ARP probe for `vip` from `mac`: a broadcast request with sender IP 0.0.0.0 and target IP `vip`, so
/// no host updates its cache from it and any host holding `vip` answers with a reply from `vip`. Padded to 60 bytes.
pub fn arp_probe(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: [0; 4],
        target_mac: [0; 6],
        target_ipv4: vip.octets(),
    };
    let mut frame = Vec::with_capacity(MIN_FRAME_LEN);
    // Writing fixed-size headers into a Vec cannot fail; an error would be an etherparse bug, visible in the tests.
    if let Err(e) = PacketBuilder::ethernet2(mac, BROADCAST_MAC)
        .arp(ArpPacket::from(arp))
        .write(&mut frame)
    {
        tracing::error!(error = %e, "building an ARP probe failed");
    }
    frame.resize(frame.len().max(MIN_FRAME_LEN), 0);
    frame
}

/// The solicited-node multicast group of `addr` (RFC 4291 section 2.7.1): ff02::1:ffXX:XXXX.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464 section 7): 33:33 and its last 4 bytes.
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A duplicate-address-detection neighbour solicitation for `vip` from `mac` (RFC 4862 section 5.4.2): from ::, to
/// `vip`'s solicited-node group, hop limit 255, no source link-layer option (forbidden from ::). A host holding `vip`
/// answers with a neighbour advertisement for it to all nodes; nobody learns anything from the solicitation.
pub fn dad_solicitation(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(vip);
    let mut frame = Vec::with_capacity(14 + 40 + 8 + 16);
    if let Err(e) = PacketBuilder::ethernet2(mac, multicast_mac(group))
        .ipv6(
            Ipv6Addr::UNSPECIFIED.octets(),
            group.octets(),
            NDP_HOP_LIMIT,
        )
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write(&mut frame, &vip.octets())
    {
        tracing::error!(error = %e, "building a neighbour solicitation failed");
    }
    frame
}

/// The probe frame for `vip` from `mac`, with its destination MAC and EtherType.
pub fn probe(mac: [u8; 6], vip: IpAddr) -> (Vec<u8>, [u8; 6], u16) {
    match vip {
        IpAddr::V4(addr) => (arp_probe(mac, addr), BROADCAST_MAC, EtherType::ARP.0),
        IpAddr::V6(addr) => (
            dad_solicitation(mac, addr),
            multicast_mac(solicited_node(addr)),
            EtherType::IPV6.0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{ArpMode, gratuitous_arps, unsolicited_na};
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
    const V4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 250);

    fn v6() -> Ipv6Addr {
        "fd00::250".parse().expect("test address")
    }

    /// An ARP frame as another host would send it.
    fn arp(operation: ArpOperation, mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(mac, BROADCAST_MAC)
            .arp(ArpPacket::from(ArpEthIpv4Packet {
                operation,
                sender_mac: mac,
                sender_ipv4: sender,
                target_mac: [0; 6],
                target_ipv4: target,
            }))
            .write(&mut frame)
            .expect("test frame");
        frame
    }

    #[test]
    fn probe_bytes_follow_rfc5227() {
        let frame = arp_probe(MAC, V4);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &BROADCAST_MAC[..], &MAC, &[0x08, 0x06],
            &[0x00, 0x01, 0x08, 0x00, 6, 4],
            &[0x00, 0x01],                  // request
            &MAC, &[0, 0, 0, 0],            // sender: our MAC, no IP
            &[0u8; 6], &V4.octets(),        // target: the VIP
            &[0u8; 18],
        ].concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn our_own_probes_claim_nothing() {
        assert_eq!(parse_claim(&arp_probe(MAC, V4)), None);
        assert_eq!(parse_claim(&dad_solicitation(MAC, v6())), None);
    }

    #[test]
    fn gratuitous_arp_and_na_claim_the_vip_for_their_mac() {
        for mode in [ArpMode::Request, ArpMode::Reply] {
            for frame in gratuitous_arps(OTHER, V4, mode) {
                let claim = parse_claim(&frame).expect("a claim");
                assert_eq!((claim.ip, claim.mac), (IpAddr::V4(V4), OTHER));
            }
        }
        let claim = parse_claim(&unsolicited_na(OTHER, v6())).expect("a claim");
        assert_eq!(
            claim,
            Claim {
                ip: IpAddr::V6(v6()),
                mac: OTHER,
                kind: ClaimKind::NeighbourAdvertisement
            }
        );
    }

    #[test]
    fn an_answer_to_a_probe_is_a_reply_claim() {
        let frame = arp(ArpOperation::REPLY, OTHER, V4.octets(), [0; 4]);
        assert_eq!(
            parse_claim(&frame),
            Some(Claim {
                ip: IpAddr::V4(V4),
                mac: OTHER,
                kind: ClaimKind::ArpReply
            })
        );
        // someone else's probe for the VIP asks, it does not claim
        assert_eq!(
            parse_claim(&arp(ArpOperation::REQUEST, OTHER, [0; 4], V4.octets())),
            None
        );
    }

    #[test]
    fn the_arp_body_mac_counts_not_the_ethernet_source() {
        let mut frame = arp(ArpOperation::REPLY, OTHER, V4.octets(), [0; 4]);
        frame[6..12].copy_from_slice(&MAC); // Ethernet source: ours; ARP sender: the other's
        assert_eq!(parse_claim(&frame).map(|c| c.mac), Some(OTHER));
    }

    #[test]
    fn dad_solicitation_goes_to_the_solicited_node_group_with_a_valid_checksum() {
        let vip: Ipv6Addr = "2001:db8::12:3456".parse().expect("test address");
        let frame = dad_solicitation(MAC, vip);
        assert_eq!(frame[..6], [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let packet = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = packet.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().hop_limit(), 255);
        assert_eq!(ip.header().source(), [0; 16]);
        assert_eq!(
            Ipv6Addr::from(ip.header().destination()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().expect("group")
        );
        let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 135);
        assert!(icmp.is_checksum_valid([0; 16], ip.header().destination()));
        assert_eq!(icmp.payload(), vip.octets()); // the target, and no option
    }

    #[test]
    fn a_solicitation_from_an_address_claims_it() {
        // An NS from the VIP as source, with a source link-layer option.
        let vip = v6();
        let mut payload = [0u8; 24];
        payload[..16].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().expect("a").octets());
        payload[16] = NDP_OPTION_SOURCE_LL_ADDR;
        payload[17] = 1;
        payload[18..].copy_from_slice(&OTHER);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC, [0x33, 0x33, 0xff, 0, 0, 1])
            .ipv6(
                vip.octets(),
                solicited_node("fd00::1".parse().expect("a")).octets(),
                255,
            )
            .icmpv6(Icmpv6Type::NeighborSolicitation)
            .write(&mut frame, &payload)
            .expect("test frame");
        assert_eq!(
            parse_claim(&frame),
            Some(Claim {
                ip: IpAddr::V6(vip),
                mac: OTHER,
                kind: ClaimKind::NeighbourSolicitation
            })
        );
    }

    #[test]
    fn ndp_that_a_host_would_drop_claims_nothing() {
        let mut routed = unsolicited_na(OTHER, v6());
        routed[21] = 64; // hop limit: the packet was routed, off-link
        assert_eq!(parse_claim(&routed), None);
        let mut corrupted = unsolicited_na(OTHER, v6());
        corrupted[70] ^= 0xff; // target changed after the checksum
        assert_eq!(parse_claim(&corrupted), None);
    }

    #[test]
    fn an_na_without_a_target_option_is_the_frame_source() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(OTHER, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(v6().octets(), crate::frames::ALL_NODES.octets(), 255)
            .icmpv6(Icmpv6Type::NeighborAdvertisement(
                etherparse::icmpv6::NeighborAdvertisementHeader {
                    router: false,
                    solicited: false,
                    r#override: true,
                },
            ))
            .write(&mut frame, &v6().octets())
            .expect("test frame");
        assert_eq!(parse_claim(&frame).map(|c| c.mac), Some(OTHER));
    }

    #[test]
    fn options_with_zero_length_end_the_walk() {
        assert_eq!(ndp_link_address(&[2, 0, 1, 2, 3, 4, 5, 6], 2), None);
        assert_eq!(
            ndp_link_address(&[1, 1, 9, 9, 9, 9, 9, 9, 2, 1, 1, 2, 3, 4, 5, 6], 2),
            Some([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(ndp_link_address(&[2, 1, 1, 2], 2), None); // truncated
    }

    proptest! {
        /// Any bytes at all: no panic. Every prefix of a real claim frame either parses to the same claim or to none.
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_claim(&bytes);
        }

        #[test]
        fn truncations_and_bit_flips_never_panic(cut in 0usize..90, flip in 0usize..90, bit in 0u8..8) {
            for frame in [
                gratuitous_arps(OTHER, V4, ArpMode::Reply).remove(0),
                unsolicited_na(OTHER, v6()),
                dad_solicitation(MAC, v6()),
            ] {
                let whole = parse_claim(&frame);
                let short = parse_claim(&frame[..cut.min(frame.len())]);
                prop_assert!(short.is_none() || short == whole);
                let mut flipped = frame.clone();
                if let Some(byte) = flipped.get_mut(flip) {
                    *byte ^= 1 << bit;
                }
                let _ = parse_claim(&flipped);
            }
        }
    }
}
