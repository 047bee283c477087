//! The takeover-request flag in the heartbeat: a pending admin takeover, or a caught-up primary failing back.

use super::machine::Election;
use super::messages::{Action, Event};
use crate::wire::{NodeState, Role};

impl Election {
    /// The takeover-request flag: a pending admin takeover, or a caught-up primary failing back.
    pub(super) fn takeover_request(&self, now: u64) -> bool {
        self.admin_request_until.is_some_and(|until| now < until) || self.wants_failback(now)
    }

    pub(super) fn wants_failback(&self, now: u64) -> bool {
        if !(self.cfg.auto_failback
            && self.cfg.role == Role::Primary
            && self.caught_up
            && !self.failback_suppressed
            && self.state == NodeState::Standby)
        {
            return false;
        }
        self.live_peer(now).is_some_and(|p| {
            p.role == Role::Secondary
                && p.state == NodeState::Active
                && p.holds_vips
                && (self.ping.ok() || !p.ping.ok())
        })
    }

    pub(super) fn update_request_flag(&mut self, now: u64, out: &mut Vec<Action>) {
        let flag = self.takeover_request(now);
        if flag != self.request_flag_sent {
            self.request_flag_sent = flag;
            self.send_now = true;
            if flag {
                let failback = self.admin_request_until.is_none();
                out.push(Action::Event(Event::TakeoverRequested { failback }));
            }
        }
    }
}
