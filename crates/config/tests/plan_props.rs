//! Property tests of the reload plan: a config planned against itself is empty; against
//! another, the plan names exactly the services that differ, and its added and removed labels
//! turn the old label set into the new one.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use tandem_config::*;

fn ipv4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
}

fn fallback() -> impl Strategy<Value = Option<FallbackServer>> {
    prop::option::of(select(vec![80u16, 81])).prop_map(|p| {
        p.map(|port| FallbackServer {
            address: ipv4(9),
            port,
        })
    })
}

/// Few values per field, so that two draws often agree on a service and differ in one part.
fn servers() -> impl Strategy<Value = Vec<Server>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u8..2,
            prop::option::of(select(vec![8080u16, 8081])),
            select(vec![1u32, 100]),
        ),
        0..4,
    )
    .prop_map(|list| {
        let mut out: Vec<Server> = Vec::new();
        for (label, addr, port, weight) in list {
            let label = format!("s{label}");
            if out.iter().all(|s| s.label != label) {
                out.push(Server {
                    label,
                    address: ipv4(20 + addr),
                    port,
                    weight,
                });
            }
        }
        out
    })
}

fn service(label: String) -> impl Strategy<Value = Service> {
    (
        select(vec![ipv4(100), ipv4(101)]),
        select(vec![vec![80u16], vec![80, 81], vec![81]]),
        any::<bool>(),
        select(vec![0u32, 10]),
        select(vec![2000u64, 3000]),
        fallback(),
        servers(),
    )
        .prop_map(
            move |(vip, ports, http, max_connections, interval_ms, fallback, servers)| Service {
                label: label.clone(),
                vip,
                ports,
                mode: if http { Mode::Http } else { Mode::Tcp },
                balance: Balance::WeightedLeastConnections,
                persistence: Persistence {
                    mode: PersistenceMode::None,
                    timeout_s: 0,
                    table_size: 0,
                    cookie_name: String::new(),
                },
                health_check: HealthCheckConfig {
                    interval_ms,
                    rise: 2,
                    fall: 5,
                    timeout_ms: 1000,
                    check: CheckKind::Connect,
                },
                proxy: ProxyDefaults {
                    connect_timeout_ms: 4000,
                    client_timeout_ms: 50_000,
                    server_timeout_ms: 50_000,
                    max_connections,
                },
                fallback,
                servers,
                tls: None,
            },
        )
}

fn cluster() -> impl Strategy<Value = ClusterConfig> {
    (
        select(vec!["lab", "prod"]),
        select(vec![100u64, 200]),
        fallback(),
        proptest::collection::btree_set(0u8..5, 0..5),
    )
        .prop_flat_map(|(name, interval, fallback, labels)| {
            let services: Vec<_> = labels
                .into_iter()
                .map(|i| service(format!("svc{i}")))
                .collect();
            (Just((name, interval, fallback)), services)
        })
        .prop_map(|((name, interval, fallback), services)| ClusterConfig {
            cluster: ClusterSection { name: name.into() },
            heartbeat: HeartbeatConfig {
                interval_ms: interval,
                dead_ms: 1000,
                warn_ms: 500,
                init_dead_ms: 3000,
                auto_failback: false,
                ping_nodes: Vec::new(),
                garp_count: 5,
                garp_spacing_ms: 200,
                garp_refresh_ms: 0,
                garp_form: GarpForm::Request,
                conflict_check_ms: 1000,
                handover_drain_ms: 500,
            },
            health_check: HealthCheckConfig {
                interval_ms: 2000,
                rise: 2,
                fall: 5,
                timeout_ms: 1000,
                check: CheckKind::Connect,
            },
            proxy: ProxyDefaults {
                connect_timeout_ms: 4000,
                client_timeout_ms: 50_000,
                server_timeout_ms: 50_000,
                max_connections: 0,
            },
            fallback,
            services,
        })
}

fn labels(c: &ClusterConfig) -> BTreeSet<String> {
    c.services.iter().map(|s| s.label.clone()).collect()
}

/// The labels whose service the proxy would not keep as it is: present in one config only, or
/// configured differently, or falling back elsewhere.
fn differing(a: &ClusterConfig, b: &ClusterConfig) -> BTreeSet<String> {
    labels(a)
        .union(&labels(b))
        .filter(|l| {
            let sa = a.services.iter().find(|s| &s.label == *l);
            let sb = b.services.iter().find(|s| &s.label == *l);
            match (sa, sb) {
                (Some(x), Some(y)) => {
                    x != y
                        || effective_fallback(x, a.fallback.as_ref())
                            != effective_fallback(y, b.fallback.as_ref())
                }
                _ => true,
            }
        })
        .cloned()
        .collect()
}

proptest! {
    #[test]
    fn a_config_against_itself_plans_nothing(a in cluster()) {
        let plan = ReloadPlan::new(&a, &a);
        prop_assert!(plan.is_empty(), "{plan}");
        prop_assert_eq!(plan.to_string(), "no changes");
        prop_assert_eq!(plan.unchanged().len(), a.services.len());
    }

    #[test]
    fn the_plan_names_exactly_the_services_that_differ(a in cluster(), b in cluster()) {
        let plan = ReloadPlan::new(&a, &b);
        let named: BTreeSet<String> = plan
            .services
            .iter()
            .filter(|s| s.change != ServiceChange::Unchanged)
            .map(|s| s.label.clone())
            .collect();
        prop_assert_eq!(&named, &differing(&a, &b));
        let all: BTreeSet<String> = plan.services.iter().map(|s| s.label.clone()).collect();
        prop_assert_eq!(all, labels(&a).union(&labels(&b)).cloned().collect::<BTreeSet<_>>());
        prop_assert_eq!(plan.services.len(), labels(&a).union(&labels(&b)).count());
        if a == b {
            prop_assert!(plan.is_empty());
        }
        if plan.is_empty() {
            prop_assert!(named.is_empty());
            prop_assert_eq!(&a.cluster, &b.cluster);
            prop_assert_eq!(&a.heartbeat, &b.heartbeat);
        }
    }

    #[test]
    fn added_and_removed_turn_the_old_labels_into_the_new(a in cluster(), b in cluster()) {
        let plan = ReloadPlan::new(&a, &b);
        let mut set = labels(&a);
        for r in plan.removed() {
            prop_assert!(set.remove(r), "{} removed but not in the old config", r);
        }
        for added in plan.added() {
            prop_assert!(set.insert(added.to_string()), "{} added but already there", added);
        }
        prop_assert_eq!(set, labels(&b));
    }

    #[test]
    fn the_vip_plan_turns_the_old_vip_set_into_the_new(a in cluster(), b in cluster()) {
        let plan = ReloadPlan::new(&a, &b);
        let mut set: BTreeSet<IpAddr> = service_vips(&a).into_iter().collect();
        for v in &plan.vips.removed {
            prop_assert!(set.remove(v));
        }
        for v in &plan.vips.added {
            prop_assert!(set.insert(*v));
        }
        prop_assert_eq!(set, service_vips(&b).into_iter().collect::<BTreeSet<_>>());
    }

    #[test]
    fn server_plans_follow_the_proxy_rules(a in cluster(), b in cluster()) {
        let plan = ReloadPlan::new(&a, &b);
        for sp in &plan.services {
            let ServiceChange::Changed(d) = &sp.change else { continue };
            let old = a.services.iter().find(|s| s.label == sp.label).unwrap();
            let new = b.services.iter().find(|s| s.label == sp.label).unwrap();
            prop_assert_eq!(d.keeps_limit, old.proxy.max_connections == new.proxy.max_connections);
            prop_assert_eq!(d.listeners_changed, old.vip != new.vip || old.ports != new.ports);
            for s in &d.servers {
                let o = old.servers.iter().find(|x| x.label == s.label);
                let n = new.servers.iter().find(|x| x.label == s.label);
                match (s.change, o, n) {
                    (ServerChange::Added, None, Some(_)) | (ServerChange::Removed, Some(_), None) => {}
                    (ServerChange::Kept { weight, .. }, Some(o), Some(n)) => {
                        prop_assert_eq!((o.address, o.port), (n.address, n.port));
                        prop_assert_eq!(weight, (o.weight != n.weight).then_some(n.weight));
                    }
                    (ServerChange::Replaced, Some(o), Some(n)) => {
                        prop_assert_ne!((o.address, o.port), (n.address, n.port));
                    }
                    (change, o, n) => prop_assert!(false, "{:?} for {:?} -> {:?}", change, o, n),
                }
            }
        }
    }
}
