//! Choosing the parameter set and precision by measured accuracy.
//!
//! Every candidate (parameter set, weight bits on bootstrap outputs, output weight cap) is compiled and
//! run in noisy simulation (the parameter set's noise model) on the calibration samples; its fidelity
//! is how well it reproduces the float model there. The cheapest parameter set (bootstrap time) whose
//! best candidate stays within the accuracy budget wins; if none does, the most faithful candidate
//! wins and the choice says so.

use crate::{Compiled, LowerError, Options, compile};
use fhec_ir::{DType, Module, Tensor};
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
    /// Points of accuracy the compiled model may lose against the float model on the calibration set.
    pub budget_points: f64,
    /// Calibration samples simulated per candidate (the first ones).
    pub max_samples: usize,
    /// Noisy simulations per candidate: samples are repeated with fresh noise until there are this
    /// many, so that rare noise events show on small calibration sets.
    pub min_runs: usize,
}

impl Default for Search {
    fn default() -> Search {
        Search {
            params: ParamSet::ALL.to_vec(),
            weight_bits: vec![3, 4, 5, 6, 7],
            output_weight_max: vec![2.0, 8.0, 32.0],
            failure_log2: -40.0,
            budget_points: 1.0,
            max_samples: 300,
            min_runs: 2000,
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
}

/// The class a model output names: an integer label, the argmax of a score vector, or `None` for a
/// single continuous value.
fn class(t: &Tensor) -> Option<i64> {
    match t.dtype() {
        DType::I64 => t.to_i64_vec().first().copied(),
        DType::F32 => {
            let v = t.to_f32_vec();
            (v.len() > 1).then(|| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as i64))
        }
    }
}

/// Fidelity of `got` to `want` (first model output per sample), in percent.
fn fidelity(want: &[Tensor], got: &[Tensor]) -> f64 {
    if want.iter().all(|t| class(t).is_some()) {
        let same = want.iter().zip(got).filter(|(w, g)| class(w) == class(g)).count();
        return 100.0 * same as f64 / want.len().max(1) as f64;
    }
    let w: Vec<f64> = want.iter().flat_map(|t| t.to_f32_vec()).map(f64::from).collect();
    let g: Vec<f64> = got.iter().flat_map(|t| t.to_f32_vec()).map(f64::from).collect();
    let mean = w.iter().sum::<f64>() / w.len().max(1) as f64;
    let spread = (w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt().max(1e-12);
    let rmse = (w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt();
    100.0 * (1.0 - rmse / spread).max(0.0)
}

/// Compiles `module` for the cheapest parameter set that keeps its accuracy (see the module docs).
/// `progress` is called once per candidate.
pub fn choose(module: &Module, calibration: &[Tensor], search: &Search, mut progress: impl FnMut(&Trial)) -> Result<Choice, LowerError> {
    let samples = &calibration[..calibration.len().min(search.max_samples)];
    let float: Vec<Tensor> = samples
        .iter()
        .map(|x| fhec_interp::run(module, std::slice::from_ref(x)).map(|mut o| o.swap_remove(0)))
        .collect::<Result<_, _>>()
        .map_err(|e| LowerError::Model(format!("float reference on the calibration samples: {e}")))?;
    let continuous = !float.iter().all(|t| class(t).is_some());
    let repeats = search.min_runs.div_ceil(samples.len().max(1)).max(1);
    let reference: Vec<Tensor> = float.iter().cycle().take(repeats * float.len()).cloned().collect();
    // Classifiers may lose `budget` points of agreement; continuous outputs `5 * budget` percent of
    // their spread as RMS error.
    let required = 100.0 - if continuous { 5.0 } else { 1.0 } * search.budget_points;
    let mut trials = Vec::new();
    let mut best: Option<(f64, Compiled, Options)> = None;
    let mut last_err = None;
    for &params in &search.params {
        let mut best_here: Option<(f64, Compiled, Options)> = None;
        for &weight_bits in &search.weight_bits {
            for &output_weight_max in &search.output_weight_max {
                let options = Options { params, weight_bits, output_weight_max, failure_log2: search.failure_log2 };
                let trial = match compile(module, calibration, &options) {
                    Ok(c) => {
                        let mut rng = Noise::rng(0x5eed);
                        let got = samples
                            .iter()
                            .cycle()
                            .take(repeats * samples.len())
                            .map(|x| c.simulate(x, Noise::Gaussian(&mut rng)).map(|mut o| o.swap_remove(0)))
                            .collect::<Result<Vec<_>, _>>()?;
                        let f = fidelity(&reference, &got);
                        let trial = Trial { options: options.clone(), pbs: c.pbs_count(), fidelity: Some(f) };
                        if best_here.as_ref().is_none_or(|b| f > b.0) {
                            best_here = Some((f, c, options));
                        }
                        trial
                    }
                    Err(e @ LowerError::Noise { .. }) => {
                        last_err = Some(e);
                        Trial { options, pbs: 0, fidelity: None }
                    }
                    Err(e) => return Err(e),
                };
                progress(&trial);
                trials.push(trial);
            }
        }
        if let Some((f, compiled, chosen)) = best_here {
            if f >= required {
                return Ok(Choice { compiled, chosen, fidelity: f, within_budget: true, required, trials });
            }
            if best.as_ref().is_none_or(|b| f > b.0) {
                best = Some((f, compiled, chosen));
            }
        }
    }
    match best {
        Some((fidelity, compiled, chosen)) => Ok(Choice { compiled, chosen, fidelity, within_budget: false, required, trials }),
        None => Err(last_err.unwrap_or_else(|| LowerError::Model("no parameter set to try".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let len = fhec_ir::numel(&shape);
        (0..n).map(|i| Tensor::from_f32(shape.clone(), (0..len).map(|j| ((i * 7 + j * 3) % 17) as f32 / 4.0 - 2.0).collect()).unwrap()).collect()
    }

    const MLP: &str = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,3]\n%1 = const #0 : clear<f32>[3,4]\n%2 = matmul %0, %1 : enc<f32>[1,4]\n%3 = relu %2 : enc<f32>[1,4]\n%4 = const #1 : clear<f32>[4,2]\n%5 = matmul %3, %4 : enc<f32>[1,2]\noutput \"y\" = %5\ndata #0 = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1, 1.0, 0.3, -0.4, 0.6, 0.9, -1.2]\ndata #1 = [1.5, -0.5, 0.7, 1.1, -0.3, 0.8, 0.2, -0.9]\n";

    #[test]
    fn a_loose_budget_takes_the_cheapest_set_and_a_strict_one_pays_for_precision() {
        let m: Module = MLP.parse().unwrap();
        let xs = inputs(&m, 64);
        let search = Search { min_runs: 500, ..Search::default() };
        let loose = choose(&m, &xs, &Search { budget_points: 100.0, ..search.clone() }, |_| ()).unwrap();
        assert_eq!(loose.chosen.params, ParamSet::ALL[0]);
        assert!(loose.within_budget);
        let mut tried = 0;
        let strict = choose(&m, &xs, &Search { budget_points: 0.0, ..search }, |_| tried += 1).unwrap();
        // The cheapest set's noise costs agreement on this model: a strict budget moves on.
        let first_best = strict.trials.iter().filter(|t| t.options.params == ParamSet::ALL[0]).filter_map(|t| t.fidelity).fold(0.0, f64::max);
        assert!(first_best < 100.0, "{first_best}");
        assert_ne!(strict.chosen.params, ParamSet::ALL[0]);
        assert!(strict.fidelity > first_best);
        assert_eq!(tried, strict.trials.len());
    }

    #[test]
    fn fidelity_is_class_agreement_or_relative_error() {
        let t = |v: &[f32]| Tensor::from_f32(vec![1, v.len()], v.to_vec()).unwrap();
        assert_eq!(fidelity(&[t(&[1.0, 2.0]), t(&[3.0, 0.0])], &[t(&[0.0, 5.0]), t(&[0.0, 1.0])]), 50.0);
        let f = fidelity(&[t(&[1.0]), t(&[-1.0])], &[t(&[1.1]), t(&[-1.1])]);
        assert!((f - 90.0).abs() < 1e-4, "{f}");
    }
}
