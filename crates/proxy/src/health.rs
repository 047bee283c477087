//! Health checking: a sans-IO rise/fall counter ([`RiseFall`]) and the thin tokio task that probes one real server.
//!
//! A server starts **down** and becomes up after `rise` consecutive successful checks; an up server goes down after
//! `fall` consecutive failures. Each probe is bounded by the check timeout (validated shorter than the interval, and
//! clamped here to 90% of it anyway) so a hung server can never make checks pile up.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::model::{CheckKind, HealthCheckConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::state::ServerRuntime;

/// Why a check failed, as logged and shown in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    Refused,
    Timeout,
    /// HTTP check answered with an unexpected status.
    Status(u16),
    /// HTTP check answered something that is not an HTTP status line.
    BadResponse,
    Io(String),
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Refused => write!(f, "connection refused"),
            CheckFailure::Timeout => write!(f, "timeout"),
            CheckFailure::Status(s) => write!(f, "status {s}"),
            CheckFailure::BadResponse => write!(f, "bad HTTP response"),
            CheckFailure::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A change of health produced by [`RiseFall::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// Consecutive-result counter deciding up/down.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
}

impl RiseFall {
    /// A new server: down until `rise` checks pass. `rise`/`fall` of 0 are treated as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    /// Continue from a known state (a check restarted by a reload must not forget that its server is up).
    pub fn with_state(rise: u32, fall: u32, up: bool) -> Self {
        Self {
            up,
            ..Self::new(rise, fall)
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feed one check result; returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if !self.up && self.ok_streak >= self.rise {
                self.up = true;
                return Some(Transition::Up);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            if self.up && self.fail_streak >= self.fall {
                self.up = false;
                return Some(Transition::Down);
            }
        }
        None
    }
}

/// Delay before the first check of the `index`-th of `count` checked servers, spreading them evenly over one
/// interval so that many services do not probe at the same instant.
pub fn first_check_delay(index: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let slot = interval.as_micros() * (index % count) as u128 / count as u128;
    Duration::from_micros(u64::try_from(slot).unwrap_or(u64::MAX))
}

/// Effective probe timeout: the configured one, but never more than 90% of the interval.
pub fn probe_timeout(cfg: &HealthCheckConfig) -> Duration {
    let cap = cfg.interval_ms.saturating_mul(9) / 10;
    Duration::from_millis(cfg.timeout_ms.min(cap).max(1))
}

/// Probe `addr` once according to `kind`.
pub async fn probe(
    addr: SocketAddr,
    kind: &CheckKind,
    timeout: Duration,
) -> Result<(), CheckFailure> {
    match tokio::time::timeout(timeout, probe_inner(addr, kind)).await {
        Ok(r) => r,
        Err(_) => Err(CheckFailure::Timeout),
    }
}

async fn probe_inner(addr: SocketAddr, kind: &CheckKind) -> Result<(), CheckFailure> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => CheckFailure::Refused,
        _ => CheckFailure::Io(e.to_string()),
    })?;
    match kind {
        CheckKind::Connect => Ok(()),
        CheckKind::Http {
            path,
            expect_status,
        } => {
            let _ = stream.set_nodelay(true);
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: tandem-health\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| CheckFailure::Io(e.to_string()))?;
            let mut buf = [0u8; 64];
            let mut filled = 0;
            // Read just enough for the status line ("HTTP/1.1 200").
            while filled < 12 {
                let n = stream
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| CheckFailure::Io(e.to_string()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            let status = parse_status(&buf[..filled]).ok_or(CheckFailure::BadResponse)?;
            if status == *expect_status {
                Ok(())
            } else {
                Err(CheckFailure::Status(status))
            }
        }
    }
}

/// Status code of an HTTP/1.x status line prefix.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The check loop for one server; ends when `cancel` fires.
pub(crate) async fn run_checks(
    service: String,
    server: Arc<ServerRuntime>,
    addr: SocketAddr,
    cfg: HealthCheckConfig,
    first_delay: Duration,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(cfg.interval_ms.max(1));
    let timeout = probe_timeout(&cfg);
    let mut rf = RiseFall::with_state(cfg.rise, cfg.fall, server.is_healthy());
    let mut next = tokio::time::Instant::now() + first_delay;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += interval;
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe(addr, &cfg.check, timeout) => r,
        };
        let ok = result.is_ok();
        server.record_check(&result, started.elapsed());
        match rf.record(ok) {
            Some(Transition::Up) => {
                tracing::info!(service = %service, server = %server.label, %addr, "server UP: {} consecutive checks passed", cfg.rise);
                server.set_health(true, "checks passed".into());
            }
            Some(Transition::Down) => {
                let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(service = %service, server = %server.label, %addr, reason = %reason, "server DOWN after {} failed checks", cfg.fall);
                server.set_health(false, reason);
            }
            None => {
                if let Err(e) = &result {
                    if !rf.is_up() {
                        server.set_health_reason(e.to_string());
                    }
                    tracing::debug!(service = %service, server = %server.label, %addr, reason = %e, "check failed");
                }
            }
        }
        // If we fell behind (e.g. a suspended process), do not fire a burst of catch-up checks.
        let now = tokio::time::Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_down_and_rises_after_rise_checks() {
        let mut rf = RiseFall::new(2, 3);
        assert!(!rf.is_up());
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(true), Some(Transition::Up));
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None, "a success resets the failure streak");
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), Some(Transition::Down));
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None);
        assert_eq!(
            rf.record(false),
            None,
            "a failure resets the success streak"
        );
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(true), Some(Transition::Up));
    }

    #[test]
    fn restarted_counter_keeps_an_up_server_up() {
        let mut rf = RiseFall::with_state(2, 2, true);
        assert!(rf.is_up());
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), Some(Transition::Down));
    }

    #[test]
    fn spread_and_timeout() {
        let i = Duration::from_millis(2000);
        assert_eq!(first_check_delay(0, 69, i), Duration::ZERO);
        assert!(first_check_delay(68, 69, i) < i);
        assert!(first_check_delay(34, 69, i) > Duration::from_millis(900));
        let cfg = HealthCheckConfig {
            interval_ms: 100,
            rise: 1,
            fall: 1,
            timeout_ms: 5000,
            check: CheckKind::Connect,
        };
        assert_eq!(probe_timeout(&cfg), Duration::from_millis(90));
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2x0"), None);
    }

    proptest! {
        #[test]
        fn transitions_only_after_full_streaks(results in proptest::collection::vec(any::<bool>(), 0..200), rise in 1u32..5, fall in 1u32..5) {
            let mut rf = RiseFall::new(rise, fall);
            let mut history: Vec<bool> = Vec::new();
            for r in results {
                history.push(r);
                let t = rf.record(r);
                let tail = |v: bool, n: u32| history.len() >= n as usize && history[history.len() - n as usize..].iter().all(|&x| x == v);
                match t {
                    Some(Transition::Up) => prop_assert!(tail(true, rise)),
                    Some(Transition::Down) => prop_assert!(tail(false, fall)),
                    None => {}
                }
                if rf.is_up() { prop_assert!(history.contains(&true)); }
            }
        }
    }
}
