//! Lowering to CKKS with batch-major packing: every slot of a ciphertext is one sample, so the
//! scalarized server part runs as it is, with ciphertexts of samples for wires. Affine forms become
//! products by constants and sums; each table becomes a polynomial (in the Chebyshev basis) standing
//! in for it over a window of its input (the calibrated window of `scale::window`, or the interval bound without real
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
//! A polynomial is interpolated at the Chebyshev nodes of its window or fitted in least squares to
//! where calibration put its inputs (`poly::Fit`); which fit and degree each layer gets is chosen
//! like the TFHE parameter set, among the candidates of the e-graph (`poly`): the cheapest whose
//! simulated fidelity on the calibration samples stays within the accuracy budget.

use crate::neurons::Lookup;
use crate::poly::{Approx, Fit};
use crate::search::{fidelity, grid_steps, relative_fidelity};
use crate::{Calibration, LowerError, Origin, Prepared};
use fhec_ckks::{Affine, Node, PLAN_VERSION, Packing, Plan, Reads, cheb};
use fhec_ir::{Module, Tensor};
use std::collections::HashMap;

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
        Some(c) => crate::window::window(c, (l.lo, l.hi)),
        None => (l.lo, l.hi),
    }
}

/// The polynomial standing in for `f` over the window `(lo, hi)` (as Chebyshev coefficients on
/// [-1, 1], `approx` saying how it is fitted), and how far it is from `f` where the inputs fell on
/// the calibration samples (`samples`; over the window, without any): the root mean square of the
/// differences.
fn fit((lo, hi): Interval, f: impl Fn(f64) -> f64, approx: Approx, samples: &[f64]) -> (Vec<f64>, f64) {
    let (m, h) = half_widths((lo, hi));
    let g = |t: f64| f(m + h * t);
    let ts: Vec<f64> = samples.iter().map(|z| ((z - m) / h).clamp(-1.0, 1.0)).collect();
    let coeffs = match approx.fit {
        Fit::Chebyshev => cheb::interpolate(g, approx.degree),
        Fit::LeastSquares => cheb::least_squares(g, approx.degree, &ts, cheb::GRID_WEIGHT),
    };
    let grid: Vec<f64> = (0..=100).map(|i| -1.0 + i as f64 / 50.0).collect();
    let at = if ts.is_empty() { &grid } else { &ts };
    let error = (at.iter().map(|&t| (cheb::eval(&coeffs, t) - g(t)).powi(2)).sum::<f64>() / at.len() as f64).sqrt();
    (coeffs, error)
}

/// A window's middle and half width; a constant input (a degenerate window) still gets a unit-wide
/// window.
fn half_widths((lo, hi): Interval) -> (f64, f64) {
    ((lo + hi) / 2.0, ((hi - lo) / 2.0).max(1e-9))
}

/// `l`'s input mapped onto [-1, 1] over `window`, its bias moved by `shift`.
fn window_input(l: &Lookup, window: Interval, shift: f64) -> Affine {
    let (m, h) = half_widths(window);
    Affine { terms: l.input.terms.iter().map(|&(w, c)| (w, c / h)).collect(), bias: (l.input.bias + shift - m) / h }
}

/// An interval `(lo, hi)`.
type Interval = (f64, f64);

/// One layer's shared polynomial: the union of its values' windows and of their domains, and
/// quantiles of where all its values' inputs fell on the calibration samples.
struct Shared {
    window: Interval,
    domain: Interval,
    quantiles: Vec<f64>,
}

/// Most quantiles a shared polynomial is fitted to.
const SHARED_QUANTILES: usize = 4 * crate::neurons::QUANTILES;

/// Per layer (source op): its shared window, domain and calibrated inputs. A layer whose values
/// apply different functions (a per-channel scale folded into the activation, say) has no one
/// polynomial: the error names it.
fn shared_windows(lookups: &[&Lookup], calibrated_windows: bool) -> Result<HashMap<String, Shared>, LowerError> {
    let mut out: HashMap<String, Shared> = HashMap::new();
    let mut first: HashMap<&str, &Lookup> = HashMap::new();
    for l in lookups {
        let f = first.entry(&l.layer).or_insert(l);
        if f.f != l.f {
            return Err(LowerError::Model(format!(
                "{}: its values apply different functions (such as a scale per channel folded into the activation), and feature-major packing evaluates one polynomial per layer: build with --packing batch-major",
                l.layer
            )));
        }
        let (lo, hi) = own_window(l, calibrated_windows);
        let e =
            out.entry(l.layer.clone()).or_insert(Shared { window: (lo, hi), domain: l.domain, quantiles: Vec::new() });
        e.window = (e.window.0.min(lo), e.window.1.max(hi));
        e.domain = (e.domain.0.min(l.domain.0), e.domain.1.max(l.domain.1));
        e.quantiles.extend(&l.quantiles);
    }
    for s in out.values_mut() {
        s.quantiles = crate::neurons::quantiles(&s.quantiles, SHARED_QUANTILES);
    }
    Ok(out)
}

impl Prepared {
    /// The CKKS plan with the polynomials `approx` gives on calibrated windows (the interval bound
    /// when `calibrated_windows` is false or there were no real samples), one window per value, or
    /// per layer for feature-major packing; and each node's distance from its function on the
    /// calibration samples (see `fit`).
    pub fn ckks(
        &self,
        approx: Approx,
        calibrated_windows: bool,
        packing: Packing,
    ) -> Result<(CkksCompiled, Vec<f64>), LowerError> {
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
        let shared =
            (packing == Packing::FeatureMajor).then(|| shared_windows(&lookups, calibrated_windows)).transpose()?;
        // Shared polynomials leave out each value's center: a form reading value `w` takes back
        // `c · center(w)`, which the table's consumers had added to their bias.
        let uncenter = |terms: &[(u32, f64)]| -> f64 {
            match &shared {
                Some(_) => -terms
                    .iter()
                    .filter_map(|&(w, c)| (w as usize).checked_sub(n.n_inputs).map(|k| c * lookups[k].center))
                    .sum::<f64>(),
                None => 0.0,
            }
        };
        // A shared polynomial is fitted once per layer.
        let mut layer_fits: HashMap<&str, (Vec<f64>, f64)> = HashMap::new();
        let (nodes, errors): (Vec<Node>, Vec<f64>) = lookups
            .iter()
            .map(|l| {
                let shift = uncenter(&l.input.terms);
                let (window, (coeffs, error)) = match shared.as_ref().and_then(|s| s.get(&l.layer)) {
                    Some(s) => (
                        s.window,
                        layer_fits
                            .entry(&l.layer)
                            .or_insert_with(|| {
                                fit(
                                    s.window,
                                    |z| f64::from(l.f.apply(z.clamp(s.domain.0, s.domain.1) as f32)),
                                    approx,
                                    &s.quantiles,
                                )
                            })
                            .clone(),
                    ),
                    None => {
                        let window = own_window(l, calibrated_windows);
                        (window, fit(window, |z| l.eval(z), approx, &l.quantiles))
                    }
                };
                (Node { input: unit(window_input(l, window, shift)), coeffs, layer: l.layer.clone() }, error)
            })
            .unzip();
        let outputs = n
            .outputs
            .iter()
            .flatten()
            .map(|f| unit(Affine { terms: f.terms.clone(), bias: f.bias + uncenter(&f.terms) }))
            .collect();
        let plan = Plan { version: PLAN_VERSION, n_inputs: n.n_inputs, input_box, nodes, outputs };
        plan.validate().map_err(|e| LowerError::Model(e.to_string()))?;
        Ok((CkksCompiled { plan, preprocess: self.preprocess.clone(), postprocess: self.postprocess.clone() }, errors))
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

/// The polynomials to choose from and the budget the choice must meet.
#[derive(Clone, Debug)]
pub struct CkksSearch {
    /// Polynomial degrees to try, cheapest first.
    pub degrees: Vec<usize>,
    /// How the polynomials may be fitted (the e-graph's rules, see [`crate::poly`]).
    pub fits: Vec<Fit>,
    pub calibrated_windows: bool,
    /// A polynomial per activation layer (false: one for the whole model).
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
        CkksSearch {
            degrees: vec![7, 15, 31, 63],
            fits: vec![Fit::Chebyshev, Fit::LeastSquares],
            calibrated_windows: true,
            per_layer: true,
            packing: Packing::BatchMajor,
            budget_points: s.budget_points,
            error_budget_percent: s.error_budget_percent,
            max_samples: s.max_samples,
            optimize: s.optimize,
        }
    }
}

/// One assignment of polynomials tried by [`choose_ckks`].
#[derive(Clone, Debug)]
pub struct CkksTrial {
    /// Each activation layer's polynomial, in the order of [`CkksChoice::layers`].
    pub approx: Vec<Approx>,
    /// Ring degree (log2) the plan needs; `None` when it fits no ring without bootstrapping.
    pub log_n: Option<usize>,
    /// Estimated time per ciphertext on one thread (a batch of `slots` samples batch-major, of
    /// `slots / block` feature-major).
    pub estimated_ms: f64,
    /// Fidelity on the calibration samples; `None` when not simulated (cheaper assignments kept
    /// the budget, or the plan fits no ring).
    pub fidelity: Option<f64>,
}

impl CkksTrial {
    pub fn degrees(&self) -> Vec<usize> {
        self.approx.iter().map(|a| a.degree).collect()
    }
}

#[derive(Clone, Debug)]
pub struct CkksChoice {
    pub compiled: CkksCompiled,
    /// The activation layers, in the order their polynomials first appear in the plan.
    pub layers: Vec<String>,
    /// The chosen polynomial of each of `layers`.
    pub approx: Vec<Approx>,
    /// Per layer, the candidates the e-graph's rules gave that no other dominated (see
    /// [`crate::poly::pareto`]), with their distance from the function on the calibration inputs.
    pub candidates: Vec<Vec<(Approx, f64)>>,
    /// How many layers each rule rewrote.
    pub rules_fired: Vec<(String, usize)>,
    /// Fidelity to the float model on the calibration samples (as in [`crate::Choice`]).
    pub fidelity: f64,
    pub within_budget: bool,
    pub required: f64,
    /// Every assignment considered, cheapest first.
    pub trials: Vec<CkksTrial>,
    /// Reads outside a window on the calibration samples, with the chosen polynomials.
    pub reads: Reads,
    pub optimization: crate::Optimization,
    pub calibration: (Origin, usize),
    pub packing: Packing,
}

impl CkksChoice {
    pub fn degrees(&self) -> Vec<usize> {
        self.approx.iter().map(|a| a.degree).collect()
    }
}

/// Most assignments of polynomials to layers that [`choose_ckks`] enumerates; models with more
/// activation layers than that allows choose one polynomial for all.
const MAX_ASSIGNMENTS: usize = 256;

/// Lowers `module` for CKKS with the cheapest assignment of polynomials to activation layers whose
/// cleartext simulation keeps the accuracy budget on the calibration samples (the most faithful one,
/// marked as outside the budget, if none does).
///
/// The candidates of each layer come from the e-graph ([`crate::poly`]): every fit in
/// `search.fits` at every degree, less those another candidate dominates on the layer's calibrated
/// inputs. Cost is the estimated time per ciphertext on the ring the plan needs ([`Plan::ring`]):
/// every polynomial's evaluation, and the products by constants, whose price depends on the ring. A
/// degree is worth more than its own polynomials: a lower one on one layer can bring the whole plan
/// within the smaller ring (six times cheaper), so polynomials are chosen per layer, not one for the
/// model. Assignments are simulated cheapest first; the first within the budget is kept.
pub fn choose_ckks(module: &Module, calibration: &Calibration, search: &CkksSearch) -> Result<CkksChoice, LowerError> {
    let (samples, float) = crate::search::reference(module, calibration, search.max_samples)?;
    let grid = grid_steps(&float);
    let classes = float.iter().all(|t| crate::search::class(t).is_some());
    let required = 100.0 - if classes { search.budget_points } else { search.error_budget_percent };
    let prepared = Prepared::for_polynomials(module, calibration, &search.optimize)?;
    if search.degrees.is_empty() || search.fits.is_empty() {
        return Err(LowerError::Model("no polynomial degree or fit to try".into()));
    }
    let mut fits = search.fits.clone();
    fits.sort();
    fits.dedup();
    // The plan with one polynomial everywhere, for each fit and degree; an assignment takes each
    // node from its layer's.
    let all: Vec<Approx> =
        fits.iter().flat_map(|&fit| search.degrees.iter().map(move |&degree| Approx { fit, degree })).collect();
    let uniform: Vec<(CkksCompiled, Vec<f64>)> =
        all.iter().map(|&a| prepared.ckks(a, search.calibrated_windows, search.packing)).collect::<Result<_, _>>()?;
    let mut layers: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    let layer_of: Vec<usize> = uniform[0].0.plan.nodes.iter().map(|n| layers.insert_full(n.layer.clone()).0).collect();
    if search.packing == Packing::FeatureMajor {
        uniform[0].0.plan.layers().map_err(|e| LowerError::Model(e.to_string()))?;
    }
    // Each layer's distance from its function under each uniform plan: the root mean square of its
    // nodes'.
    let layer_errors: Vec<Vec<f64>> = uniform
        .iter()
        .map(|(_, errors)| {
            let (mut sum, mut count) = (vec![0.0; layers.len()], vec![0usize; layers.len()]);
            for (e, &l) in errors.iter().zip(&layer_of) {
                sum[l] += e * e;
                count[l] += 1;
            }
            sum.iter().zip(&count).map(|(s, &c)| (s / c.max(1) as f64).sqrt()).collect()
        })
        .collect();
    let layer_error = |u: usize, layer: usize| layer_errors[u][layer];
    let index_of =
        |a: Approx| all.iter().position(|&b| b == a).expect("the rules offer only the search's fits and degrees");
    let (offered, rules_fired) = crate::poly::candidates(layers.len(), &fits, &search.degrees);
    let kept: Vec<Vec<usize>> = offered
        .iter()
        .enumerate()
        .map(|(l, c)| crate::poly::pareto(c, |a| layer_error(index_of(a), l)).into_iter().map(index_of).collect())
        .collect();
    let assemble = |choice: &[usize]| -> CkksCompiled {
        let mut c = uniform[0].0.clone();
        for (k, node) in c.plan.nodes.iter_mut().enumerate() {
            *node = uniform[choice[layer_of[k]]].0.plan.nodes[k].clone();
        }
        c
    };
    // Every assignment of the layers' kept candidates when there are few, else one polynomial for all.
    let count = kept
        .iter()
        .try_fold(1usize, |n, k| n.checked_mul(k.len()))
        .filter(|&n| n <= MAX_ASSIGNMENTS && search.per_layer);
    let assignments: Vec<Vec<usize>> = match count {
        Some(n) => (0..n)
            .map(|mut i| {
                kept.iter()
                    .map(|k| {
                        let pick = k[i % k.len()];
                        i /= k.len();
                        pick
                    })
                    .collect()
            })
            .collect(),
        None => (0..all.len()).map(|i| vec![i; layers.len()]).collect(),
    };
    let mut candidates: Vec<(CkksTrial, Vec<usize>, f64)> = assignments
        .into_iter()
        .map(|a| {
            let plan = assemble(&a).plan;
            let ring = plan.ring().ok();
            // One ciphertext on one thread.
            let estimated_ms = ring.map_or(f64::INFINITY, |r| plan.estimated_ms(r, search.packing, 1, 1));
            let error: f64 = a.iter().enumerate().map(|(l, &u)| layer_error(u, l)).sum();
            (
                CkksTrial {
                    approx: a.iter().map(|&i| all[i]).collect(),
                    log_n: ring.map(|r| r.log_n),
                    estimated_ms,
                    fidelity: None,
                },
                a,
                error,
            )
        })
        .collect();
    // Cheapest first; at one cost, the assignment closest to the functions on the calibration inputs.
    candidates.sort_by(|a, b| a.0.estimated_ms.total_cmp(&b.0.estimated_ms).then_with(|| a.2.total_cmp(&b.2)));
    let mut best: Option<(f64, usize, CkksCompiled, Reads)> = None;
    for (i, (trial, a, _)) in candidates.iter_mut().enumerate() {
        // Plans that fit no ring sort last: one is simulated only when none fits (the build then
        // fails, naming where its deepest path ends).
        if trial.log_n.is_none() && best.is_some() {
            continue;
        }
        let compiled = assemble(a);
        let mut reads = Reads::default();
        let got: Vec<Tensor> = samples
            .iter()
            .map(|x| compiled.simulate(x, &mut reads).map(|mut o| o.swap_remove(0)))
            .collect::<Result<_, _>>()?;
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
    let approx = candidates[i].0.approx.clone();
    let trials = candidates.into_iter().map(|c| c.0).collect();
    let candidates =
        kept.iter().enumerate().map(|(l, k)| k.iter().map(|&u| (all[u], layer_error(u, l))).collect()).collect();
    Ok(CkksChoice {
        compiled,
        layers: layers.into_iter().collect(),
        approx,
        candidates,
        rules_fired,
        fidelity,
        within_budget: fidelity >= required,
        required,
        trials,
        reads,
        optimization: prepared.optimization.clone(),
        calibration: (calibration.origin().clone(), samples.len()),
        packing: search.packing,
    })
}
