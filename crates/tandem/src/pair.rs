//! `tandem pair`: pairing two fresh nodes with a one-time code (docs/pairing.md).
//!
//! The protocol is `tandem-pair`'s (sans-IO); this module moves its bytes over one TCP
//! connection with deadlines, and owns the files: it reads this node's `node.toml` (and on the
//! primary `cluster.toml` and the secret), edits `node.toml`'s `[node] role` and `peer` with
//! `toml_edit` (comments and every other setting stay as written), checks the result with
//! `tandem check`'s logic on staged copies before anything is replaced, and then replaces the
//! files by rename (the secret with mode 0600).
//!
//! On the secondary, `tandem pair --accept` listens on `[node] address` and `sync_port` (7778:
//! the port the pair already opens between them; a node that has no peer yet runs no sync
//! listener), prints the code and waits up to `--wait` seconds. On the primary,
//! `tandem pair --peer ADDRESS[:PORT]` reads the code (a prompt on a terminal, else the first line
//! of `--code-file FILE` or of standard input), connects and sends the secret (generated like
//! `tandem keygen` when this node has none) and `cluster.toml`.

use anyhow::{Context, Result, anyhow, bail};
use ring::rand::SystemRandom;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tandem_config::NodeConfig;
use tandem_pair::{
    Acceptor, Code, Event, Initiator, NodeInfo, PairError, Paired, Refusal, Zeroizing,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one connection may take once it is open (the code is typed before connecting, so
/// no person is waited for inside a session).
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that end before the code was tried (a scanner, a sync dialer, a primary whose
/// configuration does not fit) are reported this many times, then only counted.
const REPORTED_STRAY_CONNECTIONS: u32 = 10;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("side").required(true).args(["accept", "peer"]))]
pub struct PairArgs {
    /// On the secondary: print a one-time code and wait for the primary to connect.
    #[arg(long)]
    accept: bool,
    /// With --accept: where to listen (default: [node] address and sync_port, i.e. 7778).
    #[arg(long, value_name = "ADDR[:PORT]", requires = "accept")]
    listen: Option<String>,
    /// On the primary: the secondary's address (default port: this node's sync_port, 7778).
    #[arg(long, value_name = "ADDRESS[:PORT]")]
    peer: Option<String>,
    /// With --peer: read the code from the first line of FILE instead of asking for it
    /// (without this and off a terminal, the code is read from standard input).
    #[arg(long, value_name = "FILE", requires = "peer")]
    code_file: Option<PathBuf>,
    /// Pair even though this node already belongs to a cluster (a secret file exists and
    /// [node] peer is set): its peer, role, secret (secondary) and cluster.toml (secondary)
    /// are replaced.
    #[arg(long)]
    force: bool,
    /// With --accept: how long to wait for the primary, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        requires = "accept"
    )]
    wait: u64,
}

/// `tandem pair ...`.
pub fn run(args: &PairArgs, cluster_path: &Path, node_path: &Path) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.accept {
        runtime.block_on(accept(args, cluster_path, node_path))
    } else {
        let peer = args
            .peer
            .as_deref()
            .ok_or_else(|| anyhow!("--peer ADDRESS or --accept is needed"))?;
        runtime.block_on(initiate(args, peer, cluster_path, node_path))
    }
}

// --- this node's files -----------------------------------------------------------------------

struct Local {
    node_path: PathBuf,
    node_text: String,
    node: NodeConfig,
}

impl Local {
    fn read(node_path: &Path) -> Result<Local> {
        let node_text = std::fs::read_to_string(node_path)
            .with_context(|| format!("{}: cannot read", node_path.display()))?;
        let node = tandem_config::parse_node_str(
            &node_text,
            &node_path.display().to_string(),
            tandem_config::node_base_dir(node_path).as_deref(),
        )
        .map_err(|diags| {
            anyhow!(
                "{} has errors; fix them first:\n{}",
                node_path.display(),
                diags
            )
        })?;
        Ok(Local {
            node_path: node_path.to_path_buf(),
            node_text,
            node,
        })
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.node.node.name.clone(),
            address: self.node.node.address,
            heartbeat_port: self.node.node.heartbeat_port,
            sync_port: self.node.node.sync_port,
        }
    }

    /// Already part of a cluster: a secret file and a configured peer.
    fn membership(&self) -> Option<String> {
        let peer = self.node.node.peer?;
        let secret = &self.node.node.secret_file;
        secret.exists().then(|| {
            format!(
                "{} already belongs to a cluster: its peer is {peer} ({}) and it has a shared secret ({}); \
                 run with --force to pair it anew",
                self.node.node.name,
                self.node_path.display(),
                secret.display()
            )
        })
    }
}

/// node.toml with `[node] role` and `peer` set, everything else as written. The peer's name
/// goes into a comment after `peer` (node.toml has no key for it).
pub(crate) fn edit_node_toml(text: &str, role: &str, peer: &NodeInfo) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("node.toml is not valid TOML")?;
    let node = doc
        .get_mut("node")
        .and_then(|item| item.as_table_like_mut())
        .ok_or_else(|| anyhow!("node.toml has no [node] table"))?;
    set_keeping_decor(node, "role", role, None);
    let comment = format!(
        "  # {} (written by `tandem pair`)",
        peer.name.replace(['\n', '\r'], " ")
    );
    set_keeping_decor(node, "peer", &peer.address.to_string(), Some(&comment));
    Ok(doc.to_string())
}

/// Replaces the value of `key` keeping the text around it (indentation, a trailing comment
/// unless `comment` replaces it), or appends the key to the table.
fn set_keeping_decor(
    table: &mut dyn toml_edit::TableLike,
    key: &str,
    value: &str,
    comment: Option<&str>,
) {
    let mut new = toml_edit::Value::from(value);
    if let Some(old) = table.get_mut(key).and_then(|item| item.as_value_mut()) {
        let decor = old.decor().clone();
        *new.decor_mut() = decor;
        if let Some(comment) = comment {
            new.decor_mut().set_suffix(comment);
        }
        *old = new;
    } else {
        if let Some(comment) = comment {
            new.decor_mut().set_prefix(" ");
            new.decor_mut().set_suffix(comment);
        }
        table.insert(key, toml_edit::Item::Value(new));
    }
}

/// A file written next to its target and renamed over it on `commit`; removed if dropped
/// before that (a refused or failed pairing leaves nothing behind).
struct Staged {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes `bytes` to a hidden file beside `target`, with `mode` and the owner of `like`
    /// (the file it replaces or a sibling) when that is readable.
    fn write(target: &Path, bytes: &[u8], mode: u32, like: Option<&Path>) -> Result<Staged> {
        let name = target
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a file path", target.display()))?
            .to_string_lossy()
            .into_owned();
        let path = target.with_file_name(format!(".{name}.pairing-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let staged = Staged {
            path: path.clone(),
            target: target.to_path_buf(),
            committed: false,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        // The umask may have cleared bits of `mode`; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(meta) = like.and_then(|p| std::fs::metadata(p).ok()) {
            // Keep the owner the replaced file had (only root may change it; others keep theirs).
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        }
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(staged)
    }

    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.path, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        if let Some(dir) = self.target.parent()
            && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn mode_of(path: &Path, default: u32) -> u32 {
    std::fs::metadata(path).map_or(default, |m| m.permissions().mode() & 0o7777)
}

/// Runs `tandem check`'s logic on the staged files; its messages name the real files.
fn check_staged(
    cluster: &Path,
    node: &Staged,
    real_cluster: &Path,
) -> Result<tandem_config::Loaded, String> {
    tandem_config::check(cluster, &node.path).map_err(|diags| {
        diags
            .to_string()
            .replace(
                &node.path.display().to_string(),
                &node.target.display().to_string(),
            )
            .replace(
                &cluster.display().to_string(),
                &real_cluster.display().to_string(),
            )
    })
}

// --- the connection ----------------------------------------------------------------------------

/// What both roles offer the connection driver.
trait Machine {
    fn handle_bytes(&mut self, data: &[u8], now_ms: u64) -> Result<Option<Event>, PairError>;
    fn handle_eof(&mut self) -> Result<(), PairError>;
    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), PairError>;
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    fn deadline_ms(&self) -> u64;
    fn is_finished(&self) -> bool;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn handle_bytes(&mut self, d: &[u8], now: u64) -> Result<Option<Event>, PairError> {
                <$t>::handle_bytes(self, d, now)
            }
            fn handle_eof(&mut self) -> Result<(), PairError> {
                <$t>::handle_eof(self)
            }
            fn handle_timeout(&mut self, now: u64) -> Result<(), PairError> {
                <$t>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self) -> Option<Vec<u8>> {
                <$t>::poll_transmit(self)
            }
            fn deadline_ms(&self) -> u64 {
                <$t>::deadline_ms(self)
            }
            fn is_finished(&self) -> bool {
                <$t>::is_finished(self)
            }
        }
    };
}
machine!(Initiator);
machine!(Acceptor);

/// Milliseconds since the session's clock started: the machines' injected time.
fn now_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Moves bytes between `stream` and `machine` until the session ends; `decide` answers the
/// machine's events (and may end the session with an error). Every wait is bounded by the
/// machine's deadline.
async fn drive<M: Machine>(
    stream: &mut TcpStream,
    machine: &mut M,
    start: Instant,
    mut decide: impl FnMut(&mut M, Event) -> Result<(), PairError>,
) -> Result<(), PairError> {
    let mut buffer = vec![0u8; 16 * 1024];
    let result = loop {
        if let Err(e) = flush(stream, machine).await {
            break Err(e);
        }
        if machine.is_finished() {
            break Ok(());
        }
        let left = machine.deadline_ms().saturating_sub(now_ms(start));
        let read =
            tokio::time::timeout(Duration::from_millis(left), stream.read(&mut buffer)).await;
        let mut input: &[u8] = match read {
            Err(_elapsed) => match machine.handle_timeout(now_ms(start).max(machine.deadline_ms()))
            {
                Err(e) => break Err(e),
                Ok(()) => continue,
            },
            Ok(Ok(0)) => match machine.handle_eof() {
                Err(e) => break Err(e),
                Ok(()) => break Ok(()),
            },
            Ok(Ok(n)) => &buffer[..n],
            Ok(Err(e)) => break Err(PairError::Closed(io_leak(e))),
        };
        let mut failed = None;
        // Bounded: each round consumes a buffered frame or ends.
        for _ in 0..64 {
            match machine.handle_bytes(input, now_ms(start)) {
                Ok(Some(event)) => {
                    if let Err(e) = decide(machine, event) {
                        failed = Some(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            input = &[];
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    // Tell the peer why (an abort or a sealed refusal may be queued), then close.
    let _ = flush(stream, machine).await;
    let _ = stream.shutdown().await;
    result
}

/// The machines' error holds a static description; an I/O error on the socket is rare enough
/// to be named generically.
fn io_leak(_e: std::io::Error) -> &'static str {
    "(connection error)"
}

async fn flush<M: Machine>(stream: &mut TcpStream, machine: &mut M) -> Result<(), PairError> {
    while let Some(bytes) = machine.poll_transmit() {
        let write = tokio::time::timeout(SESSION_TIMEOUT, stream.write_all(&bytes)).await;
        if !matches!(write, Ok(Ok(()))) {
            return Err(PairError::Closed("while we were sending"));
        }
    }
    Ok(())
}

fn parse_endpoint(text: &str, default_port: u16) -> Result<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let resolved = if text.contains(':') {
        text.to_socket_addrs()
    } else {
        (text, default_port).to_socket_addrs()
    };
    resolved
        .with_context(|| format!("{text}: not an address (ADDRESS or ADDRESS:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("{text}: the name has no address"))
}

// --- the secondary -----------------------------------------------------------------------------

async fn accept(args: &PairArgs, cluster_path: &Path, node_path: &Path) -> Result<ExitCode> {
    let local = Local::read(node_path)?;
    if let Some(membership) = local.membership()
        && !args.force
    {
        bail!("{membership}");
    }
    let me = local.info();
    let listen = match &args.listen {
        Some(text) => parse_endpoint(text, me.sync_port)?,
        None => SocketAddr::new(me.address, me.sync_port),
    };
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen on {listen} (is tandem running here? A paired node's daemon holds its sync port: \
             stop it first, or choose another with --listen)"
        )
    })?;
    let code = Code::generate(&SystemRandom::new())?;
    let wait = Duration::from_secs(args.wait);
    // What the operator types on the primary: this node's address when listening on all of them.
    let reachable = if listen.ip().is_unspecified() {
        me.address
    } else {
        listen.ip()
    };
    let hint_address = if listen.port() == me.sync_port {
        reachable.to_string()
    } else {
        SocketAddr::new(reachable, listen.port()).to_string()
    };
    println!(
        "tandem pair: {} waits for its primary on {listen} for {} s (Ctrl-C to stop)",
        me.name,
        wait.as_secs()
    );
    println!("one-time code: {code}");
    println!("on the primary, run: tandem pair --peer {hint_address}   and type the code");
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let deadline = start + wait;
    let mut strays = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (mut stream, from) = match tokio::time::timeout(left, listener.accept()).await {
            Err(_) => bail!(
                "timed out: no primary paired within {} s; nothing written (run `tandem pair --accept` again for a new code)",
                wait.as_secs()
            ),
            Ok(Err(e)) => {
                // E.g. too many open files: wait a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                strays += 1;
                if strays <= REPORTED_STRAY_CONNECTIONS {
                    eprintln!("tandem pair: accept failed: {e}");
                }
                continue;
            }
            Ok(Ok(accepted)) => accepted,
        };
        let session_start = Instant::now();
        let timeout = SESSION_TIMEOUT.min(deadline.saturating_duration_since(session_start));
        let mut acceptor = Acceptor::new(
            code.clone(),
            me.clone(),
            0,
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let mut written: Option<Paired> = None;
        let mut local_error: Option<anyhow::Error> = None;
        let result = drive(
            &mut stream,
            &mut acceptor,
            session_start,
            |machine, event| match event {
                Event::PeerHello { peer, .. } => match me.pairable_with(&peer) {
                    Ok(()) => machine.proceed(),
                    Err(why) => Err(machine.refuse(Refusal::incompatible(why))),
                },
                Event::Received(paired) => {
                    match secondary_write(&local, cluster_path, &paired, args.force) {
                        Ok(()) => {
                            machine.accept()?;
                            written = Some(paired);
                            Ok(())
                        }
                        Err(refusal) => {
                            local_error = Some(anyhow!("{}", refusal.detail));
                            Err(machine.refuse(refusal))
                        }
                    }
                }
                Event::Accepted(_) => Err(PairError::Unexpected("event")),
            },
        )
        .await;
        match (result, written) {
            (Ok(()), Some(paired)) => {
                println!(
                    "paired with {} ({}) in cluster \"{}\": wrote {} (mode 0600), {} and {} ([node] role = \"secondary\", peer = \"{}\")",
                    paired.peer.name,
                    paired.peer.address,
                    paired.cluster_name,
                    local.node.node.secret_file.display(),
                    cluster_path.display(),
                    node_path.display(),
                    paired.peer.address
                );
                println!("start tandem on both nodes (systemctl start tandem)");
                return Ok(ExitCode::SUCCESS);
            }
            (result, _) => {
                let wrong_code = matches!(result, Err(PairError::WrongCode));
                let error = match (local_error, result) {
                    (Some(local), _) => local,
                    (None, Err(e)) => anyhow!(e),
                    (None, Ok(())) => anyhow!("the primary ended the session"),
                };
                if acceptor.code_consumed() {
                    // A wrong code's message already says the code is used up.
                    return Err(error.context(if wrong_code {
                        format!("pairing with {from} failed")
                    } else {
                        format!(
                            "pairing with {from} failed; the code is used up (run `tandem pair --accept` again for a new one)"
                        )
                    }));
                }
                strays += 1;
                if strays <= REPORTED_STRAY_CONNECTIONS {
                    eprintln!(
                        "tandem pair: a connection from {from} ended before the code was tried ({error:#}); still waiting, the code is still valid"
                    );
                }
            }
        }
    }
}

/// Checks the received configuration with this node's edited node.toml, then writes the secret,
/// cluster.toml and node.toml. Nothing is replaced unless every check passed.
fn secondary_write(
    local: &Local,
    cluster_path: &Path,
    paired: &Paired,
    force: bool,
) -> Result<(), Refusal> {
    let rejected = |e: anyhow::Error| Refusal::rejected(format!("{e:#}"));
    // The node may have joined a cluster while the code was shown.
    if !force {
        let now = Local::read(&local.node_path).map_err(rejected)?;
        if let Some(membership) = now.membership() {
            return Err(Refusal::already_paired(membership));
        }
    }
    let node_text =
        edit_node_toml(&local.node_text, "secondary", &paired.peer).map_err(rejected)?;
    let node_mode = mode_of(&local.node_path, 0o644);
    let staged_node = Staged::write(
        &local.node_path,
        node_text.as_bytes(),
        node_mode,
        Some(&local.node_path),
    )
    .map_err(rejected)?;
    let like = if cluster_path.exists() {
        cluster_path
    } else {
        local.node_path.as_path()
    };
    let staged_cluster = Staged::write(
        cluster_path,
        paired.cluster_toml.as_bytes(),
        mode_of(like, node_mode),
        Some(like),
    )
    .map_err(rejected)?;
    let loaded =
        check_staged(&staged_cluster.path, &staged_node, cluster_path).map_err(|diags| {
            Refusal::rejected(format!(
                "{}: the configuration fails `tandem check` there:\n{diags}",
                local.node.node.name
            ))
        })?;
    if loaded.cluster.cluster.name != paired.cluster_name {
        return Err(Refusal::rejected(format!(
            "cluster.toml names the cluster \"{}\" but the primary introduced it as \"{}\"",
            loaded.cluster.cluster.name, paired.cluster_name
        )));
    }
    let secret_path = &loaded.node.node.secret_file;
    let mut secret_text = Zeroizing::new(paired.secret.to_vec());
    secret_text.push(b'\n');
    let staged_secret =
        Staged::write(secret_path, &secret_text, 0o600, Some(secret_path)).map_err(rejected)?;
    // The secret first: a node.toml with a peer but no secret would look half paired.
    staged_secret.commit().map_err(rejected)?;
    staged_cluster.commit().map_err(rejected)?;
    staged_node.commit().map_err(rejected)?;
    Ok(())
}

// --- the primary -------------------------------------------------------------------------------

/// The one-time code from `--code-file`, a prompt on a terminal, or piped standard input.
fn read_code(code_file: Option<&Path>) -> Result<Code> {
    let text = Zeroizing::new(match code_file {
        Some(path) if path != Path::new("-") => std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the code", path.display()))?,
        _ => {
            let stdin = std::io::stdin();
            if code_file.is_none() && stdin.is_terminal() {
                eprint!("one-time code shown by `tandem pair --accept` on the secondary: ");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            stdin.read_line(&mut line).context("reading the code")?;
            line
        }
    });
    let first = text.lines().next().unwrap_or("");
    Ok(Code::parse(first)?)
}

/// The secret to send: this node's, or a new one like `tandem keygen` makes (written only once
/// the secondary accepted).
fn primary_secret(local: &Local) -> Result<(Zeroizing<Vec<u8>>, bool)> {
    let path = &local.node.node.secret_file;
    if path.exists() {
        let secret = tandem_config::secret::load_secret(path)?;
        return Ok((Zeroizing::new(secret.expose().to_vec()), false));
    }
    let text = Zeroizing::new(tandem_config::secret::generate()?);
    Ok((Zeroizing::new(text.as_bytes().to_vec()), true))
}

async fn initiate(
    args: &PairArgs,
    peer_text: &str,
    cluster_path: &Path,
    node_path: &Path,
) -> Result<ExitCode> {
    let local = Local::read(node_path)?;
    if let Some(membership) = local.membership()
        && !args.force
    {
        bail!("{membership}");
    }
    let loaded = tandem_config::check(cluster_path, node_path).map_err(|diags| {
        anyhow!(
            "this node's configuration fails `tandem check`; fix it first:\n{}",
            diags
        )
    })?;
    let cluster_text = loaded.cluster_text.clone();
    let cluster_name = loaded.cluster.cluster.name.clone();
    let (secret, generated) = primary_secret(&local)?;
    let me = local.info();
    let peer_addr = parse_endpoint(peer_text, me.sync_port)?;
    let code = read_code(args.code_file.as_deref())?;

    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer_addr))
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => bail!(
            "cannot connect to {peer_addr}: {e} (is `tandem pair --accept` running there, and is TCP port {} open between the nodes?)",
            peer_addr.port()
        ),
        Err(_) => bail!(
            "timed out connecting to {peer_addr} (is TCP port {} open between the nodes?)",
            peer_addr.port()
        ),
    };
    let start = Instant::now();
    let mut initiator = Initiator::new(
        code,
        &cluster_name,
        me.clone(),
        secret,
        cluster_text,
        0,
        u64::try_from(SESSION_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
    )?;
    let mut staged_node: Option<Staged> = None;
    let mut accepted: Option<Paired> = None;
    let result = drive(
        &mut stream,
        &mut initiator,
        start,
        |machine, event| match event {
            Event::PeerHello { peer, .. } => {
                if let Err(why) = me.pairable_with(&peer) {
                    return Err(machine.refuse(Refusal::incompatible(why)));
                }
                let staged = edit_node_toml(&local.node_text, "primary", &peer).and_then(|text| {
                    Staged::write(
                        node_path,
                        text.as_bytes(),
                        mode_of(node_path, 0o644),
                        Some(node_path),
                    )
                });
                let staged = match staged {
                    Ok(staged) => staged,
                    Err(e) => return Err(machine.refuse(Refusal::rejected(format!("{e:#}")))),
                };
                if let Err(diags) = check_staged(cluster_path, &staged, cluster_path) {
                    return Err(machine.refuse(Refusal::rejected(format!(
                        "{}: the configuration with this peer fails `tandem check`:\n{diags}",
                        me.name
                    ))));
                }
                staged_node = Some(staged);
                machine.proceed()
            }
            Event::Accepted(paired) => {
                accepted = Some(paired);
                Ok(())
            }
            Event::Received(_) => Err(PairError::Unexpected("event")),
        },
    )
    .await;
    result.map_err(|e| {
        let context = if e == PairError::WrongCode {
            format!("pairing with {peer_addr} failed")
        } else {
            format!("pairing with {peer_addr} failed; nothing was written here")
        };
        anyhow!(e).context(context)
    })?;
    let (Some(paired), Some(staged_node)) = (accepted, staged_node) else {
        bail!(
            "pairing with {peer_addr} ended without the secondary's answer; nothing was written here"
        );
    };
    let secret_path = &local.node.node.secret_file;
    let unfinished = |e: anyhow::Error| {
        e.context(format!(
            "{} wrote its side, but this node could not: fix the cause and run `tandem pair --force` on both",
            paired.peer.name
        ))
    };
    if generated {
        let mut text = Zeroizing::new(paired.secret.to_vec());
        text.push(b'\n');
        Staged::write(secret_path, &text, 0o600, None)
            .and_then(Staged::commit)
            .map_err(unfinished)?;
    }
    staged_node.commit().map_err(unfinished)?;
    println!(
        "paired with {} ({}) in cluster \"{}\": wrote {}{} ([node] role = \"primary\", peer = \"{}\"); {} has the secret and cluster.toml",
        paired.peer.name,
        paired.peer.address,
        paired.cluster_name,
        if generated {
            format!(
                "a new shared secret to {} (mode 0600) and ",
                secret_path.display()
            )
        } else {
            String::new()
        },
        node_path.display(),
        paired.peer.address,
        paired.peer.name
    );
    println!("start tandem on both nodes (systemctl start tandem)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer() -> NodeInfo {
        NodeInfo {
            name: "lb1".into(),
            address: "192.0.2.21".parse().unwrap(),
            heartbeat_port: 6694,
            sync_port: 7778,
        }
    }

    #[test]
    fn the_edit_touches_role_and_peer_only() {
        let text = "# lb2's own settings\n[node]\nname = \"lb2\"   # this box\nrole = \"primary\" # was set by hand\naddress = \"192.0.2.22\"\ninterface = \"eth0\"\n\n# admin stays local\n[admin]\nlisten = \"127.0.0.1:9080\"\n";
        let edited = edit_node_toml(text, "secondary", &peer()).unwrap();
        assert_eq!(
            edited,
            "# lb2's own settings\n[node]\nname = \"lb2\"   # this box\nrole = \"secondary\" # was set by hand\naddress = \"192.0.2.22\"\ninterface = \"eth0\"\npeer = \"192.0.2.21\"  # lb1 (written by `tandem pair`)\n\n# admin stays local\n[admin]\nlisten = \"127.0.0.1:9080\"\n"
        );
        // Again (re-pairing): the peer line is replaced in place, not duplicated.
        let other = NodeInfo {
            name: "lb3".into(),
            address: "192.0.2.23".parse().unwrap(),
            ..peer()
        };
        let again = edit_node_toml(&edited, "secondary", &other).unwrap();
        assert_eq!(again.matches("peer =").count(), 1, "{again}");
        assert!(again.contains("peer = \"192.0.2.23\"  # lb3"), "{again}");
        assert!(edit_node_toml("[admin]\n", "primary", &peer()).is_err());
    }

    #[test]
    fn endpoints_take_the_default_port() {
        assert_eq!(
            parse_endpoint("192.0.2.1", 7778).unwrap(),
            "192.0.2.1:7778".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("192.0.2.1:9000", 7778).unwrap(),
            "192.0.2.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("2001:db8::1", 7778).unwrap(),
            "[2001:db8::1]:7778".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:9", 7778).unwrap(),
            "[2001:db8::1]:9".parse().unwrap()
        );
    }
}
