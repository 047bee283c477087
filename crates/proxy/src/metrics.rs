//! Data-path metrics beyond plain counters: HTTP response classes and latency histograms with fixed buckets.
//!
//! Everything here is written with relaxed atomics on the data path (no lock, no allocation: an observation is
//! two `fetch_add`s) and read into the status snapshot at scrape time. The daemon renders the snapshots as
//! Prometheus histograms; the bucket bounds are [`BUCKETS_SECONDS`] (documented in `docs/metrics.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the latency histograms' buckets; `+Inf` follows. From half a millisecond (a LAN
/// round trip through the proxy) to ten seconds (a slow application page), about 2.5x apart.
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in microseconds, what an observation is compared with.
const BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A lock-free histogram of durations over [`BUCKETS_SECONDS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; 15],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, as Prometheus wants them. Read bucket by bucket while writers go on, so
    /// `count` is the sum of what was read (consistent with the buckets) and `sum` may lag by a few observations.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BUCKETS_SECONDS.len());
        let mut total = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            if i < BUCKETS_SECONDS.len() {
                cumulative.push(total);
            }
        }
        HistogramSnapshot {
            le: BUCKETS_SECONDS.to_vec(),
            cumulative,
            count: total,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram as read: `cumulative[i]` observations were at most `le[i]` seconds; `count` in all (`+Inf`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    pub le: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// HTTP responses sent to clients by status class: the servers' and the proxy's own (400, 502, 503, 504, ...).
#[derive(Debug, Default)]
pub struct ResponseCodes([AtomicU64; 6]);

/// The class names, in the order of [`ResponseCodes::snapshot`].
pub const CODE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl ResponseCodes {
    pub(crate) fn record(&self, status: u16) {
        let i = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts in the order of [`CODE_CLASSES`].
    pub fn snapshot(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// A service's data-path metrics; kept across reloads like its counters.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// HTTP mode only.
    pub codes: ResponseCodes,
    /// HTTP mode: from the request sent to the server until its response head is read.
    pub response: Histogram,
    /// New connections to real servers (both modes; reused pooled connections are not connects).
    pub connect: Histogram,
    /// Access-log lines dropped because the writer fell behind (its queue was full).
    pub access_log_dropped: AtomicU64,
    /// Access-log lines queued.
    pub access_log_lines: AtomicU64,
    /// Rate limits of the per-connection failure lines in the log.
    pub failure_logs: crate::log_gate::FailureLogs,
    /// TLS services: handshakes and their outcomes.
    pub tls: TlsCounters,
}

/// Why a TLS handshake failed, as counted and labelled (`reason`) in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish within the handshake timeout.
    Timeout,
    /// Not TLS, or TLS broken: garbage, a malformed or unexpected message.
    Protocol,
    /// No TLS version or cipher suite (or other parameter) in common with the client.
    NoSharedParameters,
    /// The client closed (or reset) the connection before the handshake was done.
    Closed,
    /// Anything else (an alert from the client, an internal error).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in the order of [`TlsCounters::failures`].
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Protocol,
        HandshakeFailure::NoSharedParameters,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::NoSharedParameters => "no_shared_parameters",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }
}

/// A TLS service's handshake counters.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Completed handshakes.
    pub handshakes: AtomicU64,
    /// Completed handshakes that resumed a session (ticket or session id).
    pub resumed: AtomicU64,
    /// Completed handshakes by version: TLS 1.2, TLS 1.3.
    pub tls12: AtomicU64,
    pub tls13: AtomicU64,
    /// Completed handshakes by the protocol agreed by ALPN: `h2`, anything else (HTTP/1.1).
    pub h2: AtomicU64,
    pub http1: AtomicU64,
    /// Failed handshakes, in the order of [`HandshakeFailure::ALL`].
    failures: [AtomicU64; 5],
}

impl TlsCounters {
    pub(crate) fn failed(&self, why: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == why)
            .unwrap_or(4);
        self.failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed handshakes by reason, in the order of [`HandshakeFailure::ALL`].
    pub fn failures(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500)); // on the bound: le="0.0005"
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.le.len(), s.cumulative.len());
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(s.cumulative[5], 3, "20 ms is under 25 ms");
        assert_eq!(
            *s.cumulative.last().unwrap(),
            3,
            "60 s is above the last bound"
        );
        assert_eq!(s.count, 4);
        assert!(
            (s.sum_seconds - 60.021001).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn bounds_agree_in_both_units() {
        for (s, us) in BUCKETS_SECONDS.iter().zip(BUCKETS_MICROS) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
        assert!(BUCKETS_MICROS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn codes_by_class() {
        let c = ResponseCodes::default();
        for s in [100, 101, 200, 204, 302, 404, 502, 503, 599, 600, 0, 99] {
            c.record(s);
        }
        assert_eq!(c.snapshot(), [2, 2, 1, 1, 3, 3]);
    }
}
