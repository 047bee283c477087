//! Pairing frames on the TCP stream: a 4-byte big-endian length, then the body (one kind byte
//! and the fields). Every length is checked before anything is allocated; a frame longer than
//! [`MAX_FRAME`] ends the session.
//!
//! ```text
//! primary -> secondary  InitiatorHello   { magic, version, cluster, node }
//! secondary -> primary  AcceptorHello    { magic, version, node, spake_b }
//! primary -> secondary  InitiatorKey     { spake_a, confirm_primary }
//! secondary -> primary  AcceptorConfirm  { confirm_secondary }
//! primary -> secondary  Payload          { sealed(secret, cluster.toml) }
//! secondary -> primary  Outcome          { sealed(accepted | refusal) }
//! either way            Abort            { kind, detail }   (unauthenticated: ends the session)
//! ```
//! A node is `{ name, address, heartbeat_port, sync_port }`: what the other side writes into its
//! `node.toml` as the peer.

use std::net::IpAddr;

/// First bytes of both hellos: anything else (a sync session, a port scanner) is dropped at once.
pub const MAGIC: [u8; 8] = *b"TNDMPAIR";
/// This build's pairing protocol version; both sides must speak the same.
pub const VERSION: u8 = 1;
/// Longest frame accepted: a cluster.toml of up to ~1 MiB sealed, with room to spare.
pub const MAX_FRAME: usize = 1 << 20;
/// Longest cluster.toml carried.
pub const MAX_CLUSTER_TOML: usize = MAX_FRAME - 4096;
/// Longest node or cluster name, and longest abort detail.
pub const MAX_NAME: usize = 255;
pub const MAX_DETAIL: usize = 2048;
/// A shared secret carried is 32..=1024 bytes (`tandem keygen` makes 64).
pub const MIN_SECRET: usize = 32;
pub const MAX_SECRET: usize = 1024;
/// Length of a key confirmation (HMAC-SHA256).
pub const CONFIRM_LEN: usize = 32;
/// Length of a SPAKE2 (Ed25519 group) message: a side byte and a point.
pub const SPAKE_LEN: usize = 33;

/// One side of the pair as the other must know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `[node] name`.
    pub name: String,
    /// `[node] address`: the heartbeat and sync address.
    pub address: IpAddr,
    pub heartbeat_port: u16,
    pub sync_port: u16,
}

impl NodeInfo {
    /// Whether this node and `peer` can form a pair: different names and addresses, one IP
    /// family, and the same heartbeat and sync ports (each node sends to the peer's address on
    /// its own ports). `Err` says what differs, for the operator.
    pub fn pairable_with(&self, peer: &NodeInfo) -> Result<(), String> {
        if self.name == peer.name {
            return Err(format!(
                "both nodes are named \"{}\" ([node] name): give each its own name",
                self.name
            ));
        }
        if self.address == peer.address {
            return Err(format!(
                "both nodes have the address {} ([node] address)",
                self.address
            ));
        }
        if self.address.is_ipv4() != peer.address.is_ipv4() {
            return Err(format!(
                "{} ({}) and {} ({}) are of different IP families",
                self.name, self.address, peer.name, peer.address
            ));
        }
        if (self.heartbeat_port, self.sync_port) != (peer.heartbeat_port, peer.sync_port) {
            return Err(format!(
                "{} uses heartbeat_port {} and sync_port {}, {} uses {} and {}: both nodes must use the same ports ([node] heartbeat_port, sync_port)",
                self.name,
                self.heartbeat_port,
                self.sync_port,
                peer.name,
                peer.heartbeat_port,
                peer.sync_port
            ));
        }
        Ok(())
    }
}

/// Why a side ended the session (sent in [`Frame::Abort`] or sealed in an outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// The key confirmation did not verify: the two sides typed or showed different codes.
    WrongCode = 1,
    /// The side already belongs to a cluster and was not started with `--force`.
    AlreadyPaired = 2,
    /// The two nodes cannot form a pair (ports, address family, same name, protocol version).
    Incompatible = 3,
    /// The result failed `tandem check`, or could not be written.
    Rejected = 4,
    /// A side gave up waiting.
    TimedOut = 5,
    /// A malformed or unexpected frame.
    Protocol = 6,
}

impl AbortKind {
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::WrongCode,
            2 => Self::AlreadyPaired,
            3 => Self::Incompatible,
            4 => Self::Rejected,
            5 => Self::TimedOut,
            6 => Self::Protocol,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    InitiatorHello {
        cluster: String,
        node: NodeInfo,
    },
    AcceptorHello {
        node: NodeInfo,
        spake: Vec<u8>,
    },
    InitiatorKey {
        spake: Vec<u8>,
        confirm: [u8; CONFIRM_LEN],
    },
    AcceptorConfirm {
        confirm: [u8; CONFIRM_LEN],
    },
    Payload {
        sealed: Vec<u8>,
    },
    Outcome {
        sealed: Vec<u8>,
    },
    Abort {
        kind: AbortKind,
        detail: String,
    },
}

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes is longer than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("not a tandem pairing peer (wrong magic bytes)")]
    Magic,
    #[error(
        "the peer speaks pairing protocol version {0}, this build speaks {VERSION}: pair two nodes of the same tandem version"
    )]
    Version(u8),
}

const INITIATOR_HELLO: u8 = 1;
const ACCEPTOR_HELLO: u8 = 2;
const INITIATOR_KEY: u8 = 3;
const ACCEPTOR_CONFIRM: u8 = 4;
const PAYLOAD: u8 = 5;
const OUTCOME: u8 = 6;
const ABORT: u8 = 7;

/// Appends fields to a frame body.
#[derive(Default)]
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        // Every caller bounds its field far below u32::MAX.
        self.0
            .extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.0.extend_from_slice(v);
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn ip(&mut self, v: &IpAddr) {
        match v {
            IpAddr::V4(a) => {
                self.u8(4);
                self.raw(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.raw(&a.octets());
            }
        }
    }
    fn node(&mut self, n: &NodeInfo) {
        self.str(&n.name);
        self.ip(&n.address);
        self.u16(n.heartbeat_port);
        self.u16(n.sync_port);
    }
}

/// Reads fields from a frame body; every read is bounds-checked.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let b = self.take(4)?;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > max {
            return Err(WireError::Malformed("field too long"));
        }
        self.take(len)
    }
    fn str(&mut self, max: usize) -> Result<String, WireError> {
        let b = self.bytes(max)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed("text is not UTF-8"))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn ip(&mut self) -> Result<IpAddr, WireError> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            _ => Err(WireError::Malformed("unknown address family")),
        }
    }
    fn node(&mut self) -> Result<NodeInfo, WireError> {
        let name = self.str(MAX_NAME)?;
        if name.is_empty() {
            return Err(WireError::Malformed("empty node name"));
        }
        Ok(NodeInfo {
            name,
            address: self.ip()?,
            heartbeat_port: self.u16()?,
            sync_port: self.u16()?,
        })
    }
    pub fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed("trailing bytes"))
        }
    }
}

impl Frame {
    /// The frame's body (without the length prefix): what the transcript hashes.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Frame::InitiatorHello { cluster, node } => {
                w.u8(INITIATOR_HELLO);
                w.raw(&MAGIC);
                w.u8(VERSION);
                w.str(cluster);
                w.node(node);
            }
            Frame::AcceptorHello { node, spake } => {
                w.u8(ACCEPTOR_HELLO);
                w.raw(&MAGIC);
                w.u8(VERSION);
                w.node(node);
                w.bytes(spake);
            }
            Frame::InitiatorKey { spake, confirm } => {
                w.u8(INITIATOR_KEY);
                w.bytes(spake);
                w.raw(confirm);
            }
            Frame::AcceptorConfirm { confirm } => {
                w.u8(ACCEPTOR_CONFIRM);
                w.raw(confirm);
            }
            Frame::Payload { sealed } => {
                w.u8(PAYLOAD);
                w.bytes(sealed);
            }
            Frame::Outcome { sealed } => {
                w.u8(OUTCOME);
                w.bytes(sealed);
            }
            Frame::Abort { kind, detail } => {
                w.u8(ABORT);
                w.u8(*kind as u8);
                w.str(truncate(detail, MAX_DETAIL));
            }
        }
        w.0
    }

    /// The frame with its length prefix, ready to send.
    pub fn encode(&self) -> Vec<u8> {
        length_prefixed(&self.body())
    }

    /// Reads one frame body.
    pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
        let mut r = Reader(body);
        let kind = r.u8()?;
        let frame = match kind {
            INITIATOR_HELLO | ACCEPTOR_HELLO => {
                if r.take(MAGIC.len())? != MAGIC {
                    return Err(WireError::Magic);
                }
                let version = r.u8()?;
                if version != VERSION {
                    // The rest may be laid out differently: the version alone is reported.
                    return Err(WireError::Version(version));
                }
                if kind == INITIATOR_HELLO {
                    let cluster = r.str(MAX_NAME)?;
                    if cluster.is_empty() {
                        return Err(WireError::Malformed("empty cluster name"));
                    }
                    Frame::InitiatorHello {
                        cluster,
                        node: r.node()?,
                    }
                } else {
                    Frame::AcceptorHello {
                        node: r.node()?,
                        spake: spake(&mut r)?,
                    }
                }
            }
            INITIATOR_KEY => Frame::InitiatorKey {
                spake: spake(&mut r)?,
                confirm: r.array()?,
            },
            ACCEPTOR_CONFIRM => Frame::AcceptorConfirm {
                confirm: r.array()?,
            },
            PAYLOAD => Frame::Payload {
                sealed: r.bytes(MAX_FRAME)?.to_vec(),
            },
            OUTCOME => Frame::Outcome {
                sealed: r.bytes(MAX_FRAME)?.to_vec(),
            },
            ABORT => {
                let kind = AbortKind::from_byte(r.u8()?)
                    .ok_or(WireError::Malformed("unknown abort kind"))?;
                Frame::Abort {
                    kind,
                    detail: r.str(MAX_DETAIL)?,
                }
            }
            _ => {
                // The first byte of a stream that is not ours (a sync dialer, a scanner).
                return Err(WireError::Malformed("unknown frame kind"));
            }
        };
        r.end()?;
        Ok(frame)
    }
}

fn spake(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let b = r.bytes(SPAKE_LEN)?;
    if b.len() != SPAKE_LEN {
        return Err(WireError::Malformed(
            "key exchange message of the wrong length",
        ));
    }
    Ok(b.to_vec())
}

/// At most `max` bytes of `s`, cut at a character boundary.
/// A frame body as it goes over the wire (its length first): what is sent, and what the
/// transcript binds of a received frame.
pub(crate) fn length_prefixed(body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(body);
    framed
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Collects stream bytes into frames; never holds more than one frame's worth.
#[derive(Default)]
pub struct Deframer {
    buffer: Vec<u8>,
}

impl Deframer {
    /// Appends received bytes; an announced length above [`MAX_FRAME`] is an error at once
    /// (before its body arrives).
    pub fn push(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 4 {
            let len = self.announced();
            if len > MAX_FRAME {
                return Err(WireError::TooLong {
                    len,
                    max: MAX_FRAME,
                });
            }
        }
        Ok(())
    }

    fn announced(&self) -> usize {
        u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize
    }

    /// The next complete frame body, if one has arrived.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = self.announced();
        if len > MAX_FRAME {
            return Err(WireError::TooLong {
                len,
                max: MAX_FRAME,
            });
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buffer[4..4 + len].to_vec();
        self.buffer.drain(..4 + len);
        Ok(Some(body))
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "lb1".into(),
            address: "192.0.2.1".parse().unwrap(),
            heartbeat_port: 6694,
            sync_port: 7778,
        }
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::InitiatorHello {
                cluster: "openstack".into(),
                node: node(),
            },
            Frame::AcceptorHello {
                node: NodeInfo {
                    address: "2001:db8::2".parse().unwrap(),
                    ..node()
                },
                spake: vec![0x42; SPAKE_LEN],
            },
            Frame::InitiatorKey {
                spake: vec![0x41; SPAKE_LEN],
                confirm: [7; CONFIRM_LEN],
            },
            Frame::AcceptorConfirm {
                confirm: [9; CONFIRM_LEN],
            },
            Frame::Payload {
                sealed: vec![1, 2, 3],
            },
            Frame::Outcome { sealed: vec![] },
            Frame::Abort {
                kind: AbortKind::WrongCode,
                detail: "wrong code".into(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = frame.encode();
            let mut d = Deframer::default();
            d.push(&bytes).unwrap();
            let body = d.next_body().unwrap().unwrap();
            assert_eq!(Frame::decode(&body).unwrap(), frame);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn pairable_nodes_differ_in_name_and_address_and_share_ports() {
        let other = NodeInfo {
            name: "lb2".into(),
            address: "192.0.2.2".parse().unwrap(),
            ..node()
        };
        assert_eq!(node().pairable_with(&other), Ok(()));
        let e = node().pairable_with(&node()).unwrap_err();
        assert!(e.contains("both nodes are named"), "{e}");
        let same_address = NodeInfo {
            name: "lb2".into(),
            ..node()
        };
        assert!(
            node()
                .pairable_with(&same_address)
                .unwrap_err()
                .contains("192.0.2.1")
        );
        let v6 = NodeInfo {
            address: "2001:db8::2".parse().unwrap(),
            ..other.clone()
        };
        assert!(
            node()
                .pairable_with(&v6)
                .unwrap_err()
                .contains("IP families")
        );
        let ports = NodeInfo {
            heartbeat_port: 6695,
            ..other
        };
        let e = node().pairable_with(&ports).unwrap_err();
        assert!(e.contains("6695") && e.contains("same ports"), "{e}");
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_body() {
        let mut d = Deframer::default();
        let e = d.push(&(MAX_FRAME as u32 + 1).to_be_bytes()).unwrap_err();
        assert!(matches!(e, WireError::TooLong { .. }), "{e}");
    }

    #[test]
    fn a_sync_hello_or_a_foreign_magic_is_not_ours() {
        let mut body = samples()[0].body();
        body[1..9].copy_from_slice(b"TNDMSYNC");
        assert_eq!(Frame::decode(&body), Err(WireError::Magic));
        assert!(Frame::decode(&[0xff, 1, 2]).is_err());
        assert!(Frame::decode(&[]).is_err());
        let mut newer = samples()[1].body();
        newer[9] = VERSION + 1;
        assert_eq!(Frame::decode(&newer), Err(WireError::Version(VERSION + 1)));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut body = samples()[3].body();
        body.push(0);
        assert!(Frame::decode(&body).is_err());
    }

    proptest! {
        #[test]
        fn truncated_frames_error_without_panic(which in 0usize..7, cut in 0usize..200) {
            let body = samples()[which].body();
            let cut = cut.min(body.len().saturating_sub(1));
            prop_assert!(Frame::decode(&body[..cut]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode(&bytes);
            let mut d = Deframer::default();
            if d.push(&bytes).is_ok() {
                while let Ok(Some(body)) = d.next_body() {
                    let _ = Frame::decode(&body);
                }
            }
        }

        #[test]
        fn flipped_bytes_never_panic(which in 0usize..7, at in 0usize..200, bit in 0u8..8) {
            let mut body = samples()[which].body();
            let at = at % body.len();
            body[at] ^= 1 << bit;
            let _ = Frame::decode(&body);
        }
    }
}
