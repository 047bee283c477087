//! Feeds every file of `corpus/<target>/` to its target's function, without libFuzzer: the quick check CI runs
//! (`cargo test --manifest-path fuzz/Cargo.toml --no-default-features`). A crash found by fuzzing, once fixed,
//! goes into the corpus so this keeps checking it.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // A corpus directory no target names would never be replayed.
    for dir in std::fs::read_dir(&root).unwrap() {
        let name = dir.unwrap().file_name();
        assert!(
            tandem_fuzz::TARGETS.iter().any(|(t, _)| name == *t),
            "corpus/{}: no target of that name",
            name.to_string_lossy()
        );
    }
    for (name, target) in tandem_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seed", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "{name}: {} fails", file.display());
        }
    }
}
