//! The polynomials that may stand in for an activation layer under CKKS, and the first cut among them.
//!
//! CKKS evaluates additions and products only, so every activation layer needs a polynomial in
//! its place. Every layer is offered every fit the search allows at every degree it tries:
//!
//! - `chebyshev D`: interpolation at the Chebyshev nodes of the layer's window;
//! - `least-squares D`: the least-squares fit to where the layer's inputs fell on the calibration
//!   samples, with the window's grid beside them ([`fhec_ckks::cheb::least_squares`]).
//!
//! Both keep the depth of their degree; they differ in where they spend their accuracy. This is a
//! plain enumeration: no rewrite here depends on another, so there is nothing for equality
//! saturation to find (an e-graph did this once, and only enumerated). The reports keep naming each
//! offer `activation-to-<fit>-<degree>`.
//!
//! The choice cannot be made per layer: a plan's cost is not a sum over layers (the ring its deepest
//! path needs costs six times more from 2^14 to 2^15) and its accuracy is measured by simulating the
//! whole plan. It runs in two steps. Here, per layer, a candidate goes when another is no more
//! expensive (degree no higher) and fits the layer's calibrated inputs at least as well ([`pareto`]);
//! then `ckks::choose` enumerates assignments of the survivors, cheapest plan first, and keeps the
//! first whose simulation keeps the accuracy budget.

use std::fmt;

/// How a polynomial approximates its activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fit {
    /// Interpolation at the Chebyshev nodes of the window: near-best uniformly, blind to the data.
    Chebyshev,
    /// Least squares on the calibrated inputs and the window's grid: closest where inputs fall.
    LeastSquares,
}

impl Fit {
    pub fn name(self) -> &'static str {
        match self {
            Fit::Chebyshev => "chebyshev",
            Fit::LeastSquares => "least-squares",
        }
    }
}

/// One polynomial standing in for an activation layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Approx {
    pub fit: Fit,
    pub degree: usize,
}

impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.fit.name(), self.degree)
    }
}

/// The offers for `fits` at `degrees`, in that order (degree, then fit), without repeats.
fn offers(fits: &[Fit], degrees: &[usize]) -> Vec<Approx> {
    let mut out: Vec<Approx> = Vec::new();
    for &degree in degrees {
        for &fit in fits {
            let a = Approx { fit, degree };
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn offer_name(a: Approx) -> String {
    format!("activation-to-{}-{}", a.fit.name(), a.degree)
}

/// The offers' names for `fits` at `degrees`: `activation-to-<fit>-<degree>`.
pub fn rule_names(fits: &[Fit], degrees: &[usize]) -> Vec<String> {
    offers(fits, degrees).into_iter().map(offer_name).collect()
}

/// Each of `layers` activation layers' candidates: every fit in `fits` at every degree in `degrees`,
/// in a stable order (fit, then degree); and, per offer, how many layers it was made to (all of them).
pub fn candidates(layers: usize, fits: &[Fit], degrees: &[usize]) -> (Vec<Vec<Approx>>, Vec<(String, usize)>) {
    let offers = offers(fits, degrees);
    let mut sorted = offers.clone();
    sorted.sort();
    let per_layer = vec![sorted; layers];
    (per_layer, offers.into_iter().map(|a| (offer_name(a), layers)).collect())
}

/// The candidates of one layer worth simulating: a candidate goes when one of lower degree (cheaper
/// and no deeper) fits the layer's calibrated inputs at least as well (`error` no larger).
/// Candidates of one degree cost the same and all stay: the distance is measured on the layer alone,
/// while the choice is made on the whole plan's simulated accuracy, where they may rank otherwise.
pub fn pareto(candidates: &[Approx], error: impl Fn(Approx) -> f64) -> Vec<Approx> {
    let scored: Vec<(Approx, f64)> = candidates.iter().map(|&a| (a, error(a))).collect();
    scored
        .iter()
        .filter(|&&(a, e)| !scored.iter().any(|&(b, f)| b.degree < a.degree && f <= e))
        .map(|&(a, _)| a)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_fires_on_every_layer_and_the_classes_hold_every_candidate() {
        let both = [Fit::Chebyshev, Fit::LeastSquares];
        let (per_layer, fired) = candidates(3, &both, &[7, 15]);
        assert_eq!(per_layer.len(), 3);
        for c in &per_layer {
            let want: Vec<Approx> = [Fit::Chebyshev, Fit::LeastSquares]
                .into_iter()
                .flat_map(|fit| [7, 15].map(|degree| Approx { fit, degree }))
                .collect();
            assert_eq!(c, &want);
        }
        assert_eq!(fired.len(), 4);
        assert!(fired.iter().all(|(_, n)| *n == 3), "{fired:?}");
        assert_eq!(rule_names(&both, &[7]), ["activation-to-chebyshev-7", "activation-to-least-squares-7"]);
        // Only the fits asked for are offered.
        let (per_layer, _) = candidates(1, &[Fit::LeastSquares], &[7]);
        assert_eq!(per_layer, [[Approx { fit: Fit::LeastSquares, degree: 7 }]]);
    }

    #[test]
    fn pareto_drops_a_degree_that_fits_no_better_than_a_cheaper_one() {
        let a = |fit, degree| Approx { fit, degree };
        let all = [a(Fit::Chebyshev, 7), a(Fit::Chebyshev, 15), a(Fit::LeastSquares, 7), a(Fit::LeastSquares, 15)];
        let error = |x: Approx| match (x.fit, x.degree) {
            (Fit::Chebyshev, 7) => 0.10,
            (Fit::LeastSquares, 7) => 0.05,
            (Fit::Chebyshev, 15) => 0.06,
            _ => 0.02,
        };
        // Chebyshev 15 fits worse than least squares at 7; both fits of one degree stay.
        assert_eq!(pareto(&all, error), [a(Fit::Chebyshev, 7), a(Fit::LeastSquares, 7), a(Fit::LeastSquares, 15)]);
        assert_eq!(
            pareto(&all, |x| if x.degree == 7 { 0.01 } else { 0.02 }),
            [a(Fit::Chebyshev, 7), a(Fit::LeastSquares, 7)]
        );
    }
}
