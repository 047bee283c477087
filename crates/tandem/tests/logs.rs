//! `[log] format = "json"`: every line the daemon writes is one JSON object with the time, the
//! level, the target, the message and the event's fields — what a log shipper parses.
#![allow(clippy::unwrap_used)]

mod common;

use common::{KillOnDrop, tandem};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn json_log_lines_are_objects_with_time_level_target_message_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(
        path.join("cluster.toml"),
        "[cluster]\nname = \"log-test\"\n[health_check]\ninterval_ms = 100\nrise = 1\nfall = 1\n\
         [[service]]\nlabel = \"db\"\nvip = \"127.0.0.76\"\nports = [25306]\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"ctl-1\"\naddress = \"127.0.0.77\"\nport = 25306\n",
    )
    .unwrap();
    std::fs::write(
        path.join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26697\nmanage_vips = false\nstate_dir = \"{0}/state\"\n\
             [admin]\nlisten = \"127.0.0.1:29083\"\nsocket = \"{0}/admin.sock\"\n[log]\nformat = \"json\"\n",
            path.display()
        ),
    )
    .unwrap();
    // ctl-1 answers (the kernel completes the check's connect from the backlog) until it is dropped.
    let mut backend = Some(std::net::TcpListener::bind("127.0.0.77:25306").unwrap());
    let mut child = tandem()
        .arg("run")
        .arg("--config-dir")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let daemon = KillOnDrop(Some(child));
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The node becomes active (a state change at warn, with its reason); ctl-1 comes UP, then its
    // listener goes away and it goes DOWN (a warn event with the service and server as fields).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let (mut server_down, mut state_change) = (false, false);
    while !(server_down && state_change) && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some(), "no {key}: {line}");
        }
        let message = event["message"].as_str().unwrap_or_default();
        if message.starts_with("server UP") {
            assert_eq!(event["level"], "INFO", "{line}");
            backend = None;
        }
        if message.starts_with("server DOWN") {
            assert_eq!(event["level"], "WARN", "{line}");
            assert_eq!(event["service"], "db", "{line}");
            assert_eq!(event["server"], "ctl-1", "{line}");
            server_down = true;
        }
        if message == "cluster state changed" && event["to"] == "active" {
            assert_eq!(event["level"], "WARN", "{line}");
            assert!(
                event["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{line}"
            );
            state_change = true;
        }
        seen.push(line);
    }
    assert!(
        server_down && state_change,
        "server DOWN seen: {server_down}, state change seen: {state_change}; lines:\n{}",
        seen.join("\n")
    );

    // Every server down: 50 clients in a burst get one "no real server" line, not 50; the next one,
    // a second later, says how many were held back.
    let connect = || {
        if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.76:25306") {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = std::io::Read::read(&mut s, &mut [0u8; 16]);
        }
    };
    for _ in 0..50 {
        connect();
    }
    std::thread::sleep(Duration::from_millis(1100));
    connect();
    let mut no_server = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "no real server available; closing client connection" {
            no_server.push(event);
        }
    }
    drop(daemon);
    drop(backend);
    assert_eq!(no_server.len(), 2, "{no_server:?}");
    assert_eq!(no_server[0]["held_back"], 0, "{no_server:?}");
    assert_eq!(no_server[1]["held_back"], 49, "{no_server:?}");
}
