//! Background upkeep: the health summary and catch-up flag the heartbeat carries, the active role
//! handed to the sync session, and which VIPs are really on the interface.

use super::Daemon;
use std::sync::Arc;
use std::time::Duration;
use tandem_cluster::driver::Command;
use tandem_config::service_vips;

impl Daemon {
    /// Background upkeep: health summary for the heartbeat, and which VIPs are really on the interface.
    pub(super) fn spawn_watchers(self: Arc<Self>) {
        self.spawn_conflict_watch();
        if self.sync.get().is_some() {
            // Active role -> the sync session (the active node's tables are authoritative).
            let mut cluster_status = self.cluster.status.clone();
            let daemon = Arc::downgrade(&self);
            tokio::spawn(async move {
                let mut last = None;
                let mut last_hold = None;
                loop {
                    let (active, hold) = {
                        let status = cluster_status.borrow_and_update();
                        (
                            status.state == tandem_cluster::wire::NodeState::Active,
                            config_push_hold(&status.wire),
                        )
                    };
                    // A peer whose heartbeat this node cannot read runs a newer release: no config push to it.
                    if last_hold.as_ref() != Some(&hold) {
                        last_hold = Some(hold.clone());
                        if let Some(daemon) = daemon.upgrade()
                            && let Some(sync) = daemon.sync.get()
                        {
                            sync.hold_config_push(hold);
                        }
                    }
                    if last != Some(active) {
                        last = Some(active);
                        match daemon
                            .upgrade()
                            .and_then(|d| d.sync.get().map(|s| s.set_active(active)))
                        {
                            Some(()) => {}
                            None => break,
                        }
                    }
                    if cluster_status.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        let daemon = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last_health = None;
            let mut last_caught_up = None;
            let mut rounds = 0u64;
            loop {
                tick.tick().await;
                let Some(daemon) = daemon.upgrade() else {
                    break;
                };
                let (up, total) = daemon.health_summary();
                if last_health != Some((up, total))
                    && daemon
                        .cluster
                        .commands
                        .try_send(Command::LocalHealth { up, total })
                        .is_ok()
                {
                    last_health = Some((up, total));
                }
                let caught_up = daemon.caught_up(up);
                if last_caught_up != Some(caught_up)
                    && daemon
                        .cluster
                        .commands
                        .try_send(Command::CaughtUp(caught_up))
                        .is_ok()
                {
                    last_caught_up = Some(caught_up);
                }
                if rounds.is_multiple_of(5) {
                    daemon.refresh_vips_seen().await;
                }
                rounds += 1;
            }
        });
    }

    /// Real servers passing their health checks, and all real servers, over every service.
    pub(super) fn health_summary(&self) -> (u32, u32) {
        let status = self.proxy.status();
        let (mut up, mut total) = (0u32, 0u32);
        for server in status.services.iter().flat_map(|service| &service.servers) {
            total = total.saturating_add(1);
            up = up.saturating_add(u32::from(server.health == "up"));
        }
        (up, total)
    }

    /// Ready to take the active role back from a healthy peer (auto-failback): stick tables and
    /// config caught up, and this node's health checks see at least as many servers up as the
    /// peer's do — a node fresh from a restart has every server down until `rise` checks pass, and
    /// would otherwise take the VIPs only to refuse the clients.
    fn caught_up(&self, local_up: u32) -> bool {
        let replicated = self
            .sync
            .get()
            .is_none_or(|sync| sync.status().borrow().caught_up);
        let peer_up = self
            .cluster
            .status
            .borrow()
            .peer
            .as_ref()
            .filter(|peer| peer.alive)
            .map_or(0, |peer| peer.servers_up);
        replicated && local_up >= peer_up
    }

    /// Which VIPs are really on the interface (for status and metrics).
    async fn refresh_vips_seen(&self) {
        let seen = {
            let state = self.vips.lock().await;
            match state.floating.as_ref() {
                Some(floating) => floating
                    .held()
                    .await
                    .map(|held| held.iter().map(|vip| vip.addr()).collect())
                    .unwrap_or_default(),
                None if state.holding => service_vips(&self.current().cluster),
                None => Vec::new(),
            }
        };
        if let Ok(mut slot) = self.vips_seen.lock() {
            *slot = seen;
        }
    }
}

/// Why the primary holds its `cluster.toml` push, by the heartbeat: the peer is alive in a wire version this node
/// cannot read (a newer release). The sync session holds it too when the peer offers a newer protocol.
fn config_push_hold(wire: &tandem_cluster::driver::WireStatus) -> Option<String> {
    wire.incompatible_peer.as_ref().map(|peer| {
        format!(
            "peer {} speaks heartbeat wire version {}, this node reads {}..={}: upgrade this node first",
            peer.name, peer.version, wire.min, wire.max
        )
    })
}
