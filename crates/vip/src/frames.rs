//! Announcement frames, built with etherparse: gratuitous ARP for IPv4 VIPs and unsolicited neighbour
//! advertisements for IPv6 VIPs. Pure functions, tested byte by byte.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{ArpEthIpv4Packet, ArpOperation, ArpPacket, Icmpv6Type, PacketBuilder};

/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Ethernet multicast address of ff02::1 (all nodes).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// The all-nodes link-local multicast group, destination of unsolicited neighbour advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Shortest Ethernet frame without FCS; shorter frames are zero-padded, as a NIC would do.
pub const MIN_FRAME_LEN: usize = 60;
/// NDP requires hop limit 255 so a receiver knows the packet was not routed.
pub const NDP_HOP_LIMIT: u8 = 255;
/// NDP option type "Target Link-Layer Address" (RFC 4861 section 4.6.1).
const NDP_OPTION_TARGET_LL_ADDR: u8 = 2;

/// Which gratuitous ARP form(s) to send. Some switches and hosts only learn from one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArpMode {
    /// ARP request asking for the VIP itself (RFC 5227 "ARP announcement"): target MAC all zero.
    #[default]
    Request,
    /// ARP reply from the VIP to itself (as `arping -A`): target MAC = sender MAC, because Linux treats a reply as
    /// gratuitous, and lets it override a recently updated cache entry, only when both are equal (`arp_is_garp`).
    Reply,
    /// A request, then a reply, in every round.
    Both,
}

/// The gratuitous ARP frame(s) `mode` sends for `vip` from `mac`, request first.
pub fn gratuitous_arps(mac: [u8; 6], vip: Ipv4Addr, mode: ArpMode) -> Vec<Vec<u8>> {
    match mode {
        ArpMode::Request => vec![gratuitous_arp_request(mac, vip)],
        ArpMode::Reply => vec![gratuitous_arp_reply(mac, vip)],
        ArpMode::Both => vec![
            gratuitous_arp_request(mac, vip),
            gratuitous_arp_reply(mac, vip),
        ],
    }
}

/// A gratuitous ARP request for `vip` from `mac`, broadcast, padded to the 60-byte Ethernet minimum.
pub fn gratuitous_arp_request(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    gratuitous_arp(mac, vip, ArpOperation::REQUEST, [0; 6])
}

/// A gratuitous ARP reply for `vip` from `mac` (target MAC = `mac`), broadcast, padded to 60 bytes.
pub fn gratuitous_arp_reply(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    gratuitous_arp(mac, vip, ArpOperation::REPLY, mac)
}

fn gratuitous_arp(
    mac: [u8; 6],
    vip: Ipv4Addr,
    operation: ArpOperation,
    target_mac: [u8; 6],
) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation,
        sender_mac: mac,
        sender_ipv4: vip.octets(),
        target_mac,
        target_ipv4: vip.octets(),
    };
    let mut frame = Vec::with_capacity(MIN_FRAME_LEN);
    // Writing into a Vec of fixed-size headers cannot fail; an error here would be an etherparse bug, and the
    // frame would then be short and visibly wrong in the tests rather than panicking the daemon.
    if let Err(e) = PacketBuilder::ethernet2(mac, BROADCAST_MAC)
        .arp(ArpPacket::from(arp))
        .write(&mut frame)
    {
        tracing::error!(error = %e, "building a gratuitous ARP failed");
    }
    frame.resize(frame.len().max(MIN_FRAME_LEN), 0);
    frame
}

/// An unsolicited neighbour advertisement for `vip` from `mac` to all nodes: override flag set, solicited and router
/// flags clear, a target link-layer address option, hop limit 255, checksum computed over the IPv6 pseudo-header.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut payload = [0u8; 24];
    payload[..16].copy_from_slice(&vip.octets());
    payload[16] = NDP_OPTION_TARGET_LL_ADDR;
    payload[17] = 1; // option length in units of 8 bytes
    payload[18..].copy_from_slice(&mac);
    let header = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let mut frame = Vec::with_capacity(14 + 40 + 8 + payload.len());
    if let Err(e) = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(vip.octets(), ALL_NODES.octets(), NDP_HOP_LIMIT)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(header))
        .write(&mut frame, &payload)
    {
        tracing::error!(error = %e, "building a neighbour advertisement failed");
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn garp_request_bytes() {
        let frame = gratuitous_arp_request(MAC, Ipv4Addr::new(192, 168, 1, 250));
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], // destination: broadcast
            &MAC,                                       // source
            &[0x08, 0x06],                              // ethertype ARP
            &[0x00, 0x01, 0x08, 0x00, 6, 4],            // Ethernet / IPv4, hlen 6, plen 4
            &[0x00, 0x01],                              // request
            &MAC, &[192, 168, 1, 250],                  // sender
            &[0, 0, 0, 0, 0, 0], &[192, 168, 1, 250],   // target: zero MAC, the VIP itself
            &[0u8; 18],                                 // padding to 60 bytes
        ].concat();
        assert_eq!(frame, expected);
        assert_eq!(frame.len(), MIN_FRAME_LEN);
    }

    #[test]
    fn garp_reply_bytes() {
        let frame = gratuitous_arp_reply(MAC, Ipv4Addr::new(10, 0, 0, 1));
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &BROADCAST_MAC[..], &MAC, &[0x08, 0x06],
            &[0x00, 0x01, 0x08, 0x00, 6, 4],
            &[0x00, 0x02],                              // reply
            &MAC, &[10, 0, 0, 1],
            &MAC, &[10, 0, 0, 1],                       // target: our MAC again, the VIP
            &[0u8; 18],
        ].concat();
        assert_eq!(frame, expected);
    }

    #[test]
    fn both_mode_sends_request_then_reply() {
        let vip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            gratuitous_arps(MAC, vip, ArpMode::Both),
            [
                gratuitous_arp_request(MAC, vip),
                gratuitous_arp_reply(MAC, vip)
            ]
        );
        assert_eq!(
            gratuitous_arps(MAC, vip, ArpMode::Request),
            [gratuitous_arp_request(MAC, vip)]
        );
        assert_eq!(
            gratuitous_arps(MAC, vip, ArpMode::Reply),
            [gratuitous_arp_reply(MAC, vip)]
        );
    }

    #[test]
    fn garp_parses_back() {
        let frame = gratuitous_arp_reply(MAC, Ipv4Addr::new(192, 168, 1, 250));
        let arp = ArpPacket::from_slice(&frame[14..])
            .unwrap()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(arp.operation, ArpOperation::REPLY);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ipv4_addr(), Ipv4Addr::new(192, 168, 1, 250));
        assert_eq!(arp.target_ipv4_addr(), Ipv4Addr::new(192, 168, 1, 250));
    }

    #[test]
    fn na_bytes() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let frame = unsolicited_na(MAC, vip);
        assert_eq!(frame.len(), 14 + 40 + 32);
        // Ethernet
        assert_eq!(frame[..6], ALL_NODES_MAC);
        assert_eq!(frame[6..12], MAC);
        assert_eq!(frame[12..14], [0x86, 0xdd]);
        // IPv6: version 6, no traffic class / flow label, payload 32, next header 58 (ICMPv6), hop limit 255
        assert_eq!(frame[14..22], [0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(frame[22..38], vip.octets());
        assert_eq!(frame[38..54], ALL_NODES.octets());
        // ICMPv6: type 136, code 0, checksum, flags R=0 S=0 O=1, reserved
        assert_eq!(frame[54..56], [136, 0]);
        assert_eq!(frame[58..62], [0x20, 0, 0, 0]);
        assert_eq!(frame[62..78], vip.octets());
        // target link-layer address option: type 2, length 1 (8 bytes), MAC
        assert_eq!(frame[78..80], [2, 1]);
        assert_eq!(frame[80..86], MAC);
        // The checksum, computed independently (RFC 4443 pseudo-header + message).
        let mut sum: u32 = 0;
        let mut add = |bytes: &[u8]| {
            for pair in bytes.chunks(2) {
                sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            }
        };
        add(&vip.octets());
        add(&ALL_NODES.octets());
        add(&32u32.to_be_bytes());
        add(&[0, 0, 0, 58]);
        add(&frame[54..56]);
        add(&frame[58..86]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let expected = !(sum as u16);
        assert_eq!(u16::from_be_bytes([frame[56], frame[57]]), expected);
    }

    #[test]
    fn na_parses_back_with_valid_checksum() {
        let vip: Ipv6Addr = "fd00::250".parse().unwrap();
        let frame = unsolicited_na(MAC, vip);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = packet.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().hop_limit(), 255);
        assert_eq!(ip.header().destination_addr(), ALL_NODES);
        let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else {
            panic!("not ICMPv6")
        };
        assert!(icmp.is_checksum_valid(vip.octets(), ALL_NODES.octets()));
        let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
            panic!("not an NA")
        };
        assert!(flags.r#override && !flags.solicited && !flags.router);
    }
}
