//! Duplicate-VIP detection, wired: one task listens on the VIP interface ([`ClaimSocket`]) and carries out what the
//! sans-IO [`ConflictDetector`] decides — probes every `[heartbeat] conflict_check_ms` while this node is active,
//! conflicts logged at error, re-announcements through the VIP layer — and status reads the detector's record.
//! Runs only with `manage_vips = true`: otherwise something else owns the addresses and their announcements.

use super::Daemon;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_cluster::wire::NodeState;
use tandem_config::service_vips;
use tandem_status as doc;
use tandem_vip::{ClaimSocket, ConflictAction, ConflictDetector, VipManager};

/// How often the interface (index, MAC) is read again, and a failed socket retried.
const LINK_REFRESH: Duration = Duration::from_secs(5);
/// A failure of the same kind (probe send, receive, socket) is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The detector and what the task reports about itself; shared with status.
#[derive(Default)]
pub(super) struct ConflictState {
    detector: Mutex<Option<ConflictDetector>>,
    /// The check interval while the task watches the interface; 0 while it does not.
    check_ms: AtomicU64,
}

impl ConflictState {
    fn with_detector<T>(&self, f: impl FnOnce(&mut ConflictDetector) -> T) -> Option<T> {
        // The detector is plain data, consistent after any panic elsewhere.
        self.detector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .map(f)
    }

    /// The status document's part: every conflict with wall-clock times.
    pub(super) fn document(&self) -> doc::VipConflicts {
        let now = Instant::now();
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ago = |at: Instant| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        };
        let (conflicts, probes_sent) = self
            .with_detector(|d| (d.conflicts(now), d.probes_sent()))
            .unwrap_or_default();
        doc::VipConflicts {
            check_ms: self.check_ms.load(Ordering::Relaxed),
            probes_sent,
            in_conflict: u32::try_from(conflicts.iter().filter(|c| c.current).count())
                .unwrap_or(u32::MAX),
            vips: conflicts
                .into_iter()
                .map(|c| doc::VipConflict {
                    vip: c.vip,
                    detected: c.detected,
                    current: c.current,
                    claimants: c
                        .claimants
                        .iter()
                        .map(|claimant| doc::VipClaimant {
                            mac: doc::mac_text(claimant.mac),
                            kind: claimant.kind.as_str().to_owned(),
                            first_seen_unix_ms: wall_ms.saturating_sub(ago(claimant.first_seen)),
                            last_seen_unix_ms: wall_ms.saturating_sub(ago(claimant.last_seen)),
                            last_seen_age_ms: ago(claimant.last_seen),
                            frames: claimant.frames,
                            current: claimant.current,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// At most one line per `LOG_EVERY` for one kind of failure, with how many were not logged.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed)` when this one should be logged.
    fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The socket and the interface it watches.
struct Watch {
    socket: ClaimSocket,
    index: u32,
    mac: Option<[u8; 6]>,
}

impl Daemon {
    /// Starts the duplicate-VIP task (with `manage_vips = true`).
    pub(super) fn spawn_conflict_watch(self: &Arc<Self>) {
        if !self.node.node.manage_vips {
            return;
        }
        let manager = match VipManager::new(&self.node.node.interface) {
            Ok(manager) => manager,
            Err(error) => {
                tracing::error!(%error, "duplicate-VIP detection cannot read the VIP interface: not running");
                return;
            }
        };
        let vips = service_vips(&self.current().cluster);
        let interval = Duration::from_millis(self.current().cluster.heartbeat.conflict_check_ms);
        *self
            .conflicts
            .detector
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ConflictDetector::new(interval, &vips));
        let reannounce = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(reannouncer(Arc::downgrade(self), Arc::clone(&reannounce)));
        tokio::spawn(watch(Arc::downgrade(self), manager, reannounce));
    }
}

/// Re-announces the VIPs once per request (a request made during one is served after it), while holding them.
async fn reannouncer(daemon: Weak<Daemon>, requests: Arc<tokio::sync::Notify>) {
    loop {
        requests.notified().await;
        let Some(daemon) = daemon.upgrade() else {
            break;
        };
        let mut state = daemon.vips.lock().await;
        if let Some(floating) = state.floating.as_mut().filter(|f| f.holding()) {
            tracing::warn!("re-announcing the VIPs after a duplicate-VIP conflict");
            if let Err(error) = floating.reannounce().await {
                tracing::error!(%error, "re-announcing the VIPs after a conflict failed");
            }
        }
    }
}

/// The task: keeps the detector's inputs current (VIPs, interval, holding, MAC), feeds it the claims heard, and
/// carries out its actions. Ends with the daemon.
async fn watch(daemon: Weak<Daemon>, manager: VipManager, reannounce: Arc<tokio::sync::Notify>) {
    let Some(mut cluster_status) = daemon.upgrade().map(|d| d.cluster.status.clone()) else {
        return;
    };
    let mut watch: Option<Watch> = None;
    let mut next_link = Instant::now();
    let (mut socket_errors, mut send_errors, mut recv_errors) = (
        Throttle::default(),
        Throttle::default(),
        Throttle::default(),
    );
    loop {
        let Some(d) = daemon.upgrade() else {
            break;
        };
        let now = Instant::now();
        let cluster = d.current().cluster;
        let check_ms = cluster.heartbeat.conflict_check_ms;
        let (holding, yield_to_peer) = {
            let status = cluster_status.borrow_and_update();
            // Both active (a split brain, heard or not): the election resolves it; fighting would flip the clients.
            // A peer heard in a state that holds nothing has a stale VIP: fight it.
            let peer_holds_nothing = status.peer.as_ref().is_some_and(|peer| {
                peer.alive
                    && matches!(
                        peer.state,
                        NodeState::Standby
                            | NodeState::Init
                            | NodeState::Fault
                            | NodeState::Stopped
                    )
            });
            (status.state == NodeState::Active, !peer_holds_nothing)
        };
        let state = Arc::clone(&d.conflicts);
        let peer = d.node.node.peer;
        drop(d);
        if check_ms == 0 {
            watch = None;
        } else if now >= next_link {
            next_link = now + LINK_REFRESH;
            match manager.link().await {
                Ok(link) => {
                    if watch.as_ref().is_none_or(|w| w.index != link.index) {
                        watch = match ClaimSocket::open(link.index) {
                            Ok(socket) => Some(Watch {
                                socket,
                                index: link.index,
                                mac: None,
                            }),
                            Err(error) => {
                                if let Some(suppressed) = socket_errors.pass(now) {
                                    tracing::error!(%error, suppressed, interface = manager.interface(),
                                        "duplicate-VIP detection cannot open its packet socket; retrying");
                                }
                                None
                            }
                        };
                    }
                    if let Some(w) = watch.as_mut() {
                        w.mac = link.mac.filter(|_| link.resolves_neighbours);
                    }
                }
                Err(error) => {
                    if let Some(suppressed) = socket_errors.pass(now) {
                        tracing::error!(%error, suppressed, "duplicate-VIP detection cannot read the VIP interface; retrying");
                    }
                }
            }
        }
        let running = watch.as_ref().is_some_and(|w| w.mac.is_some());
        state
            .check_ms
            .store(if running { check_ms } else { 0 }, Ordering::Relaxed);
        let wakeup = state
            .with_detector(|det| {
                det.set_vips(&service_vips(&cluster));
                det.set_interval(Duration::from_millis(check_ms), now);
                det.set_own_mac(watch.as_ref().and_then(|w| w.mac));
                det.set_peer(peer, yield_to_peer);
                det.set_holding(holding && running, now);
                det.next_wakeup()
            })
            .flatten();
        // Inputs are read again at least every interval (a reload, the MAC), at once when the role changes.
        let idle = now
            + Duration::from_millis(if check_ms == 0 {
                1000
            } else {
                check_ms.clamp(100, 1000)
            });
        let until = wakeup.map_or(idle, |w| w.min(idle));
        let mut actions = Vec::new();
        tokio::select! {
            changed = cluster_status.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(until.into()) => {}
            received = async {
                match watch.as_ref() {
                    Some(w) => w.socket.recv_claims().await,
                    None => std::future::pending().await,
                }
            } => match received {
                Ok((claims, _frames)) => {
                    let now = Instant::now();
                    state.with_detector(|det| {
                        for claim in &claims {
                            actions.extend(det.observe(claim, now));
                        }
                    });
                }
                Err(error) => {
                    if let Some(suppressed) = recv_errors.pass(Instant::now()) {
                        tracing::error!(%error, suppressed, "duplicate-VIP detection: receiving failed; reopening");
                    }
                    watch = None;
                    next_link = Instant::now();
                }
            },
        }
        if let Some(due) = state.with_detector(|det| det.poll(Instant::now())) {
            actions.extend(due);
        }
        for action in actions {
            match action {
                ConflictAction::Probe(vips) => {
                    let Some(w) = watch.as_ref() else { continue };
                    let Some(mac) = w.mac else { continue };
                    let mut sent = 0;
                    for vip in vips {
                        match w.socket.send_probe(mac, vip) {
                            Ok(()) => sent += 1,
                            Err(error) => {
                                if let Some(suppressed) = send_errors.pass(Instant::now()) {
                                    tracing::error!(%error, %vip, suppressed, "duplicate-VIP probe could not be sent");
                                }
                            }
                        }
                    }
                    state.with_detector(|det| det.probes_done(sent));
                }
                ConflictAction::Report {
                    vip,
                    mac,
                    kind,
                    new,
                    suppressed,
                } => {
                    let mac = doc::mac_text(mac);
                    if new {
                        tracing::error!(%vip, %mac, kind = kind.as_str(),
                            "VIP conflict: another machine claims this node's VIP; re-announcing");
                    } else {
                        tracing::error!(%vip, %mac, kind = kind.as_str(), unlogged_claims = suppressed,
                            "VIP conflict goes on: another machine still claims this node's VIP");
                    }
                }
                ConflictAction::Reannounce => reannounce.notify_one(),
            }
        }
    }
}
