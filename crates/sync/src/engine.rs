//! The sync session's policy, sans-IO: what to send when, when to give up on the peer, when to
//! retry, when to publish the status.
//!
//! [`SyncEngine`] owns the replication and config-push state machines, the framing state of the
//! open session and every timing decision the driver used to make: the keepalive cadence (table
//! sizes every `keepalive_ms`), the silence timeout (nothing heard for `peer_timeout_ms`), the
//! stall timeout (the write queue full for `peer_timeout_ms`), the change-log polling tick, the
//! reconnect back-off and the status publish cadence. Time is the caller's clock in milliseconds,
//! passed to every input; [`SyncEngine::next_timeout`] says when to call
//! [`SyncEngine::on_timer`] at the latest. The driver only moves bytes and sleeps.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use tandem_stick::StickTables;
use tracing::{info, warn};

use crate::admin_states::{AdminEntry, SharedAdminStates};
use crate::admission::HandshakeLimits;
use crate::config_push::{
    ConfigAction, ConfigPush, ConfigRole, ConfigSink, ConfigSyncState, LocalConfig,
};
use crate::handshake::{Identity, SessionKeys};
use crate::reject::{RejectCounters, RejectReason, Rejection};
use crate::replication::{ReplMsg, ReplicationSettings, Replicator, split_by_bytes};
use crate::session::{Message, Session, SessionTimers};
use crate::status::{ConfigStatus, SyncCounters, SyncStatus, TableSyncStatus};
use crate::wire::DEFAULT_MAX_FRAME;

/// Status publish period while a session is open (counters and ack age stay fresh).
pub const PUBLISH_MS: u64 = 250;
/// Status publish period while the accepting node waits for the peer (rejection counters).
pub const IDLE_PUBLISH_MS: u64 = 100;

/// Who opens the TCP connection: the node whose `(address, port)` is lower dials, the other
/// accepts. Both nodes compute the same answer from their `node.toml`s.
pub fn dials(local: SocketAddr, peer: SocketAddr) -> bool {
    (local.ip(), local.port()) < (peer.ip(), peer.port())
}

/// Tunables of the session.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub max_frame: usize,
    /// How often the change log is read for new updates (the batching interval).
    pub batch_interval: Duration,
    pub timers: SessionTimers,
    /// A handshake (either side) not finished by then is closed (`handshake_timeout`); short,
    /// so a connection that never completes holds its slot briefly.
    pub handshake_timeout: Duration,
    /// Handshakes in progress on the accepting node, and the dialer's source port.
    pub limits: HandshakeLimits,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Sealed frames waiting for the socket; beyond this nothing more is read from the tables.
    pub write_queue_frames: usize,
    pub replication: ReplicationSettings,
    /// The operators' admin states, shared with the daemon: exchanged in full when a session
    /// opens, then each change (`None`: this node keeps none and refuses the peer's).
    pub admin_states: Option<SharedAdminStates>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            batch_interval: Duration::from_millis(2),
            timers: SessionTimers::default(),
            handshake_timeout: Duration::from_secs(2),
            limits: HandshakeLimits::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(3),
            write_queue_frames: 32,
            replication: ReplicationSettings::default(),
            admin_states: None,
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

/// The open session: framing state, messages waiting for room, and its deadlines.
struct Link {
    session: Session,
    /// Control messages (config push, replies) go out before table data.
    outbox: VecDeque<Message>,
    /// When table sizes (the keepalive) were last sent.
    last_sizes: u64,
    /// Since when the write queue has been full (the peer reads nothing).
    full_since: Option<u64>,
    /// Next change-log polling tick (also when silence is checked).
    next_tick: u64,
    /// Sent counters when the session opened (the driver reports the session's own).
    sent_base: (u64, u64),
    /// The admin states' revision sent to the peer so far.
    admin_sent: u64,
}

/// Both state machines and the timing policy of one node's sync side, across sessions.
pub struct SyncEngine {
    settings: SyncSettings,
    dials: bool,
    peer: String,
    replicator: Replicator,
    config: ConfigPush,
    sink: Box<dyn ConfigSink>,
    counters: SyncCounters,
    last_error: Option<String>,
    link: Option<Link>,
    /// Delay before the next dial after a failed one (doubles up to `backoff_max`).
    backoff: Duration,
    last_publish: u64,
    /// Something visible changed: publish at the next opportunity.
    publish_pending: bool,
}

impl SyncEngine {
    /// `process` must be random per daemon process (the identity of our change logs).
    pub fn new(
        params: &SyncParams,
        local_config: Option<LocalConfig>,
        sink: Box<dyn ConfigSink>,
        process: u64,
        now: u64,
    ) -> Self {
        let mut settings = params.settings.clone();
        // Messages of entries/updates must fit a frame with room for the envelope.
        settings.replication.max_message_bytes = settings
            .replication
            .max_message_bytes
            .min(settings.max_frame / 4)
            .max(1);
        let mut config = ConfigPush::new(params.role, local_config);
        config.set_max_frame(settings.max_frame);
        Self {
            replicator: Replicator::new(settings.replication.clone(), process),
            config,
            backoff: settings.backoff_initial,
            settings,
            dials: dials(params.local, params.peer),
            peer: params.peer.to_string(),
            sink,
            counters: SyncCounters::default(),
            last_error: None,
            link: None,
            last_publish: now,
            publish_pending: true,
        }
    }

    /// Whether this node opens the connection (else it accepts).
    pub fn dials(&self) -> bool {
        self.dials
    }

    pub fn connected(&self) -> bool {
        self.link.is_some()
    }

    /// The latest time the driver must call [`Self::on_timer`] (or [`Self::publish_due`] while
    /// no session is open); `None`: nothing to wait for.
    pub fn next_timeout(&self) -> Option<u64> {
        let Some(link) = &self.link else {
            // Accepting: keep the rejection counters fresh while waiting for the peer. Dialing:
            // the driver is dialing or waiting out the back-off it was given.
            return (!self.dials).then_some(self.last_publish + IDLE_PUBLISH_MS);
        };
        let timers = self.settings.timers;
        let silence = link.session.last_rx_ms() + timers.peer_timeout_ms;
        let stall = link.full_since.map(|since| since + timers.peer_timeout_ms);
        // Keepalive and publish need no deadline of their own: the tick comes far more often
        // and each wake-up checks them (before the next tick they would only be late by it).
        Some(
            [Some(link.next_tick), Some(silence), stall]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(link.next_tick),
        )
    }

    /// A session authenticated: start both state machines on it. `active` is whether this node
    /// serves clients; `latest` the newest accepted local `cluster.toml` (one accepted while
    /// disconnected is offered now).
    pub fn open(
        &mut self,
        keys: SessionKeys,
        now: u64,
        tables: &StickTables,
        active: bool,
        latest: Option<LocalConfig>,
    ) {
        let session = Session::new(keys, self.settings.max_frame, self.settings.timers, now);
        // A peer of a newer release (it offered a newer protocol) gets no config push.
        let (ours, theirs) = session.offered();
        self.config.set_peer_protocol(ours, theirs);
        self.counters.sessions_opened += 1;
        self.backoff = self.settings.backoff_initial;
        // The publish period restarts with the session.
        self.last_publish = now;
        info!(peer = %self.peer, version = session.version(), "sync session open");
        self.link = Some(Link {
            session,
            outbox: VecDeque::new(),
            last_sizes: now,
            full_since: None,
            // An interval's first tick is at once.
            next_tick: now,
            sent_base: (self.counters.frames_sent, self.counters.bytes_sent),
            admin_sent: 0,
        });
        // The full exchange: every admin state goes first, before the tables.
        self.queue_admin_changes();
        self.replicator.set_active(active, tables);
        self.replicator.on_session_open(tables);
        if let Some(local) = latest {
            // The session opening below announces and offers it: nothing to send for the set.
            let _ = self.config.set_local(local);
        }
        let actions = self.config.on_session_open();
        self.handle_config_actions(actions);
    }

    /// The session ended (closed, failed or replaced): both state machines forget it.
    pub fn close(&mut self) {
        self.link = None;
        self.replicator.on_session_closed();
        self.config.on_session_closed();
        self.publish_pending = true;
    }

    /// The session closed for `rejection`: how long to wait before dialing again (`None`: this
    /// node accepts, it waits for the peer).
    pub fn session_closed(&mut self, rejection: &Rejection) -> Option<Duration> {
        self.last_error = Some(rejection.to_string());
        self.publish_pending = true;
        self.dials.then_some(self.backoff)
    }

    /// A dial or its handshake failed: how long to wait before the next attempt. Doubles up to
    /// `backoff_max`; a session that authenticates resets it.
    pub fn dial_failed(&mut self, rejection: &Rejection) -> Duration {
        self.last_error = Some(rejection.to_string());
        self.publish_pending = true;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.settings.backoff_max);
        wait
    }

    /// The next sealed frame to write, while the driver has room for one: control messages first,
    /// then table sizes when the keepalive is due (busy or idle), then table data. `tables` is
    /// only called (and its guard dropped before sealing) when table data is needed.
    pub fn next_frame<G: Deref<Target = StickTables>>(
        &mut self,
        now: u64,
        tables: impl FnOnce() -> G,
    ) -> Result<Option<Vec<u8>>, Rejection> {
        self.queue_admin_changes();
        let Some(link) = self.link.as_mut() else {
            return Ok(None);
        };
        let message = match link.outbox.pop_front() {
            Some(message) => message,
            None => {
                let tables = tables();
                // Table sizes go out every keepalive interval, busy or idle: they are the
                // keepalive and keep the peer's view of our entry counts fresh.
                if now.saturating_sub(link.last_sizes) >= self.settings.timers.keepalive_ms {
                    link.last_sizes = now;
                    Message::Repl(self.replicator.sizes_message(&tables))
                } else {
                    match self.replicator.poll_message(&tables, now) {
                        Some(m) => Message::Repl(m),
                        None => return Ok(None),
                    }
                }
            }
        };
        link.session.seal(&message, now).map(Some)
    }

    /// The driver filled its write queue as far as it could; `full`: it ran out of room (so
    /// the peer is not reading). A queue full for `peer_timeout_ms` closes the session.
    pub fn write_queue(&mut self, now: u64, full: bool) -> Result<(), Rejection> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        if !full {
            link.full_since = None;
            return Ok(());
        }
        let since = *link.full_since.get_or_insert(now);
        if now.saturating_sub(since) >= self.settings.timers.peer_timeout_ms {
            return Err(Rejection::new(
                RejectReason::PeerStalled,
                format!("the peer read nothing for {} ms", now - since),
            ));
        }
        Ok(())
    }

    /// Frames and bytes the driver has written on this session so far.
    pub fn on_sent(&mut self, frames: u64, bytes: u64) {
        if let Some(link) = &self.link {
            self.counters.frames_sent = link.sent_base.0 + frames;
            self.counters.bytes_sent = link.sent_base.1 + bytes;
        }
    }

    /// One frame's payload arrived (without its 4-byte length). `tables` is only called for
    /// replication messages (a pushed `cluster.toml` is applied without holding the tables).
    pub fn on_frame<G: DerefMut<Target = StickTables>>(
        &mut self,
        payload: &[u8],
        now: u64,
        tables: impl FnOnce() -> G,
    ) -> Result<(), Rejection> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        self.counters.frames_received += 1;
        self.counters.bytes_received += payload.len() as u64 + 4;
        match link.session.open(payload, now)? {
            Message::Repl(ReplMsg::AdminStates { entries }) => {
                self.merge_admin_states(entries);
                Ok(())
            }
            Message::Repl(m) => {
                let mut tables = tables();
                self.replicator
                    .on_message(m, &mut tables, now)
                    .map_err(|e| Rejection::new(RejectReason::UnexpectedMessage, e.0))
            }
            Message::Config(m) => {
                let actions = self.config.on_message(m);
                self.handle_config_actions(actions);
                self.publish_pending = true;
                Ok(())
            }
        }
    }

    /// The timer of [`Self::next_timeout`] fired: the next polling tick, and the silence check.
    pub fn on_timer(&mut self, now: u64) -> Result<(), Rejection> {
        let interval = self.batch_interval_ms();
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        if now >= link.next_tick {
            // A fixed schedule, as tokio's interval keeps: the next tick follows the one planned, not the moment the
            // timer ran, so a driver that sleeps in whole milliseconds (and wakes late by up to one) does not stretch
            // the period from 2 ms to 3; a tick missed by a whole period is skipped, not repaid in a burst.
            let planned = link.next_tick + interval;
            link.next_tick = if planned > now {
                planned
            } else {
                now + interval
            };
        }
        link.session.check_silence(now)
    }

    /// This node became active (serves clients) or standby.
    pub fn set_active(&mut self, active: bool, tables: &StickTables) {
        self.replicator.set_active(active, tables);
    }

    /// The heartbeat says the peer runs a newer release (why), or no longer: the config push is
    /// held meanwhile (`ConfigPush::set_heartbeat_hold`).
    pub fn set_config_hold(&mut self, hold: Option<String>) {
        let actions = self.config.set_heartbeat_hold(hold);
        self.handle_config_actions(actions);
        self.publish_pending = true;
    }

    /// A new local `cluster.toml` was accepted: the primary offers it.
    pub fn set_local_config(&mut self, local: LocalConfig) {
        let actions = self.config.set_local(local);
        self.handle_config_actions(actions);
        self.publish_pending = true;
    }

    /// Whether to publish the status now: something visible changed, or the publish period
    /// ([`PUBLISH_MS`] in a session, [`IDLE_PUBLISH_MS`] while waiting for the peer) passed.
    pub fn publish_due(&mut self, now: u64) -> bool {
        let period = if self.link.is_some() {
            PUBLISH_MS
        } else if self.dials {
            // The dialer publishes on every attempt's outcome, not on a period.
            u64::MAX
        } else {
            IDLE_PUBLISH_MS
        };
        let periodic = now.saturating_sub(self.last_publish) >= period;
        if periodic {
            self.last_publish = now;
        }
        std::mem::take(&mut self.publish_pending) || periodic
    }

    /// Queues the admin states changed since the last look (all of them on a new session), in
    /// messages of at most `max_message_bytes`. Runs on every frame request: the polling tick
    /// (`batch_interval`) bounds how long an operator's change waits.
    fn queue_admin_changes(&mut self) {
        let (Some(shared), Some(link)) = (&self.settings.admin_states, self.link.as_mut()) else {
            return;
        };
        let (changes, revision) = {
            let states = shared.lock();
            if states.revision() <= link.admin_sent {
                return;
            }
            (states.changes_since(link.admin_sent), states.revision())
        };
        link.admin_sent = revision;
        if changes.is_empty() {
            return;
        }
        self.replicator.counters_mut().admin_entries_sent += changes.len() as u64;
        let max_bytes = self.settings.replication.max_message_bytes;
        for entries in admin_runs(changes, max_bytes) {
            link.outbox
                .push_back(Message::Repl(ReplMsg::AdminStates { entries }));
        }
    }

    /// The peer's admin states: merged (the daemon's hook applies and saves what changed).
    fn merge_admin_states(&mut self, entries: Vec<AdminEntry>) {
        let counters = self.replicator.counters_mut();
        let Some(shared) = &self.settings.admin_states else {
            counters.admin_entries_refused += entries.len() as u64;
            return;
        };
        let outcome = shared.merge_remote(entries);
        counters.admin_entries_applied += outcome.changed.len() as u64;
        counters.admin_entries_refused += outcome.refused as u64;
        if outcome.refused > 0 {
            warn!(
                peer = %self.peer,
                refused = outcome.refused,
                "admin states from the peer refused (bad labels or too many)"
            );
        }
        for entry in &outcome.changed {
            info!(
                service = %entry.service,
                server = %entry.server,
                state = entry.mode.as_str(),
                set_by = %entry.stamp.node,
                "admin state replicated from the peer"
            );
        }
        if !outcome.changed.is_empty() {
            self.publish_pending = true;
        }
    }

    fn batch_interval_ms(&self) -> u64 {
        // A zero interval would make the tick fire at once for ever.
        (self.settings.batch_interval.as_millis() as u64).max(1)
    }

    fn handle_config_actions(&mut self, actions: Vec<ConfigAction>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    ConfigAction::Send(m) => {
                        if let Some(link) = self.link.as_mut() {
                            link.outbox.push_back(Message::Config(m));
                        }
                    }
                    ConfigAction::Apply {
                        version,
                        bytes,
                        files,
                    } => {
                        let result =
                            self.sink
                                .offer(&bytes, &files, version.generation, &version.digest);
                        match &result {
                            Ok(()) => {
                                info!(generation = version.generation, digest = %version.digest, "applied cluster.toml pushed by the primary")
                            }
                            Err(reason) => {
                                warn!(generation = version.generation, %reason, "refused cluster.toml pushed by the primary")
                            }
                        }
                        next.extend(self.config.offer_result(version, bytes, files, result));
                    }
                }
            }
            queue = next;
        }
    }

    /// The status as of `now`.
    pub fn status(&self, now: u64, tables: &StickTables, rejects: &RejectCounters) -> SyncStatus {
        let resyncing = self.replicator.resyncing_tables();
        let mut tables_status: Vec<TableSyncStatus> = tables
            .iter()
            .map(|(label, t)| TableSyncStatus {
                label: label.to_string(),
                local_entries: t.len() as u64,
                peer_entries: self.replicator.peer_sizes().get(label).copied(),
                resyncing: resyncing.iter().any(|l| l == label),
            })
            .collect();
        tables_status.sort_by(|a, b| a.label.cmp(&b.label));
        let state = self.config.state();
        let mut counters = self.counters.clone();
        counters.rejected = rejects.by_name().map(|(n, c)| (n.to_string(), c)).collect();
        counters.replication = self.replicator.counters().clone();
        SyncStatus {
            connected: self.link.is_some(),
            direction: if self.dials { "dial" } else { "accept" }.to_string(),
            peer: self.peer.clone(),
            protocol_version: self.link.as_ref().map(|l| l.session.version()),
            tables: tables_status,
            last_ack_age_ms: self.replicator.last_ack_ms().map(|t| now.saturating_sub(t)),
            caught_up: self.replicator.caught_up(tables),
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
            // The socket's figure: the driver's to fill.
            rtt_us: None,
        }
    }
}

/// Splits admin entries into runs whose labels add up to at most `max_bytes` (each at least one
/// entry; an entry's labels are bounded by `MAX_LABEL_BYTES`).
fn admin_runs(entries: Vec<AdminEntry>, max_bytes: usize) -> Vec<Vec<AdminEntry>> {
    split_by_bytes(entries, max_bytes, |entry| {
        24 + entry.service.len() + entry.server.len() + entry.stamp.node.len()
    })
}

#[cfg(test)]
mod tests;
