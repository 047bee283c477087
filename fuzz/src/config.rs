//! The configuration parsers: `cluster.toml` (also what a peer pushes) and `node.toml` text.

use tandem_config::{Diagnostics, canonical_toml, digest, parse_cluster_str, parse_node_str};

/// Every diagnostic points inside the text (or at the whole file).
fn check_diagnostics(text: &str, diags: &Diagnostics) {
    assert!(!diags.errors.is_empty(), "refused without an error");
    let lines = text.split('\n').count();
    for d in diags.errors.iter().chain(&diags.warnings) {
        if let Some(line) = d.line {
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {d:?}");
        }
        assert!(!d.message.is_empty());
    }
}

/// `cluster.toml`: an accepted text has a canonical form that is accepted again as an equal configuration with
/// the same digest (what the peers compare), and that is its own canonical form.
pub fn config_cluster(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_cluster_str(text, "cluster.toml") {
        Ok(config) => {
            let canonical = canonical_toml(&config);
            let again = match parse_cluster_str(&canonical, "canonical.toml") {
                Ok(again) => again,
                Err(e) => panic!("the canonical form is refused: {e}\n{canonical}"),
            };
            assert_eq!(again, config);
            assert_eq!(canonical_toml(&again), canonical);
            assert_eq!(digest(&again), digest(&config));
        }
        Err(diags) => check_diagnostics(text, &diags),
    }
}

/// `node.toml`: accepted or refused with diagnostics inside the text, never a panic.
pub fn config_node(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diags) = parse_node_str(text, "node.toml", None) {
        check_diagnostics(text, &diags);
    }
}
