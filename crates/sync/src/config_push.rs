//! `cluster.toml` push from the primary to the secondary, sans-IO.
//!
//! Both sides announce what they run ([`ConfigMsg::Running`]) when the session opens. The
//! primary offers its `cluster.toml` bytes with generation and digest on every session start and
//! after every accepted reload; the secondary hands the offer to the daemon's [`ConfigSink`]
//! (validate with `tandem check`'s code, write atomically, apply live) and answers `Ack` or
//! `Refused(reason)`. `node.toml` and the secret have no message at all: they cannot be sent.
//!
//! During a rolling upgrade the primary does not push to a peer that runs a newer release (it
//! offered a newer sync protocol version, or its heartbeats are in a wire version this node cannot
//! read): the newer node may read `cluster.toml` differently, and the upgrade is the moment to
//! leave the configuration alone. The push resumes by itself once the peer's release is not newer;
//! the status says why it is held.

use serde::{Deserialize, Serialize};

/// Which way `cluster.toml` flows is the node's configured role: the primary pushes, the secondary receives.
pub use tandem_types::Role as ConfigRole;

/// Identity of one accepted `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub generation: u64,
    /// SHA-256 of the file, as the config crate prints it (opaque here).
    pub digest: String,
}

/// The `cluster.toml` a node runs: its bytes and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub bytes: Vec<u8>,
    pub version: ConfigVersion,
}

/// Implemented by the daemon: validate a pushed `cluster.toml` with `tandem check`'s code, write
/// it atomically (previous kept as `cluster.toml.prev`) and apply it live. Returns the reason
/// of a refusal; the node then keeps running its current configuration.
pub trait ConfigSink: Send {
    fn offer(&mut self, bytes: &[u8], generation: u64, digest: &str) -> Result<(), String>;
}

/// Config messages on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigMsg {
    /// What the sender runs now, and its role.
    Running {
        role: ConfigRole,
        version: Option<ConfigVersion>,
    },
    /// The primary's `cluster.toml`.
    Offer {
        version: ConfigVersion,
        bytes: Vec<u8>,
    },
    /// The offer was validated, written and applied.
    Ack { version: ConfigVersion },
    /// The offer was refused; the sender keeps its current configuration.
    Refused {
        version: ConfigVersion,
        reason: String,
    },
}

/// Whether both nodes run the same `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ConfigSyncState {
    InSync,
    OutOfSync(String),
}

impl ConfigSyncState {
    pub fn in_sync(&self) -> bool {
        matches!(self, Self::InSync)
    }
}

/// What the config side asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAction {
    /// Send this message to the peer.
    Send(ConfigMsg),
    /// Hand this offer to the [`ConfigSink`] and report with [`ConfigPush::offer_result`].
    Apply {
        version: ConfigVersion,
        bytes: Vec<u8>,
    },
}

/// The config push state of one node, kept across sessions.
#[derive(Debug, Clone)]
pub struct ConfigPush {
    role: ConfigRole,
    local: Option<LocalConfig>,
    peer_role: Option<ConfigRole>,
    peer_version: Option<ConfigVersion>,
    connected: bool,
    /// Last refusal of the current local/offered generation, either direction.
    refusal: Option<String>,
    /// Offer handed to the sink and not yet answered.
    applying: Option<ConfigVersion>,
    /// Why the push is held because the peer runs a newer release: from the sync session's version
    /// offer, and from the heartbeat.
    hold_session: Option<String>,
    hold_heartbeat: Option<String>,
}

impl ConfigPush {
    pub fn new(role: ConfigRole, local: Option<LocalConfig>) -> Self {
        Self {
            role,
            local,
            peer_role: None,
            peer_version: None,
            connected: false,
            refusal: None,
            applying: None,
            hold_session: None,
            hold_heartbeat: None,
        }
    }

    /// The session opened with these newest protocol versions offered (ours, the peer's): a peer
    /// offering a newer one runs a newer release, and the push is held while it does. Call before
    /// [`ConfigPush::on_session_open`].
    pub fn set_peer_protocol(&mut self, ours: u16, theirs: u16) {
        let hold = (theirs > ours).then(|| {
            format!(
                "the peer runs a newer release (sync protocol {theirs}, this node {ours}): upgrade this node first"
            )
        });
        self.set_hold(HoldSource::Session, hold);
    }

    /// The heartbeat says the peer runs a newer release (`Some(why)`), or no longer (`None`). A
    /// release of the hold offers the file at once if connected.
    pub fn set_heartbeat_hold(&mut self, hold: Option<String>) -> Vec<ConfigAction> {
        let was_held = self.hold().is_some();
        self.set_hold(HoldSource::Heartbeat, hold);
        if was_held && self.hold().is_none() && self.connected {
            return self.offer().into_iter().collect();
        }
        Vec::new()
    }

    fn set_hold(&mut self, source: HoldSource, hold: Option<String>) {
        let before = self.hold().map(str::to_owned);
        match source {
            HoldSource::Session => self.hold_session = hold,
            HoldSource::Heartbeat => self.hold_heartbeat = hold,
        }
        // Logged when the overall verdict changes (one source may clear while the other still holds).
        match (before, self.hold()) {
            (None, Some(why)) => tracing::warn!(%why, "cluster.toml push to the peer held"),
            (Some(_), None) => tracing::info!("cluster.toml push to the peer resumed"),
            _ => {}
        }
    }

    /// Why the primary does not push now (the peer runs a newer release), if it does not.
    pub fn hold(&self) -> Option<&str> {
        if self.role != ConfigRole::Primary {
            return None;
        }
        self.hold_session
            .as_deref()
            .or(self.hold_heartbeat.as_deref())
    }

    pub fn role(&self) -> ConfigRole {
        self.role
    }

    pub fn local_version(&self) -> Option<&ConfigVersion> {
        self.local.as_ref().map(|l| &l.version)
    }

    pub fn peer_version(&self) -> Option<&ConfigVersion> {
        self.peer_version.as_ref()
    }

    /// A session opened: announce what we run; the primary offers its file.
    pub fn on_session_open(&mut self) -> Vec<ConfigAction> {
        self.connected = true;
        self.peer_role = None;
        self.applying = None;
        let mut out = vec![ConfigAction::Send(ConfigMsg::Running {
            role: self.role,
            version: self.local_version().cloned(),
        })];
        out.extend(self.offer());
        out
    }

    /// The session closed; what we know of the peer stays as last heard.
    pub fn on_session_closed(&mut self) {
        self.connected = false;
        self.applying = None;
    }

    /// The daemon accepted a new local `cluster.toml` (start-up, reload, or an applied push).
    pub fn set_local(&mut self, local: LocalConfig) -> Vec<ConfigAction> {
        if self.local.as_ref() == Some(&local) {
            return Vec::new();
        }
        self.local = Some(local);
        self.refusal = None;
        if !self.connected {
            return Vec::new();
        }
        let mut out = vec![ConfigAction::Send(ConfigMsg::Running {
            role: self.role,
            version: self.local_version().cloned(),
        })];
        out.extend(self.offer());
        out
    }

    fn offer(&self) -> Option<ConfigAction> {
        if self.role != ConfigRole::Primary || self.hold().is_some() {
            return None;
        }
        let local = self.local.as_ref()?;
        Some(ConfigAction::Send(ConfigMsg::Offer {
            version: local.version.clone(),
            bytes: local.bytes.clone(),
        }))
    }

    /// A config message from the authenticated peer.
    pub fn on_message(&mut self, message: ConfigMsg) -> Vec<ConfigAction> {
        match message {
            ConfigMsg::Running { role, version } => {
                self.peer_role = Some(role);
                self.peer_version = version;
                Vec::new()
            }
            ConfigMsg::Offer { version, bytes } => self.on_offer(version, bytes),
            ConfigMsg::Ack { version } => {
                self.peer_version = Some(version);
                self.refusal = None;
                Vec::new()
            }
            ConfigMsg::Refused { version, reason } => {
                self.refusal = Some(format!(
                    "peer refused generation {} ({}): {reason}",
                    version.generation,
                    short(&version.digest)
                ));
                Vec::new()
            }
        }
    }

    fn on_offer(&mut self, version: ConfigVersion, bytes: Vec<u8>) -> Vec<ConfigAction> {
        self.peer_role = Some(ConfigRole::Primary);
        if self.role == ConfigRole::Primary {
            let reason =
                "both nodes are configured as primary; set role = \"secondary\" in one node.toml"
                    .to_string();
            self.refusal = Some(reason.clone());
            return vec![ConfigAction::Send(ConfigMsg::Refused { version, reason })];
        }
        if self.local_version() == Some(&version) {
            // Already running it (typically a reconnect): nothing to apply.
            self.peer_version = Some(version.clone());
            self.refusal = None;
            return vec![ConfigAction::Send(ConfigMsg::Ack { version })];
        }
        self.peer_version = Some(version.clone());
        self.applying = Some(version.clone());
        vec![ConfigAction::Apply { version, bytes }]
    }

    /// The sink's answer to an [`ConfigAction::Apply`].
    pub fn offer_result(
        &mut self,
        version: ConfigVersion,
        bytes: Vec<u8>,
        result: Result<(), String>,
    ) -> Vec<ConfigAction> {
        if self.applying.as_ref() == Some(&version) {
            self.applying = None;
        }
        let reply = match result {
            Ok(()) => {
                self.local = Some(LocalConfig {
                    bytes,
                    version: version.clone(),
                });
                self.refusal = None;
                ConfigMsg::Ack { version }
            }
            Err(reason) => {
                self.refusal = Some(format!(
                    "refused generation {} ({}) from the primary: {reason}",
                    version.generation,
                    short(&version.digest)
                ));
                ConfigMsg::Refused { version, reason }
            }
        };
        if self.connected {
            vec![ConfigAction::Send(reply)]
        } else {
            Vec::new()
        }
    }

    /// In sync when both nodes are known to run the same digest.
    pub fn state(&self) -> ConfigSyncState {
        if let Some(reason) = &self.refusal {
            return ConfigSyncState::OutOfSync(reason.clone());
        }
        match (self.local_version(), &self.peer_version) {
            (Some(local), Some(peer)) if local.digest == peer.digest => ConfigSyncState::InSync,
            (_, None) => {
                ConfigSyncState::OutOfSync("peer configuration unknown (never connected)".into())
            }
            (None, Some(_)) => ConfigSyncState::OutOfSync("no local configuration".into()),
            (Some(local), Some(peer)) => {
                let held;
                let waiting = if let Some(why) = self.hold() {
                    held = format!(" (push held: {why})");
                    held.as_str()
                } else if self.role == ConfigRole::Primary && self.connected {
                    " (push pending)"
                } else if self.peer_role == Some(self.role) {
                    " (neither node is primary)"
                } else {
                    ""
                };
                ConfigSyncState::OutOfSync(format!(
                    "this node runs generation {} ({}), the peer runs generation {} ({}){waiting}",
                    local.generation,
                    short(&local.digest),
                    peer.generation,
                    short(&peer.digest)
                ))
            }
        }
    }
}

/// Where a hold of the push comes from.
#[derive(Clone, Copy)]
enum HoldSource {
    Session,
    Heartbeat,
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(generation: u64, text: &str) -> LocalConfig {
        LocalConfig {
            bytes: text.as_bytes().to_vec(),
            version: ConfigVersion {
                generation,
                digest: format!("digest-of-{text}"),
            },
        }
    }

    /// Delivers every Send to the other side and applies Apply with `sink`.
    fn exchange(
        from: &mut ConfigPush,
        to: &mut ConfigPush,
        actions: Vec<ConfigAction>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) {
        let mut queue: Vec<(bool, ConfigAction)> = actions.into_iter().map(|a| (true, a)).collect();
        while let Some((from_first, action)) = queue.pop() {
            let (sender, receiver) = if from_first {
                (&mut *from, &mut *to)
            } else {
                (&mut *to, &mut *from)
            };
            match action {
                ConfigAction::Send(msg) => {
                    for a in receiver.on_message(msg) {
                        queue.push((!from_first, a));
                    }
                }
                ConfigAction::Apply { version, bytes } => {
                    let result = sink(&bytes);
                    for a in sender.offer_result(version, bytes, result) {
                        queue.push((from_first, a));
                    }
                }
            }
        }
    }

    #[test]
    fn push_on_connect_and_after_reload_accepted_and_refused() {
        let mut primary = ConfigPush::new(ConfigRole::Primary, Some(local(3, "a")));
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(2, "old")));
        let mut accept = |_: &[u8]| Ok(());
        let open = primary.on_session_open();
        let open2 = secondary.on_session_open();
        exchange(&mut secondary, &mut primary, open2, &mut accept);
        exchange(&mut primary, &mut secondary, open, &mut accept);
        assert_eq!(primary.state(), ConfigSyncState::InSync);
        assert_eq!(secondary.state(), ConfigSyncState::InSync);
        assert_eq!(secondary.local_version(), Some(&local(3, "a").version));

        let mut refuse = |_: &[u8]| Err("service x: unknown mode".to_string());
        let actions = primary.set_local(local(4, "bad"));
        exchange(&mut primary, &mut secondary, actions, &mut refuse);
        let ConfigSyncState::OutOfSync(reason) = primary.state() else {
            panic!()
        };
        assert!(reason.contains("unknown mode"), "{reason}");
        assert!(!secondary.state().in_sync());
        assert_eq!(secondary.local_version().unwrap().generation, 3);

        let actions = primary.set_local(local(5, "good"));
        exchange(&mut primary, &mut secondary, actions, &mut accept);
        assert!(primary.state().in_sync() && secondary.state().in_sync());
    }

    #[test]
    fn reconnect_with_same_config_acks_without_applying() {
        let mut primary = ConfigPush::new(ConfigRole::Primary, Some(local(3, "a")));
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(3, "a")));
        let mut never = |_: &[u8]| -> Result<(), String> { panic!("must not re-apply") };
        let open = primary.on_session_open();
        secondary.on_session_open();
        exchange(&mut primary, &mut secondary, open, &mut never);
        assert!(primary.state().in_sync());
    }

    #[test]
    fn two_primaries_are_reported() {
        let mut a = ConfigPush::new(ConfigRole::Primary, Some(local(3, "a")));
        let mut b = ConfigPush::new(ConfigRole::Primary, Some(local(3, "b")));
        let mut accept = |_: &[u8]| Ok(());
        let open = a.on_session_open();
        b.on_session_open();
        exchange(&mut a, &mut b, open, &mut accept);
        let ConfigSyncState::OutOfSync(reason) = b.state() else {
            panic!()
        };
        assert!(reason.contains("both nodes"));
    }

    fn offers(actions: &[ConfigAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, ConfigAction::Send(ConfigMsg::Offer { .. })))
            .count()
    }

    /// A rolling upgrade: the secondary runs the next release (it offered a newer protocol). The
    /// primary announces what it runs but pushes nothing, says why, and pushes the waiting change
    /// once the peer's release is no longer newer; an older or equal peer is pushed to as ever.
    #[test]
    fn no_push_to_a_peer_of_a_newer_release() {
        let mut primary = ConfigPush::new(ConfigRole::Primary, Some(local(3, "a")));
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(3, "a")));
        primary.set_peer_protocol(2, 3);
        assert!(primary.hold().unwrap().contains("newer release"));
        let open = primary.on_session_open();
        assert_eq!(offers(&open), 0);
        assert!(
            open.iter()
                .any(|a| matches!(a, ConfigAction::Send(ConfigMsg::Running { .. })))
        );
        let mut never = |_: &[u8]| -> Result<(), String> { panic!("nothing is pushed") };
        let open2 = secondary.on_session_open();
        exchange(&mut secondary, &mut primary, open2, &mut never);
        exchange(&mut primary, &mut secondary, open, &mut never);
        assert!(primary.state().in_sync(), "same file: nothing to push");
        // A reload on the primary meanwhile: not pushed, and the status says why.
        let actions = primary.set_local(local(4, "b"));
        assert_eq!(offers(&actions), 0);
        exchange(&mut primary, &mut secondary, actions, &mut never);
        let ConfigSyncState::OutOfSync(reason) = primary.state() else {
            panic!()
        };
        assert!(
            reason.contains("push held: the peer runs a newer release"),
            "{reason}"
        );
        // The heartbeat hold alone holds too; releasing both pushes the waiting file.
        assert!(
            primary
                .set_heartbeat_hold(Some("heartbeat v2".into()))
                .is_empty()
        );
        primary.set_peer_protocol(3, 3);
        assert_eq!(primary.hold(), Some("heartbeat v2"));
        let actions = primary.set_heartbeat_hold(None);
        assert_eq!(offers(&actions), 1);
        let mut accept = |_: &[u8]| Ok(());
        exchange(&mut primary, &mut secondary, actions, &mut accept);
        assert!(primary.state().in_sync() && secondary.state().in_sync());
        // An older peer is pushed to; a secondary never pushes, so never holds.
        primary.set_peer_protocol(3, 2);
        assert_eq!(primary.hold(), None);
        secondary.set_peer_protocol(2, 3);
        assert_eq!(secondary.hold(), None);
    }
}
