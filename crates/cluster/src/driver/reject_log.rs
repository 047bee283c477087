//! Rate-limited warnings about rejected heartbeats: the first rejection from a source is logged at once, then one
//! summary line per source per window (10 s) while rejections go on, so a mismatched secret is visible at WARN and a
//! flood writes a line every 10 s, not one per datagram. Sans-IO: the caller passes the time and logs the lines.

use std::net::IpAddr;

use crate::wire::{Reject, RejectCounts};

/// One summary per source per this many milliseconds.
pub(super) const WINDOW_MS: u64 = 10_000;
/// Sources tracked one by one; rejections from further sources are summed as "other addresses" (a spoofed flood
/// from random addresses cannot grow the table).
const MAX_SOURCES: usize = 16;

#[derive(Debug)]
struct Window {
    /// None: every source beyond `MAX_SOURCES`.
    source: Option<IpAddr>,
    started_ms: u64,
    counts: RejectCounts,
}

/// Per-source rejection windows.
#[derive(Debug)]
pub(super) struct RejectLog {
    windows: Vec<Window>,
    /// The earliest end of an open window (u64::MAX: none open): `due` is a single comparison until then.
    next_due_ms: u64,
}

impl RejectLog {
    pub(super) fn new() -> Self {
        Self {
            windows: Vec::new(),
            next_due_ms: u64::MAX,
        }
    }

    /// Records one rejection; returns a line to log now when the source was quiet until now.
    pub(super) fn record(&mut self, source: IpAddr, reason: Reject, now_ms: u64) -> Option<String> {
        if let Some(w) = self.windows.iter_mut().find(|w| w.source == Some(source)) {
            w.counts.add(reason);
            return None;
        }
        let source = if self.windows.iter().filter(|w| w.source.is_some()).count() < MAX_SOURCES {
            Some(source)
        } else {
            None
        };
        if let Some(w) = self
            .windows
            .iter_mut()
            .find(|w| w.source.is_none() && source.is_none())
        {
            w.counts.add(reason);
            return None;
        }
        // The first datagram is reported now; the window sums the ones after it.
        self.windows.push(Window {
            source,
            started_ms: now_ms,
            counts: RejectCounts::default(),
        });
        self.next_due_ms = self.next_due_ms.min(now_ms.saturating_add(WINDOW_MS));
        Some(format!(
            "rejected a heartbeat from {}: {} {}; more from there are summed every {} s",
            name(source),
            reason.label(),
            hint(reason),
            WINDOW_MS / 1000
        ))
    }

    /// Summaries of the windows that ended by `now_ms`. A source with rejections in its window gets a line and a new
    /// window; a quiet one is forgotten (its next rejection is reported at once again).
    pub(super) fn due(&mut self, now_ms: u64) -> Vec<String> {
        if now_ms < self.next_due_ms {
            return Vec::new();
        }
        let mut lines = Vec::new();
        self.windows.retain_mut(|w| {
            if now_ms < w.started_ms.saturating_add(WINDOW_MS) {
                return true;
            }
            let total = w.counts.total();
            if total == 0 {
                return false;
            }
            lines.push(summary(w, now_ms));
            w.started_ms = now_ms;
            w.counts = RejectCounts::default();
            true
        });
        self.next_due_ms = self
            .windows
            .iter()
            .map(|w| w.started_ms.saturating_add(WINDOW_MS))
            .min()
            .unwrap_or(u64::MAX);
        lines
    }
}

fn name(source: Option<IpAddr>) -> String {
    source.map_or_else(|| "other addresses".to_string(), |ip| ip.to_string())
}

fn summary(w: &Window, now_ms: u64) -> String {
    let total = w.counts.total();
    let seconds = now_ms.saturating_sub(w.started_ms).div_ceil(1000);
    let mut reasons: Vec<(Reject, u64)> = Reject::ALL
        .iter()
        .map(|r| (*r, w.counts.get(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let listed = if reasons.len() == 1 {
        reasons[0].0.label().to_string()
    } else {
        reasons
            .iter()
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let top = reasons.first().map_or(Reject::Malformed, |(r, _)| *r);
    format!(
        "rejected {total} heartbeat{} from {} in the last {seconds} s: {listed} {}",
        if total == 1 { "" } else { "s" },
        name(w.source),
        hint(top)
    )
}

/// What an operator should look at for each reason.
fn hint(reason: Reject) -> &'static str {
    match reason {
        Reject::BadMac => "(is the secret the same on both nodes?)",
        Reject::ForeignCluster => {
            "(is [cluster] name the same on both nodes, or is another pair on this port?)"
        }
        Reject::BadVersion => {
            "(does the peer run a tandem version with a compatible heartbeat format?)"
        }
        Reject::OwnName => "(do both nodes have the same [node] name?)",
        Reject::Stale => {
            "(the peer's boot epoch went backwards: it is let back in once its old epoch has been silent for dead_ms)"
        }
        Reject::Replay => "(replayed or reordered datagrams)",
        Reject::UnexpectedSource => "(only [node] peer may send heartbeats)",
        Reject::Truncated | Reject::Oversize | Reject::Malformed => {
            "(not a tandem heartbeat: something else sends to this port)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_rejection_at_once_then_one_summary_per_window() {
        let mut log = RejectLog::new();
        let first = log.record(ip("10.0.0.9"), Reject::BadMac, 1000).unwrap();
        assert!(
            first.contains("10.0.0.9") && first.contains("bad_mac"),
            "{first}"
        );
        assert!(
            first.contains("is the secret the same on both nodes?"),
            "{first}"
        );
        for i in 0..1234 {
            assert_eq!(log.record(ip("10.0.0.9"), Reject::BadMac, 1000 + i), None);
        }
        assert!(log.due(10_999).is_empty(), "the window is not over");
        let lines = log.due(11_000);
        assert_eq!(
            lines,
            vec![
                "rejected 1234 heartbeats from 10.0.0.9 in the last 10 s: bad_mac \
                 (is the secret the same on both nodes?)"
                    .to_string()
            ]
        );
        // Still flooding: the next summary a window later, with every reason counted.
        log.record(ip("10.0.0.9"), Reject::BadMac, 12_000);
        log.record(ip("10.0.0.9"), Reject::Truncated, 12_001);
        log.record(ip("10.0.0.9"), Reject::BadMac, 12_002);
        let lines = log.due(21_000);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "rejected 3 heartbeats from 10.0.0.9 in the last 10 s: bad_mac 2, truncated 1"
            ),
            "{}",
            lines[0]
        );
        // A quiet window forgets the source: its next rejection is reported at once again.
        assert!(log.due(31_000).is_empty());
        assert!(log.record(ip("10.0.0.9"), Reject::Stale, 31_001).is_some());
    }

    #[test]
    fn sources_are_separate_and_bounded() {
        let mut log = RejectLog::new();
        for i in 0..40u8 {
            let line = log.record(ip(&format!("10.0.1.{i}")), Reject::Malformed, 0);
            // 16 sources of their own, then one line for "other addresses", then nothing more at once.
            assert_eq!(line.is_some(), i <= 16, "source {i}: {line:?}");
        }
        assert_eq!(log.windows.len(), 17);
        for i in 0..40u8 {
            log.record(ip(&format!("10.0.1.{i}")), Reject::Malformed, 5);
        }
        let lines = log.due(WINDOW_MS);
        assert_eq!(lines.len(), 17);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("rejected 47 heartbeats from other addresses")),
            "{lines:#?}"
        );
    }
}
