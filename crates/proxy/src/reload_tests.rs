#![allow(clippy::unwrap_used)]

use super::*;
use crate::state::AdminState;
use tandem_config::{ServerPlan, ServicePlan, parse_cluster_str};

const CLUSTER: &str = r#"
[cluster]
name = "lab"

[[service]]
label = "web"
vip = "127.0.0.1"
ports = [8000]
mode = "http"
[service.proxy]
max_connections = 10
[[service.server]]
label = "w1"
address = "127.0.1.1"
[[service.server]]
label = "w2"
address = "127.0.1.2"
[[service.server]]
label = "w3"
address = "127.0.1.3"

[[service]]
label = "db"
vip = "127.0.0.1"
ports = [3306]
[[service.server]]
label = "d1"
address = "127.0.2.1"
"#;

fn cfg(text: &str) -> ClusterConfig {
    parse_cluster_str(text, "cluster.toml").unwrap()
}

/// The runtimes `text` starts with (every service added).
fn started(text: &str) -> BTreeMap<String, Arc<ServiceRuntime>> {
    let c = cfg(text);
    let empty = ClusterConfig {
        services: Vec::new(),
        ..c.clone()
    };
    next_services(
        &BTreeMap::new(),
        &c,
        &ReloadPlan::new(&empty, &c),
        &TlsBuilt::new(),
    )
    .services
}

fn reloaded(running: &BTreeMap<String, Arc<ServiceRuntime>>, from: &str, to: &str) -> Next {
    next_services(
        running,
        &cfg(to),
        &ReloadPlan::new(&cfg(from), &cfg(to)),
        &TlsBuilt::new(),
    )
}

fn server<'a>(
    services: &'a BTreeMap<String, Arc<ServiceRuntime>>,
    svc: &str,
    srv: &str,
) -> &'a Arc<ServerRuntime> {
    services[svc].server(srv).unwrap()
}

#[test]
fn an_unchanged_service_keeps_its_runtime_and_counters() {
    let running = started(CLUSTER);
    running["db"].counters.total.store(7, Ordering::Relaxed);
    let to = CLUSTER.replace("address = \"127.0.1.3\"", "address = \"127.0.1.4\"");
    let next = reloaded(&running, CLUSTER, &to);
    assert!(Arc::ptr_eq(&next.services["db"], &running["db"]));
    assert_eq!(
        next.services["db"].counters.total.load(Ordering::Relaxed),
        7
    );
    assert!(!Arc::ptr_eq(&next.services["web"], &running["web"]));
}

#[test]
fn servers_are_kept_replaced_added_and_removed_as_planned() {
    let running = started(CLUSTER);
    let old = |srv: &str| server(&running, "web", srv).clone();
    old("w1").set_health(true, "checks passed".into());
    old("w2").set_health(true, "checks passed".into());
    old("w2").set_admin_state(AdminState::Drain);
    running["web"].counters.total.store(42, Ordering::Relaxed);
    let to = CLUSTER
        // w1: new weight, kept in place.
        .replace(
            "label = \"w1\"\naddress = \"127.0.1.1\"",
            "label = \"w1\"\naddress = \"127.0.1.1\"\nweight = 7",
        )
        // w2: new address, replaced (admin state carried over).
        .replace("address = \"127.0.1.2\"", "address = \"127.0.1.22\"")
        // w3 goes, w4 comes.
        .replace(
            "label = \"w3\"\naddress = \"127.0.1.3\"",
            "label = \"w4\"\naddress = \"127.0.1.4\"",
        );
    let next = reloaded(&running, CLUSTER, &to);
    let web = &next.services["web"];
    assert_eq!(
        web.counters.total.load(Ordering::Relaxed),
        42,
        "counters carried over"
    );

    let w1 = web.server("w1").unwrap();
    assert!(Arc::ptr_eq(w1, &old("w1")), "kept: the same runtime");
    assert_eq!(w1.weight.load(Ordering::Relaxed), 7, "new weight in place");
    assert!(w1.is_healthy());

    let w2 = web.server("w2").unwrap();
    assert!(!Arc::ptr_eq(w2, &old("w2")), "replaced: a new runtime");
    assert_eq!(w2.address, ip("127.0.1.22"));
    assert_eq!(
        w2.admin_state(),
        AdminState::Drain,
        "admin state carried over"
    );
    assert!(!w2.is_healthy(), "a replaced server starts down");

    assert!(web.server("w3").is_none());
    assert!(!web.server("w4").unwrap().is_healthy());
    let labels: Vec<&str> = web.servers.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, vec!["w1", "w2", "w4"]);
    assert!(next.restart_checks.is_empty(), "check settings unchanged");
}

#[test]
fn the_limit_is_kept_unless_max_connections_changes() {
    let running = started(CLUSTER);
    let limit =
        |services: &BTreeMap<String, Arc<ServiceRuntime>>| services["web"].limit.clone().unwrap();
    // Some other setting changes: the semaphore (and the permits connections hold) carries over.
    let other = CLUSTER.replace(
        "mode = \"http\"",
        "mode = \"http\"\nbalance = \"round-robin\"",
    );
    let next = reloaded(&running, CLUSTER, &other);
    assert!(Arc::ptr_eq(&limit(&next.services), &limit(&running)));
    // A new limit: a new semaphore of that size.
    let bigger = CLUSTER.replace("max_connections = 10", "max_connections = 20");
    let next = reloaded(&running, CLUSTER, &bigger);
    assert!(!Arc::ptr_eq(&limit(&next.services), &limit(&running)));
    assert_eq!(limit(&next.services).available_permits(), 20);
    // No limit at all.
    let none = CLUSTER.replace("max_connections = 10", "max_connections = 0");
    assert!(
        reloaded(&running, CLUSTER, &none).services["web"]
            .limit
            .is_none()
    );
}

#[test]
fn checks_restart_where_the_plan_says() {
    let running = started(CLUSTER);
    let to = CLUSTER.replace(
        "label = \"web\"",
        "label = \"web\"\nhealth_check = { interval_ms = 500, timeout_ms = 400 }",
    );
    let next = reloaded(&running, CLUSTER, &to);
    let restarted: Vec<&str> = next
        .restart_checks
        .iter()
        .map(|s| s.label.as_str())
        .collect();
    assert_eq!(restarted, vec!["w1", "w2", "w3"]);
    for s in &next.restart_checks {
        assert!(
            Arc::ptr_eq(s, server(&running, "web", &s.label)),
            "kept runtimes"
        );
    }
}

#[test]
fn the_plan_decides_not_a_comparison() {
    // A plan that replaces a server whose address did not change: the proxy follows the plan.
    let running = started(CLUSTER);
    server(&running, "web", "w1").set_admin_state(AdminState::Halt {
        close_existing: false,
    });
    let c = cfg(CLUSTER);
    let plan = ReloadPlan {
        services: vec![
            ServicePlan {
                label: "web".into(),
                change: ServiceChange::Changed(ServiceDelta {
                    listeners_changed: false,
                    settings: Vec::new(),
                    keeps_limit: false,
                    servers: ["w1", "w2", "w3"]
                        .iter()
                        .map(|l| ServerPlan {
                            label: l.to_string(),
                            change: if *l == "w1" {
                                ServerChange::Replaced
                            } else {
                                ServerChange::Kept {
                                    weight: None,
                                    check_restarts: false,
                                }
                            },
                        })
                        .collect(),
                }),
            },
            ServicePlan {
                label: "db".into(),
                change: ServiceChange::Unchanged,
            },
        ],
        ..ReloadPlan::new(&c, &c)
    };
    let next = next_services(&running, &c, &plan, &TlsBuilt::new());
    let w1 = server(&next.services, "web", "w1");
    assert!(!Arc::ptr_eq(w1, server(&running, "web", "w1")));
    assert_eq!(
        w1.admin_state(),
        AdminState::Halt {
            close_existing: false
        }
    );
    assert!(Arc::ptr_eq(
        server(&next.services, "web", "w2"),
        server(&running, "web", "w2")
    ));
    assert!(!Arc::ptr_eq(
        next.services["web"].limit.as_ref().unwrap(),
        running["web"].limit.as_ref().unwrap()
    ));
}

#[test]
fn a_plan_that_does_not_fit_still_serves_the_whole_configuration() {
    // Planned against nothing running: "unchanged" and "changed" services are built anew; one the plan forgot is
    // added.
    let c = cfg(CLUSTER);
    let mut plan = ReloadPlan::new(&c, &c);
    plan.services.retain(|s| s.label == "web");
    let next = next_services(&BTreeMap::new(), &c, &plan, &TlsBuilt::new());
    let labels: Vec<&str> = next.services.keys().map(String::as_str).collect();
    assert_eq!(labels, vec!["db", "web"]);
    assert_eq!(next.services["web"].servers.len(), 3);
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_service_whose_tls_failed_is_recorded_as_before_so_the_next_plan_retries_it() {
    let served = cfg(CLUSTER);
    let mut wanted = cfg(&CLUSTER.replace("max_connections = 10", "max_connections = 20"));
    let mut added = wanted.services[1].clone();
    added.label = "api".into();
    wanted.services.push(added);
    let errors = vec![
        ("web".to_string(), "web.pem: bad".to_string()),
        ("api".to_string(), "api.pem: bad".to_string()),
    ];
    let recorded = served_config(&served, &wanted, &errors);
    let labels: Vec<&str> = recorded.services.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["web", "db"],
        "the failed new service is not recorded"
    );
    assert_eq!(
        recorded.services[0], served.services[0],
        "web keeps its old entry"
    );
    let again = ReloadPlan::new(&recorded, &wanted);
    assert_eq!(again.changed(), ["web"]);
    assert_eq!(again.added(), ["api"]);
    assert!(served_config(&served, &wanted, &[]) == wanted);
}
