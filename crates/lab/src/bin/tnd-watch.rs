//! `tnd-watch`: print a timestamped JSON line whenever an address appears on or disappears from this network
//! namespace's interfaces (polled with getifaddrs every `--interval-ms`). Drills run one per LB node to time a
//! takeover and to count flaps. Stops after `--max-duration-ms`, when `--stop-file` appears, or on a signal.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use tandem_lab::{epoch_us, us_to_ms};

#[derive(Parser, Debug)]
#[command(about = "Report when an address appears on or leaves the local interfaces")]
struct Args {
    /// the address to watch (e.g. the VIP)
    #[arg(long)]
    address: IpAddr,
    /// a label copied into every line (e.g. lb1)
    #[arg(long, default_value = "")]
    label: String,
    #[arg(long, default_value_t = 1)]
    interval_ms: u64,
    #[arg(long, default_value_t = 3_600_000)]
    max_duration_ms: u64,
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

/// Whether `address` is configured on any local interface.
fn present(address: IpAddr) -> std::io::Result<bool> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, valid until freeifaddrs.
        let entry = unsafe { &*cur };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family tells its real type.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: family is AF_INET so this is a sockaddr_in.
                    let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 => {
                    // SAFETY: family is AF_INET6 so this is a sockaddr_in6.
                    let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if addr == Some(address) {
                found = true;
                break;
            }
        }
        cur = entry.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

fn emit(label: &str, address: IpAddr, present: bool) -> Result<()> {
    let line = serde_json::json!({"label": label, "address": address.to_string(), "present": present, "at_ms": us_to_ms(epoch_us())});
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_millis(args.max_duration_ms);
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let mut last = present(args.address)?;
    emit(&args.label, args.address, last)?;
    let mut iterations: u64 = 0;
    while Instant::now() < deadline {
        std::thread::sleep(interval);
        let now = present(args.address)?;
        if now != last {
            emit(&args.label, args.address, now)?;
            last = now;
        }
        iterations += 1;
        if iterations.is_multiple_of(100)
            && let Some(stop) = &args.stop_file
            && stop.exists()
        {
            break;
        }
    }
    Ok(())
}
