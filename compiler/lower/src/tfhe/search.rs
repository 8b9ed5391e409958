//! Choosing the parameter set and precision by measured accuracy.
//!
//! Every candidate (parameter set, weight bits on bootstrap outputs, output weight cap) is compiled and
//! run in noisy simulation (the parameter set's noise model) on the calibration samples; its fidelity
//! is how well it reproduces the float model there. Per set, the best candidate's weight bits are then
//! refined layer by layer. The cheapest parameter set (bootstrap time) whose best candidate stays
//! within the accuracy budget wins; if none does, the cheapest within the budget's width of the most
//! faithful one wins and the choice says so. Candidates are scored with the noise inflated by
//! `Search::noise_margin`.
//!
//! Fidelity: class agreement for classifiers (on a quantized output, a class one step from the best
//! agrees), relative error for continuous outputs. On synthetic samples (a pre-quantized model
//! compiled without calibration data), classes mean nothing: a quantized output is scored by the
//! share of its values within one quantization step, another by its relative error, both against
//! the error budget. On a quantized output, equal fidelity is broken by that share.

use super::Compiled;
use super::{Options, TableRanges};
use crate::fidelity::{Steps, class, fidelity, grid_steps, reference, relative_fidelity, steps};
use crate::{Calibration, Engine, LowerError, Origin, Prepared};
use fhec_ir::{Module, Tensor};
use fhec_runtime::{Noise, ParamSet};

/// What the search may choose from and the budget it must meet.
#[derive(Clone, Debug)]
pub struct Search {
    /// Parameter sets to try, cheapest first (default: all).
    pub params: Vec<ParamSet>,
    /// Weight bits on bootstrap outputs to try (default 3 to 7).
    pub weight_bits: Vec<u32>,
    /// Output weight caps to try.
    pub output_weight_max: Vec<f64>,
    pub failure_log2: f64,
    /// What each table's positions cover (every candidate).
    pub table_ranges: TableRanges,
    /// Points of accuracy the compiled model may lose against the float model on the calibration set.
    pub budget_points: f64,
    /// For continuous outputs: the RMS error the compiled model may add, in percent of the output's
    /// spread over the calibration set.
    pub error_budget_percent: f64,
    /// Calibration samples simulated per candidate (the first ones).
    pub max_samples: usize,
    /// Noisy simulations per candidate: samples are repeated with fresh noise until there are this
    /// many, so that rare noise events show on small calibration sets (fewer for a circuit of over
    /// `MAX_SIMULATED_BOOTSTRAPS` / `min_runs` bootstraps).
    pub min_runs: usize,
    /// Candidates are scored with every noise standard deviation multiplied by this: encrypted runs
    /// on the 512-position sets were measured up to ~1.3x noisier end to end than the model, though
    /// each component matches tfhe-rs's formulas within 5% (`runtime/tests/fhe.rs`).
    pub noise_margin: f64,
    /// The engine that simulates candidates (same results; `Engine::Auto` takes the JIT when the
    /// runs repay its compile time).
    pub engine: Engine,
    /// The e-graph optimizer's level and limits (`fhec_passes::optimize`).
    pub optimize: crate::optimize::Config,
}

/// Noisy bootstraps simulated per candidate, at most (see `choose`): build time grows with them, and a
/// rare noise event is drawn as often whether it comes from many runs of a small circuit or fewer of
/// a large one. The corpus's circuits (at most 1,408 bootstraps) keep their 2000 runs.
pub const MAX_SIMULATED_BOOTSTRAPS: usize = 1 << 22;

/// Every candidate is first screened on this fraction of its noisy runs (the first ones); one more
/// than `SCREEN_SLACK` points below the budget there is not run further and keeps that estimate (a
/// candidate within the budget falls that far on a screen of `min_runs / 8` runs with negligible
/// probability). The others run in full from the same noise seed, so their scores do not depend on
/// the screen. A search where no candidate comes near the budget then costs an eighth.
const SCREEN: usize = 8;
const SCREEN_SLACK: f64 = 5.0;

impl Default for Search {
    fn default() -> Search {
        Search {
            params: ParamSet::ALL.to_vec(),
            weight_bits: vec![3, 4, 5, 6, 7],
            output_weight_max: vec![2.0, 8.0, 32.0],
            failure_log2: -40.0,
            table_ranges: TableRanges::default(),
            // A flip costs 1 / (test set size): 0.2 points keeps small test sets (45 wine samples)
            // at the float model's accuracy in most runs.
            budget_points: 0.2,
            error_budget_percent: 5.0,
            max_samples: 300,
            min_runs: 2000,
            noise_margin: 1.3,
            engine: Engine::Auto,
            optimize: crate::optimize::Config::default(),
        }
    }
}

/// One candidate tried.
#[derive(Clone, Debug)]
pub struct Trial {
    pub options: Options,
    pub pbs: usize,
    /// Fidelity in percent: agreement with the float model's class (classifiers) or `100 (1 - e)`
    /// with `e` the RMS error relative to the output's spread (continuous outputs); `None` if the
    /// candidate does not compile (too noisy).
    pub fidelity: Option<f64>,
    /// Noisy runs the fidelity was measured on: fewer than the search's where the screen ruled the
    /// candidate out (see `Choice::runs`).
    pub runs: usize,
}

pub struct Choice {
    pub compiled: Compiled,
    pub chosen: Options,
    /// Fidelity of the chosen candidate, in percent.
    pub fidelity: f64,
    /// Whether it meets the budget.
    pub within_budget: bool,
    /// Minimum fidelity the budget requires, in percent.
    pub required: f64,
    pub trials: Vec<Trial>,
    /// Noisy runs a candidate is scored on in full (samples repeated with fresh noise).
    pub runs: usize,
    /// Why candidates were simulated with the interpreter though the JIT was asked for (the first
    /// reason), if they were.
    pub jit_fallback: Option<String>,
    /// What the optimizer did before the search.
    pub optimization: crate::Optimization,
    /// Where the input box and the search's samples came from, and how many samples were scored.
    pub calibration: (Origin, usize),
    /// On a quantized output (a pre-quantized model's), the chosen candidate's distance to the float
    /// model in quantization steps, over the scored samples (noisy simulation).
    pub steps: Option<Steps>,
}

/// How candidates are scored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Score {
    /// [`fidelity`]: classes, or the relative error of a continuous output.
    Fidelity,
    /// On synthetic samples (a pre-quantized model compiled without data), whose classes mean
    /// nothing and sit near ties far more often than real data's: the relative error of the scores,
    /// or on a quantized output, the share of values within one quantization step (the model's own
    /// resolution).
    Relative,
    Steps,
}

/// What [`choose`] reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The circuit's size, estimated before the float reference runs and any candidate is compiled
    /// (once).
    Estimated(&'a crate::size::Size),
    /// A candidate tried (once each).
    Tried(&'a Trial),
}

/// Compiles `module` for the cheapest parameter set that keeps its accuracy (see the module docs),
/// reporting its estimated size, then each candidate, to `progress`.
pub fn choose(
    module: &Module,
    calibration: &Calibration,
    search: &Search,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Choice, LowerError> {
    // Prepared first: a model too large is refused before the float reference runs on it.
    let prepared = Prepared::new(module, calibration, &search.optimize)?;
    progress(Progress::Estimated(&prepared.optimization.size));
    let (samples, float) = reference(module, calibration, search.max_samples)?;
    let continuous = !float.iter().all(|t| class(t).is_some());
    let synthetic = matches!(calibration.origin(), Origin::InputQuantizer { .. });
    // The reference's grid, once: `reference` repeats `float`.
    let grid = grid_steps(&float);
    let quantized_output = grid.iter().all(Option::is_some);
    let score = match (synthetic, quantized_output) {
        (false, _) => Score::Fidelity,
        (true, false) => Score::Relative,
        (true, true) => Score::Steps,
    };
    // A large circuit runs fewer repeats: as many noisy bootstraps per candidate as 2000 runs of a
    // 2,000-bootstrap model draw, and never fewer than one run per sample.
    let min_runs = search.min_runs.min(MAX_SIMULATED_BOOTSTRAPS / prepared.optimization.size.bootstraps.max(1));
    let repeats = min_runs.div_ceil(samples.len().max(1)).max(1);
    let reference: Vec<Tensor> = float.iter().cycle().take(repeats * float.len()).cloned().collect();
    let required =
        100.0 - if continuous || score != Score::Fidelity { search.error_budget_percent } else { search.budget_points };
    let mut trials = Vec::new();
    let mut last_err = None;
    let mut jit_fallback = None;
    let pre = prepared.preprocessed(samples)?;
    let runs: Vec<Tensor> = pre.iter().cycle().take(repeats * pre.len()).cloned().collect();
    // Candidates already simulated, with their outputs.
    let mut scored: Vec<([u8; 32], Vec<Tensor>)> = Vec::new();
    let screen = (repeats / SCREEN).max(1) * pre.len();
    // A candidate's fidelity and steps on the first `got.len()` runs.
    let score_of = |got: &[Tensor]| {
        let want = &reference[..got.len()];
        let steps = steps(want, got, &grid);
        let fidelity = match (score, steps) {
            (Score::Steps, Some(s)) => s.within_one,
            (Score::Relative, _) => relative_fidelity(want, got),
            _ => fidelity(want, got, &grid),
        };
        (fidelity, steps)
    };
    // Compiles and scores one candidate; records the trial.
    let mut evaluate = |options: Options, trials: &mut Vec<Trial>| -> Result<Option<Candidate>, LowerError> {
        let (trial, candidate) = match prepared.tfhe(&options) {
            Ok(compiled) => {
                // Equal circuits and codes simulate to equal results (one noise seed for all), so a
                // candidate equal to one already scored is not simulated again.
                let digest =
                    fhec_runtime::artifact::compiled_digest(&compiled.circuit, &compiled.inputs, &compiled.outputs);
                let got = match scored.iter().find(|(d, _)| *d == digest) {
                    Some((_, got)) => got.clone(),
                    None => {
                        let mut got = None;
                        if screen < runs.len() {
                            let (first, fallback) = simulate_runs(&compiled, &runs[..screen], pre.len(), search)?;
                            jit_fallback = jit_fallback.take().or(fallback);
                            if score_of(&first).0 < required - SCREEN_SLACK {
                                got = Some(first);
                            }
                        }
                        let got = match got {
                            Some(g) => g,
                            None => {
                                let (all, fallback) = simulate_runs(&compiled, &runs, pre.len(), search)?;
                                jit_fallback = jit_fallback.take().or(fallback);
                                all
                            }
                        };
                        scored.push((digest, got.clone()));
                        got
                    }
                };
                let (fidelity, steps) = score_of(&got);
                let trial = Trial {
                    options: options.clone(),
                    pbs: compiled.pbs_count(),
                    fidelity: Some(fidelity),
                    runs: got.len(),
                };
                (trial, Some(Candidate { fidelity, steps, compiled, options }))
            }
            Err(e @ LowerError::Noise { .. }) => {
                last_err = Some(e);
                (Trial { options, pbs: 0, fidelity: None, runs: 0 }, None)
            }
            Err(e) => return Err(e),
        };
        progress(Progress::Tried(&trial));
        trials.push(trial);
        Ok(candidate)
    };
    // Each set's best candidate, cheapest set first.
    let mut per_set: Vec<Candidate> = Vec::new();
    for &params in &search.params {
        let mut here: Option<Candidate> = None;
        for &weight_bits in &search.weight_bits {
            for &output_weight_max in &search.output_weight_max {
                let options = Options {
                    params,
                    weight_bits,
                    layer_weight_bits: Vec::new(),
                    output_weight_max,
                    failure_log2: search.failure_log2,
                    table_ranges: search.table_ranges,
                    bias_correction: true,
                };
                if let Some(c) = evaluate(options, &mut trials)?
                    && here.as_ref().is_none_or(|b| c.better_than(b))
                {
                    here = Some(c);
                }
            }
        }
        // Per-layer precision: each layer's weight bits one up or one down, kept when the fidelity
        // improves (layers differ in fan-in and in how much their noise matters downstream).
        if let Some(h) = here.as_mut()
            && (h.fidelity < 100.0 || h.steps.is_some_and(|s| s.within_one < 100.0))
            && search.weight_bits.len() > 1
        {
            for layer in h.compiled.circuit.layers.clone() {
                for delta in [-1i32, 1] {
                    let bits = h.options.weight_bits_of(&layer) as i32 + delta;
                    if !(2..=10).contains(&bits) {
                        continue;
                    }
                    let mut options = h.options.clone();
                    options.layer_weight_bits.retain(|(l, _)| *l != layer);
                    options.layer_weight_bits.push((layer.clone(), bits as u32));
                    if let Some(c) = evaluate(options, &mut trials)?
                        && c.better_than(h)
                    {
                        *h = c;
                    }
                }
            }
        }
        if let Some(h) = here {
            if h.fidelity >= required {
                return Ok(Choice {
                    compiled: h.compiled,
                    chosen: h.options,
                    fidelity: h.fidelity,
                    within_budget: true,
                    required,
                    trials,
                    runs: runs.len(),
                    jit_fallback,
                    optimization: prepared.optimization.clone(),
                    calibration: (calibration.origin().clone(), samples.len()),
                    steps: h.steps,
                });
            }
            per_set.push(h);
        }
    }
    // None within budget: the cheapest set within the budget's width of the most faithful one (the
    // estimates differ by noise at that scale).
    let best = per_set.iter().map(|c| c.fidelity).fold(f64::NEG_INFINITY, f64::max);
    match per_set.into_iter().find(|c| c.fidelity >= best - (100.0 - required)) {
        Some(b) => Ok(Choice {
            compiled: b.compiled,
            chosen: b.options,
            fidelity: b.fidelity,
            within_budget: false,
            required,
            trials,
            runs: runs.len(),
            jit_fallback,
            optimization: prepared.optimization.clone(),
            calibration: (calibration.origin().clone(), samples.len()),
            steps: b.steps,
        }),
        None => Err(match last_err {
            Some(e) => e,
            None => LowerError::Model("no parameter set to try".into()),
        }),
    }
}

/// Every run's first output, with the noise model inflated by the search's margin, and why the JIT
/// was not used where it was asked for. Noise enters only at bootstraps: a circuit without any is
/// deterministic, so each of the `distinct` samples (`runs` cycles them) is simulated once and its
/// outputs repeated over the cycle.
fn simulate_runs(
    compiled: &Compiled,
    runs: &[Tensor],
    distinct: usize,
    search: &Search,
) -> Result<(Vec<Tensor>, Option<String>), LowerError> {
    let first = |outs: Vec<Vec<Tensor>>| outs.into_iter().map(|mut o| o.swap_remove(0)).collect::<Vec<Tensor>>();
    if compiled.pbs_count() == 0 {
        let (sim, fallback) = compiled.simulator(search.engine, distinct);
        let once = first(compiled.simulate_all(&sim, &runs[..distinct], Noise::None)?);
        return Ok((once.iter().cycle().take(runs.len()).cloned().collect(), fallback));
    }
    let mut rng = Noise::rng(0x5eed);
    let (sim, fallback) = compiled.simulator(search.engine, runs.len());
    Ok((first(compiled.simulate_all(&sim, runs, Noise::Inflated(&mut rng, search.noise_margin))?), fallback))
}

struct Candidate {
    fidelity: f64,
    steps: Option<Steps>,
    compiled: Compiled,
    options: Options,
}

impl Candidate {
    /// More faithful; at equal fidelity, on a quantized output, closer to it in steps (a pre-quantized
    /// classifier's classes often agree at every precision while its scores do not).
    fn better_than(&self, other: &Candidate) -> bool {
        match (self.steps, other.steps) {
            (Some(a), Some(b)) if self.fidelity == other.fidelity => a.within_one > b.within_one,
            _ => self.fidelity > other.fidelity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let len = fhec_ir::numel(&shape);
        (0..n)
            .map(|i| {
                Tensor::from_f32(shape.clone(), (0..len).map(|j| ((i * 7 + j * 3) % 17) as f32 / 4.0 - 2.0).collect())
                    .unwrap()
            })
            .collect()
    }

    const MLP: &str = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,3]\n%1 = const #0 : clear<f32>[3,4]\n%2 = matmul %0, %1 : enc<f32>[1,4]\n%3 = relu %2 : enc<f32>[1,4]\n%4 = const #1 : clear<f32>[4,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1, 1.0, 0.3, -0.4, 0.6, 0.9, -1.2]\ndata #1 = [1.5, -0.5, 0.7, 1.1]\n";

    #[test]
    fn a_loose_budget_takes_the_cheapest_set_and_an_impossible_one_the_most_faithful() {
        let m: Module = MLP.parse().unwrap();
        let xs = Calibration::from_samples(inputs(&m, 64)).unwrap();
        let search = Search { min_runs: 500, ..Search::default() };
        // The cheapest set.
        let first = ParamSet::ALL[0];
        let loose = choose(&m, &xs, &Search { error_budget_percent: 100.0, ..search.clone() }, |_| ()).unwrap();
        assert_eq!(loose.chosen.params, first);
        assert!(loose.within_budget);
        // A continuous output never reproduces the float model exactly: with no budget, nothing fits
        // and the most faithful candidate is kept.
        let mut tried = 0;
        let strict = choose(&m, &xs, &Search { error_budget_percent: 0.0, ..search }, |p| {
            tried += usize::from(matches!(p, Progress::Tried(_)))
        })
        .unwrap();
        assert!(!strict.within_budget);
        let best = strict.trials.iter().filter_map(|t| t.fidelity).fold(0.0, f64::max);
        assert_eq!(strict.fidelity, best);
        assert!(strict.fidelity > loose.fidelity || strict.chosen.params == first);
        assert_eq!(tried, strict.trials.len());
    }

    #[test]
    fn candidates_far_below_the_budget_are_screened_on_an_eighth_of_their_runs() {
        let m: Module = MLP.parse().unwrap();
        let xs = Calibration::from_samples(inputs(&m, 64)).unwrap();
        // Noise inflated 100x: no candidate comes near a 5% error budget.
        let search = Search { min_runs: 512, noise_margin: 100.0, ..Search::default() };
        let far = choose(&m, &xs, &search, |_| ()).unwrap();
        assert_eq!(far.runs, 512);
        let scored: Vec<&Trial> = far.trials.iter().filter(|t| t.fidelity.is_some()).collect();
        assert!(scored.len() > 5);
        for t in scored {
            assert_eq!(t.runs, 64, "{t:?}");
            assert!(t.fidelity.unwrap() < far.required - SCREEN_SLACK, "{t:?}");
        }
        // With no budget to miss, every candidate runs in full.
        let loose = choose(&m, &xs, &Search { error_budget_percent: 100.0, ..search }, |_| ()).unwrap();
        assert!(loose.trials.iter().filter(|t| t.fidelity.is_some()).all(|t| t.runs == 512));
    }
}
