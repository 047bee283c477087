#![allow(clippy::unwrap_used)]
//! A service's `ports`: ranges, duplicates and the per-service limit, including the input the fuzzer found that
//! used to take seconds to refuse (every port of a range was compared with every port before it).

fn cluster(ports: &str) -> String {
    format!(
        "[cluster]\nname = \"x\"\n[[service]]\nlabel = \"a\"\nvip = \"127.0.0.5\"\nports = {ports}\nmode = \"tcp\"\n\
         [[service.server]]\nlabel = \"s\"\naddress = \"127.0.0.6\"\n"
    )
}

fn errors(ports: &str) -> Vec<String> {
    match tandem_config::parse_cluster_str(&cluster(ports), "cluster.toml") {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn the_whole_port_range_is_refused_by_the_limit_at_once() {
    // 65,535 ports: with the old pairwise check this was ~2e9 comparisons before the limit applied.
    for ports in [r#"["1-65535"]"#, r#"["1-4000", "10000-65535"]"#] {
        let errors = errors(ports);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("listens on more than 4096 ports"),
            "{errors:?}"
        );
        assert!(errors[0].starts_with("cluster.toml:6:"), "{errors:?}");
    }
}

#[test]
fn ranges_up_to_the_limit_and_duplicates() {
    assert!(errors(r#"["1-4096"]"#).is_empty());
    assert!(errors(r#"[80, "8000-8010", 443]"#).is_empty());
    let twice = errors(r#"[80, "70-90"]"#);
    assert_eq!(twice.len(), 1, "{twice:?}");
    assert!(twice[0].contains("port 80 is listed twice"), "{twice:?}");
    let overlap = errors(r#"["8000-8010", "8005-8020"]"#);
    assert!(
        overlap[0].contains("port 8005 is listed twice"),
        "{overlap:?}"
    );
}
