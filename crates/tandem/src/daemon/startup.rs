//! Start-up and shutdown: the process (tracing, runtime, signals, admin listener), the heartbeat
//! thread, and bringing the proxy, election, VIPs and sync session up in order and down cleanly.

use super::config_flow::{PushedConfigSink, local_config};
use super::guardian::Guardian;
use super::vips::{DaemonVips, GarpSent, VipState, floating_vips};
use super::{Current, Daemon, digest_bytes, election_timings};
use anyhow::{Context, Result, anyhow};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_admin::{AdminEndpoint, Credentials, HttpOptions};
use tandem_cluster::driver::{ClusterHandle, Command, DriverConfig};
use tandem_cluster::election::ElectionConfig;
use tandem_config::{HttpEngineKind, HttpWriteBatching, Loaded, NodeConfig, TcpRelayKind, Tuning};
use tandem_proxy::{Proxy, ProxyOptions, SharedStickTables};
use tandem_stick::StickTables;
use tandem_sync::SyncParams;
use tandem_types::Secret;
use tokio::signal::unix::{SignalKind, signal};

/// Entry point of `tandem run`.
pub fn run(cluster_path: PathBuf, node_path: PathBuf) -> Result<ExitCode> {
    // The log's shape is node.toml's to choose, so it starts once the configuration is read; a
    // rejected configuration goes to stderr as file:line:col lines (the journal keeps them too).
    // A certificate out of its dates is served (and logged as an error below): a lapsed certificate must not keep
    // the node from its other services and its failover role. `tandem check` still refuses it.
    let loaded = match tandem_config::load(
        &cluster_path,
        &node_path,
        tandem_config::ExpiredCertificates::Serve,
    ) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter() {
                eprintln!("{diagnostic}");
            }
            eprintln!("tandem: configuration rejected, not starting");
            return Ok(ExitCode::FAILURE);
        }
    };
    super::logging::init(&loaded.node.log);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    for alarm in &loaded.alarms {
        tracing::error!("{alarm}");
    }
    // Root's part is done (config read, generation recorded); from here on every thread runs as the unprivileged
    // user with the four capabilities it needs. Here, before the runtime: capabilities are per thread, and every
    // thread started later inherits exactly these (privileges.rs says more).
    super::privileges::drop_privileges(&super::privileges::plan_for_node(
        &loaded.node.node.user,
        &loaded.node,
        &cluster_path,
        &node_path,
    ))
    .map_err(|error| anyhow!("{error}"))?;
    // Still one thread: the only moment the VIP guardian can be forked safely, before any VIP is added.
    let guardian = if loaded.node.node.manage_vips {
        let vips = tandem_config::service_vips(&loaded.cluster)
            .into_iter()
            .map(tandem_vip::Vip::host)
            .collect::<Result<Vec<_>, _>>()?;
        super::guardian::Guardian::spawn(
            &loaded.node.node.state_dir,
            &loaded.node.node.interface,
            vips,
        )
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loaded.node.tuning.worker_threads())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async_main(loaded, cluster_path, node_path, guardian))?;
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
            let batching = match tuning.http_write_batching {
                HttpWriteBatching::Adaptive => tandem_proxy::WriteBatching::Adaptive,
                HttpWriteBatching::Always => tandem_proxy::WriteBatching::Always,
                HttpWriteBatching::Never => tandem_proxy::WriteBatching::Never,
            };
            let poll = std::time::Duration::from_micros(u64::from(tuning.http_poll_us));
            match tandem_proxy::H1Engine::on_threads(tuning.worker_threads(), batching, poll) {
                Ok(engine) => Arc::new(engine),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the HTTP threads; HTTP mode runs in the main runtime");
                    Arc::new(tandem_proxy::H1Engine::in_runtime())
                }
            }
        }
    }
}

/// `[access_log]`: its writer thread, with the file opened now so that a path that cannot be written stops the
/// start with the reason.
fn access_log(node: &NodeConfig) -> Result<Option<tandem_proxy::AccessLog>> {
    let config = &node.access_log;
    let Some(target) = config.path.clone() else {
        return Ok(None);
    };
    let log = tandem_proxy::AccessLog::start(target, config.queue, config.skip.clone())
        .context("[access_log] path")?;
    Ok(Some(log))
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
        Ok(secret) => Ok(secret),
        Err(error) if error.is_fatal() => Err(anyhow!("{error}")),
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

async fn async_main(
    loaded: Loaded,
    cluster_path: PathBuf,
    node_path: PathBuf,
    guardian: Option<Guardian>,
) -> Result<()> {
    // The handlers come first: a SIGTERM while the listeners are being bound (the service ports answer before the
    // admin endpoint is up) is then held until the loop below and stops the daemon cleanly, where the default action
    // would have killed it half-started.
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let secret = secret_for(&loaded.node)?;
    let admin = AdminSetup::prepare(&loaded.node).await?;
    let daemon = Daemon::start(loaded, cluster_path, node_path, secret, guardian).await?;
    let admin = admin.spawn(&daemon);
    // Every listener is bound (admin, services, heartbeat, sync), the election runs and a SIGTERM from here on is
    // a clean stop: systemd may go on.
    let mut notify = daemon.notify_ready();
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                // logrotate's postrotate: the access log goes to a fresh file.
                daemon.proxy.reopen_access_log();
                match daemon.reload_from_disk().await {
                    Ok(message) => tracing::info!("SIGHUP reload: {message}"),
                    Err(error) => tracing::error!("SIGHUP reload refused: {}", error.message),
                }
            }
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    notify.stopping();
    admin.stop();
    daemon.stop().await;
    notify.stop();
    Ok(())
}

/// The admin endpoint before the daemon runs: both listeners bound, credentials and TLS
/// identity loaded, so a mistake there stops the start-up before anything else happens.
struct AdminSetup {
    http: tokio::net::TcpListener,
    options: HttpOptions,
    socket: Option<(tokio::net::UnixListener, PathBuf)>,
    /// `[metrics] listen`: GET /metrics only.
    metrics: Option<tokio::net::TcpListener>,
    endpoint: Arc<AdminEndpoint>,
}

/// The running admin listeners.
struct AdminTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: Option<PathBuf>,
}

impl AdminSetup {
    async fn prepare(node: &NodeConfig) -> Result<Self> {
        let admin = &node.admin;
        let http = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("binding the admin address {}", admin.listen))?;
        let credentials = admin_credentials(node)?;
        let tls = admin_tls(node)?;
        let socket = admin_socket(node)?;
        let metrics = match node.metrics.listen {
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the metrics address {listen}"))?;
                tracing::info!(%listen, "metrics listener: GET /metrics only, no credentials");
                Some(listener)
            }
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = Arc::new(AdminEndpoint {
            url: format!("{scheme}://{}", admin.listen),
            tls_fingerprint: tls.as_ref().map(|tls| tls.fingerprint.clone()),
            self_signed: tls.as_ref().is_some_and(|tls| tls.self_signed),
            credentials: credentials.is_some(),
            socket: socket.as_ref().map(|(_, path)| path.display().to_string()),
        });
        match &tls {
            Some(tls) => tracing::info!(
                url = %endpoint.url,
                fingerprint = %tls.fingerprint,
                certificate = %tls.certificate.display(),
                self_signed = tls.self_signed,
                "admin endpoint on HTTPS; certificate SHA-256 fingerprint {}",
                tls.fingerprint
            ),
            None => tracing::info!(url = %endpoint.url, "admin endpoint on plain HTTP (loopback)"),
        }
        let mut options = HttpOptions::new(admin.listen);
        options.credentials = credentials;
        options.hostnames = admin.hostnames.clone();
        options.tls = tls;
        Ok(Self {
            http,
            options,
            socket,
            metrics,
            endpoint,
        })
    }

    fn spawn(self, daemon: &Arc<Daemon>) -> AdminTasks {
        let limits = self.options.limits;
        let mut tasks = vec![tokio::spawn(tandem_admin::serve(
            self.http,
            daemon.clone(),
            self.options,
            self.endpoint.clone(),
        ))];
        if let Some(listener) = self.metrics {
            tasks.push(tokio::spawn(tandem_admin::serve_metrics(
                listener,
                daemon.clone(),
                limits,
                self.endpoint.clone(),
            )));
        }
        let mut socket = None;
        if let Some((listener, path)) = self.socket {
            tasks.push(tokio::spawn(tandem_admin::serve_unix(
                listener,
                daemon.clone(),
                limits,
                self.endpoint,
            )));
            socket = Some(path);
        }
        AdminTasks { tasks, socket }
    }
}

impl AdminTasks {
    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        if let Some(path) = self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `[admin] user` with the hash in `password_file`. A file open to others or holding a clear-text
/// password stops the start; a missing one leaves HTTP without credentials (POSTs refused there,
/// the socket still works).
fn admin_credentials(node: &NodeConfig) -> Result<Option<Credentials>> {
    let (Some(user), Some(path)) = (&node.admin.user, &node.admin.password_file) else {
        return Ok(None);
    };
    match tandem_config::password::load_password_file(path) {
        Ok(hash) => Ok(Some(Credentials {
            user: user.clone(),
            hash,
            file: Some(path.clone()),
        })),
        Err(tandem_config::password::PasswordError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::error!(
                path = %path.display(),
                "admin password file missing: state-changing requests over HTTP will be refused \
                 (the local socket still works); write it with `tandem password FILE`"
            );
            Ok(None)
        }
        Err(error) => Err(anyhow!("{error}")),
    }
}

/// The HTTPS identity: the configured certificate, else a self-signed one off loopback.
fn admin_tls(node: &NodeConfig) -> Result<Option<tandem_admin::tls::TlsIdentity>> {
    let admin = &node.admin;
    if let (Some(certificate), Some(key)) = (&admin.tls_certificate, &admin.tls_key) {
        return Ok(Some(tandem_admin::tls::load_identity(certificate, key)?));
    }
    if !admin.uses_tls() {
        return Ok(None);
    }
    let mut ips = vec![node.node.address];
    if !admin.listen.ip().is_unspecified() {
        ips.push(admin.listen.ip());
    }
    ips.dedup();
    let identity =
        tandem_admin::tls::self_signed_identity(&node.node.state_dir, &admin.hostnames, &ips)?;
    Ok(Some(identity))
}

/// The local CLI's socket. A configured path that cannot be served stops the start; the default
/// one (`/run/tandem/admin.sock`) only warns, unless another daemon answers there.
fn admin_socket(node: &NodeConfig) -> Result<Option<(tokio::net::UnixListener, PathBuf)>> {
    let path = &node.admin.socket;
    match tandem_admin::socket::bind_socket(path) {
        Ok((listener, mode)) => {
            tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "admin socket");
            Ok(Some((listener, path.clone())))
        }
        Err(error)
            if error.kind() != std::io::ErrorKind::AddrInUse
                && path.as_os_str() == tandem_config::node_defaults::ADMIN_SOCKET =>
        {
            tracing::warn!(
                %error,
                path = %path.display(),
                "no admin socket: the local CLI falls back to HTTP (set [admin] socket)"
            );
            Ok(None)
        }
        Err(error) => {
            Err(anyhow!(error).context(format!("serving the admin socket {}", path.display())))
        }
    }
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
        guardian: Option<Guardian>,
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
        super::ports::warn_if_ephemeral(&fixed_ports(&node));

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
        let garp_sent = GarpSent::of(floating.as_ref());

        let stick: SharedStickTables = Arc::new(Mutex::new(StickTables::new()));
        let tuning = &node.tuning;
        // Names the build's handshake provider (the `aws-lc-rs` feature), so a benchmark shows which it measured.
        tracing::info!(
            provider = tandem_proxy::tls::PROVIDER_NAME,
            "TLS termination on rustls"
        );
        let proxy = Proxy::start_with_options(
            cluster.clone(),
            stick,
            ProxyOptions {
                clock: tandem_stick::Clock::new(),
                http_engine: http_engine(tuning),
                tcp_relay: tcp_relay(tuning),
                relay_yield: tuning.relay_yield,
                access_log: access_log(&node)?,
                // Both nodes derive the same TLS session-ticket keys: a ticket resumes after a failover.
                ticket_secret: Some(tandem_proxy::TicketSecret::from_cluster_secret(
                    secret.expose(),
                )),
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
        let manages_vips = floating.is_some();
        let vips = Arc::new(tokio::sync::Mutex::new(VipState::new(
            floating,
            guardian,
            proxy.clone(),
        )));
        if manages_vips {
            // A drain table an earlier run left would silence or divert these VIPs: gone before the election
            // runs, so that no takeover waits for it (and a missing `nft` is said now).
            vips.lock().await.clear_drain().await;
        }
        let admin_states = super::admin_states::DaemonAdminStates::restore(&node, &cluster, &proxy);
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
            election_timings(heartbeat),
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
        // A peer whose heartbeat port is unreachable is probed on its sync port: a RST confirms its daemon is gone.
        driver.probe_port = node.node.peer.map(|_| node.node.sync_port);
        let cluster_handle =
            spawn_heartbeat_thread(driver, DaemonVips(vips.clone()), tuning.heartbeat_realtime)
                .await
                .map_err(|error| {
                    let hint = error
                        .downcast_ref::<std::io::Error>()
                        .map(|io| super::ports::bind_hint(io, &fixed_ports(&node)))
                        .unwrap_or_default();
                    anyhow!("starting the heartbeat on {bind}: {error:#}{hint}")
                })?;
        let hooks = Arc::new(super::hooks::HookRunner::new(
            node.hooks.clone(),
            node.node.name.clone(),
            node.node.peer,
        ));
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
                files: super::config_flow::config_files(&loaded),
                text: loaded.cluster_text,
                digest: loaded.digest,
                generation: loaded.generation,
            }),
            proxy,
            cluster: cluster_handle,
            vips,
            garp_sent,
            conflicts: Default::default(),
            vips_seen: Mutex::new(Vec::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            applying_pushed: Mutex::new(()),
            started: Instant::now(),
            sync: std::sync::OnceLock::new(),
            hooks,
            admin_states,
            reloads: Default::default(),
        });
        daemon.clone().start_sync(sync_secret).await?;
        daemon.clone().spawn_watchers();
        daemon.hooks.start(daemon.cluster.status.clone());
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
            settings: tandem_sync::SyncSettings {
                admin_states: Some(self.admin_states.shared()),
                ..Default::default()
            },
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
        .map_err(|error| {
            let hint = super::ports::bind_hint(&error, &fixed_ports(&self.node));
            anyhow!("starting the sync session on {local}: {error}{hint}")
        })?;
        forward_peer_closes(handle.peer_closes(), self.cluster.commands.clone());
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
        // A handover drain under way ends first (bounded by handover_drain_ms): what is in flight finishes.
        let draining = self.vips.lock().await.draining.take();
        if let Some(draining) = draining {
            let _ = draining.await;
        }
        // Whatever the election managed, never leave our addresses behind on a stopped node.
        let mut vips = self.vips.lock().await;
        if let Some(floating) = vips.floating.as_mut() {
            match floating.release().await {
                // Released here: the guardian must not touch the interface (a restarted daemon may be
                // adding them already).
                Ok(()) => {
                    if let Some(guardian) = vips.guardian.take() {
                        guardian.stop();
                    }
                }
                // The guardian tries again when this process exits.
                Err(error) => tracing::error!(%error, "could not remove the VIPs at stop"),
            }
        }
        vips.clear_drain().await;
        self.proxy.shutdown().await;
        self.hooks.stop();
        tracing::info!("stopped");
    }
}

/// The node's fixed ports an outgoing connection must not take (daemon/ports.rs).
fn fixed_ports(node: &NodeConfig) -> Vec<(&'static str, u16)> {
    let mut ports = vec![("heartbeat", node.node.heartbeat_port)];
    if node.node.peer.is_some() {
        ports.insert(0, ("sync", node.node.sync_port));
    }
    ports
}

/// Tells the election each time the sync session is closed or reset from the peer's side: the first sign of a
/// daemon killed on a live host, which the election confirms before giving the peer up (docs/protocol.md,
/// "Process death"). Ends with the sync task or the election.
fn forward_peer_closes(
    mut closes: tokio::sync::watch::Receiver<u64>,
    commands: tokio::sync::mpsc::Sender<Command>,
) {
    tokio::spawn(async move {
        while closes.changed().await.is_ok() {
            if commands.send(Command::PeerSessionLost).await.is_err() {
                break;
            }
        }
    });
}
