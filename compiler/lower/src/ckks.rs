//! Lowering to CKKS with batch-major packing: every slot of a ciphertext is one sample, so the
//! scalarized server part runs as it is, with ciphertexts of samples for wires. Affine forms become
//! products by constants and sums; each table becomes a Chebyshev polynomial interpolating it over a
//! window of its input (the calibrated window of `scale::window`, or the interval bound without real
//! samples), with the window's affine map folded into the form that feeds it.
//!
//! A polynomial diverges outside its window, where a table would saturate or wrap gently: the plan
//! counts such reads in simulation (`Reads`), and the choice reports them on the calibration samples.
//! The degree is chosen like the TFHE parameter set: the cheapest whose simulated fidelity on the
//! calibration samples stays within the accuracy budget.

use crate::neurons::Lookup;
use crate::search::{fidelity, grid_steps, relative_fidelity};
use crate::{Calibration, LowerError, Origin, Prepared, scale};
use fhec_ckks::{Affine, Node, PLAN_VERSION, Plan, Reads, cheb};
use fhec_ir::{Module, Tensor};

/// A model lowered for CKKS: the plan the server evaluates and the client's pre- and post-processing.
#[derive(Clone, Debug)]
pub struct CkksCompiled {
    pub plan: Plan,
    pub preprocess: Option<Module>,
    pub postprocess: Module,
}

/// The polynomial standing in for `l`: `l` interpolated over its window, the window mapped onto
/// [-1, 1] by the node's affine input.
fn node(l: &Lookup, calibrated_windows: bool, degree: usize) -> Node {
    let (lo, hi) = match l.calibrated.filter(|_| calibrated_windows) {
        Some(c) => scale::window(c, (l.lo, l.hi)),
        None => (l.lo, l.hi),
    };
    // A constant input (a degenerate window) still gets a unit-wide window.
    let (m, h) = ((lo + hi) / 2.0, ((hi - lo) / 2.0).max(1e-9));
    let coeffs = cheb::interpolate(|t| l.eval(m + h * t), degree);
    let input = Affine { terms: l.input.terms.iter().map(|&(w, c)| (w, c / h)).collect(), bias: (l.input.bias - m) / h };
    Node { input, coeffs, layer: l.layer.clone() }
}

impl Prepared {
    /// The CKKS plan with polynomials of `degree` on calibrated windows (the interval bound when
    /// `calibrated_windows` is false or there were no real samples).
    pub fn ckks(&self, degree: usize, calibrated_windows: bool) -> Result<CkksCompiled, LowerError> {
        let n = &self.neurons;
        let input_box: Vec<(f64, f64)> = n.wires[..n.n_inputs].iter().map(|w| (w.lo, w.hi)).collect();
        // The client sends each input mapped onto [-1, 1] over its box, so that the constants
        // multiplying inputs are of the size of those multiplying activations (their precision is
        // absolute: a tiny weight on a large input, such as a raw feature in the thousands, would
        // lose most of its digits).
        let unit = |a: Affine| {
            let mut bias = a.bias;
            let terms = a
                .terms
                .into_iter()
                .map(|(w, c)| match input_box.get(w as usize) {
                    Some(&(lo, hi)) => {
                        bias += c * (lo + hi) / 2.0;
                        (w, c * (hi - lo) / 2.0)
                    }
                    None => (w, c),
                })
                .collect();
            Affine { terms, bias }
        };
        let nodes = n.wires[n.n_inputs..]
            .iter()
            .map(|w| w.lookup.as_ref().map(|l| node(l, calibrated_windows, degree)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LowerError::Model("a wire past the inputs is not a table".into()))?
            .into_iter()
            .map(|n| Node { input: unit(n.input), ..n })
            .collect();
        let outputs = n.outputs.iter().flatten().map(|f| unit(Affine { terms: f.terms.clone(), bias: f.bias })).collect();
        let plan = Plan { version: PLAN_VERSION, n_inputs: n.n_inputs, input_box, nodes, outputs };
        plan.validate().map_err(|e| LowerError::Model(e.to_string()))?;
        Ok(CkksCompiled { plan, preprocess: self.preprocess.clone(), postprocess: self.postprocess.clone() })
    }
}

impl CkksCompiled {
    /// One sample (shaped like the model input) as the plan's input values: the client's
    /// pre-processing, if any, flattened. The plan clamps them into its box.
    pub fn encode(&self, x: &Tensor) -> Result<Vec<f64>, LowerError> {
        let x = match &self.preprocess {
            Some(p) => crate::head::apply(p, x).map_err(LowerError::Client)?,
            None => x.clone(),
        };
        Ok(x.to_f32_vec().into_iter().map(f64::from).collect())
    }

    /// The plan's outputs for one sample through the client's post-processing: the model's outputs.
    pub fn decode(&self, values: &[f64]) -> Result<Vec<Tensor>, LowerError> {
        crate::postprocess(&self.postprocess, values)
    }

    /// Encode, evaluate in the clear, decode; reads outside a window are counted into `reads`.
    pub fn simulate(&self, x: &Tensor, reads: &mut Reads) -> Result<Vec<Tensor>, LowerError> {
        let values = self.plan.eval(&self.encode(x)?, reads).map_err(|e| LowerError::Client(e.to_string()))?;
        self.decode(&values)
    }
}

/// The degrees to choose from and the budget the choice must meet.
#[derive(Clone, Debug)]
pub struct CkksSearch {
    /// Polynomial degrees to try, cheapest first.
    pub degrees: Vec<usize>,
    pub calibrated_windows: bool,
    /// As in [`crate::Search`].
    pub budget_points: f64,
    pub error_budget_percent: f64,
    pub max_samples: usize,
    pub optimize: crate::optimize::Config,
}

impl Default for CkksSearch {
    fn default() -> CkksSearch {
        let s = crate::Search::default();
        CkksSearch { degrees: vec![7, 15, 31, 63], calibrated_windows: true, budget_points: s.budget_points, error_budget_percent: s.error_budget_percent, max_samples: s.max_samples, optimize: s.optimize }
    }
}

#[derive(Clone, Debug)]
pub struct CkksChoice {
    pub compiled: CkksCompiled,
    pub degree: usize,
    /// Fidelity to the float model on the calibration samples (as in [`crate::Choice`]).
    pub fidelity: f64,
    pub within_budget: bool,
    pub required: f64,
    /// Every degree tried, with its fidelity.
    pub trials: Vec<(usize, f64)>,
    /// Reads outside a window on the calibration samples, with the chosen degree.
    pub reads: Reads,
    pub optimization: crate::Optimization,
    pub calibration: (Origin, usize),
}

/// Lowers `module` for CKKS with the lowest degree whose cleartext simulation keeps the accuracy
/// budget on the calibration samples (the most faithful degree, marked as outside the budget, if none
/// does).
pub fn choose_ckks(module: &Module, calibration: &Calibration, search: &CkksSearch) -> Result<CkksChoice, LowerError> {
    let (samples, float) = crate::search::reference(module, calibration, search.max_samples)?;
    let grid = grid_steps(&float);
    let classes = float.iter().all(|t| crate::search::class(t).is_some());
    let required = 100.0 - if classes { search.budget_points } else { search.error_budget_percent };
    let prepared = Prepared::new(module, calibration, &search.optimize)?;
    let mut trials = Vec::new();
    let mut best: Option<(f64, CkksCompiled, usize, Reads)> = None;
    for &degree in &search.degrees {
        let compiled = prepared.ckks(degree, search.calibrated_windows)?;
        let mut reads = Reads::default();
        let got: Vec<Tensor> = samples.iter().map(|x| compiled.simulate(x, &mut reads).map(|mut o| o.swap_remove(0))).collect::<Result<_, _>>()?;
        let f = if classes { fidelity(&float, &got, &grid) } else { relative_fidelity(&float, &got) };
        trials.push((degree, f));
        let done = f >= required;
        if best.as_ref().is_none_or(|b| f > b.0) {
            best = Some((f, compiled, degree, reads));
        }
        if done {
            break;
        }
    }
    let (fidelity, compiled, degree, reads) = best.ok_or_else(|| LowerError::Model("no polynomial degree to try".into()))?;
    Ok(CkksChoice { compiled, degree, fidelity, within_budget: fidelity >= required, required, trials, reads, optimization: prepared.optimization.clone(), calibration: (calibration.origin().clone(), samples.len()) })
}
