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
}
