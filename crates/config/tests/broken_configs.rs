//! Every file in `tests/configs/broken/` is rejected with exactly the errors its
//! `# expect: LINE:COL: fragment` header lines list (position exact, message containing the
//! fragment), all in one run, without panicking.
//!
//! Naming: `NN-what.cluster.toml` is checked with `tests/configs/valid/node.toml`,
//! `NN-what.node.toml` with `tests/configs/valid/cluster.toml`, so cross-file checks run too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/configs")
}

struct Expected {
    position: String,
    fragment: String,
}

fn expectations(text: &str) -> Vec<Expected> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap().trim();
            let col = parts.next().unwrap().trim();
            let fragment = parts.next().unwrap().trim().to_string();
            Expected {
                position: format!("{line}:{col}"),
                fragment,
            }
        })
        .collect()
}

fn pair_for(file: &Path) -> (PathBuf, PathBuf) {
    let name = file.file_name().unwrap().to_str().unwrap();
    let valid = configs().join("valid");
    if name.ends_with(".cluster.toml") {
        (file.to_path_buf(), valid.join("node.toml"))
    } else if name.ends_with(".node.toml") {
        (valid.join("cluster.toml"), file.to_path_buf())
    } else {
        panic!("{name}: broken fixtures end in .cluster.toml or .node.toml");
    }
}

#[test]
fn valid_partners_are_valid() {
    let valid = configs().join("valid");
    if let Err(d) = tandem_config::check(&valid.join("cluster.toml"), &valid.join("node.toml")) {
        panic!("{d}");
    }
}

#[test]
fn every_broken_config_reports_exactly_its_expected_errors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} broken fixtures", files.len());

    let mut failures = Vec::new();
    let mut most_errors_in_one_file = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected = expectations(&text);
        let name = file.display().to_string();
        if expected.is_empty() {
            failures.push(format!("{name}: no `# expect:` lines"));
            continue;
        }
        let (cluster, node) = pair_for(file);
        let outcome = std::panic::catch_unwind(|| tandem_config::check(&cluster, &node));
        let diags = match outcome {
            Err(_) => {
                failures.push(format!("{name}: PANICKED"));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{name}: accepted, but it is broken"));
                continue;
            }
            Ok(Err(d)) => d,
        };
        most_errors_in_one_file = most_errors_in_one_file.max(diags.errors.len());
        let mut unmatched: Vec<&tandem_config::Diagnostic> = diags.errors.iter().collect();
        for e in &unmatched {
            if e.file != name {
                failures.push(format!("{name}: error in the wrong file: {e}"));
            }
        }
        for exp in &expected {
            match unmatched
                .iter()
                .position(|d| d.position() == exp.position && d.message.contains(&exp.fragment))
            {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => failures.push(format!(
                    "{name}: expected {}: {} -- got:\n    {}",
                    exp.position,
                    exp.fragment,
                    diags
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n    ")
                )),
            }
        }
        for extra in unmatched {
            failures.push(format!("{name}: unexpected error {extra}"));
        }
        // Every error renders as file:line:col: reason.
        for e in &diags.errors {
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{name}:{}: ", e.position())),
                "{shown}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        most_errors_in_one_file >= 8,
        "a file with many errors reports them all in one run"
    );
}

/// Truncated and mangled versions of the example never panic the loader.
#[test]
fn truncated_configs_never_panic() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/openstack");
    let cluster = std::fs::read_to_string(example.join("cluster.toml")).unwrap();
    let node = std::fs::read_to_string(example.join("node-lb1.toml")).unwrap();
    for cut in (0..cluster.len()).step_by(7) {
        if cluster.is_char_boundary(cut) {
            let _ = tandem_config::parse_cluster_str(&cluster[..cut], "cut");
        }
    }
    for cut in (0..node.len()).step_by(5) {
        if node.is_char_boundary(cut) {
            let _ = tandem_config::parse_node_str(&node[..cut], "cut", None);
        }
    }
}

mod fuzz {
    use proptest::prelude::*;

    fn example(name: &str) -> String {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/examples/openstack");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    /// Replaces `len` characters at `at` (a fraction of the text) with `insert`.
    fn mutate(text: &str, at: f64, len: usize, insert: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let start = ((chars.len() as f64) * at) as usize;
        let end = (start + len).min(chars.len());
        let mut out: String = chars[..start].iter().collect();
        out.push_str(insert);
        out.extend(&chars[end..]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn mutated_examples_never_panic_and_errors_have_positions(
            at in 0.0f64..1.0,
            len in 0usize..40,
            insert in r#"[ -~\n]{0,30}|(= |\[\[|\]|"|0|-1|70000|"a-b"|true|\{|\}){1,4}"#,
        ) {
            let cluster = mutate(&example("cluster.toml"), at, len, &insert);
            if let Err(d) = tandem_config::parse_cluster_str(&cluster, "c") {
                prop_assert!(!d.errors.is_empty());
                for e in &d.errors {
                    prop_assert!(e.line.is_some() && e.col.is_some(), "{}", e);
                }
            }
            let node = mutate(&example("node-lb1.toml"), at, len, &insert);
            let _ = tandem_config::parse_node_str(&node, "n", None);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = tandem_config::parse_cluster_str(&text, "c");
            let _ = tandem_config::parse_node_str(&text, "n", None);
        }
    }
}
