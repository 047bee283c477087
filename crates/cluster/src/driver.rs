//! The UDP driver: one tokio task around the [`Election`]. It owns the heartbeat socket, the timer, the replay
//! guard, the counters and the status watch; VIP operations run one at a time on a separate task (through
//! [`VipControl`]) so heartbeats keep flowing while addresses are added; ping nodes are probed on a third. It makes
//! no decision of its own: when to send, when to wake and when a clean stop is over are the election's (its actions
//! and `next_timeout`). The status is published after every input that changed it.
//!
//! Hostile datagrams cost as little as possible on this real-time task: the socket is connected to the peer (the
//! kernel drops every other source), drained by `recvmmsg` ([`RECV_BATCH`] per call, at most [`READS_PER_WAKE`]
//! calls per wake-up; the timers are polled first), and while datagrams are being rejected read at most every
//! [`FLOOD_READ_EVERY`], so a flood costs a wake-up per millisecond rather than one per datagram; each datagram's
//! tag is verified once; a rejection only bumps a counter
//! (published with the status at most every [`REJECT_PUBLISH_MS`], never per datagram) and feeds a rate-limited
//! WARN line per source (`reject_log`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::election::{Action, Election, ElectionConfig, Event, Input, Timings, VipOp};
use crate::ping::{PingConfig, PingNodeStatus, PingNodes, PingVerdict};
use tandem_types::Secret;

use crate::wire::{
    Decoded, HeartbeatCodec, MAX_DATAGRAM, MIN_WIRE_VERSION, NodeState, OwnView, PingState, Reject,
    RejectCounts, ReplayGuard, Role, SpeakVersion, WIRE_VERSION,
};

mod batch;
mod process_probe;
mod reject_log;
mod socket;
mod vip_task;
use batch::RecvBatch;
pub use process_probe::PROBE_TIMEOUT;
use reject_log::RejectLog;
use socket::HbSocket;
pub use vip_task::VipControl;
use vip_task::{VipJob, run_vips};

/// Datagrams read per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;
/// `recvmmsg` calls per wake-up at most (512 datagrams), so timers and commands get their turn under a flood.
pub const READS_PER_WAKE: usize = 8;
/// While datagrams are being rejected, the socket is read at most this often (or every quarter interval if that is
/// shorter): a flood then costs one wake-up per millisecond with hundreds of datagrams each, instead of a wake-up
/// per datagram. A genuine heartbeat waits at most this long; without rejections reads are immediate as before.
pub const FLOOD_READ_EVERY: Duration = Duration::from_millis(1);
/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`): room for a burst while the task is
/// busy, so a flood does not crowd out the peer's heartbeats as fast.
pub const RECV_BUFFER: usize = 1 << 20;
/// Rejection counters reach the status (and its watchers) at most this often, or once per heartbeat interval if
/// that is longer; sent/received counters follow every heartbeat as before.
pub const REJECT_PUBLISH_MS: u64 = 100;

/// Everything the driver needs.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub election: ElectionConfig,
    /// `[node] address` : `heartbeat_port`.
    pub bind: SocketAddr,
    /// `[node] peer` : the peer's heartbeat port (the same port unless overridden, e.g. two nodes on one host).
    pub peer: Option<SocketAddr>,
    /// The shared secret (its `Debug` is redacted).
    pub secret: Secret,
    /// `[heartbeat] ping_nodes`.
    pub ping_nodes: Vec<IpAddr>,
    pub ping: PingConfig,
    /// A VIP operation that takes longer counts as failed.
    pub vip_timeout: Duration,
    /// The peer's sync port (`[node] sync_port`): probed with a fresh TCP connection when the peer's heartbeat port
    /// is reported unreachable, to confirm that its daemon is gone (see docs/protocol.md, "Process death"). `None`:
    /// no probe, a dead daemon is found by silence (`dead_ms`) only.
    pub probe_port: Option<u16>,
    /// The heartbeat wire versions read and spoken: this build's ([`MIN_WIRE_VERSION`]`..=`[`WIRE_VERSION`]), or
    /// another release's in the rolling-upgrade tests.
    #[doc(hidden)]
    pub wire_versions: (u16, u16),
}

impl DriverConfig {
    /// A config with default ping pacing and VIP timeout (5 s). The shutdown linger is the election's
    /// (`ElectionConfig::shutdown_linger_ms`).
    pub fn new(
        election: ElectionConfig,
        bind: SocketAddr,
        peer: Option<SocketAddr>,
        secret: Secret,
    ) -> Self {
        let interval = election.timings.interval_ms;
        let ping_period = Duration::from_millis(interval.max(100));
        Self {
            election,
            bind,
            peer,
            secret,
            ping_nodes: Vec::new(),
            ping: PingConfig {
                period: ping_period,
                timeout: ping_period,
                fail_after: 3,
            },
            vip_timeout: Duration::from_secs(5),
            probe_port: None,
            wire_versions: (MIN_WIRE_VERSION, WIRE_VERSION),
        }
    }
}

/// Commands from the daemon / admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Takeover,
    Release,
    /// Hand over cleanly and stop the driver (the task ends once done).
    Shutdown,
    /// Stick tables and config caught up with the peer (or not any more).
    CaughtUp(bool),
    LocalConfig {
        generation: u64,
        digest: [u8; 32],
    },
    LocalHealth {
        up: u32,
        total: u32,
    },
    /// A reload changed `[heartbeat]`: the new timings and auto-failback take effect without a restart (the
    /// election's `Input::SetTimings` says how running timers follow). Ping pacing keeps its start-up value.
    SetTimings {
        timings: Timings,
        auto_failback: bool,
    },
    /// The sync session was closed or reset from the peer's side (the sync task saw FIN or RST): the peer's daemon
    /// may be gone (`Input::PeerSessionLost`; docs/protocol.md, "Process death").
    PeerSessionLost,
}

/// What the peer last said, for `tandem status` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    pub role: Role,
    pub state: NodeState,
    pub holds_vips: bool,
    pub ping: PingState,
    pub caught_up: bool,
    pub config_generation: u64,
    pub config_digest: [u8; 32],
    pub servers_up: u32,
    pub servers_total: u32,
    pub last_heard: Instant,
    /// Since when the peer's heartbeats carry `state`.
    pub state_since: Instant,
    /// Heard within dead_ms.
    pub alive: bool,
}

/// Heartbeat counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatCounters {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Heartbeats the peer should have sent (one per interval) that never arrived: the gaps between accepted
    /// heartbeats, counted when the next one arrives.
    pub missed: u64,
    /// Authenticated heartbeats of a wire version this node cannot parse (a newer peer): signs of life only.
    pub incompatible: u64,
    pub rejected: RejectCounts,
}

/// Heartbeat wire versions, for status and metrics (see `docs/protocol.md`, "Versions and rolling upgrades").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireStatus {
    /// The versions this node reads and speaks.
    pub min: u16,
    pub max: u16,
    /// The version this node sends its heartbeats in now (the highest the peer reads too).
    pub speaking: u16,
    /// The highest version heard from the peer's current run.
    pub peer_version: Option<u16>,
    /// The peer is alive but speaks a version this node cannot parse.
    pub incompatible_peer: Option<IncompatiblePeerStatus>,
}

/// A peer alive in a heartbeat wire version this node cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompatiblePeerStatus {
    pub name: String,
    pub version: u16,
    pub last_heard: Instant,
}

/// The cluster as this node sees it; published on a `watch` after every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node: String,
    pub role: Role,
    pub state: NodeState,
    pub state_since: Instant,
    pub holds_vips: bool,
    pub ping: PingState,
    /// Each ping node's last answer (observability only: the election hears `ping`).
    pub ping_nodes: Vec<PingNodeStatus>,
    pub caught_up: bool,
    /// Why the node is in fault.
    pub fault: Option<String>,
    pub peer: Option<PeerStatus>,
    pub takeovers: u64,
    pub releases: u64,
    pub split_brains: u64,
    pub warn_time_exceeded: u64,
    pub vip_failures: u64,
    pub heartbeats: HeartbeatCounters,
    pub wire: WireStatus,
    /// The last noteworthy event, as logged.
    pub last_event: Option<String>,
    /// The driver task has ended (after a clean stop: the final heartbeats are out and the peer took over, or the
    /// linger time passed). A daemon that stops waits for this before exiting.
    pub driver_finished: bool,
}

impl ClusterStatus {
    /// How long ago the peer was last heard.
    pub fn peer_last_heard_age(&self) -> Option<Duration> {
        self.peer.as_ref().map(|p| p.last_heard.elapsed())
    }
}

/// The running driver.
#[derive(Debug)]
pub struct ClusterHandle {
    pub commands: mpsc::Sender<Command>,
    pub status: watch::Receiver<ClusterStatus>,
    /// The address the heartbeat socket is bound to.
    pub local_addr: SocketAddr,
    /// The driver loop's turns so far (it turns at least every 10 ms while it runs): a watchdog that sees this
    /// stand still knows the election is wedged (the daemon's systemd `WATCHDOG=1` follows it).
    pub turns: Arc<AtomicU64>,
    task: JoinHandle<io::Result<()>>,
}

impl ClusterHandle {
    /// Clean stop: hands over (if active) and waits for the driver to finish.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.commands.send(Command::Shutdown).await;
        self.join().await
    }

    /// Waits for the driver task to end.
    pub async fn join(self) -> io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("cluster driver task: {e}"))),
        }
    }

    /// Stops the task dead, like a crash (no handover; VIPs stay wherever the VIP layer left them).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Like [`ClusterHandle::abort`], and waits until the task is gone (its socket closed).
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Binds the heartbeat socket (`cfg.bind`) and starts the driver.
pub async fn spawn(cfg: DriverConfig, vips: impl VipControl) -> io::Result<ClusterHandle> {
    let socket = UdpSocket::bind(cfg.bind).await?;
    spawn_on(cfg, socket, vips)
}

/// Starts the driver on a socket bound by the caller (`cfg.bind` is not used). The socket is connected to
/// `cfg.peer` (when there is one) and its receive buffer raised.
pub fn spawn_on(
    cfg: DriverConfig,
    socket: UdpSocket,
    vips: impl VipControl,
) -> io::Result<ClusterHandle> {
    // Released first when this daemon is killed, so the peer's heartbeats draw "port unreachable" at once
    // (tandem_types::exit_order).
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(
        tandem_types::exit_order::release_first(socket.into_std()?.into()),
    ))?;
    let local_addr = socket.local_addr()?;
    let connected = prepare_socket(&socket, cfg.peer);
    let (command_tx, command_rx) = mpsc::channel(16);
    let origin = Instant::now();
    let election = Election::new(cfg.election.clone(), 0);
    let (min_version, max_version) = cfg.wire_versions;
    let codec = HeartbeatCodec::new(&cfg.election.cluster, &cfg.secret)
        .with_versions(min_version, max_version);
    let (min_version, max_version) = codec.versions();
    let speak = SpeakVersion::new(min_version, max_version);
    let ping_nodes = Arc::new(Mutex::new(PingNodes::new(&cfg.ping_nodes, &cfg.ping)));
    let status = status_of(
        &election,
        &speak,
        origin,
        &HeartbeatCounters::default(),
        None,
        0,
        ping_snapshot(&ping_nodes),
    );
    let (status_tx, status_rx) = watch::channel(status);
    let turns = Arc::new(AtomicU64::new(0));
    let driver = Driver {
        turns: turns.clone(),
        codec,
        speak,
        guard: ReplayGuard::new(),
        election,
        origin,
        counters: HeartbeatCounters::default(),
        last_accepted_ms: None,
        rejected_shown: RejectCounts::default(),
        rejected_due_ms: 0,
        reject_log: RejectLog::new(),
        connected,
        socket: HbSocket::Registered(socket),
        status_tx,
        last_event: None,
        port_refused: false,
        silenced: false,
        ping_nodes,
        cfg,
    };
    let task = tokio::spawn(driver.run(command_rx, vips));
    Ok(ClusterHandle {
        commands: command_tx,
        status: status_rx,
        local_addr,
        turns,
        task,
    })
}

struct Driver {
    cfg: DriverConfig,
    codec: HeartbeatCodec,
    /// Which wire version the peer gets (the highest both read).
    speak: SpeakVersion,
    guard: ReplayGuard,
    election: Election,
    socket: HbSocket,
    origin: Instant,
    counters: HeartbeatCounters,
    /// When the last heartbeat was accepted (for `missed`).
    last_accepted_ms: Option<u64>,
    /// The rejection counts last put in the status, and when they may be refreshed next.
    rejected_shown: RejectCounts,
    rejected_due_ms: u64,
    reject_log: RejectLog,
    /// The socket is connected to the peer: send without an address.
    connected: bool,
    /// A send met the peer's "port unreachable": fed to the election after the actions at hand.
    port_refused: bool,
    /// The VIP task was told to fall silent for the planned handover under way.
    silenced: bool,
    status_tx: watch::Sender<ClusterStatus>,
    last_event: Option<String>,
    /// Shared with [`ClusterHandle::turns`].
    turns: Arc<AtomicU64>,
    /// Written by the ping task, read into every published status.
    ping_nodes: Arc<Mutex<PingNodes>>,
}

/// Heartbeats missing from a gap of `gap_ms` between two that arrived, at one per `interval_ms` (rounded to the
/// nearest interval; a gap up to 1.5 intervals is on time).
fn missed_in_gap(gap_ms: u64, interval_ms: u64) -> u64 {
    let interval = interval_ms.max(1);
    if gap_ms <= interval + interval / 2 {
        return 0;
    }
    (gap_ms + interval / 2) / interval - 1
}

/// Connects the socket to the peer, so the kernel delivers nothing from any other address (no wake-up, no copy),
/// and asks for a larger receive buffer. A standalone node (no peer) stays unconnected. Returns whether connected;
/// if the connect fails the driver still filters by source address itself.
fn prepare_socket(socket: &UdpSocket, peer: Option<SocketAddr>) -> bool {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "heartbeat socket: receive buffer not raised");
    }
    let Some(peer) = peer else { return false };
    // An IPv6 socket reaches an IPv4 peer through its mapped address.
    let target = match (socket.local_addr(), peer) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => peer,
    };
    match sock.connect(&target.into()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "heartbeat socket not connected to the peer: filtering sources in the driver");
            false
        }
    }
}

impl Driver {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        vips: impl VipControl,
    ) -> io::Result<()> {
        let (vip_tx, vip_rx) = mpsc::unbounded_channel::<VipJob>();
        let (result_tx, mut results) = mpsc::unbounded_channel::<Input>();
        let vip_task = tokio::spawn(run_vips(
            vips,
            vip_rx,
            result_tx.clone(),
            self.cfg.vip_timeout,
        ));
        let ping_task = (!self.cfg.ping_nodes.is_empty()).then(|| {
            tokio::spawn(run_ping(
                self.cfg.ping_nodes.clone(),
                self.cfg.ping,
                self.ping_nodes.clone(),
                result_tx.clone(),
            ))
        });
        let mut batch = RecvBatch::new();
        let mut commands_open = true;
        let mut inputs = vec![Input::Tick];
        // Set after a read that rejected something: the socket is not read again before then.
        let mut read_after: Option<Instant> = None;
        loop {
            self.turns.fetch_add(1, Ordering::Relaxed);
            if !inputs.is_empty() {
                let mut stopped = false;
                for inp in inputs.drain(..) {
                    let now = self.now_ms();
                    let actions = self.election.handle(inp, now);
                    if self.execute(actions, &vip_tx, &result_tx).await {
                        stopped = true;
                        break;
                    }
                }
                // Once per turn: what it sends may meet the same refusal, which waits for the next turn.
                if !stopped && std::mem::take(&mut self.port_refused) {
                    let now = self.now_ms();
                    let actions = self.election.handle(Input::PeerPortUnreachable, now);
                    stopped = self.execute(actions, &vip_tx, &result_tx).await;
                }
                self.publish();
                // The election decides when a clean stop is over (linger and resends are its policy); without a
                // peer address there is nobody to repeat the final heartbeat to.
                if stopped
                    || (self.cfg.peer.is_none() && self.election.state() == NodeState::Stopped)
                {
                    break;
                }
            }
            for line in self.reject_log.due(self.now_ms()) {
                tracing::warn!(node = %self.cfg.election.node, "{line}");
            }
            let next_ms = self.election.next_timeout();
            // A safety net under the timer: never sleep longer than an interval (at most 10 ms).
            let cap =
                Duration::from_millis(self.election.config().timings.interval_ms.clamp(1, 10));
            let now = Instant::now();
            let mut tick_at = now + cap;
            if next_ms != u64::MAX {
                tick_at = tick_at.min(self.origin + Duration::from_millis(next_ms));
            }
            let wake_at = match read_after {
                Some(at) => tick_at.min(at),
                None => tick_at,
            };
            // Biased, timer first: however busy the socket, a due deadline is served at the next wake-up.
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    // Woken only to read the socket again: no tick for the election.
                    if Instant::now() >= tick_at {
                        inputs.push(Input::Tick);
                    }
                    if read_after.is_some_and(|at| Instant::now() >= at) {
                        let rejected = self.drain(&mut batch, &mut inputs);
                        read_after = self.after_read(rejected);
                    }
                }
                Some(result) = results.recv() => inputs.push(result),
                command = commands.recv(), if commands_open => match command {
                    Some(c) => inputs.push(command_input(c)),
                    None => commands_open = false,
                },
                ready = self.socket.readable(), if read_after.is_none() => match ready {
                    Ok(()) => {
                        let rejected = self.drain(&mut batch, &mut inputs);
                        read_after = self.after_read(rejected);
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat socket error"),
                },
            }
        }
        if let Some(task) = ping_task {
            task.abort();
        }
        drop(vip_tx);
        // Let the VIP task finish what it was doing (it ends when the queue is empty and closed).
        let _ = tokio::time::timeout(self.cfg.vip_timeout, vip_task).await;
        self.publish();
        self.status_tx.send_modify(|s| s.driver_finished = true);
        Ok(())
    }

    /// After a read: while datagrams are being rejected the socket leaves the reactor and is read again by the timer
    /// (returns when); once a read rejects nothing it goes back to waking the task at once.
    fn after_read(&mut self, rejected: u64) -> Option<Instant> {
        if rejected == 0 {
            self.socket.register();
            return None;
        }
        self.socket.unregister();
        let quarter = Duration::from_millis(self.election.config().timings.interval_ms) / 4;
        Some(Instant::now() + FLOOD_READ_EVERY.min(quarter))
    }

    /// Reads what the socket holds, [`RECV_BATCH`] datagrams per call and at most [`READS_PER_WAKE`] calls, queueing
    /// the acceptable heartbeats as inputs; returns how many datagrams were rejected. More left in the socket keeps
    /// it readable: the next wake-up, after the timers, reads on.
    fn drain(&mut self, batch: &mut RecvBatch, inputs: &mut Vec<Input>) -> u64 {
        let now = self.now_ms();
        let before = self.counters.rejected.total();
        let mut refused = false;
        for _ in 0..READS_PER_WAKE {
            match self.socket.recv(batch) {
                Ok(n) => {
                    for i in 0..n {
                        if let Some((datagram, from)) = batch.get(i)
                            && let Some(input) = self.accept(datagram, from, now)
                        {
                            inputs.push(input);
                        }
                    }
                    if n < RECV_BATCH {
                        break;
                    }
                }
                // A connected socket reports the peer's "port unreachable" once (the peer is down): read on.
                // The election decides whether it is worth a probe.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !refused => {
                    tracing::debug!(
                        "heartbeat refused by the peer's host (ICMP port unreachable, read)"
                    );
                    refused = true;
                    inputs.push(Input::PeerPortUnreachable);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat socket receive error");
                    break;
                }
            }
        }
        self.counters.rejected.total() - before
    }

    /// Checks one datagram; returns the heartbeat as an input if it is acceptable. A rejection costs a counter and,
    /// now and then, a log line: the status is not republished for it.
    fn accept(&mut self, datagram: &[u8], from: SocketAddr, now_ms: u64) -> Option<Input> {
        match self.check(datagram, from, now_ms) {
            Ok(input) => {
                self.counters.received += 1;
                self.count_missed(now_ms);
                if matches!(input, Input::PeerIncompatible(_)) {
                    self.counters.incompatible += 1;
                }
                Some(input)
            }
            Err(reason) => {
                self.counters.rejected.add(reason);
                if let Some(line) = self.reject_log.record(from.ip(), reason, now_ms) {
                    tracing::warn!(node = %self.cfg.election.node, "{line}");
                }
                None
            }
        }
    }

    /// A heartbeat arrived at `now_ms`: the ones that should have come since the last (one per interval, half an
    /// interval of lateness allowed) are counted as missed.
    fn count_missed(&mut self, now_ms: u64) {
        let interval = self.election.config().timings.interval_ms.max(1);
        if let Some(last) = self.last_accepted_ms.replace(now_ms) {
            self.counters.missed += missed_in_gap(now_ms.saturating_sub(last), interval);
        }
    }

    fn check(&mut self, datagram: &[u8], from: SocketAddr, now_ms: u64) -> Result<Input, Reject> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Reject::Oversize);
        }
        // Kept with a connected socket too: cheap, and the only filter when the connect failed.
        if let Some(peer) = self.cfg.peer
            && peer.ip().to_canonical() != from.ip().to_canonical()
        {
            return Err(Reject::UnexpectedSource);
        }
        let hb = match self.codec.decode_any(datagram)? {
            Decoded::Heartbeat { heartbeat, version } => (heartbeat, version),
            Decoded::Incompatible(hb) => {
                if hb.node == self.cfg.election.node {
                    return Err(Reject::OwnName);
                }
                if let Err(e) = self.guard.check_incompatible(&hb) {
                    if e == Reject::Replay {
                        self.speak.heard_reordered(hb.boot_epoch, hb.version);
                    }
                    return Err(e);
                }
                self.speak.heard(hb.boot_epoch, hb.version);
                return Ok(Input::PeerIncompatible(hb));
            }
        };
        let (hb, version) = hb;
        if hb.node == self.cfg.election.node {
            return Err(Reject::OwnName);
        }
        let own = OwnView {
            epoch: self.cfg.election.boot_epoch,
            seq: self.election.last_seq(),
            now_ms,
            silence_ms: self.election.config().timings.dead_ms,
        };
        if let Err(e) = self.guard.check_fresh(&hb, own) {
            if e == Reject::Replay {
                self.speak.heard_reordered(hb.boot_epoch, version);
            }
            return Err(e);
        }
        self.speak.heard(hb.boot_epoch, version);
        Ok(Input::PeerHeartbeat(hb))
    }

    /// Carries out the election's actions in order; true if it said the clean stop is over.
    async fn execute(
        &mut self,
        actions: Vec<Action>,
        vip_tx: &mpsc::UnboundedSender<VipJob>,
        results: &mpsc::UnboundedSender<Input>,
    ) -> bool {
        let mut stopped = false;
        for action in actions {
            match action {
                Action::SendHeartbeat(hb) => self.send(&hb).await,
                Action::AcquireVips => {
                    let _ = vip_tx.send(VipJob::Op(VipOp::Acquire, self.drain_peer()));
                }
                Action::ReleaseVips => {
                    let _ = vip_tx.send(VipJob::Op(VipOp::Release, self.drain_peer()));
                }
                Action::AnnounceVips => {
                    let _ = vip_tx.send(VipJob::Op(VipOp::Announce, None));
                }
                Action::ProbePeerProcess => {
                    tracing::debug!("probing the peer's sync port");
                    let (peer, port) = (self.cfg.peer, self.cfg.probe_port);
                    process_probe::spawn(peer, port, self.cfg.bind.ip(), results);
                }
                Action::Event(event) => self.log(&event),
                Action::Stopped => stopped = true,
            }
        }
        // Offering the VIPs while holding them (make-before-break): no more announcements from here.
        let offering = self.election.handing_over() && self.election.holds_vips();
        if offering && !self.silenced {
            let _ = vip_tx.send(VipJob::FallSilent);
        }
        self.silenced = offering;
        stopped
    }

    /// The peer's address when the acquire or release just issued is one side of a planned handover.
    fn drain_peer(&self) -> Option<IpAddr> {
        self.cfg
            .peer
            .filter(|_| self.election.vip_op_is_handover())
            .map(|peer| peer.ip())
    }

    async fn send(&mut self, hb: &crate::wire::Heartbeat) {
        let Some(peer) = self.cfg.peer else { return };
        match self.codec.encode_version(hb, self.speak.speak()) {
            Ok(datagram) => match self.send_datagram(&datagram, peer).await {
                Ok(_) => self.counters.sent += 1,
                Err(e) => {
                    self.counters.send_errors += 1;
                    tracing::debug!(error = %e, %peer, "heartbeat send failed");
                }
            },
            Err(e) => {
                self.counters.send_errors += 1;
                tracing::error!(error = %e, "heartbeat cannot be encoded");
            }
        }
    }

    async fn send_datagram(&mut self, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        match self.socket.send(datagram, peer, self.connected).await {
            // A connected socket hands a pending "port unreachable" (the peer was down) to the next send, which
            // then sends nothing: the error is consumed, try once more (and tell the election).
            Err(e) if self.connected && e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(
                    "heartbeat refused by the peer's host (ICMP port unreachable, send)"
                );
                self.port_refused = true;
                self.socket.send(datagram, peer, true).await
            }
            other => other,
        }
    }

    fn log(&mut self, event: &Event) {
        let node = &self.cfg.election.node;
        let text = match event {
            Event::StateChanged { from, to, reason } => {
                let text = format!("{from} -> {to}: {reason}");
                // warn: a role change is what an operator filters the journal for (`journalctl -p warning`).
                tracing::warn!(node = %node, %from, %to, %reason, "cluster state changed");
                text
            }
            Event::PeerUp { node: peer } => {
                tracing::info!(node = %node, %peer, "peer heard");
                format!("peer {peer} heard")
            }
            Event::PeerIncompatible {
                node: peer,
                version,
            } => {
                let (min, max) = self.codec.versions();
                tracing::warn!(
                    node = %node,
                    %peer,
                    peer_version = version,
                    min_version = min,
                    max_version = max,
                    "peer alive in a heartbeat wire version this node cannot read: not taking over because of it"
                );
                format!(
                    "peer {peer} speaks heartbeat wire version {version} (this node reads {min}..={max}): alive, state unknown"
                )
            }
            Event::PeerRestarted { node: peer } => {
                tracing::info!(node = %node, %peer, "peer restarted");
                format!("peer {peer} restarted")
            }
            Event::PeerSilent { silent_ms } => {
                tracing::warn!(node = %node, silent_ms, "peer silent longer than warn_ms");
                format!("peer silent for {silent_ms} ms (warn_ms)")
            }
            Event::PeerDead { silent_ms } => {
                tracing::warn!(node = %node, silent_ms, "peer declared dead");
                format!("peer silent for {silent_ms} ms: declared dead")
            }
            Event::PeerProcessGone { silent_ms } => {
                tracing::warn!(node = %node, silent_ms, "peer's daemon gone (port unreachable, sync port refused): declared dead");
                format!("peer's daemon gone after {silent_ms} ms of silence: declared dead")
            }
            Event::SplitBrain { peer, won } => {
                tracing::error!(node = %node, %peer, won, "split brain: both nodes held the VIPs");
                format!(
                    "split brain with {peer}: {}",
                    if *won {
                        "kept the VIPs"
                    } else {
                        "dropped the VIPs"
                    }
                )
            }
            Event::TakeoverRequested { failback } => {
                tracing::info!(node = %node, failback, "asking the peer for the active role");
                format!(
                    "takeover requested{}",
                    if *failback { " (auto-failback)" } else { "" }
                )
            }
            Event::TakeoverRequestExpired => {
                tracing::warn!(node = %node, "takeover request not honoured by the peer");
                "takeover request expired".to_string()
            }
            Event::TimingsChanged {
                timings: t,
                auto_failback,
            } => {
                tracing::info!(
                    node = %node,
                    interval_ms = t.interval_ms,
                    dead_ms = t.dead_ms,
                    warn_ms = t.warn_ms,
                    init_dead_ms = t.init_dead_ms,
                    auto_failback,
                    "heartbeat timings changed"
                );
                format!(
                    "heartbeat timings: interval {} ms, dead {} ms, warn {} ms, init_dead {} ms, auto_failback {}",
                    t.interval_ms, t.dead_ms, t.warn_ms, t.init_dead_ms, auto_failback
                )
            }
            Event::Refused { command, reason } => {
                tracing::warn!(node = %node, command, %reason, "command refused");
                format!("{command} refused: {reason}")
            }
        };
        self.last_event = Some(text);
    }

    fn publish(&mut self) {
        let now = self.now_ms();
        if self.rejected_shown != self.counters.rejected && now >= self.rejected_due_ms {
            self.rejected_shown = self.counters.rejected;
            let every = REJECT_PUBLISH_MS.max(self.election.config().timings.interval_ms);
            self.rejected_due_ms = now.saturating_add(every);
        }
        let counters = HeartbeatCounters {
            rejected: self.rejected_shown,
            ..self.counters
        };
        let status = status_of(
            &self.election,
            &self.speak,
            self.origin,
            &counters,
            self.last_event.clone(),
            now,
            ping_snapshot(&self.ping_nodes),
        );
        self.status_tx.send_if_modified(|old| {
            if *old == status {
                false
            } else {
                *old = status;
                true
            }
        });
    }
}

fn command_input(command: Command) -> Input {
    match command {
        Command::Takeover => Input::AdminTakeover,
        Command::Release => Input::AdminRelease,
        Command::Shutdown => Input::Shutdown,
        Command::CaughtUp(c) => Input::CaughtUp(c),
        Command::LocalConfig { generation, digest } => Input::LocalConfig { generation, digest },
        Command::LocalHealth { up, total } => Input::LocalHealth { up, total },
        Command::SetTimings {
            timings,
            auto_failback,
        } => Input::SetTimings {
            timings,
            auto_failback,
        },
        Command::PeerSessionLost => {
            tracing::debug!("sync session lost from the peer's side");
            Input::PeerSessionLost
        }
    }
}

fn status_of(
    election: &Election,
    speak: &SpeakVersion,
    origin: Instant,
    counters: &HeartbeatCounters,
    last_event: Option<String>,
    now_ms: u64,
    ping_nodes: Vec<PingNodeStatus>,
) -> ClusterStatus {
    let cfg = election.config();
    let stats = election.stats();
    let peer = election.peer().map(|p| {
        let hb = &p.heartbeat;
        PeerStatus {
            name: hb.node.clone(),
            role: hb.role,
            state: hb.state,
            holds_vips: hb.holds_vips,
            ping: hb.ping,
            caught_up: hb.caught_up,
            config_generation: hb.config_generation,
            config_digest: hb.config_digest,
            servers_up: hb.servers_up,
            servers_total: hb.servers_total,
            last_heard: origin + Duration::from_millis(p.last_heard_ms),
            state_since: origin + Duration::from_millis(p.state_since_ms),
            alive: election.peer_alive(now_ms),
        }
    });
    ClusterStatus {
        node: cfg.node.clone(),
        role: cfg.role,
        state: election.state(),
        state_since: origin + Duration::from_millis(election.state_since_ms()),
        holds_vips: election.holds_vips(),
        ping: election.ping(),
        ping_nodes,
        caught_up: election.caught_up(),
        fault: election.fault_reason().map(str::to_owned),
        peer,
        takeovers: stats.takeovers,
        releases: stats.releases,
        split_brains: stats.split_brains,
        warn_time_exceeded: stats.warn_time_exceeded,
        vip_failures: stats.vip_failures,
        heartbeats: *counters,
        wire: WireStatus {
            min: speak.range().0,
            max: speak.range().1,
            speaking: speak.speak(),
            peer_version: speak.peer_version(),
            incompatible_peer: election
                .peer_incompatible(now_ms)
                .map(|p| IncompatiblePeerStatus {
                    name: p.node.clone(),
                    version: p.version,
                    last_heard: origin + Duration::from_millis(p.last_heard_ms),
                }),
        },
        last_event,
        driver_finished: false,
    }
}

fn ping_snapshot(ping_nodes: &Mutex<PingNodes>) -> Vec<PingNodeStatus> {
    ping_nodes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .snapshot(Instant::now())
}

/// Probes the ping nodes forever, reporting the debounced verdict after every round: at the first answer (as
/// soon as before per-node bookkeeping), or when the round ends without one. Each node's answer goes into `book`.
async fn run_ping(
    nodes: Vec<IpAddr>,
    cfg: PingConfig,
    book: Arc<Mutex<PingNodes>>,
    results: mpsc::UnboundedSender<Input>,
) {
    let mut verdict = PingVerdict::new(cfg.fail_after);
    let mut ticker = tokio::time::interval(cfg.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !results.is_closed() {
        ticker.tick().await;
        let answered = crate::ping::probe_each(&nodes, cfg.timeout, &book, || {
            let reachable = verdict.record(true);
            let _ = results.send(Input::PingResult { reachable });
        })
        .await;
        if !answered {
            let reachable = verdict.record(false);
            if results.send(Input::PingResult { reachable }).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
