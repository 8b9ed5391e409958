//! The CKKS circuit: affine maps over encrypted values and Chebyshev polynomials in place of tables.
//!
//! Values `0..n_inputs` are the client's input elements; value `n_inputs + k` is node `k`'s output,
//! `p_k(t_k)` with `t_k` an affine map of earlier values already scaled so that the node's window is
//! `[-1, 1]`. Batch-major packing runs this same circuit on every slot of a ciphertext (one sample
//! per slot), so its semantics is per sample: [`Plan::eval`] is the cleartext simulation, exactly
//! the polynomials the encrypted evaluation computes, without CKKS's approximation error.

use crate::{CkksError, cheb};
use serde::{Deserialize, Serialize};

/// Bumped when the meaning of a field changes: older plans are refused.
pub const PLAN_VERSION: u32 = 1;
/// Highest polynomial degree a plan may hold.
pub const MAX_DEGREE: usize = 255;

/// `bias + Σ coef · value[index]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub terms: Vec<(u32, f64)>,
    pub bias: f64,
}

impl Affine {
    pub fn eval(&self, values: &[f64]) -> f64 {
        self.terms.iter().fold(self.bias, |acc, &(w, c)| acc + c * values[w as usize])
    }
}

/// One activation: `Σ coeffs[k] T_k(input)`. Outside [-1, 1] (its window) a polynomial diverges,
/// so a read there is counted ([`Reads`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Maps the activation's input onto `[-1, 1]` over its window.
    pub input: Affine,
    /// Chebyshev coefficients, degree `coeffs.len() - 1`.
    pub coeffs: Vec<f64>,
    /// The source op, for reports.
    pub layer: String,
}

impl Node {
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub n_inputs: usize,
    /// The client clamps each input element into its box and maps the box onto [-1, 1] before
    /// encrypting ([`Plan::client_inputs`]); the affine maps read the mapped values.
    pub input_box: Vec<(f64, f64)>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Affine>,
}

/// Polynomial reads outside their window (where the approximation does not hold), over how many reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub outside: usize,
    pub total: usize,
}

/// What evaluating a plan costs, per ciphertext of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Ciphertext-by-constant multiply-adds (the affine maps).
    pub scalar_ops: usize,
    /// Polynomial evaluations.
    pub polynomials: usize,
    /// Multiplicative depth of the longest path.
    pub depth: u32,
}

/// Scale of encrypted values (and of polynomial coefficients): 2^-30 resolution.
pub const LOG_DELTA: usize = 30;
/// Precision of the constants the affine maps multiply by (consumed by each such product).
pub const CONST_BITS: usize = 20;
/// Bits above the scale that intermediate values may use (|value| < 2^8): kept free at the top of
/// the modulus along the deepest path.
pub const HEADROOM: usize = 8;
/// Bits per limb of the ciphertext modulus.
pub const BASE2K: usize = 52;

/// A ring degree and the ciphertext width that 128-bit security allows there (see `backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub log_n: usize,
    /// Bits of a fresh ciphertext's modulus.
    pub k: usize,
}

impl Ring {
    /// The 128-bit bound on the widest modulus under the secret (bits): a ternary secret of Hamming
    /// weight 1024, σ = 3.2. 851 at 2^15 is the bound poulpy's own presets use; 426 at 2^14 is from
    /// the same estimator table they cite, under the HE standard's 438 for uniform ternary secrets.
    pub fn bound(log_n: usize) -> usize {
        match log_n {
            14 => 426,
            15 => 851,
            _ => 0,
        }
    }

    /// The widest ciphertext whose relinearization key (`ceil(k / BASE2K)` digits of `BASE2K` bits
    /// plus `BASE2K + log_n` auxiliary bits) stays within the bound.
    pub fn at(log_n: usize) -> Ring {
        let limbs = Ring::bound(log_n).saturating_sub(BASE2K + log_n) / BASE2K;
        Ring { log_n, k: limbs * BASE2K }
    }

    /// Bits of the relinearization key's modulus, the widest object under the secret.
    pub fn key_bits(&self) -> usize {
        self.k.div_ceil(BASE2K) * BASE2K + BASE2K + self.log_n
    }

    /// Samples per ciphertext (one per complex slot).
    pub fn slots(&self) -> usize {
        1 << (self.log_n - 1)
    }

    /// Measured on the project's machine (2-core AMD EPYC Zen 5, one thread, portable NTT backend,
    /// ciphertexts at full width): one product by a constant, and one polynomial of each degree.
    fn const_ms(&self) -> f64 {
        if self.log_n <= 14 { 0.6 } else { 3.8 }
    }

    /// One rotation (a key switch) and one product by a vector of constants, same conditions.
    fn rotation_ms(&self) -> f64 {
        if self.log_n <= 14 { ROTATION_MS_14 } else { ROTATION_MS_14 * 2.5 }
    }

    fn pt_vec_ms(&self) -> f64 {
        if self.log_n <= 14 { PT_VEC_MS_14 } else { PT_VEC_MS_14 * 2.5 }
    }

    fn poly_ms(&self, degree: usize) -> f64 {
        let at_14 = match cheb::depth(degree) {
            0..=3 => 230.0,
            4 => 404.0,
            5 => 600.0,
            d => 600.0 * 1.5f64.powi(d as i32 - 5),
        };
        if self.log_n <= 14 { at_14 } else { at_14 * 6.0 }
    }
}

/// How samples sit in a ciphertext's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Packing {
    /// One sample per slot and one ciphertext per value of the plan: a ciphertext's slots are
    /// thousands of samples, scored at the cost of one. For throughput.
    #[default]
    BatchMajor,
    /// One sample across a block of slots, the values of a layer side by side, and every layer one
    /// ciphertext: an affine map between layers is one matrix-vector product by diagonals (rotations,
    /// baby-step giant-step), a layer's activation one polynomial. A ciphertext holds
    /// `slots / block` samples. For latency; needs a plan whose layers share their polynomial
    /// ([`Plan::layers`]).
    FeatureMajor,
}

impl Packing {
    pub fn name(self) -> &'static str {
        match self {
            Packing::BatchMajor => "batch-major",
            Packing::FeatureMajor => "feature-major",
        }
    }
}

/// A plan as a chain of layers, the shape feature-major packing evaluates.
#[derive(Clone, Debug, PartialEq)]
pub struct Layers {
    /// Slots per sample: the smallest power of two holding the inputs and every layer.
    pub block: usize,
    /// The activation layers, then the outputs.
    pub stages: Vec<Stage>,
}

impl Layers {
    /// Samples one ciphertext of `ring` holds: one per block, if a block fits.
    pub fn samples_per_ciphertext(&self, ring: Ring) -> Result<usize, CkksError> {
        let (block, slots) = (self.block, ring.slots());
        if block > slots {
            return Err(CkksError::Plan(format!(
                "a sample needs {block} slots (its widest layer) and the ring has {slots}"
            )));
        }
        Ok(slots / block)
    }
}

/// One layer: its values' affine maps over the layer before (or the inputs), then one polynomial.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// One map per value of the layer; term indices count from the previous layer's first value.
    pub rows: Vec<Affine>,
    /// The polynomial every value of the layer goes through; `None` for the outputs.
    pub coeffs: Option<Vec<f64>>,
    pub layer: String,
}

impl Stage {
    /// The matrix's entries as `(column - row, row, coefficient)`.
    fn entries(&self) -> impl Iterator<Item = (i64, usize, f64)> + '_ {
        self.rows.iter().enumerate().flat_map(|(j, r)| r.terms.iter().map(move |&(w, c)| (w as i64 - j as i64, j, c)))
    }

    /// Offsets `column - row` of the matrix's non-zero entries: the diagonals a matrix-vector product
    /// by diagonals multiplies, each one rotation of the input away.
    pub fn diagonals(&self) -> std::collections::BTreeSet<i64> {
        self.entries().map(|(d, _, _)| d).collect()
    }

    /// Each diagonal over one block of `block` slots: `values[row]` is the coefficient at
    /// `(row, row + offset)` (terms on one value summed), zero past the layer's width.
    pub fn diagonal_values(&self, block: usize) -> std::collections::BTreeMap<i64, Vec<f64>> {
        let mut out = std::collections::BTreeMap::new();
        for (d, j, c) in self.entries() {
            out.entry(d).or_insert_with(|| vec![0.0; block])[j] += c;
        }
        out
    }
}

/// Fitted on two models' feature-major runs (`fhec bench`): the wine MLP (109 diagonals, about 35
/// rotations, 0.73 s of matrix-vector products) and `cnn_digits_nopad` (650 diagonals, about 92
/// rotations, 2.2 s). Rotations (key switches at full width) dominate.
const ROTATION_MS_14: f64 = 18.0;
const PT_VEC_MS_14: f64 = 0.8;

impl Plan {
    /// Checks what a plan read from disk must satisfy before anything evaluates it.
    pub fn validate(&self) -> Result<(), CkksError> {
        let bad = |what: String| Err(CkksError::Plan(what));
        if self.version != PLAN_VERSION {
            return bad(format!(
                "plan version {} (this fhec reads version {PLAN_VERSION}): rebuild the model",
                self.version
            ));
        }
        if self.input_box.len() != self.n_inputs {
            return bad(format!("{} input boxes for {} inputs", self.input_box.len(), self.n_inputs));
        }
        if let Some((i, b)) =
            self.input_box.iter().enumerate().find(|(_, (lo, hi))| !(lo.is_finite() && hi.is_finite() && lo <= hi))
        {
            return bad(format!("input {i}: box {b:?} is not a finite interval"));
        }
        let check = |a: &Affine, limit: usize, what: &dyn Fn() -> String| -> Result<(), CkksError> {
            if let Some(&(w, c)) = a.terms.iter().find(|&&(w, c)| w as usize >= limit || !c.is_finite()) {
                return Err(CkksError::Plan(format!(
                    "{}: term ({w}, {c}) reads a later value or is not finite",
                    what()
                )));
            }
            if !a.bias.is_finite() {
                return Err(CkksError::Plan(format!("{}: bias is not finite", what())));
            }
            Ok(())
        };
        for (k, n) in self.nodes.iter().enumerate() {
            check(&n.input, self.n_inputs + k, &|| format!("node {k} ({})", n.layer))?;
            if n.coeffs.is_empty() || n.degree() > MAX_DEGREE || n.coeffs.iter().any(|c| !c.is_finite()) {
                return bad(format!(
                    "node {k} ({}): {} coefficients (1 to {} finite ones)",
                    n.layer,
                    n.coeffs.len(),
                    MAX_DEGREE + 1
                ));
            }
        }
        let values = self.n_inputs + self.nodes.len();
        for (k, o) in self.outputs.iter().enumerate() {
            check(o, values, &|| format!("output {k}"))?;
        }
        Ok(())
    }

    /// One sample through the circuit in the clear: inputs clamped into their box, each node's
    /// polynomial evaluated exactly. Reads outside a window are counted into `reads`.
    pub fn eval(&self, x: &[f64], reads: &mut Reads) -> Result<Vec<f64>, CkksError> {
        if x.len() != self.n_inputs {
            return Err(CkksError::Shape(format!("{} input values for a plan of {}", x.len(), self.n_inputs)));
        }
        let mut v = self.client_inputs(x);
        v.reserve(self.nodes.len());
        for n in &self.nodes {
            let t = n.input.eval(&v);
            reads.total += 1;
            reads.outside += usize::from(t.abs() > 1.0);
            v.push(cheb::eval(&n.coeffs, t));
        }
        Ok(self.outputs.iter().map(|o| o.eval(&v)).collect())
    }

    /// What the client encrypts for one sample: each input value clamped into its box, the box
    /// mapped onto [-1, 1] (a box of one point maps to 0).
    pub fn client_inputs(&self, x: &[f64]) -> Vec<f64> {
        crate::layout::map_into_box(&self.input_box, x)
    }

    /// The plan as a chain of layers: consecutive nodes of one source layer that read only the layer
    /// before them (the inputs, for the first) and share one polynomial, then outputs that read only
    /// the last layer. Feature-major packing evaluates plans of this shape; the error says which node
    /// breaks it.
    pub fn layers(&self) -> Result<Layers, CkksError> {
        let bad = |what: String| {
            Err(CkksError::Plan(format!("{what}: feature-major packing needs a chain of layers, each one polynomial")))
        };
        let within =
            |a: &Affine, prev: &std::ops::Range<usize>| a.terms.iter().all(|&(w, _)| prev.contains(&(w as usize)));
        let rebase = |a: &Affine, start: usize| Affine {
            terms: a.terms.iter().map(|&(w, c)| (w - start as u32, c)).collect(),
            bias: a.bias,
        };
        let mut stages = Vec::new();
        let mut prev = 0..self.n_inputs;
        let mut k = 0;
        while k < self.nodes.len() {
            let first = &self.nodes[k];
            let start = k;
            let mut rows = Vec::new();
            while let Some(n) = self.nodes.get(k).filter(|n| n.layer == first.layer && within(&n.input, &prev)) {
                if n.coeffs != first.coeffs {
                    return bad(format!(
                        "node {k} ({}) has a polynomial of its own, not its layer's (a batch-major plan, with a window per value)",
                        n.layer
                    ));
                }
                rows.push(rebase(&n.input, prev.start));
                k += 1;
            }
            if rows.is_empty() {
                return bad(format!("node {k} ({}) reads a value outside the layer before it", first.layer));
            }
            stages.push(Stage { rows, coeffs: Some(first.coeffs.clone()), layer: first.layer.clone() });
            prev = self.n_inputs + start..self.n_inputs + k;
        }
        if let Some(o) = self.outputs.iter().position(|o| !within(o, &prev)) {
            return bad(format!("output {o} reads a value outside the last layer"));
        }
        stages.push(Stage {
            rows: self.outputs.iter().map(|o| rebase(o, prev.start)).collect(),
            coeffs: None,
            layer: "outputs".into(),
        });
        if let Some(s) = stages.iter().find(|s| s.rows.iter().all(|r| r.terms.is_empty())) {
            return bad(format!("layer {} is constant", s.layer));
        }
        let widest = stages.iter().map(|s| s.rows.len()).chain([self.n_inputs]).max().unwrap_or(1);
        Ok(Layers { block: widest.next_power_of_two(), stages })
    }

    /// The longest path to each value (inputs 0), where an affine map with terms costs `affine`
    /// and node `k`'s polynomial `poly(k)`; the outputs' affine maps are not included.
    pub fn longest_paths(&self, affine: usize, poly: impl Fn(&Node) -> usize) -> Vec<usize> {
        let mut len = vec![0usize; self.n_inputs];
        for n in &self.nodes {
            let input = self.reads(&n.input, &len, affine);
            len.push(input + poly(n));
        }
        len
    }

    /// The path length after affine map `a`, given each value's (`len`).
    fn reads(&self, a: &Affine, len: &[usize], affine: usize) -> usize {
        a.terms.iter().map(|&(w, _)| len[w as usize]).max().unwrap_or(0) + if a.terms.is_empty() { 0 } else { affine }
    }

    pub fn cost(&self) -> Cost {
        // Multiplicative depth: one for a product by constants, the polynomial's own.
        let d = self.longest_paths(1, |n| cheb::depth(n.degree()) as usize);
        let depth = self.outputs.iter().map(|o| self.reads(o, &d, 1)).max().unwrap_or(0);
        let terms = |a: &Affine| a.terms.len();
        Cost {
            scalar_ops: self.nodes.iter().map(|n| terms(&n.input)).sum::<usize>()
                + self.outputs.iter().map(terms).sum::<usize>(),
            polynomials: self.nodes.len(),
            depth: depth as u32,
        }
    }

    /// Bits of modulus consumed along the deepest path before the final scale, and where it ends:
    /// each product by constants takes [`CONST_BITS`], a degree-`d` polynomial on [-1, 1]
    /// `ceil(log2(d + 1))` times [`LOG_DELTA`] (what poulpy's minimal-depth evaluation consumes;
    /// `backend` checks it).
    pub fn bits_needed(&self) -> (usize, String) {
        let used = self.longest_paths(CONST_BITS, |n| cheb::depth(n.degree()) as usize * LOG_DELTA);
        let mut deepest = (0, String::from("no output"));
        for (k, o) in self.outputs.iter().enumerate() {
            let b = self.reads(o, &used, CONST_BITS);
            if b > deepest.0 {
                let last = o.terms.iter().max_by_key(|&&(w, _)| used[w as usize]).map(|&(w, _)| w as usize);
                let via = match last.and_then(|w| w.checked_sub(self.n_inputs)) {
                    Some(j) => format!("node {j} ({})", self.nodes[j].layer),
                    None => "an input".into(),
                };
                deepest = (b, format!("output {k}, through {via}"));
            }
        }
        deepest
    }

    /// The smallest ring whose fresh ciphertexts hold the deepest path plus the final scale and
    /// headroom; the error names where the deepest path ends.
    pub fn ring(&self) -> Result<Ring, CkksError> {
        let (need, at) = self.bits_needed();
        let total = need + LOG_DELTA + HEADROOM;
        [14, 15].into_iter().map(Ring::at).find(|r| r.k >= total).ok_or_else(|| {
            CkksError::Plan(format!(
                "the circuit needs {total} bits of modulus along its deepest path (ending at {at}), more than the {} a 128-bit ring of degree 2^15 holds without bootstrapping: lower the polynomial degree or the model's depth",
                Ring::at(15).k
            ))
        })
    }

    /// Estimated time to evaluate one ciphertext batch (up to [`Ring::slots`] samples) on
    /// `threads` workers, from the measured per-operation times of [`Ring`] (independent nodes run
    /// in parallel; the estimate divides the work evenly).
    pub fn estimated_batch_ms(&self, ring: Ring, threads: usize) -> f64 {
        let c = self.cost();
        let polys: f64 = self.nodes.iter().map(|n| ring.poly_ms(n.degree())).sum();
        (polys + c.scalar_ops as f64 * ring.const_ms()) / threads.max(1) as f64
    }

    /// Samples one ciphertext holds under `packing` on `ring`: its slots batch-major; feature-major,
    /// one per block, which needs a chain of layers ([`Plan::layers`]) whose block fits the ring.
    pub fn samples_per_ciphertext(&self, ring: Ring, packing: Packing) -> Result<usize, CkksError> {
        match packing {
            Packing::BatchMajor => Ok(ring.slots()),
            Packing::FeatureMajor => self.layers()?.samples_per_ciphertext(ring),
        }
    }

    /// Estimated time for `samples` samples on `threads` workers under `packing` (infinite where the
    /// packing does not apply). Batch-major: one batch per [`Ring::slots`] samples, whatever their
    /// number within it. Feature-major: one ciphertext per `slots / block` samples, ciphertexts
    /// spread over the workers.
    pub fn estimated_ms(&self, ring: Ring, packing: Packing, samples: usize, threads: usize) -> f64 {
        let (samples, threads) = (samples.max(1), threads.max(1));
        match packing {
            Packing::BatchMajor => samples.div_ceil(ring.slots()) as f64 * self.estimated_batch_ms(ring, threads),
            Packing::FeatureMajor => match self.layers().and_then(|l| Ok((l.samples_per_ciphertext(ring)?, l))) {
                Ok((per, l)) => samples.div_ceil(per).div_ceil(threads) as f64 * self.estimated_feature_ms(&l, ring),
                Err(_) => f64::INFINITY,
            },
        }
    }

    /// Estimated time to evaluate one feature-major ciphertext (`ring.slots() / block` samples) on one
    /// thread: per layer, a matrix-vector product by its `D` diagonals (about `2 √D` rotations, `D`
    /// products by vectors of constants) and its polynomial.
    pub fn estimated_feature_ms(&self, layers: &Layers, ring: Ring) -> f64 {
        layers
            .stages
            .iter()
            .map(|s| {
                let d = s.diagonals().len() as f64;
                let poly = s.coeffs.as_ref().map_or(0.0, |c| ring.poly_ms(c.len().saturating_sub(1)));
                2.0 * d.sqrt().ceil() * ring.rotation_ms() + d * ring.pt_vec_ms() + poly
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = relu-ish(2 x0 - x1) then out = 3 y + 1.
    fn plan() -> Plan {
        let coeffs = cheb::interpolate(|t| (4.0 * t).max(0.0), 31);
        Plan {
            version: PLAN_VERSION,
            n_inputs: 2,
            input_box: vec![(-1.0, 1.0), (-1.0, 1.0)],
            nodes: vec![Node {
                input: Affine { terms: vec![(0, 0.5), (1, -0.25)], bias: 0.0 },
                coeffs,
                layer: "relu".into(),
            }],
            outputs: vec![Affine { terms: vec![(2, 3.0)], bias: 1.0 }],
        }
    }

    #[test]
    fn evaluation_follows_the_function_in_its_window_and_counts_reads_outside() {
        let p = plan();
        p.validate().unwrap();
        let mut reads = Reads::default();
        let y = p.eval(&[0.8, -0.4], &mut reads).unwrap();
        // t = 0.4 + 0.1 = 0.5, relu(4 t) = 2, out = 7.
        assert!((y[0] - 7.0).abs() < 0.2, "{y:?}");
        assert_eq!(reads, Reads { outside: 0, total: 1 });
        // Clamped into the box: x0 = 1, x1 = -1 → t = 0.75, still inside.
        p.eval(&[5.0, -5.0], &mut reads).unwrap();
        assert_eq!(reads.outside, 0);
        let mut steep = p.clone();
        steep.nodes[0].input.terms[0].1 = 4.0;
        steep.eval(&[0.8, 0.0], &mut reads).unwrap();
        assert_eq!(reads, Reads { outside: 1, total: 3 });
    }

    #[test]
    fn the_client_maps_each_box_onto_the_unit_interval() {
        let mut p = plan();
        p.input_box = vec![(10.0, 30.0), (5.0, 5.0)];
        assert_eq!(p.client_inputs(&[25.0, 7.0]), vec![0.5, 0.0]);
        assert_eq!(p.client_inputs(&[99.0, 7.0]), vec![1.0, 0.0]);
    }

    #[test]
    fn depth_and_cost() {
        let c = plan().cost();
        assert_eq!(c, Cost { scalar_ops: 2 + 1, polynomials: 1, depth: 1 + 5 + 1 });
        // A constant product, a degree-31 polynomial, the output's constant product.
        assert_eq!(plan().bits_needed().0, CONST_BITS + 5 * LOG_DELTA + CONST_BITS);
        assert_eq!(plan().ring().unwrap(), Ring { log_n: 14, k: 312 });
        assert_eq!(Ring::at(15).k, 780);
        assert!(Ring::at(14).key_bits() <= Ring::bound(14) && Ring::at(15).key_bits() <= Ring::bound(15));
    }

    #[test]
    fn invalid_plans_are_refused_with_where() {
        let mut p = plan();
        p.nodes[0].input.terms.push((2, 1.0));
        assert!(p.validate().unwrap_err().to_string().contains("node 0 (relu)"));
        let mut p = plan();
        p.outputs[0].bias = f64::NAN;
        assert!(p.validate().unwrap_err().to_string().contains("output 0"));
        let mut p = plan();
        p.version = 0;
        assert!(p.validate().unwrap_err().to_string().contains("rebuild"));
        let p = plan();
        assert!(p.eval(&[1.0], &mut Reads::default()).unwrap_err().to_string().contains("1 input values"));
    }

    #[test]
    fn layers_chain_the_nodes_and_name_what_breaks_the_chain() {
        let p = plan();
        let l = p.layers().unwrap();
        assert_eq!(l.block, 2);
        assert_eq!(l.stages.len(), 2);
        // Output 0 reads node 0 (value 2), which is value 0 of the last layer.
        assert_eq!(l.stages[1].rows[0].terms, vec![(0, 3.0)]);
        assert_eq!(l.stages[0].diagonals().into_iter().collect::<Vec<_>>(), vec![0, 1]);
        // Row 0 reads input 0 (offset 0) and input 1 (offset 1); row 1 of the block is unused.
        let d = l.stages[0].diagonal_values(2);
        assert_eq!((d[&0].clone(), d[&1].clone()), (vec![0.5, 0.0], vec![-0.25, 0.0]));
        // An output reading an input as well as the last layer skips a layer.
        let mut skip = plan();
        skip.outputs[0].terms.push((0, 1.0));
        assert!(skip.layers().unwrap_err().to_string().contains("output 0 reads a value outside the last layer"));
        // Two values of one layer with different polynomials.
        let mut own = plan();
        own.nodes.push(Node { coeffs: cheb::interpolate(|t| t * t, 7), ..own.nodes[0].clone() });
        assert!(own.layers().unwrap_err().to_string().contains("node 1 (relu) has a polynomial of its own"));
    }

    #[test]
    fn plans_round_trip_through_json() {
        let p = plan();
        // `float_roundtrip`: the coefficients read back are the ones written.
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
