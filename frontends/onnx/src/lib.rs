//! The ONNX frontend: the only crate that touches tract-onnx.
//!
//! tract-onnx decodes the protobuf and the initializers; translation to the IR is ours, one file per op
//! family under `ops/`, registered in one table (`ops::REGISTRY`). Shapes are resolved statically (a
//! symbolic batch dimension is bound to 1), and every node whose operands are all constant is folded on
//! the spot by the reference interpreter's kernels, so shape-computing subgraphs
//! (`Shape -> Gather -> Concat -> Reshape`) disappear.
//!
//! Errors always name the node (its ONNX name and op type). Unsupported ops are reported all at once,
//! with the list of supported ones.
#![forbid(unsafe_code)]

mod ctx;
mod error;
pub mod export;
mod import;
mod ops;
mod proto;

pub use error::OnnxError;
pub use ops::{TreeSummary, supported_ops};

use fhec_ir::Module;
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// Loads an ONNX file into a verified IR module.
pub fn load(path: impl AsRef<Path>) -> Result<Module, OnnxError> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| OnnxError::Io { path: path.display().to_string(), msg: e.to_string() })?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let dir = path.parent().map(|p| p.to_string_lossy().into_owned());
    load_bytes(&bytes, &name, dir.as_deref()).map_err(|e| e.in_file(path))
}

/// Decodes a serialized ONNX `TensorProto` (the `.pb` files of the ONNX conformance tests) into a
/// tensor, or says why it cannot be read (a data type fhec does not hold, malformed bytes).
pub fn read_tensor_proto(bytes: &[u8]) -> Result<fhec_ir::Tensor, OnnxError> {
    use prost::Message;
    let t = pb::TensorProto::decode(bytes)
        .map_err(|e| OnnxError::Decode { msg: format!("not a valid TensorProto ({e})") })?;
    proto::convert_tensor(&t).map_err(|msg| OnnxError::Decode { msg: format!("tensor \"{}\": {msg}", t.name) })
}

/// What the translation makes of each tree-ensemble node of an ONNX file (empty for other models):
/// trees, branches and leaves beside the decisions and tables it emits. For reports; a model that
/// does not load gives `load`'s error there, not here (an ensemble that does not translate is left out).
pub fn tree_ensembles(path: impl AsRef<Path>) -> Result<Vec<TreeSummary>, OnnxError> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| OnnxError::Io { path: path.display().to_string(), msg: e.to_string() })?;
    let proto = decode(&bytes)?;
    let nodes = proto.graph.iter().flat_map(|g| &g.node).filter(|n| n.domain == "ai.onnx.ml");
    Ok(nodes.filter_map(ops::tree_summary).filter_map(Result::ok).collect())
}

/// The model protobuf, by tract's decoder.
fn decode(bytes: &[u8]) -> Result<pb::ModelProto, OnnxError> {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| OnnxError::Decode { msg: format!("not a valid ONNX protobuf ({e})") })
}

/// Loads ONNX bytes; `dir` is where external tensor data would be looked up.
pub fn load_bytes(bytes: &[u8], name: &str, dir: Option<&str>) -> Result<Module, OnnxError> {
    let proto = decode(bytes)?;
    let graph =
        proto.graph.as_ref().filter(|g| !g.node.is_empty() || !g.output.is_empty()).ok_or(OnnxError::Decode {
            msg: "the file decodes as protobuf but holds no ONNX graph (is it an ONNX model?)".into(),
        })?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(if proto.ir_version > 0 { 1 } else { 0 });
    if opset == 0 {
        return Err(OnnxError::Decode { msg: "the file declares no ONNX opset (is it an ONNX model?)".into() });
    }
    import::import(graph, name, opset, dir)
}
