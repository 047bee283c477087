//! `tandem`: the daemon (`tandem run`) and the operator's CLI that talks to it.

mod client;
mod daemon;
mod metrics;
#[cfg(test)]
mod one_document_tests;
mod render;

use anyhow::Result;

// The proxy allocates per request (hyper's request/response objects); mimalloc's thread-local
// free lists cost less than glibc malloc there (malloc/free were ~6% of the HTTP profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use client::AdminTarget;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
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
    /// Admin URL of a running node (default: `[admin] listen` of node.toml).
    #[arg(long, global = true)]
    admin: Option<String>,
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
        #[arg(long)]
        json: bool,
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
    /// Write a new random shared secret to FILE (mode 0600; never overwrites).
    Keygen { file: PathBuf },
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
        AdminTarget::resolve(self.admin.as_deref(), &self.node_file())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Keygen { file } => {
            tandem_config::secret::keygen(file)?;
            println!(
                "wrote a new shared secret to {} (mode 0600); copy it to the peer",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let target = cli.admin_target()?;
            if *json {
                // What the node said, as it said it.
                let status = runtime()?.block_on(target.call("GET", "/api/status"))?;
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let status = runtime()?.block_on(target.status())?;
                print!("{}", render::status_text(&status));
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
        Command::Takeover => post(cli, "/api/takeover"),
        Command::Release => post(cli, "/api/release"),
        Command::Reload => post(cli, "/api/reload"),
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
