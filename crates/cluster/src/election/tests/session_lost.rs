//! The sync session closed by the peer's side (`Input::PeerSessionLost`): a killed daemon is replaced within a few
//! round trips at any interval, a live peer or a clean stop never is, and a quick restart dies once.

use super::*;

fn acquires(out: &[Action]) -> bool {
    out.contains(&Action::AcquireVips)
}

fn sends_heartbeat(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::SendHeartbeat(_)))
}

#[test]
fn session_lost_probes_and_sends_a_heartbeat_at_once() {
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    let out = standby(&mut sim).handle(Input::PeerSessionLost, now);
    assert!(out.contains(&Action::ProbePeerProcess), "{out:?}");
    assert!(
        sends_heartbeat(&out),
        "a heartbeat now, for the ICMP: {out:?}"
    );
    assert!(!acquires(&out));
    let again = standby(&mut sim).handle(Input::PeerSessionLost, now);
    assert!(
        !again.contains(&Action::ProbePeerProcess),
        "one probe at a time"
    );
}

#[test]
fn a_refused_probe_needs_the_icmp_too() {
    // A firewall that resets the sync port (or a sync listener gone while the daemon lives) is not a dead daemon:
    // the heartbeat port must be refused as well.
    let mut sim = settled_pair(200, 0, 1);
    let now = sim.now;
    standby(&mut sim).handle(Input::PeerSessionLost, now);
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now);
    assert!(!acquires(&out), "{out:?}");
    assert!(standby(&mut sim).peer_alive(now));
    let out = standby(&mut sim).handle(Input::PeerPortUnreachable, now + 1);
    assert!(
        !out.contains(&Action::ProbePeerProcess),
        "already refused: {out:?}"
    );
    assert!(acquires(&out), "{out:?}");
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Event(Event::StateChanged {
            to: NodeState::Acquiring,
            reason: Reason::PeerProcessGone,
            ..
        })
    )));
}

#[test]
fn a_refusal_without_the_icmp_sends_heartbeats_for_a_moment() {
    // A dying daemon's sockets close one after the other: the heartbeat sent on the session's loss may have reached
    // its socket before it closed. After the sync port's refusal, heartbeats go out every PROVOKE_EVERY_MS for
    // PROVOKE_FOR_MS, then the usual cadence again.
    let mut sim = settled_pair(200, 0, 4);
    let t = sim.now;
    standby(&mut sim).handle(Input::PeerSessionLost, t);
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, t + 1);
    assert!(sends_heartbeat(&out), "{out:?}");
    let mut sent = 1;
    let mut now = t + 1;
    while now < t + 1 + 3 * PROVOKE_FOR_MS {
        let next = standby(&mut sim).next_timeout();
        assert!(next > now, "next {next} at {now}");
        now = next.min(t + 1 + 3 * PROVOKE_FOR_MS);
        let out = standby(&mut sim).handle(Input::Tick, now);
        if sends_heartbeat(&out) {
            assert!(now <= t + 1 + PROVOKE_FOR_MS, "resent at +{}", now - t - 1);
            sent += 1;
        }
    }
    assert_eq!(sent, PROVOKE_FOR_MS / PROVOKE_EVERY_MS + 1);
    let out = standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    assert!(acquires(&out), "{out:?}");
}

#[test]
fn the_icmp_before_the_session_loss_counts_too() {
    let mut sim = settled_pair(10, 0, 2);
    let now = sim.now;
    let out = standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    assert!(out.contains(&Action::ProbePeerProcess));
    let out = standby(&mut sim).handle(Input::PeerSessionLost, now);
    assert!(!out.contains(&Action::ProbePeerProcess), "{out:?}");
    let out = standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now);
    assert!(acquires(&out), "{out:?}");
}

#[test]
fn a_heartbeat_clears_a_half_proven_suspicion() {
    let mut sim = settled_pair(200, 0, 3);
    let now = sim.now;
    standby(&mut sim).handle(Input::PeerSessionLost, now);
    standby(&mut sim).handle(Input::PeerProbeResult { refused: true }, now);
    // The peer's next heartbeat: it lives (its sync session ended for its own reasons).
    sim.run_for(250);
    let now = sim.now;
    let out = standby(&mut sim).handle(Input::PeerPortUnreachable, now);
    assert!(!acquires(&out), "{out:?}");
    assert!(
        out.contains(&Action::ProbePeerProcess),
        "a new suspicion, probed again"
    );
}

#[test]
fn killed_daemon_is_replaced_within_round_trips_at_any_interval() {
    for (interval, delay) in [(200, 0), (200, 2), (10, 0), (10, 1), (1000, 1)] {
        for offset in [0, 1, 3, 7, 50, 111, 199, 777] {
            let mut params = SimParams::new(interval);
            if interval == 200 {
                params.timings = timings();
            }
            params.max_delay_ms = delay;
            params.seed = offset + 7;
            let mut sim = Sim::new(params);
            sim.run_for(sim.params.timings.init_dead_ms + 500);
            assert!(sim.nodes[0].is_active());
            sim.run_for(offset % interval);
            let killed = sim.now;
            sim.kill_process(0);
            sim.run_for(sim.params.timings.dead_ms * 2);
            let active = sim.became_active(1, killed).expect("standby took over");
            let p = &sim.params;
            // The FIN, then the probe's SYN and RST alongside a heartbeat and its ICMP, then the VIPs.
            let bound = 3 * p.max_delay_ms + p.vip_latency_ms + 1;
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
fn session_losses_from_a_live_peer_never_move_the_vips() {
    // A FIN forged into the session (or the peer's sync closing the session for its own reasons), with forged
    // ICMP: the probe is accepted by the live daemon, nothing moves.
    for interval in [200, 10] {
        let mut sim = settled_pair(interval, 1, 11);
        let since = sim.now;
        for round in 0..50 {
            sim.feed(1, Input::PeerSessionLost);
            if round % 2 == 0 {
                sim.feed(1, Input::PeerPortUnreachable);
            }
            sim.run_for(3 + round % 17);
        }
        assert!(sim.nodes[0].is_active() && !sim.nodes[1].holds());
        assert_eq!(deaths(&sim, 1, since), 0);
        assert!(!sim.probe_results.is_empty());
        assert!(sim.probe_results.iter().all(|(_, _, refused)| !refused));
        sim.assert_clean();
    }
}

#[test]
fn a_clean_stops_goodbye_never_starts_the_suspicion() {
    // The goodbye heartbeat arrives before the session's FIN, as on a LAN (the simulator keeps them in order).
    for interval in [200, 10] {
        for who in [0, 1] {
            let mut sim = settled_pair(interval, 2, 13);
            sim.host_lives_after_stop = true;
            let since = sim.now;
            sim.stop(who);
            sim.run_for(sim.params.timings.dead_ms * 3);
            let survivor = 1 - who;
            assert!(sim.nodes[survivor].is_active(), "{interval} {who}");
            assert!(
                sim.probe_results.is_empty(),
                "{interval} {who}: probed after a goodbye: {:?}",
                sim.probe_results
            );
            assert!(!has_event(&sim, survivor, |e| matches!(
                e,
                Event::PeerProcessGone { .. }
            )));
            assert!(
                deaths(&sim, survivor, since) <= 1,
                "declared dead once at most (by silence)"
            );
            sim.assert_clean();
        }
    }
}

#[test]
fn host_death_sends_no_fin_and_still_takes_dead_ms() {
    let mut sim = settled_pair(10, 0, 17);
    let heard = sim.nodes[1].e().peer().expect("peer").last_heard_ms;
    let killed = sim.now;
    sim.crash(0);
    sim.run_for(sim.params.timings.dead_ms * 2);
    let active = sim.became_active(1, killed).expect("standby took over");
    assert!(active >= heard + sim.params.timings.dead_ms);
    assert!(sim.probe_results.is_empty());
    sim.assert_clean();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Kills (with the session's FIN) and clean stops of either node, each followed by a restart after any pause,
    /// on a link with some delay: a kill gives the peer up at most once, a clean stop never for a gone daemon, the
    /// VIPs are never shared on the healthy link and the pair settles with one holder.
    #[test]
    fn kills_and_stops_with_session_losses_die_once(
        seed in 0u64..10_000,
        fast in any::<bool>(),
        delay in 0u64..3,
        steps in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..400, 0u64..200), 1..5),
    ) {
        let interval = if fast { 10 } else { 200 };
        let mut sim = settled_pair(interval, delay, seed);
        sim.host_lives_after_stop = true;
        let t = sim.params.timings;
        for (kill, active_one, pause, offset) in steps {
            sim.run_for(offset % interval);
            let victim = if sim.nodes[0].is_active() == active_one { 0 } else { 1 };
            let since = sim.now;
            if kill {
                sim.kill_process(victim);
            } else {
                sim.stop(victim);
            }
            sim.run_for(pause % (3 * interval));
            if !kill {
                // A clean stop ends on its own (at most the linger); start again only once it has.
                sim.run_for(t.dead_ms + 10);
            }
            let gone = sim.nodes[1 - victim]
                .events
                .iter()
                .filter(|(at, e)| *at >= since && matches!(e, Event::PeerProcessGone { .. }))
                .count();
            prop_assert!(gone <= usize::from(kill), "kill {}: {} gone", kill, gone);
            sim.start(victim);
            sim.feed(victim, Input::CaughtUp(true));
            sim.run_for(t.init_dead_ms + t.dead_ms);
            prop_assert!(deaths(&sim, 1 - victim, since) <= 1);
            prop_assert_eq!(sim.active_count(), 1);
            prop_assert_eq!(sim.holders(), 1);
        }
        let list: Vec<String> = sim.violations.iter().map(|v| format!("{} {}", v.at, v.what)).collect();
        prop_assert!(list.is_empty(), "{:?}", list);
    }
}
