//! The plaintext f32 reference interpreter over the IR.
//!
//! It defines what an IR module means: the ONNX frontend is checked against tract through it, and every
//! later lowering (quantization, FHE circuits) is checked against it. It favours clarity over speed:
//! convolutions and pooling are direct loops, sums accumulate in f64.

mod kernels;

use fhec_ir::{DType, IrError, Module, Op, Tensor, Type};
use std::borrow::Cow;
use thiserror::Error;

pub use kernels::eval_op;

#[derive(Debug, Error)]
pub enum InterpError {
    #[error("the module takes {expected} input(s), {got} were given")]
    InputCount { expected: usize, got: usize },
    #[error("input \"{name}\": expected a {expected} tensor, got {dtype}{got:?}")]
    InputType { name: String, expected: Type, dtype: DType, got: Vec<usize> },
    #[error("{node}: {msg}")]
    Eval { node: String, msg: String },
    #[error(transparent)]
    Ir(#[from] IrError),
}

/// Runs the module on one set of inputs (in the order of `Module::inputs`) and returns its outputs.
pub fn run(module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let order = module.topo_order()?;
    let input_ids = module.inputs();
    if input_ids.len() != inputs.len() {
        return Err(InterpError::InputCount { expected: input_ids.len(), got: inputs.len() });
    }
    let mut values: Vec<Option<Cow<'_, Tensor>>> = Vec::new();
    values.resize_with(order.iter().map(|v| v.index() + 1).max().unwrap_or(0), || None);
    for v in order {
        let node = module.node(v);
        let value = match &node.op {
            Op::Input { name } => {
                let k = input_ids.iter().position(|&i| i == v).expect("inputs() lists every input node");
                let t = &inputs[k];
                if t.shape() != node.ty.shape.as_slice() || t.dtype() != node.ty.dtype {
                    return Err(InterpError::InputType {
                        name: name.clone(),
                        expected: node.ty.clone(),
                        dtype: t.dtype(),
                        got: t.shape().to_vec(),
                    });
                }
                Cow::Borrowed(t)
            }
            Op::Const(t) => Cow::Borrowed(t),
            op => {
                let operands: Vec<&Tensor> = module
                    .operands(v)
                    .into_iter()
                    .map(|o| values[o.index()].as_deref().expect("operands come first in topological order"))
                    .collect();
                let out =
                    eval_op(op, &operands, &node.ty).map_err(|msg| InterpError::Eval { node: node.describe(), msg })?;
                Cow::Owned(out)
            }
        };
        values[v.index()] = Some(value);
    }
    Ok(module
        .outputs()
        .iter()
        .map(|(_, v)| values[v.index()].as_deref().expect("outputs are computed").clone())
        .collect())
}
