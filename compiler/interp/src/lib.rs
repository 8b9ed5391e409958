//! The plaintext f32 reference interpreter over the IR.
//!
//! It defines what an IR module means: the ONNX frontend is checked against tract through it, and every
//! later lowering (quantization, FHE circuits) is checked against it. It favours clarity over speed:
//! convolutions and pooling are direct loops, sums accumulate in f64.
#![forbid(unsafe_code)]

mod kernels;

use fhec_ir::{DType, IrError, Module, Op, Tensor, Type, ValueId};
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

/// A module prepared for many runs: its evaluation order and each node's operand slots, computed once.
/// [`run`] prepares and runs once; the simulation of a compiled model runs the client's
/// post-processing once per sample, thousands of times, and prepares it once.
pub struct Program<'m> {
    module: &'m Module,
    steps: Vec<Step>,
    /// Per module input (in the order of `Module::inputs`), its slot.
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

/// One node to evaluate: its id, its operands' slots, and the slots whose last reader it is.
struct Step {
    node: ValueId,
    operands: Vec<usize>,
    frees: Vec<usize>,
}

impl<'m> Program<'m> {
    pub fn new(module: &'m Module) -> Result<Program<'m>, InterpError> {
        let order = module.topo_order()?;
        let mut slot = vec![usize::MAX; order.iter().map(|v| v.index() + 1).max().unwrap_or(0)];
        for (k, v) in order.iter().enumerate() {
            slot[v.index()] = k;
        }
        let mut steps: Vec<Step> = order
            .iter()
            .map(|&v| Step {
                node: v,
                operands: module.operands(v).iter().map(|o| slot[o.index()]).collect(),
                frees: Vec::new(),
            })
            .collect();
        let outputs: Vec<usize> = module.outputs().iter().map(|(_, v)| slot[v.index()]).collect();
        // A value is dropped after its last reader, unless it is an output.
        let mut last = vec![None; steps.len()];
        for (k, s) in steps.iter().enumerate() {
            for &o in &s.operands {
                last[o] = Some(k);
            }
        }
        for &o in &outputs {
            last[o] = None;
        }
        for (value, reader) in last.into_iter().enumerate() {
            if let Some(k) = reader {
                steps[k].frees.push(value);
            }
        }
        let inputs = module.inputs().iter().map(|v| slot[v.index()]).collect();
        Ok(Program { module, steps, inputs, outputs })
    }

    /// Runs the module on one set of inputs (in the order of `Module::inputs`) and returns its outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        if self.inputs.len() != inputs.len() {
            return Err(InterpError::InputCount { expected: self.inputs.len(), got: inputs.len() });
        }
        let module = self.module;
        let mut values: Vec<Option<Cow<'_, Tensor>>> = Vec::new();
        values.resize_with(self.steps.len(), || None);
        for (k, step) in self.steps.iter().enumerate() {
            let node = module.node(step.node);
            let value = match &node.op {
                Op::Input { name } => {
                    let i = self.inputs.iter().position(|&s| s == k).expect("every input node has a slot");
                    let t = &inputs[i];
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
                    let operands: Vec<&Tensor> = step
                        .operands
                        .iter()
                        .map(|&o| values[o].as_deref().expect("operands come first in topological order"))
                        .collect();
                    let out = eval_op(op, &operands, &node.ty)
                        .map_err(|msg| InterpError::Eval { node: node.describe(), msg })?;
                    Cow::Owned(out)
                }
            };
            values[k] = Some(value);
            for &f in &step.frees {
                values[f] = None;
            }
        }
        Ok(self.outputs.iter().map(|&o| values[o].as_deref().expect("outputs are computed").clone()).collect())
    }
}

/// Runs the module on one set of inputs (in the order of `Module::inputs`) and returns its outputs.
pub fn run(module: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    Program::new(module)?.run(inputs)
}
