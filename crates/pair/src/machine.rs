//! Both roles of one pairing session as sans-IO state machines: bytes in (`handle_bytes`,
//! `handle_eof`), time in (`handle_timeout` with milliseconds from the caller's clock), bytes
//! out (`poll_transmit`), and events for the caller's decisions (check and write the result).

use crate::code::Code;
use crate::keys::{AAD_OUTCOME, AAD_PAYLOAD, SessionKeys, Transcript};
use crate::wire::{
    AbortKind, Deframer, Frame, MAX_CLUSTER_TOML, MAX_DETAIL, MAX_SECRET, MIN_SECRET, NodeInfo,
    Reader, WireError, Writer, length_prefixed, truncate,
};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use std::collections::VecDeque;
use zeroize::Zeroizing;

/// What a finished pairing gives each side: the other node, the cluster, the secret and the
/// cluster configuration (the primary's own on the primary, the received one on the secondary).
#[derive(Clone, PartialEq, Eq)]
pub struct Paired {
    pub cluster_name: String,
    pub peer: NodeInfo,
    pub secret: Zeroizing<Vec<u8>>,
    pub cluster_toml: String,
}

impl std::fmt::Debug for Paired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paired")
            .field("cluster_name", &self.cluster_name)
            .field("peer", &self.peer)
            .field(
                "secret",
                &format_args!("{} bytes, redacted", self.secret.len()),
            )
            .field(
                "cluster_toml",
                &format_args!("{} bytes", self.cluster_toml.len()),
            )
            .finish()
    }
}

/// Why a session failed, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error(
        "wrong code: the two nodes used different one-time codes; nothing was sent or written. \
         The code is used up: run `tandem pair --accept` on the secondary again for a new one"
    )]
    WrongCode,
    #[error("peer already paired: {0}")]
    PeerAlreadyPaired(String),
    #[error("timed out {0}")]
    TimedOut(&'static str),
    #[error("the peer gave up waiting (timed out): {0}")]
    PeerTimedOut(String),
    #[error("the peer refused: {0}")]
    PeerRefused(String),
    #[error("the two nodes cannot be paired: {0}")]
    Incompatible(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "a frame failed authentication (changed in transit, or not from the peer that holds the code); nothing written"
    )]
    Tampered,
    #[error("protocol error: {0}")]
    Wire(#[from] WireError),
    #[error("protocol error: unexpected {0}")]
    Unexpected(&'static str),
    #[error("the peer closed the connection {0}")]
    Closed(&'static str),
    #[error("invalid pairing input: {0}")]
    Invalid(String),
}

impl PairError {
    /// What the other side is told when this side fails (`None`: nothing to say, e.g. it
    /// already ended the session itself).
    fn abort(&self) -> Option<(AbortKind, String)> {
        let kind = match self {
            PairError::WrongCode => AbortKind::WrongCode,
            PairError::TimedOut(_) => AbortKind::TimedOut,
            PairError::Incompatible(_) => AbortKind::Incompatible,
            PairError::Refused(_) | PairError::Invalid(_) => AbortKind::Rejected,
            PairError::Tampered | PairError::Wire(_) | PairError::Unexpected(_) => {
                AbortKind::Protocol
            }
            PairError::PeerAlreadyPaired(_)
            | PairError::PeerTimedOut(_)
            | PairError::PeerRefused(_)
            | PairError::Closed(_) => return None,
        };
        let detail = match self {
            PairError::WrongCode => "wrong code".to_string(),
            PairError::Incompatible(d) | PairError::Refused(d) | PairError::Invalid(d) => d.clone(),
            other => other.to_string(),
        };
        Some((kind, detail))
    }

    fn from_abort(kind: AbortKind, detail: String) -> Self {
        match kind {
            AbortKind::WrongCode => PairError::WrongCode,
            AbortKind::AlreadyPaired => PairError::PeerAlreadyPaired(detail),
            AbortKind::TimedOut => PairError::PeerTimedOut(detail),
            AbortKind::Incompatible | AbortKind::Rejected | AbortKind::Protocol => {
                PairError::PeerRefused(detail)
            }
        }
    }
}

/// Why the caller refuses a step (its checks failed): sent to the peer and returned as the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: AbortKind,
    pub detail: String,
}

impl Refusal {
    pub fn incompatible(detail: impl Into<String>) -> Self {
        Refusal {
            kind: AbortKind::Incompatible,
            detail: detail.into(),
        }
    }
    pub fn rejected(detail: impl Into<String>) -> Self {
        Refusal {
            kind: AbortKind::Rejected,
            detail: detail.into(),
        }
    }
    pub fn already_paired(detail: impl Into<String>) -> Self {
        Refusal {
            kind: AbortKind::AlreadyPaired,
            detail: detail.into(),
        }
    }
    fn error(&self) -> PairError {
        match self.kind {
            AbortKind::Incompatible => PairError::Incompatible(self.detail.clone()),
            AbortKind::WrongCode => PairError::WrongCode,
            _ => PairError::Refused(self.detail.clone()),
        }
    }
}

/// Events that need the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The other node introduced itself (on the secondary: with the cluster's name). Check that
    /// the two can pair and what this node's `node.toml` would become, then call `proceed` or
    /// `refuse`. Nothing derived from the code has been exchanged yet.
    PeerHello {
        cluster_name: String,
        peer: NodeInfo,
    },
    /// Secondary only: the payload arrived, authenticated and decrypted. Check and write it,
    /// then call `finish`.
    Received(Paired),
    /// Primary only: the secondary checked and wrote the result; write this node's side.
    Accepted(Paired),
}

type Spake = Spake2<Ed25519Group>;

fn identities(cluster: &str, primary: &NodeInfo, secondary: &NodeInfo) -> (Identity, Identity) {
    let id = |role: &str, n: &NodeInfo| {
        format!(
            "tandem-pair/1 {role} cluster={cluster} node={} address={} ports={}/{}",
            n.name, n.address, n.heartbeat_port, n.sync_port
        )
    };
    (
        Identity::new(id("primary", primary).as_bytes()),
        Identity::new(id("secondary", secondary).as_bytes()),
    )
}

/// Common plumbing: the deadline, framing in and out, the terminal state.
struct Io {
    deframer: Deframer,
    outgoing: VecDeque<Vec<u8>>,
    deadline_ms: u64,
    finished: bool,
}

impl Io {
    fn new(now_ms: u64, timeout_ms: u64) -> Self {
        Io {
            deframer: Deframer::default(),
            outgoing: VecDeque::new(),
            deadline_ms: now_ms.saturating_add(timeout_ms),
            finished: false,
        }
    }
    fn send(&mut self, frame: &Frame) -> Vec<u8> {
        let bytes = frame.encode();
        self.outgoing.push_back(bytes.clone());
        bytes
    }
    /// Ends the session with `error`, telling the peer why when there is something to say.
    fn fail(&mut self, error: PairError) -> PairError {
        if !self.finished {
            self.finished = true;
            if let Some((kind, detail)) = error.abort() {
                self.send(&Frame::Abort {
                    kind,
                    detail: truncate(&detail, MAX_DETAIL).to_string(),
                });
            }
        }
        error
    }
    fn timeout(&mut self, now_ms: u64, waiting_for: &'static str) -> Result<(), PairError> {
        if !self.finished && now_ms >= self.deadline_ms {
            return Err(self.fail(PairError::TimedOut(waiting_for)));
        }
        Ok(())
    }
}

/// What the two roles' state machines differ in; [`pump`] is the byte handling they share.
trait Role {
    fn io(&mut self) -> &mut Io;
    /// The caller owes a decision (proceed, refuse, accept): later frames wait in the buffer.
    fn awaits_caller(&self) -> bool;
    /// One decoded frame other than `Abort`; `body` is its encoding (for the transcript).
    fn on_frame(&mut self, frame: Frame, body: &[u8]) -> Result<Option<Event>, PairError>;
    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError>;
}

/// Feeds received bytes to `role`; returns at most one event (call again with `&[]` for more).
fn pump<R: Role>(role: &mut R, data: &[u8], now_ms: u64) -> Result<Option<Event>, PairError> {
    if role.io().finished {
        return Ok(None);
    }
    role.handle_timeout(now_ms)?;
    if let Err(e) = role.io().deframer.push(data) {
        return Err(role.io().fail(e.into()));
    }
    // Bounded: each round takes one frame out of the (bounded) buffer or returns.
    loop {
        if role.awaits_caller() {
            return Ok(None);
        }
        let body = match role.io().deframer.next_body() {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) => return Err(role.io().fail(e.into())),
        };
        let handled = match Frame::decode(&body) {
            Ok(Frame::Abort { kind, detail }) => {
                role.io().finished = true;
                return Err(PairError::from_abort(kind, detail));
            }
            Ok(frame) => role.on_frame(frame, &body),
            Err(e) => Err(e.into()),
        };
        match handled {
            Ok(Some(event)) => return Ok(Some(event)),
            Ok(None) => {}
            Err(e) => return Err(role.io().fail(e)),
        }
        if role.io().finished {
            return Ok(None);
        }
    }
}

fn secret_in_bounds(secret: &[u8]) -> Result<(), PairError> {
    if !(MIN_SECRET..=MAX_SECRET).contains(&secret.len()) {
        return Err(PairError::Invalid(format!(
            "the shared secret is {} bytes; {MIN_SECRET} to {MAX_SECRET} can be carried",
            secret.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

enum InitiatorState {
    AwaitingHello {
        transcript: Transcript,
    },
    AwaitingProceed {
        transcript: Transcript,
        peer: NodeInfo,
        spake_b: Vec<u8>,
    },
    AwaitingConfirm {
        keys: SessionKeys,
        peer: NodeInfo,
    },
    AwaitingOutcome {
        keys: SessionKeys,
        peer: NodeInfo,
    },
    Done,
}

/// The primary's side: connects, proves the code, sends the secret and cluster.toml.
pub struct Initiator {
    io: Io,
    code: Code,
    cluster_name: String,
    me: NodeInfo,
    secret: Zeroizing<Vec<u8>>,
    cluster_toml: String,
    state: InitiatorState,
}

impl Initiator {
    /// Starts a session (its hello is queued at once). `timeout_ms` bounds the whole session.
    pub fn new(
        code: Code,
        cluster_name: &str,
        me: NodeInfo,
        secret: Zeroizing<Vec<u8>>,
        cluster_toml: String,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<Self, PairError> {
        secret_in_bounds(&secret)?;
        if cluster_toml.len() > MAX_CLUSTER_TOML {
            return Err(PairError::Invalid(format!(
                "cluster.toml is {} bytes; at most {MAX_CLUSTER_TOML} can be sent",
                cluster_toml.len()
            )));
        }
        if cluster_name.is_empty() || cluster_name.len() > crate::wire::MAX_NAME {
            return Err(PairError::Invalid(
                "the cluster name must be 1 to 255 bytes".into(),
            ));
        }
        let mut io = Io::new(now_ms, timeout_ms);
        let mut transcript = Transcript::new();
        transcript.add(&io.send(&Frame::InitiatorHello {
            cluster: cluster_name.to_string(),
            node: me.clone(),
        }));
        Ok(Initiator {
            io,
            code,
            cluster_name: cluster_name.to_string(),
            me,
            secret,
            cluster_toml,
            state: InitiatorState::AwaitingHello { transcript },
        })
    }

    /// Bytes to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.io.outgoing.pop_front()
    }

    /// When `handle_timeout` must be called at the latest.
    pub fn deadline_ms(&self) -> u64 {
        self.io.deadline_ms
    }

    /// Whether the session is over (succeeded or failed); flush `poll_transmit` and close.
    pub fn is_finished(&self) -> bool {
        self.io.finished
    }

    fn waiting_for(&self) -> &'static str {
        match self.state {
            InitiatorState::AwaitingHello { .. } => "waiting for the secondary's hello",
            InitiatorState::AwaitingProceed { .. } => "checking the secondary",
            InitiatorState::AwaitingConfirm { .. } => {
                "waiting for the secondary to confirm the code"
            }
            InitiatorState::AwaitingOutcome { .. } => {
                "waiting for the secondary to check and write the configuration"
            }
            InitiatorState::Done => "after the end",
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError> {
        let waiting_for = self.waiting_for();
        self.io.timeout(now_ms, waiting_for)
    }

    /// The connection closed: an error unless the session already ended.
    pub fn handle_eof(&mut self) -> Result<(), PairError> {
        if self.io.finished {
            return Ok(());
        }
        let during = match self.state {
            InitiatorState::AwaitingHello { .. } => {
                "before its hello (is `tandem pair --accept` running there? A running tandem daemon holds the sync port)"
            }
            InitiatorState::AwaitingConfirm { .. } => "before confirming the code",
            _ => "before the pairing finished",
        };
        Err(self.io.fail(PairError::Closed(during)))
    }

    /// Feeds received bytes; returns at most one event (call again with `&[]` for more).
    pub fn handle_bytes(&mut self, data: &[u8], now_ms: u64) -> Result<Option<Event>, PairError> {
        pump(self, data, now_ms)
    }

    fn on_frame(&mut self, frame: Frame, body: &[u8]) -> Result<Option<Event>, PairError> {
        match std::mem::replace(&mut self.state, InitiatorState::Done) {
            InitiatorState::AwaitingHello { mut transcript } => {
                let Frame::AcceptorHello { node, spake } = frame else {
                    return Err(PairError::Unexpected(
                        "frame instead of the secondary's hello",
                    ));
                };
                transcript.add(&length_prefixed(body));
                self.state = InitiatorState::AwaitingProceed {
                    transcript,
                    peer: node.clone(),
                    spake_b: spake,
                };
                Ok(Some(Event::PeerHello {
                    cluster_name: self.cluster_name.clone(),
                    peer: node,
                }))
            }
            InitiatorState::AwaitingConfirm { keys, peer } => {
                let Frame::AcceptorConfirm { confirm } = frame else {
                    return Err(PairError::Unexpected(
                        "frame instead of the code confirmation",
                    ));
                };
                if !keys.verify(false, &confirm) {
                    return Err(PairError::WrongCode);
                }
                let mut plain = Writer::default();
                plain.bytes(&self.secret);
                plain.bytes(self.cluster_toml.as_bytes());
                let plain = Zeroizing::new(plain.0);
                let sealed = keys
                    .seal(true, AAD_PAYLOAD, &plain)
                    .ok_or(PairError::Invalid("sealing failed".into()))?;
                self.io.send(&Frame::Payload { sealed });
                self.state = InitiatorState::AwaitingOutcome { keys, peer };
                Ok(None)
            }
            InitiatorState::AwaitingOutcome { keys, peer } => {
                let Frame::Outcome { sealed } = frame else {
                    return Err(PairError::Unexpected("frame instead of the outcome"));
                };
                let plain = keys
                    .open(false, AAD_OUTCOME, &sealed)
                    .ok_or(PairError::Tampered)?;
                let outcome = decode_outcome(&plain)?;
                self.io.finished = true;
                match outcome {
                    None => Ok(Some(Event::Accepted(Paired {
                        cluster_name: self.cluster_name.clone(),
                        peer,
                        secret: self.secret.clone(),
                        cluster_toml: self.cluster_toml.clone(),
                    }))),
                    Some((kind, detail)) => Err(PairError::from_abort(kind, detail)),
                }
            }
            InitiatorState::AwaitingProceed { .. } | InitiatorState::Done => {
                Err(PairError::Unexpected("frame"))
            }
        }
    }

    /// After [`Event::PeerHello`]: this side's checks passed; prove the code.
    pub fn proceed(&mut self) -> Result<(), PairError> {
        let InitiatorState::AwaitingProceed {
            mut transcript,
            peer,
            spake_b,
        } = std::mem::replace(&mut self.state, InitiatorState::Done)
        else {
            return Err(self.io.fail(PairError::Unexpected("proceed")));
        };
        let (id_a, id_b) = identities(&self.cluster_name, &self.me, &peer);
        let (spake, spake_a) = Spake::start_a(&Password::new(self.code.password()), &id_a, &id_b);
        transcript.add(&spake_a);
        let key = match spake.finish(&spake_b) {
            Ok(key) => Zeroizing::new(key),
            Err(_) => return Err(self.io.fail(PairError::Unexpected("key exchange message"))),
        };
        let keys = SessionKeys::derive(&key, transcript.finish());
        let confirm = keys.confirmation(true);
        self.io.send(&Frame::InitiatorKey {
            spake: spake_a,
            confirm,
        });
        self.state = InitiatorState::AwaitingConfirm { keys, peer };
        Ok(())
    }

    /// After [`Event::PeerHello`]: this side's checks failed; tell the peer and stop.
    pub fn refuse(&mut self, refusal: Refusal) -> PairError {
        self.state = InitiatorState::Done;
        let error = refusal.error();
        if !self.io.finished {
            self.io.finished = true;
            self.io.send(&Frame::Abort {
                kind: refusal.kind,
                detail: truncate(&refusal.detail, MAX_DETAIL).to_string(),
            });
        }
        error
    }
}

// ---------------------------------------------------------------------------------------------

enum AcceptorState {
    AwaitingHello,
    AwaitingProceed {
        hello: Vec<u8>,
        cluster_name: String,
        peer: NodeInfo,
    },
    AwaitingKey {
        transcript: Transcript,
        spake: Spake,
        cluster_name: String,
        peer: NodeInfo,
    },
    AwaitingPayload {
        keys: SessionKeys,
        cluster_name: String,
        peer: NodeInfo,
    },
    AwaitingVerdict {
        keys: SessionKeys,
    },
    Done,
}

impl Role for Initiator {
    fn io(&mut self) -> &mut Io {
        &mut self.io
    }
    fn awaits_caller(&self) -> bool {
        matches!(self.state, InitiatorState::AwaitingProceed { .. })
    }
    fn on_frame(&mut self, frame: Frame, body: &[u8]) -> Result<Option<Event>, PairError> {
        Initiator::on_frame(self, frame, body)
    }
    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError> {
        Initiator::handle_timeout(self, now_ms)
    }
}

impl Role for Acceptor {
    fn io(&mut self) -> &mut Io {
        &mut self.io
    }
    fn awaits_caller(&self) -> bool {
        matches!(
            self.state,
            AcceptorState::AwaitingProceed { .. } | AcceptorState::AwaitingVerdict { .. }
        )
    }
    fn on_frame(&mut self, frame: Frame, body: &[u8]) -> Result<Option<Event>, PairError> {
        Acceptor::on_frame(self, frame, body)
    }
    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError> {
        Acceptor::handle_timeout(self, now_ms)
    }
}

/// The secondary's side of one connection: waits for the primary, checks its proof of the code,
/// receives the secret and cluster.toml.
pub struct Acceptor {
    io: Io,
    code: Code,
    me: NodeInfo,
    state: AcceptorState,
    code_consumed: bool,
}

impl Acceptor {
    pub fn new(code: Code, me: NodeInfo, now_ms: u64, timeout_ms: u64) -> Self {
        Acceptor {
            io: Io::new(now_ms, timeout_ms),
            code,
            me,
            state: AcceptorState::AwaitingHello,
            code_consumed: false,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.io.outgoing.pop_front()
    }

    pub fn deadline_ms(&self) -> u64 {
        self.io.deadline_ms
    }

    pub fn is_finished(&self) -> bool {
        self.io.finished
    }

    /// Whether this session got as far as a check of the code: from then on the code is used up,
    /// whatever the result (so a guesser gets one try per code shown).
    pub fn code_consumed(&self) -> bool {
        self.code_consumed
    }

    fn waiting_for(&self) -> &'static str {
        match self.state {
            AcceptorState::AwaitingHello => "waiting for the primary's hello",
            AcceptorState::AwaitingProceed { .. } => "checking the primary",
            AcceptorState::AwaitingKey { .. } => "waiting for the primary's proof of the code",
            AcceptorState::AwaitingPayload { .. } => "waiting for the primary's configuration",
            AcceptorState::AwaitingVerdict { .. } => "writing the configuration",
            AcceptorState::Done => "after the end",
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError> {
        let waiting_for = self.waiting_for();
        self.io.timeout(now_ms, waiting_for)
    }

    pub fn handle_eof(&mut self) -> Result<(), PairError> {
        if self.io.finished {
            return Ok(());
        }
        let during = match self.state {
            AcceptorState::AwaitingHello => "before its hello",
            AcceptorState::AwaitingKey { .. } => "before proving the code",
            _ => "before the pairing finished",
        };
        Err(self.io.fail(PairError::Closed(during)))
    }

    pub fn handle_bytes(&mut self, data: &[u8], now_ms: u64) -> Result<Option<Event>, PairError> {
        pump(self, data, now_ms)
    }

    fn on_frame(&mut self, frame: Frame, body: &[u8]) -> Result<Option<Event>, PairError> {
        match std::mem::replace(&mut self.state, AcceptorState::Done) {
            AcceptorState::AwaitingHello => {
                let Frame::InitiatorHello { cluster, node } = frame else {
                    return Err(PairError::Unexpected(
                        "frame instead of the primary's hello",
                    ));
                };
                self.state = AcceptorState::AwaitingProceed {
                    hello: length_prefixed(body),
                    cluster_name: cluster.clone(),
                    peer: node.clone(),
                };
                Ok(Some(Event::PeerHello {
                    cluster_name: cluster,
                    peer: node,
                }))
            }
            AcceptorState::AwaitingKey {
                mut transcript,
                spake,
                cluster_name,
                peer,
            } => {
                let Frame::InitiatorKey {
                    spake: spake_a,
                    confirm,
                } = frame
                else {
                    return Err(PairError::Unexpected(
                        "frame instead of the proof of the code",
                    ));
                };
                // From here on this session has tested the code: it is used up.
                self.code_consumed = true;
                transcript.add(&spake_a);
                let key = spake
                    .finish(&spake_a)
                    .map_err(|_| PairError::Unexpected("key exchange message"))?;
                let keys = SessionKeys::derive(&Zeroizing::new(key), transcript.finish());
                if !keys.verify(true, &confirm) {
                    return Err(PairError::WrongCode);
                }
                self.io.send(&Frame::AcceptorConfirm {
                    confirm: keys.confirmation(false),
                });
                self.state = AcceptorState::AwaitingPayload {
                    keys,
                    cluster_name,
                    peer,
                };
                Ok(None)
            }
            AcceptorState::AwaitingPayload {
                keys,
                cluster_name,
                peer,
            } => {
                let Frame::Payload { sealed } = frame else {
                    return Err(PairError::Unexpected("frame instead of the configuration"));
                };
                let plain = keys
                    .open(true, AAD_PAYLOAD, &sealed)
                    .ok_or(PairError::Tampered)?;
                let mut r = Reader(&plain);
                let secret = Zeroizing::new(r.bytes(MAX_SECRET)?.to_vec());
                let cluster_toml = r.bytes(MAX_CLUSTER_TOML)?;
                r.end()?;
                if secret.len() < MIN_SECRET {
                    return Err(PairError::Invalid(format!(
                        "the primary sent a shared secret of {} bytes (at least {MIN_SECRET} needed)",
                        secret.len()
                    )));
                }
                let cluster_toml = String::from_utf8(cluster_toml.to_vec())
                    .map_err(|_| PairError::Invalid("cluster.toml is not UTF-8".into()))?;
                self.state = AcceptorState::AwaitingVerdict { keys };
                Ok(Some(Event::Received(Paired {
                    cluster_name,
                    peer,
                    secret,
                    cluster_toml,
                })))
            }
            AcceptorState::AwaitingProceed { .. }
            | AcceptorState::AwaitingVerdict { .. }
            | AcceptorState::Done => Err(PairError::Unexpected("frame")),
        }
    }

    /// After [`Event::PeerHello`]: the two can pair; answer with this node's hello and key
    /// exchange message.
    pub fn proceed(&mut self) -> Result<(), PairError> {
        let AcceptorState::AwaitingProceed {
            hello,
            cluster_name,
            peer,
        } = std::mem::replace(&mut self.state, AcceptorState::Done)
        else {
            return Err(self.io.fail(PairError::Unexpected("proceed")));
        };
        let (id_a, id_b) = identities(&cluster_name, &peer, &self.me);
        let (spake, spake_b) = Spake::start_b(&Password::new(self.code.password()), &id_a, &id_b);
        let mut transcript = Transcript::new();
        transcript.add(&hello);
        transcript.add(&self.io.send(&Frame::AcceptorHello {
            node: self.me.clone(),
            spake: spake_b,
        }));
        self.state = AcceptorState::AwaitingKey {
            transcript,
            spake,
            cluster_name,
            peer,
        };
        Ok(())
    }

    /// After [`Event::PeerHello`] (this node cannot pair with that one), or after
    /// [`Event::Received`] (the result failed the checks or could not be written): tell the
    /// primary and stop. After `Received` the refusal is sealed, so the primary knows it is the
    /// secondary's word.
    pub fn refuse(&mut self, refusal: Refusal) -> PairError {
        let error = refusal.error();
        if self.io.finished {
            return error;
        }
        self.io.finished = true;
        match std::mem::replace(&mut self.state, AcceptorState::Done) {
            AcceptorState::AwaitingVerdict { keys } => {
                let plain = encode_outcome(Some((refusal.kind, &refusal.detail)));
                if let Some(sealed) = keys.seal(false, AAD_OUTCOME, &plain) {
                    self.io.send(&Frame::Outcome { sealed });
                }
            }
            _ => {
                self.io.send(&Frame::Abort {
                    kind: refusal.kind,
                    detail: truncate(&refusal.detail, MAX_DETAIL).to_string(),
                });
            }
        }
        error
    }

    /// After [`Event::Received`]: the result was checked and written; tell the primary.
    pub fn accept(&mut self) -> Result<(), PairError> {
        let AcceptorState::AwaitingVerdict { keys } =
            std::mem::replace(&mut self.state, AcceptorState::Done)
        else {
            return Err(self.io.fail(PairError::Unexpected("accept")));
        };
        let sealed = keys
            .seal(false, AAD_OUTCOME, &encode_outcome(None))
            .ok_or(PairError::Invalid("sealing failed".into()))?;
        self.io.send(&Frame::Outcome { sealed });
        self.io.finished = true;
        Ok(())
    }
}

/// `0` for accepted, else the refusal's kind and detail.
fn encode_outcome(refusal: Option<(AbortKind, &str)>) -> Vec<u8> {
    let mut w = Writer::default();
    match refusal {
        None => w.u8(0),
        Some((kind, detail)) => {
            w.u8(kind as u8);
            w.bytes(truncate(detail, MAX_DETAIL).as_bytes());
        }
    }
    w.0
}

fn decode_outcome(plain: &[u8]) -> Result<Option<(AbortKind, String)>, PairError> {
    let mut r = Reader(plain);
    let kind = r.u8()?;
    if kind == 0 {
        r.end()?;
        return Ok(None);
    }
    let detail = String::from_utf8_lossy(r.bytes(MAX_DETAIL)?).into_owned();
    r.end()?;
    let kind = AbortKind::from_byte(kind).ok_or(WireError::Malformed("unknown outcome"))?;
    Ok(Some((kind, detail)))
}
