//! Property tests: parse -> canonical -> parse is the identity, and the digest depends on the
//! meaning only (whitespace, key order, comments, table style, defaults left out).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::sample::select;
use std::net::{IpAddr, Ipv4Addr};
use tandem_config::*;

fn ipv4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn heartbeat() -> impl Strategy<Value = HeartbeatConfig> {
    (10u64..1000, 2u64..10, 0u64..1000, 0u64..5000, any::<bool>())
        .prop_flat_map(|(interval, mult, warn_off, init_extra, auto)| {
            let dead = interval * mult;
            let warn = interval + warn_off % (dead - interval);
            (
                Just((interval, dead, warn, dead + init_extra, auto)),
                proptest::collection::vec(1u8..250, 0..3),
                1u32..100,
                0u64..10_000,
                0u64..100_000,
                select(vec![GarpForm::Request, GarpForm::Reply, GarpForm::Both]),
            )
        })
        .prop_map(
            |((interval, dead, warn, init_dead, auto), pings, count, spacing, refresh, form)| {
                let mut ping_nodes: Vec<IpAddr> =
                    pings.into_iter().map(|d| ipv4(192, 0, 2, d)).collect();
                ping_nodes.dedup();
                let mut seen = Vec::new();
                ping_nodes.retain(|p| {
                    let fresh = !seen.contains(p);
                    seen.push(*p);
                    fresh
                });
                HeartbeatConfig {
                    interval_ms: interval,
                    dead_ms: dead,
                    warn_ms: warn,
                    init_dead_ms: init_dead,
                    auto_failback: auto,
                    ping_nodes,
                    garp_count: count,
                    garp_spacing_ms: spacing,
                    garp_refresh_ms: refresh,
                    garp_form: form,
                    conflict_check_ms: cluster_defaults::CONFLICT_CHECK_MS,
                    handover_drain_ms: cluster_defaults::HANDOVER_DRAIN_MS,
                }
            },
        )
        .prop_flat_map(|heartbeat| {
            (
                Just(heartbeat),
                prop_oneof![Just(0u64), Just(1000u64), 100u64..=60_000],
            )
        })
        .prop_map(|(mut heartbeat, conflict_check_ms)| {
            heartbeat.conflict_check_ms = conflict_check_ms;
            heartbeat
        })
}

fn health() -> impl Strategy<Value = HealthCheckConfig> {
    (
        10u64..100_000,
        1u32..20,
        1u32..20,
        any::<u64>(),
        prop::option::of(("[a-z0-9/_.-]{0,12}", 100u16..600)),
    )
        .prop_map(|(interval, rise, fall, t, http)| HealthCheckConfig {
            interval_ms: interval,
            rise,
            fall,
            timeout_ms: 1 + t % (interval - 1),
            check: match http {
                None => CheckKind::Connect,
                Some((path, expect_status)) => CheckKind::Http {
                    path: format!("/{path}"),
                    expect_status,
                },
            },
        })
}

fn proxy() -> impl Strategy<Value = ProxyDefaults> {
    (
        1u64..100_000,
        1u64..1_000_000,
        1u64..1_000_000,
        0u32..100_000,
    )
        .prop_map(|(c, cl, s, m)| ProxyDefaults {
            connect_timeout_ms: c,
            client_timeout_ms: cl,
            server_timeout_ms: s,
            max_connections: m,
        })
}

fn fallback() -> impl Strategy<Value = Option<FallbackServer>> {
    prop::option::of((1u8..250, 1u16..=65535)).prop_map(|f| {
        f.map(|(d, port)| FallbackServer {
            address: ipv4(10, 9, 9, d),
            port,
        })
    })
}

fn persistence() -> impl Strategy<Value = Persistence> {
    (
        0usize..4,
        0u64..100_000,
        1usize..1_000_000,
        "[A-Za-z0-9_.-]{1,20}",
    )
        .prop_map(|(m, timeout_s, table_size, cookie)| match m {
            0 => Persistence {
                mode: PersistenceMode::None,
                timeout_s: 0,
                table_size: 0,
                cookie_name: String::new(),
            },
            1 | 2 => Persistence {
                mode: if m == 1 {
                    PersistenceMode::SourceIp
                } else {
                    PersistenceMode::LastSuccessful
                },
                timeout_s,
                table_size,
                cookie_name: String::new(),
            },
            _ => Persistence {
                mode: PersistenceMode::HttpCookie,
                timeout_s: 0,
                table_size: 0,
                cookie_name: cookie,
            },
        })
}

fn servers(index: u8) -> impl Strategy<Value = Vec<Server>> {
    proptest::collection::vec((prop::option::of(1u16..=65535), 0u32..=256), 0..4).prop_map(
        move |list| {
            list.into_iter()
                .enumerate()
                .map(|(j, (port, weight))| Server {
                    label: format!("srv-{j}"),
                    address: ipv4(10, 1, index, j as u8 + 1),
                    port,
                    weight,
                })
                .collect()
        },
    )
}

/// Ports of service `index`: distinct, from a block no other service uses, in random order,
/// often with runs (so ranges get written).
fn ports(index: u8) -> impl Strategy<Value = Vec<u16>> {
    let base = 1000 * u16::from(index) + 1;
    (
        proptest::collection::vec(0u16..900, 1..5),
        0u16..4,
        any::<bool>(),
    )
        .prop_map(move |(offsets, run, reverse)| {
            let mut out: Vec<u16> = Vec::new();
            for o in offsets {
                for k in 0..=run {
                    let p = base + o + k;
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
            if reverse {
                out.reverse();
            }
            out
        })
}

fn service(index: u8, cluster_fallback: Option<FallbackServer>) -> impl Strategy<Value = Service> {
    (
        select(vec![
            ipv4(10, 0, 0, 100),
            ipv4(10, 0, 0, 101),
            "fd00::100".parse().unwrap(),
        ]),
        ports(index),
        any::<bool>(),
        any::<bool>(),
        persistence(),
        health(),
        proxy(),
        fallback(),
        servers(index),
    )
        .prop_map(
            move |(vip, ports, http, rr, persistence, health_check, proxy, fb, servers)| {
                let mode = if http || persistence.mode == PersistenceMode::HttpCookie {
                    Mode::Http
                } else {
                    Mode::Tcp
                };
                Service {
                    label: format!("svc_{index}"),
                    vip,
                    ports,
                    mode,
                    balance: if rr {
                        Balance::RoundRobin
                    } else {
                        Balance::WeightedLeastConnections
                    },
                    persistence,
                    health_check,
                    proxy,
                    // The model holds the effective fallback.
                    fallback: fb.or(cluster_fallback.clone()),
                    servers,
                    tls: None,
                }
            },
        )
}

fn cluster_config() -> impl Strategy<Value = ClusterConfig> {
    (
        "[a-z][a-z0-9_-]{0,15}",
        heartbeat(),
        health(),
        proxy(),
        fallback(),
        0u8..5,
    )
        .prop_flat_map(|(name, heartbeat, health_check, proxy, fallback, n)| {
            let services: Vec<_> = (0..n).map(|i| service(i, fallback.clone())).collect();
            (
                Just((name, heartbeat, health_check, proxy, fallback)),
                services,
            )
        })
        .prop_map(
            |((name, heartbeat, health_check, proxy, fallback), services)| ClusterConfig {
                cluster: ClusterSection { name },
                heartbeat,
                health_check,
                proxy,
                fallback,
                services,
            },
        )
}

/// xorshift: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn flip(&mut self) -> bool {
        self.next().is_multiple_of(2)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Writes `c` as an operator might: keys shuffled within each table, odd spacing, comments,
/// ports one by one or as ranges or strings, persistence as inline or standard table,
/// defaults left out, top-level sections in another order.
fn operator_style(c: &ClusterConfig, seed: u64) -> String {
    let mut rng = Rng(seed);
    let q = |s: &str| format!("\"{s}\"");
    let kv = |k: &str, v: String, style: bool| {
        if style {
            format!("  {k}   =   {v}    # {k}")
        } else {
            format!("{k}={v}")
        }
    };

    let health_keys = |h: &HealthCheckConfig, style: bool| {
        let mut keys = vec![
            kv("interval_ms", h.interval_ms.to_string(), style),
            kv("rise", h.rise.to_string(), style),
            kv("fall", h.fall.to_string(), style),
            kv("timeout_ms", h.timeout_ms.to_string(), style),
        ];
        match &h.check {
            CheckKind::Connect => keys.push(kv("check", q("connect"), style)),
            // `check = "http"` is implied by the `http` table.
            CheckKind::Http {
                path,
                expect_status,
            } => keys.push(kv(
                "http",
                format!("{{expect_status={expect_status},path={}}}", q(path)),
                style,
            )),
        }
        keys
    };
    let proxy_keys = |p: &ProxyDefaults, style: bool| {
        vec![
            kv("max_connections", p.max_connections.to_string(), style),
            kv("server_timeout_ms", p.server_timeout_ms.to_string(), style),
            kv("client_timeout_ms", p.client_timeout_ms.to_string(), style),
            kv(
                "connect_timeout_ms",
                p.connect_timeout_ms.to_string(),
                style,
            ),
        ]
    };

    let mut top: Vec<String> = Vec::new();
    let style = rng.flip();
    let mut cluster = vec![kv("name", q(&c.cluster.name), style)];
    rng.shuffle(&mut cluster);
    top.push(format!(
        "# the cluster\n[ cluster ]\n{}\n",
        cluster.join("\n")
    ));

    let hb = &c.heartbeat;
    let style = rng.flip();
    let mut keys = vec![
        kv("interval_ms", hb.interval_ms.to_string(), style),
        kv("dead_ms", hb.dead_ms.to_string(), style),
        kv("warn_ms", hb.warn_ms.to_string(), style),
        kv("init_dead_ms", hb.init_dead_ms.to_string(), style),
        kv("auto_failback", hb.auto_failback.to_string(), style),
        kv("garp_spacing_ms", hb.garp_spacing_ms.to_string(), style),
        kv("garp_refresh_ms", hb.garp_refresh_ms.to_string(), style),
        kv("garp_form", q(garp_form_name(hb.garp_form)), style),
    ];
    if hb.conflict_check_ms != cluster_defaults::CONFLICT_CHECK_MS || rng.flip() {
        keys.push(kv(
            "conflict_check_ms",
            hb.conflict_check_ms.to_string(),
            style,
        ));
    }
    if hb.garp_count != cluster_defaults::GARP_COUNT || rng.flip() {
        keys.push(kv("garp_count", hb.garp_count.to_string(), style));
    }
    if !hb.ping_nodes.is_empty() || rng.flip() {
        let pings: Vec<String> = hb.ping_nodes.iter().map(|p| q(&p.to_string())).collect();
        keys.push(kv(
            "ping_nodes",
            format!("[ {} ,]", pings.join(" , ")).replace("[  ,]", "[]"),
            style,
        ));
    }
    rng.shuffle(&mut keys);
    top.push(format!("[heartbeat]\n\n{}\n", keys.join("\n")));

    let style = rng.flip();
    let mut keys = health_keys(&c.health_check, style);
    rng.shuffle(&mut keys);
    top.push(format!("[health_check] # defaults\n{}\n", keys.join("\n")));
    let style = rng.flip();
    let mut keys = proxy_keys(&c.proxy, style);
    rng.shuffle(&mut keys);
    top.push(format!("[proxy]\n{}\n", keys.join("\n")));
    if let Some(f) = &c.fallback {
        top.push(format!(
            "[fallback]\nport = {}\naddress = {}\n",
            f.port,
            q(&f.address.to_string())
        ));
    }
    rng.shuffle(&mut top);

    let mut out = top.join("\n# ----\n\n");
    for s in &c.services {
        let style = rng.flip();
        let mut keys = vec![
            kv("label", q(&s.label), style),
            kv("vip", q(&s.vip.to_string()), style),
        ];
        let ports: Vec<String> = if rng.flip() {
            s.ports
                .iter()
                .map(|p| {
                    if rng.flip() {
                        p.to_string()
                    } else {
                        q(&p.to_string())
                    }
                })
                .collect()
        } else {
            // Ranges where the canonical form has them.
            let canon = canonical_toml(&ClusterConfig {
                services: vec![s.clone()],
                ..c.clone()
            });
            let line = canon
                .lines()
                .find(|l| l.starts_with("ports = "))
                .unwrap()
                .trim_start_matches("ports = ")
                .trim_matches(|ch| ch == '[' || ch == ']')
                .to_string();
            line.split(", ").map(ToString::to_string).collect()
        };
        keys.push(kv("ports", format!("[{}]", ports.join(",")), style));
        if s.mode != Mode::Tcp || rng.flip() {
            keys.push(kv("mode", q(mode_name(s.mode)), style));
        }
        if s.balance != Balance::WeightedLeastConnections || rng.flip() {
            keys.push(kv("balance", q(balance_name(s.balance)), style));
        }
        let inline_persistence = rng.flip();
        if inline_persistence && (s.persistence.mode != PersistenceMode::None || rng.flip()) {
            keys.push(kv("persistence", persistence_inline(&s.persistence), style));
        }
        let health_inline = rng.flip();
        if s.health_check != c.health_check && health_inline {
            keys.push(kv(
                "health_check",
                format!("{{ {} }}", health_keys(&s.health_check, false).join(", ")),
                style,
            ));
        }
        if s.proxy != c.proxy {
            keys.push(kv(
                "proxy",
                format!("{{ {} }}", proxy_keys(&s.proxy, false).join(", ")),
                style,
            ));
        }
        rng.shuffle(&mut keys);
        out.push_str(&format!(
            "\n[[service]]  # {}\n{}\n",
            s.label,
            keys.join("\n")
        ));
        if !inline_persistence && s.persistence.mode != PersistenceMode::None {
            // Standard table: same keys as the inline form.
            let inline = persistence_inline(&s.persistence);
            let body = inline
                .trim_matches(|ch| ch == '{' || ch == '}')
                .split(", ")
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n");
            out.push_str(&format!("[service.persistence]\n{body}\n"));
        }
        if s.health_check != c.health_check && !health_inline {
            out.push_str(&format!(
                "[service.health_check]\n{}\n",
                health_keys(&s.health_check, true).join("\n")
            ));
        }
        if s.fallback != c.fallback
            && let Some(f) = &s.fallback
        {
            out.push_str(&format!(
                "[service.fallback]\naddress = {}\nport = {}\n",
                q(&f.address.to_string()),
                f.port
            ));
        }
        for r in &s.servers {
            let mut keys = vec![
                kv("label", q(&r.label), style),
                kv("address", q(&r.address.to_string()), style),
            ];
            if let Some(p) = r.port {
                keys.push(kv("port", p.to_string(), style));
            }
            if r.weight != 100 || rng.flip() {
                keys.push(kv("weight", r.weight.to_string(), style));
            }
            rng.shuffle(&mut keys);
            out.push_str(&format!("[[service.server]]\n{}\n\n", keys.join("\n")));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_form_parses_back_to_the_same_model(c in cluster_config()) {
        let text = canonical_toml(&c);
        let parsed = parse_cluster_str(&text, "canonical.toml")
            .map_err(|d| TestCaseError::fail(format!("{d}\n---\n{text}")))?;
        prop_assert_eq!(&parsed, &c);
        prop_assert_eq!(canonical_toml(&parsed), text);
    }

    #[test]
    fn digest_ignores_formatting(c in cluster_config(), seed in 1u64..u64::MAX) {
        let styled = operator_style(&c, seed);
        let parsed = parse_cluster_str(&styled, "styled.toml")
            .map_err(|d| TestCaseError::fail(format!("{d}\n---\n{styled}")))?;
        prop_assert_eq!(&parsed, &c, "\n---\n{}", styled);
        prop_assert_eq!(digest(&parsed), digest(&c));
    }

    #[test]
    fn any_change_of_meaning_changes_the_digest(c in cluster_config(), bump in 1u64..1000) {
        let mut changed = c.clone();
        changed.health_check.rise = changed.health_check.rise % 900 + 1 + (bump as u32 % 50);
        prop_assume!(changed != c);
        prop_assert_ne!(digest(&changed), digest(&c));
    }
}
