//! What this node tells its peer: the heartbeat it builds, and the bookkeeping that says whether the peer's news of us
//! is recent enough to trust a grant or an offer written on it.

use super::machine::Election;
use crate::wire::{Heartbeat, NodeState};

impl Election {
    /// The heartbeat this node would send now (consumes a sequence number).
    pub fn build_heartbeat(&mut self, now_ms: u64) -> Heartbeat {
        self.seq += 1;
        self.stats.heartbeats_built += 1;
        let (ack_epoch, ack_seq) = self
            .peer
            .as_ref()
            .map_or((0, 0), |p| (p.heartbeat.boot_epoch, p.heartbeat.seq));
        let holds = self.holds_vips();
        let hb = Heartbeat {
            cluster: self.cfg.cluster.clone(),
            node: self.cfg.node.clone(),
            role: self.cfg.role,
            state: self.state,
            boot_epoch: self.cfg.boot_epoch,
            seq: self.seq,
            holds_vips: holds,
            // While releasing on purpose (make-before-break) the offer is made holding the VIPs: a peer of this
            // release takes it at once; an older one ignores an offer from a holder, and takes the classic one
            // (standby or stopped, holding nothing) that follows the removal.
            handover: self.handing_over()
                || (!holds
                    && (self.state == NodeState::Stopped
                        || (self.handover_pending && self.state == NodeState::Standby))),
            takeover_request: self.takeover_request(now_ms),
            caught_up: self.caught_up,
            ping: self.ping,
            ack_epoch,
            ack_seq,
            config_generation: self.config_generation,
            config_digest: self.config_digest,
            servers_up: self.servers_up,
            servers_total: self.servers_total,
        };
        // Remember where the current run of offering (or not offering) heartbeats began: news from the peer
        // older than that is not trusted as a grant.
        if let Some(o) = self.overlap.as_mut()
            && o.offer_seq.is_none()
        {
            o.offer_seq = Some(self.seq);
        }
        let status = self.offer_status();
        if status != self.last_sent_status {
            self.status_seq = self.seq;
        }
        self.last_sent_status = status;
        self.sent_at.push_back((self.seq, now_ms));
        let keep_from = now_ms.saturating_sub(self.cfg.timings.dead_ms);
        while self.sent_at.len() > 1 && self.sent_at.front().is_some_and(|&(_, at)| at < keep_from)
        {
            self.sent_at.pop_front();
        }
        hb
    }

    /// The sequence number of the last heartbeat built (0 before the first): the replay guard's proof that a peer
    /// whose boot epoch went backwards has heard this incarnation recently ([`crate::wire::OwnView`]).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Did the peer write this after hearing from us less than `dead_ms` ago (by our heartbeat it acknowledges)?
    /// Until `dead_ms` after that heartbeat left, the peer cannot have given us up as dead and taken the VIPs back,
    /// so an offer it makes cannot be one it has already withdrawn that way.
    pub(super) fn peer_news_is_fresh(&self, peer: &Heartbeat, now: u64) -> bool {
        if peer.ack_epoch != self.cfg.boot_epoch {
            return false;
        }
        self.sent_at
            .iter()
            .rev()
            .find(|&&(seq, _)| seq <= peer.ack_seq)
            .is_some_and(|&(_, at)| now < at.saturating_add(self.cfg.timings.dead_ms))
    }

    /// Has the peer seen our latest heartbeat that let it take the VIPs?
    pub(super) fn peer_saw_my_status(&self, peer: &Heartbeat) -> bool {
        // A change of offer decided but not sent yet cannot have been seen.
        let required = if self.offer_status() != self.last_sent_status {
            self.seq + 1
        } else {
            self.status_seq
        };
        // The epoch check also discards news from a peer that has not heard this incarnation of us yet.
        peer.ack_epoch == self.cfg.boot_epoch && peer.ack_seq >= required
    }

    /// (may hold the VIPs, lets the peer take them): a grant from the peer is only trusted if it was written after
    /// the peer saw our current value. Holding in between makes an older offer of the peer stale: it is not taken
    /// twice.
    pub(super) fn offer_status(&self) -> (bool, bool) {
        (self.holds_vips(), self.granting())
    }

    /// Would a heartbeat built now let the peer take the VIPs (handing over, stopped, fault, or acknowledging its
    /// claim while standing by)?
    pub(super) fn granting(&self) -> bool {
        let peer_claims = self
            .peer
            .as_ref()
            .is_some_and(|p| p.heartbeat.state == NodeState::Claiming);
        self.handing_over()
            || !self.holds_vips()
                && (matches!(self.state, NodeState::Stopped | NodeState::Fault)
                    || (self.handover_pending && self.state == NodeState::Standby)
                    || (matches!(self.state, NodeState::Init | NodeState::Standby) && peer_claims))
    }
}
