//! The VIP layer as the election drives it: which addresses the services float, adding and
//! removing them (or only recording the role with `manage_vips = false`), and moving to a new set.
//! Whenever VIPs are given up, the proxy closes the connections it served on them.

use anyhow::Result;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_cluster::driver::VipControl;
use tandem_config::{ClusterConfig, GarpForm, NodeConfig, ReloadPlan, service_vips};
use tandem_proxy::Proxy;
use tandem_vip::{AnnounceConfig, AnnounceCounts, ArpMode, FloatingVips, Vip};

/// The VIP announcement frames sent since start, readable for status without the VIP layer's lock (which an
/// acquire holds across its first round). Zero with `manage_vips = false`: nothing is announced.
#[derive(Clone, Default)]
pub(super) struct GarpSent(Option<AnnounceCounts>);

impl GarpSent {
    pub(super) fn of(floating: Option<&FloatingVips>) -> Self {
        Self(floating.map(FloatingVips::announce_counts))
    }

    pub(super) fn document(&self) -> tandem_status::GarpSent {
        self.0
            .as_ref()
            .map_or_else(Default::default, |counts| tandem_status::GarpSent {
                ipv4: counts.ipv4(),
                ipv6: counts.ipv6(),
            })
    }
}

/// The VIP layer as the election drives it; with `manage_vips = false` it only records the role.
pub(super) struct VipState {
    pub(super) floating: Option<FloatingVips>,
    pub(super) holding: bool,
    /// The process that removes the VIPs if this one dies without releasing them (guardian.rs).
    pub(super) guardian: Option<super::guardian::Guardian>,
    /// Closes the connections of VIPs this node gives up.
    pub(super) proxy: Proxy,
}

/// This node gave up `vips`: the clients of their connections are reset and the real servers' sides closed, so
/// that nothing the clients can no longer reach keeps a server's session (and its locks) open.
fn close_connections_of(proxy: &Proxy, vips: &[IpAddr]) {
    let closed = proxy.close_connections_of(vips);
    tracing::info!(?vips, closed, "closed the connections of the released VIPs");
}

#[derive(Clone)]
pub(super) struct DaemonVips(pub(super) Arc<tokio::sync::Mutex<VipState>>);

impl VipControl for DaemonVips {
    async fn acquire(&mut self) -> Result<(), String> {
        let mut state = self.0.lock().await;
        state.holding = true;
        match state.floating.as_mut() {
            Some(floating) => floating.acquire().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
    async fn release(&mut self) -> Result<(), String> {
        let mut state = self.0.lock().await;
        state.holding = false;
        let released = match state.floating.as_mut() {
            Some(floating) => floating.release().await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        // Even if removing an address failed: this node no longer serves them.
        close_connections_of(&state.proxy, &service_vips(&state.proxy.config()));
        released
    }
    async fn announce(&mut self) -> Result<(), String> {
        let mut state = self.0.lock().await;
        match state.floating.as_mut() {
            Some(floating) => floating.reannounce().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

fn announce_config(cluster: &ClusterConfig) -> AnnounceConfig {
    let heartbeat = &cluster.heartbeat;
    AnnounceConfig {
        count: heartbeat.garp_count,
        spacing: Duration::from_millis(heartbeat.garp_spacing_ms),
        arp_mode: match heartbeat.garp_form {
            GarpForm::Request => ArpMode::Request,
            GarpForm::Reply => ArpMode::Reply,
            GarpForm::Both => ArpMode::Both,
        },
        refresh: (heartbeat.garp_refresh_ms > 0)
            .then(|| Duration::from_millis(heartbeat.garp_refresh_ms)),
    }
}

pub(super) fn floating_vips(node: &NodeConfig, cluster: &ClusterConfig) -> Result<FloatingVips> {
    let vips = service_vips(cluster)
        .into_iter()
        .map(Vip::host)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FloatingVips::new(
        &node.node.interface,
        vips,
        announce_config(cluster),
    )?)
}

/// A reload changed the VIP set or how VIPs are announced: move only the difference if this node holds them,
/// and announce with the new pacing from now on.
pub(super) async fn apply_vip_plan(
    vips: &tokio::sync::Mutex<VipState>,
    cluster: &ClusterConfig,
    plan: &ReloadPlan,
) {
    let mut state = vips.lock().await;
    let VipState {
        floating,
        guardian,
        holding,
        proxy,
    } = &mut *state;
    let Some(floating) = floating.as_mut() else {
        return;
    };
    if plan.announce.is_some()
        && let Err(error) = floating.set_announce_config(announce_config(cluster)).await
    {
        tracing::error!(%error, "announcing with the new [heartbeat] garp settings failed");
    }
    if plan.vips.is_empty() {
        return;
    }
    let next = match service_vips(cluster)
        .into_iter()
        .map(Vip::host)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(next) => next,
        Err(error) => {
            tracing::error!(%error, "cannot use the new VIP set; keeping the old one");
            return;
        }
    };
    tracing::info!(added = ?plan.vips.added, removed = ?plan.vips.removed, "moving to the new VIP set");
    // The guardian covers the old and the new set while the move runs, then the new one only.
    if let Some(guardian) = guardian.as_mut() {
        guardian.moving(&next);
    }
    match floating.update_vips(next.clone()).await {
        Ok(()) => {
            if let Some(guardian) = guardian.as_mut() {
                guardian.moved(next);
            }
        }
        Err(error) => tracing::error!(%error, "moving to the new VIP set failed"),
    }
    if *holding && !plan.vips.removed.is_empty() {
        close_connections_of(proxy, &plan.vips.removed);
    }
}
