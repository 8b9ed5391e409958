//! Lowering of a float IR module to an FHE circuit.
//!
//! 1. `tail`: the final ops that only shape the answer (softmax, sigmoid, argmax...) move to the client.
//! 2. `neurons`: the server part is scalarized: affine forms over wires, one table lookup per
//!    univariate non-linearity, value ranges by interval analysis from the input box; the neuron
//!    passes rewrite that graph. `pipeline` lists these stages in order.
//! 3. `scale`: scales, integer weights, tables and noise margins: the torus circuit.
//! 4. `search`: the parameter set and weight precision, chosen by measured accuracy in noisy simulation.
//!
//! The input box comes from calibration samples (per element, with headroom) or from a pre-quantized
//! model's own input quantizer (see `calibration`); the client clamps inputs into it, so the interval
//! analysis holds for every input. A table spreads over that bound (`TableRanges::Bound`: no input can
//! leave it) or, by default, over the range its input took on real calibration samples, doubled
//! (`TableRanges::Calibrated`: finer; an input past the window reads a clipped value).
#![forbid(unsafe_code)]

mod calibration;
pub mod ckks;
mod fidelity;
mod head;
pub mod neurons;
mod pipeline;
pub mod poly;
mod scale;
mod simulator;
pub mod size;
mod tail;
pub mod tfhe;
mod window;

pub use calibration::{Calibration, HEADROOM, Origin, SYNTHETIC_SAMPLES, SYNTHETIC_SEED};
pub use fhec_ckks as ckks_plan;
pub use fhec_runtime::{InputCode, OutputCode};
pub use fidelity::Steps;
pub use head::ends_in_decisions;
pub use pipeline::{Stage, neuron_passes, stage_text};
pub use poly::{Approx, Fit};
pub use simulator::{Engine, Simulator, jit_pays};
pub use window::{MAX_NARROWING, TABLE_HEADROOM};

pub use fhec_passes::optimize;

use fhec_ir::{IrError, Module, Tensor};
use fhec_runtime::RuntimeError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LowerError {
    #[error("{node}: not supported under FHE: {why}")]
    Unsupported { node: String, why: String },
    #[error("{0}")]
    Model(String),
    #[error(
        "{layer}: a table input reads bootstrap outputs with weights of 2-norm {norm:.1}, whose noise needs a margin of {margin} of the {positions} positions of {params}: too noisy; use fewer weight bits, a larger failure probability (--failure-log2) or a parameter set with more positions"
    )]
    Noise { layer: String, margin: f64, norm: f64, positions: f64, params: &'static str },
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Jit(#[from] fhec_jit::JitError),
    #[error("client post-processing: {0}")]
    Client(String),
    /// The neuron graph breaks an invariant (`Neurons::verify`); `at` names the wire (`w7`), output
    /// element (`o0.3`) or field.
    #[error("invalid neuron graph: {at}: {why}")]
    InvalidNeurons { at: String, why: String },
    #[error("neuron pass `{pass}` left an invalid graph: {source}")]
    AfterPass { pass: &'static str, source: Box<LowerError> },
    #[error("unknown neuron pass `{name}`; known passes: {known}")]
    UnknownPass { name: String, known: String },
    /// The neuron graph's text form could not be parsed.
    #[error("neuron text, line {line}: {msg}")]
    NeuronText { line: usize, msg: String },
}

/// What the optimizer did to the server part: its report, the module before and after, and the
/// tables per layer (source op) that the lowering made of each.
#[derive(Debug, Clone)]
pub struct Optimization {
    pub config: optimize::Config,
    pub report: optimize::Report,
    /// Tables composed into the table they feed after scalarization (`compose-table-chains`).
    pub composed: usize,
    /// Tables that became leveled affine maps because their function is affine over their
    /// input's bound (`elide-affine-tables`).
    pub elided: usize,
    pub before: Module,
    pub after: Module,
    pub layers_before: Vec<(String, usize)>,
    pub layers_after: Vec<(String, usize)>,
    /// Wall time of each stage of `pipeline::prepare`, in order (the neuron passes by name).
    pub stage_times: Vec<(&'static str, std::time::Duration)>,
    /// What the circuit was estimated to take before it was made (checked against the bounds).
    pub size: size::Size,
}

impl Optimization {
    pub fn pbs_before(&self) -> usize {
        self.layers_before.iter().map(|l| l.1).sum()
    }

    pub fn pbs_after(&self) -> usize {
        self.layers_after.iter().map(|l| l.1).sum()
    }
}

/// The part of the lowering that does not depend on [`tfhe::Options`]: the client/server split, the
/// neurons with their intervals and calibrated output ranges, the post-processing module. The search
/// prepares once and integerizes each candidate.
pub struct Prepared {
    preprocess: Option<Module>,
    neurons: neurons::Neurons,
    postprocess: Module,
    pub optimization: Optimization,
}

impl Prepared {
    /// Splits `module`, optimizes its server part with `opt` (see `fhec_passes::optimize`) and
    /// scalarizes it; above `--opt-level 0`, tables affine over their input's bound become leveled
    /// maps and tables read only by the next compose into it (the neuron passes
    /// `elide-affine-tables` and `compose-table-chains`). The stages are listed in `pipeline`.
    pub fn new(module: &Module, calibration: &Calibration, opt: &optimize::Config) -> Result<Prepared, LowerError> {
        Prepared::build(module, calibration, opt, true)
    }

    /// [`Prepared::new`] for CKKS: tables affine over their bound stay tables
    /// (`elide-affine-tables` is TFHE's only). Eliding them changed which per-layer
    /// polynomial fits the CKKS search keeps on the corpus CNNs, for the worse (`tests/ckks.rs`),
    /// which is not understood yet.
    pub fn for_polynomials(
        module: &Module,
        calibration: &Calibration,
        opt: &optimize::Config,
    ) -> Result<Prepared, LowerError> {
        Prepared::build(module, calibration, opt, false)
    }

    fn build(
        module: &Module,
        calibration: &Calibration,
        opt: &optimize::Config,
        elide: bool,
    ) -> Result<Prepared, LowerError> {
        pipeline::prepare(module, calibration, opt, elide)
    }

    /// `xs` through the client's pre-processing, if any: the samples [`tfhe::Compiled::simulate_all`]
    /// takes, for every candidate compiled from this preparation.
    pub fn preprocessed(&self, xs: &[Tensor]) -> Result<Vec<Tensor>, LowerError> {
        match &self.preprocess {
            Some(p) => xs.iter().map(|x| head::apply(p, x).map_err(LowerError::Client)).collect(),
            None => Ok(xs.to_vec()),
        }
    }
}

/// Decodes output accumulators with `codes` and runs the post-processing module on them.
pub fn decode(codes: &[OutputCode], postprocess_module: &Module, acc: &[i64]) -> Result<Vec<Tensor>, LowerError> {
    Postprocess::new(postprocess_module)?.decode(codes, acc)
}

/// The server's output values (flattened frontier, in order) through the client's post-processing.
pub(crate) fn postprocess(postprocess: &Module, values: &[f64]) -> Result<Vec<Tensor>, LowerError> {
    Postprocess::new(postprocess)?.run(values)
}

/// The client's post-processing prepared once for many samples (the search decodes thousands of
/// simulated runs with one): its interpreter program and its inputs' shapes.
pub(crate) struct Postprocess<'m> {
    program: fhec_interp::Program<'m>,
    inputs: Vec<Vec<usize>>,
}

impl<'m> Postprocess<'m> {
    pub(crate) fn new(postprocess: &'m Module) -> Result<Postprocess<'m>, LowerError> {
        let program = fhec_interp::Program::new(postprocess).map_err(|e| LowerError::Client(e.to_string()))?;
        let inputs = postprocess.inputs().iter().map(|&v| postprocess.node(v).ty.shape.clone()).collect();
        Ok(Postprocess { program, inputs })
    }

    /// Decodes one sample's output accumulators and post-processes them.
    pub(crate) fn decode(&self, codes: &[OutputCode], acc: &[i64]) -> Result<Vec<Tensor>, LowerError> {
        if acc.len() != codes.len() {
            return Err(LowerError::Client(format!("{} results for {} outputs", acc.len(), codes.len())));
        }
        let values: Vec<f64> = acc.iter().zip(codes).map(|(&a, c)| a as f64 / c.scale + c.mid).collect();
        self.run(&values)
    }

    /// One sample's output values (flattened frontier, in order) through the post-processing.
    pub(crate) fn run(&self, values: &[f64]) -> Result<Vec<Tensor>, LowerError> {
        let want: usize = self.inputs.iter().map(|s| fhec_ir::numel(s)).sum();
        if values.len() != want {
            return Err(LowerError::Client(format!("{} results for {want} outputs", values.len())));
        }
        let mut k = 0;
        let mut frontier = Vec::with_capacity(self.inputs.len());
        for shape in &self.inputs {
            let n = fhec_ir::numel(shape);
            let vals: Vec<f32> = values[k..k + n].iter().map(|&x| x as f32).collect();
            k += n;
            frontier.push(Tensor::from_f32(shape.clone(), vals).expect("sized"));
        }
        self.program.run(&frontier).map_err(|e| LowerError::Client(e.to_string()))
    }
}

/// Encodes one sample (shaped like the model input) for the circuit: the client's pre-processing if
/// any, then each value clamped into the input box and quantized.
pub fn encode(preprocess: Option<&Module>, codes: &[InputCode], x: &Tensor) -> Result<Vec<i64>, LowerError> {
    let pre;
    let x = match preprocess {
        Some(p) => {
            pre = head::apply(p, x).map_err(LowerError::Client)?;
            &pre
        }
        None => x,
    };
    Ok(x.to_f32_vec()
        .iter()
        .zip(codes)
        .map(|(&v, c)| ((f64::from(v).clamp(c.lo, c.hi) - c.mid) * c.scale).round() as i64)
        .collect())
}
