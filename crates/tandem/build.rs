//! Records the git commit the binary is built from (and whether the tree had uncommitted changes), for
//! `tandem --version`. Outside a git checkout (a source tarball, a package build without .git) it says "unknown"
//! or takes `TANDEM_GIT_COMMIT` from the build environment.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn main() {
    let commit = std::env::var("TANDEM_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|changes| !changes.is_empty());
            Some(if dirty { format!("{hash}-dirty") } else { hash })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TANDEM_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=TANDEM_GIT_COMMIT");
    // Re-run on a new commit (HEAD, the branch, the index) and on an edit of any tracked file, so `-dirty`
    // follows the tree (watching the directories instead would include target/ and re-run on every build).
    let top = git(&["rev-parse", "--show-toplevel"]);
    for path in ["HEAD", "index"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(file) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={file}");
    }
    if let (Some(top), Some(files)) = (top, git(&["ls-files"])) {
        for file in files.lines() {
            println!("cargo:rerun-if-changed={top}/{file}");
        }
    }
}
