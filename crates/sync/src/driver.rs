//! The thin tokio driver: dials or accepts the one TCP session, runs the handshake and the
//! state machines, and publishes [`SyncStatus`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ring::rand::{SecureRandom, SystemRandom};
use tandem_stick::{Clock, StickTables};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tracing::{debug, info, warn};

use crate::config_push::{
    ConfigAction, ConfigPush, ConfigRole, ConfigSink, ConfigSyncState, LocalConfig,
};
use crate::handshake::{AcceptorHandshake, DialerHandshake, Identity, SessionKeys};
use crate::reject::{RejectCounters, RejectReason, Rejection};
use crate::replication::{ReplicationSettings, Replicator};
use crate::session::{Message, Session, SessionTimers};
use crate::status::{ConfigStatus, SyncCounters, SyncStatus, TableSyncStatus};
use crate::wire::{DEFAULT_MAX_FRAME, length_codec};

/// The stick tables, shared with the proxy.
pub type SharedTables = Arc<Mutex<StickTables>>;

/// Who opens the TCP connection: the node whose `(address, port)` is lower dials, the other
/// accepts. Both nodes compute the same answer from their `node.toml`s.
pub fn dials(local: SocketAddr, peer: SocketAddr) -> bool {
    (local.ip(), local.port()) < (peer.ip(), peer.port())
}

/// Tunables of the driver.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub max_frame: usize,
    /// How often the change log is read for new updates (the batching interval).
    pub batch_interval: Duration,
    pub timers: SessionTimers,
    pub handshake_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Sealed frames waiting for the socket; beyond this nothing more is read from the tables.
    pub write_queue_frames: usize,
    pub replication: ReplicationSettings,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            batch_interval: Duration::from_millis(2),
            timers: SessionTimers::default(),
            handshake_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(3),
            write_queue_frames: 32,
            replication: ReplicationSettings::default(),
        }
    }
}

/// What the daemon gives the sync task.
#[derive(Debug, Clone)]
pub struct SyncParams {
    /// This node's sync address (`node.address`, `node.sync_port`): listened on when accepting,
    /// the source address when dialing.
    pub local: SocketAddr,
    /// The peer's (`node.peer`, same port).
    pub peer: SocketAddr,
    pub identity: Identity,
    pub role: ConfigRole,
    pub settings: SyncSettings,
}

/// The daemon's side of a running sync task.
pub struct SyncHandle {
    status: watch::Receiver<SyncStatus>,
    local_config: watch::Sender<Option<LocalConfig>>,
    active: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SyncHandle {
    /// Latest status (updated a few times a second and on every change of state).
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// A new local `cluster.toml` was accepted (reload on the primary, or a pushed one applied):
    /// the primary pushes it to the peer.
    pub fn set_local_config(&self, config: LocalConfig) {
        self.local_config.send_replace(Some(config));
    }

    /// This node became active (serves clients) or standby.
    pub fn set_active(&self, active: bool) {
        self.active.send_replace(active);
    }

    /// Stops the task (the session is closed).
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the sync task. Binds the listener at once when this node accepts (so a port in use
/// is reported here). `clock` must be the one the proxy uses for the same tables.
pub async fn spawn_sync(
    params: SyncParams,
    tables: SharedTables,
    clock: Clock,
    sink: Box<dyn ConfigSink>,
    local_config: Option<LocalConfig>,
    active: bool,
) -> std::io::Result<SyncHandle> {
    let mut params = params;
    if params.local == params.peer {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "sync: this node and its peer have the same address {}",
                params.local
            ),
        ));
    }
    // Messages of entries/updates must fit a frame with room for the envelope.
    let settings = &mut params.settings;
    settings.replication.max_message_bytes = settings
        .replication
        .max_message_bytes
        .min(settings.max_frame / 4)
        .max(1);
    let listener = if dials(params.local, params.peer) {
        None
    } else {
        Some(TcpListener::bind(params.local).await?)
    };
    let (status_tx, status_rx) = watch::channel(SyncStatus::default());
    let (config_tx, config_rx) = watch::channel(local_config.clone());
    let (active_tx, active_rx) = watch::channel(active);
    let mut process = [0u8; 8];
    SystemRandom::new()
        .fill(&mut process)
        .map_err(|_| std::io::Error::other("system random source failed"))?;
    let driver = Driver {
        replicator: Replicator::new(
            params.settings.replication.clone(),
            u64::from_le_bytes(process),
        ),
        config: ConfigPush::new(params.role, local_config),
        params,
        tables,
        clock,
        sink,
        status_tx,
        config_rx,
        active_rx,
        rejects: Arc::new(Mutex::new(RejectCounters::default())),
        counters: SyncCounters::default(),
        connected: false,
        protocol_version: None,
        last_error: None,
    };
    let task = tokio::spawn(driver.run(listener));
    Ok(SyncHandle {
        status: status_rx,
        local_config: config_tx,
        active: active_tx,
        task,
    })
}

struct Driver {
    params: SyncParams,
    tables: SharedTables,
    clock: Clock,
    sink: Box<dyn ConfigSink>,
    status_tx: watch::Sender<SyncStatus>,
    config_rx: watch::Receiver<Option<LocalConfig>>,
    active_rx: watch::Receiver<bool>,
    replicator: Replicator,
    config: ConfigPush,
    rejects: Arc<Mutex<RejectCounters>>,
    counters: SyncCounters,
    connected: bool,
    protocol_version: Option<u16>,
    last_error: Option<String>,
}

/// An authenticated connection ready for the session.
struct Authenticated {
    reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    keys: SessionKeys,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the tables half-updated in a way that matters
    // more than stopping replication would: keep going with the data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_rejection(error: std::io::Error) -> Rejection {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
    {
        Rejection::new(
            RejectReason::FrameTooLarge,
            "incoming frame over the size limit",
        )
    } else {
        Rejection::new(RejectReason::Io, error.to_string())
    }
}

async fn next_payload(
    reader: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) -> Result<Bytes, Rejection> {
    match reader.next().await {
        Some(Ok(bytes)) => Ok(bytes.freeze()),
        Some(Err(e)) => Err(read_rejection(e)),
        None => Err(Rejection::new(
            RejectReason::Io,
            "connection closed by the peer",
        )),
    }
}

async fn send_payload(
    writer: &mut FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    payload: Vec<u8>,
) -> Result<(), Rejection> {
    writer
        .send(Bytes::from(payload))
        .await
        .map_err(|e| Rejection::new(RejectReason::Io, e.to_string()))
}

fn frame_halves(
    stream: TcpStream,
    max_frame: usize,
) -> (
    FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (
        FramedRead::new(r, length_codec(max_frame)),
        FramedWrite::new(w, length_codec(max_frame)),
    )
}

async fn dial_handshake(
    stream: TcpStream,
    identity: &Identity,
    max_frame: usize,
) -> Result<Authenticated, Rejection> {
    let (mut reader, mut writer) = frame_halves(stream, max_frame);
    let rng = SystemRandom::new();
    let (state, hello) = DialerHandshake::start(identity, &rng)?;
    send_payload(&mut writer, hello).await?;
    let challenge = next_payload(&mut reader).await?;
    let (proof, keys) = state.on_challenge(&challenge)?;
    send_payload(&mut writer, proof).await?;
    Ok(Authenticated {
        reader,
        writer,
        keys,
    })
}

async fn accept_handshake(
    stream: TcpStream,
    identity: &Identity,
    max_frame: usize,
) -> Result<Authenticated, Rejection> {
    let (mut reader, mut writer) = frame_halves(stream, max_frame);
    let rng = SystemRandom::new();
    let hello = next_payload(&mut reader).await?;
    let (state, challenge) = match AcceptorHandshake::on_hello(identity, &rng, &hello) {
        Ok(ok) => ok,
        Err(failure) => {
            if let Some(reply) = failure.reply {
                let _ = send_payload(&mut writer, reply).await;
            }
            return Err(failure.rejection);
        }
    };
    send_payload(&mut writer, challenge).await?;
    let proof = next_payload(&mut reader).await?;
    let keys = state.on_proof(&proof)?;
    Ok(Authenticated {
        reader,
        writer,
        keys,
    })
}

/// A handshake (either side) bounded by `limit`; running out of time is a rejection like any other.
async fn within_handshake_timeout<T>(
    limit: Duration,
    handshake: impl Future<Output = Result<T, Rejection>>,
) -> Result<T, Rejection> {
    tokio::time::timeout(limit, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                RejectReason::HandshakeTimeout,
                "handshake not finished in time",
            ))
        })
}

fn record(rejects: &Mutex<RejectCounters>, rejection: &Rejection, peer: &str) {
    lock(rejects).count(rejection.reason);
    warn!(peer, reason = rejection.reason.as_str(), detail = %rejection.detail, "sync session rejected");
}

/// Accepts connections for ever, authenticating each (a few at a time); authenticated ones go
/// to the driver, which replaces its current session with the newest.
async fn accept_loop(
    listener: TcpListener,
    params: SyncParams,
    rejects: Arc<Mutex<RejectCounters>>,
    sessions: mpsc::Sender<Authenticated>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "sync accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if from.ip() != params.peer.ip() {
            record(
                &rejects,
                &Rejection::new(
                    RejectReason::UnexpectedSource,
                    format!("connection from {from}"),
                ),
                &from.to_string(),
            );
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%from, "too many sync handshakes in progress; dropping connection");
            continue;
        };
        let identity = params.identity.clone();
        let settings = params.settings.clone();
        let rejects = rejects.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = within_handshake_timeout(
                settings.handshake_timeout,
                accept_handshake(stream, &identity, settings.max_frame),
            )
            .await;
            match result {
                Ok(auth) => {
                    let _ = sessions.send(auth).await;
                }
                Err(rejection) => record(&rejects, &rejection, &from.to_string()),
            }
        });
    }
}

async fn dial(params: &SyncParams) -> std::io::Result<TcpStream> {
    let socket = if params.peer.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(params.local.ip(), 0))?;
    socket.connect(params.peer).await
}

enum SessionEnd {
    Closed(Rejection),
    Replaced(Box<Authenticated>),
}

impl Driver {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn run(mut self, listener: Option<TcpListener>) {
        let peer = self.params.peer.to_string();
        let (session_tx, mut session_rx) = mpsc::channel::<Authenticated>(1);
        let _accept_task = listener.map(|l| {
            let task = tokio::spawn(accept_loop(
                l,
                self.params.clone(),
                self.rejects.clone(),
                session_tx.clone(),
            ));
            AbortOnDrop(task)
        });
        let mut backoff = self.params.settings.backoff_initial;
        let mut next: Option<Authenticated> = None;
        loop {
            self.publish();
            let auth = match next.take() {
                Some(auth) => auth,
                None if dials(self.params.local, self.params.peer) => {
                    let attempt = async {
                        let stream = dial(&self.params).await.map_err(|e| {
                            Rejection::new(RejectReason::Io, format!("connect: {e}"))
                        })?;
                        dial_handshake(
                            stream,
                            &self.params.identity,
                            self.params.settings.max_frame,
                        )
                        .await
                    };
                    let result =
                        within_handshake_timeout(self.params.settings.handshake_timeout, attempt)
                            .await;
                    match result {
                        Ok(auth) => auth,
                        Err(rejection) => {
                            if rejection.reason == RejectReason::Io {
                                debug!(peer, detail = %rejection.detail, "sync peer unreachable");
                                lock(&self.rejects).count(RejectReason::Io);
                            } else {
                                record(&self.rejects, &rejection, &peer);
                            }
                            self.last_error = Some(rejection.to_string());
                            self.publish();
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(self.params.settings.backoff_max);
                            continue;
                        }
                    }
                }
                // Waiting for the peer to dial: keep the status (rejection counters) fresh.
                None => loop {
                    tokio::select! {
                        auth = session_rx.recv() => match auth {
                            Some(auth) => break auth,
                            None => return,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => self.publish(),
                    }
                },
            };
            backoff = self.params.settings.backoff_initial;
            match self.run_session(auth, &mut session_rx).await {
                SessionEnd::Closed(rejection) => {
                    if rejection.reason == RejectReason::Io {
                        lock(&self.rejects).count(RejectReason::Io);
                        info!(peer, detail = %rejection.detail, "sync session closed");
                    } else {
                        record(&self.rejects, &rejection, &peer);
                    }
                    self.last_error = Some(rejection.to_string());
                    if dials(self.params.local, self.params.peer) {
                        tokio::time::sleep(backoff).await;
                    }
                }
                SessionEnd::Replaced(auth) => {
                    info!(
                        peer,
                        "sync session replaced by a newer authenticated connection"
                    );
                    next = Some(*auth);
                }
            }
        }
    }

    async fn run_session(
        &mut self,
        auth: Authenticated,
        incoming: &mut mpsc::Receiver<Authenticated>,
    ) -> SessionEnd {
        let Authenticated {
            mut reader,
            writer,
            keys,
        } = auth;
        let now = self.now();
        let mut session = Session::new(
            keys,
            self.params.settings.max_frame,
            self.params.settings.timers,
            now,
        );
        let (frames_tx, frames_rx) =
            mpsc::channel::<Bytes>(self.params.settings.write_queue_frames.max(1));
        let (sent_tx, mut sent_rx) = watch::channel((0u64, 0u64));
        let writer_task = AbortOnDrop(tokio::spawn(write_loop(writer, frames_rx, sent_tx)));
        self.connected = true;
        self.protocol_version = Some(session.version());
        self.counters.sessions_opened += 1;
        info!(peer = %self.params.peer, version = session.version(), "sync session open");
        let mut outbox: Vec<Message> = Vec::new();
        {
            let tables = lock(&self.tables);
            self.replicator
                .set_active(*self.active_rx.borrow_and_update(), &tables);
            self.replicator.on_session_open(&tables);
        }
        // A reload accepted while disconnected is offered now.
        let latest = self.config_rx.borrow_and_update().clone();
        if let Some(local) = latest {
            let _ = self.config.set_local(local);
        }
        let actions = self.config.on_session_open();
        self.handle_config_actions(actions, &mut outbox);
        let mut tick = tokio::time::interval(self.params.settings.batch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_publish = now;
        let mut full_since: Option<u64> = None;
        let mut last_sizes = now;
        let (sent_base_frames, sent_base_bytes) =
            (self.counters.frames_sent, self.counters.bytes_sent);
        let end = loop {
            // Fill the write queue: control messages first, then table data, only while there
            // is room (so a slow peer stops us reading the tables instead of growing memory).
            let now = self.now();
            let mut stalled = false;
            let mut fatal = None;
            loop {
                let permit = match frames_tx.try_reserve() {
                    Ok(permit) => permit,
                    Err(mpsc::error::TrySendError::Full(())) => {
                        stalled = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => break,
                };
                let message = if outbox.is_empty() {
                    let tables = lock(&self.tables);
                    // Table sizes go out every keepalive interval, busy or idle: they are the
                    // keepalive and keep the peer's view of our entry counts fresh.
                    if now.saturating_sub(last_sizes) >= self.params.settings.timers.keepalive_ms {
                        last_sizes = now;
                        Message::Repl(self.replicator.sizes_message(&tables))
                    } else {
                        match self.replicator.poll_message(&tables, now) {
                            Some(m) => Message::Repl(m),
                            None => break,
                        }
                    }
                } else {
                    outbox.remove(0)
                };
                match session.seal(&message, now) {
                    Ok(frame) => permit.send(Bytes::from(frame)),
                    Err(rejection) => {
                        fatal = Some(rejection);
                        break;
                    }
                }
            }
            if let Some(rejection) = fatal {
                break SessionEnd::Closed(rejection);
            }
            if stalled {
                let since = *full_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.params.settings.timers.peer_timeout_ms {
                    break SessionEnd::Closed(Rejection::new(
                        RejectReason::PeerStalled,
                        format!("the peer read nothing for {} ms", now - since),
                    ));
                }
            } else {
                full_since = None;
            }
            if now.saturating_sub(last_publish) >= 250 {
                last_publish = now;
                let (frames, bytes) = *sent_rx.borrow_and_update();
                self.counters.frames_sent = sent_base_frames + frames;
                self.counters.bytes_sent = sent_base_bytes + bytes;
                self.publish();
            }
            tokio::select! {
                frame = reader.next() => {
                    let payload = match frame {
                        Some(Ok(bytes)) => bytes,
                        Some(Err(e)) => break SessionEnd::Closed(read_rejection(e)),
                        None => break SessionEnd::Closed(Rejection::new(RejectReason::Io, "connection closed by the peer")),
                    };
                    let now = self.now();
                    self.counters.frames_received += 1;
                    self.counters.bytes_received += payload.len() as u64 + 4;
                    let message = match session.open(&payload, now) {
                        Ok(message) => message,
                        Err(rejection) => break SessionEnd::Closed(rejection),
                    };
                    if let Err(rejection) = self.dispatch(message, now, &mut outbox) {
                        break SessionEnd::Closed(rejection);
                    }
                }
                _ = tick.tick() => {
                    if let Err(rejection) = session.check_silence(self.now()) {
                        break SessionEnd::Closed(rejection);
                    }
                }
                Ok(()) = self.active_rx.changed() => {
                    let active = *self.active_rx.borrow_and_update();
                    self.replicator.set_active(active, &lock(&self.tables));
                }
                Ok(()) = self.config_rx.changed() => {
                    let local = self.config_rx.borrow_and_update().clone();
                    if let Some(local) = local {
                        let actions = self.config.set_local(local);
                        self.handle_config_actions(actions, &mut outbox);
                    }
                    self.publish();
                }
                Some(auth) = incoming.recv() => break SessionEnd::Replaced(Box::new(auth)),
                _ = sent_rx.changed() => {}
            }
            if writer_task.0.is_finished() {
                break SessionEnd::Closed(Rejection::new(
                    RejectReason::Io,
                    "write to the peer failed",
                ));
            }
        };
        let (frames, bytes) = *sent_rx.borrow();
        self.counters.frames_sent = sent_base_frames + frames;
        self.counters.bytes_sent = sent_base_bytes + bytes;
        self.connected = false;
        self.protocol_version = None;
        self.replicator.on_session_closed();
        self.config.on_session_closed();
        drop(writer_task);
        self.publish();
        end
    }

    fn dispatch(
        &mut self,
        message: Message,
        now: u64,
        outbox: &mut Vec<Message>,
    ) -> Result<(), Rejection> {
        match message {
            Message::Repl(m) => {
                let mut tables = lock(&self.tables);
                self.replicator
                    .on_message(m, &mut tables, now)
                    .map_err(|e| Rejection::new(RejectReason::UnexpectedMessage, e.0))
            }
            Message::Config(m) => {
                let actions = self.config.on_message(m);
                self.handle_config_actions(actions, outbox);
                self.publish();
                Ok(())
            }
        }
    }

    fn handle_config_actions(&mut self, actions: Vec<ConfigAction>, outbox: &mut Vec<Message>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    ConfigAction::Send(m) => outbox.push(Message::Config(m)),
                    ConfigAction::Apply { version, bytes } => {
                        let result = self.sink.offer(&bytes, version.generation, &version.digest);
                        match &result {
                            Ok(()) => {
                                info!(generation = version.generation, digest = %version.digest, "applied cluster.toml pushed by the primary")
                            }
                            Err(reason) => {
                                warn!(generation = version.generation, %reason, "refused cluster.toml pushed by the primary")
                            }
                        }
                        next.extend(self.config.offer_result(version, bytes, result));
                    }
                }
            }
            queue = next;
        }
    }

    fn publish(&mut self) {
        let now = self.now();
        let tables_status = {
            let tables = lock(&self.tables);
            let resyncing = self.replicator.resyncing_tables();
            let mut v: Vec<TableSyncStatus> = tables
                .iter()
                .map(|(label, t)| TableSyncStatus {
                    label: label.to_string(),
                    local_entries: t.len() as u64,
                    peer_entries: self.replicator.peer_sizes().get(label).copied(),
                    resyncing: resyncing.iter().any(|l| l == label),
                })
                .collect();
            v.sort_by(|a, b| a.label.cmp(&b.label));
            v
        };
        let caught_up = self.replicator.caught_up(&lock(&self.tables));
        let state = self.config.state();
        let rejected = lock(&self.rejects)
            .by_name()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let mut counters = self.counters.clone();
        counters.rejected = rejected;
        counters.replication = self.replicator.counters().clone();
        let status = SyncStatus {
            connected: self.connected,
            direction: if dials(self.params.local, self.params.peer) {
                "dial"
            } else {
                "accept"
            }
            .to_string(),
            peer: self.params.peer.to_string(),
            protocol_version: self.protocol_version,
            tables: tables_status,
            last_ack_age_ms: self.replicator.last_ack_ms().map(|t| now.saturating_sub(t)),
            caught_up,
            config: ConfigStatus {
                local: self.config.local_version().cloned(),
                peer: self.config.peer_version().cloned(),
                in_sync: state.in_sync(),
                reason: match state {
                    ConfigSyncState::InSync => None,
                    ConfigSyncState::OutOfSync(reason) => Some(reason),
                },
            },
            counters,
            last_error: self.last_error.clone(),
        };
        self.status_tx.send_replace(status);
    }
}

async fn write_loop(
    mut writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    mut frames: mpsc::Receiver<Bytes>,
    sent: watch::Sender<(u64, u64)>,
) {
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(frame) = frames.recv().await {
        let len = frame.len() as u64 + 4;
        // Batch whatever is already queued into one flush.
        if writer.feed(frame).await.is_err() {
            return;
        }
        count += 1;
        bytes += len;
        while let Ok(more) = frames.try_recv() {
            let len = more.len() as u64 + 4;
            if writer.feed(more).await.is_err() {
                return;
            }
            count += 1;
            bytes += len;
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            return;
        }
        sent.send_replace((count, bytes));
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
