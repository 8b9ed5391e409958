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
mod ckks;
mod head;
pub mod neurons;
mod pipeline;
pub mod poly;
mod scale;
mod search;
mod simulator;
mod tail;
mod window;

pub use calibration::{Calibration, HEADROOM, Origin, SYNTHETIC_SAMPLES, SYNTHETIC_SEED};
pub use ckks::{CkksChoice, CkksCompiled, CkksSearch, CkksTrial, choose_ckks};
pub use fhec_ckks as ckks_plan;
pub use fhec_runtime::{InputCode, OutputCode};
pub use pipeline::{Stage, neuron_passes, stage_text};
pub use poly::{Approx, Fit};
pub use scale::{Options, TableRanges};
pub use search::{Choice, Search, Steps, Trial, choose};
pub use simulator::{Engine, Simulator, jit_pays};
pub use window::{MAX_NARROWING, TABLE_HEADROOM};

pub use fhec_passes::optimize;

use fhec_ir::{IrError, Module, Tensor};
use fhec_runtime::{Circuit, Noise, RuntimeError};
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

/// A compiled model: the server's circuit and the client's encoding and post-processing.
pub struct Compiled {
    pub circuit: Circuit,
    /// Per bootstrap, how many times narrower its table's input range is than the interval bound
    /// (see [`TableRanges`]).
    pub narrowing: Vec<f64>,
    /// Under calibrated ranges, how often a table read leaves its window on calibration samples the
    /// windows were not built from (windows from the even-numbered samples, reads of the odd-numbered
    /// ones): reads outside, reads.
    pub held_out: (usize, usize),
    /// The client's pre-processing (see `head`): input the model's input, output `pre_0`, what the
    /// input codes encode. `None`: the input is encoded as it is.
    pub preprocess: Option<Module>,
    pub inputs: Vec<InputCode>,
    pub outputs: Vec<OutputCode>,
    /// The client's post-processing: inputs `frontier_<k>` (the decrypted circuit outputs), the model's
    /// outputs. It holds no weights.
    pub postprocess: Module,
}

/// Compiles with the default optimizer settings.
pub fn compile(module: &Module, calibration: &Calibration, opts: &Options) -> Result<Compiled, LowerError> {
    Prepared::new(module, calibration, &optimize::Config::default())?.compile(opts)
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
}

impl Optimization {
    pub fn pbs_before(&self) -> usize {
        self.layers_before.iter().map(|l| l.1).sum()
    }

    pub fn pbs_after(&self) -> usize {
        self.layers_after.iter().map(|l| l.1).sum()
    }
}

/// The part of the lowering that does not depend on [`Options`]: the client/server split, the
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

    /// `xs` through the client's pre-processing, if any: the samples [`Compiled::simulate_all`]
    /// takes, for every candidate compiled from this preparation.
    pub fn preprocessed(&self, xs: &[Tensor]) -> Result<Vec<Tensor>, LowerError> {
        match &self.preprocess {
            Some(p) => xs.iter().map(|x| head::apply(p, x).map_err(LowerError::Client)).collect(),
            None => Ok(xs.to_vec()),
        }
    }

    pub fn compile(&self, opts: &Options) -> Result<Compiled, LowerError> {
        let i = scale::integerize(&self.neurons, opts)?;
        Ok(Compiled {
            circuit: i.circuit,
            narrowing: i.narrowing,
            held_out: i.held_out,
            preprocess: self.preprocess.clone(),
            inputs: i.inputs,
            outputs: i.outputs,
            postprocess: self.postprocess.clone(),
        })
    }
}

impl Compiled {
    /// Quantizes and encodes one input sample (shaped like the model input) for the circuit.
    pub fn encode(&self, x: &Tensor) -> Result<Vec<i64>, LowerError> {
        encode(self.preprocess.as_ref(), &self.inputs, x)
    }

    /// Decodes the circuit's outputs and runs the client's post-processing: the model's outputs.
    pub fn decode(&self, acc: &[i64]) -> Result<Vec<Tensor>, LowerError> {
        decode(&self.outputs, &self.postprocess, acc)
    }

    /// Encode, run the circuit in the clear (with the stated noise, or none), decode.
    pub fn simulate(&self, x: &Tensor, noise: Noise<'_>) -> Result<Vec<Tensor>, LowerError> {
        let acc = fhec_runtime::simulate(&self.circuit, &self.encode(x)?, noise)?;
        self.decode(&acc)
    }

    /// Encode, run and decode about `runs` samples (see [`Simulator`]).
    pub fn simulator(&self, engine: Engine, runs: usize) -> (Simulator<'_>, Option<String>) {
        Simulator::new(&self.circuit, engine, runs)
    }

    /// [`Compiled::simulate`] over many samples with `sim` (made by [`Compiled::simulator`]), one noise
    /// stream for all: the same results as simulating them one after the other. `pre` are the samples
    /// after the client's pre-processing ([`Prepared::preprocessed`], done once for all candidates).
    pub fn simulate_all(
        &self,
        sim: &Simulator<'_>,
        pre: &[Tensor],
        noise: Noise<'_>,
    ) -> Result<Vec<Vec<Tensor>>, LowerError> {
        sim.predict(None, &self.inputs, &self.outputs, &self.postprocess, pre, noise)
    }

    pub fn pbs_count(&self) -> usize {
        self.circuit.pbs.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic inputs in [-2, 2) shaped like the module's input.
    fn cal(xs: &[Tensor]) -> Calibration {
        Calibration::from_samples(xs.to_vec()).unwrap()
    }

    fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let len = fhec_ir::numel(&shape);
        let mut state = 12345u64;
        (0..n)
            .map(|_| {
                let v = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                    })
                    .collect();
                Tensor::from_f32(shape.clone(), v).unwrap()
            })
            .collect()
    }

    /// Compiles `ir`, checks its bootstrap count and that the noise-free simulation stays within
    /// `tolerance` (relative to the output's scale) of the float reference on 64 inputs.
    fn check(ir: &str, pbs: usize, tolerance: f32) {
        let m: Module = ir.parse().unwrap();
        m.verify().unwrap();
        let xs = inputs(&m, 64);
        let c = compile(&m, &cal(&xs), &Options::default()).unwrap();
        assert_eq!(c.pbs_count(), pbs, "bootstrap count");
        let (mut worst, mut scale, mut at) = (0f32, 1e-6f32, String::new());
        for x in &xs {
            let want = fhec_interp::run(&m, std::slice::from_ref(x)).unwrap();
            let got = c.simulate(x, Noise::None).unwrap();
            for (g, w) in got.iter().zip(&want) {
                for (g, w) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
                    if (g - w).abs() > worst {
                        worst = (g - w).abs();
                        at = format!("input {:?}: {g} instead of {w}", x.to_f32_vec());
                    }
                    scale = scale.max(w.abs());
                }
            }
        }
        assert!(worst <= tolerance * scale, "max error {:e} of the output scale at {at}", worst / scale);
    }

    /// `2 relu(x0 + x1) + x0` and `relu(x0 + x1) + x1` (a matrix product keeps the relu on the
    /// server, and the outputs' calibrated ranges, which `x` spans, leave room for any relu value)
    /// calibrated on samples where `x1` nearly cancels `x0`: the sum stays within
    /// +-0.2 while the input box allows +-4.4.
    fn narrow_relu() -> (Module, Calibration) {
        let m: Module = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = const #0 : clear<f32>[2,1]\n%2 = matmul %0, %1 : enc<f32>[1,1]\n%3 = relu %2 : enc<f32>[1,1]\n%4 = concat{axis=1} %3, %0 : enc<f32>[1,3]\n%5 = const #1 : clear<f32>[3,2]\n%6 = matmul %4, %5 : enc<f32>[1,2]\noutput \"y\" = %6\ndata #0 = [1.0, 1.0]\ndata #1 = [2.0, 1.0, 1.0, 0.0, 0.0, 1.0]\n"
            .parse()
            .unwrap();
        let xs = (0..64)
            .map(|i| {
                let a = i as f32 / 16.0 - 2.0;
                Tensor::from_f32(vec![1, 2], vec![a, -a + 0.2 * ((i % 7) as f32 / 3.0 - 1.0)]).unwrap()
            })
            .collect::<Vec<_>>();
        (m, cal(&xs))
    }

    fn relu_at(c: &Compiled, x0: f32, x1: f32) -> f32 {
        c.simulate(&Tensor::from_f32(vec![1, 2], vec![x0, x1]).unwrap(), Noise::None).unwrap()[0].to_f32_vec()[0] - x0
    }

    #[test]
    fn a_calibrated_table_is_finer_and_clips_beyond_its_window() {
        let (m, cal) = narrow_relu();
        let opts = |table_ranges| Options { params: fhec_runtime::ParamSet::P512A, table_ranges, ..Options::default() };
        let bound = compile(&m, &cal, &opts(TableRanges::Bound)).unwrap();
        let narrow = compile(&m, &cal, &opts(TableRanges::Calibrated)).unwrap();
        assert_eq!(bound.narrowing, [1.0]);
        // The window (+-0.2 doubled) would be 11x narrower than the bound: capped.
        assert_eq!(narrow.narrowing, [MAX_NARROWING]);
        // Within the window, the finer table errs less.
        let err = |c: &Compiled| {
            (0..=40)
                .map(|i| i as f32 / 100.0 - 0.2)
                .map(|z| (relu_at(c, 1.0, z - 1.0) - 2.0 * z.max(0.0)).abs())
                .fold(0f32, f32::max)
        };
        assert!(err(&narrow) * 4.0 < err(&bound), "max error {} calibrated, {} bound", err(&narrow), err(&bound));
        // Past the window's upper edge (4.4 / 8 = 0.55), the relu reads its edge: 2 * 0.55, not 2 * 1.0.
        assert!((relu_at(&bound, 1.0, 0.0) - 2.0).abs() < 0.05);
        let clipped = relu_at(&narrow, 1.0, 0.0);
        assert!((clipped - 1.1).abs() < 0.1, "{clipped}");
        // Past the lower edge, 0 as it should be.
        assert!(relu_at(&narrow, -1.0, 0.0).abs() < 0.05);
        // The 32 odd-numbered samples stay within the window the even-numbered ones give.
        assert_eq!(narrow.held_out, (0, 32));
        assert_eq!(bound.held_out, (0, 0));
    }

    #[test]
    fn held_out_samples_beyond_the_even_samples_window_are_counted() {
        let (m, _) = narrow_relu();
        // Even-numbered samples sum to 0, odd-numbered ones to 3: outside the even ones' window
        // (8x narrower than the bound, about -4.4 to 7.3: +-0.7 around 0).
        let xs: Vec<Tensor> = (0..64)
            .map(|i| {
                let a = i as f32 / 16.0 - 2.0;
                Tensor::from_f32(vec![1, 2], vec![a, -a + if i % 2 == 1 { 3.0 } else { 0.0 }]).unwrap()
            })
            .collect();
        let c =
            compile(&m, &cal(&xs), &Options { params: fhec_runtime::ParamSet::P512A, ..Options::default() }).unwrap();
        assert_eq!(c.held_out, (32, 32));
    }

    #[test]
    fn max_of_two_is_one_table() {
        check(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,1,2]\n%1 = maxpool{kernel=[1,2], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %0 : enc<f32>[1,1,1,1]\n%2 = const #0 : clear<f32>[1]\n%3 = mul %1, %2 : enc<f32>[1,1,1,1]\noutput \"y\" = %3\ndata #0 = [2.0]\n",
            1,
            0.01,
        );
    }

    /// Three tables for the max, and a twin for each of the two that both later tables and the output read.
    #[test]
    fn max_pool_2x2_takes_three_tables() {
        check(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,2,2]\n%1 = maxpool{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %0 : enc<f32>[1,1,1,1]\n%2 = const #0 : clear<f32>[1]\n%3 = mul %1, %2 : enc<f32>[1,1,1,1]\noutput \"y\" = %3\ndata #0 = [2.0]\n",
            5,
            0.01,
        );
    }

    /// The relu commutes with the max: 3 tables per window, then one relu per pooled value.
    #[test]
    fn max_pool_of_a_layer_then_linear() {
        check(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,2,4]\n%1 = relu %0 : enc<f32>[1,1,2,4]\n%2 = maxpool{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %1 : enc<f32>[1,1,1,2]\n%3 = reshape{shape=[1,2]} %2 : enc<f32>[1,2]\n%4 = const #0 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\n%6 = relu %5 : enc<f32>[1,1]\noutput \"y\" = %6\ndata #0 = [1.5, -0.5]\n",
            8,
            0.01,
        );
    }

    /// Every univariate op is one table per element, on the server when a layer reads it. Step
    /// functions read their input at the table's resolution: an input within one position of a step
    /// may land on the other side, so their error is bounded by one step times the largest weight
    /// (1.5 of an output scale of about 5), not by the table resolution.
    #[test]
    fn every_univariate_op_is_one_table_per_element() {
        let module = |op: &str| {
            format!(
                "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = {op} %0 : enc<f32>[1,4]\n%2 = const #0 : clear<f32>[4,1]\n%3 = matmul %1, %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n"
            )
        };
        for op in [
            "hard_swish",
            "mish",
            "gelu{tanh=false}",
            "gelu{tanh=true}",
            "softsign",
            "celu{alpha=0.7}",
            "sin",
            "cos",
            "relu",
            "tanh",
            "erf",
        ] {
            check(&module(op), 4, 0.01);
        }
        for op in [
            "floor",
            "ceil",
            "round",
            "sign",
            "thresholded_relu{alpha=0.5}",
            "compare{cmp=\"gt\", than=0.25}",
            "compare{cmp=\"ge\", than=0.25}",
            "compare{cmp=\"lt\", than=-0.5}",
            "compare{cmp=\"le\", than=0.0}",
        ] {
            check(&module(op), 4, 0.35);
        }
        // 1/x away from 0: x + 3 in [1, 5).
        check(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #1 : clear<f32>[1]\n%2 = add %0, %1 : enc<f32>[1,4]\n%3 = reciprocal %2 : enc<f32>[1,4]\n%4 = const #0 : clear<f32>[4,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [1.5, -0.5, 0.25, 1.0]\ndata #1 = [3.0]\n",
            4,
            0.01,
        );
    }

    /// Exact equality of an encrypted value is refused, on the server (a table) and on the client (a
    /// decrypted value): both read it only approximately. Equality of steps of it is exact and lowers.
    #[test]
    fn equality_of_an_encrypted_value_is_refused() {
        let server = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = compare{cmp=\"eq\", than=0.25} %0 : enc<f32>[1,4]\n%2 = const #0 : clear<f32>[4,1]\n%3 = matmul %1, %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
        let client = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #0 : clear<f32>[4,1]\n%2 = matmul %0, %1 : enc<f32>[1,1]\n%3 = compare{cmp=\"eq\", than=0.25} %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
        for (ir, side) in [(server, "an encrypted value"), (client, "a decrypted value")] {
            let m: Module = ir.parse().unwrap();
            let e = compile(&m, &cal(&inputs(&m, 8)), &Options::default()).err().expect("refused").to_string();
            assert!(e.contains(&format!("exact equality of {side}")), "{e}");
        }
        let steps = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = floor %0 : enc<f32>[1,4]\n%2 = compare{cmp=\"eq\", than=1.0} %1 : enc<f32>[1,4]\n%3 = const #0 : clear<f32>[4,1]\n%4 = matmul %2, %3 : enc<f32>[1,1]\noutput \"y\" = %4\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
        let m: Module = steps.parse().unwrap();
        assert!(compile(&m, &cal(&inputs(&m, 8)), &Options::default()).is_ok());
    }

    /// ONNX Max and Min: against a constant, a clip table; of two encrypted values, `a + relu(b - a)`.
    #[test]
    fn elementwise_max_min_and_products_of_encrypted_values() {
        let module = |body: &str| {
            format!(
                "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = slice{{axes=[1], starts=[0], ends=[2], steps=[1]}} %0 : enc<f32>[1,2]\n%2 = slice{{axes=[1], starts=[2], ends=[4], steps=[1]}} %0 : enc<f32>[1,2]\n{body}%5 = const #0 : clear<f32>[2,1]\n%6 = matmul %4, %5 : enc<f32>[1,1]\noutput \"y\" = %6\ndata #0 = [1.5, -0.5]\ndata #1 = [0.25, -1.0]\n"
            )
        };
        for op in ["max", "min"] {
            check(&module(&format!("%3 = const #1 : clear<f32>[2]\n%4 = {op} %1, %2 : enc<f32>[1,2]\n")), 2, 0.01);
            check(&module(&format!("%3 = const #1 : clear<f32>[2]\n%4 = {op} %3, %1 : enc<f32>[1,2]\n")), 2, 0.01);
        }
        // Reductions by max and min: one table per element folded in.
        for op in ["reduce_max", "reduce_min"] {
            let ir = format!(
                "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = reshape{{shape=[2,2]}} %0 : enc<f32>[2,2]\n%2 = {op}{{axes=[1], keepdims=false}} %1 : enc<f32>[2]\n%3 = reshape{{shape=[1,2]}} %2 : enc<f32>[1,2]\n%4 = const #0 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [1.5, -0.5]\n"
            );
            check(&ir, 2, 0.01);
        }
        // A product of two encrypted values: two squares, ((a + c)^2 - (a - c)^2) / 4.
        check(&module("%3 = const #1 : clear<f32>[2]\n%4 = mul %1, %2 : enc<f32>[1,2]\n"), 4, 0.01);
    }

    /// LayerNormalization as the frontend writes it: the square fuses into one table, sqrt and
    /// reciprocal into another, and `d * inv` is a product of encrypted values (two tables).
    /// Interval analysis lets the variance reach 0, so `1 / sqrt(var + eps)` would span [0.3, 316]:
    /// its table saturates near the calibrated variances instead (see `saturated` in `neurons::scalarize`): 2.5% of
    /// the output scale off at worst on the 64 samples, against 268% without it.
    #[test]
    fn layer_normalization_lowers() {
        let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = reduce_mean{axes=[1], keepdims=true} %0 : enc<f32>[1,1]\n%2 = sub %0, %1 : enc<f32>[1,4]\n%3 = mul %2, %2 : enc<f32>[1,4]\n%4 = reduce_mean{axes=[1], keepdims=true} %3 : enc<f32>[1,1]\n%5 = const #1 : clear<f32>[]\n%6 = add %4, %5 : enc<f32>[1,1]\n%7 = sqrt %6 : enc<f32>[1,1]\n%8 = reciprocal %7 : enc<f32>[1,1]\n%9 = mul %2, %8 : enc<f32>[1,4]\n%10 = const #0 : clear<f32>[4,1]\n%11 = matmul %9, %10 : enc<f32>[1,1]\noutput \"y\" = %11\ndata #0 = [1.5, -0.5, 0.25, 1.0]\ndata #1 = [0.00001]\n";
        check(ir, 4 + 1 + 8, 0.03);
    }

    /// A per-element affine map between two tables (a per-channel batch normalization between a
    /// requantization and an activation): the optimizer's maps are the same for every element, so
    /// it leaves two tables per element; composing them after scalarization leaves one.
    #[test]
    fn tables_with_a_per_element_map_between_them_compose() {
        let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = relu %0 : enc<f32>[1,2]\n%2 = const #0 : clear<f32>[2]\n%3 = mul %1, %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2]\n%5 = add %3, %4 : enc<f32>[1,2]\n%6 = sigmoid %5 : enc<f32>[1,2]\n%7 = const #2 : clear<f32>[2,1]\n%8 = matmul %6, %7 : enc<f32>[1,1]\noutput \"y\" = %8\ndata #0 = [2.0, -0.5]\ndata #1 = [-1.0, 0.25]\ndata #2 = [1.5, -1.0]\n";
        check(ir, 2, 0.01);
        let m: Module = ir.parse().unwrap();
        let naive = optimize::Config { level: 0, ..optimize::Config::default() };
        let p = Prepared::new(&m, &cal(&inputs(&m, 16)), &naive).unwrap();
        assert_eq!(p.compile(&Options::default()).unwrap().pbs_count(), 4, "uncomposed at --opt-level 0");
    }

    /// `relu(avgpool(relu(x)))`-like: a relu of a sum of relus cannot see a negative input, and a
    /// relu of `-relu(x) - 1` never a positive one. Both become leveled (the second a constant),
    /// the results identical to the naive lowering's, which keeps their tables.
    #[test]
    fn tables_affine_over_their_bound_become_leveled() {
        let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = relu %0 : enc<f32>[1,2]\n%2 = const #0 : clear<f32>[2,2]\n%3 = matmul %1, %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2]\n%5 = add %3, %4 : enc<f32>[1,2]\n%6 = relu %5 : enc<f32>[1,2]\n%7 = const #2 : clear<f32>[2,1]\n%8 = matmul %6, %7 : enc<f32>[1,1]\noutput \"y\" = %8\ndata #0 = [0.5, -1.0, 0.5, 0.0]\ndata #1 = [0.0, -1.0]\ndata #2 = [1.5, -2.0]\n";
        check(ir, 2, 0.01);
        let m: Module = ir.parse().unwrap();
        let xs = inputs(&m, 16);
        let opt = Prepared::new(&m, &cal(&xs), &optimize::Config::default()).unwrap();
        assert_eq!(opt.optimization.elided, 2);
        let naive =
            Prepared::new(&m, &cal(&xs), &optimize::Config { level: 0, ..optimize::Config::default() }).unwrap();
        assert_eq!(naive.optimization.elided, 0);
        assert_eq!(naive.compile(&Options::default()).unwrap().pbs_count(), 4, "kept at --opt-level 0");
        // The float semantics of the scalarized circuits agree, on samples and outside them.
        for x in xs.iter().chain(&inputs(&m, 40)[16..]) {
            let v: Vec<f64> = x.to_f32_vec().into_iter().map(f64::from).collect();
            let (a, b) = (opt.neurons.eval(&v), naive.neurons.eval(&v));
            assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-9), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn hidden_relu_layer() {
        check(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,3]\n%1 = const #0 : clear<f32>[3,2]\n%2 = matmul %0, %1 : enc<f32>[1,2]\n%3 = relu %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1]\ndata #1 = [1.5, -0.5]\n",
            2,
            0.01,
        );
    }
}
