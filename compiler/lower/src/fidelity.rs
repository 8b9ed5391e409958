//! How faithful a compiled model is to the float model, for both schemes' searches: the float
//! reference on the calibration samples, the class a model output names, fidelity (class agreement
//! or relative error), and, on a quantized output, the distance in quantization steps.

use crate::{Calibration, LowerError};
use fhec_ir::{DType, Module, Tensor};

/// The class a model output names: an integer label, the argmax of a score vector, or `None` for a
/// single continuous value.
pub(crate) fn class(t: &Tensor) -> Option<i64> {
    match t.dtype() {
        DType::I64 => t.to_i64_vec().first().copied(),
        DType::F32 => {
            let v = t.to_f32_vec();
            (v.len() > 1).then(|| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as i64))
        }
    }
}

/// The grid step of each element of the reference outputs when they lie on one (a quantized output,
/// such as a pre-quantized model's final DequantizeLinear makes): the smallest gap between distinct
/// values, when there are at least three and all sit on multiples of it. `None` for continuous values.
pub(crate) fn grid_steps(want: &[Tensor]) -> Vec<Option<f64>> {
    let n = want.first().map_or(0, Tensor::numel);
    let values: Vec<Vec<f32>> = want.iter().map(Tensor::to_f32_vec).collect();
    (0..n)
        .map(|j| {
            let mut v: Vec<f64> = values.iter().filter_map(|w| w.get(j)).map(|&x| f64::from(x)).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            let gap = v.windows(2).map(|p| p[1] - p[0]).fold(f64::INFINITY, f64::min);
            if v.len() < 3 || !gap.is_finite() || gap <= 0.0 {
                return None;
            }
            // The smallest gap carries the values' rounding error: the step from the whole span.
            let span = v[v.len() - 1] - v[0];
            let gap = span / (span / gap).round();
            let on_grid = v.iter().all(|x| {
                let k = (x - v[0]) / gap;
                (k - k.round()).abs() < 0.01
            });
            on_grid.then_some(gap)
        })
        .collect()
}

/// How far a quantized output (see `grid_steps`) is from the float model, in its own steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steps {
    /// Percent of output values within one step.
    pub within_one: f64,
    /// The largest distance, in steps.
    pub max: f64,
}

/// `None` unless every element of the reference outputs lies on a grid (`grid`: [`grid_steps`] of
/// `want`).
pub(crate) fn steps(want: &[Tensor], got: &[Tensor], grid: &[Option<f64>]) -> Option<Steps> {
    let steps: Vec<f64> = grid.iter().copied().collect::<Option<_>>()?;
    let (mut within, mut total, mut max) = (0usize, 0usize, 0f64);
    for (w, g) in want.iter().zip(got) {
        for ((w, g), s) in w.to_f32_vec().into_iter().zip(g.to_f32_vec()).zip(&steps) {
            let d = (f64::from(w) - f64::from(g)).abs() / s;
            within += usize::from(d <= 1.0 + 1e-3);
            total += 1;
            max = max.max(d);
        }
    }
    Some(Steps { within_one: 100.0 * within as f64 / total.max(1) as f64, max })
}

/// Fidelity of `got` to `want` (first model output per sample), in percent. For classes: the share
/// of samples whose class agrees; on a quantized output, a class whose reference score is within one
/// grid step of the best also agrees (the decision is a tie up to one quantization step, the
/// resolution the model itself has).
pub(crate) fn fidelity(want: &[Tensor], got: &[Tensor], grid: &[Option<f64>]) -> f64 {
    if want.iter().all(|t| class(t).is_some()) {
        let agrees = |w: &Tensor, g: &Tensor| match (class(w), class(g)) {
            (a, b) if a == b => true,
            (Some(a), Some(b)) if w.dtype() == DType::F32 => {
                let v = w.to_f32_vec();
                let (a, b) = (a as usize, b as usize);
                grid.get(b).copied().flatten().is_some_and(|s| f64::from(v[a]) - f64::from(v[b]) <= s * (1.0 + 1e-3))
            }
            _ => false,
        };
        let same = want.iter().zip(got).filter(|(w, g)| agrees(w, g)).count();
        return 100.0 * same as f64 / want.len().max(1) as f64;
    }
    relative_fidelity(want, got)
}

/// `100 (1 - RMS error / spread)` over every output value, in percent.
pub(crate) fn relative_fidelity(want: &[Tensor], got: &[Tensor]) -> f64 {
    let w: Vec<f64> = want.iter().flat_map(|t| t.to_f32_vec()).map(f64::from).collect();
    let g: Vec<f64> = got.iter().flat_map(|t| t.to_f32_vec()).map(f64::from).collect();
    let mean = w.iter().sum::<f64>() / w.len().max(1) as f64;
    let spread = (w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt().max(1e-12);
    let rmse = (w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt();
    100.0 * (1.0 - rmse / spread).max(0.0)
}

/// The first `max` calibration samples and the float model's first output on each: what candidates
/// are scored against.
pub(crate) fn reference<'a>(
    module: &Module,
    calibration: &'a Calibration,
    max: usize,
) -> Result<(&'a [Tensor], Vec<Tensor>), LowerError> {
    let all = calibration.samples();
    let samples = &all[..all.len().min(max)];
    let float = samples
        .iter()
        .map(|x| fhec_interp::run(module, std::slice::from_ref(x)).map(|mut o| o.swap_remove(0)))
        .collect::<Result<_, _>>()
        .map_err(|e| LowerError::Model(format!("float reference on the calibration samples: {e}")))?;
    Ok((samples, float))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fidelity_is_class_agreement_or_relative_error() {
        let t = |v: &[f32]| Tensor::from_f32(vec![1, v.len()], v.to_vec()).unwrap();
        let want = [t(&[1.0, 2.0]), t(&[3.0, 0.0])];
        assert_eq!(fidelity(&want, &[t(&[0.0, 5.0]), t(&[0.0, 1.0])], &grid_steps(&want)), 50.0);
        let f = fidelity(&[t(&[1.0]), t(&[-1.0])], &[t(&[1.1]), t(&[-1.1])], &[None]);
        assert!((f - 90.0).abs() < 1e-4, "{f}");
    }

    #[test]
    fn on_a_quantized_output_a_class_one_step_from_the_best_agrees() {
        let t = |v: &[f32]| Tensor::from_f32(vec![1, v.len()], v.to_vec()).unwrap();
        // Scores on a grid of 0.25: the second sample's classes 0 and 1 are one step apart.
        let want = [t(&[0.5, 0.0]), t(&[0.75, 0.5]), t(&[0.0, 1.0]), t(&[1.0, 0.25])];
        let one_step = [t(&[0.5, 0.0]), t(&[0.5, 0.75]), t(&[0.0, 1.0]), t(&[1.0, 0.25])];
        assert_eq!(fidelity(&want, &one_step, &grid_steps(&want)), 100.0);
        // Two steps apart is a disagreement.
        let two_steps = [t(&[0.5, 0.0]), t(&[0.75, 0.5]), t(&[0.0, 1.0]), t(&[0.0, 1.0])];
        assert_eq!(fidelity(&want, &two_steps, &grid_steps(&want)), 75.0);
        // Continuous scores have no grid: exact class agreement only.
        let want = [t(&[0.51, 0.0]), t(&[0.77, 0.5]), t(&[0.03, 1.0]), t(&[1.0, 0.26])];
        assert_eq!(grid_steps(&want), vec![None, None]);
        assert_eq!(fidelity(&want, &one_step, &grid_steps(&want)), 75.0);
    }
}
