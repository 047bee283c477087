//! `tandem`: the daemon (`tandem run`) and the operator's CLI that talks to it.

mod client;
mod daemon;
mod manual;
mod metrics;
mod monitor;
#[cfg(test)]
mod one_document_tests;
mod pair;
mod render;

use anyhow::Result;

// The proxy allocates per request (hyper's request/response objects); mimalloc's thread-local
// free lists cost less than glibc malloc there (malloc/free were ~6% of the HTTP profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use client::{AdminArgs, AdminTarget};
use std::path::PathBuf;
use std::process::ExitCode;

/// `tandem --version`: the package version and the git commit it was built from (`-dirty` with uncommitted
/// changes), so a bug report names the exact build.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TANDEM_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "tandem",
    version = VERSION,
    about = "High-availability clustered-pair load balancer"
)]
struct Cli {
    /// Directory holding cluster.toml and node.toml.
    #[arg(long, global = true, default_value = "/etc/tandem")]
    config_dir: PathBuf,
    /// cluster.toml to use instead of CONFIG_DIR/cluster.toml.
    #[arg(long, global = true)]
    cluster: Option<PathBuf>,
    /// node.toml to use instead of CONFIG_DIR/node.toml.
    #[arg(long, global = true)]
    node: Option<PathBuf>,
    /// Admin URL of a running node, e.g. https://192.168.1.21:9443 (default: the node's UNIX
    /// socket, else `[admin] listen` of node.toml). Credentials: TANDEM_ADMIN_USER and
    /// TANDEM_ADMIN_PASSWORD, or a prompt on a terminal.
    #[arg(long, global = true)]
    admin: Option<String>,
    /// Accept the node's HTTPS certificate by its SHA-256 fingerprint (`tandem status` on the
    /// node prints it), e.g. for its self-signed certificate.
    #[arg(long, global = true, value_name = "SHA256")]
    admin_fingerprint: Option<String>,
    /// Accept any HTTPS certificate from the node (no protection against a man in the middle).
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: proxy, health checks, heartbeat, VIPs, replication, admin endpoint.
    Run,
    /// Validate both configuration files; print a summary or every error as file:line:col: reason.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// This node's role and state, its peer, VIPs, services, servers and replication.
    Status {
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// One line and a monitoring-plugin exit code (Nagios/Icinga): 0 OK, 1 WARNING (a server
        /// down, peer lost, replication down or lagging), 2 CRITICAL (a service with every server
        /// down, split brain, no active node, fault, config out of sync), 3 UNKNOWN (no answer).
        #[arg(long)]
        check: bool,
    },
    /// Drain, halt or bring online one real server of a virtual service.
    Server {
        action: ServerActionArg,
        service: String,
        server: String,
        /// With halt: also close the server's existing connections.
        #[arg(long)]
        close: bool,
    },
    /// Make this node active (clean handover from the peer).
    Takeover,
    /// Hand the active role to the peer (clean handover).
    Release,
    /// Re-read cluster.toml, validate it and apply it live (on the primary; pushed to the secondary).
    Reload,
    /// Pair two fresh nodes with a one-time code: `--accept` on the secondary prints the code,
    /// `--peer ADDRESS` on the primary sends the shared secret and cluster.toml (docs/pairing.md).
    Pair(pair::PairArgs),
    /// Write a new random shared secret to FILE (mode 0600; never overwrites).
    Keygen { file: PathBuf },
    /// Read the admin password from standard input (no echo on a terminal) and write its salted
    /// PBKDF2 hash to FILE (mode 0600), for `[admin] password_file`. The password is never stored.
    Password {
        file: PathBuf,
        /// Replace an existing FILE.
        #[arg(long)]
        force: bool,
        /// PBKDF2 iterations (tests use fewer to run faster).
        #[arg(long, hide = true, default_value_t = tandem_config::password::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Remove this node's configured VIPs from its interface when no daemon of the node runs (the
    /// unit's ExecStopPost: nothing stale after a crash, daemon/guardian.rs).
    #[command(hide = true)]
    ReleaseVips,
    /// Write the manual pages and shell completions under DIR (for the Debian package; manual.rs).
    #[command(hide = true)]
    GenerateManual { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum ServerActionArg {
    Online,
    Drain,
    Halt,
}

impl Cli {
    fn cluster_file(&self) -> PathBuf {
        self.cluster
            .clone()
            .unwrap_or_else(|| self.config_dir.join("cluster.toml"))
    }
    fn node_file(&self) -> PathBuf {
        self.node
            .clone()
            .unwrap_or_else(|| self.config_dir.join("node.toml"))
    }
    fn admin_target(&self) -> Result<AdminTarget> {
        let args = AdminArgs {
            url: self.admin.clone(),
            fingerprint: self.admin_fingerprint.clone(),
            insecure: self.insecure,
        };
        AdminTarget::resolve(&args, &self.node_file())
    }
}

fn main() -> ExitCode {
    without_transparent_huge_pages();
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process (unless `MIMALLOC_ALLOW_THP` is set, which then decides).
///
/// Why: mimalloc asks for huge pages on its arenas, so every first touch of a 2 MiB region allocates and zeroes a
/// whole huge page. In a virtual machine whose balloon reports free memory to the host (virtio-balloon free page
/// reporting: most cloud VMs), the host has taken those pages back, and faulting 2 MiB in stalls the vCPU for
/// milliseconds; a daemon starting (or a CLI run beside it) then froze both vCPUs of the lab's 2-core VM for 30 ms,
/// longer than a 10/30 pair's dead time: both nodes declared each other dead (traced in docs/benchmarks.md,
/// "both-restart"). With small pages only what is touched is faulted. The proxy's heap is small (tens of MiB), so
/// huge pages buy it little.
fn without_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag of this process.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn execute(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Run => daemon::startup::run(cli.cluster_file(), cli.node_file()),
        Command::Check { json } => check(cli, *json),
        Command::Pair(args) => pair::run(args, &cli.cluster_file(), &cli.node_file()),
        Command::Keygen { file } => {
            tandem_config::secret::keygen(file)?;
            println!(
                "wrote a new shared secret to {} (mode 0600); copy it to the peer",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { check: true, .. } => {
            let verdict = cli
                .admin_target()
                .and_then(|target| runtime()?.block_on(target.status()))
                .map_or_else(|error| monitor::unreachable(&error), |s| monitor::judge(&s));
            println!("{}", verdict.line);
            Ok(verdict.level.exit_code())
        }
        Command::Status { json, .. } => {
            let target = cli.admin_target()?;
            if *json {
                // What the node said, as it said it.
                let status = runtime()?.block_on(target.call("GET", "/api/status"))?;
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let (status, endpoint) = runtime()?.block_on(async {
                    let status = target.status().await?;
                    anyhow::Ok((status, target.endpoint().await))
                })?;
                print!("{}", render::status_text(&status));
                if let Some(endpoint) = endpoint {
                    print!("{}", render::endpoint_text(&endpoint));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Server {
            action,
            service,
            server,
            close,
        } => {
            let action = match action {
                ServerActionArg::Online => "online",
                ServerActionArg::Drain => "drain",
                ServerActionArg::Halt => "halt",
            };
            let path = format!(
                "/api/servers/{}/{}/{action}{}",
                tandem_admin::urlencode(service),
                tandem_admin::urlencode(server),
                if *close { "?close=1" } else { "" }
            );
            post(cli, &path)
        }
        Command::Password {
            file,
            force,
            iterations,
        } => password(file, *force, *iterations),
        Command::Takeover => post(cli, "/api/takeover"),
        Command::Release => post(cli, "/api/release"),
        Command::Reload => post(cli, "/api/reload"),
        Command::GenerateManual { dir } => manual::generate(dir),
        Command::ReleaseVips => {
            daemon::guardian::release_vips(&cli.cluster_file(), &cli.node_file())
        }
    }
}

fn post(cli: &Cli, path: &str) -> Result<ExitCode> {
    let target = cli.admin_target()?;
    let answer = runtime()?.block_on(target.call("POST", path))?;
    match answer.get("message").and_then(|m| m.as_str()) {
        Some(message) => println!("{message}"),
        None => println!("{answer}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tandem password FILE`: the password from a terminal without echo (asked twice), or the
/// first line of piped standard input.
fn password(file: &std::path::Path, force: bool, iterations: u32) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("new admin password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ; nothing written");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        anyhow::bail!("empty password; nothing written");
    }
    tandem_config::password::write_password_file(file, password.as_bytes(), iterations, force)?;
    println!(
        "wrote the admin password's hash to {} (mode 0600); set [admin] user and password_file = \"{}\" in node.toml",
        file.display(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(cli: &Cli, json: bool) -> Result<ExitCode> {
    let cluster_file = cli.cluster_file();
    let node_file = cli.node_file();
    // `check` writes nothing (the generation shown is the one this config would get).
    match tandem_config::check(&cluster_file, &node_file) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tandem_config::check_json(&loaded))?
                );
            } else {
                print!("{}", tandem_config::check_summary(&loaded));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            for diagnostic in diagnostics.iter() {
                eprintln!("{diagnostic}");
            }
            for warning in &diagnostics.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod huge_page_tests {
    /// The process's THP flag as the kernel reports it (`None` on kernels without the field).
    fn thp_enabled() -> Option<bool> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
        Some(line.split_whitespace().nth(1)? == "1")
    }

    #[test]
    fn transparent_huge_pages_are_off_unless_mimalloc_is_told_otherwise() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() || thp_enabled().is_none() {
            return;
        }
        super::without_transparent_huge_pages();
        assert_eq!(thp_enabled(), Some(false));
    }
}
