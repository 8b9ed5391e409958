//! Benchmarks live in `benches/`; this library only locates the model corpus for them.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// A corpus model directory by name (`testsuite/models/<name>`).
pub fn corpus_model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testsuite/models").join(name)
}
