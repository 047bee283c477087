//! Why a session was closed or an input rejected, as a closed set of reasons that are logged and
//! counted (the `rejected` counters of [`crate::status::SyncStatus`]).

use std::collections::BTreeMap;

/// The reason a frame, a handshake or a whole session was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Bytes that do not decode as a message of this protocol.
    Garbage,
    /// A frame longer than the configured maximum.
    FrameTooLarge,
    /// The peer's protocol version range does not overlap ours.
    VersionUnsupported,
    /// The peer belongs to another cluster.
    ClusterMismatch,
    /// The peer's challenge response is wrong: it does not hold our secret (or replays an old session).
    BadProof,
    /// A frame whose AEAD tag does not verify: forged, altered, truncated, replayed, reordered,
    /// dropped before it, reflected, or from another session.
    BadMac,
    /// Not produced since protocol version 2 (the frame counter is the AEAD nonce, so frames out
    /// of order fail as `BadMac`); kept so that the counter names stay the same.
    BadSequence,
    /// A well-formed message arriving when the protocol does not allow it.
    UnexpectedMessage,
    /// The peer refused our handshake.
    RefusedByPeer,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// Nothing heard from the peer for too long.
    PeerTimeout,
    /// A connection from an address other than the configured peer.
    UnexpectedSource,
    /// The peer consumed nothing for too long while we had data queued.
    PeerStalled,
    /// The connection failed or was closed.
    Io,
}

impl RejectReason {
    /// All reasons, for exporting zero-valued counters.
    pub const ALL: [RejectReason; 14] = [
        Self::Garbage,
        Self::FrameTooLarge,
        Self::VersionUnsupported,
        Self::ClusterMismatch,
        Self::BadProof,
        Self::BadMac,
        Self::BadSequence,
        Self::UnexpectedMessage,
        Self::RefusedByPeer,
        Self::HandshakeTimeout,
        Self::PeerTimeout,
        Self::UnexpectedSource,
        Self::PeerStalled,
        Self::Io,
    ];

    /// Stable snake_case name used in logs, status and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Garbage => "garbage",
            Self::FrameTooLarge => "frame_too_large",
            Self::VersionUnsupported => "version_unsupported",
            Self::ClusterMismatch => "cluster_mismatch",
            Self::BadProof => "bad_proof",
            Self::BadMac => "bad_mac",
            Self::BadSequence => "bad_sequence",
            Self::UnexpectedMessage => "unexpected_message",
            Self::RefusedByPeer => "refused_by_peer",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::PeerTimeout => "peer_timeout",
            Self::UnexpectedSource => "unexpected_source",
            Self::PeerStalled => "peer_stalled",
            Self::Io => "io",
        }
    }

    /// What an operator should check, for the reasons a misconfiguration causes.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Self::BadProof => Some("is the secret the same on both nodes?"),
            Self::ClusterMismatch => Some("is [cluster] name the same on both nodes?"),
            Self::VersionUnsupported | Self::RefusedByPeer => {
                Some("do both nodes run the same tandem release?")
            }
            Self::UnexpectedSource => Some("only node.peer may connect to the sync port"),
            Self::Garbage | Self::FrameTooLarge => {
                Some("is something other than tandem connecting?")
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection with its reason and a human-readable detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Count of rejections by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectCounters(BTreeMap<RejectReason, u64>);

impl RejectCounters {
    pub fn count(&mut self, reason: RejectReason) {
        *self.0.entry(reason).or_default() += 1;
    }

    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Every reason with its count (zeros included), by stable name.
    pub fn by_name(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RejectReason::ALL.iter().map(|r| (r.as_str(), self.get(*r)))
    }
}
