//! The connection under the session: dialing (from a privileged source port when permitted),
//! accepting within the handshake limits, running either side's handshake within its timeout,
//! the socket framing, and counting and rate-limited logging of rejections; the dialer's presence
//! listener.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ring::rand::{SecureRandom, SystemRandom};
use tandem_types::exit_order::release_first;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tracing::{debug, warn};

use crate::admission::{Admission, Admit, PRIVILEGED_PORTS, Ticket};
use crate::engine::SyncParams;
use crate::handshake::{
    AcceptorHandshake, DialerHandshake, HandshakeFailure, Identity, SessionKeys,
};
use crate::reject::{RejectCounters, RejectLog, RejectReason, Rejection};
use crate::wire::length_codec;

/// An authenticated connection ready for the session.
pub(super) struct Authenticated {
    pub(super) reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    pub(super) writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    pub(super) keys: SessionKeys,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the tables half-updated in a way that matters
    // more than stopping replication would: keep going with the data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) fn read_rejection(error: std::io::Error) -> Rejection {
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

pub(super) async fn next_payload(
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

pub(super) async fn send_payload(
    writer: &mut FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    payload: Vec<u8>,
) -> Result<(), Rejection> {
    writer
        .send(Bytes::from(payload))
        .await
        .map_err(|e| Rejection::new(RejectReason::Io, e.to_string()))
}

pub(super) fn frame_halves(
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

pub(super) async fn dial_handshake(
    stream: TcpStream,
    identity: &Identity,
    max_frame: usize,
) -> Result<Authenticated, Rejection> {
    let (mut reader, mut writer) = frame_halves(stream, max_frame);
    let rng = SystemRandom::new();
    let (state, hello) = DialerHandshake::start(identity, &rng)?;
    send_payload(&mut writer, hello).await?;
    let challenge = next_payload(&mut reader).await?;
    let (proof, state) = state.on_challenge(&challenge)?;
    send_payload(&mut writer, proof).await?;
    let confirm = next_payload(&mut reader).await?;
    let keys = state.on_confirm(&confirm)?;
    Ok(Authenticated {
        reader,
        writer,
        keys,
    })
}

/// Sends the refusal a failed handshake carries (best effort) and returns its rejection.
pub(super) async fn refuse(
    writer: &mut FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    failure: HandshakeFailure,
) -> Rejection {
    if let Some(reply) = failure.reply {
        let _ = send_payload(writer, reply).await;
    }
    failure.rejection
}

pub(super) async fn accept_handshake(
    stream: TcpStream,
    identity: &Identity,
    max_frame: usize,
) -> Result<Authenticated, Rejection> {
    let (mut reader, mut writer) = frame_halves(stream, max_frame);
    let rng = SystemRandom::new();
    let hello = next_payload(&mut reader).await?;
    let (state, challenge) = match AcceptorHandshake::on_hello(identity, &rng, &hello) {
        Ok(ok) => ok,
        Err(failure) => return Err(refuse(&mut writer, failure).await),
    };
    send_payload(&mut writer, challenge).await?;
    let proof = next_payload(&mut reader).await?;
    let (confirm, keys) = match state.on_proof(&proof) {
        Ok(ok) => ok,
        Err(failure) => return Err(refuse(&mut writer, failure).await),
    };
    send_payload(&mut writer, confirm).await?;
    Ok(Authenticated {
        reader,
        writer,
        keys,
    })
}

/// A handshake (either side) bounded by `limit`; running out of time is a rejection like any other.
pub(super) async fn within_handshake_timeout<T>(
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

/// Rejection counters and the rate-limited log, shared by the accept loop and the session.
#[derive(Clone)]
pub(super) struct Rejects {
    pub(super) counters: Arc<Mutex<RejectCounters>>,
    log: Arc<Mutex<RejectLog>>,
    /// Origin of the log's windows.
    started: std::time::Instant,
}

impl Rejects {
    pub(super) fn new() -> Self {
        Self {
            counters: Arc::new(Mutex::new(RejectCounters::default())),
            log: Arc::new(Mutex::new(RejectLog::default())),
            started: std::time::Instant::now(),
        }
    }

    /// Counts the rejection and logs it at WARN, at most one line per source per 10 s.
    pub(super) fn record(&self, rejection: &Rejection, source: IpAddr) {
        lock(&self.counters).count(rejection.reason);
        let now = self.started.elapsed().as_millis() as u64;
        if let Some(line) = lock(&self.log).note(source, rejection, now) {
            warn!(%source, reason = rejection.reason.as_str(), "{line}");
        } else {
            debug!(%source, reason = rejection.reason.as_str(), detail = %rejection.detail, "sync rejection (log rate-limited)");
        }
    }
}

/// Accepts connections for ever, authenticating each within the handshake limits (see
/// [`crate::admission`]); authenticated ones go to the driver, which replaces its current
/// session with the newest.
pub(super) async fn accept_loop(
    listener: TcpListener,
    params: SyncParams,
    rejects: Rejects,
    sessions: mpsc::Sender<Authenticated>,
) {
    let started = std::time::Instant::now();
    let now = move || started.elapsed().as_millis() as u64;
    let admission = Arc::new(Mutex::new(Admission::new(
        params.peer.ip(),
        params.settings.limits.clone(),
    )));
    let mut running: HashMap<Ticket, tokio::task::AbortHandle> = HashMap::new();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "sync accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let stream = match release_first_stream(stream) {
            Ok(stream) => stream,
            Err(e) => {
                debug!(error = %e, "sync: an accepted connection could not be renumbered; closed");
                continue;
            }
        };
        let decision = lock(&admission).admit(from, now());
        let ticket = match decision {
            Admit::Refuse(rejection) => {
                rejects.record(&rejection, from.ip());
                continue;
            }
            Admit::Run { ticket, evicted } => {
                if let Some(handle) = evicted.and_then(|t| running.remove(&t)) {
                    handle.abort();
                    rejects.record(
                        &Rejection::new(
                            RejectReason::HandshakeEvicted,
                            format!(
                                "a handshake from {} closed for a newer connection from {from}",
                                from.ip()
                            ),
                        ),
                        from.ip(),
                    );
                }
                ticket
            }
        };
        running.retain(|_, handle| !handle.is_finished());
        let identity = params.identity.clone();
        let settings = params.settings.clone();
        let rejects = rejects.clone();
        let sessions = sessions.clone();
        let admission = admission.clone();
        let task = tokio::spawn(async move {
            let result = within_handshake_timeout(
                settings.handshake_timeout,
                accept_handshake(stream, &identity, settings.max_frame),
            )
            .await;
            // Released before the session is handed over: an authenticated connection is no
            // longer a handshake that a newcomer could evict.
            lock(&admission).finished(ticket, result.is_ok(), now());
            match result {
                Ok(auth) => {
                    let _ = sessions.send(auth).await;
                }
                Err(rejection) => rejects.record(&rejection, from.ip()),
            }
        });
        running.insert(ticket, task.abort_handle());
    }
}

/// A random privileged source port to dial from.
pub(super) fn privileged_port(rng: &SystemRandom) -> Option<u16> {
    let mut bytes = [0u8; 2];
    rng.fill(&mut bytes).ok()?;
    // 512..1024: clear of the well-known services below 512.
    Some(512 + u16::from_le_bytes(bytes) % (PRIVILEGED_PORTS - 512))
}

pub(super) fn new_socket(peer: SocketAddr) -> std::io::Result<TcpSocket> {
    if peer.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Connects to the peer from our own address; from a privileged port when permitted (so the
/// acceptor can tell us from unprivileged users of this host, see [`crate::admission`]),
/// else from an ephemeral port.
pub(super) async fn dial(params: &SyncParams) -> std::io::Result<TcpStream> {
    let ip = params.local.ip();
    if params.settings.limits.privileged_source_port {
        let rng = SystemRandom::new();
        for _ in 0..4 {
            let Some(port) = privileged_port(&rng) else {
                break;
            };
            let socket = new_socket(params.peer)?;
            match socket.bind(SocketAddr::new(ip, port)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
                // In use here: another port.
                Err(_) => continue,
            }
            match socket.connect(params.peer).await {
                Ok(stream) => return release_first_stream(stream),
                // The 4-tuple is still in TIME_WAIT from an earlier session: another port.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let socket = new_socket(params.peer)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket
        .connect(params.peer)
        .await
        .and_then(release_first_stream)
}

/// Renumbers a sync session's socket into the release-first range (`tandem_types::exit_order`): when this daemon is
/// killed, its kernel sends the peer the session's FIN before it works through slower sockets.
fn release_first_stream(stream: TcpStream) -> std::io::Result<TcpStream> {
    let stream = stream.into_std()?;
    TcpStream::from_std(std::net::TcpStream::from(release_first(OwnedFd::from(
        stream,
    ))))
}

/// Renumbers a sync listener into the release-first range: a killed daemon's sync port refuses the peer's probe
/// before its kernel works through slower sockets.
pub(super) fn release_first_listener(listener: TcpListener) -> std::io::Result<TcpListener> {
    let listener = listener.into_std()?;
    TcpListener::from_std(std::net::TcpListener::from(release_first(OwnedFd::from(
        listener,
    ))))
}

/// Whether a read error means the peer's side reset or dropped the connection (as its kernel does
/// for a daemon that died), rather than a failure of our own.
pub(super) fn closed_by_peer(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// The dialer's listener on its own sync address, or `None` (logged) when the address cannot be
/// bound: the node then only loses the fast detection of its death by the peer (docs/protocol.md,
/// "Process death").
pub(super) async fn presence_listener(local: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(local)
        .await
        .and_then(release_first_listener)
    {
        Ok(listener) => Some(listener),
        Err(e) => {
            warn!(%local, error = %e, "sync: cannot listen on this node's own sync address; the peer will find a dead daemon here by silence only");
            None
        }
    }
}

/// Accepts and closes at once every connection to the dialer's own sync address: while this
/// daemon lives, a probe of its sync port is accepted, never refused. Nothing is read, so nothing
/// reaches the session; a flood costs an accept and a close per connection (bounded by the
/// kernel's backlog), and a failing accept (out of descriptors) is retried after a pause.
pub(super) async fn presence_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => drop(stream),
            Err(e) => {
                debug!(error = %e, "sync presence listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
