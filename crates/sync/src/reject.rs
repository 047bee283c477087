//! Why a session was closed or an input rejected, as a closed set of reasons that are logged and
//! counted (the `rejected` counters of [`crate::status::SyncStatus`]), and the rate limit of
//! those logs ([`RejectLog`]: one WARN per source per 10 s).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

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
    /// A handshake in progress closed to make room for a newer connection from the same source
    /// (the handshake limits).
    HandshakeEvicted,
    /// A connection refused at once: its source failed a handshake moments ago (back-off).
    Throttled,
}

impl RejectReason {
    /// All reasons, for exporting zero-valued counters.
    pub const ALL: [RejectReason; 16] = [
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
        Self::HandshakeEvicted,
        Self::Throttled,
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
            Self::HandshakeEvicted => "handshake_evicted",
            Self::Throttled => "throttled",
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

/// How often at most a source's rejections are logged at WARN.
pub const REJECT_LOG_WINDOW_MS: u64 = 10_000;

/// Rate limit of rejection logs, sans-IO: the first rejection from a source is logged at once;
/// later ones within [`REJECT_LOG_WINDOW_MS`] are only counted, and the next rejection after the
/// window logs one line with the counts by reason. So a flood of junk or a peer with the wrong
/// secret costs one WARN per source per 10 s, and the counters in the status stay exact.
#[derive(Debug, Default)]
pub struct RejectLog {
    sources: HashMap<IpAddr, SourceLog>,
}

#[derive(Debug)]
struct SourceLog {
    /// When the last line was logged (the window's start).
    logged_at: u64,
    /// Rejections since then that were not logged, by reason.
    suppressed: BTreeMap<RejectReason, u64>,
}

impl RejectLog {
    /// Sources remembered at most (a flood from many addresses cannot grow memory).
    const MAX_SOURCES: usize = 1024;

    /// Notes a rejection from `source`; returns the line to log at WARN, if one is due now.
    pub fn note(&mut self, source: IpAddr, rejection: &Rejection, now_ms: u64) -> Option<String> {
        if self.sources.len() >= Self::MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources
                .retain(|_, log| now_ms.saturating_sub(log.logged_at) < REJECT_LOG_WINDOW_MS);
            if self.sources.len() >= Self::MAX_SOURCES {
                return None;
            }
        }
        let hint =
            |reason: RejectReason| reason.hint().map(|h| format!(" ({h})")).unwrap_or_default();
        match self.sources.get_mut(&source) {
            Some(log) if now_ms.saturating_sub(log.logged_at) < REJECT_LOG_WINDOW_MS => {
                *log.suppressed.entry(rejection.reason).or_default() += 1;
                None
            }
            Some(log) => {
                let earlier = std::mem::take(&mut log.suppressed);
                let window = now_ms.saturating_sub(log.logged_at) / 1000;
                log.logged_at = now_ms;
                if earlier.is_empty() {
                    return Some(format!(
                        "sync: rejected a connection or session from {source}: {rejection}{}",
                        hint(rejection.reason)
                    ));
                }
                let total: u64 = earlier.values().sum::<u64>() + 1;
                let mut by_reason = earlier;
                *by_reason.entry(rejection.reason).or_default() += 1;
                let top = by_reason
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(r, _)| *r)
                    .unwrap_or(rejection.reason);
                let counts: Vec<String> =
                    by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
                Some(format!(
                    "sync: rejected {total} connections or sessions from {source} in the last {window} s: {}{}; latest: {}",
                    counts.join(", "),
                    hint(top),
                    rejection.detail
                ))
            }
            None => {
                self.sources.insert(
                    source,
                    SourceLog {
                        logged_at: now_ms,
                        suppressed: BTreeMap::new(),
                    },
                );
                Some(format!(
                    "sync: rejected a connection or session from {source}: {rejection}{}",
                    hint(rejection.reason)
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_window_with_counts_and_the_hint() {
        let mut log = RejectLog::default();
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let bad = Rejection::new(RejectReason::BadProof, "the dialer's proof does not verify");
        let first = log.note(peer, &bad, 0).unwrap();
        assert!(
            first.contains("10.0.0.9") && first.contains("bad_proof"),
            "{first}"
        );
        assert!(
            first.contains("is the secret the same on both nodes?"),
            "{first}"
        );
        for t in 1..1234u64 {
            assert_eq!(log.note(peer, &bad, t), None);
        }
        // Another source has its own budget.
        assert!(log.note(other, &bad, 5).is_some());
        let garbage = Rejection::new(RejectReason::Garbage, "junk");
        assert_eq!(log.note(peer, &garbage, 9_000), None);
        let summary = log.note(peer, &bad, 10_000).unwrap();
        assert!(
            summary
                .contains("rejected 1235 connections or sessions from 10.0.0.9 in the last 10 s"),
            "{summary}"
        );
        assert!(
            summary.contains("bad_proof 1234") && summary.contains("garbage 1"),
            "{summary}"
        );
        assert!(
            summary.contains("is the secret the same on both nodes?"),
            "{summary}"
        );
        // A quiet source logs its next rejection at once.
        assert!(log.note(peer, &bad, 30_000).is_some());
    }

    #[test]
    fn memory_is_bounded_under_a_flood_from_many_sources() {
        let mut log = RejectLog::default();
        let r = Rejection::new(RejectReason::UnexpectedSource, "x");
        for i in 0..5_000u32 {
            let _ = log.note(IpAddr::from(std::net::Ipv4Addr::from(i)), &r, 1);
        }
        assert!(log.sources.len() <= RejectLog::MAX_SOURCES);
    }
}
