//! `cluster.toml` push from the primary to the secondary, sans-IO.
//!
//! Both sides announce what they run ([`ConfigMsg::Running`]) when the session opens. The
//! primary offers its `cluster.toml` bytes with generation and digest on every session start and
//! after every accepted reload, with the files it names (the TLS services' certificates, by the names
//! written in `cluster.toml`: [`ConfigMsg::OfferWithFiles`], from protocol version
//! [`FILES_PROTOCOL_VERSION`]); the secondary checks the files' names and sizes ([`check_files`]), hands
//! the offer to the daemon's [`ConfigSink`] (validate with `tandem check`'s code, write the whole set
//! atomically, apply live) and answers `Ack` or `Refused(reason)`. `node.toml` and the secret have no
//! message at all: they cannot be sent.
//!
//! A peer whose release predates the files (the session speaks an older protocol) still gets
//! `cluster.toml` alone while it names no file; a configuration with certificates is not pushed to it, and
//! the status says why (upgrade the peer).
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

/// The first sync protocol version whose config push carries files ([`ConfigMsg::OfferWithFiles`]).
pub const FILES_PROTOCOL_VERSION: u16 = 3;
/// Most files one push carries.
pub const MAX_CONFIG_FILES: usize = 64;
/// Largest file a push carries (a certificate chain and key are a few KiB).
pub const MAX_CONFIG_FILE_BYTES: usize = 1 << 20;
/// Longest file name (a path relative to the config directory).
pub const MAX_CONFIG_FILE_NAME: usize = 255;
/// Room left in a frame beside the offer's bytes (version, names, lengths, sealing).
const OFFER_OVERHEAD: usize = 16 * 1024;

/// A file `cluster.toml` names (a TLS certificate), pushed with it: the name as written there (a plain
/// relative path), and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The `cluster.toml` a node runs: its bytes, the files it names, and its identity (the digest covers the
/// files: it holds their SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub bytes: Vec<u8>,
    pub files: Vec<ConfigFile>,
    pub version: ConfigVersion,
}

/// Implemented by the daemon: validate a pushed `cluster.toml` and its files with `tandem check`'s code,
/// write the set atomically (previous kept as `cluster.toml.prev`) and apply it live. Returns the reason
/// of a refusal; the node then keeps running its current configuration. The files' names and sizes are
/// already checked ([`check_files`]).
pub trait ConfigSink: Send {
    fn offer(
        &mut self,
        bytes: &[u8],
        files: &[ConfigFile],
        generation: u64,
        digest: &str,
    ) -> Result<(), String>;
}

/// Whether a set of pushed files may be written under the config directory: at most
/// [`MAX_CONFIG_FILES`], each at most [`MAX_CONFIG_FILE_BYTES`], each name once, and every name a plain
/// relative path (`horizon.pem`, `certs/keystone.pem`): no absolute path, no `.` or `..` component, no empty
/// component, no backslash or control character. A peer cannot name a file outside the directory.
pub fn check_files(files: &[ConfigFile]) -> Result<(), String> {
    if files.len() > MAX_CONFIG_FILES {
        return Err(format!(
            "{} files, more than the {MAX_CONFIG_FILES} a push may carry",
            files.len()
        ));
    }
    for (i, file) in files.iter().enumerate() {
        check_file_name(&file.name)?;
        if file.bytes.len() > MAX_CONFIG_FILE_BYTES {
            return Err(format!(
                "file \"{}\" is {} bytes, more than the {MAX_CONFIG_FILE_BYTES} a pushed file may be",
                file.name,
                file.bytes.len()
            ));
        }
        if files[..i].iter().any(|f| f.name == file.name) {
            return Err(format!("file \"{}\" is pushed twice", file.name));
        }
    }
    Ok(())
}

/// A plain relative path: see [`check_files`].
pub fn check_file_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("file name {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_CONFIG_FILE_NAME {
        return bad(&format!("must be 1 to {MAX_CONFIG_FILE_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return bad("holds a control character or a backslash");
    }
    if name.starts_with('/') {
        return bad("is absolute: only paths relative to cluster.toml's directory are pushed");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("has an empty, `.` or `..` component");
    }
    Ok(())
}

fn offer_size(bytes: &[u8], files: &[ConfigFile]) -> usize {
    bytes.len()
        + files
            .iter()
            .map(|f| f.bytes.len() + f.name.len() + 16)
            .sum::<usize>()
}

/// Config messages on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigMsg {
    /// What the sender runs now, and its role.
    Running {
        role: ConfigRole,
        version: Option<ConfigVersion>,
    },
    /// The primary's `cluster.toml` (it names no file, or the session predates files).
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
    /// The primary's `cluster.toml` with the files it names (protocol [`FILES_PROTOCOL_VERSION`] on; last,
    /// so the variants before it keep their places on the wire for older peers).
    OfferWithFiles {
        version: ConfigVersion,
        bytes: Vec<u8>,
        files: Vec<ConfigFile>,
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
        files: Vec<ConfigFile>,
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
    /// The session's protocol version (files travel from [`FILES_PROTOCOL_VERSION`] on).
    session_version: u16,
    /// Largest offer that fits one frame.
    max_offer_bytes: usize,
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
            session_version: FILES_PROTOCOL_VERSION,
            max_offer_bytes: crate::wire::DEFAULT_MAX_FRAME - OFFER_OVERHEAD,
        }
    }

    /// The largest frame the session sends: an offer must fit in one.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_offer_bytes = max_frame.saturating_sub(OFFER_OVERHEAD);
    }

    /// Why the local configuration cannot be offered on this session, if it cannot: it names files the
    /// peer's release cannot receive, names a file that cannot be pushed, or does not fit a frame.
    pub fn cannot_offer(&self) -> Option<String> {
        if self.role != ConfigRole::Primary {
            return None;
        }
        let local = self.local.as_ref()?;
        if !local.files.is_empty() && self.session_version < FILES_PROTOCOL_VERSION {
            return Some(format!(
                "this configuration has {} certificate file(s) and the peer's release (sync protocol {}) cannot \
                 receive files (protocol {FILES_PROTOCOL_VERSION} or later): upgrade the peer",
                local.files.len(),
                self.session_version
            ));
        }
        if let Err(reason) = check_files(&local.files) {
            return Some(format!("cannot push this configuration: {reason}"));
        }
        let size = offer_size(&local.bytes, &local.files);
        if size > self.max_offer_bytes {
            return Some(format!(
                "cluster.toml and its files are {size} bytes, more than one sync frame carries ({})",
                self.max_offer_bytes
            ));
        }
        None
    }

    /// The session opened with these newest protocol versions offered (ours, the peer's): a peer
    /// offering a newer one runs a newer release, and the push is held while it does. Call before
    /// [`ConfigPush::on_session_open`].
    pub fn set_peer_protocol(&mut self, ours: u16, theirs: u16) {
        self.session_version = ours.min(theirs);
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
        if let Some(why) = self.cannot_offer() {
            tracing::warn!(%why, "cluster.toml not pushed to the peer");
            return None;
        }
        let local = self.local.as_ref()?;
        let version = local.version.clone();
        let bytes = local.bytes.clone();
        // An older peer reads only `Offer`, which is all a configuration without files needs.
        Some(ConfigAction::Send(
            if self.session_version >= FILES_PROTOCOL_VERSION {
                ConfigMsg::OfferWithFiles {
                    version,
                    bytes,
                    files: local.files.clone(),
                }
            } else {
                ConfigMsg::Offer { version, bytes }
            },
        ))
    }

    /// A config message from the authenticated peer.
    pub fn on_message(&mut self, message: ConfigMsg) -> Vec<ConfigAction> {
        match message {
            ConfigMsg::Running { role, version } => {
                self.peer_role = Some(role);
                self.peer_version = version;
                Vec::new()
            }
            ConfigMsg::Offer { version, bytes } => self.on_offer(version, bytes, Vec::new()),
            ConfigMsg::OfferWithFiles {
                version,
                bytes,
                files,
            } => self.on_offer(version, bytes, files),
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

    fn on_offer(
        &mut self,
        version: ConfigVersion,
        bytes: Vec<u8>,
        files: Vec<ConfigFile>,
    ) -> Vec<ConfigAction> {
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
        if let Err(reason) = check_files(&files) {
            self.refusal = Some(format!(
                "refused generation {} ({}) from the primary: {reason}",
                version.generation,
                short(&version.digest)
            ));
            return vec![ConfigAction::Send(ConfigMsg::Refused { version, reason })];
        }
        self.applying = Some(version.clone());
        vec![ConfigAction::Apply {
            version,
            bytes,
            files,
        }]
    }

    /// The sink's answer to an [`ConfigAction::Apply`].
    pub fn offer_result(
        &mut self,
        version: ConfigVersion,
        bytes: Vec<u8>,
        files: Vec<ConfigFile>,
        result: Result<(), String>,
    ) -> Vec<ConfigAction> {
        if self.applying.as_ref() == Some(&version) {
            self.applying = None;
        }
        let reply = match result {
            Ok(()) => {
                self.local = Some(LocalConfig {
                    bytes,
                    files,
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
                } else if let Some(why) = self.cannot_offer() {
                    held = format!(" (not pushed: {why})");
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
            files: Vec::new(),
            version: ConfigVersion {
                generation,
                digest: format!("digest-of-{text}"),
            },
        }
    }

    type Sink<'a> = dyn FnMut(&[u8], &[ConfigFile]) -> Result<(), String> + 'a;

    /// Delivers every Send to the other side and applies Apply with `sink`.
    fn exchange(
        from: &mut ConfigPush,
        to: &mut ConfigPush,
        actions: Vec<ConfigAction>,
        sink: &mut Sink<'_>,
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
                ConfigAction::Apply {
                    version,
                    bytes,
                    files,
                } => {
                    let result = sink(&bytes, &files);
                    for a in sender.offer_result(version, bytes, files, result) {
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
        let mut accept = |_: &[u8], _: &[ConfigFile]| Ok(());
        let open = primary.on_session_open();
        let open2 = secondary.on_session_open();
        exchange(&mut secondary, &mut primary, open2, &mut accept);
        exchange(&mut primary, &mut secondary, open, &mut accept);
        assert_eq!(primary.state(), ConfigSyncState::InSync);
        assert_eq!(secondary.state(), ConfigSyncState::InSync);
        assert_eq!(secondary.local_version(), Some(&local(3, "a").version));

        let mut refuse = |_: &[u8], _: &[ConfigFile]| Err("service x: unknown mode".to_string());
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
        let mut never =
            |_: &[u8], _: &[ConfigFile]| -> Result<(), String> { panic!("must not re-apply") };
        let open = primary.on_session_open();
        secondary.on_session_open();
        exchange(&mut primary, &mut secondary, open, &mut never);
        assert!(primary.state().in_sync());
    }

    #[test]
    fn two_primaries_are_reported() {
        let mut a = ConfigPush::new(ConfigRole::Primary, Some(local(3, "a")));
        let mut b = ConfigPush::new(ConfigRole::Primary, Some(local(3, "b")));
        let mut accept = |_: &[u8], _: &[ConfigFile]| Ok(());
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
            .filter(|a| {
                matches!(
                    a,
                    ConfigAction::Send(ConfigMsg::Offer { .. } | ConfigMsg::OfferWithFiles { .. })
                )
            })
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
        let mut never =
            |_: &[u8], _: &[ConfigFile]| -> Result<(), String> { panic!("nothing is pushed") };
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
        let mut accept = |_: &[u8], _: &[ConfigFile]| Ok(());
        exchange(&mut primary, &mut secondary, actions, &mut accept);
        assert!(primary.state().in_sync() && secondary.state().in_sync());
        // An older peer is pushed to; a secondary never pushes, so never holds.
        primary.set_peer_protocol(3, 2);
        assert_eq!(primary.hold(), None);
        secondary.set_peer_protocol(2, 3);
        assert_eq!(secondary.hold(), None);
    }

    fn with_files(generation: u64, files: &[(&str, &str)]) -> LocalConfig {
        let mut l = local(generation, &format!("tls {generation}"));
        l.files = files
            .iter()
            .map(|(name, text)| ConfigFile {
                name: name.to_string(),
                bytes: text.as_bytes().to_vec(),
            })
            .collect();
        l
    }

    fn offered(actions: &[ConfigAction]) -> Vec<&ConfigMsg> {
        actions
            .iter()
            .filter_map(|a| match a {
                ConfigAction::Send(
                    m @ (ConfigMsg::Offer { .. } | ConfigMsg::OfferWithFiles { .. }),
                ) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Files travel with cluster.toml; the sink gets them with the bytes, and the secondary runs them after.
    #[test]
    fn the_files_travel_with_the_config() {
        let mut primary =
            ConfigPush::new(ConfigRole::Primary, Some(with_files(3, &[("a.pem", "A")])));
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(2, "old")));
        primary.set_peer_protocol(FILES_PROTOCOL_VERSION, FILES_PROTOCOL_VERSION);
        secondary.set_peer_protocol(FILES_PROTOCOL_VERSION, FILES_PROTOCOL_VERSION);
        let mut seen: Vec<Vec<ConfigFile>> = Vec::new();
        let mut accept = |_: &[u8], files: &[ConfigFile]| {
            seen.push(files.to_vec());
            Ok(())
        };
        let open = primary.on_session_open();
        assert!(matches!(
            offered(&open)[..],
            [ConfigMsg::OfferWithFiles { .. }]
        ));
        secondary.on_session_open();
        exchange(&mut primary, &mut secondary, open, &mut accept);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0][0].name, "a.pem");
        assert_eq!(seen[0][0].bytes, b"A");
        assert!(primary.state().in_sync() && secondary.state().in_sync());
        assert_eq!(secondary.local.as_ref().unwrap().files, seen[0]);
    }

    /// A peer of the release before files (protocol 2): a config without files is pushed as before (a plain
    /// `Offer`, which that release reads); one with files is not pushed, and the status says why.
    #[test]
    fn an_older_peer_gets_no_files_and_the_status_says_why() {
        let old = FILES_PROTOCOL_VERSION - 1;
        let mut primary = ConfigPush::new(ConfigRole::Primary, Some(local(3, "plain")));
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(2, "old")));
        primary.set_peer_protocol(FILES_PROTOCOL_VERSION, old);
        let open = primary.on_session_open();
        assert!(matches!(offered(&open)[..], [ConfigMsg::Offer { .. }]));
        secondary.on_session_open();
        let mut accept = |_: &[u8], _: &[ConfigFile]| Ok(());
        exchange(&mut primary, &mut secondary, open, &mut accept);
        assert!(primary.state().in_sync());

        let actions = primary.set_local(with_files(4, &[("a.pem", "A")]));
        assert!(offered(&actions).is_empty());
        let mut never = |_: &[u8], _: &[ConfigFile]| -> Result<(), String> { panic!("not pushed") };
        exchange(&mut primary, &mut secondary, actions, &mut never);
        let ConfigSyncState::OutOfSync(reason) = primary.state() else {
            panic!()
        };
        assert!(
            reason.contains("not pushed: this configuration has 1 certificate file(s)")
                && reason.contains("upgrade the peer"),
            "{reason}"
        );
        // Once the peer is upgraded, the next session pushes it.
        primary.on_session_closed();
        primary.set_peer_protocol(FILES_PROTOCOL_VERSION, FILES_PROTOCOL_VERSION);
        let open = primary.on_session_open();
        assert_eq!(offered(&open).len(), 1);
    }

    #[test]
    fn file_names_stay_inside_the_config_directory() {
        for good in [
            "horizon.pem",
            "certs/keystone.pem",
            "a..b.pem",
            ".hidden.pem",
        ] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "certs/../../x.pem",
            "./a.pem",
            "certs//a.pem",
            "certs/",
            "a\\b.pem",
            "a\nb.pem",
            &"x".repeat(256),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        let file = |name: &str, len: usize| ConfigFile {
            name: name.into(),
            bytes: vec![b'x'; len],
        };
        assert!(check_files(&[file("a.pem", MAX_CONFIG_FILE_BYTES)]).is_ok());
        let big = check_files(&[file("a.pem", MAX_CONFIG_FILE_BYTES + 1)]).unwrap_err();
        assert!(big.contains("more than"), "{big}");
        let twice = check_files(&[file("a.pem", 1), file("a.pem", 1)]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let many: Vec<ConfigFile> = (0..=MAX_CONFIG_FILES)
            .map(|i| file(&format!("{i}.pem"), 1))
            .collect();
        assert!(check_files(&many).is_err());
    }

    /// A hostile or broken primary's offer naming a file outside the directory is refused before the sink
    /// sees it; the secondary keeps its configuration and says why.
    #[test]
    fn an_offer_with_a_bad_file_name_never_reaches_the_sink() {
        let mut secondary = ConfigPush::new(ConfigRole::Secondary, Some(local(2, "old")));
        secondary.on_session_open();
        let version = ConfigVersion {
            generation: 9,
            digest: "evil".into(),
        };
        let actions = secondary.on_message(ConfigMsg::OfferWithFiles {
            version: version.clone(),
            bytes: b"x".to_vec(),
            files: vec![ConfigFile {
                name: "../node.toml".into(),
                bytes: b"x".to_vec(),
            }],
        });
        assert!(matches!(
            &actions[..],
            [ConfigAction::Send(ConfigMsg::Refused { reason, .. })] if reason.contains("`..`")
        ));
        assert_eq!(secondary.local_version().unwrap().generation, 2);
        assert!(!secondary.state().in_sync());
    }

    /// An offer that cannot fit a frame is not sent (it would close the session for ever); the status says so.
    #[test]
    fn an_offer_larger_than_a_frame_is_held() {
        let big = "x".repeat(40_000);
        let mut primary =
            ConfigPush::new(ConfigRole::Primary, Some(with_files(3, &[("a.pem", &big)])));
        primary.set_max_frame(32 * 1024);
        primary.set_peer_protocol(FILES_PROTOCOL_VERSION, FILES_PROTOCOL_VERSION);
        assert!(offered(&primary.on_session_open()).is_empty());
        assert!(
            primary
                .cannot_offer()
                .unwrap()
                .contains("more than one sync frame carries")
        );
    }

    /// Every message, the new one included, survives the wire encoding; the older variants keep their
    /// places (a release before files decodes `Offer` and `Refused` as before).
    #[test]
    fn the_wire_places_of_the_older_messages_are_kept() {
        let version = ConfigVersion {
            generation: 1,
            digest: "d".into(),
        };
        let offer = crate::wire::encode(&ConfigMsg::Offer {
            version: version.clone(),
            bytes: vec![1],
        })
        .unwrap();
        assert_eq!(offer[0], 1, "Offer is the second variant");
        let with_files = ConfigMsg::OfferWithFiles {
            version,
            bytes: vec![1],
            files: vec![ConfigFile {
                name: "a.pem".into(),
                bytes: vec![2],
            }],
        };
        let bytes = crate::wire::encode(&with_files).unwrap();
        assert_eq!(
            bytes[0], 4,
            "OfferWithFiles comes after the four older variants"
        );
        assert_eq!(
            crate::wire::decode::<ConfigMsg>(&bytes).unwrap(),
            with_files
        );
    }
}
