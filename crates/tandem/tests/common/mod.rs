//! Helpers shared by the `tandem` binary's integration tests: running the binary as a person would, a
//! daemon's config directory with its child process, polling with a deadline, and tiny loopback backends.
//! Each test file pulls this in with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `tandem` binary, without the environment whatever runs the tests could leak into it: a service
/// manager's notify socket and watchdog, or admin credentials. A test sets what it wants afterwards.
pub fn tandem() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("TANDEM_ADMIN_USER")
        .env_remove("TANDEM_ADMIN_PASSWORD");
    command
}

/// `tandem keygen PATH`: a fresh shared secret for a pair's nodes.
pub fn keygen(path: &Path) {
    let output = tandem().arg("keygen").arg(path).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

/// What a person sees of a command: stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to completion with `input` on its stdin (what a person types at a prompt).
pub fn output_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The repository's root (for the shipped examples, dashboards and rules).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `condition` until it holds; fails the test naming `what` after 15 s.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `child` (not yet reaped) and waits up to 10 s for it to exit: its exit status, or
/// `None` while it still runs (the caller decides whether that fails the test).
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP backend on `addr` that writes `name` and a newline to each connection; it lives while the
/// returned listener does.
pub fn banner_backend(addr: &str, name: &'static str) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap();
    let accept = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for stream in accept.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(format!("{name}\n").as_bytes());
        }
    });
    listener
}

/// A node's config directory and, while it runs, its daemon (killed on drop); the daemon's stderr goes
/// to `log` in the directory.
pub struct Node {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Node {
    pub fn new(dir: PathBuf) -> Node {
        Node { dir, child: None }
    }

    /// `tandem --config-dir DIR ARGS...`, run to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        tandem()
            .arg("--config-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `tandem status --json`, or Null while the daemon does not answer.
    pub fn status(&self) -> serde_json::Value {
        let output = self.cli(&["status", "--json"]);
        if !output.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    /// The body of `GET /metrics` over the admin socket (`admin.sock` in the directory), empty while the daemon
    /// does not answer.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.dir.join("admin.sock"))
        else {
            return String::new();
        };
        let mut answer = String::new();
        let asked = stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .and_then(|()| stream.read_to_string(&mut answer).map(drop));
        match (asked, answer.split_once("\r\n\r\n")) {
            (Ok(()), Some((head, body))) if head.starts_with("HTTP/1.1 200") => body.to_owned(),
            _ => String::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Starts `tandem run` on the directory with `env` added; its stderr goes after any earlier run's.
    pub fn start(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        self.child = Some(
            tandem()
                .arg("run")
                .arg("--config-dir")
                .arg(&self.dir)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
}

/// A child process killed and reaped on drop (unless taken out first), so a failing test leaves nothing
/// running.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The leaf certificate `openssl s_client` is handed by the TLS service at `address` (host:port) for SNI
/// `server_name`, as PEM; `None` when none is served (refused, no handshake).
pub fn served_certificate(address: &str, server_name: &str) -> Option<String> {
    let mut child = KillOnDrop(Some(
        Command::new("openssl")
            .args(["s_client", "-connect", address, "-servername", server_name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client runs"),
    ));
    // Closing stdin ends the session after the handshake.
    drop(child.0.as_mut().and_then(|c| c.stdin.take()));
    let output = child.0.take()?.wait_with_output().ok()?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let begin = out.find("-----BEGIN CERTIFICATE-----")?;
    let end = out[begin..].find("-----END CERTIFICATE-----")? + begin;
    Some(format!("{}-----END CERTIFICATE-----\n", &out[begin..end]))
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
}

/// Hands `contents` out through a FIFO at `path`, one per open, so that a test decides what each read of a
/// certificate file gets (the check, then the proxy's load). Once a reader has opened it, a new FIFO takes the
/// path before the bytes are written: the next open gets the next bytes, never the rest of these. After the last,
/// a regular file holding the last bytes takes the path, so an unexpected further open reads those instead of
/// blocking.
pub fn serve_fifo(path: PathBuf, contents: Vec<String>) {
    let next = path.with_extension("next");
    mkfifo(&path);
    std::thread::spawn(move || {
        let count = contents.len();
        for (i, bytes) in contents.iter().enumerate() {
            // Blocks until the daemon opens the FIFO to read.
            let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            if i + 1 < count {
                mkfifo(&next);
            } else {
                std::fs::write(&next, bytes).unwrap();
            }
            std::fs::rename(&next, &path).unwrap();
            writer.write_all(bytes.as_bytes()).unwrap();
        }
    });
}
