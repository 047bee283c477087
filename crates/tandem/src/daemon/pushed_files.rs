//! The secondary's side of a pushed configuration's files: `cluster.toml` and the certificate files it names are
//! first written to a staging directory beside `cluster.toml` and checked there with `tandem check`'s code; only
//! an accepted set is installed, each certificate file by temp + fsync + rename (the previous kept as
//! `NAME.prev`), `cluster.toml` last, so the running files never hold half a push.
//!
//! The names were checked by the sync layer (plain relative paths, bounded sizes: `tandem_sync::check_files`);
//! here a name must also be a certificate the pushed `cluster.toml` names, and not one of this node's own files
//! (node.toml, the secret, the admin password or TLS files, the state directory), so a push can only write the
//! certificates of the configuration it carries.

use std::io;
use std::path::{Path, PathBuf};
use tandem_config::{CLUSTER_FILE, ClusterConfig, NodeConfig};
use tandem_sync::ConfigFile;

/// Name of the staging directory inside the config directory.
const STAGING: &str = ".tandem-push";

/// A staging directory holding one pushed set; removed when dropped, accepted or not.
pub(super) struct Staged {
    pub dir: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `cluster.toml` and `files` into a fresh staging directory inside `config_dir`.
pub(super) fn stage(config_dir: &Path, cluster: &[u8], files: &[ConfigFile]) -> io::Result<Staged> {
    let dir = config_dir.join(STAGING);
    if dir.exists() {
        // Left by a push interrupted by a crash.
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let staged = Staged { dir };
    std::fs::write(staged.dir.join(CLUSTER_FILE), cluster)?;
    for file in files {
        let path = staged.dir.join(&file.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &file.bytes)?;
    }
    Ok(staged)
}

/// Refuses a pushed file that the pushed `cluster.toml` does not name as a certificate, or whose place in the
/// config directory is one of this node's own files.
pub(super) fn check_targets(
    config_dir: &Path,
    node_path: &Path,
    node: &NodeConfig,
    cluster: &ClusterConfig,
    files: &[ConfigFile],
) -> Result<(), String> {
    let named: Vec<&str> = cluster
        .services
        .iter()
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|t| t.certificates.iter().map(|c| c.file.as_str()))
        .collect();
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut own: Vec<PathBuf> = vec![
        absolute(node_path),
        absolute(&config_dir.join(CLUSTER_FILE)),
        absolute(&node.node.secret_file),
    ];
    own.extend(node.admin.password_file.iter().map(|p| absolute(p)));
    own.extend(node.admin.tls_certificate.iter().map(|p| absolute(p)));
    own.extend(node.admin.tls_key.iter().map(|p| absolute(p)));
    let state_dir = absolute(&node.node.state_dir);
    for file in files {
        if !named.contains(&file.name.as_str()) {
            return Err(format!(
                "file \"{}\" is not a certificate the pushed cluster.toml names",
                file.name
            ));
        }
        let target = absolute(&config_dir.join(&file.name));
        let last = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if own.contains(&target)
            || target.starts_with(&state_dir)
            || target.starts_with(config_dir.join(STAGING))
            || last.ends_with(".prev")
            || last.ends_with(".toml")
        {
            return Err(format!(
                "file \"{}\" would replace one of this node's own files ({})",
                file.name,
                target.display()
            ));
        }
    }
    Ok(())
}

/// Installs the certificate files in `config_dir` (each atomically, the previous kept as `NAME.prev`);
/// `cluster.toml` is the caller's to write last.
pub(super) fn install(config_dir: &Path, files: &[ConfigFile]) -> io::Result<()> {
    for file in files {
        let target = config_dir.join(&file.name);
        if std::fs::read(&target).is_ok_and(|old| old == file.bytes) {
            continue;
        }
        super::replace_keeping_previous(&target, &file.bytes)?;
    }
    Ok(())
}

/// The certificates of a configuration read from `staging` point at their installed place in `config_dir`.
pub(super) fn relocate(cluster: &mut ClusterConfig, staging: &Path, config_dir: &Path) {
    for tls in cluster.services.iter_mut().filter_map(|s| s.tls.as_mut()) {
        for cert in &mut tls.certificates {
            if let Ok(rest) = cert.path.strip_prefix(staging) {
                cert.path = config_dir.join(rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_removed_whatever_happens() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let files = vec![ConfigFile {
            name: "certs/a.pem".into(),
            bytes: b"A".to_vec(),
        }];
        let staged = stage(dir.path(), b"x", &files).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(staged.dir.join("certs/a.pem")).ok(),
            Some(b"A".to_vec())
        );
        let path = staged.dir.clone();
        drop(staged);
        assert!(!path.exists());
        install(dir.path(), &files).unwrap_or_else(|e| panic!("{e}"));
        let renewed = vec![ConfigFile {
            name: "certs/a.pem".into(),
            bytes: b"B".to_vec(),
        }];
        install(dir.path(), &renewed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(dir.path().join("certs/a.pem")).ok(),
            Some(b"B".to_vec())
        );
        assert_eq!(
            std::fs::read(dir.path().join("certs/a.pem.prev")).ok(),
            Some(b"A".to_vec())
        );
    }
}
