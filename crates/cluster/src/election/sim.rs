//! A deterministic simulation of a pair: two [`Election`]s, a simulated clock, a lossy / reordering / delaying /
//! cuttable link carrying real encoded and signed datagrams through the replay guard, a serial VIP layer with
//! latency, crashes, restarts and clean stops. It checks the safety and liveness properties as it runs. Each node
//! runs a release with its own heartbeat wire versions ([`Sim::versions`], taken at start): a rolling upgrade is a
//! restart with another range, and each node answers in the highest version both read ([`SpeakVersion`]).

use std::collections::VecDeque;

use super::*;
use crate::wire::{
    Decoded, HeartbeatCodec, MIN_WIRE_VERSION, NodeState, ReplayGuard, Role, SpeakVersion,
    WIRE_VERSION,
};

pub const NAMES: [&str; 2] = ["lb1", "lb2"];

/// Small deterministic PRNG (splitmix64): tests must replay exactly from a proptest seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..=max.
    pub fn upto(&mut self, max: u64) -> u64 {
        if max == 0 { 0 } else { self.next() % (max + 1) }
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// No loss; delays up to `max_delay_ms` (so reordering happens).
    Healthy,
    /// Each datagram lost with this percentage.
    Lossy(u64),
    /// Nothing gets through.
    Cut,
    /// Datagrams from node `.0` are lost; the other direction works.
    OneWay(usize),
}

#[derive(Clone, Debug)]
struct InFlight {
    deliver_at: u64,
    order: u64,
    to: usize,
    datagram: Vec<u8>,
}

#[derive(Debug)]
pub struct SimNode {
    pub election: Option<Election>,
    pub up_since: u64,
    pub restarts: u64,
    /// Independent model of the interface: VIP ops in flight (due time, op, fails) and addresses present.
    vip_queue: VecDeque<(u64, VipOp, bool)>,
    vip_busy_until: u64,
    acquires_in_flight: u32,
    addresses: bool,
    /// Stopped and waiting to exit at this time.
    exit_at: Option<u64>,
    pub events: Vec<(u64, Event)>,
    pub heartbeats_sent: u64,
    /// Fail the next N acquire operations.
    pub fail_acquires: u32,
    /// Times an announcement was asked for.
    pub announces: Vec<u64>,
    /// Told to shut down.
    pub stopping: bool,
    /// When the election said its clean stop was over ([`Action::Stopped`]).
    pub stopped_at: Vec<u64>,
    /// Heartbeats sent while stopped (time, sequence number).
    pub stopped_heartbeats: Vec<(u64, u64)>,
    /// The daemon was killed but the host lives ([`Sim::kill_process`]): its kernel answers heartbeats with ICMP
    /// port unreachable and a probe of the sync port with RST.
    pub process_killed: bool,
}

impl SimNode {
    pub fn holds(&self) -> bool {
        self.addresses || self.acquires_in_flight > 0
    }
    pub fn state(&self) -> Option<NodeState> {
        self.election.as_ref().map(Election::state)
    }
    /// The addresses are on the interface (an acquire done and not yet undone): what a client can reach.
    pub fn has_addresses(&self) -> bool {
        self.addresses
    }
    pub fn is_active(&self) -> bool {
        self.state() == Some(NodeState::Active)
    }
    pub fn up(&self) -> bool {
        self.election.is_some()
    }
    pub fn e(&self) -> &Election {
        self.election.as_ref().expect("node is up")
    }
}

#[derive(Clone, Debug)]
pub struct SimParams {
    pub timings: Timings,
    pub roles: [Role; 2],
    pub auto_failback: bool,
    pub ping_configured: bool,
    pub max_delay_ms: u64,
    pub vip_latency_ms: u64,
    pub seed: u64,
}

impl SimParams {
    pub fn new(interval_ms: u64) -> Self {
        Self {
            timings: Timings {
                interval_ms,
                dead_ms: interval_ms * 5,
                warn_ms: interval_ms * 3,
                init_dead_ms: interval_ms * 10,
            },
            roles: [Role::Primary, Role::Secondary],
            auto_failback: false,
            ping_configured: false,
            max_delay_ms: 0,
            vip_latency_ms: 1,
            seed: 1,
        }
    }

    /// Time for a split brain to be resolved once the link is healthy (see docs/protocol.md).
    pub fn settle_ms(&self) -> u64 {
        self.timings.interval_ms + 2 * self.max_delay_ms + 2 * self.vip_latency_ms + 2
    }
}

/// A property that broke, with the time.
#[derive(Clone, Debug)]
pub struct Violation {
    pub at: u64,
    pub what: String,
}

pub struct Sim {
    pub now: u64,
    pub params: SimParams,
    pub nodes: [SimNode; 2],
    pub mode: LinkMode,
    pub mode_since: u64,
    codec: HeartbeatCodec,
    /// Each node's codec and choice of version, for the release it runs (see `versions`).
    codecs: [HeartbeatCodec; 2],
    speak: [SpeakVersion; 2],
    /// The wire versions (min, max) each node reads and speaks from its next start on.
    pub versions: [(u16, u16); 2],
    /// Each node runs, from its next start on, the release before make-before-break handovers
    /// (`ElectionConfig::make_before_break` false).
    pub legacy: [bool; 2],
    /// Heartbeats delivered as incompatible (a version the receiver cannot read), per receiving node.
    pub incompatible_delivered: [u64; 2],
    guards: [ReplayGuard; 2],
    wire: Vec<InFlight>,
    /// ICMP port unreachable on its way back: (due, node told).
    icmp: Vec<(u64, usize)>,
    /// Process probes in flight: (due, node probing).
    probes: Vec<(u64, usize)>,
    /// The sync session's FIN or RST from a host whose daemon died, on its way: (due, node told).
    session_closes: Vec<(u64, usize)>,
    /// A node that exits after a clean stop leaves its host running (its kernel refuses heartbeats and probes, and
    /// closes the sync session), as a killed daemon does; off by default.
    pub host_lives_after_stop: bool,
    /// Probe answers given: (time, node probing, refused).
    pub probe_results: Vec<(u64, usize, bool)>,
    order: u64,
    rng: Rng,
    pub violations: Vec<Violation>,
    both_holding_since: Option<u64>,
    /// Both hold while one of them hands over on purpose (make-before-break), since.
    planned_since: Option<u64>,
    /// The longest planned overlap seen.
    pub max_planned_overlap_ms: u64,
    neither_since: Option<u64>,
    /// Neither node has the addresses on its interface, since (whatever the states).
    no_address_since: Option<u64>,
    /// Every stretch without the addresses on either node: (from, to).
    pub address_gaps: Vec<(u64, u64)>,
    /// (dead node, other node, deadline) for the liveness check.
    liveness: Vec<(usize, usize, u64)>,
    pub split_brain_episodes: u64,
    /// Times a node's state changed away from Active.
    pub active_exits: [u64; 2],
    pub check_never_neither: bool,
    pub check_liveness: bool,
}

impl Sim {
    pub fn new(params: SimParams) -> Self {
        let rng = Rng::new(params.seed);
        let codec = HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"sim secret"));
        let this_release = (MIN_WIRE_VERSION, WIRE_VERSION);
        let mut sim = Self {
            now: 0,
            codecs: [codec.clone(), codec.clone()],
            speak: [SpeakVersion::new(this_release.0, this_release.1); 2],
            versions: [this_release; 2],
            legacy: [false; 2],
            incompatible_delivered: [0, 0],
            codec,
            guards: [ReplayGuard::new(), ReplayGuard::new()],
            nodes: [Self::blank(), Self::blank()],
            params,
            mode: LinkMode::Healthy,
            mode_since: 0,
            wire: Vec::new(),
            icmp: Vec::new(),
            probes: Vec::new(),
            session_closes: Vec::new(),
            host_lives_after_stop: false,
            probe_results: Vec::new(),
            order: 0,
            rng,
            violations: Vec::new(),
            both_holding_since: None,
            planned_since: None,
            max_planned_overlap_ms: 0,
            neither_since: None,
            no_address_since: None,
            address_gaps: Vec::new(),
            liveness: Vec::new(),
            split_brain_episodes: 0,
            active_exits: [0, 0],
            check_never_neither: true,
            check_liveness: true,
        };
        sim.start(0);
        sim.start(1);
        sim
    }

    fn blank() -> SimNode {
        SimNode {
            election: None,
            up_since: 0,
            restarts: 0,
            vip_queue: VecDeque::new(),
            vip_busy_until: 0,
            acquires_in_flight: 0,
            addresses: false,
            exit_at: None,
            events: Vec::new(),
            heartbeats_sent: 0,
            fail_acquires: 0,
            announces: Vec::new(),
            stopping: false,
            stopped_at: Vec::new(),
            stopped_heartbeats: Vec::new(),
            process_killed: false,
        }
    }

    pub fn config(&self, i: usize) -> ElectionConfig {
        let p = &self.params;
        let mut cfg = ElectionConfig::new(
            "openstack",
            NAMES[i],
            p.roles[i],
            true,
            p.timings,
            1_000_000 * (i as u64 + 1) + self.nodes[i].restarts,
        );
        cfg.auto_failback = p.auto_failback;
        cfg.ping_nodes_configured = p.ping_configured;
        cfg.make_before_break = !self.legacy[i];
        cfg
    }

    /// Starts (or restarts) node `i`.
    pub fn start(&mut self, i: usize) {
        if self.nodes[i].up() {
            return;
        }
        self.nodes[i].restarts += 1;
        let (min, max) = self.versions[i];
        self.codecs[i] = self.codec.clone().with_versions(min, max);
        let (min, max) = self.codecs[i].versions();
        self.speak[i] = SpeakVersion::new(min, max);
        let cfg = self.config(i);
        let node = &mut self.nodes[i];
        node.election = Some(Election::new(cfg, self.now));
        node.up_since = self.now;
        node.exit_at = None;
        node.stopping = false;
        node.process_killed = false;
        self.liveness.retain(|(dead, _, _)| *dead != i);
        // A survivor that restarts gets its own start-up wait again.
        let restart_deadline =
            self.now + self.params.timings.init_dead_ms + 2 * self.params.vip_latency_ms + 1;
        for (_, other, deadline) in &mut self.liveness {
            if *other == i {
                *deadline = (*deadline).max(restart_deadline);
            }
        }
        self.feed(i, Input::Tick);
    }

    /// Kills node `i` (process and host: its addresses vanish, in-flight VIP results are lost).
    pub fn crash(&mut self, i: usize) {
        if !self.nodes[i].up() {
            return;
        }
        let node = &mut self.nodes[i];
        node.election = None;
        node.process_killed = false;
        node.vip_queue.clear();
        node.acquires_in_flight = 0;
        node.addresses = false;
        node.vip_busy_until = self.now;
        self.went_down(i);
    }

    /// Kills node `i`'s daemon while its host lives (SIGKILL, OOM): its addresses vanish as in a crash (removed by
    /// the guardian), and its kernel refuses what comes for the daemon. On a healthy link the survivor must be
    /// active within one of its intervals (its next heartbeat meets the refusal) plus the ICMP, the probe's round
    /// trip and the VIP latency, not `dead_ms`.
    pub fn kill_process(&mut self, i: usize) {
        if !self.nodes[i].up() {
            return;
        }
        self.crash(i);
        self.host_refuses(i);
        let other = 1 - i;
        if self.mode == LinkMode::Healthy && self.nodes[other].up() {
            let p = &self.params;
            let fast =
                self.now + p.timings.interval_ms + 4 * p.max_delay_ms + 2 * p.vip_latency_ms + 1;
            for (dead, survivor, deadline) in &mut self.liveness {
                if *dead == i && *survivor == other {
                    *deadline = (*deadline).min(fast.max(
                        self.nodes[other].up_since
                            + p.timings.init_dead_ms
                            + 2 * p.vip_latency_ms
                            + 1,
                    ));
                }
            }
        }
    }

    /// Node `i`'s daemon is gone from a live host: its kernel refuses heartbeats and probes from now on, and closes
    /// the sync session. The FIN takes the way the daemon's last heartbeats took (if open) and, like them on a LAN,
    /// does not overtake them: it arrives after every heartbeat of `i` still in flight.
    fn host_refuses(&mut self, i: usize) {
        self.nodes[i].process_killed = true;
        let other = 1 - i;
        if self.nodes[other].up() && self.back_open(other) {
            let last_heartbeat = self
                .wire
                .iter()
                .filter(|f| f.to == other)
                .map(|f| f.deliver_at)
                .max()
                .unwrap_or(0);
            let due = (self.now + self.rng.upto(self.params.max_delay_ms)).max(last_heartbeat);
            self.session_closes.push((due, other));
        }
    }

    /// A datagram's way back to node `to` from the other node's host is open.
    fn back_open(&self, to: usize) -> bool {
        match self.mode {
            LinkMode::Healthy | LinkMode::Lossy(_) => true,
            LinkMode::Cut => false,
            LinkMode::OneWay(from) => from != 1 - to,
        }
    }

    fn went_down(&mut self, i: usize) {
        let other = 1 - i;
        if self.nodes[other].up() {
            let t = self.params.timings;
            // The survivor must be active within dead_ms + one interval, or after its own start-up wait.
            let deadline = (self.now + t.dead_ms + t.interval_ms).max(
                self.nodes[other].up_since + t.init_dead_ms + 2 * self.params.vip_latency_ms + 1,
            );
            self.liveness.push((i, other, deadline));
        }
    }

    /// Clean stop of node `i` (SIGTERM): it hands over, then exits.
    pub fn stop(&mut self, i: usize) {
        if self.nodes[i].up() {
            self.nodes[i].stopping = true;
            self.feed(i, Input::Shutdown);
        }
    }

    /// A reload on node `i` changes `[heartbeat]` live. The new values also become the simulation's (what a
    /// restarted node reads, and the bounds the properties check).
    pub fn set_timings(&mut self, i: usize, timings: Timings, auto_failback: bool) {
        self.params.timings = timings;
        self.params.auto_failback = auto_failback;
        self.feed(
            i,
            Input::SetTimings {
                timings,
                auto_failback,
            },
        );
    }

    pub fn set_mode(&mut self, mode: LinkMode) {
        if mode != self.mode {
            self.mode = mode;
            self.mode_since = self.now;
        }
    }

    /// Feeds an input to node `i` (if up) and carries out its actions.
    pub fn feed(&mut self, i: usize, input: Input) {
        let now = self.now;
        let Some(election) = self.nodes[i].election.as_mut() else {
            return;
        };
        let before = election.state();
        let actions = election.handle(input, now);
        let peer_alive = election.peer_alive(now);
        let after = election.state();
        if before == NodeState::Active && after != NodeState::Active {
            self.active_exits[i] += 1;
        }
        for action in actions {
            match action {
                Action::SendHeartbeat(hb) => {
                    self.nodes[i].heartbeats_sent += 1;
                    if hb.state == NodeState::Stopped {
                        self.nodes[i].stopped_heartbeats.push((now, hb.seq));
                    }
                    let datagram = self.codecs[i]
                        .encode_version(&hb, self.speak[i].speak())
                        .expect("encodes");
                    let lost = match self.mode {
                        LinkMode::Healthy => false,
                        LinkMode::Lossy(p) => self.rng.chance(p),
                        LinkMode::Cut => true,
                        LinkMode::OneWay(from) => from == i,
                    };
                    if !lost {
                        let delay = self.rng.upto(self.params.max_delay_ms);
                        self.order += 1;
                        self.wire.push(InFlight {
                            deliver_at: now + delay,
                            order: self.order,
                            to: 1 - i,
                            datagram,
                        });
                    }
                }
                Action::AcquireVips => {
                    // Property 1: two holders only ever start while one of them cannot hear the other, or while
                    // the other hands the VIPs over on purpose (make-before-break).
                    let other = &self.nodes[1 - i];
                    let handing_over = other.election.as_ref().is_some_and(Election::handing_over);
                    if other.holds() && !self.nodes[i].holds() && !handing_over {
                        let other_hears =
                            other.election.as_ref().is_some_and(|e| e.peer_alive(now));
                        if peer_alive && other_hears {
                            self.violations.push(Violation {
                                at: now,
                                what: format!(
                                    "{} acquired while {} holds and both hear each other",
                                    NAMES[i],
                                    NAMES[1 - i]
                                ),
                            });
                        }
                    }
                    let fails = if self.nodes[i].fail_acquires > 0 {
                        self.nodes[i].fail_acquires -= 1;
                        true
                    } else {
                        false
                    };
                    self.nodes[i].acquires_in_flight += 1;
                    self.queue_vip(i, VipOp::Acquire, fails);
                }
                Action::ProbePeerProcess => {
                    // A SYN there and its answer back (each way delayed as a datagram).
                    let due = now
                        + self.rng.upto(self.params.max_delay_ms)
                        + self.rng.upto(self.params.max_delay_ms);
                    self.probes.push((due, i));
                }
                Action::ReleaseVips => self.queue_vip(i, VipOp::Release, false),
                Action::AnnounceVips => {
                    self.nodes[i].announces.push(now);
                    self.queue_vip(i, VipOp::Announce, false);
                }
                Action::Event(event) => {
                    if matches!(event, Event::SplitBrain { won: true, .. }) {
                        self.split_brain_episodes += 1;
                    }
                    self.nodes[i].events.push((now, event));
                }
                // The election says when the clean stop is over (the peer took over, nobody can confirm, or the
                // linger ended): the daemon exits then.
                Action::Stopped => {
                    self.nodes[i].exit_at = Some(now);
                    self.nodes[i].stopped_at.push(now);
                }
            }
        }
    }

    fn queue_vip(&mut self, i: usize, op: VipOp, fails: bool) {
        let node = &mut self.nodes[i];
        let due = node.vip_busy_until.max(self.now) + self.params.vip_latency_ms;
        node.vip_busy_until = due;
        node.vip_queue.push_back((due, op, fails));
    }

    fn next_event_time(&self) -> u64 {
        let mut next = u64::MAX;
        for f in &self.wire {
            next = next.min(f.deliver_at);
        }
        for (due, _) in self
            .icmp
            .iter()
            .chain(&self.probes)
            .chain(&self.session_closes)
        {
            next = next.min(*due);
        }
        for node in &self.nodes {
            if let Some(e) = &node.election {
                next = next.min(e.next_timeout());
            }
            if let Some((due, _, _)) = node.vip_queue.front() {
                next = next.min(*due);
            }
            if let Some(exit) = node.exit_at {
                next = next.min(exit);
            }
        }
        next
    }

    /// Runs the simulation until `until` (inclusive), checking properties at every step.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next = self.next_event_time().max(self.now);
            if next > until {
                self.now = until;
                self.check();
                return;
            }
            self.now = next;
            self.step();
            self.check();
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    fn step(&mut self) {
        let now = self.now;
        // VIP results.
        for i in 0..2 {
            while let Some(&(due, op, fails)) = self.nodes[i].vip_queue.front() {
                if due > now {
                    break;
                }
                self.nodes[i].vip_queue.pop_front();
                let input = match (op, fails) {
                    (VipOp::Acquire, false) => {
                        self.nodes[i].acquires_in_flight -= 1;
                        self.nodes[i].addresses = true;
                        Input::VipsAcquired
                    }
                    (VipOp::Acquire, true) => {
                        self.nodes[i].acquires_in_flight -= 1;
                        self.nodes[i].addresses = true;
                        Input::VipFailure {
                            op,
                            error: "simulated failure".into(),
                        }
                    }
                    (VipOp::Release, _) => {
                        if self.nodes[i].acquires_in_flight == 0 {
                            self.nodes[i].addresses = false;
                        }
                        Input::VipsReleased
                    }
                    (VipOp::Announce, _) => Input::VipsAnnounced,
                };
                self.feed(i, input);
            }
        }
        // Datagrams, in delivery order (ties by send order).
        let mut due: Vec<InFlight> = Vec::new();
        self.wire.retain(|f| {
            if f.deliver_at <= now {
                due.push(f.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|f| (f.deliver_at, f.order));
        for f in due {
            if !self.nodes[f.to].up() {
                // A live host without the daemon answers with ICMP port unreachable (if the way back is open).
                if self.nodes[f.to].process_killed && self.back_open(1 - f.to) {
                    let due = now + self.rng.upto(self.params.max_delay_ms);
                    self.icmp.push((due, 1 - f.to));
                }
                continue;
            }
            let hb = match self.codecs[f.to].decode_any(&f.datagram) {
                Ok(Decoded::Heartbeat { heartbeat, version }) => (heartbeat, version),
                Ok(Decoded::Incompatible(hb)) => {
                    let verdict = self.guards[f.to].check_incompatible(&hb);
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!(
                            "{now:5} {} <- seq {} version {} (unreadable) {verdict:?}",
                            NAMES[f.to], hb.seq, hb.version
                        );
                    }
                    if verdict == Err(crate::wire::Reject::Replay) {
                        self.speak[f.to].heard_reordered(hb.boot_epoch, hb.version);
                    }
                    if verdict.is_ok() {
                        self.incompatible_delivered[f.to] += 1;
                        self.speak[f.to].heard(hb.boot_epoch, hb.version);
                        self.feed(f.to, Input::PeerIncompatible(hb));
                    }
                    continue;
                }
                Err(_) => {
                    self.violations.push(Violation {
                        at: now,
                        what: "valid datagram rejected".into(),
                    });
                    continue;
                }
            };
            let (hb, version) = hb;
            let verdict = self.guards[f.to].check(&hb);
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!(
                    "{now:5} {} <- seq {} {:?} holds={} handover={} req={} ack={} {}",
                    NAMES[f.to],
                    hb.seq,
                    hb.state,
                    hb.holds_vips,
                    hb.handover,
                    hb.takeover_request,
                    hb.ack_seq,
                    if verdict.is_ok() { "" } else { "DROPPED" }
                );
            }
            if verdict == Err(crate::wire::Reject::Replay) {
                self.speak[f.to].heard_reordered(hb.boot_epoch, version);
            }
            if verdict.is_ok() {
                self.speak[f.to].heard(hb.boot_epoch, version);
                self.feed(f.to, Input::PeerHeartbeat(hb));
            }
        }
        // ICMP reports and probe answers.
        for to in take_due(&mut self.icmp, now) {
            self.feed(to, Input::PeerPortUnreachable);
        }
        for to in take_due(&mut self.session_closes, now) {
            self.feed(to, Input::PeerSessionLost);
        }
        for from in take_due(&mut self.probes, now) {
            let peer = &self.nodes[1 - from];
            // RST only from a live host without the daemon, over a link that carries both ways (else a timeout).
            let refused = !peer.up()
                && peer.process_killed
                && self.back_open(from)
                && self.back_open(1 - from);
            self.probe_results.push((now, from, refused));
            self.feed(from, Input::PeerProbeResult { refused });
        }
        // Exits after a clean stop.
        for i in 0..2 {
            if self.nodes[i].exit_at.is_some_and(|t| t <= now) {
                self.nodes[i].exit_at = None;
                let node = &mut self.nodes[i];
                node.election = None;
                node.vip_queue.clear();
                node.acquires_in_flight = 0;
                node.addresses = false;
                self.went_down(i);
                if self.host_lives_after_stop {
                    self.host_refuses(i);
                }
            }
        }
        // Timers.
        for i in 0..2 {
            if self.nodes[i]
                .election
                .as_ref()
                .is_some_and(|e| e.next_timeout() <= now)
            {
                self.feed(i, Input::Tick);
            }
        }
    }

    fn check(&mut self) {
        let now = self.now;
        let p = self.params.clone();
        let both = self.nodes[0].holds() && self.nodes[1].holds();
        match (both, self.both_holding_since) {
            (true, None) => self.both_holding_since = Some(now),
            (false, Some(_)) => self.both_holding_since = None,
            _ => {}
        }
        let any_address = self.nodes.iter().any(SimNode::has_addresses);
        match (any_address, self.no_address_since) {
            (false, None) => self.no_address_since = Some(now),
            (true, Some(since)) => {
                self.no_address_since = None;
                if now > since {
                    self.address_gaps.push((since, now));
                }
            }
            _ => {}
        }
        // Property 5: a planned overlap (one node hands over while both hold) ends within the giver's bound plus
        // the time to remove (its VIP queue) and the news of the peer's acquisition, on any link.
        let planned = both
            && self
                .nodes
                .iter()
                .any(|n| n.election.as_ref().is_some_and(Election::handing_over));
        match (planned, self.planned_since) {
            (true, None) => self.planned_since = Some(now),
            (false, Some(_)) => self.planned_since = None,
            _ => {}
        }
        if let Some(since) = self.planned_since {
            let overlap = now - since;
            self.max_planned_overlap_ms = self.max_planned_overlap_ms.max(overlap);
            let bound = p.timings.handover_max_overlap_ms() + 3 * p.vip_latency_ms + 1;
            if overlap > bound {
                self.violations.push(Violation {
                    at: now,
                    what: format!("a planned handover overlaps for {overlap} ms (bound {bound})"),
                });
                self.planned_since = Some(now);
            }
        }
        // Property 2: with a healthy link, a split brain lasts at most one heartbeat (plus delay and VIP latency).
        if both && !planned && self.mode == LinkMode::Healthy {
            let since = self.both_holding_since.unwrap_or(now).max(self.mode_since);
            if now > since + p.settle_ms() {
                self.violations.push(Violation {
                    at: now,
                    what: format!("both hold the VIPs {} ms into a healthy link", now - since),
                });
                self.both_holding_since = Some(now);
            }
        }
        // Property 3: a survivor takes over within dead_ms + one interval.
        let mut broken = Vec::new();
        let check_liveness = self.check_liveness;
        self.liveness.retain(|&(dead, other, deadline)| {
            // Only a survivor that is running normally must take over (not one that is itself stopping).
            if self.nodes[dead].up() || !self.nodes[other].up() || self.nodes[other].stopping {
                return false;
            }
            if now >= deadline {
                if check_liveness && !self.nodes[other].is_active() {
                    broken.push(format!(
                        "{} not active {} ms after the deadline for replacing {} ({:?})",
                        NAMES[other],
                        now - deadline,
                        NAMES[dead],
                        self.nodes[other].state()
                    ));
                }
                return false;
            }
            true
        });
        for what in broken {
            self.violations.push(Violation { at: now, what });
        }
        // Property 4: with both nodes up on a healthy link, not holding on either node does not last.
        let both_up = self
            .nodes
            .iter()
            .all(|n| n.up() && !matches!(n.state(), Some(NodeState::Stopped | NodeState::Fault)));
        let neither = both_up && !self.nodes[0].holds() && !self.nodes[1].holds();
        if !neither {
            self.neither_since = None;
        } else if self.neither_since.is_none() {
            self.neither_since = Some(now);
        }
        if self.check_never_neither
            && let Some(since) = self.neither_since
            && self.mode == LinkMode::Healthy
        {
            let t = p.timings;
            let start = since
                .max(self.mode_since)
                .max(self.nodes[0].up_since)
                .max(self.nodes[1].up_since);
            let bound =
                t.dead_ms + 2 * t.interval_ms + 4 * p.max_delay_ms + 4 * p.vip_latency_ms + 2;
            if now > start + bound {
                self.violations.push(Violation {
                    at: now,
                    what: format!(
                        "neither node holds the VIPs for {} ms on a healthy link",
                        now - since
                    ),
                });
                self.neither_since = Some(now);
            }
        }
    }

    /// The wire version node `i` sends in now.
    pub fn speaking(&self, i: usize) -> u16 {
        self.speak[i].speak()
    }

    pub fn active_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_active()).count()
    }

    pub fn holders(&self) -> usize {
        self.nodes.iter().filter(|n| n.holds()).count()
    }

    /// Time of the first event matching `f` on node `i` at or after `since`.
    pub fn first_event(&self, i: usize, since: u64, f: impl Fn(&Event) -> bool) -> Option<u64> {
        self.nodes[i]
            .events
            .iter()
            .find(|(t, e)| *t >= since && f(e))
            .map(|(t, _)| *t)
    }

    /// When node `i` last became active at or after `since`.
    pub fn became_active(&self, i: usize, since: u64) -> Option<u64> {
        self.first_event(i, since, |e| {
            matches!(
                e,
                Event::StateChanged {
                    to: NodeState::Active,
                    ..
                }
            )
        })
    }

    pub fn assert_clean(&self) {
        let list: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("at {} ms: {}", v.at, v.what))
            .collect();
        assert!(list.is_empty(), "violations: {list:#?}");
    }
}

/// Removes the entries of a (due, node) queue that are due at `now`, returning their nodes in queue order.
fn take_due(queue: &mut Vec<(u64, usize)>, now: u64) -> Vec<usize> {
    let (due, later): (Vec<_>, Vec<_>) = queue.drain(..).partition(|&(at, _)| at <= now);
    *queue = later;
    due.into_iter().map(|(_, node)| node).collect()
}
