//! Make-before-break planned handovers: no instant without a holder, a bounded overlap, a crash of either node
//! during the overlap, and the fallback to break-before-make with a peer of the release before (which does not take
//! an offer from a node still holding the VIPs).

use proptest::prelude::*;

use super::sim::{LinkMode, Sim, SimParams};
use super::*;
use crate::wire::{Heartbeat, NodeState, Role};

/// The planned handovers, each from a settled pair with lb1 (primary) active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planned {
    /// `tandem takeover` on the standby.
    Takeover,
    /// `tandem release` on the active node.
    Release,
    /// The primary comes back with auto-failback (here: it stood by after a release, then is caught up again).
    Failback,
    /// SIGTERM of the active node.
    CleanStop,
}

const PLANNED: [Planned; 4] = [
    Planned::Takeover,
    Planned::Release,
    Planned::Failback,
    Planned::CleanStop,
];

fn params(interval_ms: u64, max_delay_ms: u64, vip_latency_ms: u64, seed: u64) -> SimParams {
    let mut p = SimParams::new(interval_ms);
    p.max_delay_ms = max_delay_ms;
    p.vip_latency_ms = vip_latency_ms;
    p.seed = seed;
    p
}

/// A pair settled with `giver` active and the other standing by (auto-failback on when `kind` is `Failback`).
fn settled(mut p: SimParams, kind: Planned, giver: usize) -> Sim {
    p.auto_failback = kind == Planned::Failback;
    let mut sim = Sim::new(p);
    let t = sim.params.timings;
    sim.run_for(t.init_dead_ms + 3 * t.interval_ms + 3 * sim.params.vip_latency_ms);
    assert!(sim.nodes[0].is_active(), "lb1 active after start");
    if kind == Planned::Failback {
        // The secondary serves after a release of the primary; the primary is caught up again later.
        sim.feed(0, Input::AdminRelease);
        sim.run_for(3 * t.interval_ms + 3 * sim.params.vip_latency_ms);
        assert!(sim.nodes[1].is_active(), "lb2 active after the release");
        // Failing back is allowed again once the primary was active; model its restart instead.
        sim.crash(0);
        sim.run_for(10);
        sim.start(0);
        sim.run_for(t.init_dead_ms + 3 * t.interval_ms);
        assert!(sim.nodes[1].is_active());
        return sim;
    }
    if giver == 1 {
        sim.feed(0, Input::AdminRelease);
        sim.run_for(3 * t.interval_ms + 3 * sim.params.vip_latency_ms);
        assert!(sim.nodes[1].is_active());
    }
    sim
}

/// Starts the handover; returns (giver, taker).
fn trigger(sim: &mut Sim, kind: Planned, giver: usize) -> (usize, usize) {
    match kind {
        Planned::Takeover => sim.feed(1 - giver, Input::AdminTakeover),
        Planned::Release => sim.feed(giver, Input::AdminRelease),
        Planned::Failback => return (1, trigger_failback(sim)),
        Planned::CleanStop => sim.stop(giver),
    }
    (giver, 1 - giver)
}

fn trigger_failback(sim: &mut Sim) -> usize {
    sim.feed(0, Input::CaughtUp(true));
    0
}

/// The longest a planned overlap may take on a link delaying up to `max_delay_ms`: the taker's acquire, its news
/// back, the grace, and the giver's removal (possibly queued behind an announcement).
fn expected_overlap(p: &SimParams) -> u64 {
    p.vip_latency_ms + p.max_delay_ms + HANDOVER_GRACE_MS + 2 * p.vip_latency_ms + 1
}

#[test]
fn planned_handovers_leave_no_instant_without_a_holder() {
    for kind in PLANNED {
        for interval in [10, 200, 1000] {
            // (0, 60): adding the VIPs takes longer than the offer's bound (a loaded host): still no gap.
            for (delay, vip) in [(0, 1), (1, 1), (3, 2), (0, 5), (1, 60)] {
                for giver in [0, 1] {
                    if kind == Planned::Failback && giver == 0 {
                        continue;
                    }
                    let p = params(interval, delay, vip, interval + delay);
                    let mut sim = settled(p.clone(), kind, giver);
                    let t0 = sim.now;
                    let (giver, taker) = trigger(&mut sim, kind, giver);
                    sim.run_for(interval * 3 + 50 + 3 * vip);
                    let case = format!(
                        "{kind:?} interval {interval} delay {delay} vip {vip} from lb{}",
                        giver + 1
                    );
                    assert!(sim.nodes[taker].is_active(), "{case}: taker active");
                    assert!(!sim.nodes[giver].holds(), "{case}: giver let go");
                    let gaps: Vec<_> = sim
                        .address_gaps
                        .iter()
                        .filter(|(from, _)| *from >= t0)
                        .collect();
                    assert!(gaps.is_empty(), "{case}: no holder during {gaps:?}");
                    let took = sim.became_active(taker, t0).expect("taker active") - t0;
                    assert!(took <= 2 * delay + vip + 1, "{case}: took {took} ms");
                    assert!(
                        sim.max_planned_overlap_ms <= expected_overlap(&p),
                        "{case}: overlap {} ms",
                        sim.max_planned_overlap_ms
                    );
                    assert!(
                        sim.max_planned_overlap_ms > 0,
                        "{case}: the VIPs overlapped"
                    );
                    assert_eq!(
                        sim.split_brain_episodes, 0,
                        "{case}: no split brain counted"
                    );
                    sim.assert_clean();
                }
            }
        }
    }
}

#[test]
fn a_release_before_make_before_break_gets_a_classic_handover_either_way() {
    for kind in PLANNED {
        for legacy in [0, 1] {
            for interval in [10, 200] {
                let p = params(interval, 1, 1, 7 + interval);
                let mut sim = Sim::new(p.clone());
                sim.legacy[legacy] = true;
                // Restart the legacy node so it runs the older release from the start.
                sim.crash(legacy);
                sim.start(legacy);
                let mut sim = {
                    let t = sim.params.timings;
                    sim.run_for(t.init_dead_ms + 3 * t.interval_ms);
                    sim
                };
                let giver = if sim.nodes[0].is_active() { 0 } else { 1 };
                if kind == Planned::Failback {
                    // Only a primary fails back: make lb2 active, then let lb1 ask.
                    sim.params.auto_failback = true;
                    let t = sim.params.timings;
                    sim.feed(
                        0,
                        Input::SetTimings {
                            timings: t,
                            auto_failback: true,
                        },
                    );
                    sim.feed(
                        1,
                        Input::SetTimings {
                            timings: t,
                            auto_failback: true,
                        },
                    );
                    if giver == 0 {
                        sim.crash(0);
                        sim.run_for(t.dead_ms + 2 * t.interval_ms);
                        sim.start(0);
                        sim.run_for(t.init_dead_ms + 3 * t.interval_ms);
                    }
                    assert!(sim.nodes[1].is_active());
                }
                let giver = if sim.nodes[0].is_active() { 0 } else { 1 };
                let t0 = sim.now;
                let (giver, taker) = trigger(&mut sim, kind, giver);
                sim.run_for(interval * 3 + 50);
                let case = format!("{kind:?} legacy lb{} interval {interval}", legacy + 1);
                assert!(sim.nodes[taker].is_active(), "{case}: taker active");
                assert!(!sim.nodes[giver].holds(), "{case}: giver let go");
                // Break-before-make: never both holding. The giver offers twice while holding (the older peer
                // answers the repeated offer with its next keepalive), so the handover takes up to the offer's
                // bound more than a classic one, the giver serving meanwhile.
                assert_eq!(sim.max_planned_overlap_ms, 0, "{case}: no overlap");
                let took = sim.became_active(taker, t0).expect("taker active") - t0;
                let bound = sim.params.timings.handover_overlap_ms() + 10;
                assert!(took <= bound, "{case}: took {took} ms");
                sim.assert_clean();
            }
        }
    }
}

/// A lost answer (the link cut right after the offer): the giver removes its VIPs at the bound, not later.
#[test]
fn the_overlap_ends_at_its_bound_when_the_peer_goes_quiet() {
    for interval in [10, 200] {
        let p = params(interval, 0, 1, 3);
        let mut sim = settled(p, Planned::Release, 0);
        sim.check_never_neither = false;
        sim.check_liveness = false;
        let t0 = sim.now;
        sim.feed(0, Input::AdminRelease);
        sim.set_mode(LinkMode::Cut);
        sim.run_for(1);
        assert!(sim.nodes[0].holds(), "kept during the overlap");
        let bound = sim.params.timings.handover_overlap_ms();
        sim.run_for(bound - 2);
        assert!(
            sim.nodes[0].has_addresses(),
            "interval {interval}: kept until the bound"
        );
        sim.run_for(3);
        assert!(
            !sim.nodes[0].holds(),
            "interval {interval}: removed at the bound ({bound} ms)"
        );
        assert!(sim.now - t0 <= bound + 2);
    }
}

/// The taker dies while adding the VIPs (after it took the offer): the giver, still holding them, stays active
/// once the taker is given up; no instant without a holder. A stopping giver stops anyway.
#[test]
fn a_taker_dying_while_acquiring_leaves_the_vips_with_the_giver() {
    for (kind, process) in [
        (Planned::Release, false),
        (Planned::Release, true),
        (Planned::Takeover, false),
    ] {
        let p = params(10, 0, 5, 11);
        let mut sim = settled(p, kind, 0);
        let t0 = sim.now;
        trigger(&mut sim, kind, 0);
        sim.run_for(2);
        assert_eq!(sim.nodes[1].state(), Some(NodeState::Acquiring), "{kind:?}");
        if process {
            sim.kill_process(1);
        } else {
            sim.crash(1);
        }
        let t = sim.params.timings;
        sim.run_for(t.dead_ms + 2 * t.interval_ms);
        assert!(sim.nodes[0].is_active(), "{kind:?}: giver active again");
        assert!(
            has_reason(&sim, 0, Reason::HandoverAborted),
            "{kind:?}: the handover was aborted, not redone"
        );
        // It fell silent when it offered them, and the taker may have announced: it announces again.
        assert!(
            sim.nodes[0].announces.iter().any(|&at| at > t0),
            "{kind:?}: the giver announces again after the abort"
        );
        let gaps: Vec<_> = sim
            .address_gaps
            .iter()
            .filter(|(from, _)| *from >= t0)
            .collect();
        assert!(gaps.is_empty(), "{kind:?}: no holder during {gaps:?}");
        sim.assert_clean();
    }
}

fn has_reason(sim: &Sim, i: usize, reason: Reason) -> bool {
    sim.nodes[i]
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::StateChanged { reason: r, .. } if *r == reason))
}

fn election(node: &str, role: Role, epoch: u64) -> Election {
    let t = Timings {
        interval_ms: 200,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 3000,
    };
    Election::new(ElectionConfig::new("c", node, role, true, t, epoch), 0)
}

fn sent(actions: &[Action]) -> Option<Heartbeat> {
    actions.iter().rev().find_map(|a| match a {
        Action::SendHeartbeat(hb) => Some(hb.clone()),
        _ => None,
    })
}

/// Two elections wired by hand, a exchanging with b: returns b's answer to a's heartbeat.
fn deliver(to: &mut Election, hb: Heartbeat, now: u64) -> Vec<Action> {
    to.handle(Input::PeerHeartbeat(hb), now)
}

/// lb1 active, lb2 standby, each having heard the other's latest heartbeat (the pair at rest).
fn active_and_standby(b_make_before_break: bool) -> (Election, Election, u64) {
    let mut a = election("lb1", Role::Primary, 1);
    let mut b = election("lb2", Role::Secondary, 2);
    b.cfg.make_before_break = b_make_before_break;
    let mut now = 0;
    let mut ha = sent(&a.handle(Input::Tick, now)).expect("a sends");
    let mut hb = sent(&b.handle(Input::Tick, now)).expect("b sends");
    // Exchange (a heartbeat each way per ms, answers included) until a is active and both have heard the rest.
    for _ in 0..20 {
        now += 1;
        let mut actions = deliver(&mut b, ha.clone(), now);
        actions.extend(b.handle(Input::Tick, now));
        if let Some(h) = sent(&actions) {
            hb = h;
        }
        let mut actions = deliver(&mut a, hb.clone(), now);
        if actions.contains(&Action::AcquireVips) {
            actions.extend(a.handle(Input::VipsAcquired, now));
        }
        actions.extend(a.handle(Input::Tick, now));
        if let Some(h) = sent(&actions) {
            ha = h;
        }
    }
    assert_eq!(a.state(), NodeState::Active);
    assert_eq!(b.state(), NodeState::Standby);
    // Fresh heartbeats each way, each acknowledging the other's latest.
    let hb = b.build_heartbeat(now);
    deliver(&mut a, hb, now);
    let ha = a.build_heartbeat(now);
    deliver(&mut b, ha, now);
    let hb = b.build_heartbeat(now);
    deliver(&mut a, hb, now);
    (a, b, now)
}

#[test]
fn the_offer_is_made_holding_and_taken_at_once() {
    let (mut a, mut b, now) = active_and_standby(true);
    let actions = a.handle(Input::AdminRelease, now + 1);
    assert!(!actions.contains(&Action::ReleaseVips), "VIPs kept");
    assert_eq!(a.state(), NodeState::Releasing);
    let offer = sent(&actions).expect("offer sent at once");
    assert!(offer.holds_vips && offer.handover && offer.state == NodeState::Releasing);
    let answer = deliver(&mut b, offer, now + 2);
    assert!(answer.contains(&Action::AcquireVips), "taken at once");
    assert!(b.vip_op_is_handover(), "taken from a holder: it drains");
    let taking = sent(&answer).expect("answered at once");
    assert!(taking.holds_vips && taking.state == NodeState::Acquiring);
    // Acquiring is not enough: a keeps the VIPs until b is active (added and announced).
    assert!(!deliver(&mut a, taking, now + 3).contains(&Action::ReleaseVips));
    let active = sent(&b.handle(Input::VipsAcquired, now + 4)).expect("news");
    assert_eq!(b.state(), NodeState::Active);
    assert!(!deliver(&mut a, active, now + 5).contains(&Action::ReleaseVips));
    assert_eq!(a.next_timeout(), now + 5 + HANDOVER_GRACE_MS, "the grace");
    let actions = a.handle(Input::Tick, now + 5 + HANDOVER_GRACE_MS);
    assert!(actions.contains(&Action::ReleaseVips));
    assert!(a.vip_op_is_handover(), "given to a holder: it drains");
    a.handle(Input::VipsReleased, now + 8);
    assert_eq!(a.state(), NodeState::Standby);
}

#[test]
fn an_older_peer_declines_by_acknowledging_and_gets_the_classic_offer() {
    let (mut a, mut b, now) = active_and_standby(false);
    let actions = a.handle(Input::AdminRelease, now + 1);
    let offer = sent(&actions).expect("offer");
    assert!(offer.holds_vips && offer.handover);
    let answer = deliver(&mut b, offer, now + 2);
    assert!(
        !answer.contains(&Action::AcquireVips),
        "an older release ignores an offer from a holder"
    );
    let declined = sent(&answer).expect("it answers the change at once");
    assert_eq!(declined.state, NodeState::Standby);
    // The first refusal may be a peer of this release that had not seen its own latest status acknowledged: the
    // offer is made again at once, acknowledging it.
    let actions = deliver(&mut a, declined, now + 3);
    assert!(!actions.contains(&Action::ReleaseVips), "offered once more");
    let again = sent(&actions).expect("the repeated offer goes out at once");
    assert!(again.holds_vips && again.handover);
    assert!(!deliver(&mut b, again, now + 4).contains(&Action::AcquireVips));
    let declined = b.build_heartbeat(now + 5);
    let actions = deliver(&mut a, declined, now + 6);
    assert!(
        actions.contains(&Action::ReleaseVips),
        "refused twice: removed at once, break-before-make"
    );
    assert!(
        !a.vip_op_is_handover(),
        "nobody holds them: nothing to drain through"
    );
    let classic = sent(&a.handle(Input::VipsReleased, now + 7)).expect("classic offer");
    assert!(!classic.holds_vips && classic.handover && classic.state == NodeState::Standby);
    assert!(deliver(&mut b, classic, now + 8).contains(&Action::AcquireVips));
    assert!(!b.vip_op_is_handover(), "the giver holds nothing: no drain");
}

#[test]
fn a_takeover_from_a_dead_peer_drains_nothing() {
    let (_a, mut b, now) = active_and_standby(true);
    let t = b.cfg.timings;
    let actions = b.handle(Input::Tick, now + t.dead_ms + 1);
    assert!(actions.contains(&Action::AcquireVips), "peer dead: taken");
    assert!(!b.vip_op_is_handover(), "a dead peer cannot drain anything");
}

#[test]
fn a_new_peer_takes_a_classic_offer_from_an_older_giver() {
    let (mut a, mut b, now) = active_and_standby(true);
    a.cfg.make_before_break = false;
    let actions = a.handle(Input::AdminRelease, now + 1);
    assert!(
        actions.contains(&Action::ReleaseVips),
        "the older release removes first"
    );
    let releasing = sent(&actions).expect("news");
    assert!(releasing.holds_vips && !releasing.handover);
    assert!(!deliver(&mut b, releasing, now + 2).contains(&Action::AcquireVips));
    let classic = sent(&a.handle(Input::VipsReleased, now + 3)).expect("classic offer");
    assert!(deliver(&mut b, classic, now + 4).contains(&Action::AcquireVips));
}

#[test]
fn a_standby_never_takes_vips_from_an_active_peer_that_is_not_handing_over() {
    let (_a, mut b, now) = active_and_standby(true);
    let mut hb = election("lb1", Role::Primary, 1).build_heartbeat(now);
    hb.state = NodeState::Active;
    hb.holds_vips = true;
    hb.handover = true; // a handover flag without `releasing` is not an offer from a holder
    hb.ack_epoch = 2;
    hb.ack_seq = u64::MAX;
    assert!(!deliver(&mut b, hb, now + 1).contains(&Action::AcquireVips));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A crash of either node at any moment of a planned handover (before, during or after the overlap, process
    /// or host) leaves exactly one holder once the survivor has had its dead time; the overlap stays bounded and
    /// nothing else breaks the simulator's properties.
    #[test]
    fn a_crash_during_a_planned_handover_leaves_one_holder(
        kind in 0usize..4,
        interval in prop_oneof![Just(10u64), Just(50), Just(200)],
        delay in 0u64..4,
        vip in 1u64..4,
        victim in 0usize..2,
        process in any::<bool>(),
        at in 0u64..30,
        seed in any::<u64>(),
    ) {
        let kind = PLANNED[kind];
        let p = params(interval, delay, vip, seed);
        let giver = if kind == Planned::Failback { 1 } else { 0 };
        let mut sim = settled(p, kind, giver);
        let (giver, taker) = trigger(&mut sim, kind, giver);
        sim.run_for(at);
        let victim = if victim == 0 { giver } else { taker };
        if process { sim.kill_process(victim) } else { sim.crash(victim) }
        let t = sim.params.timings;
        sim.run_for(t.dead_ms + 3 * t.interval_ms + 20);
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        let survivor = 1 - victim;
        if kind == Planned::CleanStop && survivor == giver {
            // The stopping node exits whatever happens to the peer: nobody is left to hold the VIPs.
            prop_assert_eq!(sim.holders(), 0);
            sim.start(giver);
        } else {
            prop_assert_eq!(sim.holders(), 1, "{:?} {:?}", sim.nodes[0].state(), sim.nodes[1].state());
            prop_assert!(sim.nodes[survivor].is_active());
        }
        sim.start(victim);
        sim.run_for(t.init_dead_ms + 3 * t.interval_ms);
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        prop_assert_eq!(sim.holders(), 1);
        prop_assert_eq!(sim.active_count(), 1);
    }

    /// Planned handovers back and forth with random delays and VIP latencies, the nodes running this release or
    /// the one before in any mix: never a gap while both run this release, the overlap bounded, and never an
    /// overlap with a release before it.
    #[test]
    fn planned_handovers_in_any_mix_of_releases(
        legacy in (any::<bool>(), any::<bool>()),
        interval in prop_oneof![Just(10u64), Just(30), Just(200)],
        delay in 0u64..5,
        vip in 1u64..5,
        moves in proptest::collection::vec((0usize..3, 0usize..2), 1..8),
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(params(interval, delay, vip, seed));
        sim.legacy = [legacy.0, legacy.1];
        sim.crash(0);
        sim.crash(1);
        sim.start(0);
        sim.start(1);
        let t = sim.params.timings;
        sim.run_for(t.init_dead_ms + 3 * t.interval_ms);
        prop_assert_eq!(sim.active_count(), 1);
        for (what, node) in moves {
            let t0 = sim.now;
            match what {
                0 => sim.feed(node, Input::AdminTakeover),
                1 => sim.feed(node, Input::AdminRelease),
                _ => {
                    sim.stop(node);
                    sim.run_for(t.interval_ms * 3 + 20);
                    sim.start(node);
                }
            }
            sim.run_for(t.init_dead_ms + t.interval_ms * 3 + 20);
            prop_assert_eq!(sim.holders(), 1);
            if !legacy.0 && !legacy.1 {
                let gaps: Vec<_> = sim.address_gaps.iter().filter(|(from, _)| *from >= t0).collect();
                prop_assert!(gaps.is_empty(), "gaps {:?}", gaps);
            }
        }
        if legacy.0 || legacy.1 {
            prop_assert_eq!(sim.max_planned_overlap_ms, 0);
        }
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }
}
