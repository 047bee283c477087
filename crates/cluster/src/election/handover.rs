//! Moving the role on purpose: admin takeover and release, the clean stop (hand over, then repeat the final
//! heartbeat until the peer confirms or the linger ends), and the make-before-break overlap of every planned
//! handover (the giving node keeps its VIPs until the peer holds them, bounded).

use super::config::HANDOVER_GRACE_MS;
use super::machine::{Election, Overlap};
use super::messages::{Action, Reason, STOP_RESEND_MS, refuse};
use crate::wire::NodeState;

impl Election {
    pub(super) fn on_admin_takeover(&mut self, now: u64, out: &mut Vec<Action>) {
        match self.state {
            NodeState::Active => {
                self.announce(out);
            }
            NodeState::Acquiring => {}
            // Asked back while handing over (a takeover right after a release): the offer stands until the peer
            // holds the VIPs; the request, in the heartbeat from now on, brings them back by another handover.
            NodeState::Releasing
                if self.handover_pending
                    && self.release_then == NodeState::Standby
                    && self.live_peer(now).is_some() =>
            {
                let t = self.cfg.timings;
                self.admin_request_until = Some(now + t.dead_ms + t.interval_ms);
                self.send_now = true;
            }
            NodeState::Releasing | NodeState::Stopped => {
                refuse(out, "takeover", format!("node is {}", self.state));
            }
            NodeState::Init | NodeState::Standby | NodeState::Claiming | NodeState::Fault => {
                if let Some(p) = self.peer_incompatible(now) {
                    refuse(out, "takeover", incompatible_reason(p.version));
                    return;
                }
                let peer = self.live_peer(now).map(|p| p.ping);
                match peer {
                    Some(peer_ping) if !self.ping.ok() && peer_ping.ok() => {
                        refuse(
                            out,
                            "takeover",
                            "this node cannot reach any ping node and the peer can".into(),
                        );
                    }
                    Some(_) => {
                        if matches!(self.state, NodeState::Init | NodeState::Fault) {
                            self.set_state(NodeState::Standby, Reason::AdminTakeover, now, out);
                        }
                        let t = self.cfg.timings;
                        self.admin_request_until = Some(now + t.dead_ms + t.interval_ms);
                        // Asking for the role withdraws any offer of it still standing.
                        self.handover_pending = false;
                        self.send_now = true;
                    }
                    // Still starting and the peer not heard yet: acquiring blind could overlap with a peer whose
                    // heartbeats are on their way. The request stands; init ends as usual (peer heard, or
                    // init_dead_ms), and the request then wins the claim.
                    None if self.state == NodeState::Init => {
                        let t = self.cfg.timings;
                        self.admin_request_until =
                            Some(now + t.init_dead_ms.max(t.dead_ms) + t.interval_ms);
                        self.send_now = true;
                    }
                    None => self.start_acquire(Reason::AdminTakeover, now, out),
                }
            }
        }
    }

    pub(super) fn on_admin_release(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.state != NodeState::Active {
            refuse(
                out,
                "release",
                format!("node is {}, not active", self.state),
            );
            return;
        }
        let my_ping = self.ping;
        let verdict = match self.live_peer(now) {
            None => Err(match self.peer_incompatible(now) {
                Some(p) => incompatible_reason(p.version),
                None => "the peer is not heard".to_string(),
            }),
            Some(p) if p.state != NodeState::Standby || p.holds_vips => {
                Err(format!("the peer is {}, not standby", p.state))
            }
            Some(p) if !p.ping.ok() && my_ping.ok() => {
                Err("the peer cannot reach any ping node".to_string())
            }
            Some(_) => Ok(()),
        };
        match verdict {
            Err(reason) => refuse(out, "release", reason),
            Ok(()) => {
                self.failback_suppressed = true;
                self.start_release(Reason::AdminRelease, true, NodeState::Standby, now, out);
            }
        }
    }

    pub(super) fn on_shutdown(&mut self, now: u64, out: &mut Vec<Action>) {
        self.admin_request_until = None;
        match self.state {
            NodeState::Acquiring | NodeState::Active => {
                self.start_release(Reason::Shutdown, true, NodeState::Stopped, now, out);
            }
            NodeState::Releasing => self.release_then = NodeState::Stopped,
            NodeState::Fault if self.holds_vips() => {
                self.start_release(Reason::Shutdown, true, NodeState::Stopped, now, out);
            }
            NodeState::Stopped => {}
            _ => {
                self.claim_seq = None;
                self.set_state(NodeState::Stopped, Reason::Shutdown, now, out);
            }
        }
    }

    /// May a planned handover keep the VIPs until the peer holds them? Only from `active` with the addresses in
    /// place and no VIP operation under way, towards a peer heard in a readable version that stands by holding
    /// nothing. Otherwise (a peer unheard, unreadable, or busy) it is break-before-make, as before.
    pub(super) fn can_overlap(&self, now: u64) -> bool {
        self.cfg.make_before_break
            && self.state == NodeState::Active
            && self.addresses_present
            && self.vip_idle()
            && self.live_peer(now).is_some_and(|p| {
                !p.holds_vips && matches!(p.state, NodeState::Standby | NodeState::Init)
            })
    }

    /// When the overlap must end at the latest: the offer's bound while the peer has not taken it, then the
    /// bound for its acquisition, or the grace after the peer became active.
    pub(super) fn overlap_deadline(&self, o: Overlap) -> u64 {
        let t = &self.cfg.timings;
        let bound = match o.peer_took_ms {
            None => o.since_ms.saturating_add(t.handover_overlap_ms()),
            Some(at) => at.saturating_add(t.handover_taken_ms()),
        };
        o.peer_active_ms
            .map_or(bound, |at| bound.min(at.saturating_add(HANDOVER_GRACE_MS)))
    }

    /// During a make-before-break handover: remove the VIPs once the peer reports holding them as `active` (added
    /// and announced) plus [`HANDOVER_GRACE_MS`]; at once if the peer declined the offer (it acknowledged a
    /// heartbeat carrying it and neither holds nor acquires: a release before make-before-break, which then takes
    /// the classic offer sent after the removal) or is no longer heard readably; and when a bound passes whatever
    /// happened (`handover_overlap_ms` for the offer to be taken, a lost datagram; then `handover_taken_ms` for the
    /// acquisition). A peer that cannot complete (dead, or in fault) leaves the VIPs here: a node handing over to
    /// stand by stays active instead (a stopping one removes them and stops, as it would have). The offer stands
    /// throughout.
    pub(super) fn evaluate_overlap(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(mut o) = self.overlap else {
            return;
        };
        let epoch = self.cfg.boot_epoch;
        let peer_dead = self.live_peer(now).is_none() && self.peer_incompatible(now).is_none();
        let (declined, failed) = match self.live_peer(now) {
            None => (true, peer_dead),
            Some(p) => {
                if p.holds_vips && o.peer_took_ms.is_none() {
                    o.peer_took_ms = Some(now);
                }
                if p.holds_vips && p.state == NodeState::Active && o.peer_active_ms.is_none() {
                    o.peer_active_ms = Some(now);
                }
                let saw_offer = o
                    .offer_seq
                    .is_some_and(|seq| p.ack_epoch == epoch && p.ack_seq >= seq);
                let declined = saw_offer
                    && !p.holds_vips
                    && !matches!(p.state, NodeState::Acquiring | NodeState::Active);
                // Its acquisition failed and its leftovers are gone: nobody else will hold the VIPs.
                (declined, p.state == NodeState::Fault && !p.holds_vips)
            }
        };
        let declined = if declined && self.live_peer(now).is_some() && !o.declined_once {
            // Offer once more, acknowledging the peer's latest heartbeat: only a second refusal is a decline.
            o.declined_once = true;
            o.offer_seq = None;
            self.send_now = true;
            false
        } else {
            declined
        };
        self.overlap = Some(o);
        if failed && self.release_then == NodeState::Standby {
            self.overlap = None;
            self.handover_pending = false;
            self.set_state(NodeState::Active, Reason::HandoverAborted, now, out);
            // The giver fell silent when it offered them, and the taker may have announced before it failed: the
            // clients' caches must come back here.
            self.announce(out);
            return;
        }
        if declined || failed || now >= self.overlap_deadline(o) {
            self.overlap = None;
            self.issue_release(out);
            // Given up to a live peer that holds them: what is in flight here can drain through the peer.
            self.vip_op_handover = !failed && self.live_peer(now).is_some_and(|p| p.holds_vips);
            // The offer goes on (releasing, then standby or stopped with `handover`), now as a classic one.
            self.send_now = true;
        }
    }

    /// After a clean stop: repeat "stopped, take over" every [`STOP_RESEND_MS`] until the peer confirms it holds
    /// the VIPs, then (or when nobody can confirm, or the linger time is up) give [`Action::Stopped`].
    pub(super) fn linger(&mut self, now: u64, out: &mut Vec<Action>) {
        let peer_took_over = self
            .peer
            .as_ref()
            .is_some_and(|p| p.heartbeat.holds_vips && p.heartbeat.state != NodeState::Stopped);
        // Nobody to hand over to: a peer not heard for dead_ms will not confirm anything.
        let peer_gone = !self.peer_alive(now);
        let linger_over = now
            >= self
                .state_since_ms
                .saturating_add(self.cfg.shutdown_linger_ms);
        if !self.cfg.has_peer || peer_took_over || peer_gone || linger_over {
            self.stop_done = true;
            out.push(Action::Stopped);
            return;
        }
        if self
            .last_resend_ms
            .is_none_or(|at| now >= at.saturating_add(STOP_RESEND_MS))
        {
            self.last_resend_ms = Some(now);
            let hb = self.build_heartbeat(now);
            out.push(Action::SendHeartbeat(hb));
        }
    }
}

/// Why an admin move is refused while the peer speaks a wire version this node cannot read: it cannot tell whether
/// the peer is ready (or already holds the VIPs). The newer node reads this one: move the role from there.
fn incompatible_reason(version: u16) -> String {
    format!(
        "the peer speaks heartbeat wire version {version}, which this node (versions {}..={}) cannot read: \
         run the command on the peer, or upgrade this node",
        crate::wire::MIN_WIRE_VERSION,
        crate::wire::WIRE_VERSION
    )
}
