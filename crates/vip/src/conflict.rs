//! Duplicate-VIP detection, the decisions (sans-IO): fed the claims heard on the wire ([`crate::claim`]) and the
//! clock, it says when to probe, which claims are conflicts, when to log them and when to re-announce.
//!
//! While this node holds its VIPs (the daemon says so with [`ConflictDetector::set_holding`]), it probes every VIP
//! once per check interval, the first time one interval after it became the holder: a planned make-before-break
//! handover has both nodes holding the VIPs for a few milliseconds, and the old holder's answers then are no conflict.
//! For the same reason claims heard in that first interval are ignored. After it, any claim of a VIP by a MAC that is
//! not this node's is a conflict: a third machine, or the peer holding the VIP while this node is active.
//!
//! A conflict starts an *episode* for that (VIP, MAC) which lasts while claims keep coming, and ends when none was
//! heard for [`CLEAR_AFTER_INTERVALS`] check intervals. Each new episode is counted (`detected`), logged at once and
//! re-announced at once; an episode that goes on is logged at most every [`REPORT_EVERY`], and re-announced at most
//! once per [`REANNOUNCE_GAP`] (or check interval, if shorter) — a claim heard in between schedules one
//! re-announcement for the end of the gap, so this node always has the last word after an intruder stops, and a
//! flood of forged claims costs at most 10 announcement rounds a second.
//!
//! The peer is the one claimant this node may leave alone: its MAC is learnt from the ARP it sends from its own
//! address ([`ConflictDetector::set_peer`]). When both nodes hold the VIPs because both are active (a split brain,
//! heard or not), re-announcing would have the clients flip between two working proxies at every announcement and
//! break their connections in flight; the election resolves it, so the daemon has the detector report the peer's
//! claims without fighting them — unless the election hears the peer in a state that holds no VIP (standby, init,
//! fault, stopped), when its claim is a stale address and is fought like any other. (A host that forges ARP from the
//! peer's address could pass for the peer this way: it can poison the clients anyway.)
//!
//! Bounded: at most [`MAX_CLAIMANTS`] MACs are remembered per VIP (the least recently heard is forgotten first), VIPs
//! are only the configured ones, and one claim costs one hash lookup and a scan of at most `MAX_CLAIMANTS` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::claim::{Claim, ClaimKind};

/// MACs remembered per VIP.
pub const MAX_CLAIMANTS: usize = 4;
/// An episode ends after this many check intervals without a claim.
pub const CLEAR_AFTER_INTERVALS: u32 = 3;
/// Re-announcements follow each other at least this far apart (or one check interval, if shorter).
pub const REANNOUNCE_GAP: Duration = Duration::from_millis(100);
/// An ongoing episode is logged again at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the daemon should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictAction {
    /// Send one probe (ARP probe / DAD neighbour solicitation) for each of these VIPs.
    Probe(Vec<IpAddr>),
    /// Log a conflict at error: `vip` claimed by `mac`. `new` for the first claim of an episode; `suppressed` claims
    /// of it were heard since the last report and not logged.
    Report {
        vip: IpAddr,
        mac: [u8; 6],
        kind: ClaimKind,
        new: bool,
        suppressed: u64,
    },
    /// Re-announce every VIP (gratuitous ARP / unsolicited NA) so the clients come back.
    Reannounce,
}

/// One MAC that claimed a VIP, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub mac: [u8; 6],
    /// The frame of its last claim.
    pub kind: ClaimKind,
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Claims heard from this MAC for this VIP (all episodes).
    pub frames: u64,
    /// The claim is recent enough that the episode is still going.
    pub current: bool,
    /// Start of the current (or last) episode.
    episode_start: Instant,
    last_reported: Instant,
    suppressed: u64,
}

/// One VIP's conflict record, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConflict {
    pub vip: IpAddr,
    /// Episodes detected since start (`tandem_vip_conflicts_total`).
    pub detected: u64,
    /// Some MAC claims it now.
    pub current: bool,
    /// Most recently heard first.
    pub claimants: Vec<Claimant>,
}

#[derive(Debug, Clone, Default)]
struct Watched {
    detected: u64,
    claimants: Vec<Claimant>,
}

/// The duplicate-VIP detector of one node. Plain data; the daemon feeds it and carries out its actions.
#[derive(Debug, Clone)]
pub struct ConflictDetector {
    interval: Duration,
    vips: Vec<IpAddr>,
    watched: HashMap<IpAddr, Watched>,
    own_mac: Option<[u8; 6]>,
    /// Since when this node holds its VIPs; `None` while it does not.
    holding_since: Option<Instant>,
    next_probe: Option<Instant>,
    last_reannounce: Option<Instant>,
    reannounce_pending: bool,
    probes_sent: u64,
    /// The peer's address, its MAC once heard, and whether this node leaves the peer's claims to the election.
    peer_ip: Option<IpAddr>,
    peer_mac: Option<[u8; 6]>,
    yield_to_peer: bool,
}

impl ConflictDetector {
    /// A detector for `vips` probing every `interval` while holding (`Duration::ZERO`: off, nothing is probed and
    /// no claim counts).
    pub fn new(interval: Duration, vips: &[IpAddr]) -> Self {
        let mut detector = Self {
            interval,
            vips: Vec::new(),
            watched: HashMap::new(),
            own_mac: None,
            holding_since: None,
            next_probe: None,
            last_reannounce: None,
            reannounce_pending: false,
            probes_sent: 0,
            peer_ip: None,
            peer_mac: None,
            yield_to_peer: false,
        };
        detector.set_vips(vips);
        detector
    }

    /// The configured VIPs changed: records of VIPs no longer configured are dropped.
    pub fn set_vips(&mut self, vips: &[IpAddr]) {
        self.vips.clear();
        for vip in vips {
            if !self.vips.contains(vip) {
                self.vips.push(*vip);
            }
        }
        self.watched.retain(|vip, _| vips.contains(vip));
        for vip in &self.vips {
            self.watched.entry(*vip).or_default();
        }
    }

    /// The check interval changed (`ZERO`: off). While holding, the next probe is one new interval from `now`.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        if interval == self.interval {
            return;
        }
        self.interval = interval;
        self.next_probe = self
            .holding_since
            .filter(|_| self.enabled())
            .map(|_| now + interval);
    }

    /// The peer's address (its MAC is learnt from the ARP it sends from it), and whether this node leaves a VIP the
    /// peer claims to the election instead of re-announcing (unless the peer is heard in a state that holds no VIP).
    /// A changed address forgets the MAC.
    pub fn set_peer(&mut self, address: Option<IpAddr>, yield_to_peer: bool) {
        if address != self.peer_ip {
            self.peer_ip = address;
            self.peer_mac = None;
        }
        self.yield_to_peer = yield_to_peer;
    }

    /// The peer's MAC, once heard.
    pub fn peer_mac(&self) -> Option<[u8; 6]> {
        self.peer_mac
    }

    /// This node's MAC on the VIP interface (claims from it are this node's own).
    pub fn set_own_mac(&mut self, mac: Option<[u8; 6]>) {
        self.own_mac = mac;
    }

    /// Whether this node holds its VIPs now (active). Becoming the holder starts the settle interval; letting go
    /// stops probing and drops a pending re-announcement.
    pub fn set_holding(&mut self, holding: bool, now: Instant) {
        match (holding, self.holding_since) {
            (true, None) => {
                self.holding_since = Some(now);
                self.next_probe = self.enabled().then(|| now + self.interval);
            }
            (false, Some(_)) => {
                self.holding_since = None;
                self.next_probe = None;
                self.reannounce_pending = false;
            }
            _ => {}
        }
    }

    fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Past the settle interval after becoming the holder, with detection on.
    fn counting(&self, now: Instant) -> bool {
        self.enabled()
            && self
                .holding_since
                .is_some_and(|since| now.saturating_duration_since(since) >= self.interval)
    }

    fn reannounce_gap(&self) -> Duration {
        self.interval.min(REANNOUNCE_GAP)
    }

    fn clear_after(&self) -> Duration {
        self.interval * CLEAR_AFTER_INTERVALS
    }

    /// Probes sent since start (as reported by [`ConflictDetector::probes_done`]).
    pub fn probes_sent(&self) -> u64 {
        self.probes_sent
    }

    /// The daemon sent `count` probe frames.
    pub fn probes_done(&mut self, count: u64) {
        self.probes_sent = self.probes_sent.saturating_add(count);
    }

    /// A claim heard on the wire at `now`. Returns what to do about it (nothing for claims that are no conflict:
    /// not one of our VIPs, our own MAC, not holding, detection off, or in the settle interval).
    pub fn observe(&mut self, claim: &Claim, now: Instant) -> Vec<ConflictAction> {
        if Some(claim.mac) == self.own_mac {
            return Vec::new();
        }
        if Some(claim.ip) == self.peer_ip {
            self.peer_mac = Some(claim.mac);
            return Vec::new();
        }
        if !self.counting(now) {
            return Vec::new();
        }
        let clear_after = self.clear_after();
        let Some(watched) = self.watched.get_mut(&claim.ip) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        let new = match watched.claimants.iter_mut().find(|c| c.mac == claim.mac) {
            Some(known) => {
                let new = now.saturating_duration_since(known.last_seen) > clear_after;
                known.last_seen = now;
                known.kind = claim.kind;
                known.frames = known.frames.saturating_add(1);
                if new {
                    known.episode_start = now;
                }
                new
            }
            None => {
                if watched.claimants.len() >= MAX_CLAIMANTS
                    && let Some(oldest) = watched
                        .claimants
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.last_seen)
                        .map(|(i, _)| i)
                {
                    watched.claimants.swap_remove(oldest);
                }
                watched.claimants.push(Claimant {
                    mac: claim.mac,
                    kind: claim.kind,
                    first_seen: now,
                    last_seen: now,
                    frames: 1,
                    current: true,
                    episode_start: now,
                    last_reported: now,
                    suppressed: 0,
                });
                true
            }
        };
        if let Some(claimant) = watched.claimants.iter_mut().find(|c| c.mac == claim.mac) {
            if new {
                watched.detected = watched.detected.saturating_add(1);
            }
            if new || now.saturating_duration_since(claimant.last_reported) >= REPORT_EVERY {
                actions.push(ConflictAction::Report {
                    vip: claim.ip,
                    mac: claim.mac,
                    kind: claim.kind,
                    new,
                    suppressed: claimant.suppressed,
                });
                claimant.last_reported = now;
                claimant.suppressed = 0;
            } else {
                claimant.suppressed = claimant.suppressed.saturating_add(1);
            }
        }
        if self.yield_to_peer && Some(claim.mac) == self.peer_mac {
            return actions;
        }
        match self.last_reannounce {
            Some(last) if now.saturating_duration_since(last) < self.reannounce_gap() => {
                self.reannounce_pending = true;
            }
            _ => {
                self.last_reannounce = Some(now);
                self.reannounce_pending = false;
                actions.push(ConflictAction::Reannounce);
            }
        }
        actions
    }

    /// When [`ConflictDetector::poll`] has something to do next (`None`: nothing until an input changes).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let reannounce = self
            .last_reannounce
            .filter(|_| self.reannounce_pending)
            .map(|last| last + self.reannounce_gap());
        match (self.next_probe, reannounce) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: a round of probes every interval while holding, and a re-announcement deferred by the
    /// once-per-interval limit.
    pub fn poll(&mut self, now: Instant) -> Vec<ConflictAction> {
        let mut actions = Vec::new();
        if self.holding_since.is_none() || !self.enabled() {
            return actions;
        }
        if let Some(due) = self.next_probe
            && now >= due
        {
            // The next round is one interval after this one, not after a late wake-up stretched by a busy host.
            let mut next = due + self.interval;
            if next <= now {
                next = now + self.interval;
            }
            self.next_probe = Some(next);
            if !self.vips.is_empty() {
                actions.push(ConflictAction::Probe(self.vips.clone()));
            }
        }
        if self.reannounce_pending
            && self
                .last_reannounce
                .is_none_or(|last| now.saturating_duration_since(last) >= self.reannounce_gap())
        {
            self.reannounce_pending = false;
            self.last_reannounce = Some(now);
            actions.push(ConflictAction::Reannounce);
        }
        actions
    }

    /// Every VIP that was ever in conflict since start (or since it was configured), in configuration order.
    pub fn conflicts(&self, now: Instant) -> Vec<VipConflict> {
        let clear_after = self.clear_after();
        let holding = self.holding_since.is_some();
        self.vips
            .iter()
            .filter_map(|vip| {
                let watched = self.watched.get(vip)?;
                if watched.detected == 0 {
                    return None;
                }
                let mut claimants: Vec<Claimant> = watched
                    .claimants
                    .iter()
                    .map(|c| Claimant {
                        current: holding
                            && now.saturating_duration_since(c.last_seen) <= clear_after,
                        ..*c
                    })
                    .collect();
                claimants.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
                Some(VipConflict {
                    vip: *vip,
                    detected: watched.detected,
                    current: claimants.iter().any(|c| c.current),
                    claimants,
                })
            })
            .collect()
    }

    /// VIPs in conflict now (`tandem_vips_in_conflict`).
    pub fn in_conflict(&self, now: Instant) -> usize {
        self.conflicts(now).iter().filter(|c| c.current).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWN: [u8; 6] = [2, 0, 0, 0, 0, 0x21];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 0x22];
    const INTRUDER: [u8; 6] = [2, 0, 0, 0, 0, 0x66];
    const SECOND: Duration = Duration::from_secs(1);

    fn vip() -> IpAddr {
        "192.168.1.250".parse().expect("test VIP")
    }

    fn claim(mac: [u8; 6]) -> Claim {
        Claim {
            ip: vip(),
            mac,
            kind: ClaimKind::ArpRequest,
        }
    }

    /// A detector for one VIP, 1 s interval, holding since `t0`, past its settle interval at `t0 + 1 s`.
    fn active(t0: Instant) -> ConflictDetector {
        let mut d = ConflictDetector::new(SECOND, &[vip()]);
        d.set_own_mac(Some(OWN));
        d.set_holding(true, t0);
        d
    }

    fn reports(actions: &[ConflictAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, ConflictAction::Report { .. }))
            .count()
    }

    fn reannounces(actions: &[ConflictAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, ConflictAction::Reannounce))
            .count()
    }

    #[test]
    fn probes_start_one_interval_after_becoming_the_holder_and_repeat() {
        let t0 = Instant::now();
        let mut d = active(t0);
        assert_eq!(d.next_wakeup(), Some(t0 + SECOND));
        assert!(d.poll(t0 + SECOND / 2).is_empty());
        assert_eq!(d.poll(t0 + SECOND), [ConflictAction::Probe(vec![vip()])]);
        assert_eq!(d.next_wakeup(), Some(t0 + 2 * SECOND));
        // a late wake-up does not bunch probes up
        assert_eq!(d.poll(t0 + 5 * SECOND).len(), 1);
        assert!(d.poll(t0 + 5 * SECOND).is_empty());
        assert_eq!(d.next_wakeup(), Some(t0 + 6 * SECOND));
    }

    #[test]
    fn a_node_that_does_not_hold_neither_probes_nor_counts() {
        let t0 = Instant::now();
        let mut d = ConflictDetector::new(SECOND, &[vip()]);
        d.set_own_mac(Some(OWN));
        assert!(d.poll(t0 + 10 * SECOND).is_empty());
        assert!(d.observe(&claim(INTRUDER), t0 + 10 * SECOND).is_empty());
        assert_eq!(d.next_wakeup(), None);
        assert!(d.conflicts(t0).is_empty());
    }

    #[test]
    fn off_means_off() {
        let t0 = Instant::now();
        let mut d = ConflictDetector::new(Duration::ZERO, &[vip()]);
        d.set_holding(true, t0);
        assert_eq!(d.next_wakeup(), None);
        assert!(d.poll(t0 + 10 * SECOND).is_empty());
        assert!(d.observe(&claim(INTRUDER), t0 + 10 * SECOND).is_empty());
    }

    #[test]
    fn claims_in_the_settle_interval_are_a_handover_not_a_conflict() {
        let t0 = Instant::now();
        let mut d = active(t0);
        assert!(d.observe(&claim(PEER), t0 + SECOND / 2).is_empty());
        assert!(d.conflicts(t0 + SECOND / 2).is_empty());
    }

    #[test]
    fn the_peer_holding_the_vip_while_this_node_is_active_is_a_conflict() {
        let t0 = Instant::now();
        let mut d = active(t0);
        let now = t0 + 2 * SECOND;
        let actions = d.observe(&claim(PEER), now);
        assert_eq!(
            actions,
            [
                ConflictAction::Report {
                    vip: vip(),
                    mac: PEER,
                    kind: ClaimKind::ArpRequest,
                    new: true,
                    suppressed: 0
                },
                ConflictAction::Reannounce
            ]
        );
        let conflicts = d.conflicts(now);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].detected, 1);
        assert!(conflicts[0].current);
        assert_eq!(conflicts[0].claimants[0].mac, PEER);
        assert_eq!(d.in_conflict(now), 1);
    }

    #[test]
    fn our_own_mac_and_other_addresses_never_count() {
        let t0 = Instant::now();
        let mut d = active(t0);
        let now = t0 + 2 * SECOND;
        assert!(d.observe(&claim(OWN), now).is_empty());
        let other = Claim {
            ip: "192.168.1.10".parse().expect("addr"),
            ..claim(INTRUDER)
        };
        assert!(d.observe(&other, now).is_empty());
        assert!(d.conflicts(now).is_empty());
    }

    #[test]
    fn an_episode_is_reported_once_then_every_report_interval_and_ends_after_silence() {
        let t0 = Instant::now();
        let mut d = active(t0);
        let start = t0 + 2 * SECOND;
        assert_eq!(reports(&d.observe(&claim(INTRUDER), start)), 1);
        // a claim every 100 ms for 12 s: one more report (at 10 s), with the suppressed count
        let mut more = Vec::new();
        for i in 1..=120u32 {
            more.extend(d.observe(&claim(INTRUDER), start + i * SECOND / 10));
        }
        assert_eq!(reports(&more), 1);
        assert!(more.iter().any(|a| matches!(
            a,
            ConflictAction::Report {
                new: false,
                suppressed: 99,
                ..
            }
        )));
        let last = start + 12 * SECOND;
        assert_eq!(d.conflicts(last)[0].detected, 1);
        assert_eq!(d.conflicts(last)[0].claimants[0].frames, 121);
        // 3 silent intervals: over; the next claim is a new episode
        assert!(
            d.conflicts(last + 3 * SECOND)
                .first()
                .is_some_and(|c| c.current)
        );
        assert!(!d.conflicts(last + 3 * SECOND + SECOND / 10)[0].current);
        assert_eq!(d.in_conflict(last + 4 * SECOND), 0);
        let again = d.observe(&claim(INTRUDER), last + 4 * SECOND);
        assert!(
            again
                .iter()
                .any(|a| matches!(a, ConflictAction::Report { new: true, .. }))
        );
        assert_eq!(d.conflicts(last + 4 * SECOND)[0].detected, 2);
    }

    #[test]
    fn reannouncing_is_limited_to_once_per_gap_but_has_the_last_word() {
        let t0 = Instant::now();
        let mut d = active(t0);
        let start = t0 + 2 * SECOND;
        d.poll(start); // the probe round due since t0 + 1 s; the next one is at start + 1 s
        assert_eq!(reannounces(&d.observe(&claim(INTRUDER), start)), 1);
        let ms = Duration::from_millis;
        assert_eq!(reannounces(&d.observe(&claim(INTRUDER), start + ms(30))), 0);
        // the claim at +30 ms is answered at +100 ms, not forgotten
        assert_eq!(d.next_wakeup(), Some(start + REANNOUNCE_GAP));
        assert_eq!(reannounces(&d.poll(start + ms(50))), 0);
        assert_eq!(reannounces(&d.poll(start + REANNOUNCE_GAP)), 1);
        assert_eq!(reannounces(&d.poll(start + 3 * REANNOUNCE_GAP)), 0);
        // a claim after the gap is answered at once
        assert_eq!(
            reannounces(&d.observe(&claim(INTRUDER), start + ms(500))),
            1
        );
    }

    #[test]
    fn letting_go_of_the_vips_drops_a_pending_reannouncement() {
        let t0 = Instant::now();
        let mut d = active(t0);
        let start = t0 + 2 * SECOND;
        d.observe(&claim(INTRUDER), start);
        d.observe(&claim(INTRUDER), start + REANNOUNCE_GAP / 2);
        d.set_holding(false, start + REANNOUNCE_GAP / 2);
        assert!(d.poll(start + 2 * SECOND).is_empty());
        assert_eq!(d.next_wakeup(), None);
        assert!(!d.conflicts(start + REANNOUNCE_GAP)[0].current);
    }

    #[test]
    fn the_peer_is_fought_only_when_told_but_a_third_machine_always() {
        let t0 = Instant::now();
        let peer_ip: IpAddr = "192.168.1.22".parse().expect("peer");
        let peer_arp = Claim {
            ip: peer_ip,
            mac: PEER,
            kind: ClaimKind::ArpRequest,
        };
        for (yield_to_peer, fights_peer) in [(true, false), (false, true)] {
            let mut d = active(t0);
            d.set_peer(Some(peer_ip), yield_to_peer);
            // the peer resolving this node's address from its own: its MAC is learnt, nothing else happens
            assert!(d.observe(&peer_arp, t0 + SECOND).is_empty());
            assert_eq!(d.peer_mac(), Some(PEER));
            let actions = d.observe(&claim(PEER), t0 + 2 * SECOND);
            assert_eq!(reports(&actions), 1, "reported either way");
            assert_eq!(reannounces(&actions), usize::from(fights_peer));
            assert_eq!(d.conflicts(t0 + 2 * SECOND)[0].detected, 1);
            let actions = d.observe(&claim(INTRUDER), t0 + 4 * SECOND);
            assert_eq!(reannounces(&actions), 1, "a third machine is always fought");
        }
        // a peer whose MAC was never heard is fought like anyone else
        let mut d = active(t0);
        d.set_peer(Some(peer_ip), true);
        assert_eq!(reannounces(&d.observe(&claim(PEER), t0 + 2 * SECOND)), 1);
    }

    #[test]
    fn vips_removed_from_the_configuration_are_forgotten() {
        let t0 = Instant::now();
        let mut d = active(t0);
        d.observe(&claim(INTRUDER), t0 + 2 * SECOND);
        d.set_vips(&[]);
        assert!(d.conflicts(t0 + 2 * SECOND).is_empty());
        assert!(d.observe(&claim(INTRUDER), t0 + 3 * SECOND).is_empty());
        assert!(d.poll(t0 + 10 * SECOND).is_empty());
    }

    proptest! {
        /// Any sequence of claims and polls: memory stays bounded per VIP, our own MAC and our own probes (sender IP
        /// unspecified, never a claim) never count, only configured VIPs are recorded, every report is for a MAC not
        /// ours, and re-announcements come at most once per REANNOUNCE_GAP.
        #[test]
        fn bounded_and_never_blames_ourselves(
            steps in proptest::collection::vec((0u64..400, any::<u8>(), 0u8..3, any::<bool>()), 1..300),
        ) {
            let t0 = Instant::now();
            let vips: Vec<IpAddr> = vec![vip(), "fd00::250".parse().expect("v6")];
            let mut d = ConflictDetector::new(SECOND, &vips);
            d.set_own_mac(Some(OWN));
            d.set_holding(true, t0);
            let mut now = t0;
            let mut reannounced: Vec<Instant> = Vec::new();
            for (advance_ms, mac_byte, which, poll) in steps {
                now += Duration::from_millis(advance_ms);
                let actions = if poll {
                    d.poll(now)
                } else {
                    let mac = if mac_byte < 64 { OWN } else { [2, 0, 0, 0, 1, mac_byte] };
                    let ip = match which {
                        0 => vips[0],
                        1 => vips[1],
                        _ => "192.168.1.99".parse().expect("other"),
                    };
                    d.observe(&Claim { ip, mac, kind: ClaimKind::ArpReply }, now)
                };
                for action in &actions {
                    match action {
                        ConflictAction::Report { mac, vip, .. } => {
                            prop_assert_ne!(*mac, OWN);
                            prop_assert!(vips.contains(vip));
                        }
                        ConflictAction::Reannounce => reannounced.push(now),
                        ConflictAction::Probe(list) => prop_assert_eq!(list, &vips),
                    }
                }
                for conflict in d.conflicts(now) {
                    prop_assert!(conflict.claimants.len() <= MAX_CLAIMANTS);
                    prop_assert!(conflict.claimants.iter().all(|c| c.mac != OWN));
                }
                prop_assert!(d.watched.len() <= vips.len());
            }
            for pair in reannounced.windows(2) {
                prop_assert!(pair[1].saturating_duration_since(pair[0]) >= REANNOUNCE_GAP);
            }
        }
    }
}
