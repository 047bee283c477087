//! Process death: the peer's host lives but its daemon is gone (SIGKILL, OOM, panic). Two triggers start a
//! suspicion — ICMP port unreachable for one of our heartbeats ([`Input::PeerPortUnreachable`]) and the sync
//! session closed or reset by the peer without a goodbye ([`Input::PeerSessionLost`]) — and one rule ends it: the
//! peer is given up at once only when its host has refused **both** its heartbeat port (the ICMP) and a fresh TCP
//! connection to its sync port (the probe's RST), with no heartbeat from the peer in between. Anything else is
//! settled by silence (`dead_ms`), as before. See docs/protocol.md, "Process death".
//!
//! [`Input::PeerPortUnreachable`]: super::Input::PeerPortUnreachable
//! [`Input::PeerSessionLost`]: super::Input::PeerSessionLost

use super::machine::{Election, GoneRun, Suspicion};
use super::messages::{Action, Event};
use crate::wire::NodeState;

/// Once the sync port has refused but the heartbeat port has not (yet), a heartbeat goes out this often: a dying
/// daemon's sockets close one after the other, and a heartbeat that reached its socket before it closed drew no
/// ICMP. Only for [`PROVOKE_FOR_MS`] after the refusal, so a live peer behind a firewall that resets the sync port
/// costs a few datagrams (its next heartbeat ends the suspicion anyway).
pub const PROVOKE_EVERY_MS: u64 = 2;
/// How long after the refusal heartbeats are sent every [`PROVOKE_EVERY_MS`].
pub const PROVOKE_FOR_MS: u64 = 20;

impl Election {
    /// A peer worth suspecting: alive, not given up already, and not gone by its own word — a clean stop says
    /// goodbye with its `stopped` heartbeats before its sockets close, so what follows a goodbye (the session's
    /// FIN, ICMP for our heartbeats) is no news. Nor while this node is stopping itself.
    fn peer_suspectable(&self, now: u64) -> bool {
        self.peer_alive(now)
            && !self.peer_dead_reported
            && self.state != NodeState::Stopped
            && self
                .peer
                .as_ref()
                .is_none_or(|p| p.heartbeat.state != NodeState::Stopped)
    }

    /// Asks for the probe unless one runs or already answered "refused" in this suspicion.
    fn probe_once(suspicion: &mut Suspicion, out: &mut Vec<Action>) {
        if !suspicion.probing && !suspicion.refused {
            suspicion.probing = true;
            out.push(Action::ProbePeerProcess);
        }
    }

    /// ICMP port unreachable from the peer's host: half of the proof, and a reason to probe (never a reason to take
    /// over alone: anyone who knows the ports can forge the ICMP).
    pub(super) fn on_port_unreachable(&mut self, now: u64, out: &mut Vec<Action>) {
        if !self.peer_suspectable(now) {
            return;
        }
        let suspicion = self.process_suspicion.get_or_insert_default();
        suspicion.port_unreachable = true;
        Self::probe_once(suspicion, out);
        self.confirm_process_gone(now, out);
    }

    /// The sync session was closed or reset by the peer's side without a goodbye (its kernel closes a dead
    /// daemon's sockets at once): probe the sync port, and send a heartbeat now so that the peer's host answers it
    /// with ICMP within a round trip instead of at our next interval.
    pub(super) fn on_session_lost(&mut self, now: u64, out: &mut Vec<Action>) {
        if !self.peer_suspectable(now) {
            return;
        }
        let suspicion = self.process_suspicion.get_or_insert_default();
        Self::probe_once(suspicion, out);
        self.send_now = true;
    }

    /// The probe's answer. Not refused (accepted, timed out, failed otherwise): the suspicion ends, the peer lives
    /// as far as anyone can tell. Refused: the other half of the proof.
    pub(super) fn on_probe_result(&mut self, refused: bool, now: u64, out: &mut Vec<Action>) {
        let Some(suspicion) = self.process_suspicion.as_mut().filter(|s| s.probing) else {
            return;
        };
        suspicion.probing = false;
        if !refused {
            self.process_suspicion = None;
            return;
        }
        suspicion.refused = true;
        if !suspicion.port_unreachable {
            suspicion.next_provoke_ms = now;
            suspicion.provoke_until_ms = now.saturating_add(PROVOKE_FOR_MS);
        }
        self.confirm_process_gone(now, out);
    }

    /// When the next extra heartbeat is due while the suspicion waits for the ICMP (for `next_timeout`).
    pub(super) fn provoke_due_ms(&self) -> Option<u64> {
        self.process_suspicion
            .filter(|s| s.refused && !s.port_unreachable && s.next_provoke_ms <= s.provoke_until_ms)
            .map(|s| s.next_provoke_ms)
    }

    /// Sends a heartbeat now if one is due to draw the ICMP (see [`PROVOKE_EVERY_MS`]).
    pub(super) fn provoke_port_unreachable(&mut self, now: u64) {
        if self.provoke_due_ms().is_some_and(|due| now >= due)
            && let Some(s) = self.process_suspicion.as_mut()
        {
            s.next_provoke_ms = now.saturating_add(PROVOKE_EVERY_MS);
            self.send_now = true;
        }
    }

    /// Gives the peer up when its host refused both ports since the suspicion began (a heartbeat in between would
    /// have cleared it: a daemon that restarted quickly is not declared dead for its previous run).
    fn confirm_process_gone(&mut self, now: u64, out: &mut Vec<Action>) {
        let proven = self
            .process_suspicion
            .is_some_and(|s| s.port_unreachable && s.refused);
        if !proven || self.peer_dead_reported {
            return;
        }
        let Some(last_heard) = self.last_heard_ms() else {
            return;
        };
        self.process_suspicion = None;
        self.gone_run = self.peer.as_ref().map(|p| GoneRun {
            boot_epoch: p.heartbeat.boot_epoch,
            at_ms: now,
        });
        self.peer_dead_reported = true;
        self.peer_warned = true;
        self.peer_process_gone = true;
        out.push(Action::Event(Event::PeerProcessGone {
            silent_ms: now.saturating_sub(last_heard),
        }));
    }
}
