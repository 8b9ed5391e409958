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
//! like the TFHE parameter set, among the candidates `poly` offers: the cheapest whose
//! simulated fidelity on the calibration samples stays within the accuracy budget (`search`).
//!
//! The peer of [`crate::tfhe`], of the same shape: `Search`, `Trial`, `Choice`, `Compiled`, `choose`.

use crate::neurons::Lookup;
use crate::poly::{Approx, Fit};
mod search;

pub use search::{Choice, Search, Trial, choose};

use crate::{LowerError, Prepared};
use fhec_ckks::{Affine, Node, PLAN_VERSION, Packing, Plan, Reads, cheb};
use fhec_ir::{Module, Tensor};
use std::collections::HashMap;

/// A model lowered for CKKS: the plan the server evaluates and the client's pre- and post-processing.
#[derive(Clone, Debug)]
pub struct Compiled {
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
    ) -> Result<(Compiled, Vec<f64>), LowerError> {
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
        Ok((Compiled { plan, preprocess: self.preprocess.clone(), postprocess: self.postprocess.clone() }, errors))
    }
}

impl Compiled {
    /// One sample (shaped like the model input) as the plan's input values: see [`encode`].
    pub fn encode(&self, x: &Tensor) -> Result<Vec<f64>, LowerError> {
        encode(self.preprocess.as_ref(), x)
    }

    /// The plan's outputs for one sample through the client's post-processing: see [`decode`].
    pub fn decode(&self, values: &[f64]) -> Result<Vec<Tensor>, LowerError> {
        decode(&self.postprocess, values)
    }

    /// Encode, evaluate in the clear, decode; reads outside a window are counted into `reads`.
    pub fn simulate(&self, x: &Tensor, reads: &mut Reads) -> Result<Vec<Tensor>, LowerError> {
        let values = self.plan.eval(&self.encode(x)?, reads).map_err(|e| LowerError::Client(e.to_string()))?;
        self.decode(&values)
    }
}

/// One sample (shaped like the model input) as a plan's input values: the client's pre-processing,
/// if any, flattened. The client clamps them into the plan's box when it encrypts.
pub fn encode(preprocess: Option<&Module>, x: &Tensor) -> Result<Vec<f64>, LowerError> {
    let x = match preprocess {
        Some(p) => crate::head::apply(p, x).map_err(LowerError::Client)?,
        None => x.clone(),
    };
    Ok(x.to_f32_vec().into_iter().map(f64::from).collect())
}

/// A plan's outputs for one sample through the client's post-processing: the model's outputs.
pub fn decode(postprocess: &Module, values: &[f64]) -> Result<Vec<Tensor>, LowerError> {
    crate::postprocess(postprocess, values)
}
