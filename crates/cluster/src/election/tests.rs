use proptest::prelude::*;

use super::sim::{LinkMode, NAMES, Sim, SimParams};
use super::*;
use crate::wire::{Heartbeat, NodeState, PingState, Role};

fn started(params: SimParams) -> Sim {
    let mut sim = Sim::new(params);
    sim.run_for(100);
    sim
}

/// The shipped `[heartbeat]` defaults (the config crate's `HeartbeatConfig` owns them and their validation).
fn timings() -> Timings {
    Timings {
        interval_ms: 200,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 3000,
    }
}

fn has_event(sim: &Sim, i: usize, f: impl Fn(&Event) -> bool) -> bool {
    sim.nodes[i].events.iter().any(|(_, e)| f(e))
}

// ---- single node ----------------------------------------------------------------------------------------------

#[test]
fn standalone_node_becomes_active_on_its_own() {
    let cfg = ElectionConfig::new("c", "lb1", Role::Secondary, false, timings(), 1);
    let mut e = Election::new(cfg, 0);
    let actions = e.handle(Input::Tick, 0);
    assert!(actions.contains(&Action::AcquireVips));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SendHeartbeat(_))),
        "no peer, nothing to send"
    );
    e.handle(Input::VipsAcquired, 1);
    assert_eq!(e.state(), NodeState::Active);
    assert_eq!(e.next_timeout(), u64::MAX);
}

#[test]
fn init_waits_for_a_peer_never_heard() {
    let t = Timings {
        interval_ms: 100,
        dead_ms: 500,
        warn_ms: 300,
        init_dead_ms: 3000,
    };
    let cfg = ElectionConfig::new("c", "lb2", Role::Secondary, true, t, 1);
    let mut e = Election::new(cfg, 1000);
    let first = e.handle(Input::Tick, 1000);
    assert!(first.iter().any(
        |a| matches!(a, Action::SendHeartbeat(hb) if hb.state == NodeState::Init && hb.seq == 1)
    ));
    let mut now = 1000;
    while now < 3999 {
        now = e.next_timeout().clamp(now + 1, 3999);
        assert!(
            !e.handle(Input::Tick, now).contains(&Action::AcquireVips),
            "acquired at {now}"
        );
        assert_eq!(e.state(), NodeState::Init);
    }
    assert_eq!(e.next_timeout(), 4000);
    assert!(e.handle(Input::Tick, 4000).contains(&Action::AcquireVips));
    assert_eq!(e.state(), NodeState::Acquiring);
}

#[test]
fn heartbeats_follow_the_interval_and_changes_go_out_at_once() {
    let t = Timings {
        interval_ms: 200,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 3000,
    };
    let cfg = ElectionConfig::new("c", "lb1", Role::Primary, true, t, 7);
    let mut e = Election::new(cfg, 0);
    let sent = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::SendHeartbeat(_)))
            .count()
    };
    assert_eq!(sent(&e.handle(Input::Tick, 0)), 1);
    assert_eq!(sent(&e.handle(Input::Tick, 100)), 0);
    assert_eq!(e.next_timeout(), 200);
    assert_eq!(sent(&e.handle(Input::Tick, 200)), 1);
    // A ping change is news: sent at once.
    assert_eq!(
        sent(&e.handle(Input::PingResult { reachable: false }, 250)),
        1
    );
    assert_eq!(e.ping(), PingState::Unreachable);
}

// ---- live timings ---------------------------------------------------------------------------------------------

/// A node (lb1) that has heard its peer (lb2) at `heard_at`, with 100/1000/500/3000 ms timings.
fn node_hearing_peer(heard_at: u64) -> Election {
    let t = Timings {
        interval_ms: 100,
        dead_ms: 1000,
        warn_ms: 500,
        init_dead_ms: 3000,
    };
    let mut a = primary_lb1(t);
    let mut b = Election::new(
        ElectionConfig::new("c", "lb2", Role::Secondary, true, t, 2),
        0,
    );
    a.handle(Input::Tick, 0);
    let hb = b
        .handle(Input::Tick, heard_at)
        .into_iter()
        .find_map(|a| match a {
            Action::SendHeartbeat(hb) => Some(hb),
            _ => None,
        })
        .expect("the peer sends at start");
    a.handle(Input::PeerHeartbeat(hb), heard_at);
    assert!(a.peer_alive(heard_at));
    a
}

/// lb1, the primary of a pair, created at 0 with timings `t`.
fn primary_lb1(t: Timings) -> Election {
    Election::new(
        ElectionConfig::new("c", "lb1", Role::Primary, true, t, 1),
        0,
    )
}

fn set_timings(e: &mut Election, t: Timings, now: u64) -> Vec<Action> {
    e.handle(
        Input::SetTimings {
            timings: t,
            auto_failback: false,
        },
        now,
    )
}

fn peer_dead_event(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Event(Event::PeerDead { .. })))
}

#[test]
fn shorter_dead_time_restarts_the_peer_deadline_from_now() {
    let mut e = node_hearing_peer(0);
    // Heard 700 ms ago; the new dead time is 300 ms: the peer must not be declared dead at once.
    let short = Timings {
        interval_ms: 50,
        dead_ms: 300,
        warn_ms: 150,
        init_dead_ms: 600,
    };
    let actions = set_timings(&mut e, short, 700);
    assert!(!peer_dead_event(&actions));
    assert!(actions.contains(&Action::Event(Event::TimingsChanged {
        timings: short,
        auto_failback: false
    })));
    assert!(e.peer_alive(700) && e.peer_alive(999));
    assert_eq!(e.config().timings, short);
    // Still silent: dead one new dead time after the change.
    assert!(!peer_dead_event(&e.handle(Input::Tick, 999)));
    assert!(e.next_timeout() <= 1000);
    assert!(peer_dead_event(&e.handle(Input::Tick, 1000)));
    assert!(!e.peer_alive(1000));
}

/// The same for a peer heard only in a version this node cannot read: it is alive, so a shorter dead time counts
/// from the change, not from its last heartbeat.
#[test]
fn shorter_dead_time_restarts_an_incompatible_peers_deadline_from_now() {
    let t = timings();
    let mut e = primary_lb1(t);
    e.handle(Input::Tick, 0);
    e.handle(incompatible(2), 10);
    let short = Timings {
        interval_ms: 50,
        dead_ms: 300,
        warn_ms: 150,
        init_dead_ms: 600,
    };
    assert!(!peer_dead_event(&set_timings(&mut e, short, 700)));
    assert!(e.peer_alive(999) && e.peer_incompatible(999).is_some());
    assert!(!peer_dead_event(&e.handle(Input::Tick, 999)));
    assert!(peer_dead_event(&e.handle(Input::Tick, 1000)));
    assert!(!e.peer_alive(1000));
}

#[test]
fn longer_dead_time_does_not_revive_a_dead_peer() {
    let mut e = node_hearing_peer(0);
    assert!(peer_dead_event(&e.handle(Input::Tick, 1000)));
    let long = Timings {
        interval_ms: 100,
        dead_ms: 5000,
        warn_ms: 500,
        init_dead_ms: 6000,
    };
    let actions = set_timings(&mut e, long, 1100);
    assert!(
        !e.peer_alive(1100),
        "a peer given up stays given up until heard"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Event(Event::PeerUp { .. })))
    );
}

#[test]
fn longer_dead_time_gives_a_live_peer_the_new_time_from_now() {
    let mut e = node_hearing_peer(0);
    let long = Timings {
        interval_ms: 100,
        dead_ms: 2000,
        warn_ms: 1500,
        init_dead_ms: 6000,
    };
    set_timings(&mut e, long, 900);
    assert!(!peer_dead_event(&e.handle(Input::Tick, 2899)));
    assert!(e.peer_alive(2899));
    assert!(peer_dead_event(&e.handle(Input::Tick, 2900)));
}

#[test]
fn shorter_interval_is_used_from_the_next_send_at_the_latest() {
    let t = timings();
    let mut e = primary_lb1(t);
    e.handle(Input::Tick, 0);
    assert_eq!(e.next_timeout(), 200);
    let fast = Timings {
        interval_ms: 50,
        ..t
    };
    set_timings(&mut e, fast, 10);
    assert_eq!(
        e.next_timeout(),
        60,
        "not held back by the send planned on the old interval"
    );
    let sent = e.handle(Input::Tick, 60);
    assert!(sent.iter().any(|a| matches!(a, Action::SendHeartbeat(_))));
    assert_eq!(e.next_timeout(), 110);
    // A longer interval takes over after the send already planned.
    let slow = Timings {
        interval_ms: 300,
        ..t
    };
    set_timings(&mut e, slow, 70);
    assert_eq!(e.next_timeout(), 110);
    e.handle(Input::Tick, 110);
    assert_eq!(e.next_timeout(), 410);
}

#[test]
fn start_up_wait_restarts_with_new_timings() {
    let t = timings();
    let mut e = Election::new(
        ElectionConfig::new("c", "lb2", Role::Secondary, true, t, 1),
        0,
    );
    e.handle(Input::Tick, 0);
    let short = Timings {
        init_dead_ms: 1500,
        ..t
    };
    // 2500 ms into a 3000 ms wait, the new wait is 1500 ms: it runs from now, not from the start.
    let actions = set_timings(&mut e, short, 2500);
    assert!(!actions.contains(&Action::AcquireVips));
    assert_eq!(e.state(), NodeState::Init);
    assert!(!e.handle(Input::Tick, 3999).contains(&Action::AcquireVips));
    assert!(e.handle(Input::Tick, 4000).contains(&Action::AcquireVips));
}

#[test]
fn unusable_timings_are_refused_and_change_nothing() {
    let t = timings();
    let mut e = primary_lb1(t);
    for bad in [
        Timings {
            interval_ms: 0,
            ..t
        },
        Timings { dead_ms: 200, ..t },
    ] {
        let actions = set_timings(&mut e, bad, 5);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event(Event::Refused {
                command: "set timings",
                ..
            })
        )));
        assert_eq!(e.config().timings, t);
    }
}

#[test]
fn same_timings_move_no_timer() {
    let mut e = node_hearing_peer(0);
    let t = e.config().timings;
    let actions = set_timings(&mut e, t, 900);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Event(Event::TimingsChanged { .. })))
    );
    assert!(
        peer_dead_event(&e.handle(Input::Tick, 1000)),
        "deadline unchanged"
    );
}

#[test]
fn both_nodes_switch_timings_mid_run_without_a_role_change() {
    for (from, to) in [(200, 50), (50, 200), (20, 7)] {
        let mut p = SimParams::new(from);
        p.max_delay_ms = 2;
        let mut sim = started(p);
        sim.run_for(10 * from);
        assert!(sim.nodes[0].is_active() && sim.nodes[1].state() == Some(NodeState::Standby));
        let since = sim.now;
        let new = SimParams::new(to).timings;
        // The nodes reload at different moments (config push takes a little while).
        sim.set_timings(1, new, false);
        sim.run_for(from / 2 + 3);
        sim.set_timings(0, new, false);
        sim.run_for(20 * from.max(to));
        assert!(sim.nodes[0].is_active(), "{from} -> {to}");
        assert_eq!(
            sim.nodes[1].state(),
            Some(NodeState::Standby),
            "{from} -> {to}"
        );
        assert_eq!(sim.active_exits, [0, 0], "{from} -> {to}");
        for i in 0..2 {
            assert!(
                sim.first_event(i, since, |e| matches!(
                    e,
                    Event::StateChanged { .. } | Event::PeerDead { .. } | Event::SplitBrain { .. }
                ))
                .is_none(),
                "{from} -> {to}: {:?}",
                sim.nodes[i].events
            );
        }
        // The new cadence is in force on both: heartbeats per second follow the new interval.
        let sent = sim.nodes[0].heartbeats_sent;
        sim.run_for(1000);
        let per_second = sim.nodes[0].heartbeats_sent - sent;
        assert!(
            per_second.abs_diff(1000 / to) <= 2,
            "{from} -> {to}: {per_second}/s"
        );
        sim.assert_clean();
    }
}

#[test]
fn auto_failback_turned_on_live_hands_back_to_the_primary() {
    let mut sim = started(SimParams::new(20));
    sim.crash(0);
    sim.run_for(200);
    sim.start(0);
    sim.feed(0, Input::CaughtUp(true));
    sim.run_for(1000);
    assert!(sim.nodes[1].is_active(), "no failback configured");
    let t = sim.params.timings;
    sim.set_timings(1, t, true);
    sim.set_timings(0, t, true);
    sim.run_for(100);
    assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
    // And off again: a later return of the primary stays standby.
    sim.set_timings(0, t, false);
    sim.set_timings(1, t, false);
    sim.crash(0);
    sim.run_for(200);
    sim.start(0);
    sim.feed(0, Input::CaughtUp(true));
    sim.run_for(1000);
    assert!(sim.nodes[1].is_active());
    sim.assert_clean();
}

// ---- the pair -------------------------------------------------------------------------------------------------

#[test]
fn pair_starts_with_the_primary_active() {
    let sim = started(SimParams::new(20));
    assert_eq!(sim.nodes[0].state(), Some(NodeState::Active));
    assert_eq!(sim.nodes[1].state(), Some(NodeState::Standby));
    // Both started at 0 and heard each other at once: no init_dead wait, a claim round trip only.
    assert!(sim.became_active(0, 0).unwrap() < 10);
    assert_eq!(sim.holders(), 1);
    sim.assert_clean();
}

#[test]
fn equal_roles_break_the_tie_by_name() {
    let mut p = SimParams::new(20);
    p.roles = [Role::Secondary, Role::Secondary];
    let sim = started(p);
    assert!(sim.nodes[0].is_active(), "lb1 < lb2");
    let mut p = SimParams::new(20);
    p.roles = [Role::Secondary, Role::Primary];
    let sim = started(p);
    assert!(
        sim.nodes[1].is_active(),
        "the primary wins whatever its name"
    );
    sim.assert_clean();
}

#[test]
fn crashed_active_is_replaced_after_dead_ms() {
    for interval in [10, 50, 200] {
        let mut p = SimParams::new(interval);
        p.max_delay_ms = interval / 5;
        let mut sim = started(p.clone());
        sim.run_for(interval * 3 + 7);
        let crash_at = sim.now;
        sim.crash(0);
        sim.run_for(p.timings.dead_ms + p.timings.interval_ms + 10);
        let took = sim.became_active(1, crash_at).expect("secondary took over") - crash_at;
        assert!(
            took <= p.timings.dead_ms + p.vip_latency_ms + 1,
            "interval {interval}: {took} ms"
        );
        assert!(
            took >= p.timings.dead_ms - p.timings.interval_ms - p.max_delay_ms,
            "not before dead_ms: {took}"
        );
        assert!(has_event(&sim, 1, |e| matches!(e, Event::PeerDead { .. })));
        sim.assert_clean();
    }
}

#[test]
fn clean_stop_hands_over_in_a_few_ms_at_any_interval() {
    for interval in [10, 200, 1000] {
        let mut p = SimParams::new(interval);
        p.max_delay_ms = 1;
        let mut sim = started(p.clone());
        sim.run_for(interval * 2 + 3);
        let stop_at = sim.now;
        sim.stop(0);
        sim.run_for(20);
        let took = sim.became_active(1, stop_at).expect("secondary took over") - stop_at;
        // release (1 ms) + datagram (<= 1 ms) + acquire (1 ms)
        assert!(took <= 3, "interval {interval}: {took} ms");
        let released = sim.first_event(0, stop_at, |e| {
            matches!(
                e,
                Event::StateChanged {
                    to: NodeState::Stopped,
                    ..
                }
            )
        });
        // Make-before-break: the VIPs leave once the peer holds them (its news, the grace, the removal).
        let released_by = stop_at + took + p.max_delay_ms + HANDOVER_GRACE_MS + p.vip_latency_ms;
        assert!(released.unwrap() <= released_by);
        sim.run_for(interval * 3);
        assert!(!sim.nodes[0].up(), "stopped node exited");
        assert!(sim.nodes[1].is_active());
        sim.assert_clean(); // includes: never both holding while hearing each other
    }
}

// ---- clean stop: the linger and the resends ---------------------------------------------------------------------

/// The peer's heartbeat as it would arrive now (the election does not check sequence numbers; the replay guard is
/// the driver's).
fn peer_heartbeat(state: NodeState, holds_vips: bool) -> Heartbeat {
    let t = timings();
    let mut b = Election::new(
        ElectionConfig::new("c", "lb2", Role::Secondary, true, t, 2),
        0,
    );
    let mut hb = b
        .handle(Input::Tick, 0)
        .into_iter()
        .find_map(|a| match a {
            Action::SendHeartbeat(hb) => Some(hb),
            _ => None,
        })
        .expect("the peer sends at start");
    hb.state = state;
    hb.holds_vips = holds_vips;
    hb
}

fn stopped_sends(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::SendHeartbeat(hb) if hb.state == NodeState::Stopped))
        .count()
}

#[test]
fn stopped_node_repeats_its_heartbeat_every_5_ms_until_the_linger_ends() {
    let cfg = ElectionConfig::new("c", "lb1", Role::Primary, true, timings(), 1);
    assert_eq!(cfg.shutdown_linger_ms, 1000, "one dead time, at most 1 s");
    let mut e = Election::new(cfg, 0);
    e.handle(Input::Tick, 0);
    let standby = peer_heartbeat(NodeState::Standby, false);
    e.handle(Input::PeerHeartbeat(standby.clone()), 10);
    let actions = e.handle(Input::Shutdown, 100);
    assert_eq!(e.state(), NodeState::Stopped);
    // The news at once, and its first repeat right behind it.
    assert_eq!(stopped_sends(&actions), 2);
    assert!(!actions.contains(&Action::Stopped));
    assert_eq!(e.next_timeout(), 105);
    let mut sends = 0;
    let mut now = 100;
    let mut stopped_at = None;
    while stopped_at.is_none() && now < 5000 {
        now = e.next_timeout().max(now + 1);
        if now % 400 == 0 {
            // The peer is still there (standing by, not taking over): no confirmation, no reason to stop early.
            e.handle(Input::PeerHeartbeat(standby.clone()), now);
        }
        let actions = e.handle(Input::Tick, now);
        sends += stopped_sends(&actions);
        if actions.contains(&Action::Stopped) {
            stopped_at = Some(now);
        }
    }
    assert_eq!(stopped_at, Some(1100), "linger is 1000 ms from the stop");
    // One repeat every 5 ms (plus the keepalives that fall on the same steps).
    assert!((199..=210).contains(&sends), "{sends} heartbeats repeated");
    assert!(e.next_timeout() >= 1200, "only the keepalive is left");
    assert!(
        !e.handle(Input::Tick, 1200).contains(&Action::Stopped),
        "given once"
    );
}

#[test]
fn stopped_node_ends_its_linger_once_the_peer_confirms() {
    let mut e = Election::new(
        ElectionConfig::new("c", "lb1", Role::Primary, true, timings(), 1),
        0,
    );
    e.handle(Input::Tick, 0);
    e.handle(
        Input::PeerHeartbeat(peer_heartbeat(NodeState::Standby, false)),
        10,
    );
    e.handle(Input::Shutdown, 100);
    assert_eq!(stopped_sends(&e.handle(Input::Tick, 105)), 1);
    // The peer holding the VIPs is the confirmation (its news is answered once, as always; no repeat follows).
    let actions = e.handle(
        Input::PeerHeartbeat(peer_heartbeat(NodeState::Acquiring, true)),
        107,
    );
    assert!(actions.contains(&Action::Stopped));
    assert_eq!(stopped_sends(&actions), 1);
    assert!(e.next_timeout() >= 300, "no repeat scheduled");
}

#[test]
fn stopped_node_without_anyone_to_confirm_ends_at_once_or_when_the_peer_is_dead() {
    // No peer configured.
    let mut alone = Election::new(
        ElectionConfig::new("c", "lb1", Role::Primary, false, timings(), 1),
        0,
    );
    alone.handle(Input::Tick, 0);
    alone.handle(Input::VipsAcquired, 1);
    assert!(!alone.handle(Input::Shutdown, 5).contains(&Action::Stopped));
    assert!(
        alone
            .handle(Input::VipsReleased, 6)
            .contains(&Action::Stopped)
    );
    // A peer configured and never heard.
    let mut unheard = Election::new(
        ElectionConfig::new("c", "lb1", Role::Primary, true, timings(), 1),
        0,
    );
    unheard.handle(Input::Tick, 0);
    assert!(
        unheard
            .handle(Input::Shutdown, 5)
            .contains(&Action::Stopped)
    );
    // A peer heard at 10 that falls silent: the linger ends when it is declared dead (1010), before 1 s of linger.
    let mut e = Election::new(
        ElectionConfig::new("c", "lb1", Role::Primary, true, timings(), 1),
        0,
    );
    e.handle(Input::Tick, 0);
    e.handle(
        Input::PeerHeartbeat(peer_heartbeat(NodeState::Standby, false)),
        10,
    );
    e.handle(Input::Shutdown, 500);
    let mut now = 500;
    while now < 1010 {
        now = e.next_timeout().max(now + 1);
        let actions = e.handle(Input::Tick, now);
        assert_eq!(actions.contains(&Action::Stopped), now >= 1010, "at {now}");
    }
}

#[test]
fn clean_stop_on_a_cut_link_lingers_and_resends_then_exits() {
    let mut p = SimParams::new(200);
    p.max_delay_ms = 1;
    let mut sim = started(p);
    sim.run_for(500);
    assert!(sim.nodes[0].is_active());
    sim.set_mode(LinkMode::Cut);
    let cut_at = sim.now;
    sim.stop(0);
    sim.run_for(2000);
    // The peer, last heard within an interval before the cut, is dead 1000 ms after that: the linger (1000 ms from
    // the stop, VIP release included) ends no later.
    let stopped = sim.nodes[0].stopped_at[0];
    assert!(
        stopped > cut_at + 700 && stopped <= cut_at + 1002,
        "{}",
        stopped - cut_at
    );
    let resent = &sim.nodes[0].stopped_heartbeats;
    let gaps_ok = resent.windows(2).all(|w| w[1].0 - w[0].0 <= STOP_RESEND_MS);
    assert!(gaps_ok, "a repeat at least every 5 ms: {resent:?}");
    assert!(resent.len() as u64 >= (stopped - resent[0].0) / STOP_RESEND_MS);
    assert!(!sim.nodes[0].up());
}

#[test]
fn clean_stop_on_a_healthy_link_exits_as_soon_as_the_peer_holds_the_vips() {
    for interval in [10, 200, 1000] {
        let mut p = SimParams::new(interval);
        p.max_delay_ms = 1;
        let mut sim = started(p);
        sim.run_for(interval * 2 + 3);
        let stop_at = sim.now;
        sim.stop(0);
        sim.run_for(interval * 3);
        let active = sim.became_active(1, stop_at).expect("secondary took over");
        let stopped = sim.nodes[0].stopped_at[0];
        // The peer holds the VIPs from its acquire on; its next heartbeat says so (at once, it is news), and the
        // stopping node removes its own after the grace (make-before-break).
        assert!(
            stopped <= active + 2 + HANDOVER_GRACE_MS + 1,
            "interval {interval}: exit {stopped}, peer active {active}"
        );
        assert!(!sim.nodes[0].up());
        sim.assert_clean();
    }
}

#[test]
fn stopping_the_standby_changes_nothing() {
    let mut sim = started(SimParams::new(20));
    sim.stop(1);
    sim.run_for(200);
    assert!(sim.nodes[0].is_active());
    assert_eq!(sim.active_exits[0], 0);
    sim.assert_clean();
}

#[test]
fn admin_release_and_takeover_move_the_role_cleanly() {
    let mut p = SimParams::new(200);
    p.max_delay_ms = 1;
    let mut sim = started(p);
    let t0 = sim.now;
    sim.feed(0, Input::AdminRelease);
    sim.run_for(10);
    assert!(sim.nodes[1].is_active(), "release hands over at once");
    assert!(sim.became_active(1, t0).unwrap() - t0 <= 3);
    assert!(!sim.nodes[0].holds());
    // auto_failback is off and the primary released on purpose: it stays standby.
    sim.run_for(2000);
    assert!(sim.nodes[1].is_active());
    let t1 = sim.now;
    sim.feed(0, Input::AdminTakeover);
    sim.run_for(10);
    assert!(
        sim.nodes[0].is_active(),
        "takeover pulls the role back at once"
    );
    assert!(sim.became_active(0, t1).unwrap() - t1 <= 5);
    sim.run_for(2000);
    assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
    sim.assert_clean();
}

#[test]
fn the_peer_state_is_dated_from_its_change_not_from_each_heartbeat() {
    let mut sim = started(SimParams::new(200));
    sim.run_for(3000);
    let active_at = sim.became_active(0, 0).expect("lb1 active");
    let view = sim.nodes[1].e().peer().expect("lb1 heard").clone();
    assert_eq!(view.heartbeat.state, NodeState::Active);
    assert!(
        view.state_since_ms >= active_at && view.state_since_ms <= active_at + 10,
        "lb1 active at {active_at}, dated {}",
        view.state_since_ms
    );
    assert!(view.last_heard_ms > view.state_since_ms + 2000);
    let t0 = sim.now;
    sim.feed(0, Input::AdminRelease);
    sim.run_for(1000);
    let view = sim.nodes[1].e().peer().expect("lb1 heard");
    assert_eq!(view.heartbeat.state, NodeState::Standby);
    assert!(
        view.state_since_ms >= t0 && view.state_since_ms <= t0 + 10,
        "released at {t0}, dated {}",
        view.state_since_ms
    );
}

#[test]
fn release_is_refused_without_a_ready_peer() {
    let mut sim = started(SimParams::new(20));
    sim.crash(1);
    sim.run_for(200);
    sim.feed(0, Input::AdminRelease);
    sim.run_for(10);
    assert!(sim.nodes[0].is_active());
    assert!(has_event(&sim, 0, |e| matches!(
        e,
        Event::Refused {
            command: "release",
            ..
        }
    )));
    // Not active: release refused too.
    sim.feed(1, Input::AdminRelease);
    sim.assert_clean();
}

#[test]
fn takeover_on_the_active_node_re_announces() {
    let mut sim = started(SimParams::new(20));
    let actions = sim.nodes[0]
        .election
        .as_mut()
        .unwrap()
        .handle(Input::AdminTakeover, sim.now);
    assert!(actions.contains(&Action::AnnounceVips));
}

#[test]
fn split_brain_is_resolved_within_one_heartbeat_primary_wins() {
    for interval in [10, 200] {
        let mut p = SimParams::new(interval);
        p.max_delay_ms = interval / 10;
        let mut sim = started(p.clone());
        sim.set_mode(LinkMode::Cut);
        sim.run_for(p.timings.dead_ms * 3);
        assert_eq!(sim.active_count(), 2, "partition: both active");
        let healed = sim.now;
        sim.set_mode(LinkMode::Healthy);
        sim.run_for(p.settle_ms() + 1);
        assert_eq!(sim.holders(), 1, "interval {interval}");
        assert!(sim.nodes[0].is_active(), "primary wins");
        assert!(
            sim.nodes[0].announces.iter().any(|t| *t >= healed),
            "the winner announces again"
        );
        let episodes: u64 = (0..2).map(|i| sim.nodes[i].e().stats().split_brains).sum();
        assert!(episodes >= 1, "split brain detected and counted");
        sim.run_for(1000);
        assert_eq!(sim.holders(), 1);
        sim.assert_clean();
    }
}

#[test]
fn split_brain_winner_announces_even_if_the_loser_dropped_the_vips_first() {
    // With the loser's "releasing" heartbeat reordered behind its "standby" one, the winner never sees two holders;
    // it still announces because the peer came back after being declared dead.
    let mut sim = started(SimParams::new(20));
    sim.set_mode(LinkMode::Cut);
    sim.run_for(300);
    let healed = sim.now;
    sim.set_mode(LinkMode::Healthy);
    sim.run_for(100);
    assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
    let announces = sim.nodes[0]
        .announces
        .iter()
        .filter(|t| **t >= healed)
        .count();
    assert!((1..=2).contains(&announces), "{announces}");
    sim.assert_clean();
}

#[test]
fn warn_time_is_logged_before_dead_time() {
    let mut sim = started(SimParams::new(20));
    sim.set_mode(LinkMode::Cut);
    let cut = sim.now;
    sim.run_for(150);
    let warned = sim
        .first_event(1, cut, |e| matches!(e, Event::PeerSilent { .. }))
        .unwrap();
    let dead = sim
        .first_event(1, cut, |e| matches!(e, Event::PeerDead { .. }))
        .unwrap();
    assert!(warned < dead);
    assert!(
        warned - cut <= 60 + 1 && warned - cut >= 40,
        "{}",
        warned - cut
    );
    assert_eq!(sim.nodes[1].e().stats().warn_time_exceeded, 1);
}

#[test]
fn returning_primary_does_not_take_over_without_auto_failback() {
    let mut sim = started(SimParams::new(20));
    sim.crash(0);
    sim.run_for(200);
    assert!(sim.nodes[1].is_active());
    sim.start(0);
    sim.feed(0, Input::CaughtUp(true));
    sim.run_for(2000);
    assert!(sim.nodes[1].is_active());
    assert_eq!(sim.nodes[0].state(), Some(NodeState::Standby));
    assert_eq!(sim.active_exits[1], 0);
    sim.assert_clean();
}

#[test]
fn auto_failback_waits_for_caught_up_then_hands_back_cleanly() {
    let mut p = SimParams::new(200);
    p.auto_failback = true;
    p.max_delay_ms = 1;
    let mut sim = started(p);
    sim.crash(0);
    sim.run_for(1300);
    assert!(sim.nodes[1].is_active());
    sim.start(0);
    sim.run_for(3000);
    assert!(sim.nodes[1].is_active(), "not caught up yet: no failback");
    let t = sim.now;
    sim.feed(0, Input::CaughtUp(true));
    sim.run_for(20);
    assert!(sim.nodes[0].is_active(), "failback at once once caught up");
    assert!(sim.became_active(0, t).unwrap() - t <= 5);
    assert!(has_event(&sim, 0, |e| matches!(
        e,
        Event::TakeoverRequested { failback: true }
    )));
    sim.run_for(3000);
    assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
    sim.assert_clean();
}

#[test]
fn admin_release_on_a_failback_primary_does_not_bounce_back() {
    let mut p = SimParams::new(20);
    p.auto_failback = true;
    let mut sim = started(p);
    sim.feed(0, Input::CaughtUp(true));
    sim.run_for(50);
    sim.feed(0, Input::AdminRelease);
    sim.run_for(1000);
    assert!(sim.nodes[1].is_active());
    assert_eq!(sim.active_exits[1], 0);
    sim.assert_clean();
}

#[test]
fn admin_takeover_by_the_secondary_is_not_undone_by_failback() {
    let mut p = SimParams::new(20);
    p.auto_failback = true;
    let mut sim = started(p);
    sim.feed(0, Input::CaughtUp(true));
    sim.feed(1, Input::AdminTakeover);
    sim.run_for(1000);
    assert!(sim.nodes[1].is_active());
    assert_eq!(sim.active_exits[1], 0);
    sim.assert_clean();
}

#[test]
fn standby_without_ping_nodes_does_not_take_over_from_a_peer_it_hears() {
    let mut p = SimParams::new(20);
    p.ping_configured = true;
    let mut sim = Sim::new(p);
    // The primary cannot reach its ping nodes from the start: the secondary becomes active instead.
    sim.feed(0, Input::PingResult { reachable: false });
    sim.run_for(500);
    assert!(sim.nodes[1].is_active());
    assert!(!sim.nodes[0].holds());
    sim.assert_clean();
}

#[test]
fn active_without_ping_nodes_hands_over_to_a_peer_that_has_them() {
    let mut p = SimParams::new(200);
    p.ping_configured = true;
    p.max_delay_ms = 1;
    let mut sim = started(p);
    // The standby loses its ping nodes: nothing moves.
    sim.feed(1, Input::PingResult { reachable: false });
    sim.run_for(2000);
    assert!(sim.nodes[0].is_active());
    sim.feed(1, Input::PingResult { reachable: true });
    let t = sim.now;
    sim.feed(0, Input::PingResult { reachable: false });
    sim.run_for(10);
    assert!(sim.nodes[1].is_active(), "steps down with a clean handover");
    assert!(sim.became_active(1, t).unwrap() - t <= 4);
    // Both unreachable: no reason to move back.
    sim.feed(1, Input::PingResult { reachable: false });
    sim.run_for(2000);
    assert!(sim.nodes[1].is_active());
    assert_eq!(sim.active_exits[1], 0);
    // Ping back on the primary, auto_failback off: stays.
    sim.feed(0, Input::PingResult { reachable: true });
    sim.run_for(2000);
    // Now the active (lb2) cannot reach, lb1 can: lb2 steps down.
    assert!(sim.nodes[0].is_active());
    sim.assert_clean();
}

#[test]
fn takeover_refused_when_this_node_cannot_reach_ping_nodes() {
    let mut p = SimParams::new(20);
    p.ping_configured = true;
    let mut sim = started(p);
    sim.feed(1, Input::PingResult { reachable: false });
    sim.run_for(50);
    sim.feed(1, Input::AdminTakeover);
    sim.run_for(200);
    assert!(sim.nodes[0].is_active());
    assert!(has_event(&sim, 1, |e| matches!(
        e,
        Event::Refused {
            command: "takeover",
            ..
        }
    )));
}

#[test]
fn isolated_standby_still_takes_over_from_a_dead_peer() {
    let mut p = SimParams::new(20);
    p.ping_configured = true;
    let mut sim = started(p);
    sim.feed(1, Input::PingResult { reachable: false });
    sim.crash(0);
    sim.run_for(200);
    assert!(sim.nodes[1].is_active(), "a dead peer serves nobody");
}

#[test]
fn vip_failure_is_a_visible_fault_and_the_peer_takes_over() {
    let mut sim = Sim::new(SimParams::new(20));
    sim.nodes[0].fail_acquires = 1;
    sim.run_for(30);
    assert!(has_event(&sim, 0, |e| matches!(
        e,
        Event::StateChanged {
            to: NodeState::Fault,
            ..
        }
    )));
    sim.run_for(100);
    assert!(
        sim.nodes[1].is_active(),
        "the peer takes over from a node in fault"
    );
    assert!(!sim.nodes[0].is_active());
    assert!(
        sim.nodes[0].e().fault_reason().is_some()
            || sim.nodes[0].state() == Some(NodeState::Standby)
    );
    // After the retry delay the faulty node stands by (the peer is active).
    sim.run_for(2000);
    assert_eq!(sim.nodes[0].state(), Some(NodeState::Standby));
    assert!(sim.nodes[1].is_active());
    sim.assert_clean();
}

#[test]
fn standalone_fault_retries() {
    let cfg = ElectionConfig::new("c", "lb1", Role::Primary, false, timings(), 1);
    let mut e = Election::new(cfg, 0);
    e.handle(Input::Tick, 0);
    e.handle(
        Input::VipFailure {
            op: VipOp::Acquire,
            error: "no such device".into(),
        },
        1,
    );
    assert_eq!(e.state(), NodeState::Fault);
    assert_eq!(e.fault_reason(), Some("acquire failed: no such device"));
    assert!(e.holds_vips(), "a partial add may have left addresses");
    e.handle(Input::VipsReleased, 2);
    assert!(!e.holds_vips());
    assert_eq!(e.next_timeout(), 1 + 1000);
    let actions = e.handle(Input::Tick, 1001);
    assert!(
        actions.contains(&Action::AcquireVips),
        "retries: {actions:?}"
    );
}

#[test]
fn standby_restarting_repeatedly_never_makes_the_active_flap() {
    for roles in [
        [Role::Primary, Role::Secondary],
        [Role::Secondary, Role::Primary],
    ] {
        let mut p = SimParams::new(20);
        p.roles = roles;
        p.max_delay_ms = 3;
        let mut sim = Sim::new(p);
        sim.run_for(100);
        let active = if sim.nodes[0].is_active() { 0 } else { 1 };
        let standby = 1 - active;
        if roles[active] == Role::Secondary {
            unreachable!("the primary starts active");
        }
        // Make the secondary the active one when it is not, so both role layouts are covered.
        let (active, standby) = if roles[0] == Role::Secondary {
            (active, standby)
        } else {
            sim.feed(active, Input::AdminRelease);
            sim.run_for(50);
            (standby, active)
        };
        assert!(sim.nodes[active].is_active());
        let exits = sim.active_exits[active];
        for round in 0..20 {
            if round % 2 == 0 {
                sim.crash(standby);
            } else {
                sim.stop(standby);
            }
            sim.run_for(30 + round * 7);
            sim.start(standby);
            sim.feed(standby, Input::CaughtUp(true));
            sim.run_for(150 + round * 13);
        }
        assert_eq!(
            sim.active_exits[active], exits,
            "the active node never left active"
        );
        assert!(sim.nodes[active].is_active());
        assert_eq!(sim.nodes[active].e().stats().split_brains, 0);
        sim.assert_clean();
    }
}

#[test]
fn replayed_heartbeats_do_not_move_anything() {
    // A recorded "stopped, please take over" heartbeat replayed later is refused by the guard.
    let codec = crate::wire::HeartbeatCodec::new("openstack", &crate::wire::test_secret(b"k"));
    let mut guard = crate::wire::ReplayGuard::new();
    let t = timings();
    let mut a = Election::new(
        ElectionConfig::new("openstack", "lb1", Role::Primary, true, t, 10),
        0,
    );
    let mut hbs = Vec::new();
    for now in [0, 200, 400] {
        for action in a.handle(Input::Tick, now) {
            if let Action::SendHeartbeat(hb) = action {
                hbs.push(codec.encode(&hb).unwrap());
            }
        }
    }
    for datagram in &hbs {
        assert!(guard.check(&codec.decode(datagram).unwrap()).is_ok());
    }
    for datagram in &hbs {
        assert_eq!(
            guard.check(&codec.decode(datagram).unwrap()),
            Err(crate::wire::Reject::Replay)
        );
    }
}

// ---- rolling upgrades: a peer in a wire version this node cannot read ------------------------------------------

fn incompatible(version: u16) -> Input {
    Input::PeerIncompatible(crate::wire::IncompatibleHeartbeat {
        version,
        node: "lb2".into(),
        role: Some(Role::Secondary),
        boot_epoch: 2,
        seq: 1,
        holds_vips: false,
    })
}

fn acquires(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::AcquireVips))
}

fn refused(actions: &[Action], what: &str) -> bool {
    actions.iter().any(|a| {
        matches!(a, Action::Event(Event::Refused { command, reason }) if *command == what && reason.contains("wire version"))
    })
}

/// A standby whose active peer is upgraded and now speaks only a version it cannot read never takes over because
/// of it, however long that lasts; the peer is alive; admin moves are refused with the reason; once the peer falls
/// silent, the ordinary dead time applies.
#[test]
fn an_incompatible_peer_is_alive_and_never_taken_over_from() {
    let t = timings();
    let mut e = primary_lb1(t);
    e.handle(Input::Tick, 0);
    e.handle(
        Input::PeerHeartbeat(peer_heartbeat(NodeState::Active, true)),
        10,
    );
    assert_eq!(e.state(), NodeState::Standby);
    let first = e.handle(incompatible(2), 20);
    assert!(
        first
            .iter()
            .any(|a| matches!(a, Action::Event(Event::PeerIncompatible { version: 2, .. })))
    );
    let mut now = 20;
    while now < 20 * t.dead_ms {
        now += t.interval_ms;
        let out = e.handle(incompatible(2), now);
        assert!(!acquires(&out), "acquired at {now}");
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::Event(Event::PeerIncompatible { .. }))),
            "reported once"
        );
        assert!(e.peer_alive(now));
        assert_eq!(e.peer_incompatible(now).map(|p| p.version), Some(2));
        assert!(e.peer().is_none(), "its last readable state is not trusted");
    }
    assert_eq!(e.state(), NodeState::Standby);
    assert!(refused(&e.handle(Input::AdminTakeover, now), "takeover"));
    assert_eq!(e.state(), NodeState::Standby);
    // Silence: dead after dead_ms, like any peer.
    let out = e.handle(Input::Tick, now + t.dead_ms - 1);
    assert!(!acquires(&out));
    let out = e.handle(Input::Tick, now + t.dead_ms);
    assert!(acquires(&out));
    assert!(e.peer_incompatible(now + t.dead_ms).is_none());
}

/// At start-up an incompatible peer counts as heard: the node stands by instead of taking over after
/// `init_dead_ms`; the active node keeps the VIPs and refuses to release them blind; a readable heartbeat ends it.
#[test]
fn incompatible_at_start_up_and_while_active() {
    let t = timings();
    let mut e = primary_lb1(t);
    let mut now = 0;
    while now < 3 * t.init_dead_ms {
        assert!(!acquires(&e.handle(incompatible(7), now)));
        now += t.interval_ms;
    }
    assert_eq!(e.state(), NodeState::Standby);
    // Another node, active alone, then the peer comes up in a newer release.
    let mut a = primary_lb1(t);
    a.handle(Input::Tick, t.init_dead_ms);
    a.handle(Input::VipsAcquired, t.init_dead_ms + 1);
    assert_eq!(a.state(), NodeState::Active);
    let mut now = t.init_dead_ms + 10;
    for _ in 0..50 {
        let out = a.handle(incompatible(2), now);
        assert!(!out.iter().any(|x| matches!(x, Action::ReleaseVips)));
        now += t.interval_ms;
    }
    assert_eq!(a.state(), NodeState::Active);
    assert!(refused(&a.handle(Input::AdminRelease, now), "release"));
    assert_eq!(a.state(), NodeState::Active);
    // The newer peer came down to our version: readable again, a normal peer.
    let out = a.handle(
        Input::PeerHeartbeat(peer_heartbeat(NodeState::Standby, false)),
        now + 1,
    );
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::Event(Event::PeerUp { .. })))
    );
    assert!(a.peer_incompatible(now + 1).is_none());
    assert!(a.peer().is_some());
}

/// Both nodes hold the VIPs (they were cut apart) and cannot read each other: the split brain is resolved on the
/// frozen envelope (role, name, epoch) by the same rule as always. The secondary drops the VIPs, the primary keeps
/// them and announces once the loser no longer holds them.
#[test]
fn a_split_brain_with_an_unreadable_peer_is_resolved_by_the_envelope() {
    let t = timings();
    let active = |role: Role, name: &str| {
        let mut e = Election::new(ElectionConfig::new("c", name, role, true, t, 5), 0);
        e.handle(Input::Tick, t.init_dead_ms);
        e.handle(Input::VipsAcquired, t.init_dead_ms + 1);
        assert_eq!(e.state(), NodeState::Active);
        e
    };
    let holding = |role: Role, holds_vips: bool| {
        Input::PeerIncompatible(crate::wire::IncompatibleHeartbeat {
            version: 9,
            node: "lb2".into(),
            role: Some(role),
            boot_epoch: 2,
            seq: 1,
            holds_vips,
        })
    };
    let now = t.init_dead_ms + 10;
    let mut secondary = active(Role::Secondary, "lb1");
    let out = secondary.handle(holding(Role::Primary, true), now);
    assert!(
        out.iter().any(|a| matches!(a, Action::ReleaseVips)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Event(Event::SplitBrain { won: false, .. })))
    );
    let mut primary = active(Role::Primary, "lb1");
    let out = primary.handle(holding(Role::Secondary, true), now);
    assert!(
        !out.iter().any(|a| matches!(a, Action::ReleaseVips)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Event(Event::SplitBrain { won: true, .. })))
    );
    let out = primary.handle(holding(Role::Secondary, false), now + 5);
    assert!(
        out.iter().any(|a| matches!(a, Action::AnnounceVips)),
        "{out:?}"
    );
    assert_eq!(primary.state(), NodeState::Active);
    assert_eq!(primary.stats().split_brains, 1);
}

/// The procedure of docs/upgrade.md in the simulator, on a delaying link: upgrade the standby (the active node
/// never moves), take over on the upgraded node (one clean move), upgrade the old node (nothing moves), and the
/// pair ends speaking the new version. No violation of any property on the way.
#[test]
fn rolling_upgrade_moves_the_role_only_when_asked() {
    let old = (1, 1);
    let next = (1, 2);
    let mut heard_unreadable = 0;
    // 200 seeds: seed 33 once left the upgraded pair speaking the old version (SpeakVersion::heard_reordered).
    for seed in 0..200 {
        let mut p = SimParams::new(50);
        p.seed = seed;
        p.max_delay_ms = 10;
        p.vip_latency_ms = 3;
        let mut sim = Sim::new(p.clone());
        sim.versions = [old, old];
        sim.crash(0);
        sim.crash(1);
        sim.start(0);
        sim.start(1);
        sim.run_for(1000);
        assert!(sim.nodes[0].is_active());
        // 1. Upgrade the standby.
        sim.stop(1);
        sim.run_for(200);
        sim.versions[1] = next;
        sim.start(1);
        sim.run_for(2000);
        assert_eq!(sim.active_exits, [0, 0], "seed {seed}");
        assert_eq!(sim.nodes[1].state(), Some(NodeState::Standby));
        assert_eq!(
            sim.speaking(1),
            1,
            "the newer node answers in the older version"
        );
        // The older node hears the newer one's first heartbeats (sent before it heard us) as signs of life, unless
        // the link reordered them behind a later one (then the replay guard drops them).
        heard_unreadable += sim.incompatible_delivered[0];
        // 2. Hand over to the upgraded node.
        sim.feed(1, Input::AdminTakeover);
        sim.run_for(1000);
        assert!(sim.nodes[1].is_active(), "seed {seed}");
        assert_eq!(sim.active_exits, [1, 0]);
        // 3. Upgrade the old node (now standby).
        sim.stop(0);
        sim.run_for(200);
        sim.versions[0] = next;
        sim.start(0);
        sim.run_for(2000);
        assert!(sim.nodes[1].is_active());
        assert_eq!(sim.active_exits, [1, 0], "seed {seed}");
        assert_eq!((sim.speaking(0), sim.speaking(1)), (2, 2), "seed {seed}");
        // 4. Fail back.
        sim.feed(0, Input::AdminTakeover);
        sim.run_for(1000);
        assert!(sim.nodes[0].is_active());
        assert_eq!(sim.active_exits, [1, 1]);
        sim.assert_clean();
    }
    assert!(heard_unreadable >= 10, "{heard_unreadable}");
}

/// Two releases with no common version (an upgrade that skipped one): each is alive to the other, neither takes
/// over from the other, whichever held the VIPs keeps them; a crash still fails over after the dead time.
#[test]
fn releases_without_a_common_version_never_take_over_from_each_other() {
    for seed in 0..10 {
        let mut p = SimParams::new(50);
        p.seed = seed;
        p.max_delay_ms = 10;
        let mut sim = Sim::new(p.clone());
        sim.versions = [(1, 1), (2, 2)];
        // Neither may hold while both run from the start: the never-neither property does not apply.
        sim.check_never_neither = false;
        sim.crash(0);
        sim.crash(1);
        sim.start(0);
        sim.run_for(1000);
        assert!(sim.nodes[0].is_active());
        sim.start(1);
        sim.run_for(20 * p.timings.dead_ms);
        assert!(sim.nodes[0].is_active(), "seed {seed}");
        assert_eq!(sim.nodes[1].state(), Some(NodeState::Standby));
        assert_eq!(sim.active_exits, [0, 0]);
        assert!(sim.incompatible_delivered[0] > 10 && sim.incompatible_delivered[1] > 10);
        assert!(sim.nodes[0].e().peer_incompatible(sim.now).is_some());
        assert!(sim.nodes[1].e().peer_incompatible(sim.now).is_some());
        sim.crash(0);
        sim.run_for(p.timings.dead_ms + 2 * p.timings.interval_ms + 50);
        assert!(sim.nodes[1].is_active(), "seed {seed}");
        sim.assert_clean();
    }
}

/// `PROPTEST_CASES` overrides the default number of cases (long runs: `PROPTEST_CASES=20000 cargo test --release`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- properties -----------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Wait(u64),
    Link(LinkMode),
    Crash(usize),
    Start(usize),
    Stop(usize),
    Takeover(usize),
    Release(usize),
    Ping(usize, bool),
    CaughtUp(usize),
    FailNextAcquire(usize),
    /// Node `.0` runs the next release (true) or the current one (false) from its next start.
    Upgrade(usize, bool),
    /// Node `.0` runs the release before make-before-break handovers (true) or this one (false) from its next start.
    Legacy(usize, bool),
}

fn step_strategy(dead_ms: u64) -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1..dead_ms * 3).prop_map(Step::Wait),
        2 => prop_oneof![
            Just(LinkMode::Healthy),
            (5u64..60).prop_map(LinkMode::Lossy),
            Just(LinkMode::Cut),
            (0usize..2).prop_map(LinkMode::OneWay),
        ]
        .prop_map(Step::Link),
        1 => (0usize..2).prop_map(Step::Crash),
        2 => (0usize..2).prop_map(Step::Start),
        1 => (0usize..2).prop_map(Step::Stop),
        1 => (0usize..2).prop_map(Step::Takeover),
        1 => (0usize..2).prop_map(Step::Release),
        1 => ((0usize..2), any::<bool>()).prop_map(|(i, r)| Step::Ping(i, r)),
        1 => (0usize..2).prop_map(Step::CaughtUp),
        1 => (0usize..2).prop_map(Step::FailNextAcquire),
        1 => ((0usize..2), any::<bool>()).prop_map(|(i, next)| Step::Upgrade(i, next)),
        1 => ((0usize..2), any::<bool>()).prop_map(|(i, legacy)| Step::Legacy(i, legacy)),
    ]
}

fn scenario() -> impl Strategy<Value = (SimParams, Vec<Step>)> {
    (
        prop_oneof![Just(10u64), Just(20), Just(50), Just(200)],
        3u64..7,
        0u64..=25,
        0u64..=25,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            |(interval, dead_factor, delay_pct, vip_pct, failback, ping, equal_roles, seed)| {
                let mut p = SimParams::new(interval);
                p.timings.dead_ms = interval * dead_factor;
                p.timings.warn_ms = p.timings.dead_ms / 2;
                p.timings.init_dead_ms = p.timings.dead_ms * 2;
                p.max_delay_ms = interval * delay_pct / 100;
                p.vip_latency_ms = (interval * vip_pct / 100).max(1);
                p.auto_failback = failback;
                p.ping_configured = ping;
                if equal_roles {
                    p.roles = [Role::Secondary, Role::Secondary];
                }
                p.seed = seed;
                let dead = p.timings.dead_ms;
                (
                    Just(p),
                    proptest::collection::vec(step_strategy(dead), 10..60),
                )
            },
        )
}

fn run_scenario(params: SimParams, steps: &[Step]) -> Sim {
    let mut sim = Sim::new(params);
    for step in steps {
        match step {
            Step::Wait(ms) => sim.run_for(*ms),
            Step::Link(mode) => sim.set_mode(*mode),
            Step::Crash(i) => sim.crash(*i),
            Step::Start(i) => sim.start(*i),
            Step::Stop(i) => sim.stop(*i),
            Step::Takeover(i) => sim.feed(*i, Input::AdminTakeover),
            Step::Release(i) => sim.feed(*i, Input::AdminRelease),
            Step::Ping(i, reachable) => sim.feed(
                *i,
                Input::PingResult {
                    reachable: *reachable,
                },
            ),
            Step::CaughtUp(i) => sim.feed(*i, Input::CaughtUp(true)),
            Step::FailNextAcquire(i) => {
                // A node in fault is not expected to take over in time: liveness is not checked from here on.
                sim.nodes[*i].fail_acquires += 1;
                sim.check_liveness = false;
            }
            Step::Upgrade(i, next) => {
                sim.versions[*i] = if *next { (1, 2) } else { (1, 1) };
            }
            Step::Legacy(i, legacy) => sim.legacy[*i] = *legacy,
        }
    }
    // End on a healthy link with both nodes up: the pair must settle on exactly one holder.
    sim.set_mode(LinkMode::Healthy);
    let t = sim.params.timings;
    // Let nodes that are stopping finish and exit first (a stopped node lingers up to shutdown_linger_ms for its
    // peer to confirm).
    let linger = t.dead_ms.min(1000);
    sim.run_for(linger.max(t.interval_ms * 2) + 4 * sim.params.vip_latency_ms + 1);
    sim.start(0);
    sim.start(1);
    // The VIP layer works again; nodes in fault recover at their next retry.
    sim.nodes[0].fail_acquires = 0;
    sim.nodes[1].fail_acquires = 0;
    // Room for fault retries (max(dead_ms, 1 s) each) when VIP failures were injected.
    sim.run_for(t.init_dead_ms + t.dead_ms + 10 * t.interval_ms + 3 * t.dead_ms.max(1000));
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), .. ProptestConfig::default() })]

    /// SAFETY (two holders only while one cannot hear the other; a split brain ends within one heartbeat of a
    /// healthy link), LIVENESS (a survivor is active within dead_ms + one interval; never neither on a healthy
    /// link) and convergence to exactly one holder, under loss, reordering, delay, partitions, crashes, restarts,
    /// clean stops, admin commands, ping changes and restarts into the next release or back (rolling upgrades and
    /// rollbacks: heartbeats of a version the receiver cannot read until the newer node answers in the older).
    #[test]
    fn pair_is_safe_and_live((params, steps) in scenario()) {
        let sim = run_scenario(params.clone(), &steps);
        prop_assert!(sim.violations.is_empty(), "{:#?}\n{:?}", sim.violations, params);
        prop_assert_eq!(sim.holders(), 1, "end: {:?} {:?}", sim.nodes[0].state(), sim.nodes[1].state());
        prop_assert_eq!(sim.active_count(), 1);
    }

    /// Two releases with no common wire version (an upgrade that skipped one), under the same random loss,
    /// delay, partitions, crashes, restarts, stops and admin commands: SAFETY holds (never two holders while
    /// they hear each other, split brains end within a heartbeat of a healthy link) and a crashed node is still
    /// replaced in time. Never-neither does not apply: two such nodes started together both stand by.
    #[test]
    fn releases_without_a_common_version_are_safe((params, steps) in scenario()) {
        let mut sim = Sim::new(params.clone());
        sim.versions = [(1, 1), (2, 2)];
        sim.check_never_neither = false;
        sim.crash(0);
        sim.crash(1);
        sim.start(0);
        sim.start(1);
        let steps: Vec<Step> = steps.into_iter().filter(|s| !matches!(s, Step::Upgrade(..))).collect();
        for step in &steps {
            match step {
                Step::Wait(ms) => sim.run_for(*ms),
                Step::Link(mode) => sim.set_mode(*mode),
                Step::Crash(i) => sim.crash(*i),
                Step::Start(i) => sim.start(*i),
                Step::Stop(i) => sim.stop(*i),
                Step::Takeover(i) => sim.feed(*i, Input::AdminTakeover),
                Step::Release(i) => sim.feed(*i, Input::AdminRelease),
                Step::Ping(i, reachable) => sim.feed(*i, Input::PingResult { reachable: *reachable }),
                Step::CaughtUp(i) => sim.feed(*i, Input::CaughtUp(true)),
                Step::FailNextAcquire(i) => {
                    sim.nodes[*i].fail_acquires += 1;
                    sim.check_liveness = false;
                }
                Step::Upgrade(..) => {}
                Step::Legacy(i, legacy) => sim.legacy[*i] = *legacy,
            }
        }
        sim.set_mode(LinkMode::Healthy);
        sim.start(0);
        sim.start(1);
        sim.run_for(3 * params.timings.dead_ms + 10 * params.timings.interval_ms);
        prop_assert!(sim.violations.is_empty(), "{:#?}\n{:?}", sim.violations, params);
        prop_assert!(sim.holders() <= 1, "end: {:?} {:?}", sim.nodes[0].state(), sim.nodes[1].state());
    }

    /// Admin commands move the role at most once each, whatever their timing against heartbeats in flight.
    #[test]
    fn admin_commands_never_bounce_the_role(
        seed in any::<u64>(),
        interval in prop_oneof![Just(10u64), Just(50), Just(200)],
        delay_pct in 0u64..=30,
        commands in proptest::collection::vec((0usize..2, any::<bool>(), 0u64..30), 1..20),
    ) {
        let mut p = SimParams::new(interval);
        p.seed = seed;
        p.max_delay_ms = interval * delay_pct / 100;
        let mut sim = Sim::new(p.clone());
        sim.run_for(interval * 3);
        let before: u64 = (0..2).map(|i| sim.nodes[i].e().stats().takeovers).sum();
        for (i, takeover, gap) in &commands {
            sim.feed(*i, if *takeover { Input::AdminTakeover } else { Input::AdminRelease });
            sim.run_for(*gap);
        }
        sim.run_for(p.timings.dead_ms * 3);
        let after: u64 = (0..2).map(|i| sim.nodes[i].e().stats().takeovers).sum();
        prop_assert!(after - before <= commands.len() as u64, "{} moves for {} commands", after - before, commands.len());
        prop_assert_eq!(sim.holders(), 1);
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }

    /// No flapping: whatever the link does, a standby that restarts over and over never moves the active role
    /// (auto_failback off).
    #[test]
    fn standby_restarts_never_flap(
        seed in any::<u64>(),
        interval in prop_oneof![Just(10u64), Just(50), Just(200)],
        secondary_active in any::<bool>(),
        downs in proptest::collection::vec((0u64..400, 0u64..600, any::<bool>()), 5..25),
    ) {
        let mut p = SimParams::new(interval);
        p.seed = seed;
        p.max_delay_ms = interval / 5;
        let mut sim = Sim::new(p.clone());
        sim.run_for(interval * 3);
        if secondary_active {
            sim.feed(0, Input::AdminRelease);
            sim.run_for(interval * 3);
        }
        let active = usize::from(secondary_active);
        prop_assert!(sim.nodes[active].is_active());
        let exits = sim.active_exits[active];
        for (down_ms, up_ms, clean) in downs {
            if clean { sim.stop(1 - active) } else { sim.crash(1 - active) }
            sim.run_for(down_ms);
            sim.start(1 - active);
            sim.feed(1 - active, Input::CaughtUp(true));
            sim.run_for(up_ms);
        }
        prop_assert_eq!(sim.active_exits[active], exits);
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }

    /// Live timing changes: the two nodes reload at different moments, again and again, to timings whose dead time
    /// exceeds the other's interval (what config validation and the two-step advice give). The role never moves.
    #[test]
    fn live_timing_changes_never_move_the_role(
        seed in any::<u64>(),
        changes in proptest::collection::vec(
            (prop_oneof![Just(10u64), Just(20), Just(50), Just(100)], 3u64..7, any::<bool>(), 0u64..300, 0u64..600),
            1..8,
        ),
        delay_pct in 0u64..=20,
    ) {
        let mut p = SimParams::new(50);
        p.seed = seed;
        p.max_delay_ms = 50 * delay_pct / 100;
        let mut sim = Sim::new(p);
        sim.run_for(500);
        prop_assert!(sim.nodes[0].is_active());
        let (mut interval, mut dead) = (50, 250);
        for (next, dead_factor, first, gap, settle) in changes {
            // While the two nodes differ, each one's dead time must outlast the other's interval.
            let next = next.min(dead * 2 / 3);
            let new_dead = (next * dead_factor).max(interval * 3 / 2 + 1);
            let t = Timings {
                interval_ms: next,
                dead_ms: new_dead,
                warn_ms: new_dead / 2,
                init_dead_ms: new_dead * 2,
            };
            let a = usize::from(first);
            sim.set_timings(a, t, false);
            sim.run_for(gap);
            sim.set_timings(1 - a, t, false);
            sim.run_for(settle);
            (interval, dead) = (next, new_dead);
        }
        prop_assert_eq!(sim.active_exits, [0, 0]);
        prop_assert!(sim.nodes[0].is_active());
        prop_assert_eq!(sim.nodes[1].state(), Some(NodeState::Standby));
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }
}

#[test]
fn names_are_distinct() {
    assert_ne!(NAMES[0], NAMES[1]);
}

/// Found by the property test: the old incarnation's delayed "stopped" heartbeat arrives after this node handed
/// over to the peer's new incarnation (whose first heartbeats were lost); it must not be taken as "the peer will not
/// take the VIPs".
#[test]
fn late_heartbeat_of_an_old_incarnation_does_not_undo_a_handover() {
    let mut p = SimParams::new(50);
    p.timings = Timings {
        interval_ms: 50,
        dead_ms: 300,
        warn_ms: 150,
        init_dead_ms: 600,
    };
    p.ping_configured = true;
    p.max_delay_ms = 7;
    p.vip_latency_ms = 3;
    p.seed = 9076437157631394244;
    let steps = vec![
        Step::Wait(79),
        Step::Stop(1),
        Step::Crash(1),
        Step::Link(LinkMode::Cut),
        Step::Start(1),
        Step::Ping(0, false),
        Step::Ping(1, false),
    ];
    let sim = run_scenario(p, &steps);
    sim.assert_clean();
    assert_eq!(sim.holders(), 1);
}

/// Found on loopback: `tandem takeover` processed before the peer's "acquiring" heartbeat arrived left both nodes
/// offering the role to each other; each read the other's older offer and the role bounced back and forth.
#[test]
fn takeover_right_after_release_does_not_ping_pong() {
    for delay in 0..4 {
        for gap in 1..8 {
            let mut p = SimParams::new(200);
            p.max_delay_ms = delay;
            p.vip_latency_ms = 1;
            let mut sim = started(p);
            sim.feed(0, Input::AdminRelease);
            sim.run_for(gap);
            sim.feed(0, Input::AdminTakeover);
            sim.run_for(1000);
            let flips = sim.nodes[1].e().stats().takeovers;
            if !sim.nodes[0].is_active() || flips > 1 {
                for (name, node) in NAMES.iter().zip(&sim.nodes) {
                    for (t, e) in node.events.iter().filter(|(t, _)| *t >= 90) {
                        eprintln!("{name} {t:5} {e:?}");
                    }
                }
            }
            assert!(sim.nodes[0].is_active(), "delay {delay} gap {gap}");
            assert!(
                flips <= 1,
                "delay {delay} gap {gap}: lb2 took over {flips} times"
            );
            sim.assert_clean();
        }
    }
}

/// Found by a x60 stress run of `pair_is_safe_and_live`: "lb2 acquired while lb1 holds and both hear each other".
#[test]
fn lossy_takeover_stop_crash_restart_never_holds_twice() {
    let params = SimParams {
        timings: Timings {
            interval_ms: 200,
            dead_ms: 800,
            warn_ms: 400,
            init_dead_ms: 1600,
        },
        roles: [Role::Secondary, Role::Secondary],
        auto_failback: true,
        ping_configured: true,
        max_delay_ms: 44,
        vip_latency_ms: 22,
        seed: 5463324995364838390,
    };
    let steps = [
        Step::Link(LinkMode::Healthy),
        Step::Link(LinkMode::Lossy(35)),
        Step::Wait(2329),
        Step::Wait(583),
        Step::Link(LinkMode::Lossy(57)),
        Step::Takeover(1),
        Step::Stop(1),
        Step::Wait(1408),
        Step::Crash(0),
        Step::Start(0),
        Step::Wait(981),
        Step::Start(1),
        Step::Wait(133),
        Step::Wait(1549),
        Step::Ping(0, false),
    ];
    let sim = run_scenario(params, &steps);
    if !sim.violations.is_empty() {
        for (name, node) in NAMES.iter().zip(&sim.nodes) {
            for (t, e) in node.events.iter().filter(|(t, _)| (5000..7100).contains(t)) {
                eprintln!("{name} {t:5} {e:?}");
            }
        }
    }
    sim.assert_clean();
    assert_eq!(sim.holders(), 1);
}

// ---- process death (peer's daemon gone, host alive) -------------------------------------------------------------

mod session_lost;

fn settled_pair(interval_ms: u64, max_delay_ms: u64, seed: u64) -> Sim {
    let mut params = SimParams::new(interval_ms);
    if interval_ms == 200 {
        params.timings = timings();
    }
    params.max_delay_ms = max_delay_ms;
    params.seed = seed;
    let mut sim = Sim::new(params);
    sim.run_for(sim.params.timings.init_dead_ms + 500);
    assert!(sim.nodes[0].is_active() && sim.nodes[1].state() == Some(NodeState::Standby));
    sim
}

fn standby(sim: &mut Sim) -> &mut Election {
    sim.nodes[1].election.as_mut().expect("standby up")
}

#[test]
fn port_unreachable_alone_only_asks_for_one_probe() {
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    let first = standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    assert!(first.contains(&Action::ProbePeerProcess), "{first:?}");
    assert!(!first.contains(&Action::AcquireVips));
    let again = standby(&mut sim).handle(Input::PeerPortUnreachable, now + 1);
    assert!(
        !again.contains(&Action::ProbePeerProcess),
        "one probe at a time"
    );
    // The probe found the daemon listening (or timed out): nothing changes.
    let answer = standby(&mut sim).handle(Input::PeerProbeResult { refused: false }, now + 2);
    assert!(!answer.contains(&Action::AcquireVips));
    assert_eq!(standby(&mut sim).state(), NodeState::Standby);
    assert!(standby(&mut sim).peer_alive(now + 2));
    // A later report may probe again.
    let later = standby(&mut sim).handle(Input::PeerPortUnreachable, now + 3);
    assert!(later.contains(&Action::ProbePeerProcess));
}

#[test]
fn refused_probe_gives_the_peer_up_at_once() {
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now + 1);
    assert!(out.contains(&Action::AcquireVips), "{out:?}");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Event(Event::PeerProcessGone { .. })))
    );
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Event(Event::StateChanged {
            to: NodeState::Acquiring,
            reason: Reason::PeerProcessGone,
            ..
        })
    )));
    assert!(!standby(&mut sim).peer_alive(now + 1));
}

#[test]
fn refused_probe_without_a_report_is_ignored() {
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now);
    assert!(!out.contains(&Action::AcquireVips), "{out:?}");
    assert!(standby(&mut sim).peer_alive(now));
}

#[test]
fn a_heartbeat_after_the_report_cancels_the_confirmation() {
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    // The peer's next heartbeat arrives (a daemon that restarted quickly, or a forged report).
    let heard = sim.nodes[1].e().peer().expect("peer").last_heard_ms;
    sim.run_for(250);
    assert!(sim.nodes[1].e().peer().expect("peer").last_heard_ms > heard);
    let now = sim.now;
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now);
    assert!(!out.contains(&Action::AcquireVips), "{out:?}");
    assert_eq!(standby(&mut sim).state(), NodeState::Standby);
}

#[test]
fn port_unreachable_before_the_peer_is_heard_probes_nothing() {
    let cfg = ElectionConfig::new("c", "lb2", Role::Secondary, true, timings(), 1);
    let mut e = Election::new(cfg, 0);
    e.handle(Input::Tick, 0);
    let out = e.handle(Input::PeerPortUnreachable, 10);
    assert!(!out.contains(&Action::ProbePeerProcess), "{out:?}");
    let out = e.handle(Input::PeerProbeResult { refused: true }, 11);
    assert!(!out.contains(&Action::AcquireVips));
    assert_eq!(e.state(), NodeState::Init);
}

#[test]
fn killed_daemon_on_a_live_host_is_replaced_within_one_interval() {
    for (interval, delay) in [(200, 0), (200, 2), (10, 0), (10, 1)] {
        for offset in [0, 1, 3, 7, 50, 111, 199] {
            let mut sim = settled_pair(interval, delay, offset + 1);
            sim.run_for(offset % interval);
            let killed = sim.now;
            sim.kill_process(0);
            sim.run_for(sim.params.timings.dead_ms * 2);
            let active = sim.became_active(1, killed).expect("standby took over");
            let p = &sim.params;
            let bound = p.timings.interval_ms + 4 * p.max_delay_ms + 2 * p.vip_latency_ms + 1;
            assert!(
                active - killed <= bound,
                "{interval}/{delay} +{offset}: active after {} ms (bound {bound})",
                active - killed
            );
            assert!(has_event(&sim, 1, |e| matches!(
                e,
                Event::PeerProcessGone { .. }
            )));
            assert!(!has_event(&sim, 1, |e| matches!(e, Event::PeerDead { .. })));
            sim.assert_clean();
        }
    }
}

#[test]
fn host_death_still_takes_dead_ms() {
    for interval in [200, 10] {
        let mut sim = settled_pair(interval, 0, 3);
        let heard = sim.nodes[1].e().peer().expect("peer").last_heard_ms;
        let killed = sim.now;
        sim.crash(0);
        sim.run_for(sim.params.timings.dead_ms * 2);
        let active = sim.became_active(1, killed).expect("standby took over");
        assert!(
            active >= heard + sim.params.timings.dead_ms,
            "{interval}: active {} ms after the last heartbeat",
            active - heard
        );
        assert!(sim.probe_results.is_empty(), "no ICMP from a dead host");
        assert!(has_event(&sim, 1, |e| matches!(e, Event::PeerDead { .. })));
        sim.assert_clean();
    }
}

/// Counts the times node `i` gave its peer up (for silence or a gone daemon) at or after `since`.
fn deaths(sim: &Sim, i: usize, since: u64) -> usize {
    sim.nodes[i]
        .events
        .iter()
        .filter(|(t, e)| {
            *t >= since && matches!(e, Event::PeerDead { .. } | Event::PeerProcessGone { .. })
        })
        .count()
}

#[test]
fn forged_port_unreachable_never_moves_the_vips() {
    let mut sim = settled_pair(200, 1, 5);
    let since = sim.now;
    for _ in 0..50 {
        sim.feed(1, Input::PeerPortUnreachable);
        sim.run_for(37);
    }
    assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
    assert_eq!(deaths(&sim, 1, since), 0);
    assert!(sim.probe_results.iter().all(|(_, _, refused)| !refused));
    assert!(!sim.probe_results.is_empty());
    sim.assert_clean();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A daemon killed on a live host and restarted after any pause: the survivor takes over once, is never told
    /// the peer died twice for one kill, never shares the VIPs with it on a healthy link, and the pair settles.
    #[test]
    fn killed_and_restarted_daemon_dies_once(
        seed in 0u64..10_000,
        fast in any::<bool>(),
        delay in 0u64..3,
        offset in 0u64..200,
        pause in 0u64..400,
        kills in 1usize..4,
    ) {
        let interval = if fast { 10 } else { 200 };
        let mut sim = settled_pair(interval, delay, seed);
        let t = sim.params.timings;
        for _ in 0..kills {
            sim.run_for(offset % interval);
            let active = if sim.nodes[0].is_active() { 0 } else { 1 };
            let since = sim.now;
            sim.kill_process(active);
            sim.run_for(pause % (2 * interval));
            sim.start(active);
            sim.feed(active, Input::CaughtUp(true));
            sim.run_for(t.init_dead_ms + t.dead_ms);
            prop_assert!(deaths(&sim, 1 - active, since) <= 1);
            prop_assert_eq!(sim.active_count(), 1);
            prop_assert_eq!(sim.holders(), 1);
        }
        let list: Vec<String> = sim.violations.iter().map(|v| format!("{} {}", v.at, v.what)).collect();
        prop_assert!(list.is_empty(), "{:?}", list);
    }
}

/// Found by the proptest above (seed 5211): lb1's daemon is killed with a heartbeat on the wire (2 ms of delay), lb2
/// finds it gone within 1 ms and takes over, and the old run's delayed heartbeat ("active, holds the VIPs") arrives
/// after that. It is no proof of life: before, lb2 counted it as the peer back, lost a split-brain resolution to a
/// dead process, released the VIPs and found the peer gone a second time.
#[test]
fn a_dead_runs_delayed_heartbeat_does_not_bring_it_back() {
    let mut sim = settled_pair(10, 2, 5211);
    sim.run_for(4);
    let active = if sim.nodes[0].is_active() { 0 } else { 1 };
    let since = sim.now;
    sim.kill_process(active);
    sim.run_for(2);
    sim.start(active);
    sim.feed(active, Input::CaughtUp(true));
    let t = sim.params.timings;
    sim.run_for(t.init_dead_ms + t.dead_ms);
    assert_eq!(deaths(&sim, 1 - active, since), 1);
    assert!(!has_event(&sim, 1 - active, |e| matches!(
        e,
        Event::SplitBrain { .. }
    )));
    assert_eq!(sim.active_count(), 1);
    assert_eq!(sim.holders(), 1);
    sim.assert_clean();
}
