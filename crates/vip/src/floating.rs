//! `FloatingVips`: the daemon's handle on its VIPs — acquire (add all, announce) and release (stop announcing,
//! remove all).

use std::sync::Arc;

use crate::{AnnounceConfig, AnnounceCounts, Announcement, Announcer, Vip, VipError, VipManager};

/// The configured VIPs of one interface, acquired and released as a set.
#[derive(Debug)]
pub struct FloatingVips {
    manager: Arc<VipManager>,
    announcer: Announcer,
    vips: Vec<Vip>,
    config: AnnounceConfig,
    announcement: Option<Announcement>,
    /// Between an acquire (even a failed one) and a release: the VIPs should be here.
    holding: bool,
}

impl FloatingVips {
    /// The VIPs `vips` on `interface`, announced as `config` says. Must be called inside a tokio runtime; opens an
    /// rtnetlink socket in the calling thread's network namespace. Duplicate VIPs are dropped.
    pub fn new(
        interface: &str,
        mut vips: Vec<Vip>,
        config: AnnounceConfig,
    ) -> Result<Self, VipError> {
        let mut seen = std::collections::HashSet::new();
        vips.retain(|vip| seen.insert(*vip));
        let manager = Arc::new(VipManager::new(interface)?);
        let announcer = Announcer::new(Arc::clone(&manager));
        Ok(Self {
            manager,
            announcer,
            vips,
            config,
            announcement: None,
            holding: false,
        })
    }

    /// The VIPs this set manages.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// The address manager, for lower-level calls.
    pub fn manager(&self) -> &VipManager {
        &self.manager
    }

    /// Becomes the holder: adds every VIP (idempotently), then sends the first announcement round at once and the
    /// rest of the burst (and refreshes) in the background. Every VIP is attempted even if one fails; the first
    /// failure is returned and the node must treat itself as faulty.
    pub async fn acquire(&mut self) -> Result<(), VipError> {
        self.stop_announcing();
        self.holding = true;
        let mut first_error = None;
        for (vip, outcome) in self.vips.iter().zip(self.manager.add_all(&self.vips).await) {
            match outcome {
                Ok(outcome) => {
                    tracing::info!(interface = self.manager.interface(), %vip, ?outcome, "VIP acquired")
                }
                Err(e) => {
                    tracing::error!(error = %e, "VIP add failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.announcement = Some(
            self.announcer
                .start(self.vips.clone(), &self.config)
                .await?,
        );
        Ok(())
    }

    /// Sends a fresh burst of announcements for VIPs already held (for instance by the winner of a split brain).
    pub async fn reannounce(&mut self) -> Result<(), VipError> {
        self.stop_announcing();
        self.announcement = Some(
            self.announcer
                .start(self.vips.clone(), &self.config)
                .await?,
        );
        Ok(())
    }

    /// Stops being the holder: stops announcing at once, then removes every VIP (idempotently). Every VIP is
    /// attempted even if one fails; the first failure is returned.
    pub async fn release(&mut self) -> Result<(), VipError> {
        self.stop_announcing();
        self.holding = false;
        let mut first_error = None;
        for (vip, outcome) in self
            .vips
            .iter()
            .zip(self.manager.remove_all(&self.vips).await)
        {
            match outcome {
                Ok(outcome) => {
                    tracing::info!(interface = self.manager.interface(), %vip, ?outcome, "VIP released")
                }
                Err(e) => {
                    tracing::error!(error = %e, "VIP remove failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops announcing at once and keeps the addresses: the old holder of a drained handover, which serves its
    /// connections in flight for a while and then calls [`Self::release`].
    pub fn fall_silent(&mut self) {
        self.stop_announcing();
    }

    /// Gives the VIPs up but keeps serving their connections in flight: the addresses go (as in [`Self::release`])
    /// after a local route for each is in place, so segments that still reach this node are delivered. The
    /// routes stay until [`Self::end_drain`]. A failure to add them is returned before anything is removed.
    pub async fn release_keeping_connections(&mut self) -> Result<(), VipError> {
        self.stop_announcing();
        self.manager.add_drain_routes(&self.vips).await?;
        self.release().await
    }

    /// Removes the routes of [`Self::release_keeping_connections`] (idempotent).
    pub async fn end_drain(&mut self) -> Result<(), VipError> {
        self.manager.remove_drain_routes(&self.vips).await
    }

    /// Whether the set is acquired (since the last `acquire`, even a failed one, and until `release`).
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Replaces the configured VIPs (after a configuration change). While holding, VIPs no longer configured are
    /// removed and new ones are added and announced at once; otherwise only the list changes. Every change is
    /// attempted; the first failure is returned.
    pub async fn update_vips(&mut self, mut vips: Vec<Vip>) -> Result<(), VipError> {
        let mut seen = std::collections::HashSet::new();
        vips.retain(|vip| seen.insert(*vip));
        let old = std::mem::replace(&mut self.vips, vips);
        if !self.holding {
            return Ok(());
        }
        let mut first_error = None;
        for gone in old.iter().filter(|vip| !self.vips.contains(vip)) {
            if let Err(e) = self.manager.remove(gone).await {
                first_error.get_or_insert(e);
            }
        }
        let added: Vec<Vip> = self
            .vips
            .iter()
            .filter(|vip| !old.contains(vip))
            .copied()
            .collect();
        for vip in &added {
            if let Err(e) = self.manager.add(vip).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if !added.is_empty() {
            self.reannounce().await?;
        }
        Ok(())
    }

    /// Changes how the VIPs are announced (after a configuration change). The next burst uses it; a refresh
    /// running with the old pacing is replaced by a new burst at once while holding, so the new pacing does not wait
    /// for the next failover.
    pub async fn set_announce_config(&mut self, config: AnnounceConfig) -> Result<(), VipError> {
        self.config = config;
        if self.holding && self.announcement.is_some() {
            self.reannounce().await?;
        }
        Ok(())
    }

    /// Which of the VIPs are on the interface now.
    pub async fn held(&self) -> Result<Vec<Vip>, VipError> {
        self.manager.held(&self.vips).await
    }

    /// Removes VIPs left on the interface by an earlier run; for a node that starts up not active.
    pub async fn remove_stale(&self) -> Result<Vec<Vip>, VipError> {
        self.manager.remove_stale(&self.vips).await
    }

    /// The last failure of a background announcement round since the last acquire, if any.
    pub fn announce_error(&self) -> Option<VipError> {
        self.announcement
            .as_ref()
            .and_then(Announcement::last_error)
    }

    /// Announcement rounds sent since the last acquire / reannounce.
    pub fn announce_rounds(&self) -> u64 {
        self.announcement
            .as_ref()
            .map_or(0, Announcement::rounds_sent)
    }

    /// Announcement frames sent since this set was made, across acquires and releases: a shared handle that reads
    /// the live counts without access to the set.
    pub fn announce_counts(&self) -> AnnounceCounts {
        self.announcer.counts()
    }

    /// Whether announcements are still going (a burst in progress, or a refresh configured).
    pub fn announcing(&self) -> bool {
        self.announcement.as_ref().is_some_and(|a| !a.is_finished())
    }

    fn stop_announcing(&mut self) {
        if let Some(announcement) = self.announcement.take() {
            announcement.stop();
        }
    }
}
