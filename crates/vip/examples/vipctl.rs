//! Manual lab tool for the VIP layer.
//!
//! ```text
//! vipctl add      IFACE VIP...     add VIPs (idempotent)
//! vipctl remove   IFACE VIP...     remove VIPs (idempotent)
//! vipctl held     IFACE VIP...     print which VIPs are on the interface
//! vipctl stale    IFACE VIP...     remove VIPs left behind (what a standby does at start-up)
//! vipctl link     IFACE            print index, MAC, up, ARP
//! ```
//! A VIP is `ADDR` (/32 or /128) or `ADDR/PREFIX`. Run it inside a lab namespace
//! (`ip netns exec tnd-... vipctl ...`), never against a production interface by accident.

use std::process::ExitCode;

use tandem_vip::{Vip, VipError, VipManager};

const USAGE: &str = "usage: vipctl add|remove|held|stale|link IFACE [VIP...]";

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
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    Ok(())
}
