//! `tandem run`: wires config, proxy, election, VIPs, replication and the admin endpoint together.
//! Every decision lives in the crates; this module only connects their inputs and outputs.

use crate::metrics;
use anyhow::{Context, Result, anyhow};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_admin::{ActionError, ActionResult, AdminBackend, Credentials, ServerAction};
use tandem_cluster::driver::{ClusterHandle, ClusterStatus, Command, DriverConfig, VipControl};
use tandem_cluster::election::{ElectionConfig, Timings};
use tandem_config::{ClusterConfig, GarpForm, Loaded, NodeConfig};
use tandem_proxy::{AdminState, Proxy, SharedStickTables};
use tandem_stick::StickTables;
use tandem_sync::{ConfigSink, ConfigVersion, LocalConfig, SyncHandle, SyncParams, SyncStatus};
use tandem_types::Secret;
use tandem_vip::{AnnounceConfig, ArpMode, FloatingVips, Vip};
use tokio::signal::unix::{SignalKind, signal};

/// The configuration being served, with its version.
#[derive(Clone)]
pub struct Current {
    pub cluster: Arc<ClusterConfig>,
    pub text: String,
    pub digest: String,
    pub generation: u64,
}

pub struct Daemon {
    node: NodeConfig,
    cluster_path: PathBuf,
    node_path: PathBuf,
    current: Mutex<Current>,
    proxy: Proxy,
    cluster: ClusterHandle,
    vips: Arc<tokio::sync::Mutex<VipState>>,
    /// Addresses found on the interface at the last look (what `status` calls "VIPs held").
    vips_seen: Mutex<Vec<IpAddr>>,
    reload_lock: tokio::sync::Mutex<()>,
    started: Instant,
    /// The TCP 7778 session; absent on a standalone node.
    sync: std::sync::OnceLock<SyncHandle>,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of `tandem run`.
pub fn run(cluster_path: PathBuf, node_path: PathBuf) -> Result<ExitCode> {
    init_tracing();
    let loaded = match tandem_config::load(&cluster_path, &node_path) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter() {
                eprintln!("{diagnostic}");
            }
            eprintln!("tandem: configuration rejected, not starting");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_count())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async_main(loaded, cluster_path, node_path))?;
    Ok(ExitCode::SUCCESS)
}

/// Worker threads: TANDEM_WORKERS, else one per core (benchmarks pin it for fairness).
fn worker_count() -> usize {
    std::env::var("TANDEM_WORKERS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|w| *w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn secret_for(node: &NodeConfig) -> Result<Secret> {
    match tandem_config::secret::load_secret(&node.node.secret_file) {
        Ok(loaded) => {
            for warning in loaded.warnings {
                tracing::warn!("{warning}");
            }
            Ok(loaded.secret)
        }
        Err(error) if node.node.peer.is_some() => Err(anyhow!(
            "{error} (create it with `tandem keygen {}` and copy it to the peer)",
            node.node.secret_file.display()
        )),
        Err(_) => {
            // A standalone node talks to nobody; a throw-away key keeps the code path identical.
            let mut key = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| anyhow!("no system randomness"))?;
            Secret::new(key).map_err(|e| anyhow!("{e}"))
        }
    }
}

async fn async_main(loaded: Loaded, cluster_path: PathBuf, node_path: PathBuf) -> Result<()> {
    let secret = secret_for(&loaded.node)?;
    let admin_listener = tokio::net::TcpListener::bind(loaded.node.admin.listen)
        .await
        .with_context(|| format!("binding the admin address {}", loaded.node.admin.listen))?;
    let credentials = admin_credentials(&loaded.node)?;
    let daemon = Daemon::start(loaded, cluster_path, node_path, secret).await?;
    let admin = tokio::spawn(tandem_admin::serve(
        admin_listener,
        daemon.clone(),
        credentials,
    ));
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match daemon.reload_from_disk().await {
                    Ok(message) => tracing::info!("SIGHUP reload: {message}"),
                    Err(error) => tracing::error!("SIGHUP reload refused: {}", error.message),
                }
            }
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    admin.abort();
    daemon.stop().await;
    Ok(())
}

fn admin_credentials(node: &NodeConfig) -> Result<Option<Credentials>> {
    let Some(user) = &node.admin.user else {
        return Ok(None);
    };
    let password = node
        .admin
        .password_file
        .as_ref()
        .and_then(|path| match std::fs::read_to_string(path) {
            Ok(password) if !password.trim().is_empty() => Some(password.trim().to_owned()),
            Ok(_) | Err(_) => {
                tracing::error!(
                    path = %path.display(),
                    "admin password file missing or empty: state-changing admin requests will be refused"
                );
                None
            }
        });
    // No usable password: an unguessable one, so actions are refused rather than left open.
    let password = match password {
        Some(password) => password,
        None => {
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| anyhow!("no system randomness"))?;
            hex::encode(key)
        }
    };
    Ok(Some(Credentials {
        user: user.clone(),
        password,
    }))
}

/// The VIP layer as the election drives it; with `manage_vips = false` it only records the role.
struct VipState {
    floating: Option<FloatingVips>,
    holding: bool,
}

#[derive(Clone)]
struct DaemonVips(Arc<tokio::sync::Mutex<VipState>>);

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
        match state.floating.as_mut() {
            Some(floating) => floating.release().await.map_err(|e| e.to_string()),
            None => Ok(()),
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

/// The election runs on its own OS thread with its own runtime, at real-time priority when the
/// kernel allows it: a proxy busy with thousands of connections (or a loaded machine) must not
/// delay heartbeats, or a healthy peer would be declared dead at short dead times.
async fn spawn_heartbeat_thread(driver: DriverConfig, vips: DaemonVips) -> Result<ClusterHandle> {
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tandem-heartbeat".into())
        .spawn(move || {
            raise_to_realtime();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = handle_tx.send(Err(anyhow!("heartbeat runtime: {error}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = tandem_cluster::driver::spawn(driver, vips)
                    .await
                    .map_err(anyhow::Error::from);
                let failed = started.is_err();
                let _ = handle_tx.send(started);
                if !failed {
                    // The driver's task lives on this runtime for as long as the process does.
                    std::future::pending::<()>().await;
                }
            });
        })
        .context("starting the heartbeat thread")?;
    handle_rx
        .await
        .map_err(|_| anyhow!("the heartbeat thread ended before starting"))?
}

/// SCHED_RR for the calling thread; without CAP_SYS_NICE it stays a normal thread.
fn raise_to_realtime() {
    if std::env::var("TANDEM_HEARTBEAT_RT").as_deref() == Ok("0") {
        return;
    }
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler(0, ..) only changes the calling thread's policy; `param` is valid.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "heartbeat thread stays at normal priority"
        );
    }
}

/// Every distinct VIP of the services, in configuration order.
fn service_vips(cluster: &ClusterConfig) -> Vec<IpAddr> {
    let mut vips: Vec<IpAddr> = Vec::new();
    for service in &cluster.services {
        if !vips.contains(&service.vip) {
            vips.push(service.vip);
        }
    }
    vips
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

fn floating_vips(node: &NodeConfig, cluster: &ClusterConfig) -> Result<FloatingVips> {
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

/// The config digest as the heartbeat carries it (hex as the config crate prints it).
pub fn digest_bytes(digest_hex: &str) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(digest_hex, &mut bytes).is_err() {
        tracing::error!(digest_hex, "config digest is not 64 hex digits");
    }
    bytes
}

impl Daemon {
    async fn start(
        loaded: Loaded,
        cluster_path: PathBuf,
        node_path: PathBuf,
        secret: Secret,
    ) -> Result<Arc<Daemon>> {
        let node = loaded.node.clone();
        let cluster = Arc::new(loaded.cluster.clone());
        tracing::info!(
            node = %node.node.name,
            role = ?node.node.role,
            generation = loaded.generation,
            digest = %loaded.digest,
            services = cluster.services.len(),
            "starting"
        );

        // VIPs first: a node that is not active yet must not keep addresses a crash left behind.
        let floating = if node.node.manage_vips {
            let floating = floating_vips(&node, &cluster)?;
            match floating.remove_stale().await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::warn!(?removed, "removed VIPs left behind by an earlier run")
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "could not check for leftover VIPs"),
            }
            Some(floating)
        } else {
            None
        };
        let vips = Arc::new(tokio::sync::Mutex::new(VipState {
            floating,
            holding: false,
        }));

        let stick: SharedStickTables = Arc::new(Mutex::new(StickTables::new()));
        // HTTP mode runs on the native engine, on one thread of its own per worker (small writes batched through
        // io_uring); TANDEM_HTTP_ENGINE=tasks serves it in the main runtime's tasks without batching, =hyper on the
        // hyper engine (a fallback should a client or server ever disagree with the native engine).
        let engine: Arc<dyn tandem_proxy::HttpEngine> = match std::env::var("TANDEM_HTTP_ENGINE")
            .as_deref()
        {
            Ok("hyper") => {
                tracing::info!("HTTP mode on the hyper engine (TANDEM_HTTP_ENGINE=hyper)");
                Arc::new(tandem_proxy::HyperEngine)
            }
            Ok("tasks") => {
                tracing::info!(
                    "HTTP mode in the runtime's tasks, writes not batched (TANDEM_HTTP_ENGINE=tasks)"
                );
                Arc::new(tandem_proxy::H1Engine::in_runtime())
            }
            _ => match tandem_proxy::H1Engine::on_threads(worker_count()) {
                Ok(engine) => Arc::new(engine),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the HTTP threads; HTTP mode runs in the main runtime");
                    Arc::new(tandem_proxy::H1Engine::in_runtime())
                }
            },
        };
        // TCP mode relays established pairs on one io_uring thread per worker (poll loops where io_uring cannot be
        // set up); TANDEM_TCP_RELAY=poll forces the poll loops, =tasks relays in the connection tasks (the earliest
        // way, kept as a fallback).
        let tcp_relay = match std::env::var("TANDEM_TCP_RELAY").as_deref() {
            Ok("tasks") => {
                tracing::info!("TCP mode relays in the connection tasks (TANDEM_TCP_RELAY=tasks)");
                tandem_proxy::TcpRelay::Tasks
            }
            Ok("poll") => {
                tracing::info!("TCP mode relays on poll loops (TANDEM_TCP_RELAY=poll)");
                tandem_proxy::TcpRelay::Loops(worker_count())
            }
            _ => tandem_proxy::TcpRelay::Uring(worker_count()),
        };
        let proxy = Proxy::start_with_relay(
            cluster.clone(),
            stick,
            tandem_stick::Clock::new(),
            engine,
            tcp_relay,
        )
        .map_err(|e| anyhow!("{e}"))?;

        let heartbeat = &cluster.heartbeat;
        let state_dir = node.node.state_dir.clone();
        let boot_epoch = tandem_cluster::epoch::next_boot_epoch(&state_dir.join("boot-epoch"))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot persist the boot epoch; using the clock");
                tandem_cluster::epoch::clock_epoch()
            });
        let role = node.node.role;
        let mut election = ElectionConfig::new(
            &cluster.cluster.name,
            &node.node.name,
            role,
            node.node.peer.is_some(),
            Timings {
                interval_ms: heartbeat.interval_ms,
                dead_ms: heartbeat.dead_ms,
                warn_ms: heartbeat.warn_ms,
                init_dead_ms: heartbeat.init_dead_ms,
            },
            boot_epoch,
        );
        election.auto_failback = heartbeat.auto_failback;
        election.ping_nodes_configured = !heartbeat.ping_nodes.is_empty();
        let bind = SocketAddr::new(node.node.address, node.node.heartbeat_port);
        let peer = node
            .node
            .peer
            .map(|peer| SocketAddr::new(peer, peer_port(node.node.heartbeat_port)));
        let sync_secret = secret.clone();
        let mut driver = DriverConfig::new(election, bind, peer, secret);
        driver.ping_nodes = heartbeat.ping_nodes.clone();
        let cluster_handle = spawn_heartbeat_thread(driver, DaemonVips(vips.clone()))
            .await
            .with_context(|| format!("starting the heartbeat on {bind}"))?;
        let _ = cluster_handle
            .commands
            .send(Command::LocalConfig {
                generation: loaded.generation,
                digest: digest_bytes(&loaded.digest),
            })
            .await;

        let daemon = Arc::new(Daemon {
            node,
            cluster_path,
            node_path,
            current: Mutex::new(Current {
                cluster,
                text: loaded.cluster_text,
                digest: loaded.digest,
                generation: loaded.generation,
            }),
            proxy,
            cluster: cluster_handle,
            vips,
            vips_seen: Mutex::new(Vec::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            sync: std::sync::OnceLock::new(),
        });
        daemon.clone().start_sync(sync_secret).await?;
        daemon.clone().spawn_watchers();
        Ok(daemon)
    }

    /// Open the replication/config session to the peer (nothing to do on a standalone node).
    async fn start_sync(self: Arc<Self>, secret: Secret) -> Result<()> {
        let Some(peer) = self.node.node.peer else {
            return Ok(());
        };
        let current = self.current();
        let params = SyncParams {
            local: SocketAddr::new(self.node.node.address, self.node.node.sync_port),
            peer: SocketAddr::new(peer, peer_sync_port(self.node.node.sync_port)),
            identity: tandem_sync::Identity::new(current.cluster.cluster.name.clone(), secret),
            role: self.node.node.role,
            settings: Default::default(),
        };
        let local = params.local;
        let handle = tandem_sync::spawn_sync(
            params,
            self.proxy.stick_tables(),
            self.proxy.clock(),
            Box::new(PushedConfigSink(Arc::downgrade(&self))),
            Some(local_config(&current)),
            false,
        )
        .await
        .with_context(|| format!("starting the sync session on {local}"))?;
        let _ = self.sync.set(handle);
        Ok(())
    }

    fn sync_status(&self) -> Option<SyncStatus> {
        self.sync.get().map(|sync| sync.status().borrow().clone())
    }

    /// The secondary's side of a config push: validate like `tandem check`, write atomically
    /// (previous kept as `cluster.toml.prev`), take the primary's generation, apply live.
    fn accept_pushed_config(
        &self,
        bytes: &[u8],
        generation: u64,
        digest: &str,
    ) -> Result<(), String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "cluster.toml from the peer is not UTF-8".to_owned())?;
        let name = format!("{} (from the primary)", self.cluster_path.display());
        let cluster = tandem_config::parse_cluster_for_node(text, &name, &self.node).map_err(
            |diagnostics| {
                diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        )?;
        let computed = tandem_config::digest(&cluster);
        if computed != digest {
            return Err(format!(
                "digest mismatch: the primary said {digest}, the bytes give {computed}"
            ));
        }
        let current = self.current();
        if current.digest == digest && current.generation == generation {
            return Ok(());
        }
        write_atomically(&self.cluster_path, bytes)
            .map_err(|e| format!("writing {}: {e}", self.cluster_path.display()))?;
        tandem_config::generation::adopt(&self.node.node.state_dir, generation, digest)
            .map_err(|e| format!("recording generation {generation}: {e}"))?;
        let proxy_report = self.proxy.reload(Arc::new(cluster.clone()));
        let vips_changed = service_vips(&current.cluster) != service_vips(&cluster);
        let cluster = Arc::new(cluster);
        if let Ok(mut slot) = self.current.lock() {
            *slot = Current {
                cluster: cluster.clone(),
                text: text.to_owned(),
                digest: digest.to_owned(),
                generation,
            };
        }
        let _ = self.cluster.commands.try_send(Command::LocalConfig {
            generation,
            digest: digest_bytes(digest),
        });
        if let Some(sync) = self.sync.get() {
            sync.set_local_config(local_config(&self.current()));
        }
        if vips_changed {
            let vips = self.vips.clone();
            tokio::spawn(async move { replace_vips(&vips, &cluster).await });
        }
        tracing::info!(
            generation,
            digest,
            added = proxy_report.added.len(),
            changed = proxy_report.changed.len(),
            removed = proxy_report.removed.len(),
            "applied cluster.toml pushed by the primary"
        );
        Ok(())
    }

    /// Background upkeep: health summary for the heartbeat, and which VIPs are really on the interface.
    fn spawn_watchers(self: Arc<Self>) {
        if self.sync.get().is_some() {
            // Active role -> the sync session (the active node's tables are authoritative).
            let mut cluster_status = self.cluster.status.clone();
            let daemon = Arc::downgrade(&self);
            tokio::spawn(async move {
                let mut last = None;
                loop {
                    let active = cluster_status.borrow_and_update().state
                        == tandem_cluster::wire::NodeState::Active;
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
    fn health_summary(&self) -> (u32, u32) {
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

    pub fn current(&self) -> Current {
        match self.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn cluster_status(&self) -> ClusterStatus {
        self.cluster.status.borrow().clone()
    }

    /// `tandem reload` / SIGHUP: validate cluster.toml from disk and apply it live.
    async fn reload_from_disk(&self) -> ActionResult {
        let _serialised = self.reload_lock.lock().await;
        let current = self.current();
        if self.node.node.role == tandem_config::Role::Secondary && self.node.node.peer.is_some() {
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
            return Ok(format!(
                "cluster.toml unchanged (generation {}, digest {})",
                current.generation,
                &current.digest[..current.digest.len().min(16)]
            ));
        }
        let loaded =
            tandem_config::load(&self.cluster_path, &self.node_path).map_err(|diagnostics| {
                ActionError::invalid(format!(
                    "configuration rejected, the running config is unchanged:\n{}",
                    diagnostics
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            })?;
        if loaded.node != self.node {
            tracing::warn!("node.toml changed: its settings take effect at the next restart");
        }
        if loaded.digest == current.digest {
            return Ok(format!(
                "cluster.toml unchanged (generation {})",
                current.generation
            ));
        }
        let message = self
            .apply(
                loaded.cluster,
                loaded.cluster_text,
                loaded.digest,
                loaded.generation,
            )
            .await;
        Ok(message)
    }

    /// Serve a validated configuration: proxy, VIP set, heartbeat's config version.
    async fn apply(
        &self,
        cluster: ClusterConfig,
        text: String,
        digest: String,
        generation: u64,
    ) -> String {
        let cluster = Arc::new(cluster);
        let previous = self.current();
        if previous.cluster.heartbeat != cluster.heartbeat {
            tracing::warn!("[heartbeat] changed: new timings take effect at the next restart");
        }
        let report = self.proxy.reload(cluster.clone());
        if service_vips(&previous.cluster) != service_vips(&cluster) {
            replace_vips(&self.vips, &cluster).await;
        }
        if let Ok(mut slot) = self.current.lock() {
            *slot = Current {
                cluster,
                text,
                digest: digest.clone(),
                generation,
            };
        }
        let _ = self
            .cluster
            .commands
            .send(Command::LocalConfig {
                generation,
                digest: digest_bytes(&digest),
            })
            .await;
        if let Some(sync) = self.sync.get() {
            sync.set_local_config(local_config(&self.current()));
        }
        let message = format!(
            "applied generation {generation} (digest {}): {} added, {} changed, {} removed, {} unchanged{}",
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
        message
    }

    /// Clean stop: the election hands the VIPs over (released before the peer adds them).
    async fn stop(&self) {
        let _ = self.cluster.commands.send(Command::Shutdown).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = self.cluster.status.clone();
        // The driver finishes once the peer confirmed it took over (or after its linger), so
        // the last "stopped" heartbeats reach the peer before the process exits.
        while Instant::now() < deadline {
            if status.borrow().driver_finished {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(100), status.changed())
                .await
                .is_ok_and(|changed| changed.is_err())
            {
                break;
            }
        }
        // Whatever the election managed, never leave our addresses behind on a stopped node.
        let mut vips = self.vips.lock().await;
        if let Some(floating) = vips.floating.as_mut()
            && let Err(error) = floating.release().await
        {
            tracing::error!(%error, "could not remove the VIPs at stop");
        }
        self.proxy.shutdown().await;
        tracing::info!("stopped");
    }

    fn server_action_inner(
        &self,
        service: &str,
        server: &str,
        action: ServerAction,
    ) -> ActionResult {
        let state = match action {
            ServerAction::Online => AdminState::Online,
            ServerAction::Drain => AdminState::Drain,
            ServerAction::Halt { close_existing } => AdminState::Halt { close_existing },
        };
        self.proxy
            .set_server_state(service, server, state)
            .map_err(|error| ActionError::not_found(error.to_string()))?;
        Ok(format!(
            "{service}/{server}: {}",
            match action {
                ServerAction::Online => "online",
                ServerAction::Drain =>
                    "drain (persistent clients only; existing connections finish)",
                ServerAction::Halt {
                    close_existing: false,
                } => "halt (no new connections; existing ones finish)",
                ServerAction::Halt {
                    close_existing: true,
                } => "halt (no new connections; existing ones closed)",
            }
        ))
    }

    /// "standalone", "peer not heard yet", "in sync" or "config out of sync: why".
    fn config_sync_text(
        &self,
        cluster: &ClusterStatus,
        current: &Current,
        sync: Option<&SyncStatus>,
    ) -> String {
        let peer_digest = cluster
            .peer
            .as_ref()
            .map(|peer| hex::encode(peer.config_digest));
        match (&self.node.node.peer, &sync, &cluster.peer, peer_digest) {
            (None, _, _, _) => "standalone".to_owned(),
            // The sync session knows best once it has heard the peer's version.
            (Some(_), Some(sync), _, _) if sync.config.peer.is_some() => {
                if sync.config.in_sync {
                    "in sync".to_owned()
                } else {
                    format!(
                        "config out of sync: {}",
                        sync.config
                            .reason
                            .clone()
                            .unwrap_or_else(|| "versions differ".into())
                    )
                }
            }
            (Some(_), _, None, _) => "peer not heard yet".to_owned(),
            (Some(_), _, Some(_), Some(digest)) if digest == current.digest => "in sync".to_owned(),
            (Some(_), _, Some(peer), _) => format!(
                "config out of sync: peer runs generation {}",
                peer.config_generation
            ),
        }
    }

    fn vips_held(&self) -> Vec<IpAddr> {
        self.vips_seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let cluster = self.cluster_status();
        let current = self.current();
        let vips_held = self.vips_held();
        let peer = cluster.peer.as_ref().map(|peer| {
            serde_json::json!({
                "name": peer.name,
                "address": self.node.node.peer,
                "role": peer.role.as_str(),
                "state": if peer.alive { peer.state.as_str() } else { "dead" },
                "alive": peer.alive,
                "last_heard_ms": peer.last_heard.elapsed().as_millis() as u64,
                "holds_vips": peer.holds_vips,
                "config_generation": peer.config_generation,
                "config_digest": hex::encode(peer.config_digest),
                "servers_up": peer.servers_up,
                "servers_total": peer.servers_total,
            })
        });
        let sync_status = self.sync_status();
        let sync = self.config_sync_text(&cluster, &current, sync_status.as_ref());
        let mut services = serde_json::to_value(self.proxy.status())
            .ok()
            .and_then(|status| status.get("services").cloned())
            .unwrap_or(serde_json::Value::Null);
        flatten_admin_states(&mut services);
        serde_json::json!({
            "node": {
                "name": self.node.node.name,
                "role": self.node.node.role.as_str(),
                "address": self.node.node.address,
                "state": cluster.state.as_str(),
                "state_since_ms": cluster.state_since.elapsed().as_millis() as u64,
                "fault": cluster.fault,
                "ping": format!("{:?}", cluster.ping).to_lowercase(),
                "manage_vips": self.node.node.manage_vips,
                "interface": self.node.node.interface,
                "vips": service_vips(&current.cluster),
                "vips_held": vips_held,
                "uptime_s": self.started.elapsed().as_secs(),
                "peer": peer,
            },
            "config": {
                "generation": current.generation,
                "digest": current.digest,
                "sync": sync,
            },
            "cluster": {
                "takeovers": cluster.takeovers,
                "releases": cluster.releases,
                "split_brains": cluster.split_brains,
                "warn_time_exceeded": cluster.warn_time_exceeded,
                "vip_failures": cluster.vip_failures,
                "last_event": cluster.last_event,
                "heartbeats": {
                    "sent": cluster.heartbeats.sent,
                    "send_errors": cluster.heartbeats.send_errors,
                    "received": cluster.heartbeats.received,
                    "rejected": cluster.heartbeats.rejected.iter().collect::<std::collections::BTreeMap<_, _>>(),
                },
            },
            "replication": sync_status,
            "services": services,
        })
    }
}

/// `admin_state` reads as "online" / "drain" / "halt" in the status document, like the appliance's buttons.
fn flatten_admin_states(services: &mut serde_json::Value) {
    let Some(services) = services.as_array_mut() else {
        return;
    };
    for server in services
        .iter_mut()
        .filter_map(|service| service.get_mut("servers").and_then(|s| s.as_array_mut()))
        .flatten()
    {
        if let Some(state) = server
            .get("admin_state")
            .and_then(|admin| admin.get("state"))
            .cloned()
        {
            server["admin_state"] = state;
        }
    }
}

/// The set of VIPs changed: move only the difference if this node holds them.
async fn replace_vips(vips: &tokio::sync::Mutex<VipState>, cluster: &ClusterConfig) {
    let mut state = vips.lock().await;
    let Some(floating) = state.floating.as_mut() else {
        return;
    };
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
    if let Err(error) = floating.update_vips(next).await {
        tracing::error!(%error, "moving to the new VIP set failed");
    }
}

fn local_config(current: &Current) -> LocalConfig {
    LocalConfig {
        bytes: current.text.clone().into_bytes(),
        version: ConfigVersion {
            generation: current.generation,
            digest: current.digest.clone(),
        },
    }
}

/// temp file, fsync, keep the previous as `.prev`, rename, fsync the directory.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    if path.exists() {
        std::fs::copy(path, dir.join(format!("{name}.prev")))?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The sync session hands pushed configs to the daemon through this.
struct PushedConfigSink(std::sync::Weak<Daemon>);

impl ConfigSink for PushedConfigSink {
    fn offer(&mut self, bytes: &[u8], generation: u64, digest: &str) -> Result<(), String> {
        match self.0.upgrade() {
            Some(daemon) => {
                let result = daemon.accept_pushed_config(bytes, generation, digest);
                if let Err(reason) = &result {
                    tracing::error!(generation, %reason, "refused cluster.toml pushed by the primary; running config unchanged");
                }
                result
            }
            None => Err("the node is stopping".into()),
        }
    }
}

/// Like the heartbeat port: the same on both nodes unless a test overrides it.
fn peer_sync_port(own: u16) -> u16 {
    std::env::var("TANDEM_PEER_SYNC_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(own)
}

/// Both nodes use the same heartbeat port, except when a test runs two nodes on one host and sets
/// `TANDEM_PEER_HEARTBEAT_PORT`.
fn peer_port(own: u16) -> u16 {
    std::env::var("TANDEM_PEER_HEARTBEAT_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(own)
}

impl AdminBackend for Daemon {
    fn status(&self) -> serde_json::Value {
        self.status_json()
    }

    fn metrics(&self) -> String {
        let cluster = self.cluster_status();
        let current = self.current();
        let sync = self.sync_status();
        let config_sync = self.config_sync_text(&cluster, &current, sync.as_ref());
        metrics::render(&metrics::Inputs {
            cluster: &cluster,
            proxy: &self.proxy.status(),
            sync: sync.as_ref(),
            current: &current,
            vips_held: self.vips_held().len(),
            config_in_sync: config_sync == "in sync" || config_sync == "standalone",
        })
    }

    fn server_action(&self, service: &str, server: &str, action: ServerAction) -> ActionResult {
        self.server_action_inner(service, server, action)
    }

    async fn takeover(&self) -> ActionResult {
        if self.node.node.peer.is_none() {
            return Ok("standalone node: it is always active".into());
        }
        self.cluster
            .commands
            .send(Command::Takeover)
            .await
            .map_err(|_| ActionError::refused("the election is not running"))?;
        self.wait_for_state(&["active"], "takeover").await
    }

    async fn release(&self) -> ActionResult {
        if self.node.node.peer.is_none() {
            return Err(ActionError::refused(
                "standalone node: there is no peer to hand over to",
            ));
        }
        self.cluster
            .commands
            .send(Command::Release)
            .await
            .map_err(|_| ActionError::refused("the election is not running"))?;
        self.wait_for_state(&["standby"], "release").await
    }

    async fn reload(&self) -> ActionResult {
        self.reload_from_disk().await
    }
}

impl Daemon {
    /// Wait (bounded) until the election reaches one of `states`, so the CLI reports the outcome.
    async fn wait_for_state(&self, states: &[&str], what: &str) -> ActionResult {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = self.cluster.status.clone();
        loop {
            let state = status.borrow().state.as_str();
            if states.contains(&state) {
                return Ok(format!("{what}: this node is now {state}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let last = status.borrow().last_event.clone().unwrap_or_default();
                return Err(ActionError::refused(format!(
                    "{what} did not complete within 5 s: this node is {state} ({last})"
                )));
            }
            let _ = tokio::time::timeout(left, status.changed()).await;
        }
    }
}
