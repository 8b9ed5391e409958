//! Chebyshev interpolation on [-1, 1]: the polynomials that stand in for activations under CKKS.
//!
//! Interpolating at the `d + 1` Chebyshev nodes gives a degree-`d` polynomial within a small factor
//! (`2 + 2/π ln(d + 1)`) of the best uniform approximation, without an iterative minimax fit; the
//! coefficients are in the Chebyshev basis, which is what the evaluation under encryption consumes and
//! what keeps high degrees numerically stable.
//!
//! Interpolation treats every point of the window alike. Activations under a trained model do not:
//! their inputs crowd where calibration put them (a ReLU's kink, usually), so [`least_squares`] fits
//! the samples a layer's inputs took, with the uniform grid of the window weighted in beside them so
//! that the polynomial stays close to the function between and beyond the samples too.

use std::f64::consts::PI;

/// The coefficients `c_k` of `p(t) = Σ c_k T_k(t)`, `k = 0..=degree`, interpolating `f` at the
/// Chebyshev nodes of the first kind.
pub fn interpolate(f: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    let values: Vec<f64> = (0..n).map(|j| f((PI * (j as f64 + 0.5) / n as f64).cos())).collect();
    (0..n)
        .map(|k| {
            let s: f64 =
                values.iter().enumerate().map(|(j, v)| v * (PI * k as f64 * (j as f64 + 0.5) / n as f64).cos()).sum();
            s * if k == 0 { 1.0 } else { 2.0 } / n as f64
        })
        .collect()
}

/// Weight of the window's uniform grid in [`least_squares`], against 1 for the samples together.
pub const GRID_WEIGHT: f64 = 0.2;

/// The coefficients of the degree-`degree` polynomial closest to `f` in least squares over
/// `samples` (points of [-1, 1], each weighing alike, together 1) and a Chebyshev grid of
/// `4 * (degree + 1)` points of [-1, 1] (together `grid_weight`). Without samples it is the grid
/// fit, close to the best uniform approximation; samples outside [-1, 1] are clamped into it.
pub fn least_squares(f: impl Fn(f64) -> f64, degree: usize, samples: &[f64], grid_weight: f64) -> Vec<f64> {
    let grid = 4 * (degree + 1);
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|&t| (t.clamp(-1.0, 1.0), 1.0 / samples.len() as f64))
        .chain((0..grid).map(|j| ((PI * (j as f64 + 0.5) / grid as f64).cos(), grid_weight / grid as f64)))
        .collect();
    let a = nalgebra::DMatrix::from_fn(points.len(), degree + 1, |i, k| points[i].1.sqrt() * basis(k, points[i].0));
    let b = nalgebra::DVector::from_iterator(points.len(), points.iter().map(|&(t, w)| w.sqrt() * f(t)));
    // The normal equations: the grid alone makes them well conditioned (its columns are nearly
    // orthogonal, each of weight about `grid_weight / 2`), and samples only add to them.
    let (ata, atb) = (a.tr_mul(&a), a.tr_mul(&b));
    match ata.cholesky() {
        Some(ch) => ch.solve(&atb).iter().copied().collect(),
        None => match a.svd(true, true).solve(&b, 1e-13) {
            Ok(c) => c.iter().copied().collect(),
            Err(_) => interpolate(f, degree),
        },
    }
}

/// `T_k(t)`.
fn basis(k: usize, t: f64) -> f64 {
    (k as f64 * t.clamp(-1.0, 1.0).acos()).cos()
}

/// `Σ c_k T_k(t)` by Clenshaw's recurrence.
pub fn eval(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &ck in c.iter().skip(1).rev() {
        (b1, b2) = (2.0 * t * b1 - b2 + ck, b1);
    }
    c.first().copied().unwrap_or(0.0) + t * b1 - b2
}

/// Multiplicative depth of evaluating a degree-`d` polynomial: `ceil(log2(d + 1))`.
pub fn depth(degree: usize) -> u32 {
    (degree + 1).next_power_of_two().trailing_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_error(f: impl Fn(f64) -> f64 + Copy, degree: usize) -> f64 {
        let c = interpolate(f, degree);
        (0..=2000).map(|i| -1.0 + i as f64 / 1000.0).map(|t| (eval(&c, t) - f(t)).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn a_polynomial_is_reproduced_exactly() {
        let f = |t: f64| 3.0 * t * t * t - t + 0.5;
        assert!(max_error(f, 3) < 1e-12);
        let c = interpolate(f, 5);
        assert!(c[4].abs() < 1e-12 && c[5].abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn smooth_functions_converge_fast_and_relu_slowly() {
        let sigmoid = |t: f64| 1.0 / (1.0 + (-8.0 * t).exp());
        assert!(max_error(sigmoid, 31) < 1e-4, "{}", max_error(sigmoid, 31));
        let relu = |t: f64| t.max(0.0);
        let (e15, e63) = (max_error(relu, 15), max_error(relu, 63));
        // The kink limits the convergence to about 1/d.
        assert!(e15 < 0.04 && e63 < 0.01 && e63 < e15 / 3.0, "{e15} {e63}");
    }

    #[test]
    fn least_squares_fits_where_the_samples_are() {
        let relu = |t: f64| t.max(0.0);
        // Samples crowded around the kink, as a trained layer's pre-activations are.
        let samples: Vec<f64> = (0..200).map(|i| ((i as f64 / 199.0) - 0.5) * 0.6).collect();
        let rms = |c: &[f64]| {
            (samples.iter().map(|&t| (eval(c, t) - relu(t)).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
        };
        for degree in [7, 15] {
            let (i, l) = (interpolate(relu, degree), least_squares(relu, degree, &samples, GRID_WEIGHT));
            assert!(rms(&l) < rms(&i) / 1.5, "degree {degree}: {} vs {}", rms(&l), rms(&i));
            // The grid keeps it near the function over the whole window.
            let whole =
                (0..=200).map(|j| -1.0 + j as f64 / 100.0).map(|t| (eval(&l, t) - relu(t)).abs()).fold(0.0, f64::max);
            assert!(whole < 0.15, "degree {degree}: {whole}");
        }
        // A polynomial is still reproduced exactly, and no samples means the grid fit.
        let f = |t: f64| 3.0 * t * t * t - t + 0.5;
        assert!(
            least_squares(f, 3, &samples, GRID_WEIGHT)
                .iter()
                .zip(interpolate(f, 3))
                .all(|(a, b)| (a - b).abs() < 1e-10)
        );
        assert!(
            max_error(relu, 15)
                > (0..=2000)
                    .map(|i| -1.0 + i as f64 / 1000.0)
                    .map(|t| (eval(&least_squares(relu, 15, &[], 1.0), t) - relu(t)).abs())
                    .fold(0.0, f64::max)
        );
    }

    #[test]
    fn depth_is_the_bits_of_the_degree() {
        assert_eq!([1, 2, 3, 7, 8, 15, 31, 63].map(depth), [1, 2, 2, 3, 4, 4, 5, 6]);
    }
}
