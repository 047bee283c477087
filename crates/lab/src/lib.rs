//! Small programs for tandem's network-namespace lab (`netns-tests/`), and the pure pieces they share.
//!
//! - `tnd-backend` plays an OpenStack controller: it serves every port of the reference deployment's VIP table,
//!   answering HTTP on the HTTP-mode ports and a banner-then-echo protocol on the TCP ports, always naming itself.
//! - `tnd-probe` plays the client: it connects to VIP:port at a fixed rate, records every attempt and prints a JSON
//!   summary (failed requests, client outage, which controllers answered).
//! - `tnd-watch` watches one address on the local interfaces and prints a timestamped line each time it appears or
//!   disappears, so drills can time a takeover to the millisecond and count flaps.
//! - `tnd-json` builds and reads the drills' JSON lines (so the scripts need no jq).
//! - `tnd-flood` plays an attacker on the segment: junk and forged heartbeats (or VRRP adverts) with the peer's
//!   source address, as fast as it can, from a raw socket; its packets are built in [`flood`].
//!
//! This library holds what can be tested without sockets: the port table, the banner format, the `--sources`
//! parser and the attempt-log summary (the definition of `client_outage_ms`).

pub mod flood;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Every port of the OpenStack guide's VIP table (VIP 1 aodh .. VIP 23 swift_proxy_server).
pub const OPENSTACK_PORTS: [u16; 23] = [
    8042, 8777, 8776, 9292, 9191, 8041, 8004, 8000, 8003, 80, 35357, 22, 5000, 3306, 9696, 8773,
    8775, 6080, 8774, 8778, 8779, 6379, 8080,
];

/// The ports whose virtual service is in HTTP mode in the guide (horizon and heat_api).
pub const HTTP_PORTS: [u16; 2] = [80, 8004];

/// The token that names the answering controller, in banners and HTTP bodies.
pub const CONTROLLER_TOKEN: &str = "controller=";

/// The line a TCP-mode backend writes on connect.
pub fn banner(name: &str, port: u16) -> String {
    format!("{CONTROLLER_TOKEN}{name} port={port}\n")
}

/// The controller name carried by a banner line or an HTTP body, if any.
pub fn controller_of(text: &str) -> Option<&str> {
    let start = text.find(CONTROLLER_TOKEN)? + CONTROLLER_TOKEN.len();
    let rest = &text[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

/// Wall-clock microseconds since the Unix epoch (drills correlate events across processes with it).
pub fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Microseconds to milliseconds, rounded to 0.1 ms for JSON output.
pub fn us_to_ms(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

/// Parse a `--sources` specification into the list of local addresses to bind:
/// `10.77.0.0/24` (every host address of the prefix), `10.77.0.1-10.77.0.200` (inclusive range), or a
/// comma-separated mix of those and single addresses. At most 2^21 addresses (a /12 is 2^20).
pub fn parse_sources(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    const LIMIT: usize = 1 << 21;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((net, len)) = part.split_once('/') {
            let net: Ipv4Addr = net
                .parse()
                .map_err(|e| format!("{part}: bad address: {e}"))?;
            let len: u32 = len
                .parse()
                .map_err(|e| format!("{part}: bad prefix length: {e}"))?;
            if !(12..=32).contains(&len) {
                return Err(format!("{part}: prefix length must be 12..=32"));
            }
            let base = u32::from(net) & (u32::MAX.checked_shl(32 - len).unwrap_or(0));
            let size = 1u64 << (32 - len);
            if len >= 31 {
                out.extend((0..size).map(|i| Ipv4Addr::from(base + i as u32)));
            } else {
                // skip the network and broadcast addresses
                out.extend((1..size - 1).map(|i| Ipv4Addr::from(base + i as u32)));
            }
        } else if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|e| format!("{part}: bad address: {e}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|e| format!("{part}: bad address: {e}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b || (b - a) as usize >= LIMIT {
                return Err(format!("{part}: empty or too large range"));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(
                part.parse()
                    .map_err(|e| format!("{part}: bad address: {e}"))?,
            );
        }
        if out.len() > LIMIT {
            return Err(format!("more than {LIMIT} source addresses"));
        }
    }
    if out.is_empty() {
        return Err("no source addresses".into());
    }
    Ok(out)
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Refused,
    Timeout,
    Reset,
    BadAnswer,
    Other,
}

/// One client attempt: connect, read who answered, check the echo (or one HTTP request).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub seq: u64,
    /// wall-clock start, microseconds since the epoch
    pub start_us: u64,
    pub end_us: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Addr>,
}

/// What `tnd-probe` prints at the end.
///
/// `client_outage_ms` is the longest time the client went without a working service, measured on attempt start
/// times: the largest gap between the starts of two consecutive *successful* attempts that has at least one failed
/// attempt in it, minus the probe interval (so an undisturbed run reports 0, and one window of `n` failed attempts
/// reports about `n * interval`). Failures before the first success count from the first attempt; failures after
/// the last success (no recovery) count up to the last attempt and set `recovered = false`. Attempts are launched
/// on a fixed clock and run concurrently, so a slow or timed-out attempt does not delay the next one. A gap with no
/// failed attempt in it means the probe itself was not scheduled (a busy machine): it is not an outage and is
/// reported as `probe_stall_ms` instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub target: String,
    pub mode: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub attempts: u64,
    pub successes: u64,
    pub failed_requests: u64,
    pub client_outage_ms: f64,
    /// the longest gap between successes with no failure in it, minus the interval (the probe was not scheduled)
    pub probe_stall_ms: f64,
    /// last success before / first success after the longest outage (epoch ms)
    pub outage_from_ms: Option<f64>,
    pub outage_to_ms: Option<f64>,
    pub recovered: bool,
    pub failure_runs: u64,
    pub first_failure_at_ms: Option<f64>,
    pub first_recovery_at_ms: Option<f64>,
    pub last_failure_at_ms: Option<f64>,
    pub started_at_ms: f64,
    pub ended_at_ms: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub answered_by: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    /// with `--sources`: how many distinct source addresses were used, and how many of them were answered by more
    /// than one controller over the run (0 when persistence held)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_seen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_changed_controller: Option<u64>,
    /// the controller each source was answered by last (only with `--sources`)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_map: Option<BTreeMap<String, String>>,
}

/// Summarize an attempt log (any order). `interval_ms` is the nominal spacing between attempt starts.
pub fn summarize(
    target: &str,
    mode: &str,
    interval_ms: u64,
    timeout_ms: u64,
    attempts: &[Attempt],
) -> Summary {
    let mut sorted: Vec<&Attempt> = attempts.iter().collect();
    sorted.sort_by_key(|a| (a.start_us, a.seq));
    let interval_us = interval_ms.saturating_mul(1000);

    let mut longest_gap_us: u64 = 0;
    let mut longest_stall_us: u64 = 0;
    let mut failed_in_gap = false;
    let mut outage_bounds: (Option<u64>, Option<u64>) = (None, None);
    let mut prev_success: Option<u64> = None;
    let mut failure_runs = 0;
    let mut in_run = false;
    let mut first_failure = None;
    let mut first_recovery = None;
    let mut last_failure = None;
    let mut answered_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<u64> = Vec::new();
    let mut per_source: BTreeMap<Ipv4Addr, (BTreeSet<String>, String)> = BTreeMap::new();
    let mut any_source = false;

    let first_start = sorted.first().map_or(0, |a| a.start_us);
    for a in &sorted {
        any_source |= a.source.is_some();
        if a.ok {
            // a virtual success one interval before the first attempt makes leading failures count
            let prev = prev_success.unwrap_or(first_start.saturating_sub(interval_us));
            let gap = a.start_us.saturating_sub(prev);
            if !failed_in_gap {
                longest_stall_us = longest_stall_us.max(gap);
            } else if gap > longest_gap_us {
                longest_gap_us = gap;
                outage_bounds = (prev_success, Some(a.start_us));
            }
            failed_in_gap = false;
            prev_success = Some(a.start_us);
            if first_failure.is_some() && first_recovery.is_none() {
                first_recovery = Some(a.start_us);
            }
            in_run = false;
            latencies.push(a.end_us.saturating_sub(a.start_us));
            let name = a.controller.clone().unwrap_or_else(|| "?".into());
            *answered_by.entry(name.clone()).or_default() += 1;
            if let Some(src) = a.source {
                let entry = per_source.entry(src).or_default();
                entry.0.insert(name.clone());
                entry.1 = name;
            }
        } else {
            failed_in_gap = true;
            if !in_run {
                failure_runs += 1;
                in_run = true;
            }
            first_failure.get_or_insert(a.start_us);
            last_failure = Some(a.start_us);
            let kind = a.failure.unwrap_or(FailureKind::Other);
            let key = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            *failures
                .entry(key.unwrap_or_else(|| "other".into()))
                .or_default() += 1;
        }
    }
    let recovered = !in_run;
    if in_run {
        let last = sorted.last().map_or(0, |a| a.start_us);
        let prev = prev_success.unwrap_or(first_start.saturating_sub(interval_us));
        // no success follows: count up to one interval past the last attempt
        let gap = (last + interval_us).saturating_sub(prev);
        if gap > longest_gap_us {
            longest_gap_us = gap;
            outage_bounds = (prev_success, None);
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> Option<f64> {
        if latencies.is_empty() {
            return None;
        }
        let idx = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies.get(idx).map(|&us| us_to_ms(us))
    };
    let successes = sorted.iter().filter(|a| a.ok).count() as u64;
    Summary {
        target: target.into(),
        mode: mode.into(),
        interval_ms,
        timeout_ms,
        attempts: sorted.len() as u64,
        successes,
        failed_requests: sorted.len() as u64 - successes,
        client_outage_ms: us_to_ms(longest_gap_us.saturating_sub(interval_us)),
        probe_stall_ms: us_to_ms(longest_stall_us.saturating_sub(interval_us)),
        outage_from_ms: outage_bounds.0.map(us_to_ms),
        outage_to_ms: outage_bounds.1.map(us_to_ms),
        recovered,
        failure_runs,
        first_failure_at_ms: first_failure.map(us_to_ms),
        first_recovery_at_ms: first_recovery.map(us_to_ms),
        last_failure_at_ms: last_failure.map(us_to_ms),
        started_at_ms: us_to_ms(first_start),
        ended_at_ms: us_to_ms(sorted.last().map_or(0, |a| a.end_us)),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        answered_by,
        failures,
        sources_seen: any_source.then_some(per_source.len() as u64),
        sources_changed_controller: any_source.then(|| {
            per_source
                .values()
                .filter(|(seen, _)| seen.len() > 1)
                .count() as u64
        }),
        source_map: any_source.then(|| {
            per_source
                .iter()
                .map(|(k, (_, last))| (k.to_string(), last.clone()))
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attempt(seq: u64, start_ms: u64, ok: bool) -> Attempt {
        Attempt {
            seq,
            start_us: start_ms * 1000,
            end_us: start_ms * 1000 + 500,
            ok,
            controller: ok.then(|| "ctl1".to_string()),
            failure: (!ok).then_some(FailureKind::Refused),
            source: None,
        }
    }

    #[test]
    fn banner_round_trips() {
        assert_eq!(controller_of(&banner("ctl2", 3306)), Some("ctl2"));
        assert_eq!(
            controller_of("HTTP/1.1 200 OK\r\n\r\ncontroller=ctl3 port=80 path=/\n"),
            Some("ctl3")
        );
        assert_eq!(controller_of("controller= x"), None);
        assert_eq!(controller_of("nothing"), None);
    }

    #[test]
    fn undisturbed_run_has_no_outage() {
        let log: Vec<_> = (0..100).map(|i| attempt(i, 1000 + i * 10, true)).collect();
        let s = summarize("t", "tcp", 10, 100, &log);
        assert_eq!(s.client_outage_ms, 0.0);
        assert_eq!(s.failed_requests, 0);
        assert!(s.recovered);
        assert_eq!(s.failure_runs, 0);
    }

    #[test]
    fn one_window_of_failures_counts_its_length() {
        let log: Vec<_> = (0..100)
            .map(|i| attempt(i, 1000 + i * 10, !(40..44).contains(&i)))
            .collect();
        let s = summarize("t", "tcp", 10, 100, &log);
        assert_eq!(s.failed_requests, 4);
        assert_eq!(s.client_outage_ms, 40.0);
        assert_eq!(s.first_failure_at_ms, Some(1400.0));
        assert_eq!(s.first_recovery_at_ms, Some(1440.0));
        assert_eq!(s.outage_from_ms, Some(1390.0));
        assert_eq!(s.outage_to_ms, Some(1440.0));
        assert_eq!(s.failure_runs, 1);
    }

    #[test]
    fn a_gap_without_failures_is_a_probe_stall_not_an_outage() {
        let mut log: Vec<_> = (0..50).map(|i| attempt(i, 1000 + i * 10, true)).collect();
        log.extend((50..100).map(|i| attempt(i, 1080 + i * 10, true))); // 80 ms without any attempt
        log[70].ok = false;
        let s = summarize("t", "tcp", 10, 100, &log);
        assert_eq!(s.probe_stall_ms, 80.0);
        assert_eq!(s.client_outage_ms, 10.0);
        assert_eq!(s.failed_requests, 1);
    }

    #[test]
    fn unrecovered_tail_and_leading_failures_count() {
        let log: Vec<_> = (0..10).map(|i| attempt(i, 1000 + i * 10, i < 7)).collect();
        let s = summarize("t", "tcp", 10, 100, &log);
        assert!(!s.recovered);
        assert_eq!(s.client_outage_ms, 30.0);
        let log: Vec<_> = (0..10).map(|i| attempt(i, 1000 + i * 10, i >= 2)).collect();
        let s = summarize("t", "tcp", 10, 100, &log);
        assert_eq!(s.client_outage_ms, 20.0);
    }

    #[test]
    fn sources_that_change_controller_are_counted() {
        let mut log = Vec::new();
        for (i, (src, ctl)) in [(1, "a"), (2, "b"), (1, "a"), (2, "c")].iter().enumerate() {
            let mut a = attempt(i as u64, i as u64 * 10, true);
            a.source = Some(Ipv4Addr::new(10, 0, 0, *src));
            a.controller = Some((*ctl).into());
            log.push(a);
        }
        let s = summarize("t", "tcp", 10, 100, &log);
        assert_eq!(s.sources_seen, Some(2));
        assert_eq!(s.sources_changed_controller, Some(1));
    }

    #[test]
    fn sources_parse() {
        assert_eq!(parse_sources("10.77.0.0/24").map(|v| v.len()), Ok(254));
        assert_eq!(
            parse_sources("10.0.0.1-10.0.0.200").map(|v| v.len()),
            Ok(200)
        );
        assert_eq!(
            parse_sources("10.0.0.1, 10.0.0.9"),
            Ok(vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)])
        );
        assert!(parse_sources("10.0.0.9-10.0.0.1").is_err());
        assert!(parse_sources("10.0.0.0/8").is_err());
        assert_eq!(
            parse_sources("10.64.0.0/12").map(|v| v.len()),
            Ok((1 << 20) - 2)
        );
        assert!(parse_sources("").is_err());
        assert!(parse_sources("nope").is_err());
    }

    proptest! {
        /// The outage is never shorter than the failed attempts in the worst run, never longer than the whole run,
        /// and it is zero exactly when no attempt failed (on a regular clock).
        #[test]
        fn outage_bounds(pattern in proptest::collection::vec(any::<bool>(), 1..300)) {
            let log: Vec<_> = pattern.iter().enumerate().map(|(i, &ok)| attempt(i as u64, 1000 + i as u64 * 10, ok)).collect();
            let s = summarize("t", "tcp", 10, 100, &log);
            let mut worst = 0u64;
            let mut run = 0u64;
            for &ok in &pattern {
                run = if ok { 0 } else { run + 1 };
                worst = worst.max(run);
            }
            prop_assert_eq!(s.client_outage_ms, (worst * 10) as f64);
            prop_assert_eq!(s.failed_requests, pattern.iter().filter(|ok| !**ok).count() as u64);
            prop_assert_eq!(s.recovered, pattern.last().copied().unwrap_or(true));
        }
    }
}
