//! The heartbeat datagram (UDP 6694): layout, HMAC-SHA256 authentication and replay protection.
//!
//! ```text
//! +------+---------+-----------------------------+-----------------------+
//! | TNDH | version | bincode 2 (standard) body   | HMAC-SHA256 (32 bytes) |
//! | 4 B  | u16 BE  | `Heartbeat`                 | over everything before |
//! +------+---------+-----------------------------+-----------------------+
//! ```
//! The whole datagram is at most [`MAX_DATAGRAM`] bytes. The magic and version sit in a fixed header, outside the
//! bincode body, so a node can tell a newer or older peer apart before parsing anything.
//!
//! **The envelope is frozen across versions:** magic, version, the tag (HMAC-SHA256 under the shared secret over
//! header and body) and the start of the body (cluster and node names, role and state as varints, boot epoch,
//! sequence number and `holds_vips`, bincode 2 standard encoding). A node therefore authenticates a heartbeat of any version, and
//! one of a version it cannot fully parse ([`Decoded::Incompatible`]) is still an authenticated, replay-checked sign
//! of life of the peer: the election keeps such a peer alive without reading its state (`Input::PeerIncompatible`).
//! A node reads every version in [`MIN_WIRE_VERSION`]`..=`[`WIRE_VERSION`] and answers a peer in the highest version
//! both read ([`SpeakVersion`]), so during a rolling upgrade the older node keeps full information.

use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};
use tandem_types::Secret;

/// First four bytes of every heartbeat datagram.
pub const MAGIC: [u8; 4] = *b"TNDH";
/// The newest wire version this build speaks. Feature `wire-next` builds the next release's (one more), for the
/// rolling-upgrade tests and drill.
pub const WIRE_VERSION: u16 = if cfg!(feature = "wire-next") { 2 } else { 1 };
/// The oldest wire version this build reads and speaks (rolling upgrades widen this range on purpose, never by
/// accident: a release keeps reading its predecessor's heartbeats).
pub const MIN_WIRE_VERSION: u16 = 1;
/// The version whose body format is [`Heartbeat`] alone; later versions append to it.
const BASE_VERSION: u16 = 1;
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

/// One heartbeat: everything a node tells its peer, several times a second. Its first seven fields, in this order
/// and encoding, are the frozen envelope every later wire version keeps (`parse_envelope`): never reorder them.
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
    #[error("heartbeat of a wire version this node does not read, not authenticated")]
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
    #[error("heartbeat wire version {0} is not one this codec speaks")]
    UnsupportedVersion(u16),
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
    /// The versions read and spoken: [`MIN_WIRE_VERSION`]`..=`[`WIRE_VERSION`] except in tests that model another
    /// release.
    min_version: u16,
    max_version: u16,
}

/// What an authenticated datagram of this cluster turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A heartbeat of a version this node reads; `version` is the one it was sent in.
    Heartbeat { heartbeat: Heartbeat, version: u16 },
    /// A heartbeat of a version this node does not read, authenticated under the shared secret: only its frozen
    /// envelope was parsed.
    Incompatible(IncompatibleHeartbeat),
}

/// The frozen envelope of a heartbeat of a version this node cannot parse (see the module doc): enough to know the
/// peer is alive (replay-checked), whether it may hold the VIPs, and who wins a split brain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompatibleHeartbeat {
    pub version: u16,
    pub node: String,
    /// `None`: a role number this node does not know (counts as not primary).
    pub role: Option<Role>,
    pub boot_epoch: u64,
    pub seq: u64,
    pub holds_vips: bool,
}

/// What the "next" release (wire version 2) appends to a version-1 body: the newest version its sender speaks. It
/// exists so the rolling-upgrade tests run against a body an older node really cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct NextExtension {
    wire_max: u16,
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
            min_version: MIN_WIRE_VERSION,
            max_version: WIRE_VERSION,
        }
    }

    /// A codec reading and speaking `min..=max` (2 at most): another release than this build, for tests and the
    /// rolling-upgrade simulation.
    #[doc(hidden)]
    pub fn with_versions(mut self, min: u16, max: u16) -> Self {
        self.min_version = min.max(BASE_VERSION);
        self.max_version = max.clamp(self.min_version, 2);
        self
    }

    /// The versions this codec reads and speaks.
    pub fn versions(&self) -> (u16, u16) {
        (self.min_version, self.max_version)
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Serialises and signs one heartbeat in the newest version this codec speaks.
    pub fn encode(&self, heartbeat: &Heartbeat) -> Result<Vec<u8>, EncodeError> {
        self.encode_version(heartbeat, self.max_version)
    }

    /// Serialises and signs one heartbeat in `version` (one this codec speaks: see [`SpeakVersion`]).
    pub fn encode_version(
        &self,
        heartbeat: &Heartbeat,
        version: u16,
    ) -> Result<Vec<u8>, EncodeError> {
        if !(self.min_version..=self.max_version).contains(&version) {
            return Err(EncodeError::UnsupportedVersion(version));
        }
        if heartbeat.cluster != self.cluster {
            return Err(EncodeError::WrongCluster {
                expected: self.cluster.clone(),
                found: heartbeat.cluster.clone(),
            });
        }
        let mut datagram = Vec::with_capacity(160);
        datagram.extend_from_slice(&MAGIC);
        datagram.extend_from_slice(&version.to_be_bytes());
        let body = bincode::serde::encode_to_vec(heartbeat, bincode_config())
            .map_err(|e| EncodeError::Bincode(e.to_string()))?;
        datagram.extend_from_slice(&body);
        if version > BASE_VERSION {
            let extension = NextExtension {
                wire_max: self.max_version,
            };
            let bytes = bincode::serde::encode_to_vec(extension, bincode_config())
                .map_err(|e| EncodeError::Bincode(e.to_string()))?;
            datagram.extend_from_slice(&bytes);
        }
        let total = datagram.len() + MAC_LEN;
        if total > MAX_DATAGRAM {
            return Err(EncodeError::Oversize(total));
        }
        let tag = hmac::sign(&self.key, &datagram);
        datagram.extend_from_slice(tag.as_ref());
        Ok(datagram)
    }

    /// Checks and parses one datagram of a version this node reads. A correctly authenticated heartbeat of any
    /// other version is [`Reject::BadVersion`] here; [`HeartbeatCodec::decode_any`] tells it apart.
    pub fn decode(&self, datagram: &[u8]) -> Result<Heartbeat, Reject> {
        match self.decode_any(datagram)? {
            Decoded::Heartbeat { heartbeat, .. } => Ok(heartbeat),
            Decoded::Incompatible(_) => Err(Reject::BadVersion),
        }
    }

    /// Checks and parses one datagram. Replay protection is separate ([`ReplayGuard`]) because it is per peer state.
    ///
    /// Order of checks: size, magic, tag, then the body (all of it for a version this node reads, only the frozen
    /// envelope for another), cluster. The tag is verified once; a datagram whose tag does not verify is never
    /// parsed: only its leading cluster name is peeked at (no allocation), to tell a foreign cluster (different key,
    /// another `[cluster] name`) from an altered or forged datagram in the counters. Either way it is dropped, at the
    /// cost of one HMAC: a flood of forged heartbeats costs no more. An unauthenticated datagram of a version this
    /// node does not read counts as [`Reject::BadVersion`], as it always has.
    pub fn decode_any(&self, datagram: &[u8]) -> Result<Decoded, Reject> {
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
        let readable = (self.min_version..=self.max_version).contains(&version);
        let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        let body = &signed[HEADER_LEN..];
        if hmac::verify(&self.key, signed, tag).is_err() {
            if !readable {
                return Err(Reject::BadVersion);
            }
            return Err(match peek_cluster(body) {
                Some(name) if name != self.cluster.as_bytes() => Reject::ForeignCluster,
                _ => Reject::BadMac,
            });
        }
        if !readable {
            let envelope = parse_envelope(body).ok_or(Reject::Malformed)?;
            if envelope.cluster != self.cluster.as_bytes() {
                return Err(Reject::ForeignCluster);
            }
            let node = std::str::from_utf8(envelope.node)
                .map_err(|_| Reject::Malformed)?
                .to_owned();
            return Ok(Decoded::Incompatible(IncompatibleHeartbeat {
                version,
                node,
                role: match envelope.role {
                    0 => Some(Role::Primary),
                    1 => Some(Role::Secondary),
                    _ => None,
                },
                boot_epoch: envelope.boot_epoch,
                seq: envelope.seq,
                holds_vips: envelope.holds_vips,
            }));
        }
        let heartbeat = parse_body(body, version).ok_or(Reject::Malformed)?;
        if heartbeat.cluster != self.cluster {
            return Err(Reject::ForeignCluster);
        }
        Ok(Decoded::Heartbeat { heartbeat, version })
    }
}

/// Which version to send to the peer: the highest both read. Sans-IO; the driver feeds it every authenticated
/// heartbeat (readable or not) with the sender's boot epoch.
///
/// A node starts every run speaking its newest version. A peer heard in an older version this node reads is
/// answered in that version (the peer may be an older release that reads nothing newer); within one boot epoch of
/// the peer the highest version heard from it is remembered, because a newer peer answering our own older
/// heartbeats in kind must not drag us both down: its first heartbeats (sent before it heard us) were in its newest
/// version. A peer speaking a version this node does not read is answered in this node's newest version (a newer
/// release reads it and comes down; an older one cannot be helped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeakVersion {
    min: u16,
    max: u16,
    /// The peer's run: its boot epoch, the highest version heard from it in that epoch, the latest version heard.
    peer: Option<PeerVersions>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerVersions {
    epoch: u64,
    highest: u16,
    latest: u16,
}

impl SpeakVersion {
    pub fn new(min: u16, max: u16) -> Self {
        Self {
            min,
            max,
            peer: None,
        }
    }

    /// An authenticated, replay-checked heartbeat of the peer in `version`.
    pub fn heard(&mut self, boot_epoch: u64, version: u16) {
        let highest = match self.peer {
            Some(p) if p.epoch == boot_epoch => p.highest.max(version),
            _ => version,
        };
        self.peer = Some(PeerVersions {
            epoch: boot_epoch,
            highest,
            latest: version,
        });
    }

    /// An authenticated heartbeat of the peer that the replay guard refused as a repeat of its current run (same boot
    /// epoch, sequence not above the last accepted: reordered or replayed). It still proves that the peer's current run
    /// speaks `version`, so it may raise the highest version remembered for that run, and nothing else. Without it
    /// a link that delivered the peer's first heartbeats (in its newest version) behind a later one left both nodes
    /// speaking the older version for good (simulator, seed 33 of the rolling upgrade). A replay of an older run
    /// changes nothing.
    pub fn heard_reordered(&mut self, boot_epoch: u64, version: u16) {
        if let Some(p) = self.peer.as_mut()
            && p.epoch == boot_epoch
        {
            p.highest = p.highest.max(version);
        }
    }

    /// The versions this node reads and speaks.
    pub fn range(&self) -> (u16, u16) {
        (self.min, self.max)
    }

    /// The version to send in now.
    pub fn speak(&self) -> u16 {
        match self.peer {
            Some(p) if (self.min..self.max).contains(&p.highest) => p.highest,
            _ => self.max,
        }
    }

    /// The version of the peer's latest heartbeat, if any.
    pub fn peer_version(&self) -> Option<u16> {
        self.peer.map(|p| p.latest)
    }

    /// The peer's latest heartbeat was in a version this node does not read.
    pub fn peer_incompatible(&self) -> bool {
        self.peer
            .is_some_and(|p| !(self.min..=self.max).contains(&p.latest))
    }
}

/// The frozen start of every version's body, read without the rest.
struct Envelope<'a> {
    cluster: &'a [u8],
    node: &'a [u8],
    role: u64,
    boot_epoch: u64,
    seq: u64,
    holds_vips: bool,
}

/// Parses the frozen envelope of an authenticated body: cluster, node, role (varint), state (varint), boot epoch,
/// sequence number, `holds_vips` (one byte, 0 or 1), in bincode 2 standard encoding. Role and state are read as
/// numbers: a later version may have states this one does not know (the state is skipped).
fn parse_envelope(body: &[u8]) -> Option<Envelope<'_>> {
    let (cluster, rest) = read_bytes(body)?;
    let (node, rest) = read_bytes(rest)?;
    let (role, rest) = read_varint(rest)?;
    let (_state, rest) = read_varint(rest)?;
    let (boot_epoch, rest) = read_varint(rest)?;
    let (seq, rest) = read_varint(rest)?;
    let holds_vips = match rest.first()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(Envelope {
        cluster,
        node,
        role,
        boot_epoch,
        seq,
        holds_vips,
    })
}

/// A bincode 2 standard varint (u64 at most).
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let width = match first {
        0..=250 => return Some((u64::from(first), rest)),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return None,
    };
    let raw = rest.get(..width)?;
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(raw);
    Some((u64::from_le_bytes(le), &rest[width..]))
}

/// A length-prefixed byte string (bincode 2 standard).
fn read_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = read_varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    let value = rest.get(..len)?;
    Some((value, &rest[len..]))
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

/// Parses a body of a version this node reads, requiring it to be consumed exactly.
fn parse_body(body: &[u8], version: u16) -> Option<Heartbeat> {
    let (hb, used) =
        bincode::serde::decode_from_slice::<Heartbeat, _>(body, bincode_config()).ok()?;
    let rest = &body[used..];
    if version == BASE_VERSION {
        return rest.is_empty().then_some(hb);
    }
    match bincode::serde::decode_from_slice::<NextExtension, _>(rest, bincode_config()) {
        Ok((_, used)) if used == rest.len() => Some(hb),
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
    fn unauthenticated_datagrams_of_other_versions_are_bad_version() {
        let mut bytes = codec().encode(&sample(1)).unwrap();
        bytes[4..6].copy_from_slice(&(WIRE_VERSION + 1).to_be_bytes());
        assert_eq!(codec().decode_any(&bytes), Err(Reject::BadVersion));
        bytes[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(codec().decode_any(&bytes), Err(Reject::BadVersion));
        // Of a newer release, signed under another key: still only a bad version, never a sign of life.
        let forged = HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"other key"))
            .with_versions(2, 2)
            .encode(&sample(1))
            .unwrap();
        assert_eq!(
            codec().with_versions(1, 1).decode_any(&forged),
            Err(Reject::BadVersion)
        );
    }

    /// Signs `body` under the test key with any version number.
    fn signed(version: u16, body: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(body);
        let tag = hmac::sign(&key, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        bytes
    }

    #[test]
    fn an_authenticated_heartbeat_of_an_unread_version_is_incompatible() {
        let old = codec().with_versions(1, 1);
        let next = codec().with_versions(1, 2);
        let hb = sample(77);
        let bytes = next.encode(&hb).unwrap();
        assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), 2);
        let expected = Decoded::Incompatible(IncompatibleHeartbeat {
            version: 2,
            node: "lb1".into(),
            role: Some(Role::Primary),
            boot_epoch: hb.boot_epoch,
            seq: 77,
            holds_vips: true,
        });
        assert_eq!(old.decode_any(&bytes), Ok(expected));
        assert_eq!(old.decode(&bytes), Err(Reject::BadVersion));
        // The next release reads both versions; the older one reads its own.
        assert_eq!(
            next.decode_any(&bytes),
            Ok(Decoded::Heartbeat {
                heartbeat: hb.clone(),
                version: 2
            })
        );
        let v1 = next.encode_version(&hb, 1).unwrap();
        assert_eq!(old.decode(&v1), Ok(hb.clone()));
        assert_eq!(next.decode(&v1), Ok(hb.clone()));
        // A version-2 body really is unreadable as version 1 (the extension is trailing data).
        let body = &bytes[HEADER_LEN..bytes.len() - MAC_LEN];
        assert_eq!(parse_body(body, 1), None);
        assert!(parse_body(body, 2).is_some());
        // Any future version with the frozen envelope is recognised, as is an unknown state number in it.
        let mut future = body.to_vec();
        future.extend_from_slice(&[9, 9, 9]);
        assert!(matches!(
            old.decode_any(&signed(40, &future)),
            Ok(Decoded::Incompatible(IncompatibleHeartbeat {
                version: 40,
                seq: 77,
                ..
            }))
        ));
        assert_eq!(
            old.encode_version(&hb, 2),
            Err(EncodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn an_unread_version_is_still_checked_for_cluster_and_envelope() {
        let mut hb = sample(1);
        hb.cluster = "other".into();
        let other = HeartbeatCodec::new(
            "other",
            &crate::wire::test_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .with_versions(2, 2)
        .encode(&hb)
        .unwrap();
        assert_eq!(
            codec().with_versions(1, 1).decode_any(&other),
            Err(Reject::ForeignCluster)
        );
        assert_eq!(
            codec().decode_any(&signed(9, &[0xff; 20])),
            Err(Reject::Malformed)
        );
        assert_eq!(codec().decode_any(&signed(9, &[])), Err(Reject::Malformed));
    }

    #[test]
    fn the_pair_speaks_the_highest_common_version() {
        // A newer node (1..=2) hears an older one (1..=1).
        let mut newer = SpeakVersion::new(1, 2);
        assert_eq!(newer.speak(), 2, "a run starts at the newest version");
        newer.heard(10, 1);
        assert_eq!(newer.speak(), 1);
        assert!(!newer.peer_incompatible());
        // The older node hears the newer one's first heartbeats: incompatible, answers in its own.
        let mut older = SpeakVersion::new(1, 1);
        older.heard(20, 2);
        assert_eq!(older.speak(), 1);
        assert!(older.peer_incompatible());
        older.heard(20, 1);
        assert!(!older.peer_incompatible(), "the newer node came down");
        // The peer restarts upgraded (new epoch): its first heartbeats are in 2; answers to our old 1s in 1 do
        // not drag us back down.
        newer.heard(11, 2);
        assert_eq!(newer.speak(), 2);
        newer.heard(11, 1);
        assert_eq!(newer.speak(), 2, "highest heard in this run of the peer");
        assert_eq!(newer.peer_version(), Some(1), "the latest heard");
        // A rollback: the peer restarts as the older release.
        newer.heard(12, 1);
        assert_eq!(newer.speak(), 1);
        // A peer older than anything we read: we speak our newest (it cannot read us either).
        let mut far = SpeakVersion::new(2, 3);
        far.heard(1, 1);
        assert_eq!(far.speak(), 3);
        assert!(far.peer_incompatible());
    }

    #[test]
    fn a_reordered_heartbeat_of_the_current_run_still_raises_the_version() {
        let mut newer = SpeakVersion::new(1, 2);
        // The upgraded peer's run 11: its answer in 1 arrived first, its first heartbeats in 2 after it (refused by
        // the replay guard as reordered).
        newer.heard(11, 1);
        assert_eq!(newer.speak(), 1);
        newer.heard_reordered(11, 2);
        assert_eq!(newer.speak(), 2);
        assert_eq!(
            newer.peer_version(),
            Some(1),
            "the latest accepted is unchanged"
        );
        // A replay of an older run changes nothing; nor does one before any heartbeat was accepted.
        let mut pinned = SpeakVersion::new(1, 2);
        pinned.heard(12, 1);
        pinned.heard_reordered(11, 2);
        assert_eq!(pinned.speak(), 1);
        let mut fresh = SpeakVersion::new(1, 2);
        fresh.heard_reordered(1, 1);
        assert_eq!(fresh.speak(), 2);
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
        fn any_newer_heartbeat_is_a_sign_of_life_with_its_envelope(
            node in "[a-z0-9-]{1,40}",
            seq in any::<u64>(),
            epoch in any::<u64>(),
            state in 0usize..NodeState::ALL.len(),
            secondary in any::<bool>(),
            holds_vips in any::<bool>(),
        ) {
            let mut hb = sample(seq);
            hb.node = node.clone();
            hb.boot_epoch = epoch;
            hb.state = NodeState::ALL[state];
            hb.holds_vips = holds_vips;
            let role = if secondary { Role::Secondary } else { Role::Primary };
            hb.role = role;
            let bytes = codec().with_versions(2, 2).encode(&hb).unwrap();
            prop_assert_eq!(
                codec().with_versions(1, 1).decode_any(&bytes),
                Ok(Decoded::Incompatible(IncompatibleHeartbeat {
                    version: 2, node, role: Some(role), boot_epoch: epoch, seq, holds_vips,
                }))
            );
        }

        #[test]
        fn arbitrary_signed_bodies_of_any_version_never_panic(
            version in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let _ = codec().decode_any(&signed(version, &body));
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
