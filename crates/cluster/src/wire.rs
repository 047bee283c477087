//! The heartbeat datagram (UDP 6694): layout, HMAC-SHA256 authentication and replay protection.
//!
//! ```text
//! +------+---------+-----------------------------+-----------------------+
//! | TNDH | version | bincode 2 (standard) body   | HMAC-SHA256 (32 bytes) |
//! | 4 B  | u16 BE  | `Heartbeat`                 | over everything before |
//! +------+---------+-----------------------------+-----------------------+
//! ```
//! The whole datagram is at most [`MAX_DATAGRAM`] bytes. The magic and version sit in a fixed header, outside the
//! bincode body, so a node can tell a newer or older peer apart (and refuse it explicitly) before parsing anything.

use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};
use tandem_types::Secret;

/// First four bytes of every heartbeat datagram.
pub const MAGIC: [u8; 4] = *b"TNDH";
/// The wire version this build speaks.
pub const WIRE_VERSION: u16 = 1;
/// The oldest wire version this build accepts (rolling upgrades widen this range on purpose, never by accident).
pub const MIN_WIRE_VERSION: u16 = 1;
/// Largest datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 512;
/// Length of the HMAC-SHA256 tag at the end of a datagram.
pub const MAC_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 2;
/// Smallest datagram that can possibly be valid (header + tag, empty body).
pub const MIN_DATAGRAM: usize = HEADER_LEN + MAC_LEN;

mod replay;
pub use replay::{OwnView, ReplayGuard};

/// A node's configured role: the one role type of every part (its variant order is part of this wire format).
pub use tandem_types::Role;

/// A node's election state, as carried on the wire and shown in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Just started: waiting up to `init_dead_ms` to hear the peer.
    Init,
    /// Not holding the VIPs, ready to take over.
    Standby,
    /// Wants to become active while the peer is up but not active; waits for the peer's grant (one round trip).
    Claiming,
    /// VIPs are being added.
    Acquiring,
    /// Holds and serves the VIPs.
    Active,
    /// VIPs are being removed (handover, split-brain loss, shutdown).
    Releasing,
    /// Adding or removing the VIPs failed: visible, never silently active.
    Fault,
    /// Shutting down: holds nothing and will not take over.
    Stopped,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Init => "init",
            NodeState::Standby => "standby",
            NodeState::Claiming => "claiming",
            NodeState::Acquiring => "acquiring",
            NodeState::Active => "active",
            NodeState::Releasing => "releasing",
            NodeState::Fault => "fault",
            NodeState::Stopped => "stopped",
        }
    }

    /// Every state, in a fixed order (one Prometheus gauge per state).
    pub const ALL: [NodeState; 8] = [
        NodeState::Init,
        NodeState::Standby,
        NodeState::Claiming,
        NodeState::Acquiring,
        NodeState::Active,
        NodeState::Releasing,
        NodeState::Fault,
        NodeState::Stopped,
    ];
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a node can reach any of the configured ping nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PingState {
    /// No ping nodes configured: counts as reachable.
    NotConfigured,
    Reachable,
    Unreachable,
}

impl PingState {
    /// Unreachable is the only "bad" state; not configured and reachable compare equal.
    pub fn ok(self) -> bool {
        self != PingState::Unreachable
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PingState::NotConfigured => "not-configured",
            PingState::Reachable => "reachable",
            PingState::Unreachable => "unreachable",
        }
    }
}

/// One heartbeat: everything a node tells its peer, several times a second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Cluster id (`[cluster] name`): heartbeats of another cluster are dropped.
    pub cluster: String,
    /// Sender's node name (`[node] name`).
    pub node: String,
    pub role: Role,
    pub state: NodeState,
    /// Chosen once per process start and increasing across restarts; with `seq` it defeats replays.
    pub boot_epoch: u64,
    /// Increases by one for every heartbeat sent within a boot epoch, starting at 1.
    pub seq: u64,
    /// The sender may have the VIPs on its interface (from the moment it starts adding them until removal is
    /// confirmed). The peer never adds the VIPs while this is set.
    pub holds_vips: bool,
    /// "I have dropped the VIPs: please take over" (clean handover, shutdown).
    pub handover: bool,
    /// "I want the active role" (`tandem takeover`, auto-failback).
    pub takeover_request: bool,
    /// Replication of stick tables and config from the peer is complete.
    pub caught_up: bool,
    pub ping: PingState,
    /// The peer's boot epoch and sequence number last accepted by the sender (acknowledges claims).
    pub ack_epoch: u64,
    pub ack_seq: u64,
    /// Generation and SHA-256 digest of the sender's accepted `cluster.toml`.
    pub config_generation: u64,
    pub config_digest: [u8; 32],
    /// Real servers currently up / configured (health summary).
    pub servers_up: u32,
    pub servers_total: u32,
}

/// Why a datagram was dropped. Every reason is counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("datagram shorter than header and tag")]
    Truncated,
    #[error("datagram larger than {MAX_DATAGRAM} bytes")]
    Oversize,
    #[error("not a tandem heartbeat (bad magic)")]
    Malformed,
    #[error("unsupported heartbeat wire version")]
    BadVersion,
    #[error("authentication failed (wrong key or altered datagram)")]
    BadMac,
    #[error("heartbeat of another cluster")]
    ForeignCluster,
    #[error("replayed or reordered heartbeat (sequence number not increasing)")]
    Replay,
    #[error("heartbeat from an older boot epoch")]
    Stale,
    #[error("heartbeat carrying this node's own name")]
    OwnName,
    #[error("datagram from an address that is not the peer")]
    UnexpectedSource,
}

impl Reject {
    /// Every reason, in a fixed order (metric labels).
    pub const ALL: [Reject; 10] = [
        Reject::Truncated,
        Reject::Oversize,
        Reject::Malformed,
        Reject::BadVersion,
        Reject::BadMac,
        Reject::ForeignCluster,
        Reject::Replay,
        Reject::Stale,
        Reject::OwnName,
        Reject::UnexpectedSource,
    ];

    /// Stable snake-case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversize => "oversize",
            Reject::Malformed => "malformed",
            Reject::BadVersion => "bad_version",
            Reject::BadMac => "bad_mac",
            Reject::ForeignCluster => "foreign_cluster",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
            Reject::OwnName => "own_name",
            Reject::UnexpectedSource => "unexpected_source",
        }
    }
}

/// A heartbeat that cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "heartbeat of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit (cluster or node name too long?)"
    )]
    Oversize(usize),
    #[error("heartbeat names cluster {found:?}, this codec is for {expected:?}")]
    WrongCluster { expected: String, found: String },
    #[error("bincode: {0}")]
    Bincode(String),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DATAGRAM>()
}

/// Encodes and authenticates heartbeats of one cluster under one shared secret.
#[derive(Clone)]
pub struct HeartbeatCodec {
    cluster: String,
    key: hmac::Key,
}

impl fmt::Debug for HeartbeatCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatCodec")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl HeartbeatCodec {
    /// `secret` is the raw content of the shared-secret file (the same on both nodes).
    pub fn new(cluster: &str, secret: &Secret) -> Self {
        Self {
            cluster: cluster.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose()),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Serialises and signs one heartbeat.
    pub fn encode(&self, heartbeat: &Heartbeat) -> Result<Vec<u8>, EncodeError> {
        if heartbeat.cluster != self.cluster {
            return Err(EncodeError::WrongCluster {
                expected: self.cluster.clone(),
                found: heartbeat.cluster.clone(),
            });
        }
        let mut datagram = Vec::with_capacity(160);
        datagram.extend_from_slice(&MAGIC);
        datagram.extend_from_slice(&WIRE_VERSION.to_be_bytes());
        let body = bincode::serde::encode_to_vec(heartbeat, bincode_config())
            .map_err(|e| EncodeError::Bincode(e.to_string()))?;
        datagram.extend_from_slice(&body);
        let total = datagram.len() + MAC_LEN;
        if total > MAX_DATAGRAM {
            return Err(EncodeError::Oversize(total));
        }
        let tag = hmac::sign(&self.key, &datagram);
        datagram.extend_from_slice(tag.as_ref());
        Ok(datagram)
    }

    /// Checks and parses one datagram. Replay protection is separate ([`ReplayGuard`]) because it is per peer state.
    ///
    /// Order of checks: size, magic, version, tag, body, cluster. The tag is verified once; a datagram whose tag
    /// does not verify is never parsed: only its leading cluster name is peeked at (no allocation), to tell a
    /// foreign cluster (different key, another `[cluster] name`) from an altered or forged datagram in the
    /// counters. Either way it is dropped, at the cost of one HMAC: a flood of forged heartbeats costs no more.
    pub fn decode(&self, datagram: &[u8]) -> Result<Heartbeat, Reject> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Reject::Oversize);
        }
        if datagram.len() < MIN_DATAGRAM {
            return Err(Reject::Truncated);
        }
        if datagram[..MAGIC.len()] != MAGIC {
            return Err(Reject::Malformed);
        }
        let version = u16::from_be_bytes([datagram[4], datagram[5]]);
        if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
            return Err(Reject::BadVersion);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        let body = &signed[HEADER_LEN..];
        if hmac::verify(&self.key, signed, tag).is_err() {
            return Err(match peek_cluster(body) {
                Some(name) if name != self.cluster.as_bytes() => Reject::ForeignCluster,
                _ => Reject::BadMac,
            });
        }
        let heartbeat = parse_body(body).ok_or(Reject::Malformed)?;
        if heartbeat.cluster != self.cluster {
            return Err(Reject::ForeignCluster);
        }
        Ok(heartbeat)
    }
}

/// The cluster name at the start of an unauthenticated body, read without parsing the rest (bincode 2 standard: a
/// varint length, then UTF-8 bytes). `None` when it cannot be a name; only ever used to label a rejection.
fn peek_cluster(body: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = body.split_first()?;
    let (len, rest) = match first {
        0..=250 => (usize::from(first), rest),
        251 => {
            let bytes = rest.get(..2)?;
            (
                usize::from(u16::from_le_bytes([bytes[0], bytes[1]])),
                &rest[2..],
            )
        }
        // Longer lengths cannot fit in a datagram of at most MAX_DATAGRAM bytes.
        _ => return None,
    };
    let name = rest.get(..len)?;
    std::str::from_utf8(name).ok().map(str::as_bytes)
}

/// Parses a body, requiring it to be consumed exactly.
fn parse_body(body: &[u8]) -> Option<Heartbeat> {
    match bincode::serde::decode_from_slice::<Heartbeat, _>(body, bincode_config()) {
        Ok((hb, used)) if used == body.len() => Some(hb),
        _ => None,
    }
}

/// Counts of dropped datagrams, one per [`Reject`] reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts([u64; Reject::ALL.len()]);

impl RejectCounts {
    pub fn add(&mut self, reason: Reject) {
        let index = Reject::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.0[index] = self.0[index].saturating_add(1);
    }

    pub fn get(&self, reason: Reject) -> u64 {
        Reject::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.0[i])
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// (label, count) for every reason, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL
            .iter()
            .zip(self.0.iter())
            .map(|(r, c)| (r.label(), *c))
    }
}

/// A test secret made from any seed (repeated to the minimum length), so tests can name keys briefly.
#[cfg(test)]
pub(crate) fn test_secret(seed: &[u8]) -> Secret {
    let bytes: Vec<u8> = seed
        .iter()
        .copied()
        .cycle()
        .take(seed.len().max(tandem_types::MIN_SECRET_LEN))
        .collect();
    Secret::new(bytes).expect("long enough")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(seq: u64) -> Heartbeat {
        Heartbeat {
            cluster: "openstack".into(),
            node: "lb1".into(),
            role: Role::Primary,
            state: NodeState::Active,
            boot_epoch: 1_700_000_000_000_000,
            seq,
            holds_vips: true,
            handover: false,
            takeover_request: false,
            caught_up: true,
            ping: PingState::Reachable,
            ack_epoch: 1_700_000_000_000_123,
            ack_seq: 4242,
            config_generation: 7,
            config_digest: [0xab; 32],
            servers_up: 68,
            servers_total: 69,
        }
    }

    fn codec() -> HeartbeatCodec {
        HeartbeatCodec::new(
            "openstack",
            &crate::wire::test_secret(b"0123456789abcdef0123456789abcdef"),
        )
    }

    #[test]
    fn round_trip() {
        let hb = sample(1);
        let bytes = codec().encode(&hb).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(&bytes[..4], b"TNDH");
        assert_eq!(codec().decode(&bytes).unwrap(), hb);
    }

    #[test]
    fn typical_heartbeat_is_small() {
        let bytes = codec().encode(&sample(u64::MAX)).unwrap();
        eprintln!("typical heartbeat: {} bytes", bytes.len());
        assert!(bytes.len() < 160, "{} bytes", bytes.len());
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let bytes = HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"another secret"))
            .encode(&sample(1))
            .unwrap();
        assert_eq!(codec().decode(&bytes), Err(Reject::BadMac));
    }

    #[test]
    fn other_cluster_is_foreign_with_or_without_the_same_key() {
        let mut hb = sample(1);
        hb.cluster = "other".into();
        let same_key = HeartbeatCodec::new(
            "other",
            &crate::wire::test_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .encode(&hb)
        .unwrap();
        assert_eq!(codec().decode(&same_key), Err(Reject::ForeignCluster));
        let other_key = HeartbeatCodec::new("other", &crate::wire::test_secret(b"x"))
            .encode(&hb)
            .unwrap();
        assert_eq!(codec().decode(&other_key), Err(Reject::ForeignCluster));
    }

    #[test]
    fn encoding_for_another_cluster_is_refused() {
        let mut hb = sample(1);
        hb.cluster = "other".into();
        assert!(matches!(
            codec().encode(&hb),
            Err(EncodeError::WrongCluster { .. })
        ));
    }

    #[test]
    fn truncated_oversize_and_magic() {
        let bytes = codec().encode(&sample(1)).unwrap();
        assert_eq!(
            codec().decode(&bytes[..MIN_DATAGRAM - 1]),
            Err(Reject::Truncated)
        );
        assert_eq!(codec().decode(&[]), Err(Reject::Truncated));
        assert_eq!(
            codec().decode(&vec![0u8; MAX_DATAGRAM + 1]),
            Err(Reject::Oversize)
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(codec().decode(&bad), Err(Reject::Malformed));
        // Cut short in the body: the tag no longer matches.
        assert_eq!(
            codec().decode(&bytes[..bytes.len() - 1]),
            Err(Reject::BadMac)
        );
    }

    #[test]
    fn other_versions_are_refused_explicitly() {
        let mut bytes = codec().encode(&sample(1)).unwrap();
        bytes[4..6].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(codec().decode(&bytes), Err(Reject::BadVersion));
        bytes[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(codec().decode(&bytes), Err(Reject::BadVersion));
    }

    #[test]
    fn signed_garbage_body_is_malformed() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&WIRE_VERSION.to_be_bytes());
        bytes.extend_from_slice(&[0xff; 20]);
        let tag = hmac::sign(&key, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        assert_eq!(codec().decode(&bytes), Err(Reject::Malformed));
        // A valid body followed by trailing bytes, correctly signed, is malformed too.
        let valid = codec().encode(&sample(1)).unwrap();
        let mut padded = valid[..valid.len() - MAC_LEN].to_vec();
        padded.push(0);
        let tag = hmac::sign(&key, &padded);
        padded.extend_from_slice(tag.as_ref());
        assert_eq!(codec().decode(&padded), Err(Reject::Malformed));
    }

    #[test]
    fn overlong_names_are_an_encode_error() {
        let mut hb = sample(1);
        hb.node = "n".repeat(600);
        assert!(matches!(codec().encode(&hb), Err(EncodeError::Oversize(_))));
        hb.node = "n".repeat(400);
        assert!(matches!(codec().encode(&hb), Err(EncodeError::Oversize(_))));
    }

    #[test]
    fn a_failed_tag_is_labelled_from_the_cluster_name_alone() {
        let other_key = HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"other key"));
        let mut bytes = other_key.encode(&sample(1)).unwrap();
        // Garbage after a readable name of our cluster: still only a bad tag.
        let end = bytes.len() - MAC_LEN;
        bytes[HEADER_LEN + 10..end].fill(0xff);
        assert_eq!(codec().decode(&bytes), Err(Reject::BadMac));
        // Another cluster's name followed by garbage: foreign (the body is not parsed).
        let mut hb = sample(1);
        hb.cluster = "ceph".into();
        let mut bytes = HeartbeatCodec::new("ceph", &crate::wire::test_secret(b"other key"))
            .encode(&hb)
            .unwrap();
        let end = bytes.len() - MAC_LEN;
        bytes[HEADER_LEN + 6..end].fill(0xff);
        assert_eq!(codec().decode(&bytes), Err(Reject::ForeignCluster));
        assert_eq!(peek_cluster(&[]), None);
        assert_eq!(peek_cluster(&[5, b'a']), None, "shorter than its length");
        assert_eq!(peek_cluster(&[2, 0xff, 0xfe]), None, "not UTF-8");
        assert_eq!(peek_cluster(&[251, 2, 0, b'a', b'b']), Some(&b"ab"[..]));
        assert_eq!(peek_cluster(&[252, 0, 0, 0, 0]), None);
    }

    #[test]
    fn reject_counts() {
        let mut counts = RejectCounts::default();
        counts.add(Reject::BadMac);
        counts.add(Reject::BadMac);
        counts.add(Reject::UnexpectedSource);
        assert_eq!(counts.get(Reject::BadMac), 2);
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.iter().count(), Reject::ALL.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = codec().decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&WIRE_VERSION.to_be_bytes());
            bytes.extend_from_slice(&body);
            prop_assert!(codec().decode(&bytes).is_err());
        }

        #[test]
        fn any_bit_flip_is_rejected(seq in any::<u64>(), bit in 0usize..(MAX_DATAGRAM * 8)) {
            let bytes = codec().encode(&sample(seq)).unwrap();
            let bit = bit % (bytes.len() * 8);
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(codec().decode(&flipped).is_err());
        }

        #[test]
        fn round_trips_for_any_content(
            node in "[a-z0-9-]{1,40}",
            seq in any::<u64>(),
            epoch in any::<u64>(),
            up in any::<u32>(),
            digest in any::<[u8; 32]>(),
        ) {
            let mut hb = sample(seq);
            hb.node = node;
            hb.boot_epoch = epoch;
            hb.servers_up = up;
            hb.config_digest = digest;
            let bytes = codec().encode(&hb).unwrap();
            prop_assert_eq!(codec().decode(&bytes).unwrap(), hb);
        }
    }
}
