//! Draining a planned handover (docs/protocol.md, "Draining a planned handover").
//!
//! When the role moves on purpose between two live nodes, connections the old holder accepted just before the
//! clients followed the new holder's announcement would be reset by the new holder's kernel (it knows nothing of
//! them). For `[heartbeat] handover_drain_ms`:
//! - the new holder forwards TCP segments to the VIPs that belong to no connection it tracks (not a SYN, conntrack
//!   state new or invalid) to the old holder: nftables `dup to PEER` + `drop`, installed before it adds the VIPs;
//! - the old holder keeps the VIPs on its interface but stops answering for them (no ARP replies or neighbour
//!   advertisements, no ARP or neighbour solicitations sent from them) and serves what it had; then it removes
//!   them and closes the rest, as any release does.
//!
//! The tables are loaded with `nft -f -` (the nftables package; the daemon's ambient CAP_NET_ADMIN passes to it):
//! one small script per change, atomic in the kernel. Written by hand rather than through a netlink crate because
//! these are four fixed tables, and an operator can read, list (`nft list table ip tandem_drain`) and delete them
//! with the tool they already use. Without `nft` the handover still happens, without the drain (one warning).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Every table this module may leave behind (family, name): deleted at start-up and before each change.
const TABLES: [(&str, &str); 4] = [
    ("ip", "tandem_drain"),
    ("ip6", "tandem_drain"),
    ("arp", "tandem_quiet"),
    ("ip6", "tandem_quiet"),
];

/// How long `nft` may take before the change counts as failed (it takes a few ms).
const NFT_TIMEOUT: Duration = Duration::from_secs(2);

/// Statements that delete `(family, name)` whether or not it exists (declaring a table is a no-op when it does).
fn delete_tables(script: &mut String, tables: &[(&str, &str)]) {
    for (family, name) in tables {
        let _ = writeln!(
            script,
            "table {family} {name} {{}}\ndelete table {family} {name}"
        );
    }
}

fn set(addresses: &[IpAddr]) -> String {
    let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// The new holder's script: segments of unknown connections to `vips` go to `peer` (through `interface`) instead
/// of being answered with a reset here. Only VIPs of the peer's address family can be forwarded (`dup to` needs a
/// next hop of the same family); `None` when there is none.
pub(super) fn forward_script(vips: &[IpAddr], peer: IpAddr, interface: &str) -> Option<String> {
    let same_family: Vec<IpAddr> = vips
        .iter()
        .copied()
        .filter(|vip| vip.is_ipv4() == peer.is_ipv4())
        .collect();
    if same_family.is_empty() || interface.contains('"') {
        return None;
    }
    let family = if peer.is_ipv4() { "ip" } else { "ip6" };
    let mut script = String::new();
    delete_tables(&mut script, &TABLES);
    // After conntrack (priority -200), before routing delivers the segment locally. SYNs open new connections
    // here and are never forwarded. A segment of a connection conntrack never saw is `new` (picked up mid-stream)
    // or `invalid` (a FIN, a RST, an ACK it cannot place): the lab lost requests in flight when only `new`, or
    // `invalid` with FIN/RST, went. An invalid segment of a connection tracked here (out of window) goes too, and
    // the peer drops or resets it: bounded by the window, and rarer than the loss it prevents.
    let (vips, target) = (
        set(&same_family),
        format!("dup to {peer} device \"{interface}\" drop"),
    );
    let _ = write!(
        script,
        "table {family} tandem_drain {{\n  chain prerouting {{\n    type filter hook prerouting priority mangle; \
         policy accept;\n    {family} daddr {vips} tcp flags & syn == 0 ct state new,invalid {target}\n  }}\n}}\n"
    );
    Some(script)
}

/// The old holder's script: the `vips` stay on the interface but nothing answers or speaks for them, so the
/// clients' neighbour caches keep pointing at the new holder while the connections in flight finish here.
pub(super) fn quiet_script(vips: &[IpAddr]) -> String {
    let v4: Vec<IpAddr> = vips.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6: Vec<IpAddr> = vips.iter().copied().filter(IpAddr::is_ipv6).collect();
    let mut script = String::new();
    delete_tables(&mut script, &TABLES);
    if !v4.is_empty() {
        let _ = write!(
            script,
            "table arp tandem_quiet {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             arp operation request arp daddr ip {0} drop\n  }}\n  chain output {{\n    type filter hook output \
             priority 0; policy accept;\n    arp saddr ip {0} drop\n  }}\n}}\n",
            set(&v4)
        );
    }
    if !v6.is_empty() {
        // A neighbour solicitation's target address follows the 8-byte ICMPv6 header (@th,64,128).
        let mut solicited = String::new();
        for vip in &v6 {
            if let IpAddr::V6(v6) = vip {
                let _ = writeln!(
                    solicited,
                    "    icmpv6 type nd-neighbor-solicit @th,64,128 0x{:032x} drop",
                    u128::from(*v6)
                );
            }
        }
        let _ = write!(
            script,
            "table ip6 tandem_quiet {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n\
             {solicited}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
             icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 saddr {} drop\n  }}\n}}\n",
            set(&v6)
        );
    }
    script
}

/// The script that removes every drain table.
pub(super) fn clear_script() -> String {
    let mut script = String::new();
    delete_tables(&mut script, &TABLES);
    script
}

/// Why `nft` did not load a script.
#[derive(Debug)]
pub(super) enum NftError {
    /// No `nft` program on this host (nftables not installed): there can be no drain table to clear either.
    NotInstalled,
    Failed(String),
}

impl std::fmt::Display for NftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NftError::NotInstalled => f.write_str("cannot run nft: not installed"),
            NftError::Failed(why) => f.write_str(why),
        }
    }
}

/// Loads `script` with `nft -f -`.
pub(super) async fn nft(script: &str) -> Result<(), NftError> {
    let failed = NftError::Failed;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => NftError::NotInstalled,
            _ => failed(format!("cannot run nft: {error}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|error| failed(format!("writing to nft: {error}")))?;
    }
    let output = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("nft gave no answer within {NFT_TIMEOUT:?}")))?
        .map_err(|error| failed(format!("nft: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "nft failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_new_holder_forwards_only_unknown_segments_of_its_peers_family() {
        let vips = ips(&["192.168.1.250", "192.168.1.251", "2001:db8::250"]);
        let script = forward_script(&vips, "192.168.1.21".parse().unwrap(), "eth0").unwrap();
        assert!(script.contains(
            "ip daddr { 192.168.1.250, 192.168.1.251 } tcp flags & syn == 0 ct state new,invalid \
             dup to 192.168.1.21 device \"eth0\" drop"
        ));
        assert!(!script.contains("2001:db8::250"), "{script}");
        // Stale tables go first, whatever is there.
        assert!(script.starts_with("table ip tandem_drain {}\ndelete table ip tandem_drain\n"));
        let v6 = forward_script(&vips, "2001:db8::21".parse().unwrap(), "eth0").unwrap();
        assert!(v6.contains("table ip6 tandem_drain {"));
        assert!(v6.contains("ip6 daddr { 2001:db8::250 }"));
        assert_eq!(
            forward_script(
                &ips(&["2001:db8::250"]),
                "10.0.0.1".parse().unwrap(),
                "eth0"
            ),
            None
        );
        assert_eq!(
            forward_script(&vips, "10.0.0.1".parse().unwrap(), "et\"h0"),
            None
        );
    }

    #[test]
    fn the_old_holder_goes_quiet_for_both_families() {
        let script = quiet_script(&ips(&["192.168.1.250", "2001:db8::250"]));
        assert!(script.contains("arp operation request arp daddr ip { 192.168.1.250 } drop"));
        assert!(script.contains("arp saddr ip { 192.168.1.250 } drop"));
        assert!(script.contains(
            "icmpv6 type nd-neighbor-solicit @th,64,128 0x20010db8000000000000000000000250 drop"
        ));
        assert!(script.contains("ip6 saddr { 2001:db8::250 } drop"));
        let v4_only = quiet_script(&ips(&["10.0.0.1"]));
        assert!(!v4_only.contains("table ip6 tandem_quiet {\n"), "{v4_only}");
    }

    /// The kernel's own check (`nft -c`: parsed and validated, nothing loaded). CI runs as root with nftables; a
    /// machine without them skips.
    #[test]
    fn the_kernel_accepts_every_script() {
        let vips = ips(&["192.168.1.250", "192.168.1.251", "2001:db8::250"]);
        let scripts = [
            forward_script(&vips, "192.168.1.21".parse().unwrap(), "lo").unwrap(),
            forward_script(&vips, "2001:db8::21".parse().unwrap(), "lo").unwrap(),
            quiet_script(&vips),
            clear_script(),
        ];
        for script in scripts {
            let child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                eprintln!("skipped: no nft");
                return;
            };
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("Operation not permitted") {
                eprintln!("skipped: not permitted");
                return;
            }
            assert!(output.status.success(), "{script}\n{stderr}");
        }
    }

    #[test]
    fn clearing_names_every_table() {
        let script = clear_script();
        for (family, name) in TABLES {
            assert!(
                script.contains(&format!("delete table {family} {name}\n")),
                "{script}"
            );
        }
    }
}
