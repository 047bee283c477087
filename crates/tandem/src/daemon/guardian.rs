//! The VIP guardian: a tiny child process that removes the daemon's VIPs when the daemon dies,
//! however it dies (SIGKILL, the OOM killer, a panic, the watchdog's abort), so a dead node never
//! keeps answering ARP for addresses its peer now holds.
//!
//! How: `tandem run` forks the guardian while it is still single-threaded (right after the
//! privilege drop, before the runtime starts: forking a multi-threaded process is unsafe). The
//! daemon keeps the only write end of a pipe (`O_CLOEXEC`, so hooks never inherit it); the guardian
//! blocks reading the other end. The daemon writes the VIP set it may hold as one line
//! (`vips ADDR/LEN ...`) at start and on every reload that changes it, and `stop` on a clean stop
//! (it released the VIPs itself). End of file without `stop` means the daemon is gone: the guardian
//! removes exactly the last VIP set from the interface (absent ones are left alone) and exits.
//!
//! A fast restart must not lose its new VIPs to the old guardian: the guardian holds an exclusive
//! `flock` on `STATE_DIR/vip-guardian.lock` for its whole life (it inherits the daemon's lock), and
//! a starting daemon takes that lock before it forks its own guardian and before it adds any VIP,
//! i.e. it waits until the old guardian has finished (milliseconds). If the lock stays held (another
//! daemon of this node is running), the new daemon runs without a guardian rather than fork one that
//! could remove the other daemon's VIPs. `tandem release-vips` (the unit's `ExecStopPost=`) uses the
//! same lock: it removes the configured VIPs only when no daemon or guardian holds it.
//!
//! The guardian ignores SIGTERM/SIGINT/SIGHUP (systemd signals the whole cgroup once the daemon
//! died; a Ctrl-C reaches the whole process group) so the removal always completes, and keeps only
//! CAP_NET_ADMIN when the kernel lets it drop the rest (the hardened unit's seccomp filter refuses
//! `capset`; it then keeps the daemon's four).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use tandem_vip::{Vip, VipManager};

/// The lock file in the state dir that the live guardian holds.
pub const LOCK_FILE: &str = "vip-guardian.lock";

/// How long a starting daemon waits for an earlier guardian to finish its removal.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The daemon's end: the pipe's write end and the VIP set last sent.
pub struct Guardian {
    pipe: File,
    vips: Vec<Vip>,
}

/// One message from the daemon to the guardian.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    /// The VIP set the daemon may hold from now on.
    Vips(Vec<Vip>),
    /// Clean stop: the daemon released its VIPs; exit without touching anything.
    Stop,
}

fn encode(message: &Message) -> String {
    match message {
        Message::Vips(vips) => {
            let mut line = String::from("vips");
            for vip in vips {
                line.push(' ');
                line.push_str(&vip.to_string());
            }
            line.push('\n');
            line
        }
        Message::Stop => "stop\n".to_owned(),
    }
}

/// A line as the guardian reads it; `None` for anything it does not understand (ignored: the last
/// good set stays).
fn decode(line: &str) -> Option<Message> {
    let mut words = line.split_ascii_whitespace();
    match words.next()? {
        "stop" => Some(Message::Stop),
        "vips" => words
            .map(|word| word.parse::<Vip>().ok())
            .collect::<Option<Vec<_>>>()
            .map(Message::Vips),
        _ => None,
    }
}

/// What the guardian does with the pipe's lines: `Some(set)` to remove at end of file, `None` after
/// a clean stop. A last line without its newline was cut by the daemon's death mid-write: ignored
/// (the daemon sends a new set before it adds any address of it).
fn last_set<R: BufRead>(initial: Vec<Vip>, mut reader: R) -> Option<Vec<Vip>> {
    let mut vips = initial;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Some(vips),
            Ok(_) if !line.ends_with('\n') => return Some(vips),
            Ok(_) => match decode(&line) {
                Some(Message::Stop) => return None,
                Some(Message::Vips(next)) => vips = next,
                None => {}
            },
        }
    }
}

/// Takes the guardian lock, waiting up to [`LOCK_WAIT`] for an earlier guardian to finish.
fn take_lock(state_dir: &Path, wait: Duration) -> std::io::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK_FILE))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a daemon or guardian of this node holds the lock now (for `tandem release-vips`).
pub fn lock_held(state_dir: &Path) -> std::io::Result<bool> {
    Ok(take_lock(state_dir, Duration::ZERO)?.is_none())
}

impl Guardian {
    /// Forks the guardian for `vips` on `interface`. Call only while the process has one thread.
    /// `None` (with the reason logged) when it cannot: the daemon then runs as before, relying on the
    /// start-up cleanup and the unit's `ExecStopPost=`.
    pub fn spawn(state_dir: &Path, interface: &str, vips: Vec<Vip>) -> Option<Guardian> {
        let lock = match take_lock(state_dir, LOCK_WAIT) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::error!(
                    lock = %state_dir.join(LOCK_FILE).display(),
                    "another tandem process of this node holds the VIP guardian lock; \
                     running without a VIP guardian"
                );
                return None;
            }
            Err(error) => {
                tracing::error!(%error, "cannot take the VIP guardian lock; running without a VIP guardian");
                return None;
            }
        };
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::error!(error = %std::io::Error::last_os_error(), "no pipe for the VIP guardian");
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the caller guarantees a single thread, so the child's copy of the process is
        // consistent; it never returns into the daemon's code (it ends in _exit).
        match unsafe { libc::fork() } {
            -1 => {
                tracing::error!(error = %std::io::Error::last_os_error(), "cannot fork the VIP guardian");
                None
            }
            0 => {
                drop(write);
                guard(File::from(read), lock, interface, vips)
            }
            pid => {
                // The child holds the lock (flock belongs to the shared open file) and the read end.
                drop(lock);
                drop(read);
                tracing::info!(pid, interface, vips = vips.len(), "VIP guardian started");
                Some(Guardian {
                    pipe: File::from(write),
                    vips,
                })
            }
        }
    }

    fn send(&mut self, message: &Message) {
        if let Err(error) = self.pipe.write_all(encode(message).as_bytes()) {
            tracing::error!(%error, "cannot reach the VIP guardian");
        }
    }

    /// Before a reload moves to `next`: the guardian removes the old and the new set until
    /// [`Guardian::moved`] says the move is done.
    pub fn moving(&mut self, next: &[Vip]) {
        let mut union = self.vips.clone();
        union.extend(next.iter().filter(|vip| !self.vips.contains(vip)));
        self.send(&Message::Vips(union));
    }

    /// After a reload moved to `next`.
    pub fn moved(&mut self, next: Vec<Vip>) {
        self.send(&Message::Vips(next.clone()));
        self.vips = next;
    }

    /// Clean stop: the daemon released its VIPs; the guardian exits without touching anything.
    pub fn stop(mut self) {
        self.send(&Message::Stop);
    }
}

/// The guardian's whole life, in the forked child.
fn guard(pipe: File, lock: File, interface: &str, vips: Vec<Vip>) -> ! {
    // SAFETY: plain signal dispositions and process attributes of this (single-threaded) child.
    unsafe {
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"tandem-guard".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if let Err(error) = super::privileges::set_caps(1 << super::privileges::CAP_NET_ADMIN) {
        tracing::debug!(%error, "VIP guardian keeps the daemon's capabilities");
    }
    let code = match last_set(vips, BufReader::new(pipe)) {
        None => 0,
        Some(vips) => remove(interface, &vips, false),
    };
    drop(lock);
    // SAFETY: _exit ends the child without running the daemon's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// Removes `vips` from `interface`, and the local routes a drain cut short left for them; with `tables`, also the
/// drain's nftables tables (`nft` run as a child: the guardian dropped the ambient capability it would need, so
/// there the next start clears them). The exit code says whether every removal worked.
fn remove(interface: &str, vips: &[Vip], tables: bool) -> i32 {
    let started = Instant::now();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "VIP guardian: no runtime; VIPs left on the interface");
            return 1;
        }
    };
    runtime.block_on(async {
        let manager = match VipManager::new(interface) {
            Ok(manager) => manager,
            Err(error) => {
                tracing::error!(%error, "VIP guardian: VIPs left on the interface");
                return 1;
            }
        };
        // The start-up clean-up's own call: only what is on the interface is removed (and logged).
        let mut code = match manager.remove_stale(vips).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::warn!(
                        removed = removed.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "the daemon died holding VIPs; the VIP guardian removed them"
                    );
                }
                0
            }
            Err(error) => {
                tracing::error!(%error, "VIP guardian: could not remove a VIP");
                1
            }
        };
        // Then what a daemon killed mid-drain leaves: AnyIP routes (the VIPs still accepted locally), tables.
        if let Err(error) = manager.remove_drain_routes(vips).await {
            tracing::error!(%error, "could not remove a drain route");
            code = 1;
        }
        if tables {
            match super::drain::nft(&super::drain::clear_script()).await {
                Ok(()) => {}
                Err(super::drain::NftError::NotInstalled) => {
                    tracing::debug!("nft is not installed: no drain table to clear");
                }
                Err(error) => {
                    tracing::error!(%error, "could not clear the drain tables");
                    code = 1;
                }
            }
        }
        code
    })
}

/// `tandem release-vips` (the unit's `ExecStopPost=`): removes this node's configured VIPs from its
/// interface, with what a drain cut short left (local routes, nftables tables), unless a daemon or its guardian of
/// this node still runs (holds the guardian lock).
pub fn release_vips(
    cluster_path: &Path,
    node_path: &Path,
) -> anyhow::Result<std::process::ExitCode> {
    // A lapsed certificate must not keep the VIPs on the interface after the daemon stopped.
    let loaded = match tandem_config::check_with(
        cluster_path,
        node_path,
        tandem_config::now_unix(),
        tandem_config::ExpiredCertificates::Serve,
    ) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter() {
                eprintln!("{diagnostic}");
            }
            anyhow::bail!("configuration rejected; no VIP removed");
        }
    };
    let node = &loaded.node.node;
    if !node.manage_vips {
        println!("manage_vips = false: nothing to release");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if lock_held(&node.state_dir)? {
        println!(
            "a tandem daemon of this node is running (it holds its VIPs' guardian lock); nothing removed"
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let vips = tandem_config::service_vips(&loaded.cluster)
        .into_iter()
        .map(Vip::host)
        .collect::<Result<Vec<_>, _>>()?;
    match remove(&node.interface, &vips, true) {
        0 => Ok(std::process::ExitCode::SUCCESS),
        _ => Ok(std::process::ExitCode::FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vips(list: &[&str]) -> Vec<Vip> {
        list.iter().map(|v| v.parse().unwrap()).collect()
    }

    #[test]
    fn lines_round_trip() {
        let set = Message::Vips(vips(&["192.0.2.1/32", "2001:db8::1/128"]));
        assert_eq!(decode(&encode(&set)), Some(set));
        assert_eq!(decode(&encode(&Message::Stop)), Some(Message::Stop));
        assert_eq!(decode("vips\n"), Some(Message::Vips(Vec::new())));
        assert_eq!(decode("vips 192.0.2.1/33\n"), None);
        assert_eq!(decode("nonsense\n"), None);
    }

    #[test]
    fn end_of_file_removes_the_last_complete_set() {
        let initial = vips(&["192.0.2.1/32"]);
        assert_eq!(last_set(initial.clone(), &b""[..]), Some(initial.clone()));
        let stream = b"vips 192.0.2.2/32\ngarbage\nvips 192.0.2.3/32 192.0.2.4/32\nvips 192.0.2.9";
        assert_eq!(
            last_set(initial, &stream[..]),
            Some(vips(&["192.0.2.3/32", "192.0.2.4/32"]))
        );
    }

    #[test]
    fn a_clean_stop_removes_nothing() {
        assert_eq!(
            last_set(vips(&["192.0.2.1/32"]), &b"vips 192.0.2.2/32\nstop\n"[..]),
            None
        );
    }

    #[test]
    fn a_held_lock_is_seen_and_waited_for_boundedly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!lock_held(dir.path()).unwrap());
        let held = take_lock(dir.path(), Duration::ZERO)
            .unwrap()
            .expect("free lock");
        assert!(lock_held(dir.path()).unwrap());
        let started = Instant::now();
        assert!(
            take_lock(dir.path(), Duration::from_millis(50))
                .unwrap()
                .is_none()
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert!(!lock_held(dir.path()).unwrap());
    }
}
