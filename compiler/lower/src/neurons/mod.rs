//! The neuron graph: the server part of a module after scalarization. Wires `0..n_inputs` are the
//! client's input elements; every later wire is a table lookup of an affine form (real
//! coefficients) over earlier wires; the outputs are affine forms over wires. Value ranges come from
//! interval analysis as wires are made (`scalarize`). The graph has a canonical text form
//! (`Display`/`FromStr`, see `text`), a verifier ([`Neurons::verify`]) and passes that rewrite it
//! ([`passes`]); the backends (`scale`, `ckks`) read it.

use fhec_ir::Unary;
use indexmap::IndexMap;
use std::collections::HashMap;

pub mod passes;
mod scalarize;
mod text;
mod verify;

pub(crate) use scalarize::needed;
pub use scalarize::scalarize;

/// `bias + sum(coef * wire)` over real values, with a bound `[lo, hi]` on its value.
///
/// The bound is structural: it follows how the form was built (a max lies within its operands'
/// ranges), which is much tighter than summing each wire's range after a max-pool has expanded a
/// value into several wires. `range` intersects it with that flat bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Form {
    pub terms: Vec<(u32, f64)>,
    pub bias: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Form {
    fn constant(v: f64) -> Form {
        Form { terms: vec![], bias: v, lo: v, hi: v }
    }

    fn wire(w: u32, wire: &Wire) -> Form {
        Form { terms: vec![(w, 1.0)], bias: 0.0, lo: wire.lo, hi: wire.hi }
    }

    fn scaled(&self, k: f64) -> Form {
        let (a, b) = (self.lo * k, self.hi * k);
        Form {
            terms: self.terms.iter().map(|&(w, c)| (w, c * k)).collect(),
            bias: self.bias * k,
            lo: a.min(b),
            hi: a.max(b),
        }
    }

    /// `sum(k_i * f_i)`, merging terms on the same wire.
    fn combine(parts: &[(f64, &Form)]) -> Form {
        let mut acc: HashMap<u32, f64> = HashMap::new();
        let mut bias = 0.0;
        let mut order = Vec::new();
        let (mut lo, mut hi) = (0.0, 0.0);
        for (k, f) in parts {
            let (a, b) = (k * f.lo, k * f.hi);
            lo += a.min(b);
            hi += a.max(b);
            bias += k * f.bias;
            for &(w, c) in &f.terms {
                let e = acc.entry(w).or_insert_with(|| {
                    order.push(w);
                    0.0
                });
                *e += k * c;
            }
        }
        order.sort_unstable();
        Form { terms: order.into_iter().map(|w| (w, acc[&w])).filter(|&(_, c)| c != 0.0).collect(), bias, lo, hi }
    }

    /// The bound on the form's value: its structural bound intersected with the sum of its wires' ranges.
    pub fn range(&self, wires: &[Wire]) -> (f64, f64) {
        let (flo, fhi) = self.terms.iter().fold((self.bias, self.bias), |(lo, hi), &(w, c)| {
            let (a, b) = (c * wires[w as usize].lo, c * wires[w as usize].hi);
            (lo + a.min(b), hi + a.max(b))
        });
        let (lo, hi) = (flo.max(self.lo), fhi.min(self.hi));
        if lo <= hi { (lo, hi) } else { (flo, fhi) }
    }
}

/// A univariate function applied by a table: the IR's `Unary`, or `max(x, 0)` for max pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub f: Unary,
    pub input: Form,
    /// The input's range (interval analysis); the table saturates outside it.
    pub lo: f64,
    pub hi: f64,
    /// Where the function is evaluated: the input range, or for a function with a pole (a
    /// reciprocal, a log) the range calibration samples gave it plus headroom, see `scalarize::saturated`; the
    /// table saturates outside.
    pub domain: (f64, f64),
    /// Subtracted from the table (and added back in the consumers' forms) so that a noisy input
    /// crossing the table's edge reads about `-f(other edge) + 2c` instead of `-f`: see the backend notes.
    pub center: f64,
    /// The input's range over the calibration samples (real ones only), if there were any: a
    /// table may be spread over this range with headroom instead of the whole interval (see
    /// `scale::TableRanges`).
    pub calibrated: Option<(f64, f64)>,
    /// How well calibrated windows hold on samples they were not built from: of the odd-numbered
    /// calibration samples, how many read this table outside the window that the even-numbered
    /// ones give it, and how many there are.
    pub held_out: (usize, usize),
    /// Where the input fell on the calibration samples (real ones only): at most [`QUANTILES`]
    /// evenly spaced quantiles, ascending. CKKS fits its polynomials to them (`cheb::least_squares`).
    pub quantiles: Vec<f64>,
    /// The source op, for reports.
    pub layer: String,
}

/// How many quantiles of a table's calibrated inputs [`Lookup::quantiles`] keeps.
pub const QUANTILES: usize = 128;

/// At most `n` evenly spaced quantiles of `values` (NaNs left out), ascending.
pub(crate) fn quantiles(values: &[f64], n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|z| !z.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    if v.len() <= n {
        return v;
    }
    (0..n).map(|i| v[i * (v.len() - 1) / (n - 1)]).collect()
}

impl Lookup {
    /// The tabulated function: f clamped to its domain, minus the center.
    pub fn eval(&self, z: f64) -> f64 {
        f64::from(self.f.apply(z.clamp(self.domain.0, self.domain.1) as f32)) - self.center
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Wire {
    /// `None` for an input wire (the client encodes input element `index`).
    pub lookup: Option<Lookup>,
    pub lo: f64,
    pub hi: f64,
    /// Wires of one class share one scale: the outputs of one layer, so that sums over them (pooling,
    /// a max computed as `a + relu(b - a)`) keep exact proportions after integer rounding.
    pub class: usize,
}

/// The scalarized server computation.
#[derive(Clone, Debug, PartialEq)]
pub struct Neurons {
    pub wires: Vec<Wire>,
    pub n_inputs: usize,
    /// One form per element of each frontier value, in frontier order.
    pub outputs: Vec<Vec<Form>>,
    /// The range each output (flattened) took on the calibration samples, if known.
    pub calibrated: Option<Vec<(f64, f64)>>,
}

impl Form {
    pub fn eval(&self, values: &[f64]) -> f64 {
        self.terms.iter().fold(self.bias, |acc, &(w, c)| acc + c * values[w as usize])
    }
}

impl Neurons {
    /// Float evaluation of the flattened outputs for one sample (its input elements), with the
    /// circuit's semantics: inputs clamped into their box, tables saturating outside their range.
    pub fn eval(&self, x: &[f64]) -> Vec<f64> {
        let mut v: Vec<f64> = x.iter().zip(&self.wires).map(|(&x, w)| x.clamp(w.lo, w.hi)).collect();
        for w in &self.wires[self.n_inputs..] {
            let l = w.lookup.as_ref().expect("wires past the inputs are lookups");
            let z = l.input.eval(&v);
            v.push(l.eval(z));
        }
        self.outputs.iter().flatten().map(|f| f.eval(&v)).collect()
    }

    /// Table lookups per layer (source op), in order of first table.
    pub fn tables_per_layer(&self) -> Vec<(String, usize)> {
        let mut out: IndexMap<&str, usize> = IndexMap::new();
        for l in self.wires.iter().filter_map(|w| w.lookup.as_ref()) {
            *out.entry(l.layer.as_str()).or_default() += 1;
        }
        out.into_iter().map(|(n, c)| (n.to_string(), c)).collect()
    }

    /// Drops the wires marked `gone` (no remaining form may read them) and renumbers the rest.
    /// Returns how many went.
    fn remove_wires(&mut self, gone: &[bool]) -> usize {
        let mut index = vec![u32::MAX; gone.len()];
        let mut kept = Vec::with_capacity(gone.len());
        for (j, w) in std::mem::take(&mut self.wires).into_iter().enumerate() {
            if !gone[j] {
                index[j] = kept.len() as u32;
                kept.push(w);
            }
        }
        self.wires = kept;
        let forms = self
            .wires
            .iter_mut()
            .filter_map(|w| w.lookup.as_mut().map(|l| &mut l.input))
            .chain(self.outputs.iter_mut().flatten());
        for f in forms {
            for (j, _) in f.terms.iter_mut() {
                debug_assert!(!gone[*j as usize], "a removed wire is still read");
                *j = index[*j as usize];
            }
        }
        gone.iter().filter(|g| **g).count()
    }

    /// Records the outputs' ranges over calibration samples.
    pub fn calibrate(&mut self, samples: &[Vec<f64>]) {
        let n = self.outputs.iter().map(Vec::len).sum();
        let mut r = vec![(f64::INFINITY, f64::NEG_INFINITY); n];
        for x in samples {
            for (r, y) in r.iter_mut().zip(self.eval(x)) {
                *r = (r.0.min(y), r.1.max(y));
            }
        }
        self.calibrated = (!samples.is_empty()).then_some(r);
    }
}
