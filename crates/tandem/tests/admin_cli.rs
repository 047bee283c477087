#![allow(clippy::unwrap_used)]
//! The admin path end to end on loopback: `tandem password`, `tandem check`'s refusals, and a
//! daemon with credentials and HTTPS driven by the CLI over its UNIX socket and over HTTPS
//! (pinned fingerprint, `--insecure`, environment credentials), with no secret in its log, its
//! status or its metrics.

mod common;

use common::{KillOnDrop, output_with_input, tandem, text};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Tr0ub4dor-and-3";

/// `tandem password FILE` with `input` on standard input (a pipe, so no prompt).
fn password(file: &Path, input: &str, extra: &[&str]) -> Output {
    output_with_input(
        tandem()
            .arg("password")
            .arg(file)
            .args(["--iterations", "10000"])
            .args(extra),
        input,
    )
}

#[test]
fn password_writes_a_0600_hash_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.pw");
    let output = password(&file, &format!("{PASSWORD}\n"), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.starts_with("$pbkdf2-sha256$i=10000$"), "{first}");
    assert!(!first.contains(PASSWORD));
    assert!(!text(&output).contains(PASSWORD));

    let again = password(&file, "other\n", &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("--force"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        first,
        "overwritten"
    );

    let forced = password(&file, "other\n", &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(std::fs::read_to_string(&file).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let empty = password(&dir.path().join("empty.pw"), "\n", &[]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(!dir.path().join("empty.pw").exists());
}

const CLUSTER: &str = "[cluster]\nname = \"admin-test\"\n[health_check]\ninterval_ms = 100\nrise = 1\nfall = 2\n\
    [[service]]\nlabel = \"db\"\nvip = \"127.0.0.80\"\nports = [23380]\nmode = \"tcp\"\n\
    [[service.server]]\nlabel = \"s1\"\naddress = \"127.0.0.81\"\nport = 23380\n";

fn check(dir: &Path) -> Output {
    tandem()
        .arg("check")
        .arg("--config-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn check_refuses_open_listeners_clear_passwords_and_foreign_vips() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), CLUSTER).unwrap();
    let node = |admin: &str, node_extra: &str| {
        std::fs::write(
            dir.path().join("node.toml"),
            format!(
                "[node]\nname = \"n\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
                 manage_vips = false\nstate_dir = \"{}/state\"\n{node_extra}[admin]\n{admin}",
                dir.path().display()
            ),
        )
        .unwrap();
    };
    // A network listener without credentials: an error at the `listen` value.
    node("listen = \"0.0.0.0:9443\"\n", "");
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("node.toml:9:10: admin `listen` 0.0.0.0:9443 is reachable"),
        "{}",
        text(&output)
    );

    // A clear-text password file.
    let pw = dir.path().join("admin.pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    node("user = \"ops\"\npassword_file = \"admin.pw\"\n", "");
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("node.toml:10:17:"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("tandem password"),
        "{}",
        text(&output)
    );
    assert!(!text(&output).contains("hunter2"));
    // `tandem run` refuses it too, before binding anything.
    let run = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(text(&run).contains("tandem password"), "{}", text(&run));
    assert!(text(&run).contains("not starting"), "{}", text(&run));

    // A hash readable by others.
    std::fs::remove_file(&pw).unwrap();
    assert!(password(&pw, "pw\n", &[]).status.success());
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("everyone"), "{}", text(&output));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = check(dir.path());
    assert!(output.status.success(), "{}", text(&output));

    // A VIP outside this node's vip_networks.
    node(
        "user = \"ops\"\npassword_file = \"admin.pw\"\n",
        "vip_networks = [\"192.168.1.0/24\"]\n",
    );
    let output = check(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("cluster.toml:9:7: service \"db\": VIP 127.0.0.80 is outside"),
        "{}",
        text(&output)
    );
    node(
        "user = \"ops\"\npassword_file = \"admin.pw\"\n",
        "vip_networks = [\"192.168.1.0/24\", \"127.0.0.0/8\"]\n",
    );
    let output = check(dir.path());
    assert!(output.status.success(), "{}", text(&output));
}

struct Daemon {
    /// Killed before the directory goes.
    _child: KillOnDrop,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        tandem()
            .arg("--config-dir")
            .arg(self.dir.path())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

const ADMIN: &str = "127.0.0.1:29182";

fn http(request: String) -> String {
    let mut stream = std::net::TcpStream::connect(ADMIN).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A GET over the admin socket, as raw HTTP.
fn socket_get(socket: &Path, path: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A standalone daemon with credentials, a configured certificate (HTTPS on loopback) and its
/// socket in its own directory.
fn start() -> (Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cluster.toml"), CLUSTER).unwrap();
    assert!(
        password(&d.join("admin.pw"), &format!("{PASSWORD}\n"), &[])
            .status
            .success()
    );
    assert!(
        tandem()
            .arg("keygen")
            .arg(d.join("secret"))
            .output()
            .unwrap()
            .status
            .success()
    );
    let identity = tandem_admin::tls::self_signed_identity(
        &d.join("tls"),
        &[],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    std::fs::write(
        d.join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26696\nsync_port = 27780\nmanage_vips = false\nstate_dir = \"{dir}/state\"\n\
             [admin]\nlisten = \"{ADMIN}\"\nsocket = \"{dir}/admin.sock\"\nuser = \"ops\"\npassword_file = \"admin.pw\"\n\
             tls_certificate = \"tls/admin-tls.crt\"\ntls_key = \"tls/admin-tls.key\"\n\
             [tuning]\nworkers = 1\nheartbeat_realtime = false\n",
            dir = d.display()
        ),
    )
    .unwrap();
    let child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(d)
        .env("TANDEM_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        _child: KillOnDrop(Some(child)),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = daemon.cli(&["status", "--json"], &[]);
        if output.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon not ready: {}\n{}",
            text(&output),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (daemon, identity.fingerprint)
}

#[test]
fn daemon_admin_over_socket_and_https() {
    let (daemon, fingerprint) = start();
    let url = format!("https://{ADMIN}");

    // The socket: 0600 without a `tandem` group, 0660 with one.
    let socket = daemon.dir.path().join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert!(mode == 0o600 || mode == 0o660, "socket mode {mode:o}");

    // On the node the CLI acts over the socket, without credentials.
    let output = daemon.cli(&["server", "drain", "db", "s1"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let output = daemon.cli(&["status"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&output);
    assert!(shown.contains(&fingerprint), "{shown}");
    assert!(shown.contains("local socket"), "{shown}");

    // Over HTTPS: the pinned fingerprint, a wrong one, --insecure.
    let output = daemon.cli(
        &[
            "--admin",
            &url,
            "--admin-fingerprint",
            &fingerprint,
            "status",
            "--json",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let wrong = "00".repeat(32);
    let output = daemon.cli(
        &[
            "--admin",
            &url,
            "--admin-fingerprint",
            &wrong,
            "status",
            "--json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains(&fingerprint), "{}", text(&output));
    // The system's roots do not know a self-signed certificate.
    let output = daemon.cli(&["--admin", &url, "status", "--json"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let output = daemon.cli(&["--admin", &url, "--insecure", "status", "--json"], &[]);
    assert!(output.status.success(), "{}", text(&output));

    // A POST over HTTPS needs credentials: none (no terminal to ask on), wrong, right.
    let pinned = ["--admin", &url, "--admin-fingerprint", &fingerprint];
    let online = |env: &[(&str, &str)]| {
        let mut args = pinned.to_vec();
        args.extend(["server", "online", "db", "s1"]);
        daemon.cli(&args, env)
    };
    let output = online(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("TANDEM_ADMIN_USER"),
        "{}",
        text(&output)
    );
    let output = online(&[
        ("TANDEM_ADMIN_USER", "ops"),
        ("TANDEM_ADMIN_PASSWORD", "nope"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("wrong"), "{}", text(&output));
    let output = online(&[
        ("TANDEM_ADMIN_USER", "ops"),
        ("TANDEM_ADMIN_PASSWORD", PASSWORD),
    ]);
    assert!(output.status.success(), "{}", text(&output));

    // Plain HTTP on the HTTPS listener gets no page.
    let answer = http(format!(
        "GET /metrics HTTP/1.1\r\nHost: {ADMIN}\r\nConnection: close\r\n\r\n"
    ));
    assert!(!answer.contains("tandem_"), "{answer}");

    // No secret byte in the log, the status or the metrics.
    let secret = std::fs::read_to_string(daemon.dir.path().join("secret")).unwrap();
    let secret = secret.trim();
    let status = text(&daemon.cli(&["status", "--json"], &[]));
    let metrics = socket_get(&socket, "/metrics");
    assert!(metrics.contains("tandem_"), "{metrics}");
    let log = daemon.log();
    assert!(log.contains("admin request refused"), "{log}");
    for (what, body) in [("log", &log), ("status", &status), ("metrics", &metrics)] {
        assert!(!body.contains(PASSWORD), "the admin password in the {what}");
        assert!(!body.contains(secret), "the shared secret in the {what}");
        assert!(
            !body.contains(&secret[..16]),
            "part of the secret in the {what}"
        );
    }
}
