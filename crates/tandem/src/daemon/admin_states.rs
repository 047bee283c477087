//! Admin states that persist and follow the cluster: the operators' Online / Drain / Halt per
//! server, kept in `<state_dir>/admin-states.json`, restored at start, and shared with the sync
//! session, which exchanges them with the peer (`tandem_sync::admin_states` decides who wins).
//!
//! Owns the file (written atomically: temporary file, fsync, rename, fsync of the directory, on
//! every change), the restore at start (entries of servers no longer configured are dropped with
//! a log line; an unreadable or corrupt file is reported, moved aside and ignored), an operator's
//! change (the proxy, then the map, then the file, before the CLI gets its answer) and a small
//! task that applies the peer's changes to the proxy and saves them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_config::{ClusterConfig, NodeConfig};
use tandem_proxy::{AdminState, Proxy};
use tandem_status as doc;
use tandem_sync::admin_states::{
    AdminEntry, AdminMode, AdminStates, HeldEntry, Origin, SharedAdminStates, wall_clock_ms,
};
use tokio::sync::Notify;

/// The file in `state_dir`.
pub const FILE_NAME: &str = "admin-states.json";
/// Version of the file's layout.
const FORMAT: u32 = 1;
/// How often the proxy is compared with the map even without news from the peer (a server a
/// reload added gets its recorded state within this time).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// The node that wrote it (informational: a file copied from the peer still restores).
    node: String,
    states: Vec<AdminEntry>,
}

/// The daemon's admin states: the map shared with the sync task, and its file.
pub struct DaemonAdminStates {
    shared: SharedAdminStates,
    file: PathBuf,
    /// Writers take it around snapshot and write, so the file always ends with the newest map.
    save_lock: Mutex<()>,
}

fn mode_of(state: AdminState) -> AdminMode {
    match state {
        AdminState::Online => AdminMode::Online,
        AdminState::Drain => AdminMode::Drain,
        AdminState::Halt { .. } => AdminMode::Halt,
    }
}

fn state_of(mode: AdminMode) -> AdminState {
    match mode {
        AdminMode::Online => AdminState::Online,
        AdminMode::Drain => AdminState::Drain,
        // A replicated or restored halt stops new connections; closing the existing ones was a
        // one-time action on the node where the operator pressed it.
        AdminMode::Halt => AdminState::Halt {
            close_existing: false,
        },
    }
}

fn configured(cluster: &ClusterConfig, service: &str, server: &str) -> bool {
    cluster
        .services
        .iter()
        .any(|s| s.label == service && s.servers.iter().any(|r| r.label == server))
}

/// Reads the file: `Ok(None)` when there is none.
fn read_file(file: &Path) -> Result<Option<StateFile>, String> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read it: {error}")),
    };
    let parsed: StateFile =
        serde_json::from_slice(&bytes).map_err(|error| format!("not a state file: {error}"))?;
    if parsed.format != FORMAT {
        return Err(format!(
            "format {} (this build reads {FORMAT})",
            parsed.format
        ));
    }
    Ok(Some(parsed))
}

impl DaemonAdminStates {
    /// Restores the states saved in `state_dir` into a fresh map and the proxy (just started:
    /// every server is still "not checked yet", so none has taken a connection), and starts the
    /// task that applies the peer's changes.
    pub fn restore(node: &NodeConfig, cluster: &ClusterConfig, proxy: &Proxy) -> Arc<Self> {
        let file = node.node.state_dir.join(FILE_NAME);
        let mut states = AdminStates::new(node.node.name.clone());
        let mut dropped = 0;
        match read_file(&file) {
            Ok(None) => {}
            Ok(Some(saved)) => {
                let (keep, gone): (Vec<_>, Vec<_>) = saved
                    .states
                    .into_iter()
                    .partition(|e| configured(cluster, &e.service, &e.server));
                for entry in &gone {
                    tracing::info!(
                        service = %entry.service,
                        server = %entry.server,
                        state = entry.mode.as_str(),
                        "saved admin state dropped: the server is no longer configured"
                    );
                }
                dropped = gone.len();
                let outcome = states.merge(keep, Origin::Restored);
                if outcome.refused > 0 {
                    tracing::warn!(
                        file = %file.display(),
                        refused = outcome.refused,
                        "saved admin states refused (bad labels or too many)"
                    );
                }
                for entry in &outcome.changed {
                    tracing::info!(
                        service = %entry.service,
                        server = %entry.server,
                        state = entry.mode.as_str(),
                        set_by = %entry.stamp.node,
                        "admin state restored from state_dir"
                    );
                }
            }
            Err(reason) => {
                let aside = file.with_extension("json.corrupt");
                let moved = std::fs::rename(&file, &aside).is_ok();
                tracing::error!(
                    file = %file.display(),
                    moved_to = %if moved { aside.display().to_string() } else { "-".into() },
                    "admin states file ignored ({reason}); every server starts online"
                );
            }
        }
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        let this = Arc::new(Self {
            shared: SharedAdminStates::new(states, move |_| wake.notify_one()),
            file,
            save_lock: Mutex::new(()),
        });
        this.apply_to(proxy);
        if dropped > 0 {
            this.save_logged();
        }
        tokio::spawn(this.clone().follow(proxy.clone(), notify));
        this
    }

    /// The handle the sync session gets.
    pub fn shared(&self) -> SharedAdminStates {
        self.shared.clone()
    }

    /// An operator pressed a button: the proxy first (an unknown server is refused and leaves
    /// nothing behind), then the map the peer is sent, then the file.
    pub fn set_by_operator(
        &self,
        proxy: &Proxy,
        service: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), SetError> {
        {
            let mut states = self.shared.lock();
            proxy
                .set_server_state(service, server, state)
                .map_err(|error| SetError::NotFound(error.to_string()))?;
            states.apply_local(service, server, mode_of(state), wall_clock_ms());
        }
        self.save().map_err(|error| {
            SetError::NotSaved(format!(
                "{service}/{server} changed but not saved to {}: {error} (it is lost if this \
                 node restarts before the peer has it)",
                self.file.display()
            ))
        })
    }

    /// Every entry with its origin, for the status document.
    pub fn held(&self) -> Vec<HeldEntry> {
        self.shared.lock().held()
    }

    /// Writes the whole map to the file.
    fn save(&self) -> std::io::Result<()> {
        let _writer = self
            .save_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (node, states) = {
            let states = self.shared.lock();
            (states.node().to_owned(), states.snapshot())
        };
        let file = StateFile {
            format: FORMAT,
            node,
            states,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        super::write_atomically(&self.file, &bytes)
    }

    fn save_logged(&self) {
        if let Err(error) = self.save() {
            tracing::error!(file = %self.file.display(), %error, "cannot save the admin states");
        }
    }

    /// Sets every server whose state differs from the map (the map holds what operators chose).
    fn apply_to(&self, proxy: &Proxy) {
        let states = self.shared.lock();
        if states.is_empty() {
            return;
        }
        for service in proxy.status().services {
            for server in &service.servers {
                let Some(held) = states.get(&service.label, &server.label) else {
                    continue;
                };
                if mode_of(server.admin_state) != held.entry.mode {
                    let state = state_of(held.entry.mode);
                    if let Err(error) = proxy.set_server_state(&service.label, &server.label, state)
                    {
                        tracing::debug!(%error, "admin state for a server just removed");
                    }
                }
            }
        }
    }

    /// Applies the peer's changes as they come (and compares once a second, for servers a
    /// reload added), saving after each change from the peer.
    async fn follow(self: Arc<Self>, proxy: Proxy, changed: Arc<Notify>) {
        loop {
            let news = tokio::time::timeout(RECONCILE_EVERY, changed.notified())
                .await
                .is_ok();
            let this = self.clone();
            let proxy = proxy.clone();
            // The file write fsyncs: off the runtime's workers.
            let done = tokio::task::spawn_blocking(move || {
                this.apply_to(&proxy);
                if news {
                    this.save_logged();
                }
            })
            .await;
            if done.is_err() {
                return;
            }
        }
    }
}

/// Why an operator's change did not fully land.
#[derive(Debug)]
pub enum SetError {
    /// No such service or server: nothing changed.
    NotFound(String),
    /// Applied and sent to the peer, but not written to `state_dir`.
    NotSaved(String),
}

/// The status document's `admin_source` of one entry.
pub fn source_of(held: &HeldEntry) -> doc::AdminSource {
    doc::AdminSource {
        via: match held.origin {
            Origin::Operator => doc::AdminVia::Operator,
            Origin::Replicated => doc::AdminVia::Replicated,
            Origin::Restored => doc::AdminVia::Restored,
        },
        set_by: held.entry.stamp.node.clone(),
        at_unix_ms: held.entry.stamp.wall_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tandem-admin-states-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_round_trips_and_a_rewrite_replaces_it_whole() {
        let dir = temp_dir("round");
        let file = dir.join(FILE_NAME);
        let mut states = AdminStates::new("lb1");
        states.apply_local("mysql", "c1", AdminMode::Drain, 1_000);
        let saved = StateFile {
            format: FORMAT,
            node: "lb1".into(),
            states: states.snapshot(),
        };
        super::super::write_atomically(&file, &serde_json::to_vec(&saved).unwrap()).unwrap();
        let read = read_file(&file).unwrap().unwrap();
        assert_eq!(read.states, states.snapshot());
        super::super::write_atomically(&file, b"{\"format\":1,\"node\":\"lb1\",\"states\":[]}")
            .unwrap();
        assert!(read_file(&file).unwrap().unwrap().states.is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn missing_corrupt_and_foreign_files_are_told_apart() {
        let dir = temp_dir("corrupt");
        let file = dir.join(FILE_NAME);
        assert!(read_file(&file).unwrap().is_none());
        std::fs::write(&file, b"{\"format\":1,\"node\":\"lb1\",\"sta").unwrap();
        assert!(read_file(&file).unwrap_err().contains("not a state file"));
        std::fs::write(&file, b"{\"format\":9,\"node\":\"lb1\",\"states\":[]}").unwrap();
        assert!(read_file(&file).unwrap_err().contains("format 9"));
    }
}
