//! Who holds the VIPs while both nodes hear each other: taking an offer or a grant, claiming when neither holds them
//! (ping nodes, then a takeover request, then the primary, then the lower name), and ending a split brain.

use super::machine::Election;
use super::messages::{Action, Event, Reason};
use crate::wire::{Heartbeat, NodeState, Role};

impl Election {
    pub(super) fn evaluate_standby(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(peer) = self.live_peer(now).cloned() else {
            if self.peer_incompatible(now).is_some() {
                // Alive, state unknown: it may hold the VIPs. Never take over because of it.
                if self.state == NodeState::Claiming {
                    self.claim_seq = None;
                    self.set_state(NodeState::Standby, Reason::PeerIncompatible, now, out);
                }
                return;
            }
            let reason = if self.peer_process_gone {
                Reason::PeerProcessGone
            } else if self.cfg.has_peer {
                Reason::PeerDead
            } else {
                Reason::Standalone
            };
            self.start_acquire(reason, now, out);
            return;
        };
        if peer.holds_vips {
            if self.takes_overlapping_offer(&peer, now) {
                self.start_acquire(Reason::HandoverFromPeer, now, out);
                // The peer keeps them until we hold them: its connections in flight can be drained through us.
                self.vip_op_handover = true;
                return;
            }
            if self.state == NodeState::Claiming {
                self.claim_seq = None;
                self.set_state(NodeState::Standby, Reason::PeerHoldsVips, now, out);
            }
            return;
        }
        let grant_from_peer =
            peer.handover || matches!(peer.state, NodeState::Stopped | NodeState::Fault);
        let mutual_offer = peer.handover && self.handover_pending;
        if mutual_offer {
            // Both nodes offer the role to each other (each released before seeing the other's release): taking
            // the peer's offer could overlap with the peer taking ours. Withdraw ours; the claim below decides,
            // and a later offer of the peer counts once it acknowledges the withdrawal.
            self.handover_pending = false;
        } else if grant_from_peer && !self.peer_saw_my_status(&peer) {
            // The peer wrote this before it saw our current offer status (or an older incarnation of the peer wrote
            // it): it may be taking the VIPs right now. Wait for news that acknowledges it.
            return;
        }
        match peer.state {
            NodeState::Stopped => return self.start_acquire(Reason::PeerStopped, now, out),
            NodeState::Fault => return self.start_acquire(Reason::PeerFault, now, out),
            // Not holding VIPs in these states is transient; wait for the next heartbeat.
            NodeState::Releasing | NodeState::Acquiring | NodeState::Active => return,
            NodeState::Init | NodeState::Standby | NodeState::Claiming => {}
        }
        // An offer written on old news of us may already be withdrawn (the peer gave us up as dead and took the
        // VIPs back while it was on its way): then only the claim below, which the peer must grant, may move them.
        if peer.handover && !mutual_offer && self.peer_news_is_fresh(&peer, now) {
            return self.start_acquire(Reason::HandoverFromPeer, now, out);
        }
        let wins = !self.handover_pending && self.wins_claim(&peer, now);
        if !wins {
            if self.state == NodeState::Claiming {
                self.claim_seq = None;
                self.set_state(NodeState::Standby, Reason::ClaimYielded, now, out);
            }
            return;
        }
        match self.claim_seq {
            None => {
                // The claim goes out in the heartbeat sent at the end of this step.
                self.claim_seq = Some(self.seq + 1);
                self.send_now = true;
                self.set_state(NodeState::Claiming, Reason::ClaimStarted, now, out);
            }
            Some(claim_seq) => {
                let granted = matches!(peer.state, NodeState::Init | NodeState::Standby)
                    && peer.ack_epoch == self.cfg.boot_epoch
                    && peer.ack_seq >= claim_seq;
                if granted {
                    self.start_acquire(Reason::ClaimGranted, now, out);
                }
            }
        }
    }

    pub(super) fn evaluate_holder(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(peer) = self.live_peer(now).cloned() else {
            match self.peer_incompatible(now).cloned() {
                // A peer we cannot read says it may hold the VIPs too: the split brain rule on its frozen envelope
                // (role, name, epoch), which it computes the same way on ours.
                Some(p) if p.holds_vips => {
                    let won = self.wins_split_brain_over(
                        p.role == Some(Role::Primary),
                        &p.node,
                        p.boot_epoch,
                    );
                    self.split_brain(&p.node, won, out);
                    if !won && matches!(self.state, NodeState::Active | NodeState::Acquiring) {
                        self.start_release(
                            Reason::SplitBrainLost,
                            false,
                            NodeState::Standby,
                            now,
                            out,
                        );
                    }
                }
                Some(_) if self.split_brain_episode => {
                    // The loser has dropped the addresses: make sure every neighbour points here.
                    self.split_brain_episode = false;
                    if self.state == NodeState::Active {
                        self.announce(out);
                    }
                }
                _ => self.split_brain_episode = false,
            }
            return;
        };
        if peer.holds_vips && self.cfg.make_before_break && peer_handing_over(&peer) {
            // The peer hands the role over and removes its VIPs as soon as it hears that we hold them (within its
            // bound): the planned overlap of a make-before-break handover, not a split brain.
            return;
        }
        if peer.holds_vips {
            // Both hold the VIPs: only a partition can lead here (planned handovers overlap only as above). The peer
            // may already be dropping them (it noticed first): then this node only has to announce.
            let won = self.wins_split_brain(&peer);
            self.split_brain(&peer.node, won, out);
            if !won && matches!(peer.state, NodeState::Active | NodeState::Acquiring) {
                self.start_release(Reason::SplitBrainLost, false, NodeState::Standby, now, out);
            }
            return;
        }
        if self.announce_on_contact {
            self.announce_on_contact = false;
            if self.state == NodeState::Active && !self.split_brain_episode {
                self.announce(out);
            }
        }
        if self.split_brain_episode && !peer.holds_vips {
            self.split_brain_episode = false;
            // The loser has dropped the addresses: make sure every neighbour points here.
            if self.state == NodeState::Active {
                self.announce(out);
            }
        }
        if self.state != NodeState::Active || peer.holds_vips || peer.state != NodeState::Standby {
            return;
        }
        if !self.ping.ok() && peer.ping.ok() {
            self.start_release(Reason::PingLost, true, NodeState::Standby, now, out);
        } else if peer.takeover_request && (peer.ping.ok() || !self.ping.ok()) {
            self.failback_suppressed = true;
            self.start_release(
                Reason::PeerRequestedTakeover,
                true,
                NodeState::Standby,
                now,
                out,
            );
        }
    }

    /// Take the peer's make-before-break offer (it still holds the VIPs)? Under the same conditions as a classic
    /// offer: written after the peer saw our current offer status, on fresh news of us, and not crossing an offer
    /// of ours.
    fn takes_overlapping_offer(&self, peer: &Heartbeat, now: u64) -> bool {
        self.cfg.make_before_break
            && peer_handing_over(peer)
            && !self.handover_pending
            && self.peer_saw_my_status(peer)
            && self.peer_news_is_fresh(peer, now)
    }

    /// Who should claim when neither node holds the VIPs: reachability of the ping nodes first, then an explicit
    /// takeover request, then the primary, then the lower node name. Both nodes compute the same answer from the
    /// same two heartbeats.
    pub(super) fn wins_claim(&self, peer: &Heartbeat, now: u64) -> bool {
        let mine = (
            self.ping.ok(),
            self.takeover_request(now),
            self.cfg.role == Role::Primary,
            std::cmp::Reverse((self.cfg.node.as_str(), self.cfg.boot_epoch)),
        );
        let theirs = (
            peer.ping.ok(),
            peer.takeover_request,
            peer.role == Role::Primary,
            std::cmp::Reverse((peer.node.as_str(), peer.boot_epoch)),
        );
        mine > theirs
    }

    /// Split brain: the primary keeps the VIPs; equal roles fall back to the lower node name.
    pub(super) fn wins_split_brain(&self, peer: &Heartbeat) -> bool {
        self.wins_split_brain_over(peer.role == Role::Primary, &peer.node, peer.boot_epoch)
    }

    /// The split brain rule on the fields every wire version carries (the frozen envelope).
    pub(super) fn wins_split_brain_over(&self, peer_primary: bool, node: &str, epoch: u64) -> bool {
        let mine = (
            self.cfg.role == Role::Primary,
            std::cmp::Reverse((self.cfg.node.as_str(), self.cfg.boot_epoch)),
        );
        let theirs = (peer_primary, std::cmp::Reverse((node, epoch)));
        mine > theirs
    }

    /// Counts and reports a split brain episode once; the winner announces.
    fn split_brain(&mut self, peer: &str, won: bool, out: &mut Vec<Action>) {
        if !self.split_brain_episode {
            self.split_brain_episode = true;
            self.stats.split_brains += 1;
            out.push(Action::Event(Event::SplitBrain {
                peer: peer.to_owned(),
                won,
            }));
            if won && self.state == NodeState::Active {
                self.announce(out);
            }
        }
    }
}

/// The peer is releasing on purpose and lets us take the VIPs while it may still hold them (make-before-break).
fn peer_handing_over(peer: &Heartbeat) -> bool {
    peer.state == NodeState::Releasing && peer.handover
}
