//! The thin tokio driver: dials or accepts the one TCP session, runs the handshake, moves frames
//! between the socket and the [`SyncEngine`], sleeps until its `next_timeout`, and publishes the
//! [`SyncStatus`] when the engine says so. Every timing decision is the engine's. The connection
//! itself (dialing, accepting within the handshake limits, the handshakes, rejection logs) is
//! `connect`'s. The session's round-trip time is the kernel's (`rtt`), read from the socket at
//! most once a second and put into the published status.
//!
//! A session that the peer's side closes or resets (FIN, RST, a failed write) is also counted on
//! [`SyncHandle::peer_closes`] the moment it is seen: a killed daemon's kernel closes its sockets
//! at once, so this is the earliest sign that the peer's daemon died (the election confirms it;
//! docs/protocol.md, "Process death"). The node that dials also listens on its own sync address
//! and closes whatever connects there (`presence_loop`), so that a probe of its sync port is
//! refused only when its daemon is gone, as the acceptor's is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ring::rand::{SecureRandom, SystemRandom};
use tandem_stick::{Clock, StickTables};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tracing::{debug, info};

use crate::config_push::{ConfigSink, LocalConfig};
use crate::engine::SyncEngine;
// Their home is the engine (they build without tokio); these paths are kept for callers.
pub use crate::engine::{SyncParams, SyncSettings, dials};
use crate::reject::{RejectReason, Rejection};
use crate::status::SyncStatus;

mod connect;
mod rtt;
use connect::{
    Authenticated, Rejects, accept_loop, closed_by_peer, dial, dial_handshake, lock,
    presence_listener, read_rejection, within_handshake_timeout,
};
pub use rtt::tcp_rtt_us;

/// The stick tables, shared with the proxy.
pub type SharedTables = Arc<Mutex<StickTables>>;

/// The daemon's side of a running sync task.
pub struct SyncHandle {
    status: watch::Receiver<SyncStatus>,
    local_config: watch::Sender<Option<LocalConfig>>,
    active: watch::Sender<bool>,
    config_hold: watch::Sender<Option<String>>,
    peer_closes: watch::Receiver<u64>,
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

    /// The heartbeat says the peer runs a newer release (`Some(why)`: a wire version this node
    /// cannot read), or no longer (`None`): the primary holds its `cluster.toml` push meanwhile
    /// (rolling upgrades; docs/protocol.md).
    pub fn hold_config_push(&self, hold: Option<String>) {
        self.config_hold.send_if_modified(|current| {
            let changed = *current != hold;
            *current = hold;
            changed
        });
    }

    /// How many sessions the peer's side closed or reset (FIN, RST, a write that failed), bumped
    /// as soon as the driver sees it; the election takes each as a sign that the peer's daemon may
    /// be gone. Sessions this node ends (timeouts, refused frames, a newer connection) are not
    /// counted.
    pub fn peer_closes(&self) -> watch::Receiver<u64> {
        self.peer_closes.clone()
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
    if params.local == params.peer {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "sync: this node and its peer have the same address {}",
                params.local
            ),
        ));
    }
    let (listener, presence) = if dials(params.local, params.peer) {
        (None, presence_listener(params.local).await)
    } else {
        (
            Some(
                TcpListener::bind(params.local)
                    .await
                    .and_then(connect::release_first_listener)?,
            ),
            None,
        )
    };
    let (status_tx, status_rx) = watch::channel(SyncStatus::default());
    let (config_tx, config_rx) = watch::channel(local_config.clone());
    let (active_tx, active_rx) = watch::channel(active);
    let (hold_tx, hold_rx) = watch::channel(None);
    let (peer_closes_tx, peer_closes_rx) = watch::channel(0u64);
    let mut process = [0u8; 8];
    SystemRandom::new()
        .fill(&mut process)
        .map_err(|_| std::io::Error::other("system random source failed"))?;
    let engine = SyncEngine::new(
        &params,
        local_config,
        sink,
        u64::from_le_bytes(process),
        clock.now_ms(),
    );
    let driver = Driver {
        engine,
        params,
        tables,
        clock,
        status_tx,
        config_rx,
        active_rx,
        hold_rx,
        rejects: Rejects::new(),
        rtt_us: None,
        rtt_due_ms: 0,
        peer_closes: peer_closes_tx,
    };
    let task = tokio::spawn(driver.run(listener, presence));
    Ok(SyncHandle {
        status: status_rx,
        local_config: config_tx,
        active: active_tx,
        config_hold: hold_tx,
        peer_closes: peer_closes_rx,
        task,
    })
}

struct Driver {
    engine: SyncEngine,
    params: SyncParams,
    tables: SharedTables,
    clock: Clock,
    status_tx: watch::Sender<SyncStatus>,
    config_rx: watch::Receiver<Option<LocalConfig>>,
    active_rx: watch::Receiver<bool>,
    hold_rx: watch::Receiver<Option<String>>,
    rejects: Rejects,
    /// The current session's TCP round-trip time (µs), and when to read it again.
    rtt_us: Option<u64>,
    rtt_due_ms: u64,
    /// Sessions closed or reset from the peer's side (see [`SyncHandle::peer_closes`]).
    peer_closes: watch::Sender<u64>,
}

enum SessionEnd {
    Closed(Rejection),
    Replaced(Box<Authenticated>),
}

/// Sleeps for `wait`, or for ever when there is nothing to wait for.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// How long until the engine's next deadline.
    fn until_next_timeout(&self) -> Option<Duration> {
        let now = self.now();
        self.engine
            .next_timeout()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }

    /// Publishes the status when the engine says it is time.
    fn publish_if_due(&mut self) {
        let now = self.now();
        if !self.engine.publish_due(now) {
            return;
        }
        let mut status =
            self.engine
                .status(now, &lock(&self.tables), &lock(&self.rejects.counters));
        status.rtt_us = self.rtt_us.filter(|_| status.connected);
        self.status_tx.send_replace(status);
    }

    /// Reads the session socket's round-trip time from the kernel, at most once a second.
    fn refresh_rtt(&mut self, stream: &tokio::net::TcpStream) {
        let now = self.now();
        if now < self.rtt_due_ms {
            return;
        }
        self.rtt_due_ms = now.saturating_add(1000);
        self.rtt_us = tcp_rtt_us(stream);
    }

    /// Counts and logs why a session or an attempt ended (an unreachable peer is no news).
    fn count_end(&self, rejection: &Rejection, peer: &str, quiet_detail: &str) {
        if rejection.reason == RejectReason::Io {
            lock(&self.rejects.counters).count(RejectReason::Io);
            if quiet_detail.is_empty() {
                debug!(peer, detail = %rejection.detail, "sync peer unreachable");
            } else {
                info!(peer, detail = %rejection.detail, "{quiet_detail}");
            }
        } else {
            self.rejects.record(rejection, self.params.peer.ip());
        }
    }

    /// The session ended from the peer's side: told at once, before any clean-up.
    fn peer_closed(&self) {
        self.peer_closes.send_modify(|n| *n += 1);
    }

    async fn run(mut self, listener: Option<TcpListener>, presence: Option<TcpListener>) {
        let peer = self.params.peer.to_string();
        let _presence_task = presence.map(|l| AbortOnDrop(tokio::spawn(connect::presence_loop(l))));
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
        let mut next: Option<Authenticated> = None;
        loop {
            self.publish_if_due();
            let auth = match next.take() {
                Some(auth) => auth,
                None if self.engine.dials() => {
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
                            self.count_end(&rejection, &peer, "");
                            let wait = self.engine.dial_failed(&rejection);
                            self.publish_if_due();
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }
                // Waiting for the peer to dial: the engine keeps the status fresh meanwhile.
                None => loop {
                    let wait = self.until_next_timeout();
                    tokio::select! {
                        auth = session_rx.recv() => match auth {
                            Some(auth) => break auth,
                            None => return,
                        },
                        _ = sleep_for(wait) => self.publish_if_due(),
                    }
                },
            };
            match self.run_session(auth, &mut session_rx).await {
                SessionEnd::Closed(rejection) => {
                    self.count_end(&rejection, &peer, "sync session closed");
                    if let Some(wait) = self.engine.session_closed(&rejection) {
                        tokio::time::sleep(wait).await;
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
        let active = *self.active_rx.borrow_and_update();
        let latest = self.config_rx.borrow_and_update().clone();
        let hold = self.hold_rx.borrow_and_update().clone();
        self.engine.set_config_hold(hold);
        self.engine
            .open(keys, now, &lock(&self.tables), active, latest);
        self.rtt_due_ms = 0;
        let (frames_tx, frames_rx) =
            mpsc::channel::<Bytes>(self.params.settings.write_queue_frames.max(1));
        let (sent_tx, mut sent_rx) = watch::channel((0u64, 0u64));
        let writer_task = AbortOnDrop(tokio::spawn(write_loop(writer, frames_rx, sent_tx)));
        let end = loop {
            // Fill the write queue while there is room (so a slow peer stops us reading the
            // tables instead of growing memory); the engine picks what goes first.
            let now = self.now();
            let mut full = false;
            let mut fatal = None;
            loop {
                let permit = match frames_tx.try_reserve() {
                    Ok(permit) => permit,
                    Err(mpsc::error::TrySendError::Full(())) => {
                        full = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => break,
                };
                match self.engine.next_frame(now, || lock(&self.tables)) {
                    Ok(Some(frame)) => permit.send(Bytes::from(frame)),
                    Ok(None) => break,
                    Err(rejection) => {
                        fatal = Some(rejection);
                        break;
                    }
                }
            }
            if let Some(rejection) = fatal {
                break SessionEnd::Closed(rejection);
            }
            if let Err(rejection) = self.engine.write_queue(now, full) {
                break SessionEnd::Closed(rejection);
            }
            // `borrow` (not `borrow_and_update`): a write still wakes the select below.
            let (frames, bytes) = *sent_rx.borrow();
            self.engine.on_sent(frames, bytes);
            self.refresh_rtt(reader.get_ref().as_ref());
            self.publish_if_due();
            let wait = self.until_next_timeout();
            tokio::select! {
                frame = reader.next() => {
                    let payload = match frame {
                        Some(Ok(bytes)) => bytes,
                        Some(Err(e)) => {
                            if closed_by_peer(&e) {
                                self.peer_closed();
                            }
                            break SessionEnd::Closed(read_rejection(e));
                        }
                        None => {
                            self.peer_closed();
                            break SessionEnd::Closed(Rejection::new(RejectReason::Io, "connection closed by the peer"));
                        }
                    };
                    let now = self.now();
                    if let Err(rejection) = self.engine.on_frame(&payload, now, || lock(&self.tables)) {
                        break SessionEnd::Closed(rejection);
                    }
                }
                _ = sleep_for(wait) => {
                    if let Err(rejection) = self.engine.on_timer(self.now()) {
                        break SessionEnd::Closed(rejection);
                    }
                }
                Ok(()) = self.active_rx.changed() => {
                    let active = *self.active_rx.borrow_and_update();
                    self.engine.set_active(active, &lock(&self.tables));
                }
                Ok(()) = self.hold_rx.changed() => {
                    let hold = self.hold_rx.borrow_and_update().clone();
                    self.engine.set_config_hold(hold);
                }
                Ok(()) = self.config_rx.changed() => {
                    let local = self.config_rx.borrow_and_update().clone();
                    if let Some(local) = local {
                        self.engine.set_local_config(local);
                    }
                }
                Some(auth) = incoming.recv() => break SessionEnd::Replaced(Box::new(auth)),
                _ = sent_rx.changed() => {}
            }
            if writer_task.0.is_finished() {
                self.peer_closed();
                break SessionEnd::Closed(Rejection::new(
                    RejectReason::Io,
                    "write to the peer failed",
                ));
            }
        };
        let (frames, bytes) = *sent_rx.borrow();
        self.engine.on_sent(frames, bytes);
        self.engine.close();
        self.rtt_us = None;
        drop(writer_task);
        self.publish_if_due();
        end
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
