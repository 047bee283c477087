//! The shipped OpenStack example matches the guide's VIP table (section 5.2) row by row.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;
use tandem_config::*;

/// Guide 5.2, "Virtual Service (VIP) Requirements", as printed.
const GUIDE_TABLE: &str = "\
VIP 1	aodh	L7 SNAT (TCP)	8042	None	Connect to Port
VIP 2	ceilometer	L7 SNAT (TCP)	8777	None	Connect to Port
VIP 3	cinder	L7 SNAT (TCP)	8776	None	Connect to Port
VIP 4	glance_api	L7 SNAT (TCP)	9292	None	Connect to Port
VIP 5	glance_registry	L7 SNAT (TCP)	9191	None	Connect to Port
VIP 6	gnocchi	L7 SNAT (TCP)	8041	None	Connect to Port
VIP 7	heat_api	L7 SNAT (HTTP)	8004	None	Connect to Port
VIP 8	heat_cfn	L7 SNAT (TCP)	8000	None	Connect to Port
VIP 9	heat_cloudwatch	L7 SNAT (TCP)	8003	None	Connect to Port
VIP 10	horizon	L7 SNAT (HTTP)	80	HTTP Cookie	Connect to Port
VIP 11	keystone_admin	L7 SNAT (TCP)	35357	None	Connect to Port
VIP 12	keystone_admin_ssh	L7 SNAT (TCP)	22	None	Connect to Port
VIP 13	keystone_public	L7 SNAT (TCP)	5000	None	Connect to Port
VIP 14	mysql	L7 SNAT (TCP)	3306	Last Successful	Connect to Port
VIP 15	neutron	L7 SNAT (TCP)	9696	None	Connect to Port
VIP 16	nova_ec2	L7 SNAT (TCP)	8773	None	Connect to Port
VIP 17	nova_metadata	L7 SNAT (TCP)	8775	None	Connect to Port
VIP 18	nova_novncproxy	L7 SNAT (TCP)	6080	Source IP	Connect to Port
VIP 19	nova_osapi	L7 SNAT (TCP)	8774	None	Connect to Port
VIP 20	nova_placement	L7 SNAT (TCP)	8778	None	Connect to Port
VIP 21	panko	L7 SNAT (TCP)	8779	None	Connect to Port
VIP 22	redis	L7 SNAT (TCP)	6379	Last Successful	Connect to Port
VIP 23	swift_proxy_server	L7 SNAT (TCP)	8080	None	Connect to Port
";

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/openstack")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn check_example(node_file: &str) -> Loaded {
    let dir = example_dir();
    match check(&dir.join("cluster.toml"), &dir.join(node_file)) {
        Ok(l) => l,
        Err(d) => panic!("example does not check:\n{d}"),
    }
}

#[test]
fn cluster_matches_the_guide_row_by_row() {
    let loaded = check_example("node-lb1.toml");
    let c = &loaded.cluster;
    let rows: Vec<Vec<&str>> = GUIDE_TABLE
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 23);
    assert_eq!(c.services.len(), 23, "all 23 virtual services");
    for (row, s) in rows.iter().zip(&c.services) {
        let [_, name, mode, port, persistence, check] = row[..] else {
            panic!("bad row {row:?}");
        };
        assert_eq!(s.label, name);
        assert_eq!(s.vip, ip("192.168.1.250"), "{name}");
        let port: u16 = port.parse().unwrap();
        assert_eq!(s.ports, vec![port], "{name}");
        let want_mode = match mode {
            "L7 SNAT (TCP)" => Mode::Tcp,
            "L7 SNAT (HTTP)" => Mode::Http,
            other => panic!("{other}"),
        };
        assert_eq!(s.mode, want_mode, "{name}");
        let want_persistence = match persistence {
            "None" => PersistenceMode::None,
            "HTTP Cookie" => PersistenceMode::HttpCookie,
            "Source IP" => PersistenceMode::SourceIp,
            "Last Successful" => PersistenceMode::LastSuccessful,
            other => panic!("{other}"),
        };
        assert_eq!(s.persistence.mode, want_persistence, "{name}");
        assert_eq!(check, "Connect to Port");
        assert_eq!(s.health_check.check, CheckKind::Connect, "{name}");
        // Guide 10.1: interval 2000, rise 2, fall 5.
        assert_eq!(
            (
                s.health_check.interval_ms,
                s.health_check.rise,
                s.health_check.fall
            ),
            (2000, 2, 5),
            "{name}"
        );
        assert!(s.health_check.timeout_ms < s.health_check.interval_ms);
        assert_eq!(s.balance, Balance::WeightedLeastConnections);
        let servers: Vec<(&str, IpAddr, Option<u16>, u32)> = s
            .servers
            .iter()
            .map(|r| (r.label.as_str(), r.address, r.port, r.weight))
            .collect();
        assert_eq!(
            servers,
            vec![
                (
                    "Overcloud-controller-1",
                    ip("192.168.1.150"),
                    Some(port),
                    100
                ),
                (
                    "Overcloud-controller-2",
                    ip("192.168.1.151"),
                    Some(port),
                    100
                ),
                (
                    "Overcloud-controller-3",
                    ip("192.168.1.152"),
                    Some(port),
                    100
                ),
            ],
            "{name}"
        );
    }
    let mysql = c.services.iter().find(|s| s.label == "mysql").unwrap();
    assert_eq!(
        (mysql.persistence.timeout_s, mysql.persistence.table_size),
        (0, 1000),
        "guide: persistence timeout 0, table size 1000"
    );
    let horizon = c.services.iter().find(|s| s.label == "horizon").unwrap();
    assert_eq!(horizon.persistence.cookie_name, "TANDEMSRV");
    assert_eq!(c.health_check.interval_ms, 2000);
    assert_eq!(c.cluster.name, "openstack");
    assert_eq!(loaded.digest.len(), 64);
}

#[test]
fn both_nodes_check_and_agree_on_the_digest() {
    let lb1 = check_example("node-lb1.toml");
    let lb2 = check_example("node-lb2.toml");
    assert_eq!(lb1.node.node.role, Role::Primary);
    assert_eq!(lb2.node.node.role, Role::Secondary);
    assert_eq!(lb1.node.node.address, ip("192.168.1.21"));
    assert_eq!(lb1.node.node.peer, Some(ip("192.168.1.22")));
    assert_eq!(lb2.node.node.address, ip("192.168.1.22"));
    assert_eq!(lb2.node.node.peer, Some(ip("192.168.1.21")));
    assert_eq!(lb1.digest, lb2.digest);
    // Relative secret path resolved against the node file's directory.
    assert!(lb1.node.node.secret_file.is_absolute());
    assert!(lb1.node.node.secret_file.ends_with("openstack/secret"));
    // Every non-replicated page of the guide (14.1.1) is filled in.
    for (section, _) in LOCAL_SECTIONS {
        assert!(
            lb1.node.local.sections.contains_key(*section),
            "node-lb1.toml lacks [{section}]"
        );
        assert!(lb2.node.local.sections.contains_key(*section));
    }
    assert_eq!(
        lb1.node.local.sections["hostname_dns"]["hostname"].as_str(),
        Some("lb1")
    );
    // Same cluster.toml, so the JSON (minus the node part) is the same.
    let j = check_json(&lb1);
    assert_eq!(j["services"], check_json(&lb2)["services"]);
    assert_eq!(j["services"].as_array().unwrap().len(), 23);
    assert_eq!(j["services"][13]["label"], "mysql");
    assert_eq!(
        j["services"][13]["persistence"],
        serde_json::json!({ "mode": "last-successful", "timeout_s": 0, "table_size": 1000 })
    );
    assert_eq!(j["services"][9]["persistence"]["mode"], "http-cookie");
    assert_eq!(
        j["services"][0]["persistence"],
        serde_json::json!({ "mode": "none" })
    );
    assert_eq!(j["services"][0]["ports"], serde_json::json!([8042]));
    assert_eq!(j["services"][0]["servers"].as_array().unwrap().len(), 3);
    assert_eq!(j["digest"], lb1.digest.as_str());
    let summary = check_summary(&lb1);
    assert!(summary.contains("23 virtual services"), "{summary}");
    // The appliance's local pages are kept but not applied: check says so, with where to do it.
    assert!(
        summary.contains("recorded, not applied by tandem (14 node-local appliance sections"),
        "{summary}"
    );
    assert!(
        summary.contains("  [snmp] (SNMP Configuration): snmpd on the host"),
        "{summary}"
    );
    assert!(
        summary.contains("  [firewall_lockdown] (Firewall Lockdown Wizard): nftables"),
        "{summary}"
    );
    let not_applied = j["not_applied"].as_array().unwrap();
    assert_eq!(not_applied.len(), 14);
    assert_eq!(not_applied[0]["section"], "hostname_dns");
    assert!(not_applied.iter().all(|n| n["instead"] != "the host"));
}

#[test]
fn canonical_form_of_the_example_parses_back_to_the_same_model() {
    let loaded = check_example("node-lb1.toml");
    let canon = canonical_toml(&loaded.cluster);
    let again = parse_cluster_str(&canon, "canonical").unwrap();
    assert_eq!(again, loaded.cluster);
    assert_eq!(digest(&again), loaded.digest);
}
