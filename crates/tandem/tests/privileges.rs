#![allow(clippy::unwrap_used)]
//! The privilege drop of `tandem run` started as root: each case runs in a forked child, which is
//! single-threaded like the daemon when it drops, and reports what it saw through a pipe.
//! Needs root (skipped otherwise) and the `nobody` user; creates no user.

// The binary has no library target: the module is compiled into this test as it is into the daemon.
#[path = "../src/daemon/privileges.rs"]
mod privileges;

mod common;

use common::{KillOnDrop, tandem};
use privileges::{KEPT_MASK, Outcome, Plan};
use serde_json::{Value, json};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

/// One fork at a time: a child must not be forked while another test's child is being set up.
static FORK: Mutex<()> = Mutex::new(());

/// The calling thread's credentials.
fn current() -> std::io::Result<privileges::Credentials> {
    privileges::read_status(Path::new("/proc/thread-self/status"))
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `child` in a forked process and returns the JSON it produced.
fn in_child(child: impl FnOnce() -> Value) -> Value {
    let _serial = FORK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only runs `child`, writes to the pipe and `_exit`s (never returns into the harness).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child))
            .unwrap_or_else(|_| json!({"panicked": true}));
        let bytes = report.to_string().into_bytes();
        let mut written = 0;
        while written < bytes.len() {
            // SAFETY: a valid buffer and our end of the pipe.
            let n = unsafe {
                libc::write(
                    fds[1],
                    bytes[written..].as_ptr().cast(),
                    bytes.len() - written,
                )
            };
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
        // SAFETY: ends the child without running the parent's destructors or the harness.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: our copy of the write end; the read end becomes a File we own.
    unsafe { libc::close(fds[1]) };
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut text = String::new();
    pipe.read_to_string(&mut text).unwrap();
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("child said {text:?}"))
}

fn outcome_json(outcome: &Result<Outcome, privileges::PrivilegeError>) -> Value {
    match outcome {
        Ok(Outcome::NotRoot { uid }) => json!({"not_root": uid}),
        Ok(Outcome::StayedRoot { reason }) => json!({"stayed_root": reason}),
        Ok(Outcome::Dropped {
            user,
            uid,
            gid,
            caps,
            warnings,
        }) => {
            json!({"dropped": {"user": user, "uid": uid, "gid": gid, "caps": caps, "warnings": warnings}})
        }
        Err(error) => json!({"error": error.to_string()}),
    }
}

fn creds_json() -> Value {
    let creds = current().unwrap();
    json!({
        "uids": creds.uids, "gids": creds.gids, "groups": creds.groups,
        "prm": creds.cap_prm, "eff": creds.cap_eff, "inh": creds.cap_inh,
        "bnd": creds.cap_bnd, "amb": creds.cap_amb, "nnp": creds.no_new_privs,
    })
}

/// SCHED_RR for the calling thread (what the heartbeat thread asks for), then back to normal.
fn try_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: the calling thread's policy, a valid param.
    let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0;
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) };
    ok
}

fn nobody() -> privileges::User {
    privileges::lookup_user("nobody")
        .unwrap()
        .expect("the nobody user")
}

/// A temp dir the test user can traverse, like /etc/tandem and /var/lib (whatever the umask).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn root_drops_to_the_user_with_exactly_the_four_capabilities() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nobody();
    let dir = open_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("generation"), "generation = 1\n").unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(&node, "[node]\n").unwrap();
    // Root-only, like a secret read before the drop: the daemon must not be able to read it after.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x".repeat(64)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A state_dir set to a directory of directories is not tandem's: left alone.
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("other")).unwrap();
    let plan = Plan {
        user: "nobody".into(),
        own: vec![state.clone(), shared.clone()],
        read: vec![node.clone()],
        // The state dir is the user's once handed over; the temp dir stays root's (like /etc/tandem).
        write: vec![state.clone(), dir.path().to_path_buf()],
    };
    let root_can_realtime = in_child(|| json!(try_realtime())) == json!(true);

    let child_state = state.clone();
    let report = in_child(move || {
        let outcome = privileges::drop_privileges(&plan);
        // What the daemon does next: start threads, bind a port below 1024, raise the heartbeat.
        let thread = std::thread::spawn(|| (creds_json(), try_realtime()))
            .join()
            .unwrap();
        let bind = std::net::TcpListener::bind("127.0.0.97:997")
            .map(|_| ())
            .map_err(|e| e.to_string());
        json!({
            "outcome": outcome_json(&outcome),
            "main": creds_json(),
            "thread": thread.0,
            "thread_realtime": thread.1,
            "bind_997": format!("{bind:?}"),
            "read_secret": std::fs::read(&secret).map(|_| ()).map_err(|e| e.kind().to_string()).err(),
            "write_state": std::fs::write(child_state.join("boot-epoch"), "1").is_ok(),
            "setuid_0": unsafe { libc::setuid(0) } == 0,
            "dumpable": unsafe { libc::prctl(libc::PR_GET_DUMPABLE) },
        })
    });

    eprintln!("root can SCHED_RR: {root_can_realtime}; after the drop: {report:#}");
    let dropped = &report["outcome"]["dropped"];
    assert_eq!(dropped["uid"], nobody.uid, "{report:#}");
    assert_eq!(dropped["caps"], KEPT_MASK, "{report:#}");
    let warnings: Vec<&str> = dropped["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{report:#}");
    assert!(warnings[0].contains("holds directories"), "{report:#}");
    assert!(
        warnings[1].contains(&format!("cannot write {}", dir.path().display())),
        "{report:#}"
    );
    for who in ["main", "thread"] {
        let creds = &report[who];
        assert_eq!(
            creds["uids"],
            json!(vec![nobody.uid; 4]),
            "{who}: {report:#}"
        );
        assert_eq!(
            creds["gids"],
            json!(vec![nobody.gid; 4]),
            "{who}: {report:#}"
        );
        assert_eq!(creds["groups"], json!([nobody.gid]), "{who}: {report:#}");
        for set in ["prm", "eff", "inh", "amb", "bnd"] {
            assert_eq!(
                creds[set],
                KEPT_MASK,
                "{who} Cap{set}: {} instead of {}",
                privileges::cap_names(creds[set].as_u64().unwrap()),
                privileges::cap_names(KEPT_MASK)
            );
        }
        assert_eq!(creds["nnp"], true, "{who}: {report:#}");
    }
    assert_eq!(
        report["bind_997"], "Ok(())",
        "CAP_NET_BIND_SERVICE: {report:#}"
    );
    assert_eq!(
        report["read_secret"], "permission denied",
        "no DAC override: {report:#}"
    );
    assert_eq!(
        report["write_state"], true,
        "the state dir was handed over: {report:#}"
    );
    assert_eq!(
        report["setuid_0"], false,
        "root is out of reach: {report:#}"
    );
    if std::fs::read_to_string("/proc/sys/fs/suid_dumpable").is_ok_and(|v| v.trim() == "0") {
        assert_eq!(
            report["dumpable"], 0,
            "no core dump, no ptrace by the user: {report:#}"
        );
    }
    if root_can_realtime {
        assert_eq!(report["thread_realtime"], true, "CAP_SYS_NICE: {report:#}");
    }
    // Handed over: the dir and the file in it; the config stays root's.
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), nobody.uid);
    assert_eq!(
        std::fs::metadata(state.join("generation")).unwrap().uid(),
        nobody.uid
    );
    assert_eq!(std::fs::metadata(&node).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&shared).unwrap().uid(), 0);
}

fn a_missing_user_or_a_closed_config_keeps_root_with_the_reason() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let report = in_child(|| {
        let outcome = privileges::drop_privileges(&Plan::new("tnd-no-such-user"));
        json!({"outcome": outcome_json(&outcome), "creds": creds_json()})
    });
    let reason = report["outcome"]["stayed_root"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("useradd --system"), "{report:#}");
    assert_eq!(report["creds"]["uids"], json!([0, 0, 0, 0]));

    // A config the user could not read on reload (in a 0700 dir of root's): the
    // daemon stays root instead of failing later, and nothing is handed over or left changed.
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = closed.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let node = closed.path().join("node.toml");
    std::fs::write(&node, "[node]\n").unwrap();
    let plan = Plan {
        user: "nobody".into(),
        own: vec![state.clone()],
        read: vec![node.clone()],
        write: Vec::new(),
    };
    let before = in_child(creds_json);
    let report = in_child(move || {
        let outcome = privileges::drop_privileges(&plan);
        json!({"outcome": outcome_json(&outcome), "creds": creds_json()})
    });
    let reason = report["outcome"]["stayed_root"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("could not reach"), "{report:#}");
    assert_eq!(report["creds"], before, "left as it was");
    assert_eq!(
        std::fs::metadata(&state).unwrap().uid(),
        0,
        "not handed over"
    );
}

fn nothing_to_do_when_not_root_and_refused_once_threads_run() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nobody();
    let report = in_child(move || {
        // SAFETY: plain ids; the child is ours to change.
        unsafe {
            libc::setgid(nobody.gid);
            libc::setuid(nobody.uid);
        }
        outcome_json(&privileges::drop_privileges(&Plan::new("nobody")))
    });
    assert_eq!(report, json!({"not_root": nobody.uid}));

    // This process runs the harness's threads (and one more to be sure): the switch is refused
    // before anything changes.
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || parked.recv());
    let outcome = privileges::drop_privileges(&Plan::new("nobody"));
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("threads already run"), "{error}");
    assert_eq!(current().unwrap().uids, [0; 4]);
    // Without the user there is nothing to refuse: root, with the warning.
    assert!(matches!(
        privileges::drop_privileges(&Plan::new("tnd-no-such-user")),
        Ok(Outcome::StayedRoot { .. })
    ));
    drop(stop);
    let _ = helper.join();
}

fn status_lines_are_parsed() {
    let text = "Name:\ttandem\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\nGroups:\t997 \n\
                CapInh:\t0000000000803400\nCapPrm:\t0000000000803400\nCapEff:\t0000000000803400\n\
                CapBnd:\t0000000000803400\nCapAmb:\t0000000000803400\nNoNewPrivs:\t1\n";
    let creds = privileges::parse_status(text).unwrap();
    assert_eq!(creds.uids, [998; 4]);
    assert_eq!(creds.gids, [997; 4]);
    assert_eq!(creds.groups, vec![997]);
    assert_eq!(creds.cap_eff, KEPT_MASK);
    assert_eq!(creds.cap_amb, KEPT_MASK);
    assert!(creds.no_new_privs);
    assert_eq!(
        privileges::cap_names(KEPT_MASK),
        "CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE"
    );
    assert!(privileges::parse_status("Uid:\t1 2\n").is_err());
    assert!(Path::new("/proc/thread-self/status").exists());
}

fn system_directories_are_never_handed_over() {
    for system in [
        "/",
        "/etc",
        "/etc/cron.d",
        "/root/.ssh",
        "/usr/lib",
        "/var/spool/cron",
        "/home/x",
    ] {
        assert!(privileges::is_system_dir(Path::new(system)), "{system}");
    }
    for state in [
        "/var/lib/tandem",
        "/run/tandem",
        "/tmp/.tmpA1b2/state",
        "/srv/tandem",
        "/etcetera",
    ] {
        assert!(!privileges::is_system_dir(Path::new(state)), "{state}");
    }
}

fn the_plan_for_a_node_covers_what_the_daemon_touches_after_the_drop() {
    let dir = open_tempdir();
    let base = dir.path();
    for file in ["cluster.toml", "node.toml", "secret", "admin.pw"] {
        std::fs::write(base.join(file), "").unwrap();
    }
    let text = "[node]\nname = \"a\"\nrole = \"secondary\"\naddress = \"127.0.0.1\"\npeer = \"127.0.0.2\"\n\
                manage_vips = false\nstate_dir = \"state\"\n\
                [admin]\nuser = \"ops\"\npassword_file = \"admin.pw\"\nsocket = \"run/admin.sock\"\n";
    let node = tandem_config::parse_node_str(text, "node.toml", Some(base)).unwrap();
    let plan = privileges::plan_for_node(
        "tandem",
        &node,
        &base.join("cluster.toml"),
        &base.join("node.toml"),
    );
    assert_eq!(plan.user, "tandem");
    // A socket elsewhere than /run/tandem is the operator's to prepare.
    assert_eq!(plan.own, vec![base.join("state")]);
    assert_eq!(
        plan.read,
        ["cluster.toml", "node.toml", "secret", "admin.pw"].map(|f| base.join(f))
    );
    assert_eq!(
        plan.write,
        vec![base.to_path_buf(), base.join("run")],
        "a secondary saves pushed configs; the daemon creates its socket"
    );
    // A standalone node without a secret file: nothing to write, nothing missing to read.
    std::fs::remove_file(base.join("secret")).unwrap();
    let solo = tandem_config::parse_node_str(
        &text.replace("peer = \"127.0.0.2\"\n", ""),
        "node.toml",
        Some(base),
    )
    .unwrap();
    let plan = privileges::plan_for_node(
        "tandem",
        &solo,
        &base.join("cluster.toml"),
        &base.join("node.toml"),
    );
    assert_eq!(
        plan.write,
        vec![base.join("run")],
        "only the socket's directory"
    );
    assert!(!plan.read.contains(&base.join("secret")));
}

/// A node of a pair whose secret is world-readable: `run` refuses it, `check` names the fix.
fn a_secret_others_can_read_is_refused_by_run() {
    let dir = open_tempdir();
    let base = dir.path();
    std::fs::write(
        base.join("cluster.toml"),
        "[cluster]\nname = \"leaky\"\n[[service]]\nlabel = \"web\"\nvip = \"127.0.0.117\"\nports = [23117]\n\
         mode = \"tcp\"\n[[service.server]]\nlabel = \"b\"\naddress = \"127.0.0.118\"\n",
    )
    .unwrap();
    std::fs::write(
        base.join("node.toml"),
        "[node]\nname = \"a\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.115\"\n\
         peer = \"127.0.0.116\"\nheartbeat_port = 26715\nsync_port = 27715\nmanage_vips = false\n\
         state_dir = \"state\"\n[admin]\nlisten = \"127.0.0.115:29115\"\nsocket = \"admin.sock\"\n",
    )
    .unwrap();
    let secret = base.join("secret");
    std::fs::write(&secret, "0123456789abcdef".repeat(4)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fix = format!("chmod 600 {}", secret.display());

    let check = tandem()
        .args(["check", "--config-dir"])
        .arg(base)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("readable by everyone") && said.contains(&fix),
        "{said}"
    );
    assert_eq!(check.status.code(), Some(1), "{said}");

    let run = tandem()
        .args(["run", "--config-dir"])
        .arg(base)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "started with a world-readable secret: {said}"
    );
    assert!(said.contains(&fix), "{said}");
    assert!(
        !said.contains("0123456789abcdef"),
        "no secret byte in the log"
    );
}

/// `tandem run` started as root with `[node] user = "nobody"`: every thread of the daemon runs as that user with
/// exactly the four capabilities, and still serves a port below 1024. Addresses used by no other test:
/// 127.0.0.98:998 (service), heartbeat 26697, sync 27781, admin 127.0.0.1:29083.
fn a_daemon_started_as_root_runs_as_the_user_with_the_four_capabilities() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let nobody = nobody();
    let dir = open_tempdir(); // 0755: the user must reach its config and state dir
    std::fs::write(
        dir.path().join("cluster.toml"),
        "[cluster]\nname = \"priv\"\n[[service]]\nlabel = \"low\"\nvip = \"127.0.0.98\"\nports = [998]\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"s\"\naddress = \"127.0.0.99\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.toml"),
        format!(
            "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             heartbeat_port = 26697\nsync_port = 27781\nmanage_vips = false\nstate_dir = \"{}/state\"\nuser = \"nobody\"\n\
             [admin]\nlisten = \"127.0.0.1:29083\"\nsocket = \"{}/run/admin.sock\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    // The socket's directory is the user's, as systemd's RuntimeDirectory= makes /run/tandem.
    std::fs::create_dir(dir.path().join("run")).unwrap();
    std::os::unix::fs::chown(dir.path().join("run"), Some(nobody.uid), Some(nobody.gid)).unwrap();
    let child = tandem()
        .args(["run", "--config-dir"])
        .arg(dir.path())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // A failed assertion must not leave a daemon running with capabilities.
    let mut daemon = KillOnDrop(Some(child));
    // Up when the service port (below 1024: CAP_NET_BIND_SERVICE) answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect("127.0.0.98:998").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not listen on 998; its log:\n{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut threads = 0;
    for task in tasks {
        let creds = privileges::read_status(&task.unwrap().path().join("status")).unwrap();
        assert_eq!(creds.uids, [nobody.uid; 4]);
        assert_eq!(
            creds.cap_eff,
            KEPT_MASK,
            "{}",
            privileges::cap_names(creds.cap_eff)
        );
        assert_eq!(creds.cap_prm, KEPT_MASK);
        assert_eq!(creds.cap_bnd, KEPT_MASK);
        assert!(creds.no_new_privs);
        threads += 1;
    }
    assert!(
        threads > 2,
        "runtime workers and the heartbeat thread were looked at"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("state")).unwrap().uid(),
        nobody.uid
    );
    // SAFETY: our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = daemon.0.as_mut().unwrap().wait().unwrap();
    assert!(
        status.success(),
        "{status:?}; its log:\n{}",
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
}

/// The tests, one after another in the main thread (`harness = false`): they fork, and a fork is only safe from a
/// process with no other threads: a child of libtest's multi-threaded harness hung on a lock another thread held
/// (seen in CI). Arguments filter by name, like libtest's.
fn main() {
    let tests: &[(&str, fn())] = &[
        (
            "root_drops_to_the_user_with_exactly_the_four_capabilities",
            root_drops_to_the_user_with_exactly_the_four_capabilities,
        ),
        (
            "a_missing_user_or_a_closed_config_keeps_root_with_the_reason",
            a_missing_user_or_a_closed_config_keeps_root_with_the_reason,
        ),
        (
            "nothing_to_do_when_not_root_and_refused_once_threads_run",
            nothing_to_do_when_not_root_and_refused_once_threads_run,
        ),
        ("status_lines_are_parsed", status_lines_are_parsed),
        (
            "system_directories_are_never_handed_over",
            system_directories_are_never_handed_over,
        ),
        (
            "the_plan_for_a_node_covers_what_the_daemon_touches_after_the_drop",
            the_plan_for_a_node_covers_what_the_daemon_touches_after_the_drop,
        ),
        (
            "a_secret_others_can_read_is_refused_by_run",
            a_secret_others_can_read_is_refused_by_run,
        ),
        (
            "a_daemon_started_as_root_runs_as_the_user_with_the_four_capabilities",
            a_daemon_started_as_root_runs_as_the_user_with_the_four_capabilities,
        ),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        if std::panic::catch_unwind(test).is_ok() {
            println!("test {name} ... ok");
            passed += 1;
        } else {
            println!("test {name} ... FAILED");
            failed.push(*name);
        }
    }
    println!(
        "test result: {}. {passed} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
