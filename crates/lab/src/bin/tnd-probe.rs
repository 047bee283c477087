//! `tnd-probe`: the lab's client. Starts one attempt against `--target` every `--interval-ms` (attempts run
//! concurrently, each bounded by `--timeout-ms`), until `--duration-ms` passes, `--stop-file` appears, or SIGTERM /
//! SIGINT arrives; then prints the JSON summary defined by `tandem_lab::Summary`.
//!
//! With `--fill N` it is a load generator instead: N attempts as fast as `--concurrency` allows, each from the
//! next `--sources` address (to fill persistence tables), printing only counts and the rate.
//!
//! An attempt in `tcp` mode: connect, read the banner line (it names the controller), send a line and read its echo.
//! In `http` mode: one `GET /` with `Connection: close`, expecting `200` and a body naming the controller.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use tandem_lab::{Attempt, FailureKind, controller_of, epoch_us, parse_sources, summarize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Tcp,
    Http,
}

#[derive(Parser, Debug)]
#[command(about = "Probe a VIP:port at a fixed rate and summarize availability as JSON")]
struct Args {
    /// VIP:port to probe (an IPv6 VIP in brackets: `[fd7e:0:0:1::250]:3306`)
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Tcp)]
    mode: Mode,
    /// spacing between attempt starts
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// per-attempt bound (connect + answer)
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    /// stop after this long at the latest (hard bound)
    #[arg(long, default_value_t = 120_000)]
    duration_ms: u64,
    /// stop as soon as this file exists
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// create this file once the first attempt has succeeded
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// local addresses to bind, used round-robin: `10.77.0.0/24`, `10.77.0.1-10.77.0.200`, or a list
    #[arg(long)]
    sources: Option<String>,
    /// write every attempt as a JSON line here
    #[arg(long)]
    events: Option<PathBuf>,
    /// write the summary here as well as to stdout
    #[arg(long)]
    out: Option<PathBuf>,
    /// include the per-source controller map in the summary (with --sources)
    #[arg(long)]
    source_map: bool,
    /// leave out the attempts started before the first successful one (the service was still coming up)
    #[arg(long)]
    warmup: bool,
    /// load mode: make exactly this many attempts as fast as possible, then print counts only
    #[arg(long)]
    fill: Option<u64>,
    /// attempts in flight at once in `--fill` mode
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// `--fill`: N attempts, `concurrency` at a time, sources round-robin; counts only (no per-attempt log).
async fn fill(args: &Args, sources: Option<Vec<Ipv4Addr>>, total: u64) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let sources = std::sync::Arc::new(sources.unwrap_or_default());
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.duration_ms);
    let mut tasks = tokio::task::JoinSet::new();
    let mut launched: u64 = 0;
    while launched < total && Instant::now() < deadline {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let source =
            (!sources.is_empty()).then(|| sources[(launched % sources.len() as u64) as usize]);
        let (mode, target, ok) = (args.mode, args.target, ok.clone());
        tasks.spawn(async move {
            if attempt(mode, target, source, launched, timeout).await.ok {
                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(permit);
        });
        launched += 1;
        // reap finished tasks as we go so the set stays small
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let successes = ok.load(std::sync::atomic::Ordering::Relaxed);
    let json = serde_json::json!({
        "target": args.target.to_string(), "fill": total, "attempts": launched, "successes": successes,
        "failed_requests": launched - successes, "elapsed_ms": (elapsed * 1000.0).round(),
        "rate_per_s": if elapsed > 0.0 { (launched as f64 / elapsed).round() } else { 0.0 },
    });
    println!("{json}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn classify(err: &std::io::Error) -> FailureKind {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused => FailureKind::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            FailureKind::Reset
        }
        K::TimedOut => FailureKind::Timeout,
        _ => FailureKind::Other,
    }
}

async fn exchange(
    mode: Mode,
    target: SocketAddr,
    source: Option<Ipv4Addr>,
    seq: u64,
) -> Result<String, FailureKind> {
    let socket = if target.is_ipv6() {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
    .map_err(|e| classify(&e))?;
    if let Some(src) = source {
        socket.set_reuseaddr(true).map_err(|e| classify(&e))?;
        socket
            .bind(SocketAddr::new(src.into(), 0))
            .map_err(|e| classify(&e))?;
    }
    let stream = socket.connect(target).await.map_err(|e| classify(&e))?;
    let _ = stream.set_nodelay(true);
    match mode {
        Mode::Tcp => {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .await
                .map_err(|e| classify(&e))?;
            if n == 0 {
                return Err(FailureKind::Reset);
            }
            let controller = controller_of(&line)
                .ok_or(FailureKind::BadAnswer)?
                .to_owned();
            let ping = format!("tnd-probe {seq}\n");
            reader
                .get_mut()
                .write_all(ping.as_bytes())
                .await
                .map_err(|e| classify(&e))?;
            let mut echo = String::new();
            reader
                .read_line(&mut echo)
                .await
                .map_err(|e| classify(&e))?;
            if echo.is_empty() {
                return Err(FailureKind::Reset);
            }
            if echo != ping {
                return Err(FailureKind::BadAnswer);
            }
            Ok(controller)
        }
        Mode::Http => {
            let mut stream = stream;
            let request = format!(
                "GET /tnd-probe/{seq} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| classify(&e))?;
            let mut body = Vec::with_capacity(1024);
            (&mut stream)
                .take(64 * 1024)
                .read_to_end(&mut body)
                .await
                .map_err(|e| classify(&e))?;
            let text = String::from_utf8_lossy(&body);
            if body.is_empty() {
                return Err(FailureKind::Reset);
            }
            if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
                return Err(FailureKind::BadAnswer);
            }
            let body_start = text.find("\r\n\r\n").map_or(0, |i| i + 4);
            Ok(controller_of(&text[body_start..])
                .ok_or(FailureKind::BadAnswer)?
                .to_owned())
        }
    }
}

async fn attempt(
    mode: Mode,
    target: SocketAddr,
    source: Option<Ipv4Addr>,
    seq: u64,
    timeout: Duration,
) -> Attempt {
    let start_us = epoch_us();
    let result = match tokio::time::timeout(timeout, exchange(mode, target, source, seq)).await {
        Ok(r) => r,
        Err(_) => Err(FailureKind::Timeout),
    };
    let end_us = epoch_us();
    let (ok, controller, failure) = match result {
        Ok(name) => (true, Some(name), None),
        Err(kind) => (false, None, Some(kind)),
    };
    Attempt {
        seq,
        start_us,
        end_us,
        ok,
        controller,
        failure,
        source,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.interval_ms == 0 || args.timeout_ms == 0 {
        bail!("--interval-ms and --timeout-ms must be positive");
    }
    let sources = match &args.sources {
        Some(spec) => Some(parse_sources(spec).map_err(|e| anyhow::anyhow!("--sources: {e}"))?),
        None => None,
    };
    if sources.is_some() && args.target.is_ipv6() {
        // the source lists are IPv4 ranges: binding one to an IPv6 socket would fail every attempt
        bail!(
            "--sources are IPv4 addresses; the target {} is IPv6",
            args.target
        );
    }
    if let Some(total) = args.fill {
        return fill(&args, sources, total).await;
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + Duration::from_millis(args.duration_ms);
    let mut ticker = tokio::time::interval(Duration::from_millis(args.interval_ms));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Attempt>();
    let mut log: Vec<Attempt> = Vec::new();
    let mut seq: u64 = 0;
    let mut ready_written = args.ready_file.is_none();
    let mut events = match &args.events {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => None,
    };
    let mode = args.mode;
    let target = args.target;

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(stop) = &args.stop_file
                    && stop.exists()
                {
                    break;
                }
                let source = sources.as_ref().and_then(|s| s.get((seq % s.len() as u64) as usize).copied());
                let tx = tx.clone();
                let this = seq;
                tokio::spawn(async move {
                    let _ = tx.send(attempt(mode, target, source, this, timeout).await);
                });
                seq += 1;
            }
            Some(done) = rx.recv() => {
                if !ready_written && done.ok {
                    if let Some(path) = &args.ready_file {
                        std::fs::write(path, b"ready\n").with_context(|| format!("write {}", path.display()))?;
                    }
                    ready_written = true;
                }
                log.push(done);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // collect the attempts still in flight: each is bounded by `timeout`
    drop(tx);
    let drain_deadline = Instant::now() + timeout + Duration::from_millis(200);
    while log.len() < seq as usize {
        match tokio::time::timeout_at(drain_deadline, rx.recv()).await {
            Ok(Some(done)) => log.push(done),
            _ => break,
        }
    }
    let mut discarded = 0;
    if args.warmup
        && let Some(first_ok) = log.iter().filter(|a| a.ok).map(|a| a.start_us).min()
    {
        let before = log.len();
        log.retain(|a| a.start_us >= first_ok);
        discarded = before - log.len();
    }
    if let Some(out) = events.as_mut() {
        use std::io::Write;
        let mut sorted: Vec<&Attempt> = log.iter().collect();
        sorted.sort_by_key(|a| a.seq);
        for a in sorted {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
        }
        out.flush()?;
    }
    let mode_name = match mode {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    };
    let mut summary = summarize(
        &target.to_string(),
        mode_name,
        args.interval_ms,
        args.timeout_ms,
        &log,
    );
    if !args.source_map {
        summary.source_map = None;
    }
    let mut json = serde_json::to_value(&summary)?;
    if args.warmup
        && let Some(map) = json.as_object_mut()
    {
        map.insert("warmup_discarded".into(), discarded.into());
    }
    let json = json.to_string();
    println!("{json}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
