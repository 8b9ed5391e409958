//! Writing ONNX: the linear models `fhec train` produces, as standard files that any ONNX runtime,
//! and `fhec predict` / `fhec build`, accept.

use prost::Message;
use tract_onnx::pb;

/// A trained linear model over raw features: the data owner's scaling (standardize, then clip),
/// the weights, and the link (`Sigmoid` for a probability, or an affine map back to the target's
/// units).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// Per feature: `x̃ = clamp((x − mean) / scale, −clip, clip)`.
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub clip: f32,
    /// `t_k = w_k·x̃ + bias_k`, one row of weights per output column (one-vs-rest: per class).
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    pub link: Link,
    /// The producer, recorded in the file (e.g. "fhec train, logistic, 8 iterations").
    pub doc: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    /// `P(y = 1) = σ(t)`, a column per row of weights.
    Sigmoid,
    /// `y = t · scale + offset`, one column (one row of weights).
    Affine { scale: f32, offset: f32 },
}

fn tensor(name: &str, dims: &[i64], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values,
        ..Default::default()
    }
}

fn value(name: &str, columns: Option<i64>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dims = [Value::DimParam("N".into()), Value::DimValue(columns.unwrap_or(1))];
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.into_iter().map(|v| Dimension { value: Some(v), ..Default::default() }).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

impl LinearModel {
    /// The model as ONNX bytes (opset 13): input `x` `[N, features]`, output `y` `[N, outputs]`.
    pub fn to_onnx(&self) -> Vec<u8> {
        let d = self.mean.len() as i64;
        let k = self.weights.len() as i64;
        let mut nodes = vec![
            node("Sub", &["x", "mean"], "centered"),
            node("Div", &["centered", "scale"], "standardized"),
            node("Clip", &["standardized", "clip_lo", "clip_hi"], "clipped"),
            node("MatMul", &["clipped", "weights"], "dot"),
        ];
        let mut init = vec![
            tensor("mean", &[d], self.mean.clone()),
            tensor("scale", &[d], self.scale.clone()),
            tensor("clip_lo", &[], vec![-self.clip]),
            tensor("clip_hi", &[], vec![self.clip]),
        ];
        // [features, outputs], row-major.
        let matrix = |scale: f32| -> Vec<f32> {
            (0..d as usize).flat_map(|j| self.weights.iter().map(move |w| w[j] * scale)).collect()
        };
        match self.link {
            Link::Sigmoid => {
                init.push(tensor("weights", &[d, k], matrix(1.0)));
                init.push(tensor("bias", &[k], self.bias.clone()));
                nodes.push(node("Add", &["dot", "bias"], "logit"));
                nodes.push(node("Sigmoid", &["logit"], "y"));
            }
            Link::Affine { scale, offset } => {
                // Folded: y = x̃·(w·scale) + (bias·scale + offset).
                init.push(tensor("weights", &[d, k], matrix(scale)));
                init.push(tensor("bias", &[k], self.bias.iter().map(|b| b * scale + offset).collect()));
                nodes.push(node("Add", &["dot", "bias"], "y"));
            }
        }
        let graph = pb::GraphProto {
            name: "fhec_trained".into(),
            node: nodes,
            initializer: init,
            input: vec![value("x", Some(d))],
            output: vec![value("y", Some(k))],
            doc_string: self.doc.clone(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            producer_name: "fhec".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}
