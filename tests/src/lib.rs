//! Helpers shared by the workspace-level tests.

pub mod aws_topology;

use std::path::PathBuf;

pub mod runtime_api;

/// The workspace root (where `template.yaml` and `docs/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}
