//! What loading both files yields: the two accepted configurations and the cluster config's version.

use crate::diag::Diagnostic;
use crate::model::{ClusterConfig, NodeConfig};
use std::path::PathBuf;

/// Both files accepted, with the cluster config's version.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub cluster: ClusterConfig,
    pub node: NodeConfig,
    pub cluster_path: PathBuf,
    pub node_path: PathBuf,
    /// cluster.toml exactly as read (what the primary pushes to the secondary).
    pub cluster_text: String,
    /// SHA-256 hex of the canonical form.
    pub digest: String,
    pub generation: u64,
    pub warnings: Vec<Diagnostic>,
    /// What was let through and is served anyway (a certificate out of its validity dates, when the loader was
    /// told [`crate::tls::ExpiredCertificates::Serve`]): the daemon logs these at error level.
    pub alarms: Vec<Diagnostic>,
    /// Every certificate file of the TLS services, in service then file order, as read for this load.
    pub certificates: Vec<CheckedCertificate>,
}

impl Loaded {
    /// The certificate files as the config push carries them: each file once (two services may share one), by
    /// the name written in cluster.toml, with the bytes whose SHA-256 the digest covers.
    pub fn certificate_files(&self) -> Vec<(String, Vec<u8>)> {
        certificate_files(&self.certificates)
    }
}

/// Each file of `certificates` once, in first-use order, with its bytes.
pub fn certificate_files(certificates: &[CheckedCertificate]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for c in certificates {
        if !out.iter().any(|(file, _)| *file == c.file) {
            out.push((c.file.clone(), c.bytes.clone()));
        }
    }
    out
}

/// One certificate file of a TLS service as it was read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// The service's label.
    pub service: String,
    /// As written in cluster.toml.
    pub file: String,
    /// Where it was read.
    pub path: PathBuf,
    /// SHA-256 hex of `bytes`.
    pub sha256: String,
    /// The leaf's DNS names (or common name), lower-case, wildcards as written.
    pub names: Vec<String>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// The file's bytes (what the config push carries).
    pub bytes: Vec<u8>,
}
