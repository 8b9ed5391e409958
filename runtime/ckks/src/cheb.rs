//! Chebyshev interpolation on [-1, 1]: the polynomials that stand in for activations under CKKS.
//!
//! Interpolating at the `d + 1` Chebyshev nodes gives a degree-`d` polynomial within a small factor
//! (`2 + 2/π ln(d + 1)`) of the best uniform approximation, without an iterative minimax fit; the
//! coefficients are in the Chebyshev basis, which is what the evaluation under encryption consumes and
//! what keeps high degrees numerically stable.

use std::f64::consts::PI;

/// The coefficients `c_k` of `p(t) = Σ c_k T_k(t)`, `k = 0..=degree`, interpolating `f` at the
/// Chebyshev nodes of the first kind.
pub fn interpolate(f: impl Fn(f64) -> f64, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    let values: Vec<f64> = (0..n).map(|j| f((PI * (j as f64 + 0.5) / n as f64).cos())).collect();
    (0..n)
        .map(|k| {
            let s: f64 = values.iter().enumerate().map(|(j, v)| v * (PI * k as f64 * (j as f64 + 0.5) / n as f64).cos()).sum();
            s * if k == 0 { 1.0 } else { 2.0 } / n as f64
        })
        .collect()
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
    fn depth_is_the_bits_of_the_degree() {
        assert_eq!([1, 2, 3, 7, 8, 15, 31, 63].map(depth), [1, 2, 2, 3, 4, 4, 5, 6]);
    }
}
