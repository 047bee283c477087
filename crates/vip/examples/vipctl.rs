//! Manual lab tool for the VIP layer.
//!
//! ```text
//! vipctl add      IFACE VIP...     add VIPs (idempotent)
//! vipctl remove   IFACE VIP...     remove VIPs (idempotent)
//! vipctl held     IFACE VIP...     print which VIPs are on the interface
//! vipctl stale    IFACE VIP...     remove VIPs left behind (what a standby does at start-up)
//! vipctl link     IFACE            print index, MAC, up, ARP
//! vipctl announce IFACE VIP...     send the default burst (5 rounds, 200 ms apart); TANDEM_ARP_MODE=reply|both
//!                                  selects the gratuitous ARP form (default request)
//! ```
//! A VIP is `ADDR` (/32 or /128) or `ADDR/PREFIX`. Run it inside a lab namespace
//! (`ip netns exec tnd-... vipctl ...`), never against a production interface by accident.

use std::process::ExitCode;

use std::sync::Arc;

use tandem_vip::{AnnounceConfig, Announcer, ArpMode, Vip, VipError, VipManager};

const USAGE: &str = "usage: vipctl add|remove|held|stale|link|announce IFACE [VIP...]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vipctl: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let [command, interface, rest @ ..] = args else {
        return Err(USAGE.to_owned());
    };
    let vips: Vec<Vip> = rest
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, VipError>>()
        .map_err(|e| e.to_string())?;
    let manager = VipManager::new(interface).map_err(|e| e.to_string())?;
    let text = |e: VipError| e.to_string();
    match command.as_str() {
        "add" => {
            for vip in &vips {
                println!("{vip}: {:?}", manager.add(vip).await.map_err(text)?);
            }
        }
        "remove" => {
            for vip in &vips {
                println!("{vip}: {:?}", manager.remove(vip).await.map_err(text)?);
            }
        }
        "held" => {
            for vip in manager.held(&vips).await.map_err(text)? {
                println!("{vip}");
            }
        }
        "stale" => {
            for vip in manager.remove_stale(&vips).await.map_err(text)? {
                println!("removed {vip}");
            }
        }
        "link" => println!("{:?}", manager.link().await.map_err(text)?),
        "announce" => {
            let arp_mode = match std::env::var("TANDEM_ARP_MODE").as_deref() {
                Ok("reply") => ArpMode::Reply,
                Ok("both") => ArpMode::Both,
                _ => ArpMode::Request,
            };
            let config = AnnounceConfig {
                arp_mode,
                ..AnnounceConfig::default()
            };
            let rounds = config.count;
            let announcer = Announcer::new(Arc::new(manager));
            let announcement = announcer.start(vips, &config).await.map_err(text)?;
            // Bounded: the burst lasts (count - 1) x spacing; wait a little longer than that.
            let bound = config.spacing * rounds + std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(bound, async {
                while !announcement.is_finished() {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .await;
            if let Some(e) = announcement.last_error() {
                return Err(e.to_string());
            }
            println!("{} rounds sent", announcement.rounds_sent());
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    Ok(())
}
