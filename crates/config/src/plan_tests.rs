#![allow(clippy::unwrap_used)]

use super::*;
use crate::{parse_cluster_str, parse_node_str};

const CLUSTER: &str = r#"
[cluster]
name = "lab"

[[service]]
label = "keystone"
vip = "10.0.0.100"
ports = [5000, 35357]
mode = "http"
[[service.server]]
label = "k1"
address = "10.0.1.1"
[[service.server]]
label = "k2"
address = "10.0.1.2"
port = 5001
weight = 50
[[service.server]]
label = "k3"
address = "10.0.1.3"

[[service]]
label = "mysql"
vip = "10.0.0.101"
ports = [3306]
persistence = "last-successful"
[[service.server]]
label = "db1"
address = "10.0.2.1"

[[service]]
label = "glance"
vip = "10.0.0.100"
ports = [9292]
[[service.server]]
label = "g1"
address = "10.0.3.1"
"#;

fn cfg(text: &str) -> ClusterConfig {
    parse_cluster_str(text, "cluster.toml").unwrap()
}

fn delta<'a>(plan: &'a ReloadPlan, label: &str) -> &'a ServiceDelta {
    match &plan.service(label).unwrap().change {
        ServiceChange::Changed(d) => d,
        other => panic!("{label}: {other:?}"),
    }
}

fn server(d: &ServiceDelta, label: &str) -> ServerChange {
    d.servers.iter().find(|s| s.label == label).unwrap().change
}

#[test]
fn the_same_config_plans_nothing() {
    let a = cfg(CLUSTER);
    let plan = ReloadPlan::new(&a, &a);
    assert!(plan.is_empty());
    assert_eq!(plan.to_string(), "no changes");
    assert_eq!(plan.unchanged(), vec!["keystone", "mysql", "glance"]);
    assert!(plan.added().is_empty() && plan.removed().is_empty() && plan.changed().is_empty());
}

#[test]
fn the_log_line_names_each_change() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER
        .replace(
            "[[service.server]]\nlabel = \"k1\"\naddress = \"10.0.1.1\"\n",
            "",
        )
        .replace(
            "persistence = \"last-successful\"",
            "persistence = \"source-ip\"",
        )
        .replace(
            "name = \"lab\"",
            "name = \"lab\"\n[heartbeat]\ninterval_ms = 100",
        ));
    let plan = ReloadPlan::new(&a, &b);
    assert_eq!(
        plan.to_string(),
        "2 services changed (keystone: servers -k1; mysql: persistence), heartbeat timings changed (applied live)"
    );
    let t = plan.heartbeat_timings.unwrap();
    assert_eq!((t.interval_ms, t.dead_ms), (100, 500));
    assert_eq!(plan.unchanged(), vec!["glance"]);
    assert!(plan.vips.is_empty() && plan.announce.is_none() && plan.cluster_renamed.is_none());
}

#[test]
fn servers_are_kept_replaced_added_and_removed_by_label() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER
        // k1: same address, new weight -> kept, weight updated in place.
        .replace(
            "label = \"k1\"\naddress = \"10.0.1.1\"\n",
            "label = \"k1\"\naddress = \"10.0.1.1\"\nweight = 7\n",
        )
        // k2: new port -> replaced (admin state carried over).
        .replace("port = 5001", "port = 5002")
        // k3 removed, k4 added.
        .replace(
            "label = \"k3\"\naddress = \"10.0.1.3\"",
            "label = \"k4\"\naddress = \"10.0.1.4\"",
        ));
    let plan = ReloadPlan::new(&a, &b);
    let d = delta(&plan, "keystone");
    assert!(!d.listeners_changed);
    assert!(d.settings.is_empty());
    assert!(d.keeps_limit);
    assert_eq!(
        server(d, "k1"),
        ServerChange::Kept {
            weight: Some(7),
            check_restarts: false
        }
    );
    assert_eq!(server(d, "k2"), ServerChange::Replaced);
    assert_eq!(server(d, "k4"), ServerChange::Added);
    assert_eq!(server(d, "k3"), ServerChange::Removed);
    let order: Vec<&str> = d.servers.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(order, vec!["k1", "k2", "k4", "k3"]);
    assert_eq!(
        plan.to_string(),
        "1 service changed (keystone: servers k1 weight 7 k2 replaced +k4 -k3)"
    );
}

#[test]
fn listeners_limit_and_checks_follow_what_the_proxy_keeps() {
    let a = cfg(CLUSTER);
    // The first port changes: servers without a port of their own are checked on it.
    let b = cfg(&CLUSTER.replace("ports = [5000, 35357]", "ports = [5005, 35357]"));
    let plan = ReloadPlan::new(&a, &b);
    let d = delta(&plan, "keystone");
    assert!(d.listeners_changed);
    assert_eq!(
        server(d, "k1"),
        ServerChange::Kept {
            weight: None,
            check_restarts: true
        }
    );
    // k2 has its own port: its check target is unchanged.
    assert_eq!(
        server(d, "k2"),
        ServerChange::Kept {
            weight: None,
            check_restarts: false
        }
    );
    assert!(!d.servers_changed());
    assert_eq!(plan.to_string(), "1 service changed (keystone: listeners)");

    let c = cfg(&CLUSTER.replace(
        "persistence = \"last-successful\"",
        "persistence = \"last-successful\"\nproxy = { max_connections = 10 }\nhealth_check = { rise = 3 }",
    ));
    let plan = ReloadPlan::new(&a, &c);
    let d = delta(&plan, "mysql");
    assert!(!d.keeps_limit);
    assert_eq!(d.settings, vec![Setting::HealthCheck, Setting::Proxy]);
    assert_eq!(
        server(d, "db1"),
        ServerChange::Kept {
            weight: None,
            check_restarts: true
        }
    );
    // Another timeout, the same limit: the semaphore carries over.
    let e = cfg(&CLUSTER.replace(
        "persistence = \"last-successful\"",
        "persistence = \"last-successful\"\nproxy = { connect_timeout_ms = 10 }",
    ));
    assert!(delta(&ReloadPlan::new(&a, &e), "mysql").keeps_limit);
}

#[test]
fn the_fallback_counts_for_http_services_only() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER.replace(
        "name = \"lab\"",
        "name = \"lab\"\n[fallback]\naddress = \"10.0.9.9\"\nport = 80",
    ));
    let plan = ReloadPlan::new(&a, &b);
    assert!(plan.fallback_changed);
    assert_eq!(
        delta(&plan, "keystone").settings,
        vec![Setting::Fallback],
        "an HTTP service inherits the cluster's fallback"
    );
    // The loader merges the cluster's fallback into every service, TCP ones too; the proxy
    // rebuilds them, so the plan says they changed, although no fallback is used in TCP mode.
    assert_eq!(delta(&plan, "mysql").settings, vec![Setting::Fallback]);

    // A configuration built without the merge: the effective fallback decides, as in the proxy.
    let mut old = a.clone();
    let mut new = a.clone();
    new.fallback = Some(FallbackServer {
        address: "10.0.9.9".parse().unwrap(),
        port: 80,
    });
    let plan = ReloadPlan::new(&old, &new);
    assert!(matches!(
        plan.service("keystone").unwrap().change,
        ServiceChange::Changed(_)
    ));
    assert_eq!(
        plan.service("mysql").unwrap().change,
        ServiceChange::Unchanged
    );
    assert_eq!(
        effective_fallback(&new.services[0], new.fallback.as_ref()),
        new.fallback
    );
    assert_eq!(
        effective_fallback(&new.services[1], new.fallback.as_ref()),
        None
    );
    // A TCP service's own (unused) fallback still changes the service as configured.
    old.services[1].fallback = None;
    new.services[1].fallback = new.fallback.clone();
    let plan = ReloadPlan::new(&old, &new);
    assert_eq!(delta(&plan, "mysql").settings, vec![Setting::Fallback]);
}

#[test]
fn services_and_vips_come_and_go() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER.replace(
        "label = \"mysql\"\nvip = \"10.0.0.101\"",
        "label = \"mariadb\"\nvip = \"10.0.0.102\"",
    ));
    let plan = ReloadPlan::new(&a, &b);
    assert_eq!(plan.added(), vec!["mariadb"]);
    assert_eq!(plan.removed(), vec!["mysql"]);
    assert_eq!(
        plan.vips.added,
        vec!["10.0.0.102".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        plan.vips.removed,
        vec!["10.0.0.101".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        plan.to_string(),
        "1 service added (mariadb), 1 service removed (mysql), VIPs added (10.0.0.102), VIPs removed (10.0.0.101)"
    );
    // Removed services come last, in the old order.
    let labels: Vec<&str> = plan.services.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, vec!["keystone", "mariadb", "glance", "mysql"]);

    // The same VIPs in another order: nothing to move.
    let mut reordered = a.clone();
    reordered.services.reverse();
    let plan = ReloadPlan::new(&a, &reordered);
    assert!(plan.vips.is_empty());
    assert!(plan.is_empty());
    assert_eq!(
        service_vips(&a),
        vec![
            "10.0.0.100".parse::<IpAddr>().unwrap(),
            "10.0.0.101".parse().unwrap()
        ]
    );
}

#[test]
fn a_repeated_label_counts_once_as_the_proxy_serves_it() {
    let a = cfg(CLUSTER);
    let mut b = a.clone();
    let mut twin = b.services[0].clone();
    twin.ports = vec![1];
    b.services.push(twin);
    let plan = ReloadPlan::new(&a, &b);
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(plan.services.len(), 3);
}

#[test]
fn heartbeat_parts_are_told_apart() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER.replace(
        "name = \"lab\"",
        "name = \"lab2\"\n[heartbeat]\nauto_failback = true\nping_nodes = [\"10.0.0.254\"]\ngarp_count = 3",
    ));
    let plan = ReloadPlan::new(&a, &b);
    assert_eq!(
        plan.cluster_renamed,
        Some(Renamed {
            from: "lab".into(),
            to: "lab2".into()
        })
    );
    assert!(plan.heartbeat_timings.is_none());
    assert_eq!(plan.auto_failback, Some(true));
    assert_eq!(
        plan.ping_nodes,
        Some(vec!["10.0.0.254".parse::<IpAddr>().unwrap()])
    );
    assert_eq!(plan.announce.map(|a| a.garp_count), Some(3));
    assert_eq!(
        plan.to_string(),
        "cluster renamed \"lab\" -> \"lab2\" (the peers no longer recognise each other until both run the new name), \
         auto_failback now true, ping nodes changed, VIP announcement settings changed"
    );
}

#[test]
fn defaults_sections_are_reported_with_their_effect_on_services() {
    let a = cfg(CLUSTER);
    let b = cfg(&CLUSTER.replace(
        "name = \"lab\"",
        "name = \"lab\"\n[health_check]\nfall = 3\n[proxy]\nclient_timeout_ms = 1000",
    ));
    let plan = ReloadPlan::new(&a, &b);
    assert!(plan.health_defaults_changed && plan.proxy_defaults_changed);
    for label in ["keystone", "mysql", "glance"] {
        assert_eq!(
            delta(&plan, label).settings,
            vec![Setting::HealthCheck, Setting::Proxy]
        );
    }
}

const NODE: &str =
    "[node]\nname = \"lb1\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n";

#[test]
fn node_changes_need_a_restart_and_say_so() {
    let a = parse_node_str(NODE, "node.toml", None).unwrap();
    let plan = NodePlan::new(&a, &a);
    assert!(plan.is_empty());
    assert_eq!(plan.to_string(), "node.toml unchanged");
    let b = parse_node_str(
        &format!(
            "{}[tuning]\nworkers = 2\n[network]\nbond0 = \"eth0\"\n",
            NODE.replace("10.0.0.1", "10.0.0.5")
        ),
        "node.toml",
        None,
    )
    .unwrap();
    let plan = NodePlan::new(&a, &b);
    assert_eq!(
        plan.restart_needed,
        vec!["node.address", "tuning.workers", "local.network"]
    );
    assert_eq!(plan.lines()[0], "node.address changed: restart needed");
    assert_eq!(
        plan.to_string(),
        "node.address, tuning.workers, local.network changed: restart needed"
    );
}
