//! The VIP layer as the election drives it: which addresses the services float, adding and
//! removing them (or only recording the role with `manage_vips = false`), and moving to a new set.
//! Whenever VIPs are given up, the proxy closes the connections it served on them.

use anyhow::Result;
use std::future::Future;
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
    /// Bumped by every acquire and release: a drain step scheduled before it is void.
    pub(super) drain_generation: u64,
    /// A drain table or drain route may be in place (drain.rs): the next acquire or release clears it first.
    pub(super) drain_tables: bool,
    /// The old holder's drain under way: ends with the VIPs removed. A clean stop waits for it.
    pub(super) draining: Option<tokio::task::JoinHandle<()>>,
    /// `nft` failed once: said at warning level once, then at debug.
    pub(super) nft_failed: bool,
}

impl VipState {
    pub(super) fn new(
        floating: Option<FloatingVips>,
        guardian: Option<super::guardian::Guardian>,
        proxy: Proxy,
    ) -> Self {
        Self {
            floating,
            holding: false,
            guardian,
            proxy,
            drain_generation: 0,
            drain_tables: true, // whatever an earlier run left: cleared at the first VIP operation
            draining: None,
            nft_failed: false,
        }
    }

    /// Loads a drain script; a failure costs the drain only (logged once at warning level).
    async fn nft(&mut self, script: &str, what: &str) -> bool {
        match super::drain::nft(script).await {
            Ok(()) => true,
            Err(error) if !self.nft_failed => {
                self.nft_failed = true;
                tracing::warn!(%error, "{what}: planned handovers go on without the drain (docs/protocol.md)");
                false
            }
            Err(error) => {
                tracing::debug!(%error, "{what}");
                false
            }
        }
    }

    /// Removes any drain table and drain route still in place (a drain cut short, or an earlier run's).
    pub(super) async fn clear_drain(&mut self) {
        if !self.drain_tables {
            return;
        }
        let routes = self.end_drain_routes().await;
        if self
            .nft(&super::drain::clear_script(), "clearing the drain tables")
            .await
            && routes
        {
            self.drain_tables = false;
        }
    }

    /// Removes the drain routes of a release that drained; false if that failed (logged).
    async fn end_drain_routes(&mut self) -> bool {
        let Some(floating) = self.floating.as_mut() else {
            return true;
        };
        match floating.end_drain().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "removing the drain routes failed");
                false
            }
        }
    }

    fn drain_ms(&self) -> u64 {
        self.proxy.config().heartbeat.handover_drain_ms
    }
}

/// How long the local routes of a drain outlive the closing of its connections (see the drain task).
const DRAIN_CLOSE_GRACE: Duration = Duration::from_millis(100);

fn addresses(floating: &FloatingVips) -> Vec<IpAddr> {
    floating.vips().iter().map(|vip| vip.addr()).collect()
}

/// This node gave up `vips`: the clients of their connections are reset and the real servers' sides closed, so
/// that nothing the clients can no longer reach keeps a server's session (and its locks) open.
fn close_connections_of(proxy: &Proxy, vips: &[IpAddr]) {
    let closed = proxy.close_connections_of(vips);
    tracing::info!(?vips, closed, "closed the connections of the released VIPs");
}

/// Removes the VIPs, closes their connections and clears any drain table and route: the end of every release.
async fn remove_and_close(state: &mut VipState) -> Result<(), String> {
    let released = match state.floating.as_mut() {
        Some(floating) => floating.release().await.map_err(|e| e.to_string()),
        None => Ok(()),
    };
    // Even if removing an address failed: this node no longer serves them.
    close_connections_of(&state.proxy, &service_vips(&state.proxy.config()));
    state.clear_drain().await;
    released
}

#[derive(Clone)]
pub(super) struct DaemonVips(pub(super) Arc<tokio::sync::Mutex<VipState>>);

/// A step of a drain run later on the VIP state.
type DrainStep =
    for<'a> fn(&'a mut VipState) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl DaemonVips {
    /// Runs `step` after `delay` unless a VIP operation came in between (`generation` moved on).
    fn later(
        &self,
        generation: u64,
        delay: Duration,
        step: DrainStep,
    ) -> tokio::task::JoinHandle<()> {
        let vips = self.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = vips.lock().await;
            if state.drain_generation == generation {
                step(&mut state).await;
            }
        })
    }

    /// The old holder's side of a drained handover (drain.rs): stop speaking for the VIPs at once, keep serving
    /// what is in flight through a local route while the addresses go as in any release, and close the rest after
    /// `handover_drain_ms`. False if the drain could not start (the caller releases at once).
    async fn release_draining(&self, state: &mut VipState) -> bool {
        let drain_ms = state.drain_ms();
        let Some(floating) = state.floating.as_mut() else {
            return false;
        };
        floating.fall_silent();
        let quiet = super::drain::quiet_script(&addresses(floating));
        state.drain_tables = true;
        if !state
            .nft(&quiet, "quieting the VIPs for the handover drain")
            .await
        {
            return false;
        }
        let released = match state.floating.as_mut() {
            Some(floating) => floating.release_keeping_connections().await,
            None => Ok(()),
        };
        if let Err(error) = released {
            tracing::error!(%error, "cannot drain; releasing at once");
            return false;
        }
        tracing::info!(
            drain_ms,
            "VIPs released; draining their connections in flight"
        );
        let generation = state.drain_generation;
        let close = self.later(generation, Duration::from_millis(drain_ms), |state| {
            close_connections_of(&state.proxy, &service_vips(&state.proxy.config()));
            Box::pin(std::future::ready(()))
        });
        // The resets leave from the VIP as the connections' tasks close them: only while it is still routed here
        // (else the client never hears it, and waits on a dead connection).
        let this = self.clone();
        state.draining = Some(tokio::spawn(async move {
            let _ = close.await;
            let _ = this
                .later(generation, DRAIN_CLOSE_GRACE, |state| {
                    Box::pin(state.clear_drain())
                })
                .await;
        }));
        true
    }
}

impl VipControl for DaemonVips {
    async fn acquire(&mut self, drain: Option<IpAddr>) -> Result<(), String> {
        let mut guard = self.0.lock().await;
        let state = &mut *guard;
        state.holding = true;
        state.drain_generation += 1;
        let Some(floating) = state.floating.as_ref() else {
            return Ok(());
        };
        // Taken from a peer that still holds them: forward what is its before the addresses are here (drain.rs).
        let forward = drain.filter(|_| state.drain_ms() > 0).and_then(|peer| {
            super::drain::forward_script(&addresses(floating), peer, floating.manager().interface())
        });
        // A drain of ours cut short (taken back within handover_drain_ms) would silence these VIPs: the forward
        // script replaces its tables in the same transaction; a crash takeover runs no `nft` unless one may be there.
        let forwarding = match forward {
            Some(script) => {
                state.end_drain_routes().await;
                state.drain_tables = true;
                state.nft(&script, "loading the handover drain").await
            }
            None => {
                state.clear_drain().await;
                false
            }
        };
        if forwarding {
            // The old holder drains for drain_ms from the moment it sees us hold them: twice covers its start.
            let window = Duration::from_millis(state.drain_ms().saturating_mul(2));
            self.later(state.drain_generation, window, |state| {
                Box::pin(state.clear_drain())
            });
        }
        match state.floating.as_mut() {
            Some(floating) => floating.acquire().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
    async fn release(&mut self, drain: Option<IpAddr>) -> Result<(), String> {
        let mut guard = self.0.lock().await;
        let state = &mut *guard;
        state.holding = false;
        state.drain_generation += 1;
        if drain.is_some() && state.drain_ms() > 0 && self.release_draining(state).await {
            return Ok(());
        }
        remove_and_close(state).await
    }
    async fn fall_silent(&mut self) {
        if let Some(floating) = self.0.lock().await.floating.as_mut() {
            floating.fall_silent();
        }
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
        ..
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
