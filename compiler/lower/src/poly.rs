//! Polynomial activation approximation as e-graph rewrites (egg).
//!
//! CKKS evaluates additions and products only, so every activation layer needs a polynomial in
//! its place. The choices live in an e-graph: each activation layer `L` is one e-class, seeded with
//! `(act L)` (the layer's exact function, which CKKS cannot evaluate), under a root
//! `(chain (act 0) (act 1) ...)`. Rules add the polynomials that may stand in for a layer:
//!
//! - `activation-to-chebyshev-D`: interpolation at the Chebyshev nodes of the layer's window;
//! - `activation-to-least-squares-D`: the least-squares fit to where the layer's inputs fell on the
//!   calibration samples, with the window's grid beside them ([`fhec_ckks::cheb::least_squares`]);
//!
//! for each degree `D` the search offers. Both keep the depth of their degree; they differ in where
//! they spend their accuracy.
//!
//! Extraction cannot be per class: a plan's cost is not a sum over layers (the ring its deepest path
//! needs costs six times more from 2^14 to 2^15) and its accuracy is measured by simulating the whole
//! plan. It runs in two steps. Here, per class, a candidate goes when another is no more expensive
//! (degree no higher) and fits the layer's calibrated inputs at least as well ([`pareto`]); then
//! `choose_ckks` enumerates assignments of the survivors, cheapest plan first, and keeps the first
//! whose simulation keeps the accuracy budget.

use egg::{EGraph, Id, Language, Rewrite, Runner, SymbolLang, rewrite};
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

    fn of(op: &str) -> Option<Fit> {
        [Fit::Chebyshev, Fit::LeastSquares].into_iter().find(|f| f.name() == op)
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

/// The rewrite rules for `fits` at `degrees`, named `activation-to-<fit>-<degree>`.
fn rules(fits: &[Fit], degrees: &[usize]) -> Vec<Rewrite<SymbolLang, ()>> {
    let mut out = Vec::new();
    for &d in degrees {
        for &fit in fits {
            let name = format!("activation-to-{}-{d}", fit.name());
            let to: egg::Pattern<SymbolLang> =
                format!("({} ?l {d})", fit.name()).parse().expect("a well-formed pattern");
            out.push(rewrite!(name; "(act ?l)" => to));
        }
    }
    out
}

/// The rule names for `fits` at `degrees`.
pub fn rule_names(fits: &[Fit], degrees: &[usize]) -> Vec<String> {
    rules(fits, degrees).iter().map(|r| r.name.to_string()).collect()
}

/// The saturated e-graph of `layers` activation layers under the rules for `fits` at `degrees`:
/// the candidates of each layer's class, in a stable order (fit, then degree), and how many layers
/// each rule rewrote.
pub fn candidates(layers: usize, fits: &[Fit], degrees: &[usize]) -> (Vec<Vec<Approx>>, Vec<(String, usize)>) {
    let mut eg: EGraph<SymbolLang, ()> = EGraph::default();
    let seeded: Vec<Id> = (0..layers)
        .map(|l| {
            let leaf = eg.add(SymbolLang::leaf(l.to_string()));
            eg.add(SymbolLang::new("act", vec![leaf]))
        })
        .collect();
    eg.add(SymbolLang::new("chain", seeded.clone()));
    let rules = rules(fits, degrees);
    let runner = Runner::<SymbolLang, ()>::default().with_egraph(eg).run(&rules);
    let eg = &runner.egraph;
    let act_classes: Vec<Id> = seeded.iter().map(|&i| eg.find(i)).collect();
    let per_layer = act_classes
        .iter()
        .map(|&c| {
            let mut v: Vec<Approx> = eg[c]
                .nodes
                .iter()
                .filter_map(|n| {
                    let fit = Fit::of(n.op.as_str())?;
                    let degree = eg[n.children()[1]].nodes.iter().find_map(|d| d.op.as_str().parse().ok())?;
                    Some(Approx { fit, degree })
                })
                .collect();
            v.sort();
            v
        })
        .collect();
    // A rule fires once per layer class it rewrites: the class then holds its right-hand side.
    let fired = rules
        .iter()
        .map(|r| {
            let (fit, degree) =
                r.name.as_str().trim_start_matches("activation-to-").rsplit_once('-').expect("named by `rules`");
            let a = Approx {
                fit: Fit::of(fit).expect("named by `rules`"),
                degree: degree.parse().expect("named by `rules`"),
            };
            (
                r.name.to_string(),
                act_classes
                    .iter()
                    .filter(|&&c| {
                        eg[c].nodes.iter().any(|n| {
                            Fit::of(n.op.as_str()) == Some(a.fit)
                                && eg[n.children()[1]].nodes.iter().any(|d| d.op.as_str().parse() == Ok(a.degree))
                        })
                    })
                    .count(),
            )
        })
        .collect();
    (per_layer, fired)
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
