//! The frontend's error type. Every variant says where: file, node name and op type, or graph value.

use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{msg}")]
    Decode { msg: String },
    #[error(
        "unsupported ONNX op{} {}\nsupported ops: {}",
        if nodes.len() > 1 { "s:" } else { ":" },
        nodes.iter().map(|(n, op)| format!("node \"{n}\" ({op})")).collect::<Vec<_>>().join(", "),
        supported.join(", ")
    )]
    Unsupported { nodes: Vec<(String, String)>, supported: Vec<String> },
    #[error("node \"{node}\" ({op_type}): {msg}")]
    Node { node: String, op_type: String, msg: String },
    #[error("graph {}\"{name}\": {msg}", if what.is_empty() { String::new() } else { format!("{what} ") })]
    Graph { what: &'static str, name: String, msg: String },
    #[error("{file}: {inner}")]
    InFile { file: String, inner: Box<OnnxError> },
}

impl OnnxError {
    pub(crate) fn in_file(self, path: &Path) -> OnnxError {
        match self {
            e @ OnnxError::Io { .. } => e,
            e => OnnxError::InFile { file: path.display().to_string(), inner: Box::new(e) },
        }
    }
}
