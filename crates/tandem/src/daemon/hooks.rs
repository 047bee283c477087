//! node.toml `[hooks]`: the operator's commands run when this node becomes active, standby or fault, and when
//! the peer is lost or found (keepalived's `notify_master` / `notify_backup` / `notify_fault`).
//!
//! [`HookWatch`] (sans-IO) turns the election's published status into hook events; a watcher task feeds them to
//! one runner task through a bounded queue ([`QUEUE`]), so the election never waits for a hook: it runs on its own
//! thread and only publishes a status. Hooks run one at a time, in the order the events happened; a full queue
//! drops the event, counts it and says so in the log. Each hook gets the event, the node's state and the reason
//! as its last three arguments and as `TANDEM_*` variables, runs in a process group of its own, is killed with
//! that group after `timeout_ms` (SIGTERM, then SIGKILL after [`KILL_GRACE`]), and its output (at most
//! [`MAX_OUTPUT`] bytes of each stream) is logged with its exit status. docs/configuration.md, `[hooks]`.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_cluster::driver::ClusterStatus;
use tandem_cluster::wire::NodeState;
use tandem_config::{HookEvent, Hooks};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Events waiting for their hook at most; more are dropped (counted and logged).
pub(super) const QUEUE: usize = 16;
/// Bytes kept of a hook's stdout and of its stderr; the rest is read and counted, not kept.
pub(super) const MAX_OUTPUT: usize = 4096;
/// After SIGTERM to a timed-out hook's group, SIGKILL follows this much later.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(1);
/// After the hook exited, its output is awaited this long at most (a daemon it started may hold the pipes).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The "hook queue full" line is logged at most this often (with the running count).
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the hooks look at in the election's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    pub state: NodeState,
    pub fault: Option<String>,
    /// The election's last event text ("standby -> acquiring: peer silent for dead_ms", ...).
    pub last_event: Option<String>,
    /// The peer's name and whether it was heard within dead_ms.
    pub peer: Option<(String, bool)>,
}

impl Observed {
    pub(super) fn of(status: &ClusterStatus) -> Self {
        Self {
            state: status.state,
            fault: status.fault.clone(),
            last_event: status.last_event.clone(),
            peer: status
                .peer
                .as_ref()
                .map(|peer| (peer.name.clone(), peer.alive)),
        }
    }
}

/// One event for a hook, with what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fired {
    pub event: HookEvent,
    /// This node's state when it happened.
    pub state: NodeState,
    pub reason: String,
    /// The peer's name, when it has been heard.
    pub peer: Option<String>,
}

/// Turns successive statuses into hook events. A state event fires when the node settles in active, standby or
/// fault and that differs from the last one fired (passing through claiming/acquiring/releasing fires nothing;
/// standby -> claiming -> standby fires nothing). Its reason is what made the node leave the previous settled
/// state ("peer silent for dead_ms" rather than the final "VIPs added"), when that transition was seen. The
/// status is a watch, so states the election passed through between two looks are not seen; the settled state
/// always is.
#[derive(Debug, Default)]
pub(super) struct HookWatch {
    notified: Option<NodeState>,
    /// The reason of the first transition away from `notified`, until the next settled state.
    cause: Option<String>,
    seen_event: Option<String>,
    peer_alive: bool,
}

fn settled(state: NodeState) -> Option<HookEvent> {
    match state {
        NodeState::Active => Some(HookEvent::Active),
        NodeState::Standby => Some(HookEvent::Standby),
        NodeState::Fault => Some(HookEvent::Fault),
        _ => None,
    }
}

/// "from -> to: reason" (the election driver's text for a state change).
fn state_change(text: &str) -> Option<(&str, &str, &str)> {
    let (states, reason) = text.split_once(": ")?;
    let (from, to) = states.split_once(" -> ")?;
    Some((from, to, reason))
}

impl HookWatch {
    pub(super) fn observe(&mut self, now: &Observed) -> Vec<Fired> {
        let mut fired = Vec::new();
        let new_event = now.last_event.is_some() && now.last_event != self.seen_event;
        let change = now.last_event.as_deref().and_then(state_change);
        if new_event
            && let Some((from, _, reason)) = change
            && self.cause.is_none()
            && self.notified.is_none_or(|n| n.as_str() == from)
        {
            self.cause = Some(reason.to_string());
        }
        self.seen_event.clone_from(&now.last_event);

        let peer_name = now.peer.as_ref().map(|(name, _)| name.clone());
        let alive = now.peer.as_ref().is_some_and(|(_, alive)| *alive);
        if alive != self.peer_alive {
            self.peer_alive = alive;
            let name = peer_name.as_deref().unwrap_or("peer");
            let (event, reason) = if alive {
                let restarted = format!("peer {name} restarted");
                let reason = if now.last_event.as_deref() == Some(restarted.as_str()) {
                    restarted
                } else {
                    format!("peer {name} heard")
                };
                (HookEvent::PeerFound, reason)
            } else {
                let reason = match now.last_event.as_deref() {
                    Some(text)
                        if text.starts_with("peer silent for")
                            && text.ends_with("declared dead") =>
                    {
                        format!("{name}: {text}")
                    }
                    _ => format!("peer {name} silent for longer than dead_ms"),
                };
                (HookEvent::PeerLost, reason)
            };
            fired.push(Fired {
                event,
                state: now.state,
                reason,
                peer: peer_name.clone(),
            });
        }

        if let Some(event) = settled(now.state) {
            if self.notified != Some(now.state) {
                let latest = change
                    .filter(|(_, to, _)| *to == now.state.as_str())
                    .map(|(_, _, reason)| reason.to_string());
                let reason = match (&now.fault, now.state) {
                    (Some(fault), NodeState::Fault) => fault.clone(),
                    _ => self
                        .cause
                        .take()
                        .or(latest)
                        .unwrap_or_else(|| format!("now {}", now.state)),
                };
                fired.push(Fired {
                    event,
                    state: now.state,
                    reason,
                    peer: peer_name,
                });
                self.notified = Some(now.state);
            }
            self.cause = None;
        }
        fired
    }
}

/// One hook to run: the command and what it is told.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub event: HookEvent,
    pub state: String,
    pub reason: String,
    /// The peer's name as heard, else its configured address, else empty (standalone).
    pub peer: String,
    pub node: String,
}

/// How a hook ended.
#[derive(Debug)]
pub(super) struct Outcome {
    /// `None` when it could not be started or waited for.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Outcome {
    /// A hook that could not be started: `why` stands in its stderr.
    fn not_run(started: Instant, why: String) -> Self {
        Outcome {
            status: None,
            timed_out: false,
            elapsed: started.elapsed(),
            stdout: Captured::default(),
            stderr: Captured {
                kept: why.into_bytes(),
                dropped: 0,
            },
        }
    }
}

/// A stream's first [`MAX_OUTPUT`] bytes and how many more there were.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub kept: Vec<u8>,
    pub dropped: u64,
}

impl Captured {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept).trim_end().to_string();
        if self.dropped > 0 {
            format!("{text} ... ({} more bytes not kept)", self.dropped)
        } else {
            text
        }
    }
}

async fn capture(mut pipe: impl AsyncRead + Unpin) -> Captured {
    let mut captured = Captured::default();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT - captured.kept.len();
                let take = n.min(room);
                captured.kept.extend_from_slice(&buf[..take]);
                captured.dropped += (n - take) as u64;
            }
        }
    }
    captured
}

/// Signals a hook's whole process group; armed until the hook was reaped (its group id cannot be reused before),
/// so a runner aborted at shutdown takes its running hook down with it.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn signal(&self, signal: libc::c_int) {
        if let Some(pgid) = self.0.filter(|pgid| *pgid > 0) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Runs one hook to its end or its timeout. Never longer than `timeout + KILL_GRACE + OUTPUT_GRACE`.
pub(super) async fn run(job: &Job) -> Outcome {
    let started = Instant::now();
    let Some((program, args)) = job.argv.split_first() else {
        return Outcome::not_run(started, "empty command".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg(job.event.name())
        .arg(&job.state)
        .arg(&job.reason)
        .env("TANDEM_EVENT", job.event.name())
        .env("TANDEM_STATE", &job.state)
        .env("TANDEM_REASON", &job.reason)
        .env("TANDEM_PEER", &job.peer)
        .env("TANDEM_NODE", &job.node)
        // systemd's variables are the daemon's: a hook that pinged the watchdog or said READY would speak for it.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Outcome::not_run(started, format!("cannot start {program}: {error}")),
    };
    let mut guard = GroupGuard(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let stdout = child.stdout.take().map(|pipe| tokio::spawn(capture(pipe)));
    let stderr = child.stderr.take().map(|pipe| tokio::spawn(capture(pipe)));
    let (status, timed_out) = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            guard.signal(libc::SIGTERM);
            let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    guard.signal(libc::SIGKILL);
                    child.wait().await.ok()
                }
            };
            (status, true)
        }
    };
    // Reaped: the group id may be reused from here on.
    guard.0 = None;
    let elapsed = started.elapsed();
    let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
    let mut streams = [Captured::default(), Captured::default()];
    for (slot, task) in streams.iter_mut().zip([stdout, stderr]) {
        let Some(mut task) = task else { continue };
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(captured)) => *slot = captured,
            Ok(Err(_)) => {}
            Err(_) => task.abort(),
        }
    }
    let [stdout, stderr] = streams;
    Outcome {
        status,
        timed_out,
        elapsed,
        stdout,
        stderr,
    }
}

fn log(job: &Job, outcome: &Outcome) {
    let hook = job.event.key();
    let program = job.argv.first().map_or("", String::as_str);
    let stdout = outcome.stdout.text();
    let stderr = outcome.stderr.text();
    let elapsed_ms = outcome.elapsed.as_millis() as u64;
    let exit = outcome.status.map_or_else(
        || "not run".to_string(),
        |status| match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => status.to_string(),
        },
    );
    if outcome.timed_out {
        tracing::warn!(
            hook,
            program,
            timeout_ms = job.timeout.as_millis() as u64,
            %exit,
            stdout,
            stderr,
            "hook timed out: its process group was killed"
        );
    } else if outcome.status.is_some_and(|status| status.success()) {
        tracing::info!(hook, program, %exit, elapsed_ms, stdout, stderr, "hook ran");
    } else {
        tracing::warn!(hook, program, %exit, elapsed_ms, stdout, stderr, "hook failed");
    }
}

/// The hooks of a running daemon: the current `[hooks]` (replaced by a reload), the queue and its tasks.
pub(super) struct HookRunner {
    hooks: Mutex<Hooks>,
    node: String,
    /// `[node] peer`, named to a hook before the peer was heard.
    peer_address: Option<std::net::IpAddr>,
    queue: mpsc::Sender<Job>,
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    dropped: AtomicU64,
    dropped_logged: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl HookRunner {
    pub(super) fn new(hooks: Hooks, node: String, peer_address: Option<std::net::IpAddr>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            hooks: Mutex::new(hooks),
            node,
            peer_address,
            queue,
            receiver: Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
            dropped_logged: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Starts the runner and the watcher of `status` (once; later calls do nothing).
    pub(super) fn start(self: &Arc<Self>, mut status: watch::Receiver<ClusterStatus>) {
        let Some(mut receiver) = self.receiver.lock().ok().and_then(|mut slot| slot.take()) else {
            return;
        };
        let runner = tokio::spawn(async move {
            while let Some(job) = receiver.recv().await {
                let outcome = run(&job).await;
                log(&job, &outcome);
            }
        });
        let hooks = Arc::downgrade(self);
        let watcher = tokio::spawn(async move {
            let mut watch = HookWatch::default();
            loop {
                let observed = Observed::of(&status.borrow_and_update());
                let Some(hooks) = hooks.upgrade() else { break };
                for fired in watch.observe(&observed) {
                    hooks.enqueue(fired);
                }
                drop(hooks);
                if status.changed().await.is_err() {
                    break;
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.extend([runner, watcher]);
        }
    }

    /// A reload read node.toml again: later events run the new commands.
    pub(super) fn replace(&self, hooks: Hooks) {
        if let Ok(mut current) = self.hooks.lock()
            && *current != hooks
        {
            *current = hooks;
            tracing::info!("[hooks] reloaded from node.toml");
        }
    }

    /// Events dropped because the queue was full.
    #[cfg(test)]
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn enqueue(&self, fired: Fired) {
        let (argv, timeout) = match self.hooks.lock() {
            Ok(hooks) => (
                hooks.command(fired.event).map(<[String]>::to_vec),
                Duration::from_millis(hooks.timeout_ms),
            ),
            Err(_) => (None, Duration::ZERO),
        };
        tracing::debug!(event = fired.event.name(), reason = %fired.reason, hook = argv.is_some(), "hook event");
        let Some(argv) = argv else { return };
        let job = Job {
            argv,
            timeout,
            event: fired.event,
            state: fired.state.as_str().to_string(),
            reason: fired.reason,
            peer: fired
                .peer
                .or_else(|| self.peer_address.map(|ip| ip.to_string()))
                .unwrap_or_default(),
            node: self.node.clone(),
        };
        if let Err(error) = self.queue.try_send(job) {
            let job = match error {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let due = self.dropped_logged.lock().is_ok_and(|mut last| {
                let due = last.is_none_or(|at| at.elapsed() >= OVERFLOW_LOG_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            });
            if due {
                tracing::warn!(
                    hook = job.event.key(),
                    reason = %job.reason,
                    dropped_total = dropped,
                    queued = QUEUE,
                    "hook queue full: this event's hook is not run (hooks run one at a time; a slow hook holds up \
                     the rest)"
                );
            }
        }
    }

    /// Daemon stop: the watcher and the runner end; a hook still running is killed with its group.
    pub(super) fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn observed(state: NodeState, event: Option<&str>, peer: Option<(&str, bool)>) -> Observed {
        Observed {
            state,
            fault: (state == NodeState::Fault).then(|| "VIP operation failed: EPERM".to_string()),
            last_event: event.map(str::to_string),
            peer: peer.map(|(name, alive)| (name.to_string(), alive)),
        }
    }

    fn events(fired: &[Fired]) -> Vec<(HookEvent, &str)> {
        fired.iter().map(|f| (f.event, f.reason.as_str())).collect()
    }

    #[test]
    fn a_secondary_starts_in_standby_loses_its_peer_and_takes_over() {
        use NodeState::*;
        let mut watch = HookWatch::default();
        assert!(watch.observe(&observed(Init, None, None)).is_empty());
        let fired = watch.observe(&observed(
            Standby,
            Some("init -> standby: peer heard"),
            Some(("lb1", true)),
        ));
        assert_eq!(
            events(&fired),
            [
                (HookEvent::PeerFound, "peer lb1 heard"),
                (HookEvent::Standby, "peer heard")
            ]
        );
        assert_eq!(fired[1].peer.as_deref(), Some("lb1"));
        assert_eq!(fired[1].state, Standby);
        // Nothing new: nothing fired.
        assert!(
            watch
                .observe(&observed(
                    Standby,
                    Some("init -> standby: peer heard"),
                    Some(("lb1", true))
                ))
                .is_empty()
        );
        // The peer dies: lost, then acquiring (nothing), then active with the cause, not "VIPs added".
        let fired = watch.observe(&observed(
            Standby,
            Some("peer silent for 1003 ms: declared dead"),
            Some(("lb1", false)),
        ));
        assert_eq!(
            events(&fired),
            [(
                HookEvent::PeerLost,
                "lb1: peer silent for 1003 ms: declared dead"
            )]
        );
        assert!(
            watch
                .observe(&observed(
                    Acquiring,
                    Some("standby -> acquiring: peer silent for dead_ms"),
                    Some(("lb1", false))
                ))
                .is_empty()
        );
        let fired = watch.observe(&observed(
            Active,
            Some("acquiring -> active: VIPs added"),
            Some(("lb1", false)),
        ));
        assert_eq!(
            events(&fired),
            [(HookEvent::Active, "peer silent for dead_ms")]
        );
        // It comes back.
        let fired = watch.observe(&observed(
            Active,
            Some("peer lb1 restarted"),
            Some(("lb1", true)),
        ));
        assert_eq!(
            events(&fired),
            [(HookEvent::PeerFound, "peer lb1 restarted")]
        );
    }

    #[test]
    fn a_claim_that_comes_back_to_standby_fires_nothing_and_leaves_no_stale_cause() {
        use NodeState::*;
        let mut watch = HookWatch::default();
        watch.observe(&observed(
            Standby,
            Some("init -> standby: peer heard"),
            Some(("lb2", true)),
        ));
        assert!(
            watch
                .observe(&observed(
                    Claiming,
                    Some("standby -> claiming: no node active: claiming"),
                    Some(("lb2", true))
                ))
                .is_empty()
        );
        assert!(
            watch
                .observe(&observed(
                    Standby,
                    Some("claiming -> standby: peer is preferred"),
                    Some(("lb2", true))
                ))
                .is_empty()
        );
        // Later an admin takeover: its own reason, not the old claim's.
        watch.observe(&observed(
            Acquiring,
            Some("standby -> acquiring: admin takeover"),
            Some(("lb2", true)),
        ));
        let fired = watch.observe(&observed(
            Active,
            Some("acquiring -> active: VIPs added"),
            Some(("lb2", true)),
        ));
        assert_eq!(events(&fired), [(HookEvent::Active, "admin takeover")]);
    }

    #[test]
    fn missed_steps_still_fire_the_settled_state_and_fault_says_why() {
        use NodeState::*;
        let mut watch = HookWatch::default();
        // Init -> acquiring -> active between two looks: the last reason is all there is.
        let fired = watch.observe(&observed(
            Active,
            Some("acquiring -> active: VIPs added"),
            None,
        ));
        assert_eq!(events(&fired), [(HookEvent::Active, "VIPs added")]);
        let fired = watch.observe(&observed(
            Fault,
            Some("active -> fault: VIP operation failed: EPERM"),
            None,
        ));
        assert_eq!(
            events(&fired),
            [(HookEvent::Fault, "VIP operation failed: EPERM")]
        );
        // A standalone node's first status may carry no event text at all.
        let mut fresh = HookWatch::default();
        let fired = fresh.observe(&observed(Active, None, None));
        assert_eq!(events(&fired), [(HookEvent::Active, "now active")]);
    }

    fn job(dir: &std::path::Path, script: &str, timeout: Duration) -> Job {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("hook.sh");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Job {
            argv: vec![path.display().to_string(), "first".into()],
            timeout,
            event: HookEvent::Active,
            state: "active".into(),
            reason: "peer silent for dead_ms".into(),
            peer: "lb2".into(),
            node: "lb1".into(),
        }
    }

    #[tokio::test]
    async fn a_hook_gets_arguments_and_environment_and_its_output_is_kept_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(
            dir.path(),
            "#!/bin/sh\necho \"args:$*\"\necho \"env:$TANDEM_EVENT|$TANDEM_STATE|$TANDEM_REASON|$TANDEM_PEER|$TANDEM_NODE|${NOTIFY_SOCKET-unset}\"\n\
             head -c 10000 /dev/zero | tr '\\0' x >&2\nexit 3\n",
            Duration::from_secs(5),
        );
        let outcome = run(&job).await;
        assert_eq!(outcome.status.unwrap().code(), Some(3));
        assert!(!outcome.timed_out);
        let stdout = outcome.stdout.text();
        assert!(
            stdout.contains("args:first active active peer silent for dead_ms"),
            "{stdout}"
        );
        assert!(
            stdout.contains("env:active|active|peer silent for dead_ms|lb2|lb1|unset"),
            "{stdout}"
        );
        assert_eq!(outcome.stderr.kept.len(), MAX_OUTPUT);
        assert_eq!(outcome.stderr.dropped, 10000 - MAX_OUTPUT as u64);
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let job = job(
            dir.path(),
            &format!(
                "#!/bin/sh\nsleep 30 &\necho $$ $! > {}\nwait\n",
                pids.display()
            ),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let outcome = run(&job).await;
        let took = started.elapsed();
        assert!(outcome.timed_out);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            // The background `sleep` was in the hook's group: gone too (or a zombie about to be reaped by init).
            let gone = (0..50).any(|_| {
                // SAFETY: signal 0 only checks that the process exists.
                let alive = unsafe { libc::kill(pid, 0) } == 0
                    && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .unwrap_or_default()
                        .contains(") Z ");
                if alive {
                    std::thread::sleep(Duration::from_millis(20));
                }
                !alive
            });
            assert!(gone, "process {pid} of the hook survived its timeout");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_run() {
        let job = Job {
            argv: vec!["/nonexistent/tandem-hook".into()],
            timeout: Duration::from_secs(1),
            event: HookEvent::PeerLost,
            state: "standby".into(),
            reason: "x".into(),
            peer: String::new(),
            node: "n".into(),
        };
        let outcome = run(&job).await;
        assert!(outcome.status.is_none());
        assert!(
            outcome
                .stderr
                .text()
                .contains("cannot start /nonexistent/tandem-hook")
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let hooks = Hooks {
            on_active: Some(vec!["/bin/true".into()]),
            ..Hooks::default()
        };
        // Not started: nothing takes jobs off the queue.
        let runner = HookRunner::new(hooks, "lb1".into(), None);
        let started = Instant::now();
        for _ in 0..QUEUE + 5 {
            runner.enqueue(Fired {
                event: HookEvent::Active,
                state: NodeState::Active,
                reason: "test".into(),
                peer: None,
            });
        }
        // Events without a hook are not queued at all.
        runner.enqueue(Fired {
            event: HookEvent::Standby,
            state: NodeState::Standby,
            reason: "test".into(),
            peer: None,
        });
        assert_eq!(runner.dropped(), 5);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
