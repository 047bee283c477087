//! Start-up and shutdown: the process (tracing, runtime, signals, admin listener), the heartbeat
//! thread, and bringing the proxy, election, VIPs and sync session up in order and down cleanly.

use super::config_flow::{PushedConfigSink, local_config};
use super::vips::{DaemonVips, VipState, floating_vips};
use super::{Current, Daemon, digest_bytes};
use anyhow::{Context, Result, anyhow};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_admin::Credentials;
use tandem_cluster::driver::{ClusterHandle, Command, DriverConfig};
use tandem_cluster::election::{ElectionConfig, Timings};
use tandem_config::{HttpEngineKind, Loaded, NodeConfig, TcpRelayKind, Tuning};
use tandem_proxy::{Proxy, ProxyOptions, SharedStickTables};
use tandem_stick::StickTables;
use tandem_sync::SyncParams;
use tandem_types::Secret;
use tokio::signal::unix::{SignalKind, signal};

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
        .worker_threads(loaded.node.tuning.worker_threads())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async_main(loaded, cluster_path, node_path))?;
    Ok(ExitCode::SUCCESS)
}

/// The HTTP engine `[tuning] http_engine` names.
fn http_engine(tuning: &Tuning) -> Arc<dyn tandem_proxy::HttpEngine> {
    match tuning.http_engine {
        HttpEngineKind::Hyper => {
            tracing::info!("HTTP mode on the hyper engine ([tuning] http_engine = \"hyper\")");
            Arc::new(tandem_proxy::HyperEngine)
        }
        HttpEngineKind::Tasks => {
            tracing::info!(
                "HTTP mode in the runtime's tasks, writes not batched ([tuning] http_engine = \"tasks\")"
            );
            Arc::new(tandem_proxy::H1Engine::in_runtime())
        }
        HttpEngineKind::Batched => {
            match tandem_proxy::H1Engine::on_threads(tuning.worker_threads()) {
                Ok(engine) => Arc::new(engine),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the HTTP threads; HTTP mode runs in the main runtime");
                    Arc::new(tandem_proxy::H1Engine::in_runtime())
                }
            }
        }
    }
}

/// The TCP relay `[tuning] tcp_relay` names (`uring` and `auto` ask for the same; the daemon refuses to run on
/// the poll loops only for `uring`, after the proxy started).
fn tcp_relay(tuning: &Tuning) -> tandem_proxy::TcpRelay {
    let workers = tuning.worker_threads();
    match tuning.tcp_relay {
        TcpRelayKind::Tasks => {
            tracing::info!(
                "TCP mode relays in the connection tasks ([tuning] tcp_relay = \"tasks\")"
            );
            tandem_proxy::TcpRelay::Tasks
        }
        TcpRelayKind::Poll => {
            tracing::info!("TCP mode relays on poll loops ([tuning] tcp_relay = \"poll\")");
            tandem_proxy::TcpRelay::Loops(workers)
        }
        TcpRelayKind::Auto | TcpRelayKind::Uring => tandem_proxy::TcpRelay::Uring(workers),
    }
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

/// The election runs on its own OS thread with its own runtime, at real-time priority when the
/// kernel allows it: a proxy busy with thousands of connections (or a loaded machine) must not
/// delay heartbeats, or a healthy peer would be declared dead at short dead times.
async fn spawn_heartbeat_thread(
    driver: DriverConfig,
    vips: DaemonVips,
    realtime: bool,
) -> Result<ClusterHandle> {
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tandem-heartbeat".into())
        .spawn(move || {
            if realtime {
                raise_to_realtime();
            }
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
        let tuning = &node.tuning;
        let proxy = Proxy::start_with_options(
            cluster.clone(),
            stick,
            ProxyOptions {
                clock: tandem_stick::Clock::new(),
                http_engine: http_engine(tuning),
                tcp_relay: tcp_relay(tuning),
                relay_yield: tuning.relay_yield,
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
        if tuning.tcp_relay == TcpRelayKind::Uring
            && !matches!(proxy.tcp_relay(), tandem_proxy::TcpRelay::Uring(_))
        {
            proxy.shutdown().await;
            return Err(anyhow!(
                "[tuning] tcp_relay = \"uring\" but io_uring cannot be set up here (see the log); \
                 use \"auto\" to fall back to the poll loops"
            ));
        }

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
            .map(|peer| SocketAddr::new(peer, node.node.heartbeat_port));
        let sync_secret = secret.clone();
        let mut driver = DriverConfig::new(election, bind, peer, secret);
        driver.ping_nodes = heartbeat.ping_nodes.clone();
        let cluster_handle =
            spawn_heartbeat_thread(driver, DaemonVips(vips.clone()), tuning.heartbeat_realtime)
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
            peer: SocketAddr::new(peer, self.node.node.sync_port),
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
}
