//! Moving the role on purpose: admin takeover and release, and the clean stop (hand over, then repeat the final
//! heartbeat until the peer confirms or the linger ends).

use super::machine::Election;
use super::messages::{Action, Reason, STOP_RESEND_MS, refuse};
use crate::wire::NodeState;

impl Election {
    pub(super) fn on_admin_takeover(&mut self, now: u64, out: &mut Vec<Action>) {
        match self.state {
            NodeState::Active => {
                self.announce(out);
            }
            NodeState::Acquiring => {}
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
