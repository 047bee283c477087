//! Least privilege when `tandem run` is started as root outside systemd: switch to an
//! unprivileged user keeping only the four capabilities the daemon uses, before any thread exists.
//!
//! Why before any thread: Linux credentials are per thread. glibc's `setresuid`/`setgroups`
//! broadcast the id change to every thread, but capabilities are not broadcast, and each other
//! thread (without `PR_SET_KEEPCAPS`) loses all of them at the switch; a thread started later
//! copies its creator's credentials. So the drop happens once, on the only thread, and everything
//! after (tokio workers, the heartbeat thread, relay and HTTP threads) starts already unprivileged
//! with exactly [`KEPT`]. Binding privileged ports, VIPs, raw ARP/ICMP sockets and the real-time
//! heartbeat keep working on those capabilities; files the daemon writes later (the state dir)
//! are handed to the user first.
//!
//! Under the hardened unit systemd starts the daemon as `tandem` with the same capabilities, and
//! there is nothing to do here (the effective uid is not 0).
// Until startup calls `drop_privileges`, only the tests (tests/privileges.rs) use this module.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `CAP_NET_BIND_SERVICE`: listeners on ports below 1024.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`: adding and removing VIPs, binding addresses not (yet) on the node.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`: gratuitous ARP / unsolicited neighbour advertisements, ICMP ping nodes.
pub const CAP_NET_RAW: u32 = 13;
/// `CAP_SYS_NICE`: SCHED_RR for the heartbeat thread (`[tuning] heartbeat_realtime`).
pub const CAP_SYS_NICE: u32 = 23;

/// What the daemon keeps, and all it keeps: permitted, effective, inheritable and ambient.
pub const KEPT: [u32; 4] = [
    CAP_NET_BIND_SERVICE,
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_SYS_NICE,
];

/// The capability mask of [`KEPT`] (bit n = capability n), as `/proc/self/status` prints it.
pub const KEPT_MASK: u64 =
    1 << CAP_NET_BIND_SERVICE | 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW | 1 << CAP_SYS_NICE;

/// What to hand over and check before dropping.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The user to become.
    pub user: String,
    /// Directories the daemon writes at run time (the state dir, the admin socket's directory):
    /// handed to the user with the files directly in them. A directory holding subdirectories is
    /// not touched (a mistyped `state_dir = "/var/lib"` must not give /var/lib away).
    pub own: Vec<PathBuf>,
    /// Files the daemon reads again after start (cluster.toml and node.toml on reload): if the user
    /// could not read one, the daemon stays root (with a warning) rather than fail later.
    pub read: Vec<PathBuf>,
    /// Directories the daemon writes but does not own (the config dir, where a secondary saves the
    /// configuration the primary pushed; a configured admin socket's directory): a warning names
    /// each the user cannot write.
    pub write: Vec<PathBuf>,
}

impl Plan {
    pub fn new(user: impl Into<String>) -> Plan {
        Plan {
            user: user.into(),
            ..Plan::default()
        }
    }
}

/// The plan for `tandem run` with `node`: the user owns the state dir (and `/run/tandem`, made
/// here when the admin socket is the default one: outside systemd nobody else makes it), reads the
/// config files, the secret, the password file and the admin certificate and key, and (on a node
/// with a peer) writes the config dir, where a secondary saves what the primary pushes.
pub fn plan_for_node(
    user: &str,
    node: &tandem_config::NodeConfig,
    cluster_path: &Path,
    node_path: &Path,
) -> Plan {
    let mut plan = Plan::new(user);
    plan.own = vec![node.node.state_dir.clone()];
    let socket = &node.admin.socket;
    if socket.as_os_str() == tandem_config::node_defaults::ADMIN_SOCKET
        && let Some(dir) = socket.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        plan.own.push(dir.to_path_buf());
    }
    plan.read = [
        Some(cluster_path),
        Some(node_path),
        Some(node.node.secret_file.as_path()),
        node.admin.password_file.as_deref(),
        node.admin.tls_certificate.as_deref(),
        node.admin.tls_key.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|path| path.exists())
    .map(Path::to_path_buf)
    .collect();
    if node.node.peer.is_some() {
        plan.write
            .extend(cluster_path.parent().map(Path::to_path_buf));
    }
    // A socket elsewhere than the runtime directory is created after the drop: its directory must be the user's
    // to write (as systemd's RuntimeDirectory= is); a warning says so before the socket fails.
    if socket.as_os_str() != tandem_config::node_defaults::ADMIN_SOCKET
        && let Some(dir) = socket.parent()
    {
        plan.write.push(dir.to_path_buf());
    }
    plan
}

/// What `drop_privileges` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not started as root (systemd's `User=`, or an operator's shell): nothing to do.
    NotRoot { uid: u32 },
    /// Still root, for the reason given (logged as a warning).
    StayedRoot { reason: String },
    /// Now running as `user` with `caps` (the mask of what is kept, a subset of [`KEPT_MASK`]).
    Dropped {
        user: String,
        uid: u32,
        gid: u32,
        caps: u64,
        /// What the user cannot do that the daemon may want later (logged as warnings).
        warnings: Vec<String>,
    },
}

/// A step of the switch failed. When it happens after the first id change the process is in an
/// unknown state: the caller must exit, never go on.
#[derive(Debug)]
pub struct PrivilegeError {
    pub step: String,
    pub source: io::Error,
}

impl std::fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dropping privileges: {}: {}", self.step, self.source)
    }
}

impl std::error::Error for PrivilegeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failed(step: impl Into<String>) -> impl FnOnce(io::Error) -> PrivilegeError {
    let step = step.into();
    move |source| PrivilegeError { step, source }
}

/// 0 or -1 with errno, as libc returns it, to a `Result`.
fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// prctl with unsigned-long arguments, as the kernel reads them (a variadic `int` would leave the
/// upper half of the register undefined).
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// The supplementary groups of the calling thread.
fn groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: size 0 asks for the count only.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut list = vec![0; usize::try_from(count).map_err(|_| io::Error::last_os_error())?];
    // SAFETY: `list` has room for `count` ids.
    let count = unsafe { libc::getgroups(count, list.as_mut_ptr()) };
    list.truncate(usize::try_from(count).map_err(|_| io::Error::last_os_error())?);
    Ok(list)
}

fn set_groups(list: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: `list` is valid for its length.
    check(unsafe { libc::setgroups(list.len(), list.as_ptr()) })
}

/// A user from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in the password database (`None`: no such user).
pub fn lookup_user(name: &str) -> io::Result<Option<User>> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name holds a NUL byte"))?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); getpwnam_r fills it.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives `entry`'s use below.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if result.is_null() {
            // 0 or one of the "not found" codes some NSS modules return.
            return match rc {
                0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => Ok(None),
                code => Err(io::Error::from_raw_os_error(code)),
            };
        }
        return Ok(Some(User {
            name: name.to_owned(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        }));
    }
}

/// Threads of this process (from /proc/self/task).
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Switches to `plan.user` keeping only [`KEPT`], if started as root. Call it once, before the
/// process starts any thread (it refuses otherwise), after what needs root and not one of the
/// kept capabilities (reading root-only files such as the secret and the password file).
///
/// A missing user, or one that could not read what the daemon needs, is not an error: the
/// daemon keeps running as root and says so (existing installs and tests run without the user).
pub fn drop_privileges(plan: &Plan) -> Result<Outcome, PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(Outcome::NotRoot { uid: euid });
    }
    let user = match lookup_user(&plan.user) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Ok(stay_root(format!(
                "no user `{0}`: create the system user (`useradd --system --no-create-home --shell /usr/sbin/nologin {0}`) \
                 so the daemon runs unprivileged",
                plan.user
            )));
        }
        Err(error) => {
            return Ok(stay_root(format!(
                "cannot look up user `{}`: {error}",
                plan.user
            )));
        }
    };
    if user.uid == 0 {
        return Ok(stay_root(format!("user `{}` has uid 0", plan.user)));
    }
    // Checked after the look-up, so a machine without the user (tests, old installs) is never refused.
    let threads = thread_count().map_err(failed("counting threads in /proc/self/task"))?;
    if threads != 1 {
        return Err(PrivilegeError {
            step: format!(
                "{threads} threads already run; capabilities are per thread, so the switch must happen before the first one starts"
            ),
            source: io::Error::from(io::ErrorKind::Unsupported),
        });
    }

    // Only our own group: root's supplementary groups (disk, adm, ...) must not come along.
    let root_groups = groups().map_err(failed("getgroups"))?;
    set_groups(&[user.gid]).map_err(failed("setgroups"))?;
    if let Err(reason) = access_as(&user, plan) {
        // Nothing changed but the supplementary groups: put them back.
        set_groups(&root_groups).map_err(failed("setgroups back"))?;
        return Ok(stay_root(reason));
    }
    let mut warnings = Vec::new();
    for dir in &plan.own {
        hand_over(dir, &user, &mut warnings).map_err(failed(format!(
            "handing {} to {}",
            dir.display(),
            user.name
        )))?;
    }

    let last_cap = last_cap();
    let available = read_status(Path::new("/proc/thread-self/status"))
        .map_err(failed("reading /proc/thread-self/status"))?
        .cap_prm;
    let keep = KEPT_MASK & available;
    for cap in KEPT {
        if keep & (1 << cap) == 0 {
            warnings.push(format!(
                "{} is not available to this process (container?): {}",
                cap_name(cap),
                what_needs(cap)
            ));
        }
    }
    // The bounding set first, while CAP_SETPCAP is still ours: nothing beyond the four can ever
    // come back, not even through a set-uid program.
    for cap in 0..=last_cap {
        if keep & (1 << cap) == 0 {
            match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0) {
                Ok(()) => {}
                // A capability this kernel does not know.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => {
                    return Err(failed(format!(
                        "dropping {} from the bounding set",
                        cap_name(cap)
                    ))(e));
                }
            }
        }
    }
    // Keep the permitted set across the uid change (the effective set is cleared regardless).
    prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(failed("PR_SET_KEEPCAPS"))?;
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresgid(user.gid, user.gid, user.gid) }).map_err(failed("setresgid"))?;
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresuid(user.uid, user.uid, user.uid) }).map_err(failed("setresuid"))?;
    set_caps(keep).map_err(failed("capset"))?;
    for cap in KEPT {
        if keep & (1 << cap) != 0 {
            // Ambient: so the set survives an exec (nothing is exec'ed today; a hook may be).
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                libc::c_ulong::from(cap),
            )
            .map_err(failed(format!("raising ambient {}", cap_name(cap))))?;
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(failed("clearing PR_SET_KEEPCAPS"))?;
    // Like the unit's NoNewPrivileges=yes: no exec can ever gain a privilege.
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(failed("PR_SET_NO_NEW_PRIVS"))?;

    // Prove it: root must be out of reach, and the sets exactly what we asked for.
    // SAFETY: plain id argument; success here would be the bug this guards against.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(PrivilegeError {
            step: "setuid(0) succeeded after the switch".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
    }
    let now = read_status(Path::new("/proc/thread-self/status"))
        .map_err(failed("reading /proc/thread-self/status after the switch"))?;
    if now.uids != [user.uid; 4]
        || now.gids != [user.gid; 4]
        || now.groups != [user.gid]
        || now.cap_eff != keep
        || now.cap_prm != keep
        || now.cap_amb != keep
        || now.cap_bnd != keep
    {
        return Err(PrivilegeError {
            step: format!(
                "the switch left {now:?}, not uid {} and caps {keep:#x}",
                user.uid
            ),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
    }
    for dir in &plan.write {
        if !accessible(dir, libc::W_OK | libc::X_OK, libc::AT_EACCESS) {
            warnings.push(format!(
                "user `{}` cannot write {}: the daemon writes there (the configuration the primary pushes, \
                 or the admin socket) (`chown {} {}`)",
                user.name,
                dir.display(),
                user.name,
                dir.display()
            ));
        }
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        user = %user.name,
        uid = user.uid,
        gid = user.gid,
        caps = %cap_names(keep),
        "dropped root"
    );
    Ok(Outcome::Dropped {
        user: user.name,
        uid: user.uid,
        gid: user.gid,
        caps: keep,
        warnings,
    })
}

fn stay_root(reason: String) -> Outcome {
    tracing::warn!("running as root: {reason}");
    Outcome::StayedRoot { reason }
}

/// Directories whose contents root trusts (programs, cron jobs, keys, logs): never handed over.
const SYSTEM_DIRS: [&str; 14] = [
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/sbin",
    "/sys",
    "/usr",
    "/var/log",
    "/var/spool",
    "/home",
];

/// `/`, or in one of [`SYSTEM_DIRS`] (`real` already canonical).
pub fn is_system_dir(real: &Path) -> bool {
    real == Path::new("/") || SYSTEM_DIRS.iter().any(|system| real.starts_with(system))
}

/// Gives `dir` and the files directly in it to `user` (not following symlinks).
fn hand_over(dir: &Path, user: &User, warnings: &mut Vec<String>) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        warnings.push(format!(
            "{} is not a directory; left as it is",
            dir.display()
        ));
        return Ok(());
    }
    // Where the path really leads: a state_dir pointing into the system (by mistake, or written
    // into node.toml by someone who took the daemon's account) is never given away.
    let dir = &std::fs::canonicalize(dir)?;
    if is_system_dir(dir) {
        warnings.push(format!(
            "{} is a system directory: not handed to `{}` (is it the right state_dir?)",
            dir.display(),
            user.name
        ));
        return Ok(());
    }
    let entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    if entries
        .iter()
        .any(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
    {
        warnings.push(format!(
            "{} holds directories, so it is not only tandem's: not handed to `{}` (is it the right state_dir?)",
            dir.display(),
            user.name
        ));
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))?;
    for entry in entries {
        std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}

/// Checks, as `user` would, what the daemon needs after the switch: the `own` directories
/// reachable (they are handed over next, so the user can then write them) and the `read` files
/// readable (`Err` with the reason). The `write` directories are tried after the switch, as
/// warnings only.
fn access_as(user: &User, plan: &Plan) -> Result<(), String> {
    // The effective ids only, and back: `faccessat(AT_EACCESS)` answers for them.
    // SAFETY: plain id arguments (-1 leaves an id unchanged).
    let switched = check(unsafe { libc::setresgid(u32::MAX, user.gid, u32::MAX) })
        .and_then(|()| check(unsafe { libc::setresuid(u32::MAX, user.uid, u32::MAX) }));
    let problem = match switched {
        Err(e) => Some(format!("cannot try the files as `{}`: {e}", user.name)),
        Ok(()) => {
            let unreachable = plan.own.iter().find(|dir| {
                dir.parent()
                    .is_some_and(|parent| !accessible(parent, libc::X_OK, libc::AT_EACCESS))
            });
            let unreadable = plan
                .read
                .iter()
                .find(|file| !accessible(file, libc::R_OK, libc::AT_EACCESS));
            match (unreachable, unreadable) {
                (Some(dir), _) => Some(format!(
                    "user `{}` could not reach {} (a directory above it is closed to it)",
                    user.name,
                    dir.display()
                )),
                (None, Some(file)) => Some(format!(
                    "user `{}` could not read {} (make it and the directories above it readable by the user)",
                    user.name,
                    file.display()
                )),
                (None, None) => None,
            }
        }
    };
    // Back to root: euid 0 again makes the effective capabilities the permitted ones.
    // SAFETY: plain id arguments; the saved ids are still 0.
    let back = check(unsafe { libc::setresuid(u32::MAX, 0, u32::MAX) })
        .and_then(|()| check(unsafe { libc::setresgid(u32::MAX, 0, u32::MAX) }));
    if let Err(e) = back {
        // Cannot happen with saved ids 0; if it did, refusing to go on is the safe answer.
        return Err(format!(
            "could not return to root after the access check: {e}"
        ));
    }
    match problem {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

fn accessible(path: &Path, mode: libc::c_int, flags: libc::c_int) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, flags) == 0 }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|&last: &u32| last < 64)
        .unwrap_or(40)
}

/// `capset` for the calling thread: permitted = effective = inheritable = `mask`.
pub(super) fn set_caps(mask: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = (mask & 0xffff_ffff) as u32;
    let high = (mask >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: low,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: high,
        },
    ];
    // SAFETY: version-3 header and two data words, as capset(2) expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The credentials one thread runs with, as /proc prints them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// Real, effective, saved, filesystem.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
}

/// Parses a `/proc/PID/status` (or `/proc/PID/task/TID/status`) file.
pub fn read_status(path: &Path) -> io::Result<Credentials> {
    parse_status(&std::fs::read_to_string(path)?)
}

/// The credential lines of a /proc status text.
pub fn parse_status(text: &str) -> io::Result<Credentials> {
    let bad =
        |line: &str| io::Error::new(io::ErrorKind::InvalidData, format!("status line `{line}`"));
    let mut creds = Credentials::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let ids = |value: &str| -> io::Result<[u32; 4]> {
            let parsed: Vec<u32> = value
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| bad(line))?;
            parsed.try_into().map_err(|_| bad(line))
        };
        let mask = |value: &str| u64::from_str_radix(value, 16).map_err(|_| bad(line));
        match key {
            "Uid" => creds.uids = ids(value)?,
            "Gid" => creds.gids = ids(value)?,
            "Groups" => {
                creds.groups = value
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad(line))?;
            }
            "CapInh" => creds.cap_inh = mask(value)?,
            "CapPrm" => creds.cap_prm = mask(value)?,
            "CapEff" => creds.cap_eff = mask(value)?,
            "CapBnd" => creds.cap_bnd = mask(value)?,
            "CapAmb" => creds.cap_amb = mask(value)?,
            "NoNewPrivs" => creds.no_new_privs = value == "1",
            _ => {}
        }
    }
    Ok(creds)
}

/// `CAP_NET_ADMIN` and friends; `cap_N` for the others.
pub fn cap_name(cap: u32) -> String {
    match cap {
        CAP_NET_BIND_SERVICE => "CAP_NET_BIND_SERVICE".into(),
        CAP_NET_ADMIN => "CAP_NET_ADMIN".into(),
        CAP_NET_RAW => "CAP_NET_RAW".into(),
        CAP_SYS_NICE => "CAP_SYS_NICE".into(),
        other => format!("cap_{other}"),
    }
}

/// The names in `mask`, space-separated (as in a unit's `AmbientCapabilities=`).
pub fn cap_names(mask: u64) -> String {
    (0..64)
        .filter(|cap| mask & (1 << cap) != 0)
        .map(cap_name)
        .collect::<Vec<_>>()
        .join(" ")
}

fn what_needs(cap: u32) -> &'static str {
    match cap {
        CAP_NET_BIND_SERVICE => "services on ports below 1024 cannot listen",
        CAP_NET_ADMIN => "VIPs cannot be added or removed",
        CAP_NET_RAW => "no gratuitous ARP / neighbour advertisements, no ICMP ping nodes",
        CAP_SYS_NICE => "the heartbeat thread stays at normal priority",
        _ => "",
    }
}
