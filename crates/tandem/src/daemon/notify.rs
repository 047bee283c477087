//! systemd's notify protocol (sd_notify(3)) for `tandem run` as a `Type=notify` service: `READY=1` once every
//! listener is bound and the election runs, `STATUS=` with role, state, peer, services and servers (sent when it
//! changes, at most every [`STATUS_EVERY`]), `RELOADING=1` + `MONOTONIC_USEC=` then `READY=1` around every reload,
//! `STOPPING=1` on shutdown, and `WATCHDOG=1` every half `WATCHDOG_USEC` — only while the heartbeat driver's loop
//! keeps turning ([`WatchdogGate`]), so a wedged election stops the pings and systemd restarts the node (the peer
//! has taken over by then: docs/systemd.md). Without `NOTIFY_SOCKET` nothing is sent and no task is started.

use super::Daemon;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tandem_cluster::driver::ClusterStatus;
use tandem_cluster::wire::NodeState;

/// `STATUS=` is recomputed this often and sent when it changed: a few updates per second at most.
pub(super) const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Whether a service manager listens (`NOTIFY_SOCKET` set).
pub(super) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends one datagram. A failure is logged once at WARN (then at DEBUG): systemd going away must not flood the
/// journal, and the daemon goes on serving either way.
fn send(states: &[NotifyState<'_>]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(error) = sd_notify::notify(states) {
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(%error, "sd_notify failed");
        } else {
            tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET); further failures are logged at debug");
        }
    }
}

/// Start-up or a reload is over: serving, with this status.
pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. systemd ≥ 253 wants `MONOTONIC_USEC=` with it to tell this reload from an earlier one.
pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(error) => {
            tracing::debug!(%error, "no monotonic clock for MONOTONIC_USEC");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// Shutdown begins (the VIPs are being handed over).
pub(super) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: handing over to the peer"),
    ]);
}

fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// What `STATUS=` says about the node (taken from the election's status, the config and the health checks).
pub(super) struct StatusView<'a> {
    pub state: NodeState,
    /// Why the node is in fault.
    pub fault: Option<&'a str>,
    /// `[node] peer` is set.
    pub has_peer: bool,
    /// The peer as last heard: name, state, heard within dead_ms.
    pub peer: Option<(&'a str, NodeState, bool)>,
    /// The peer alive in a heartbeat wire version this node cannot read (a rolling upgrade): name, version.
    pub incompatible: Option<(&'a str, u16)>,
    pub services: usize,
    pub servers_up: u32,
    pub servers_total: u32,
}

impl<'a> StatusView<'a> {
    fn of(cluster: &'a ClusterStatus) -> Self {
        StatusView {
            state: cluster.state,
            fault: cluster.fault.as_deref(),
            has_peer: false,
            peer: cluster
                .peer
                .as_ref()
                .map(|peer| (peer.name.as_str(), peer.state, peer.alive)),
            incompatible: cluster
                .wire
                .incompatible_peer
                .as_ref()
                .map(|peer| (peer.name.as_str(), peer.version)),
            services: 0,
            servers_up: 0,
            servers_total: 0,
        }
    }
}

/// "active, peer lb2 standby, 23 services, 69/69 servers up". Nothing in it changes on its own (no ages or
/// counters), so it is only sent again when something real changed.
pub(super) fn status_line(view: &StatusView<'_>) -> String {
    let state = match (view.state, view.fault) {
        (NodeState::Fault, Some(reason)) => format!("fault ({reason})"),
        (state, _) => state.as_str().to_string(),
    };
    let peer = match (view.has_peer, view.incompatible, view.peer) {
        (false, _, _) => "standalone".to_string(),
        (true, Some((name, version)), _) => {
            format!("peer {name} alive in newer wire version {version} (upgrade in progress)")
        }
        (true, None, None) => "peer not heard yet".to_string(),
        (true, None, Some((name, state, true))) => format!("peer {name} {state}"),
        (true, None, Some((name, _, false))) => format!("peer {name} lost"),
    };
    let services = match view.services {
        1 => "1 service".to_string(),
        n => format!("{n} services"),
    };
    format!(
        "{state}, {peer}, {services}, {}/{} servers up",
        view.servers_up, view.servers_total
    )
}

/// Decides each watchdog ping: only when the heartbeat driver's loop has turned since the last one. The driver
/// turns at least every 10 ms while it runs, so a loop that stood still for half a watchdog period is wedged.
#[derive(Debug)]
pub(super) struct WatchdogGate {
    last_turns: u64,
}

impl WatchdogGate {
    pub(super) fn new(turns: u64) -> Self {
        Self { last_turns: turns }
    }

    /// Whether to ping now, given the driver's turn counter now.
    pub(super) fn progressed(&mut self, turns: u64) -> bool {
        let moved = turns != self.last_turns;
        self.last_turns = turns;
        moved
    }
}

/// The tasks that keep systemd informed while the daemon runs.
pub(super) struct NotifyTasks {
    status: Option<tokio::task::JoinHandle<()>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl NotifyTasks {
    /// Shutdown begins: `STOPPING=1`, and the status stays "stopping". The watchdog goes on while the heartbeat
    /// loop hands over (it turns until the handover is done).
    pub(super) fn stopping(&mut self) {
        if let Some(task) = self.status.take() {
            task.abort();
            stopping();
        }
    }

    pub(super) fn stop(mut self) {
        self.stopping();
        if let Some(task) = self.watchdog.take() {
            task.abort();
        }
    }
}

impl Daemon {
    /// The `STATUS=` line as of now.
    pub(super) fn notify_status(&self) -> String {
        let cluster = self.cluster_status();
        let (servers_up, servers_total) = self.health_summary();
        status_line(&StatusView {
            has_peer: self.node.node.peer.is_some(),
            services: self.current().cluster.services.len(),
            servers_up,
            servers_total,
            ..StatusView::of(&cluster)
        })
    }

    /// Sends `READY=1` with the status, then keeps `STATUS=` current and pings the watchdog (when systemd asked
    /// for one). Nothing at all without `NOTIFY_SOCKET`.
    pub(super) fn notify_ready(self: &Arc<Self>) -> NotifyTasks {
        let mut tasks = NotifyTasks {
            status: None,
            watchdog: None,
        };
        if !enabled() {
            return tasks;
        }
        let line = self.notify_status();
        ready(&line);
        tracing::info!(status = %line, "told systemd: ready");
        let daemon = Arc::downgrade(self);
        tasks.status = Some(tokio::spawn(async move {
            let mut last = line;
            let mut tick = tokio::time::interval(STATUS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(daemon) = daemon.upgrade() else {
                    break;
                };
                let line = daemon.notify_status();
                if line != last {
                    status(&line);
                    last = line;
                }
            }
        }));
        // sd-notify's `watchdog_enabled` honours WATCHDOG_PID: a watchdog meant for another process is not ours.
        if let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
            let dead_ms = self.current().cluster.heartbeat.dead_ms;
            if timeout < Duration::from_millis(dead_ms.saturating_mul(2)) {
                tracing::warn!(
                    watchdog_ms = timeout.as_millis() as u64,
                    dead_ms,
                    "WatchdogSec is below twice [heartbeat] dead_ms: a stall the peer would ride out can get this \
                     node restarted (docs/systemd.md)"
                );
            }
            tasks.watchdog = Some(tokio::spawn(ping_watchdog(
                self.cluster.turns.clone(),
                timeout / 2,
            )));
            tracing::info!(
                every_ms = (timeout / 2).as_millis() as u64,
                "systemd watchdog: WATCHDOG=1 while the heartbeat loop turns"
            );
        }
        tasks
    }
}

/// `WATCHDOG=1` every `period`, skipped when the heartbeat driver made no progress since the previous ping. A
/// missed ping is logged once per stall (rate-limited by the stall itself).
async fn ping_watchdog(turns: Arc<AtomicU64>, period: Duration) {
    watchdog_loop(turns, period, || send(&[NotifyState::Watchdog])).await;
}

/// [`ping_watchdog`] with the sending left to `ping` (tests count the pings).
async fn watchdog_loop(turns: Arc<AtomicU64>, period: Duration, mut ping: impl FnMut()) {
    let mut gate = WatchdogGate::new(turns.load(Ordering::Relaxed));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut stalled = false;
    loop {
        tick.tick().await;
        if gate.progressed(turns.load(Ordering::Relaxed)) {
            ping();
            if stalled {
                tracing::warn!("heartbeat loop turning again: watchdog pings resumed");
                stalled = false;
            }
        } else if !stalled {
            stalled = true;
            tracing::error!(
                period_ms = period.as_millis() as u64,
                "heartbeat loop made no progress for a watchdog period: WATCHDOG=1 withheld (systemd restarts \
                 the node if this lasts)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StatusView, WatchdogGate, status_line};
    use tandem_cluster::wire::NodeState;

    fn line(
        state: NodeState,
        peer: Option<(&str, NodeState, bool)>,
        has_peer: bool,
        (services, up, total): (usize, u32, u32),
    ) -> String {
        status_line(&StatusView {
            state,
            fault: (state == NodeState::Fault).then_some("adding the VIPs failed"),
            has_peer,
            peer,
            incompatible: None,
            services,
            servers_up: up,
            servers_total: total,
        })
    }

    #[test]
    fn a_peer_in_an_unreadable_version_is_named_not_missing() {
        let text = status_line(&StatusView {
            state: NodeState::Active,
            fault: None,
            has_peer: true,
            peer: None,
            incompatible: Some(("lb2", 2)),
            services: 23,
            servers_up: 69,
            servers_total: 69,
        });
        assert_eq!(
            text,
            "active, peer lb2 alive in newer wire version 2 (upgrade in progress), 23 services, 69/69 servers up"
        );
    }

    #[test]
    fn status_names_role_state_peer_services_and_servers() {
        use NodeState::*;
        assert_eq!(
            line(Active, Some(("lb2", Standby, true)), true, (23, 69, 69)),
            "active, peer lb2 standby, 23 services, 69/69 servers up"
        );
        assert_eq!(
            line(Active, Some(("lb2", Standby, false)), true, (1, 0, 2)),
            "active, peer lb2 lost, 1 service, 0/2 servers up"
        );
        assert_eq!(
            line(Init, None, true, (2, 1, 3)),
            "init, peer not heard yet, 2 services, 1/3 servers up"
        );
        assert_eq!(
            line(Active, None, false, (1, 2, 2)),
            "active, standalone, 1 service, 2/2 servers up"
        );
        assert_eq!(
            line(Fault, Some(("lb2", Active, true)), true, (3, 3, 3)),
            "fault (adding the VIPs failed), peer lb2 active, 3 services, 3/3 servers up"
        );
    }

    /// The loop as the daemon runs it: a "driver" turning every 5 ms gets a ping per period; when it stands still
    /// the pings stop (after at most one more), and they resume with it. Real time, tolerant counts.
    #[tokio::test]
    async fn a_wedged_heartbeat_loop_stops_the_pings_and_a_live_one_resumes_them() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;
        let turns = Arc::new(AtomicU64::new(0));
        let turning = Arc::new(AtomicBool::new(true));
        let pings = Arc::new(Mutex::new(0u32));
        let driver = {
            let (turns, turning) = (turns.clone(), turning.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if turning.load(Ordering::Relaxed) {
                        turns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let counted = pings.clone();
        let watchdog = tokio::spawn(super::watchdog_loop(
            turns.clone(),
            Duration::from_millis(100),
            move || *counted.lock().unwrap() += 1,
        ));
        let count = || *pings.lock().unwrap();
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let live = count();
        assert!(
            (7..=11).contains(&live),
            "{live} pings in 1.05 s at one per 100 ms"
        );
        turning.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let wedged = count();
        assert!(
            wedged <= live + 1,
            "{} pings while wedged: at most one",
            wedged - live
        );
        turning.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            count() >= wedged + 3,
            "pings did not resume: {wedged} -> {}",
            count()
        );
        driver.abort();
        watchdog.abort();
    }

    #[test]
    fn the_watchdog_pings_only_after_the_heartbeat_loop_turned() {
        let mut gate = WatchdogGate::new(10);
        assert!(!gate.progressed(10), "no turn since start");
        assert!(gate.progressed(11));
        assert!(!gate.progressed(11), "wedged: no ping");
        assert!(!gate.progressed(11));
        assert!(gate.progressed(500), "turning again");
        assert!(gate.progressed(u64::MAX));
        assert!(gate.progressed(0), "a wrapped counter still moved");
    }
}
