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
    // A new commit or a change of the index re-runs this script.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for file in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{file}");
        }
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
