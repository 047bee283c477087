//! Which incoming connections may run a handshake on the accepting node, sans-IO: the source
//! check, the handshake limits, evictions and the failure back-off.
//!
//! Only the configured peer's address is admitted. That does not make a connection genuine: any
//! unprivileged user on the peer host connects from that address too, and nothing before the
//! dialer's proof (the third message) tells them apart. So the limits are built so that such a
//! user cannot keep the real dialer out:
//! - At most `per_source` handshakes run per source and `global` in all. A *source* is the
//!   peer's address together with a lane: connections from a privileged port (below 1024, which
//!   only root there can bind) and from any other port are separate sources. The daemon dials
//!   from a privileged port when it may (`CAP_NET_BIND_SERVICE`), so a local user on the peer
//!   host cannot even compete for its slots.
//! - A source at its limit does not refuse the newcomer: the newcomer evicts the source's
//!   oldest handshake. The real dialer never leaves a handshake half-done (it dials one
//!   connection at a time, each bounded by the handshake timeout), so idle connections held to
//!   squat the slots are the ones that go.
//! - A handshake that fails in the unprivileged lane puts that lane in a short back-off
//!   (connections refused at once), but only while the real peer is known to dial from a
//!   privileged port (a session authenticated there, none since in the other lane): otherwise
//!   the back-off would lock the real dialer out together with whoever failed.
//!
//! The timeout of each handshake is the driver's (`SyncSettings::handshake_timeout`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::reject::{RejectReason, Rejection};

/// Limits of handshakes in progress on the accepting node.
#[derive(Debug, Clone)]
pub struct HandshakeLimits {
    /// Handshakes in progress per source (per lane of the peer's address).
    pub per_source: usize,
    /// Handshakes in progress in all.
    pub global: usize,
    /// How long the unprivileged lane refuses connections after a failed handshake there (only
    /// while the real peer dials from a privileged port).
    pub failure_backoff: Duration,
    /// Dialing side: bind a random privileged source port (512..1024) when permitted, so the
    /// acceptor can tell our connections from an unprivileged local user's on this host.
    pub privileged_source_port: bool,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            per_source: 2,
            global: 4,
            failure_backoff: Duration::from_secs(1),
            privileged_source_port: true,
        }
    }
}

/// Ports below this can only be bound with privileges.
pub const PRIVILEGED_PORTS: u16 = 1024;

/// The two sources the peer's address is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// From a privileged source port: root (the daemon) on the peer host.
    Privileged,
    /// From any other port: possibly any local user on the peer host.
    Unprivileged,
}

impl Lane {
    pub fn of(from: SocketAddr) -> Self {
        if from.port() < PRIVILEGED_PORTS {
            Self::Privileged
        } else {
            Self::Unprivileged
        }
    }
}

/// An admitted handshake's handle.
pub type Ticket = u64;

/// The answer to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Run the handshake; first close the evicted one (its slot is now the newcomer's).
    Run {
        ticket: Ticket,
        evicted: Option<Ticket>,
    },
    /// Close the connection at once.
    Refuse(Rejection),
}

#[derive(Debug)]
struct InProgress {
    ticket: Ticket,
    lane: Lane,
}

/// The accepting node's handshakes in progress.
#[derive(Debug)]
pub struct Admission {
    peer: IpAddr,
    limits: HandshakeLimits,
    /// Oldest first.
    running: VecDeque<InProgress>,
    next_ticket: Ticket,
    /// The last authenticated session came from a privileged port.
    peer_dials_privileged: bool,
    /// The unprivileged lane refuses connections until then.
    backoff_until: Option<u64>,
}

impl Admission {
    pub fn new(peer: IpAddr, limits: HandshakeLimits) -> Self {
        Self {
            peer,
            limits,
            running: VecDeque::new(),
            next_ticket: 0,
            peer_dials_privileged: false,
            backoff_until: None,
        }
    }

    /// Handshakes in progress.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    fn in_lane(&self, lane: Lane) -> usize {
        self.running.iter().filter(|h| h.lane == lane).count()
    }

    /// Removes the oldest handshake of `lane`.
    fn evict_oldest(&mut self, lane: Lane) -> Option<Ticket> {
        let index = self.running.iter().position(|h| h.lane == lane)?;
        self.running.remove(index).map(|h| h.ticket)
    }

    /// A connection from `from` arrived at `now_ms`.
    pub fn admit(&mut self, from: SocketAddr, now_ms: u64) -> Admit {
        // An IPv4 peer reaching a dual-stack listener arrives as ::ffff:a.b.c.d (as the heartbeat's filter allows).
        if from.ip().to_canonical() != self.peer.to_canonical() {
            return Admit::Refuse(Rejection::new(
                RejectReason::UnexpectedSource,
                format!("connection from {from}, the peer is {}", self.peer),
            ));
        }
        let lane = Lane::of(from);
        if lane == Lane::Unprivileged && self.backoff_until.is_some_and(|until| now_ms < until) {
            return Admit::Refuse(Rejection::new(
                RejectReason::Throttled,
                format!("connection from {from} during the back-off after a failed handshake"),
            ));
        }
        let per_source = self.limits.per_source.max(1);
        let global = self.limits.global.max(1);
        let evicted = if self.in_lane(lane) >= per_source {
            self.evict_oldest(lane)
        } else if self.running.len() >= global {
            // Room is made in the unprivileged lane first: it may be anyone's.
            match self.evict_oldest(Lane::Unprivileged) {
                Some(ticket) => Some(ticket),
                None => self.evict_oldest(lane),
            }
        } else {
            None
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.running.push_back(InProgress { ticket, lane });
        Admit::Run { ticket, evicted }
    }

    /// The handshake of `ticket` ended (`authenticated` or not) at `now_ms`. An evicted ticket
    /// is already gone: nothing happens.
    pub fn finished(&mut self, ticket: Ticket, authenticated: bool, now_ms: u64) {
        let Some(index) = self.running.iter().position(|h| h.ticket == ticket) else {
            return;
        };
        let Some(done) = self.running.remove(index) else {
            return;
        };
        match (done.lane, authenticated) {
            (Lane::Privileged, true) => self.peer_dials_privileged = true,
            (Lane::Unprivileged, true) => {
                // Only the real peer authenticates: it dials from here now, never lock it out.
                self.peer_dials_privileged = false;
                self.backoff_until = None;
            }
            (Lane::Unprivileged, false) if self.peer_dials_privileged => {
                self.backoff_until = Some(now_ms + self.limits.failure_backoff.as_millis() as u64);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::new("192.168.1.22".parse().unwrap(), port)
    }

    fn run(admit: Admit) -> (Ticket, Option<Ticket>) {
        match admit {
            Admit::Run { ticket, evicted } => (ticket, evicted),
            Admit::Refuse(r) => panic!("refused: {r}"),
        }
    }

    fn refused(admit: Admit) -> RejectReason {
        match admit {
            Admit::Refuse(r) => r.reason,
            Admit::Run { .. } => panic!("admitted"),
        }
    }

    #[test]
    fn only_the_peer_address_is_admitted() {
        let mut a = Admission::new(peer(0).ip(), HandshakeLimits::default());
        let stranger = SocketAddr::new("192.168.1.99".parse().unwrap(), 700);
        assert_eq!(
            refused(a.admit(stranger, 0)),
            RejectReason::UnexpectedSource
        );
        assert_eq!(a.running(), 0);
    }

    #[test]
    fn an_ipv4_peer_on_a_dual_stack_listener_is_the_peer() {
        let mut a = Admission::new(peer(0).ip(), HandshakeLimits::default());
        let mapped = SocketAddr::new("::ffff:192.168.1.22".parse().unwrap(), 700);
        run(a.admit(mapped, 0));
        let other = SocketAddr::new("::ffff:192.168.1.99".parse().unwrap(), 700);
        assert_eq!(refused(a.admit(other, 0)), RejectReason::UnexpectedSource);
    }

    #[test]
    fn squatters_are_evicted_oldest_first_and_never_block_the_newcomer() {
        let mut a = Admission::new(peer(0).ip(), HandshakeLimits::default());
        let (t0, e) = run(a.admit(peer(40_000), 0));
        assert_eq!(e, None);
        let (t1, _) = run(a.admit(peer(40_001), 0));
        // Two idle connections hold the lane: the third evicts the oldest, and so on.
        let (t2, e) = run(a.admit(peer(40_002), 1));
        assert_eq!(e, Some(t0));
        let (_t3, e) = run(a.admit(peer(40_003), 2));
        assert_eq!(e, Some(t1));
        // The privileged lane is untouched by all that: the daemon's dial runs at once.
        let (tp, e) = run(a.admit(peer(700), 3));
        assert_eq!(e, None);
        assert_eq!(a.running(), 3);
        a.finished(tp, true, 4);
        a.finished(t2, false, 4);
        // An evicted ticket finishing later changes nothing.
        a.finished(t0, false, 5);
        assert_eq!(a.running(), 1);
    }

    #[test]
    fn a_flood_in_the_unprivileged_lane_never_evicts_the_privileged_one() {
        let mut a = Admission::new(peer(0).ip(), HandshakeLimits::default());
        let (tp, _) = run(a.admit(peer(900), 0));
        for i in 0..1000u16 {
            let (_, evicted) = run(a.admit(peer(30_000 + i), 1));
            assert_ne!(evicted, Some(tp));
        }
        assert!(a.running() <= HandshakeLimits::default().global);
        a.finished(tp, true, 2);
    }

    #[test]
    fn back_off_only_once_the_peer_is_known_to_dial_privileged() {
        let limits = HandshakeLimits::default();
        let mut a = Admission::new(peer(0).ip(), limits.clone());
        // The real peer dials unprivileged: failures there never throttle (it would be locked out).
        let (t, _) = run(a.admit(peer(50_000), 0));
        a.finished(t, false, 10);
        let (t, _) = run(a.admit(peer(50_001), 11));
        a.finished(t, true, 12);
        // Now the peer authenticates from a privileged port: failures elsewhere throttle.
        let (t, _) = run(a.admit(peer(800), 20));
        a.finished(t, true, 21);
        let (t, _) = run(a.admit(peer(50_002), 30));
        a.finished(t, false, 40);
        assert_eq!(refused(a.admit(peer(50_003), 41)), RejectReason::Throttled);
        // Never the privileged lane.
        let (t, _) = run(a.admit(peer(801), 42));
        a.finished(t, true, 43);
        let backoff = limits.failure_backoff.as_millis() as u64;
        let (t, _) = run(a.admit(peer(50_004), 40 + backoff));
        // A session from the unprivileged lane (the peer lost its privilege): no back-off again.
        a.finished(t, true, 41 + backoff);
        let (t, _) = run(a.admit(peer(50_005), 50 + backoff));
        a.finished(t, false, 51 + backoff);
        run(a.admit(peer(50_006), 52 + backoff));
    }

    #[test]
    fn the_global_limit_holds() {
        let limits = HandshakeLimits {
            per_source: 4,
            global: 4,
            ..HandshakeLimits::default()
        };
        let mut a = Admission::new(peer(0).ip(), limits);
        for i in 0..4u16 {
            run(a.admit(peer(40_000 + i), 0));
        }
        let (_, evicted) = run(a.admit(peer(600), 1));
        assert_eq!(evicted, Some(0));
        assert_eq!(a.running(), 4);
    }
}
