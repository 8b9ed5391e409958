//! Choosing each activation layer's polynomial (fit and degree) by estimated cost and simulated
//! accuracy: the CKKS counterpart of the TFHE parameter search.

use super::Compiled;
use crate::fidelity::{fidelity, grid_steps, relative_fidelity};
use crate::poly::{Approx, Fit};
use crate::{Calibration, LowerError, Origin, Prepared};
use fhec_ckks::{Packing, Reads};
use fhec_ir::{Module, Tensor};

/// The polynomials to choose from and the budget the choice must meet.
#[derive(Clone, Debug)]
pub struct Search {
    /// Polynomial degrees to try, cheapest first.
    pub degrees: Vec<usize>,
    /// How the polynomials may be fitted (see [`crate::poly`]).
    pub fits: Vec<Fit>,
    pub calibrated_windows: bool,
    /// A polynomial per activation layer (false: one for the whole model).
    pub per_layer: bool,
    /// How samples sit in the slots; feature-major shares one window per layer.
    pub packing: Packing,
    /// As in [`crate::tfhe::Search`].
    pub budget_points: f64,
    pub error_budget_percent: f64,
    pub max_samples: usize,
    pub optimize: crate::optimize::Config,
}

impl Default for Search {
    fn default() -> Search {
        let s = crate::tfhe::Search::default();
        Search {
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

/// One assignment of polynomials tried by [`choose`].
#[derive(Clone, Debug)]
pub struct Trial {
    /// Each activation layer's polynomial, in the order of [`Choice::layers`].
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

impl Trial {
    pub fn degrees(&self) -> Vec<usize> {
        self.approx.iter().map(|a| a.degree).collect()
    }
}

#[derive(Clone, Debug)]
pub struct Choice {
    pub compiled: Compiled,
    /// The activation layers, in the order their polynomials first appear in the plan.
    pub layers: Vec<String>,
    /// The chosen polynomial of each of `layers`.
    pub approx: Vec<Approx>,
    /// Per layer, the candidates offered (see [`crate::poly`]) that no other dominated (see
    /// [`crate::poly::pareto`]), with their distance from the function on the calibration inputs.
    pub candidates: Vec<Vec<(Approx, f64)>>,
    /// How many layers each rule rewrote.
    pub rules_fired: Vec<(String, usize)>,
    /// Fidelity to the float model on the calibration samples (as in [`crate::tfhe::Choice`]).
    pub fidelity: f64,
    pub within_budget: bool,
    pub required: f64,
    /// Every assignment considered, cheapest first.
    pub trials: Vec<Trial>,
    /// Reads outside a window on the calibration samples, with the chosen polynomials.
    pub reads: Reads,
    pub optimization: crate::Optimization,
    pub calibration: (Origin, usize),
    pub packing: Packing,
}

impl Choice {
    pub fn degrees(&self) -> Vec<usize> {
        self.approx.iter().map(|a| a.degree).collect()
    }
}

/// Most assignments of polynomials to layers that [`choose`] enumerates; models with more
/// activation layers than that allows choose one polynomial for all.
const MAX_ASSIGNMENTS: usize = 256;

/// Lowers `module` for CKKS with the cheapest assignment of polynomials to activation layers whose
/// cleartext simulation keeps the accuracy budget on the calibration samples (the most faithful one,
/// marked as outside the budget, if none does).
///
/// The candidates of each layer come from [`crate::poly`]: every fit in
/// `search.fits` at every degree, less those another candidate dominates on the layer's calibrated
/// inputs. Cost is the estimated time per ciphertext on the ring the plan needs ([`fhec_ckks::Plan::ring`]):
/// every polynomial's evaluation, and the products by constants, whose price depends on the ring. A
/// degree is worth more than its own polynomials: a lower one on one layer can bring the whole plan
/// within the smaller ring (six times cheaper), so polynomials are chosen per layer, not one for the
/// model. Assignments are simulated cheapest first; the first within the budget is kept.
pub fn choose(module: &Module, calibration: &Calibration, search: &Search) -> Result<Choice, LowerError> {
    // Prepared first: a model too large is refused before the float reference runs on it.
    let prepared = Prepared::for_polynomials(module, calibration, &search.optimize)?;
    let (samples, float) = crate::fidelity::reference(module, calibration, search.max_samples)?;
    let grid = grid_steps(&float);
    let classes = float.iter().all(|t| crate::fidelity::class(t).is_some());
    let required = 100.0 - if classes { search.budget_points } else { search.error_budget_percent };
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
    let uniform: Vec<(Compiled, Vec<f64>)> =
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
    let assemble = |choice: &[usize]| -> Compiled {
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
    let mut candidates: Vec<(Trial, Vec<usize>, f64)> = assignments
        .into_iter()
        .map(|a| {
            let plan = assemble(&a).plan;
            let ring = plan.ring().ok();
            // One ciphertext on one thread.
            let estimated_ms = ring.map_or(f64::INFINITY, |r| plan.estimated_ms(r, search.packing, 1, 1));
            let error: f64 = a.iter().enumerate().map(|(l, &u)| layer_error(u, l)).sum();
            (
                Trial {
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
    let mut best: Option<(f64, usize, Compiled, Reads)> = None;
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
    Ok(Choice {
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
