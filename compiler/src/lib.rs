//! The fhec driver: the compilation pipeline as one readable function, plus the sample-batch helpers
//! the CLI and the test harness share.
//!
//! Pipeline today: ONNX file -> IR (frontend, constants folded) -> cleanup -> verified module.

pub mod fhe;
pub mod metrics;
pub mod npy;

use fhec_ir::{DType, Module, Tensor, TensorData};
use fhec_passes::{Cleanup, PassCtx, run_passes};
use ndarray::{ArrayD, Axis, IxDyn};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DriverError {
    #[error(transparent)]
    Onnx(#[from] fhec_onnx::OnnxError),
    #[error(transparent)]
    Pass(#[from] fhec_passes::PassError),
    #[error(transparent)]
    Interp(#[from] fhec_interp::InterpError),
    #[error("{0}")]
    Input(String),
}

/// Imports an ONNX model and runs the IR clean-up passes: the module every later stage starts from.
pub fn load_model(path: &Path) -> Result<Module, DriverError> {
    let mut module = fhec_onnx::load(path)?;
    let mut ctx = PassCtx { verify_each: cfg!(debug_assertions), ..PassCtx::default() };
    run_passes(&mut module, &[&Cleanup], &mut ctx)?;
    Ok(module)
}

/// The shape of one sample of the module's only input: the input's shape without its leading batch
/// dimension of 1 (an input `[1,30]` takes samples `[30]`).
pub fn sample_shape(module: &Module) -> Result<Vec<usize>, DriverError> {
    let inputs = module.inputs();
    let [input] = inputs.as_slice() else {
        return Err(DriverError::Input(format!(
            "the model has {} inputs; fhec predict supports models with exactly one input",
            inputs.len()
        )));
    };
    let shape = &module.node(*input).ty.shape;
    Ok(if shape.first() == Some(&1) { shape[1..].to_vec() } else { shape.clone() })
}

/// An output array stacked over samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Stacked {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// Runs the float reference on every sample of `x` (samples along axis 0) and stacks each output the
/// same way. Errors name the expected sample shape when `x` does not fit.
pub fn predict(module: &Module, x: &ArrayD<f32>) -> Result<Vec<(String, Stacked)>, DriverError> {
    let sample = sample_shape(module)?;
    let input = module.inputs()[0];
    let input_name = match &module.node(input).op {
        fhec_ir::Op::Input { name } => name.clone(),
        _ => unreachable!("inputs() returns input nodes"),
    };
    if x.ndim() != sample.len() + 1 || x.shape()[1..] != sample[..] {
        let mut want = vec!["N".to_string()];
        want.extend(sample.iter().map(|d| d.to_string()));
        return Err(DriverError::Input(format!(
            "input array has shape {:?}, but model input \"{input_name}\" takes samples of shape {sample:?}: expected [{}]",
            x.shape(),
            want.join(", ")
        )));
    }
    let full_shape = module.node(input).ty.shape.clone();
    let mut per_output: Vec<Vec<Tensor>> = vec![Vec::new(); module.outputs().len()];
    for s in x.axis_iter(Axis(0)) {
        let t = Tensor::from_f32(full_shape.clone(), s.iter().copied().collect()).expect("sample shape checked");
        for (k, out) in fhec_interp::run(module, &[t])?.into_iter().enumerate() {
            per_output[k].push(out);
        }
    }
    module
        .outputs()
        .iter()
        .zip(per_output)
        .map(|((name, v), outs)| Ok((name.clone(), stack(&module.node(*v).ty.shape, module.node(*v).ty.dtype, outs))))
        .collect()
}

/// Stacks per-sample outputs along a new axis 0, dropping each output's own leading batch dimension of 1.
fn stack(shape: &[usize], dtype: DType, outs: Vec<Tensor>) -> Stacked {
    let per: Vec<usize> = if shape.first() == Some(&1) { shape[1..].to_vec() } else { shape.to_vec() };
    let mut full = vec![outs.len()];
    full.extend(&per);
    match dtype {
        DType::F32 => {
            let data = outs.iter().flat_map(|t| t.to_f32_vec()).collect();
            Stacked::F32(ArrayD::from_shape_vec(IxDyn(&full), data).expect("stacked shape"))
        }
        DType::I64 => {
            let data = outs
                .iter()
                .flat_map(|t| match t.data() {
                    TensorData::I64(v) => v.clone(),
                    TensorData::F32(_) => t.to_i64_vec(),
                })
                .collect();
            Stacked::I64(ArrayD::from_shape_vec(IxDyn(&full), data).expect("stacked shape"))
        }
    }
}
