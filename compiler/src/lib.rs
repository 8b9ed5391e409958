//! The fhec library: an ONNX model compiled for one of two schemes, [`tfhe`] (exact tables, one
//! value per ciphertext) or [`ckks`] (polynomials, thousands of samples per ciphertext), each with
//! the same shape (`compile`, a `Build` in memory, `Build::write`), and [`scheme`], which builds
//! for either or chooses the cheaper for a workload. Around them: key files (`keyfile`), the
//! build-script API (`build`, `embed`), `inspect`, `bench`, and the sample-batch helpers the CLI and
//! the test harness share.
//!
//! The frontend: ONNX file -> IR (constants folded) -> cleanup -> verified module ([`load_model`]).
#![forbid(unsafe_code)]
#![recursion_limit = "256"] // the build report's `json!` literal

pub mod bench;
pub mod build;
pub mod ckks;
pub mod embed;
pub mod inspect;
pub mod keyfile;
pub mod metrics;
pub mod npy;
pub mod scheme;
pub mod tfhe;
pub mod train;

use fhec_ir::{DType, Module, Tensor};
use fhec_passes::{Cleanup, PassCtx, run_passes};
use ndarray::{ArrayD, Axis, IxDyn};
use std::path::Path;
use thiserror::Error;

/// What can go wrong in the library: each variant names what and where (the file, the input, the
/// key), in the text the CLI prints.
#[derive(Debug, Error)]
pub enum DriverError {
    #[error(transparent)]
    Onnx(#[from] fhec_onnx::OnnxError),
    #[error(transparent)]
    Pass(#[from] fhec_passes::PassError),
    #[error(transparent)]
    Interp(#[from] fhec_interp::InterpError),
    #[error(transparent)]
    Lower(#[from] fhec_lower::LowerError),
    #[error(transparent)]
    Runtime(#[from] fhec_runtime::RuntimeError),
    /// A file or directory that could not be read, written or created: the message names it.
    #[error("{0}")]
    Io(String),
    /// A build's artifact, a key file or a ciphertext file that is not what it claims to be
    /// (truncated, corrupted, another kind of file, written by another version).
    #[error("{0}")]
    Artifact(String),
    /// Samples, labels or results whose shape or count does not fit the model.
    #[error("{0}")]
    Shape(String),
    /// Keys, ciphertexts or results that belong to another model or another key.
    #[error("{0}")]
    Mismatch(String),
    /// A data file (.npy samples or labels) that cannot be read as such.
    #[error("{0}")]
    Data(String),
    /// A secret key's protection at rest: a wrong passphrase, a failing key-management command.
    #[error("{0}")]
    Key(String),
    /// An option or setting the library cannot use (a module name, an empty benchmark).
    #[error("{0}")]
    Usage(String),
    /// The CKKS backend refused the plan or its data.
    #[error("{0}")]
    Ckks(String),
}

/// Imports an ONNX model and runs the IR clean-up passes: the module every later stage starts from.
pub fn load_model(path: &Path) -> Result<Module, DriverError> {
    let mut module = fhec_onnx::load(path)?;
    let mut ctx = PassCtx { verify_each: cfg!(debug_assertions), ..PassCtx::default() };
    run_passes(&mut module, &[&Cleanup], &mut ctx)?;
    Ok(module)
}

/// The module's only input and its name (fhec's sample-based commands take one input).
fn single_input(module: &Module) -> Result<(fhec_ir::ValueId, String), DriverError> {
    match module.inputs().as_slice() {
        [input] => match &module.node(*input).op {
            fhec_ir::Op::Input { name } => Ok((*input, name.clone())),
            _ => unreachable!("inputs() returns input nodes"),
        },
        inputs => Err(DriverError::Usage(format!(
            "the model has {} inputs; fhec predict supports models with exactly one input",
            inputs.len()
        ))),
    }
}

/// Samples along axis 0 of `x` as tensors of `input_shape` (whose leading batch dimension of 1 the
/// samples lack); the errors name the array (`what`: "input", "calibration") and the shape expected.
pub fn samples(x: &ArrayD<f32>, input_shape: &[usize], what: &str) -> Result<Vec<Tensor>, DriverError> {
    let sample: &[usize] = if input_shape.first() == Some(&1) { &input_shape[1..] } else { input_shape };
    if x.ndim() != sample.len() + 1 || x.shape()[1..] != *sample {
        let mut want = vec!["N".to_string()];
        want.extend(sample.iter().map(|d| d.to_string()));
        return Err(DriverError::Shape(format!(
            "the {what} array has shape {:?}, but the model takes samples of shape {sample:?}: expected [{}]",
            x.shape(),
            want.join(", ")
        )));
    }
    // A NaN or an infinity cannot be encrypted: the client would clamp it into the input box (NaN
    // to an arbitrary end), and a tree ensemble's missing-value routing would silently not apply.
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let per = sample.iter().product::<usize>().max(1);
        return Err(DriverError::Data(format!(
            "{what} sample {} element {} is {v}: encrypted inputs must be finite numbers (impute missing values \
             before encrypting)",
            i / per,
            i % per
        )));
    }
    Ok(x.axis_iter(Axis(0))
        .map(|s| Tensor::from_f32(input_shape.to_vec(), s.iter().copied().collect()).expect("shape checked"))
        .collect())
}

/// An output array stacked over samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Stacked {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// Outputs of consecutive runs (each stacked over its samples) joined into one stack per output, in
/// order. Runs of one build have the same outputs with the same types; an output whose type differs
/// between runs is a bug, and is reported as one.
pub fn concat_outputs(runs: Vec<Vec<(String, Stacked)>>) -> Result<Vec<(String, Stacked)>, DriverError> {
    let mut runs = runs.into_iter();
    let Some(mut all) = runs.next() else { return Ok(Vec::new()) };
    for run in runs {
        for ((name, acc), (_, more)) in all.iter_mut().zip(run) {
            let joined = match (&*acc, more) {
                (Stacked::F32(a), Stacked::F32(b)) => {
                    ndarray::concatenate(Axis(0), &[a.view(), b.view()]).map(Stacked::F32)
                }
                (Stacked::I64(a), Stacked::I64(b)) => {
                    ndarray::concatenate(Axis(0), &[a.view(), b.view()]).map(Stacked::I64)
                }
                _ => return Err(DriverError::Shape(format!("output {name} changed type between runs"))),
            };
            *acc = joined.map_err(|e| DriverError::Shape(format!("output {name}: {e}")))?;
        }
    }
    Ok(all)
}

/// Runs the float reference on every sample of `x` (samples along axis 0) and stacks each output the
/// same way. Errors name the expected sample shape when `x` does not fit.
pub fn predict(module: &Module, x: &ArrayD<f32>) -> Result<Vec<(String, Stacked)>, DriverError> {
    let (input, name) = single_input(module)?;
    let outs = samples(x, &module.node(input).ty.shape, &name)?
        .into_iter()
        .map(|t| fhec_interp::run(module, &[t]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(stack_outputs(module, outs))
}

/// Stacks per-sample output tensors of `m` along a new axis 0, dropping each output's own leading
/// batch dimension of 1.
pub fn stack_outputs(m: &Module, per_sample: Vec<Vec<Tensor>>) -> Vec<(String, Stacked)> {
    m.outputs()
        .iter()
        .enumerate()
        .map(|(k, (name, v))| {
            let ty = &m.node(*v).ty;
            let shape: &[usize] = if ty.shape.first() == Some(&1) { &ty.shape[1..] } else { &ty.shape };
            let mut full = vec![per_sample.len()];
            full.extend(shape);
            let stacked = match ty.dtype {
                DType::F32 => Stacked::F32(
                    ArrayD::from_shape_vec(IxDyn(&full), per_sample.iter().flat_map(|o| o[k].to_f32_vec()).collect())
                        .expect("stacked"),
                ),
                DType::I64 => Stacked::I64(
                    ArrayD::from_shape_vec(IxDyn(&full), per_sample.iter().flat_map(|o| o[k].to_i64_vec()).collect())
                        .expect("stacked"),
                ),
            };
            (name.clone(), stacked)
        })
        .collect()
}
