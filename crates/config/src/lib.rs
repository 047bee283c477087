//! Loading, validating, diffing and versioning tandem's two configuration files:
//! `cluster.toml` (replicated) and `node.toml` (node-local).

pub mod model;
pub use model::*;
