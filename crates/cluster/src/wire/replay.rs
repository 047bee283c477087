//! The replay guard: per sending node, which (boot epoch, sequence number) pairs are new, including the one way a
//! peer whose boot epoch went backwards is let back in without letting a replay through.

use std::collections::HashMap;

use super::{Heartbeat, IncompatibleHeartbeat, Reject};

/// Rejects replayed and reordered heartbeats: per sending node, the (boot epoch, sequence) pair must strictly
/// increase. An epoch higher than any seen from that node means the peer restarted and is accepted with any
/// sequence number.
///
/// An epoch that went backwards (the peer lost its `boot_epoch` file while its clock is behind its last run) is
/// refused as `stale`, unless [`ReplayGuard::check_fresh`] is given this node's own view and the heartbeat proves it
/// was written now, not captured earlier: the node's current epoch has been silent for `silence_ms` (the dead time:
/// one incarnation at a time), and the heartbeat acknowledges one of *our* heartbeats sent after that current epoch
/// was first accepted. Anything written by an earlier incarnation of the peer was written before that moment, so it
/// can only acknowledge older heartbeats of ours: a replay never passes (see docs/protocol.md, "Boot epoch").
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<String, Seen>,
}

/// What the guard remembers of one sending node.
#[derive(Clone, Copy, Debug)]
struct Seen {
    epoch: u64,
    seq: u64,
    /// The highest epoch ever accepted from the node: a replay of an epoch left behind is never "a restart".
    highest_epoch: u64,
    /// Our own last sequence number when `epoch` was first accepted (None: not known, no recovery).
    own_seq_at_switch: Option<u64>,
    /// When the node was last accepted (None: not known).
    last_ms: Option<u64>,
}

/// This node's own view, for [`ReplayGuard::check_fresh`]: its incarnation and its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnView {
    /// This node's boot epoch.
    pub epoch: u64,
    /// The sequence number of the last heartbeat this node built (sent or about to be).
    pub seq: u64,
    /// Now, in ms, on any monotonic clock (the same for every call).
    pub now_ms: u64,
    /// How long the peer's current epoch must have been silent before a lower one may replace it (`dead_ms`).
    pub silence_ms: u64,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts the heartbeat (recording its epoch and sequence) or says why not. Nothing is recorded on rejection.
    /// A lower epoch is always `stale` here; [`ReplayGuard::check_fresh`] can let a restarted peer back in.
    pub fn check(&mut self, heartbeat: &Heartbeat) -> Result<(), Reject> {
        self.judge(heartbeat, None)
    }

    /// Like [`ReplayGuard::check`], and a peer whose boot epoch went backwards is accepted once its heartbeat proves
    /// freshness against `own` (see the type's doc).
    pub fn check_fresh(&mut self, heartbeat: &Heartbeat, own: OwnView) -> Result<(), Reject> {
        self.judge(heartbeat, Some(own))
    }

    /// Like [`ReplayGuard::check`] for a heartbeat of a version this node cannot parse, by its frozen envelope: it
    /// shares the sender's (epoch, sequence) record with readable heartbeats, so a replayed datagram of either kind
    /// never counts as a sign of life. A lower epoch is always `stale` (the proof of freshness needs the body).
    pub fn check_incompatible(&mut self, heartbeat: &IncompatibleHeartbeat) -> Result<(), Reject> {
        self.judge_parts(&heartbeat.node, heartbeat.boot_epoch, heartbeat.seq, None)
    }

    fn judge(&mut self, heartbeat: &Heartbeat, own: Option<OwnView>) -> Result<(), Reject> {
        self.judge_parts(
            &heartbeat.node,
            heartbeat.boot_epoch,
            heartbeat.seq,
            own.map(|o| (heartbeat, o)),
        )
    }

    /// `fresh`: the parsed heartbeat and this node's view, when a lower epoch may prove itself fresh.
    fn judge_parts(
        &mut self,
        node: &str,
        epoch: u64,
        seq: u64,
        fresh: Option<(&Heartbeat, OwnView)>,
    ) -> Result<(), Reject> {
        let own = fresh.map(|(_, o)| o);
        let switched = |highest_epoch: u64| Seen {
            epoch,
            seq,
            highest_epoch: highest_epoch.max(epoch),
            own_seq_at_switch: own.map(|o| o.seq),
            last_ms: own.map(|o| o.now_ms),
        };
        let Some(last) = self.last.get_mut(node) else {
            self.last.insert(node.to_owned(), switched(epoch));
            return Ok(());
        };
        if epoch == last.epoch {
            if seq <= last.seq {
                return Err(Reject::Replay);
            }
            last.seq = seq;
            if let Some(o) = own {
                last.last_ms = Some(o.now_ms);
            }
            return Ok(());
        }
        if epoch > last.highest_epoch || fresh.is_some_and(|(hb, o)| proves_fresh(hb, last, o)) {
            *last = switched(last.highest_epoch);
            return Ok(());
        }
        Err(Reject::Stale)
    }

    /// The last accepted (epoch, seq) of a node.
    pub fn last(&self, node: &str) -> Option<(u64, u64)> {
        self.last.get(node).map(|s| (s.epoch, s.seq))
    }
}

/// May `heartbeat`, of an epoch other than the node's current one and not above its highest, replace it?
fn proves_fresh(heartbeat: &Heartbeat, last: &Seen, own: OwnView) -> bool {
    let silent = match last.last_ms {
        Some(at) => own.now_ms.saturating_sub(at) >= own.silence_ms,
        None => false,
    };
    let acknowledges_recent = match last.own_seq_at_switch {
        Some(switch_seq) => {
            heartbeat.ack_epoch == own.epoch
                && heartbeat.ack_seq > switch_seq
                && heartbeat.ack_seq <= own.seq
        }
        None => false,
    };
    silent && acknowledges_recent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::sample;

    #[test]
    fn replay_guard_rules() {
        let mut guard = ReplayGuard::new();
        let mut hb = sample(10);
        assert_eq!(guard.check(&hb), Ok(()));
        assert_eq!(guard.check(&hb), Err(Reject::Replay), "same seq");
        hb.seq = 9;
        assert_eq!(guard.check(&hb), Err(Reject::Replay), "older seq");
        hb.seq = 12;
        assert_eq!(guard.check(&hb), Ok(()), "gaps are fine");
        hb.boot_epoch -= 1;
        hb.seq = 1000;
        assert_eq!(guard.check(&hb), Err(Reject::Stale), "older epoch");
        hb.boot_epoch += 2;
        hb.seq = 1;
        assert_eq!(guard.check(&hb), Ok(()), "peer restarted");
        assert_eq!(guard.last("lb1"), Some((hb.boot_epoch, 1)));
        let mut other = sample(1);
        other.node = "lb2".into();
        assert_eq!(guard.check(&other), Ok(()), "tracked per node");
    }

    /// A heartbeat of `node` at (epoch, seq) acknowledging our (ack_epoch, ack_seq).
    fn beat(epoch: u64, seq: u64, ack: (u64, u64)) -> Heartbeat {
        let mut hb = sample(seq);
        hb.boot_epoch = epoch;
        hb.ack_epoch = ack.0;
        hb.ack_seq = ack.1;
        hb
    }

    fn own(seq: u64, now_ms: u64) -> OwnView {
        OwnView {
            epoch: 77,
            seq,
            now_ms,
            silence_ms: 1000,
        }
    }

    #[test]
    fn a_peer_whose_epoch_went_backwards_is_let_back_in_only_with_proof() {
        let mut guard = ReplayGuard::new();
        // The old incarnation (epoch 500) talks to us (epoch 77) while we send heartbeats 1..=40.
        let captured = beat(500, 9, (77, 10));
        assert_eq!(guard.check_fresh(&beat(500, 1, (77, 2)), own(3, 0)), Ok(()));
        assert_eq!(guard.check_fresh(&captured, own(11, 100)), Ok(()));
        assert_eq!(
            guard.check_fresh(&beat(500, 30, (77, 39)), own(40, 2000)),
            Ok(())
        );
        // It dies; a new incarnation comes back with a lower epoch (state file lost, clock behind).
        let fresh = |seq, ack| beat(100, seq, (77, ack));
        assert_eq!(
            guard.check_fresh(&fresh(1, 45), own(45, 2500)),
            Err(Reject::Stale),
            "the current epoch was heard 500 ms ago: not silent for the dead time yet"
        );
        assert_eq!(
            guard.check(&fresh(2, 60)),
            Err(Reject::Stale),
            "without our own view a lower epoch is always stale"
        );
        assert_eq!(
            guard.check_fresh(&beat(100, 3, (76, 60)), own(60, 3100)),
            Err(Reject::Stale),
            "acknowledges another incarnation of ours"
        );
        assert_eq!(
            guard.check_fresh(&fresh(3, 61), own(60, 3100)),
            Err(Reject::Stale),
            "acknowledges a heartbeat we never sent"
        );
        assert_eq!(guard.check_fresh(&fresh(4, 60), own(60, 3100)), Ok(()));
        assert_eq!(guard.last("lb1"), Some((100, 4)));
        // Replays of the old incarnation (a higher epoch, captured earlier) are not a "restart".
        assert_eq!(
            guard.check_fresh(&captured, own(200, 9000)),
            Err(Reject::Stale)
        );
        assert_eq!(
            guard.check_fresh(&beat(500, 31, (77, 40)), own(200, 9000)),
            Err(Reject::Stale),
            "even the old incarnation's latest, never delivered"
        );
        // The new incarnation carries on; a second one with an even lower epoch must wait for its silence too.
        assert_eq!(guard.check_fresh(&fresh(5, 61), own(61, 9000)), Ok(()));
        assert_eq!(
            guard.check_fresh(&beat(50, 1, (77, 62)), own(62, 9100)),
            Err(Reject::Stale),
            "epoch 100 was heard 100 ms ago"
        );
        // A normal restart (a higher epoch than ever seen) is accepted at once, as always.
        assert_eq!(
            guard.check_fresh(&beat(501, 1, (77, 62)), own(62, 9100)),
            Ok(())
        );
    }
}
