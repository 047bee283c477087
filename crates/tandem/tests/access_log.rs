#![allow(clippy::unwrap_used)]
//! `[access_log]` as an operator runs it: a standalone daemon on loopback (127.0.0.181 / VIP 127.0.0.182, a real
//! server on 127.0.0.183) writes one line per TCP connection to the configured file; after the file is moved away
//! (logrotate) a SIGHUP makes the daemon write the next lines to a fresh file at the configured path.

mod common;

use common::{KillOnDrop, banner_backend, tandem};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One connection through the VIP: what it read.
fn through_vip() -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &"127.0.0.182:41290".parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `path` holds `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, want {n}: {l:?}",
            path.display(),
            l.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_line_per_connection_and_a_fresh_file_after_sighup() {
    // A real server that answers every connection with `hi\n` and closes.
    let _backend = banner_backend("127.0.0.183:41290", "hi");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keygen = tandem()
        .arg("keygen")
        .arg(d.join("secret"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    std::fs::write(
        d.join("cluster.toml"),
        "[cluster]\nname = \"access-log-test\"\n[health_check]\ninterval_ms = 200\nrise = 1\nfall = 2\n\
         timeout_ms = 100\n[[service]]\nlabel = \"db\"\nvip = \"127.0.0.182\"\nports = [41290]\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.183\"\nport = 41290\n",
    )
    .unwrap();
    let log = d.join("access.log");
    std::fs::write(
        d.join("node.toml"),
        format!(
            "[node]\nname = \"lb1\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.181\"\n\
             heartbeat_port = 46796\nsync_port = 47880\nmanage_vips = false\nstate_dir = \"state\"\n\
             [admin]\nlisten = \"127.0.0.181:49282\"\nsocket = \"admin.sock\"\n\
             [access_log]\npath = \"{}\"\n",
            log.display()
        ),
    )
    .unwrap();
    let child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(d)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = KillOnDrop(Some(child));

    // Until the server is up, connections are closed at once (logged as SC); then they get the answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    while through_vip().as_deref() != Some("hi\n") {
        assert!(
            Instant::now() < deadline,
            "service never answered; daemon log:\n{}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = wait_lines(&log, 1).len();
    assert_eq!(through_vip().as_deref(), Some("hi\n"));
    let all = wait_lines(&log, before + 1);
    let last = all.last().unwrap();
    // CLIENT:PORT [DATE] VIP:PORT SERVICE/SERVER Tc/Tt BYTES_OUT BYTES_IN END
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.len(), 8, "{last}");
    assert!(fields[0].starts_with("127.0.0.1:"), "{last}");
    assert!(
        fields[1].starts_with('[') && fields[1].ends_with(']'),
        "{last}"
    );
    assert_eq!(fields[2], "127.0.0.182:41290");
    assert_eq!(fields[3], "db/ctl-1");
    assert_eq!(fields[5], "3", "the server's 3 bytes: {last}");
    assert_eq!(fields[6], "0");
    assert_eq!(fields[7], "--");

    // logrotate: move the file away, signal, and the next line goes to a fresh file at the path.
    let rotated = d.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    // The reopen happens before the writer's next batch: connections until the fresh file has a line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&log).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no fresh access.log after SIGHUP"
        );
        assert_eq!(through_vip().as_deref(), Some("hi\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lines(&rotated).len() > before);
    assert!(lines(&log)[0].contains(" db/ctl-1 "), "{:?}", lines(&log));
}
