#![allow(clippy::unwrap_used)]
//! node.toml's admin keys (socket, hostnames, TLS files, the rule for network listeners) and
//! `vip_networks`, which a pushed cluster.toml must respect.

use std::path::Path;
use tandem_config::{IpNetwork, parse_cluster_for_node, parse_node_str};

const NODE: &str =
    "[node]\nname = \"a\"\nrole = \"secondary\"\naddress = \"192.168.1.22\"\nmanage_vips = false\n";

fn errors(text: &str) -> Vec<String> {
    parse_node_str(text, "node.toml", None)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn admin_keys_are_read_with_defaults() {
    let n = parse_node_str(NODE, "node.toml", None).unwrap();
    assert_eq!(n.admin.socket, Path::new("/run/tandem/admin.sock"));
    assert!(n.admin.hostnames.is_empty());
    assert!(!n.admin.uses_tls());
    assert!(n.node.vip_networks.is_empty());

    let text = format!(
        "{NODE}vip_networks = [\"192.168.1.0/24\", \"2001:db8::/64\"]\n[admin]\nlisten = \"192.168.1.22:9443\"\n\
         user = \"ops\"\npassword_file = \"pw\"\nsocket = \"run/admin.sock\"\nhostnames = [\"LB2.example\"]\n\
         tls_certificate = \"c.pem\"\ntls_key = \"k.pem\"\n"
    );
    let n = parse_node_str(&text, "node.toml", Some(Path::new("/etc/tandem"))).unwrap();
    assert_eq!(n.admin.socket, Path::new("/etc/tandem/run/admin.sock"));
    assert_eq!(n.admin.hostnames, vec!["lb2.example".to_string()]);
    assert_eq!(
        n.admin.tls_certificate.as_deref(),
        Some(Path::new("/etc/tandem/c.pem"))
    );
    assert!(n.admin.uses_tls());
    assert_eq!(
        n.node.vip_networks,
        vec![
            "192.168.1.0/24".parse::<IpNetwork>().unwrap(),
            "2001:db8::/64".parse().unwrap()
        ]
    );
}

#[test]
fn bad_admin_keys_are_errors_at_their_place() {
    let got = errors(&format!("{NODE}[admin]\nlisten = \"0.0.0.0:9443\"\n"));
    assert!(
        got[0].starts_with(
            "node.toml:7:10: admin `listen` 0.0.0.0:9443 is reachable from the network"
        ),
        "{got:?}"
    );
    let got = errors(&format!(
        "{NODE}[admin]\nhostnames = [\"ok.example\", \"bad name\", \"10.0.0.1\"]\n"
    ));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("node.toml:7:28: `hostnames`"), "{got:?}");
    let got = errors(&format!("{NODE}[admin]\ntls_certificate = \"c.pem\"\n"));
    assert!(got[0].contains("`tls_key`"), "{got:?}");
    let long = "x".repeat(120);
    let got = errors(&format!("{NODE}[admin]\nsocket = \"/{long}\"\n"));
    assert!(got[0].contains("longer than a UNIX socket path"), "{got:?}");
    let got = errors(&format!(
        "{NODE}vip_networks = [\"192.168.1.0/33\", \"nope\", \"10.0.0.0/8\"]\n"
    ));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("node.toml:6:17: `vip_networks`"),
        "{got:?}"
    );
}

#[test]
fn networks_contain_their_addresses_only() {
    let net: IpNetwork = "192.168.1.0/24".parse().unwrap();
    assert!(net.contains("192.168.1.250".parse().unwrap()));
    assert!(!net.contains("192.168.2.1".parse().unwrap()));
    assert!(!net.contains("::1".parse().unwrap()));
    let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    let host: IpNetwork = "2001:db8::1/128".parse().unwrap();
    assert!(host.contains("2001:db8::1".parse().unwrap()));
    assert!(!host.contains("2001:db8::2".parse().unwrap()));
    assert_eq!(net.to_string(), "192.168.1.0/24");
    assert!("10.0.0.1".parse::<IpNetwork>().is_err());
}

#[test]
fn a_pushed_config_with_a_vip_outside_vip_networks_is_refused() {
    let node = parse_node_str(
        &format!("{NODE}vip_networks = [\"192.168.1.0/24\"]\n"),
        "node.toml",
        None,
    )
    .unwrap();
    let cluster = |vip: &str| {
        format!(
            "[cluster]\nname = \"c\"\n[[service]]\nlabel = \"web\"\nvip = \"{vip}\"\nports = [80]\n\
             [[service.server]]\nlabel = \"w1\"\naddress = \"192.168.1.150\"\n"
        )
    };
    assert!(parse_cluster_for_node(&cluster("192.168.1.250"), "pushed", &node).is_ok());
    let error = parse_cluster_for_node(&cluster("10.9.9.9"), "pushed", &node).unwrap_err();
    let text: Vec<String> = error.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with(
            "pushed:5:7: service \"web\": VIP 10.9.9.9 is outside this node's `vip_networks`"
        ),
        "{text:?}"
    );
}
