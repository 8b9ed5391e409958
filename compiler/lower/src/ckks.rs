//! Lowering to CKKS with batch-major packing: every slot of a ciphertext is one sample, so the
//! scalarized server part runs as it is, with ciphertexts of samples for wires. Affine forms become
//! products by constants and sums; each table becomes a Chebyshev polynomial interpolating it over a
//! window of its input (the calibrated window of `scale::window`, or the interval bound without real
//! samples), with the window's affine map folded into the form that feeds it.
//!
//! A polynomial diverges outside its window, where a table would saturate or wrap gently: the plan
//! counts such reads in simulation (`Reads`), and the choice reports them on the calibration samples.
//! Feature-major packing ([`Packing::FeatureMajor`]) evaluates a layer's activations as one
//! polynomial over the slots holding them, so a layer's values share one window: the union of their
//! windows (and of their domains), and the function without each value's centering (the consumers'
//! biases take it back). A shared window is wider than a value's own, so it may need a higher degree
//! for the same fidelity; the search below measures it.
//!
//! The degree is chosen like the TFHE parameter set: the cheapest whose simulated fidelity on the
//! calibration samples stays within the accuracy budget.

use crate::neurons::Lookup;
use crate::search::{fidelity, grid_steps, relative_fidelity};
use crate::{Calibration, LowerError, Origin, Prepared, scale};
use fhec_ckks::{Affine, Node, PLAN_VERSION, Packing, Plan, Reads, cheb};
use std::collections::HashMap;
use fhec_ir::{Module, Tensor};

/// A model lowered for CKKS: the plan the server evaluates and the client's pre- and post-processing.
#[derive(Clone, Debug)]
pub struct CkksCompiled {
    pub plan: Plan,
    pub preprocess: Option<Module>,
    pub postprocess: Module,
}

/// The window `l`'s polynomial interpolates it over: calibrated, or the interval bound.
fn own_window(l: &Lookup, calibrated_windows: bool) -> (f64, f64) {
    match l.calibrated.filter(|_| calibrated_windows) {
        Some(c) => scale::window(c, (l.lo, l.hi)),
        None => (l.lo, l.hi),
    }
}

/// The polynomial standing in for `l`: `f` interpolated over `(lo, hi)`, the window mapped onto
/// [-1, 1] by the node's affine input (`l`'s, its bias moved by `shift`).
fn node(l: &Lookup, (lo, hi): (f64, f64), f: impl Fn(f64) -> f64, shift: f64, degree: usize) -> Node {
    // A constant input (a degenerate window) still gets a unit-wide window.
    let (m, h) = ((lo + hi) / 2.0, ((hi - lo) / 2.0).max(1e-9));
    let coeffs = cheb::interpolate(|t| f(m + h * t), degree);
    let input = Affine { terms: l.input.terms.iter().map(|&(w, c)| (w, c / h)).collect(), bias: (l.input.bias + shift - m) / h };
    Node { input, coeffs, layer: l.layer.clone() }
}

/// An interval `(lo, hi)`.
type Interval = (f64, f64);

/// Per layer (source op): the union of its values' windows and of their domains.
fn shared_windows(lookups: &[&Lookup], calibrated_windows: bool) -> HashMap<String, (Interval, Interval)> {
    let mut out: HashMap<String, (Interval, Interval)> = HashMap::new();
    for l in lookups {
        let (lo, hi) = own_window(l, calibrated_windows);
        let e = out.entry(l.layer.clone()).or_insert(((lo, hi), l.domain));
        e.0 = (e.0.0.min(lo), e.0.1.max(hi));
        e.1 = (e.1.0.min(l.domain.0), e.1.1.max(l.domain.1));
    }
    out
}

impl Prepared {
    /// The CKKS plan with polynomials of `degree` on calibrated windows (the interval bound when
    /// `calibrated_windows` is false or there were no real samples), one window per value, or per
    /// layer for feature-major packing.
    pub fn ckks(&self, degree: usize, calibrated_windows: bool, packing: Packing) -> Result<CkksCompiled, LowerError> {
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
        let lookups = n.wires[n.n_inputs..]
            .iter()
            .map(|w| w.lookup.as_ref())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LowerError::Model("a wire past the inputs is not a table".into()))?;
        let shared = (packing == Packing::FeatureMajor).then(|| shared_windows(&lookups, calibrated_windows));
        // Shared polynomials leave out each value's center: a form reading value `w` takes back
        // `c · center(w)`, which the table's consumers had added to their bias.
        let uncenter = |terms: &[(u32, f64)]| -> f64 {
            match &shared {
                Some(_) => -terms.iter().filter_map(|&(w, c)| (w as usize).checked_sub(n.n_inputs).map(|k| c * lookups[k].center)).sum::<f64>(),
                None => 0.0,
            }
        };
        let nodes = lookups
            .iter()
            .map(|l| {
                let shift = uncenter(&l.input.terms);
                match shared.as_ref().and_then(|s| s.get(&l.layer)) {
                    Some(&(window, domain)) => node(l, window, |z| f64::from(l.f.apply(z.clamp(domain.0, domain.1) as f32)), shift, degree),
                    None => node(l, own_window(l, calibrated_windows), |z| l.eval(z), shift, degree),
                }
            })
            .map(|n| Node { input: unit(n.input), ..n })
            .collect();
        let outputs = n.outputs.iter().flatten().map(|f| unit(Affine { terms: f.terms.clone(), bias: f.bias + uncenter(&f.terms) })).collect();
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
    /// A degree per activation layer (false: one degree for the whole model).
    pub per_layer: bool,
    /// How samples sit in the slots; feature-major shares one window per layer.
    pub packing: Packing,
    /// As in [`crate::Search`].
    pub budget_points: f64,
    pub error_budget_percent: f64,
    pub max_samples: usize,
    pub optimize: crate::optimize::Config,
}

impl Default for CkksSearch {
    fn default() -> CkksSearch {
        let s = crate::Search::default();
        CkksSearch { degrees: vec![7, 15, 31, 63], calibrated_windows: true, per_layer: true, packing: Packing::BatchMajor, budget_points: s.budget_points, error_budget_percent: s.error_budget_percent, max_samples: s.max_samples, optimize: s.optimize }
    }
}

/// One assignment of degrees tried by [`choose_ckks`].
#[derive(Clone, Debug)]
pub struct CkksTrial {
    /// Each activation layer's degree, in the order of [`CkksChoice::layers`].
    pub degrees: Vec<usize>,
    /// Ring degree (log2) the plan needs; `None` when it fits no ring without bootstrapping.
    pub log_n: Option<usize>,
    /// Estimated time per ciphertext on one thread (a batch of `slots` samples batch-major, of
    /// `slots / block` feature-major).
    pub estimated_ms: f64,
    /// Fidelity on the calibration samples; `None` when not simulated (cheaper assignments kept
    /// the budget, or the plan fits no ring).
    pub fidelity: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct CkksChoice {
    pub compiled: CkksCompiled,
    /// The activation layers, in the order their polynomials first appear in the plan.
    pub layers: Vec<String>,
    /// The chosen degree of each of `layers`.
    pub degrees: Vec<usize>,
    /// Fidelity to the float model on the calibration samples (as in [`crate::Choice`]).
    pub fidelity: f64,
    pub within_budget: bool,
    pub required: f64,
    /// Every assignment considered, cheapest first.
    pub trials: Vec<CkksTrial>,
    /// Reads outside a window on the calibration samples, with the chosen degrees.
    pub reads: Reads,
    pub optimization: crate::Optimization,
    pub calibration: (Origin, usize),
    pub packing: Packing,
}

/// Most assignments of degrees to layers that [`choose_ckks`] enumerates; models with more
/// activation layers than that allows choose one degree for all.
const MAX_ASSIGNMENTS: usize = 256;

/// Lowers `module` for CKKS with the cheapest assignment of polynomial degrees to activation layers
/// whose cleartext simulation keeps the accuracy budget on the calibration samples (the most faithful
/// one, marked as outside the budget, if none does).
///
/// Cost is the estimated time per batch on the ring the plan needs ([`Plan::ring`]): every
/// polynomial's evaluation, and the products by constants, whose price depends on the ring. A degree
/// is worth more than its own polynomials: a lower one on one layer can bring the whole plan within
/// the smaller ring (six times cheaper), so degrees are chosen per layer, not one for the model.
/// Assignments are simulated cheapest first; the first within the budget is kept.
pub fn choose_ckks(module: &Module, calibration: &Calibration, search: &CkksSearch) -> Result<CkksChoice, LowerError> {
    let (samples, float) = crate::search::reference(module, calibration, search.max_samples)?;
    let grid = grid_steps(&float);
    let classes = float.iter().all(|t| crate::search::class(t).is_some());
    let required = 100.0 - if classes { search.budget_points } else { search.error_budget_percent };
    let prepared = Prepared::new(module, calibration, &search.optimize)?;
    if search.degrees.is_empty() {
        return Err(LowerError::Model("no polynomial degree to try".into()));
    }
    // The plan at each degree: an assignment takes each node from its layer's degree.
    let uniform: Vec<CkksCompiled> = search.degrees.iter().map(|&d| prepared.ckks(d, search.calibrated_windows, search.packing)).collect::<Result<_, _>>()?;
    let mut layers: Vec<String> = Vec::new();
    let layer_of: Vec<usize> = uniform[0]
        .plan
        .nodes
        .iter()
        .map(|n| match layers.iter().position(|l| *l == n.layer) {
            Some(i) => i,
            None => {
                layers.push(n.layer.clone());
                layers.len() - 1
            }
        })
        .collect();
    if search.packing == Packing::FeatureMajor {
        uniform[0].plan.layers().map_err(|e| LowerError::Model(e.to_string()))?;
    }
    let assemble = |choice: &[usize]| -> CkksCompiled {
        let mut c = uniform[0].clone();
        for (k, node) in c.plan.nodes.iter_mut().enumerate() {
            *node = uniform[choice[layer_of[k]]].plan.nodes[k].clone();
        }
        c
    };
    // Every assignment (indices into `search.degrees`) when there are few, else one degree for all.
    let d = search.degrees.len();
    let assignments: Vec<Vec<usize>> = match d.checked_pow(layers.len() as u32).filter(|&n| n <= MAX_ASSIGNMENTS && search.per_layer) {
        Some(n) => (0..n).map(|i| (0..layers.len()).map(|l| i / d.pow(l as u32) % d).collect()).collect(),
        None => (0..d).map(|i| vec![i; layers.len()]).collect(),
    };
    let mut candidates: Vec<(CkksTrial, Vec<usize>)> = assignments
        .into_iter()
        .map(|a| {
            let plan = assemble(&a).plan;
            let ring = plan.ring().ok();
            // One ciphertext on one thread.
            let estimated_ms = ring.map_or(f64::INFINITY, |r| plan.estimated_ms(r, search.packing, 1, 1));
            (CkksTrial { degrees: a.iter().map(|&i| search.degrees[i]).collect(), log_n: ring.map(|r| r.log_n), estimated_ms, fidelity: None }, a)
        })
        .collect();
    candidates.sort_by(|a, b| a.0.estimated_ms.total_cmp(&b.0.estimated_ms).then_with(|| a.0.degrees.iter().sum::<usize>().cmp(&b.0.degrees.iter().sum())));
    let mut best: Option<(f64, usize, CkksCompiled, Reads)> = None;
    for (i, (trial, a)) in candidates.iter_mut().enumerate() {
        // Plans that fit no ring sort last: one is simulated only when none fits (the build then
        // fails, naming where its deepest path ends).
        if trial.log_n.is_none() && best.is_some() {
            continue;
        }
        let compiled = assemble(a);
        let mut reads = Reads::default();
        let got: Vec<Tensor> = samples.iter().map(|x| compiled.simulate(x, &mut reads).map(|mut o| o.swap_remove(0))).collect::<Result<_, _>>()?;
        let f = if classes { fidelity(&float, &got, &grid) } else { relative_fidelity(&float, &got) };
        trial.fidelity = Some(f);
        if best.as_ref().is_none_or(|b| f > b.0) {
            best = Some((f, i, compiled, reads));
        }
        if f >= required && trial.log_n.is_some() {
            break;
        }
    }
    let (fidelity, i, compiled, reads) = best.expect("the cheapest assignment is always simulated");
    let degrees = candidates[i].0.degrees.clone();
    let trials = candidates.into_iter().map(|c| c.0).collect();
    Ok(CkksChoice { compiled, layers, degrees, fidelity, within_budget: fidelity >= required, required, trials, reads, optimization: prepared.optimization.clone(), calibration: (calibration.origin().clone(), samples.len()), packing: search.packing })
}
