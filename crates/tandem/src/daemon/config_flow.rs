//! Configuration flow: `tandem reload` / SIGHUP read `cluster.toml` from disk and apply it live; on
//! the secondary, configs pushed by the primary are validated, written atomically and applied. Each is a
//! reload for systemd (`RELOADING=1` ... `READY=1`), and each re-reads node.toml's `[hooks]`. On the secondary
//! a reload applies no `cluster.toml` of its own: it retries a pushed one the proxy could not serve whole, with
//! the files the push installed ([`Daemon::retry_pushed`]).

use super::pushed_files;
use super::vips::apply_vip_plan;
use super::{Current, Daemon, digest_bytes, election_timings, notify};
use std::sync::Arc;
use tandem_admin::{ActionError, ActionResult};
use tandem_cluster::driver::Command;
use tandem_cluster::election::Timings;
use tandem_config::{ClusterConfig, NodePlan, ReloadPlan};
use tandem_proxy::ReloadReport;
use tandem_sync::{ConfigFile, ConfigSink, ConfigVersion, LocalConfig};

impl Daemon {
    /// `tandem reload` / SIGHUP: validate cluster.toml from disk and apply it live. systemd hears
    /// `RELOADING=1` before and `READY=1` after, whatever the outcome: a rejected configuration leaves the node
    /// serving the running one (ready), and `tandem reload` (ExecReload) exits non-zero so `systemctl reload`
    /// reports the failure.
    pub(super) async fn reload_from_disk(&self) -> ActionResult {
        let _serialised = self.reload_lock.lock().await;
        notify::reloading();
        let result = self.reload_serialised().await;
        self.reloads.count(&result);
        notify::ready(&self.notify_status());
        result
    }

    /// The reload itself, under the reload lock.
    async fn reload_serialised(&self) -> ActionResult {
        let current = self.current();
        if self.node.node.role == tandem_config::Role::Secondary && self.node.node.peer.is_some() {
            self.reload_hooks_only()?;
            let text = std::fs::read_to_string(&self.cluster_path).map_err(|e| {
                ActionError::invalid(format!("{}: cannot read: {e}", self.cluster_path.display()))
            })?;
            if text != current.text {
                return Err(ActionError::refused(format!(
                    "this node is the secondary: its cluster.toml comes from the primary and was edited here; \
                     edit {} on the primary and run `tandem reload` there (the running config is unchanged)",
                    self.cluster_path.display()
                )));
            }
            if !self.proxy_serves(&current.cluster) {
                return self.retry_pushed();
            }
            return Ok(format!(
                "cluster.toml unchanged (generation {}, digest {})",
                current.generation,
                &current.digest[..current.digest.len().min(16)]
            ));
        }
        // A certificate out of its dates is served and logged as an error, as at start-up.
        let loaded = tandem_config::load(
            &self.cluster_path,
            &self.node_path,
            tandem_config::ExpiredCertificates::Serve,
        )
        .map_err(|diagnostics| {
            ActionError::invalid(format!(
                "configuration rejected, the running config is unchanged:\n{}",
                diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        })?;
        // Not errors, but worth the journal (a certificate expiring within 30 days, ...), as at start-up.
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        for alarm in &loaded.alarms {
            tracing::error!("{alarm}");
        }
        // The one running `tandem reload` hears it too: the reload succeeds, the certificate is still out of date.
        let served_anyway: String = loaded
            .alarms
            .iter()
            .map(|alarm| format!("\nerror: {alarm}"))
            .collect();
        self.hooks.replace(loaded.node.hooks.clone());
        let node_plan = NodePlan::new(&self.node, &loaded.node);
        if !node_plan.is_empty() {
            tracing::warn!("{node_plan} (the running node.toml settings stay until then)");
        }
        // Unchanged only when the proxy serves all of it: a TLS service left on its running certificates is retried.
        if loaded.digest == current.digest && self.proxy_serves(&current.cluster) {
            return Ok(format!(
                "cluster.toml unchanged (generation {}){served_anyway}",
                current.generation
            ));
        }
        timings_switch_is_safe(
            &election_timings(&current.cluster.heartbeat),
            &election_timings(&loaded.cluster.heartbeat),
        )
        .map_err(ActionError::invalid)?;
        let files = config_files(&loaded);
        let (message, tls_failed) = self.apply(
            loaded.cluster,
            loaded.cluster_text,
            files,
            loaded.digest,
            loaded.generation,
        );
        match tls_failed {
            // Applied, but not all of it: `tandem reload` exits non-zero so the operator does not take it for done.
            Some(failed) => Err(ActionError::invalid(format!(
                "{message}{served_anyway}\n{failed}"
            ))),
            None => Ok(format!("{message}{served_anyway}")),
        }
    }

    /// `tandem reload` on the secondary while the proxy does not serve the last pushed configuration whole (a TLS
    /// service whose certificate files failed to load: a permission, a file replaced between the check and the
    /// load): `cluster.toml` and the installed certificate files are checked again as the push was, and applied
    /// again. They must still be what the primary pushed (the same digest): the secondary serves the primary's
    /// configuration, never one edited here, and tells nothing to the primary (same version, nothing to send).
    /// Under the lock a push is applied with, so a push arriving meanwhile is never undone by an older retry.
    fn retry_pushed(&self) -> ActionResult {
        let _applying = self.applying_pushed();
        let current = self.current();
        if self.proxy_serves(&current.cluster) {
            return Ok(format!(
                "cluster.toml unchanged (generation {}): a push applied it meanwhile",
                current.generation
            ));
        }
        let config_dir = tandem_config::node_base_dir(&self.cluster_path).ok_or_else(|| {
            ActionError::invalid(format!(
                "{}: the config directory is not known",
                self.cluster_path.display()
            ))
        })?;
        let name = format!("{} (from the primary)", self.cluster_path.display());
        let (cluster, _, remarks) = tandem_config::parse_cluster_for_node_in(
            &current.text,
            &name,
            &self.node,
            &config_dir,
            tandem_config::now_unix(),
            tandem_config::ExpiredCertificates::Serve,
        )
        .map_err(|diagnostics| {
            ActionError::invalid(format!(
                "the configuration the primary pushed does not check with the files installed here, the running \
                 config is unchanged:\n{}",
                diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        })?;
        let digest = tandem_config::digest(&cluster);
        if digest != current.digest {
            return Err(ActionError::refused(format!(
                "this node is the secondary: the certificate files in {} are not the ones the primary pushed \
                 (digest {} here, {} pushed); put the pushed files back (each previous one is NAME.prev), or change \
                 them on the primary and run `tandem reload` there (the running config is unchanged)",
                config_dir.display(),
                &digest[..digest.len().min(16)],
                &current.digest[..current.digest.len().min(16)]
            )));
        }
        for warning in &remarks.warnings {
            tracing::warn!("{warning}");
        }
        for alarm in &remarks.alarms {
            tracing::error!("{alarm}");
        }
        let served_anyway: String = remarks
            .alarms
            .iter()
            .map(|alarm| format!("\nerror: {alarm}"))
            .collect();
        tracing::info!(
            generation = current.generation,
            "retrying the configuration pushed by the primary with the files installed here"
        );
        let (message, tls_failed) = self.apply(
            cluster,
            current.text.clone(),
            current.files.clone(),
            digest,
            current.generation,
        );
        let message = format!("retried the configuration pushed by the primary: {message}");
        match tls_failed {
            Some(failed) => Err(ActionError::invalid(format!(
                "{message}{served_anyway}\n{failed}"
            ))),
            None => Ok(format!("{message}{served_anyway}")),
        }
    }

    /// The lock the secondary applies a pushed configuration under (a push, or `tandem reload`'s retry of one).
    fn applying_pushed(&self) -> std::sync::MutexGuard<'_, ()> {
        self.applying_pushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the proxy serves `cluster` whole (it records a TLS service whose certificates failed to load with its
    /// previous settings, or not at all when it is new).
    fn proxy_serves(&self, cluster: &Arc<ClusterConfig>) -> bool {
        let served = self.proxy.config();
        Arc::ptr_eq(&served, cluster) || *served == **cluster
    }

    /// On the secondary a reload does not read cluster.toml (the primary's is served) but node.toml's `[hooks]`
    /// apply live like on the primary; a node.toml with errors refuses the reload.
    fn reload_hooks_only(&self) -> Result<(), ActionError> {
        let name = self.node_path.display().to_string();
        let text = std::fs::read_to_string(&self.node_path)
            .map_err(|e| ActionError::invalid(format!("{name}: cannot read: {e}")))?;
        let node = tandem_config::parse_node_str(&text, &name, self.node_path.parent()).map_err(
            |diagnostics| {
                ActionError::invalid(format!(
                    "configuration rejected, the running config is unchanged:\n{diagnostics}"
                ))
            },
        )?;
        let node_plan = NodePlan::new(&self.node, &node);
        if !node_plan.is_empty() {
            tracing::warn!("{node_plan} (the running node.toml settings stay until then)");
        }
        self.hooks.replace(node.hooks);
        Ok(())
    }

    /// Serve a validated configuration (`tandem reload` on the primary or a standalone node): what was done, and
    /// the TLS services that could not take their new certificates ([`tls_failures`]).
    fn apply(
        &self,
        cluster: ClusterConfig,
        text: String,
        files: Vec<ConfigFile>,
        digest: String,
        generation: u64,
    ) -> (String, Option<String>) {
        let (plan, report) = self.apply_config(cluster, text, files, digest.clone(), generation);
        let message = format!(
            "applied generation {generation} (digest {}): {} added, {} changed, {} removed, {} unchanged{}; {plan}",
            &digest[..digest.len().min(16)],
            report.added.len(),
            report.changed.len(),
            report.removed.len(),
            report.unchanged.len(),
            if report.bind_errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; bind errors: {}",
                    report
                        .bind_errors
                        .iter()
                        .map(|(service, addr, error)| format!("{service} {addr}: {error}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        tracing::info!("{message}");
        let failed = tls_failures(&report);
        if let Some(failed) = &failed {
            tracing::error!("{failed}");
        }
        (message, failed)
    }

    /// The one way a new `cluster.toml` is put into service, from one reload plan: the proxy's services, the
    /// VIP set and its announcement, the election's timings, the config version the heartbeat and the sync
    /// session carry. What cannot change live is said in the log. Returns at once: VIP moves run in the
    /// background, in order behind any election-driven VIP operation (they share the VIP lock).
    fn apply_config(
        &self,
        cluster: ClusterConfig,
        text: String,
        files: Vec<ConfigFile>,
        digest: String,
        generation: u64,
    ) -> (ReloadPlan, ReloadReport) {
        let previous = self.current();
        let plan = ReloadPlan::new(&previous.cluster, &cluster);
        let cluster = Arc::new(cluster);
        // The proxy serves less than `previous` when a TLS service failed before: it plans from what it serves.
        let report = if Arc::ptr_eq(&self.proxy.config(), &previous.cluster) {
            self.proxy
                .apply_plan(&previous.cluster, cluster.clone(), &plan)
        } else {
            self.proxy.reload(cluster.clone())
        };
        if !plan.vips.is_empty() || plan.announce.is_some() {
            let vips = self.vips.clone();
            let (plan, cluster) = (plan.clone(), cluster.clone());
            tokio::spawn(async move { apply_vip_plan(&vips, &cluster, &plan).await });
        }
        if plan.heartbeat_timings.is_some() || plan.auto_failback.is_some() {
            let heartbeat = &cluster.heartbeat;
            let sent = self.cluster.commands.try_send(Command::SetTimings {
                timings: election_timings(heartbeat),
                auto_failback: heartbeat.auto_failback,
            });
            match sent {
                Ok(()) => tracing::info!(
                    interval_ms = heartbeat.interval_ms,
                    dead_ms = heartbeat.dead_ms,
                    auto_failback = heartbeat.auto_failback,
                    "[heartbeat] timings applied live"
                ),
                Err(error) => {
                    tracing::error!(%error, "could not hand the new [heartbeat] timings to the election")
                }
            }
        }
        if plan.ping_nodes.is_some() {
            tracing::warn!(
                "[heartbeat] ping_nodes changed: the new list takes effect at the next restart"
            );
        }
        if let Some(renamed) = &plan.cluster_renamed {
            tracing::warn!(
                from = %renamed.from,
                to = %renamed.to,
                "[cluster] name changed: heartbeats and sync frames keep the running name until restart; \
                 restart both nodes, or the peers stop recognising each other"
            );
        }
        if let Ok(mut slot) = self.current.lock() {
            *slot = Current {
                cluster,
                text,
                files,
                digest: digest.clone(),
                generation,
            };
        }
        let _ = self.cluster.commands.try_send(Command::LocalConfig {
            generation,
            digest: digest_bytes(&digest),
        });
        if let Some(sync) = self.sync.get() {
            sync.set_local_config(local_config(&self.current()));
        }
        (plan, report)
    }

    /// The secondary's side of a config push: `cluster.toml` and its certificate files are staged beside
    /// cluster.toml and validated there like `tandem check` (except that a certificate out of its dates is served
    /// with an error in the log, as the primary's daemon does), then written (each file atomically, previous kept as
    /// `NAME.prev`, cluster.toml last), the primary's generation taken, and applied live.
    fn accept_pushed_config(
        &self,
        bytes: &[u8],
        files: &[ConfigFile],
        generation: u64,
        digest: &str,
    ) -> Result<(), String> {
        let _applying = self.applying_pushed();
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "cluster.toml from the peer is not UTF-8".to_owned())?;
        let config_dir = tandem_config::node_base_dir(&self.cluster_path).ok_or_else(|| {
            format!(
                "{}: the config directory is not known",
                self.cluster_path.display()
            )
        })?;
        let staged = pushed_files::stage(&config_dir, bytes, files)
            .map_err(|e| format!("staging the pushed files in {}: {e}", config_dir.display()))?;
        let name = format!("{} (from the primary)", self.cluster_path.display());
        // As the primary's daemon did with these very files: a certificate out of its dates is served, not
        // refused, so the pair never disagrees on one.
        let (mut cluster, _, remarks) = tandem_config::parse_cluster_for_node_in(
            text,
            &name,
            &self.node,
            &staged.dir,
            tandem_config::now_unix(),
            tandem_config::ExpiredCertificates::Serve,
        )
        .map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        pushed_files::check_targets(&config_dir, &self.node_path, &self.node, &cluster, files)?;
        let computed = tandem_config::digest(&cluster);
        if computed != digest {
            return Err(format!(
                "digest mismatch: the primary said {digest}, the bytes give {computed}"
            ));
        }
        let current = self.current();
        if current.digest == digest
            && current.generation == generation
            && self.proxy_serves(&current.cluster)
        {
            return Ok(());
        }
        for warning in &remarks.warnings {
            tracing::warn!("{warning}");
        }
        for alarm in &remarks.alarms {
            tracing::error!("{alarm}");
        }
        pushed_files::relocate(&mut cluster, &staged.dir, &config_dir);
        drop(staged);
        // A configuration the primary pushed is a reload too, as systemd sees it.
        notify::reloading();
        let applied = self.save_and_apply_pushed(
            cluster,
            text,
            bytes,
            files,
            &config_dir,
            generation,
            digest,
        );
        self.reloads.count(&applied);
        notify::ready(&self.notify_status());
        applied
    }

    /// The pushed configuration, validated: written, its generation adopted, served.
    #[allow(clippy::too_many_arguments)]
    fn save_and_apply_pushed(
        &self,
        cluster: ClusterConfig,
        text: &str,
        bytes: &[u8],
        files: &[ConfigFile],
        config_dir: &std::path::Path,
        generation: u64,
        digest: &str,
    ) -> Result<(), String> {
        pushed_files::install(config_dir, files).map_err(|e| {
            format!(
                "writing the certificate files in {}: {e}",
                config_dir.display()
            )
        })?;
        super::replace_keeping_previous(&self.cluster_path, bytes)
            .map_err(|e| format!("writing {}: {e}", self.cluster_path.display()))?;
        tandem_config::generation::adopt(&self.node.node.state_dir, generation, digest)
            .map_err(|e| format!("recording generation {generation}: {e}"))?;
        let (plan, report) = self.apply_config(
            cluster,
            text.to_owned(),
            files.to_vec(),
            digest.to_owned(),
            generation,
        );
        tracing::info!(
            generation,
            digest,
            added = report.added.len(),
            changed = report.changed.len(),
            removed = report.removed.len(),
            "applied cluster.toml pushed by the primary: {plan}"
        );
        // The files are written and the rest applied: the push is taken, the failure is this node's to report.
        if let Some(failed) = tls_failures(&report) {
            tracing::error!(generation, "{failed}");
        }
        Ok(())
    }
}

/// Reloads by outcome (`tandem_reloads_total{result}`): `tandem reload`, SIGHUP and the admin API's reload, and
/// configurations the primary pushed that this node went on to apply.
#[derive(Debug, Default)]
pub(super) struct ReloadCounts {
    ok: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
}

impl ReloadCounts {
    fn count<T, E>(&self, result: &Result<T, E>) {
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.rejected
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (ok, rejected).
    pub(super) fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.ok.load(Relaxed), self.rejected.load(Relaxed))
    }
}

/// The peer switches to new heartbeat timings one config push after this node: in between, each node's dead time
/// must stay above the other's interval, or one would declare the other dead between two of its heartbeats.
fn timings_switch_is_safe(running: &Timings, new: &Timings) -> Result<(), String> {
    if new.interval_ms >= running.dead_ms {
        return Err(format!(
            "configuration refused, the running config is unchanged: the new [heartbeat] interval_ms {} is not below \
             the running dead_ms {}, so the peer (still on the running timings until it receives this config) would \
             declare this node dead; raise dead_ms first (one reload), then interval_ms (a second reload)",
            new.interval_ms, running.dead_ms
        ));
    }
    if new.dead_ms <= running.interval_ms {
        return Err(format!(
            "configuration refused, the running config is unchanged: the new [heartbeat] dead_ms {} is not above \
             the running interval_ms {}, so this node would declare the peer (still sending at the running interval) \
             dead; lower interval_ms first (one reload), then dead_ms (a second reload)",
            new.dead_ms, running.interval_ms
        ));
    }
    Ok(())
}

/// What the operator must hear about TLS services the proxy could not give their new certificates (None when
/// every one took them): which service, what it serves meanwhile, the file and the reason, and what to do.
fn tls_failures(report: &ReloadReport) -> Option<String> {
    if report.tls_errors.is_empty() {
        return None;
    }
    let lines: Vec<String> = report
        .tls_errors
        .iter()
        .map(|(service, error)| {
            let failure = tls_failure(service, error, report.added.contains(service));
            format!("error: {failure}")
        })
        .collect();
    Some(format!(
        "{}\nthe rest of the configuration is applied; fix the certificate file(s) and run `tandem reload` again",
        lines.join("\n")
    ))
}

/// One TLS service left as it was because `error`: `new` ones are not served, the others keep their running
/// configuration and certificates.
pub(super) fn tls_failure(service: &str, error: &str, new: bool) -> String {
    let serves = if new {
        "is not served"
    } else {
        "keeps its running configuration and certificates"
    };
    format!("TLS service {service:?} {serves}: {error}")
}

pub(super) fn local_config(current: &Current) -> LocalConfig {
    LocalConfig {
        bytes: current.text.clone().into_bytes(),
        files: current.files.clone(),
        version: ConfigVersion {
            generation: current.generation,
            digest: current.digest.clone(),
        },
    }
}

/// The certificate files a loaded configuration names, as the push carries them.
pub(super) fn config_files(loaded: &tandem_config::Loaded) -> Vec<ConfigFile> {
    loaded
        .certificate_files()
        .into_iter()
        .map(|(name, bytes)| ConfigFile { name, bytes })
        .collect()
}

/// The sync session hands pushed configs to the daemon through this.
pub(super) struct PushedConfigSink(pub(super) std::sync::Weak<Daemon>);

impl ConfigSink for PushedConfigSink {
    fn offer(
        &mut self,
        bytes: &[u8],
        files: &[ConfigFile],
        generation: u64,
        digest: &str,
    ) -> Result<(), String> {
        match self.0.upgrade() {
            Some(daemon) => {
                let result = daemon.accept_pushed_config(bytes, files, generation, digest);
                if let Err(reason) = &result {
                    tracing::error!(generation, %reason, "refused cluster.toml pushed by the primary; running config unchanged");
                }
                result
            }
            None => Err("the node is stopping".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{timings_switch_is_safe, tls_failures};
    use tandem_proxy::ReloadReport;

    #[test]
    fn tls_failures_name_the_service_the_file_and_what_is_served() {
        assert_eq!(tls_failures(&ReloadReport::default()), None);
        let report = ReloadReport {
            added: vec!["keystone".into()],
            changed: vec!["horizon".into()],
            tls_errors: vec![
                ("horizon".into(), "horizon.pem: the file changed".into()),
                ("keystone".into(), "keystone.pem: no key".into()),
            ],
            ..ReloadReport::default()
        };
        let text = tls_failures(&report).unwrap();
        assert!(
            text.contains(
                "TLS service \"horizon\" keeps its running configuration and certificates: horizon.pem: the file changed"
            ),
            "{text}"
        );
        assert!(
            text.contains("TLS service \"keystone\" is not served: keystone.pem: no key"),
            "{text}"
        );
        assert!(text.contains("run `tandem reload` again"), "{text}");
    }
    use tandem_cluster::election::Timings;

    fn heartbeat(interval_ms: u64, dead_ms: u64) -> Timings {
        Timings {
            interval_ms,
            dead_ms,
            warn_ms: dead_ms / 2,
            init_dead_ms: dead_ms * 2,
        }
    }

    #[test]
    fn a_timings_switch_the_peer_cannot_follow_is_refused() {
        let running = heartbeat(50, 250);
        assert!(timings_switch_is_safe(&running, &heartbeat(100, 4000)).is_ok());
        assert!(timings_switch_is_safe(&running, &heartbeat(20, 60)).is_ok());
        let slow = timings_switch_is_safe(&running, &heartbeat(300, 4000)).unwrap_err();
        assert!(
            slow.contains("interval_ms 300") && slow.contains("dead_ms 250"),
            "{slow}"
        );
        let fast = timings_switch_is_safe(&running, &heartbeat(10, 40)).unwrap_err();
        assert!(
            fast.contains("dead_ms 40") && fast.contains("interval_ms 50"),
            "{fast}"
        );
    }
}
