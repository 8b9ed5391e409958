//! The FHE circuit: what the server evaluates.
//!
//! Values live on the discretized torus Z/2^64 (stored as wrapping `i64`). A circuit has `n_inputs`
//! input wires (encrypted by the client) and a list of programmable bootstraps; bootstrap `k` defines
//! wire `n_inputs + k`. Every bootstrap reads an affine combination of earlier wires with integer
//! weights (leveled, cheap) and applies a table: the accumulator's position `acc >> shift`
//! (arithmetic shift, so in `[-N/2, N/2)` when the compiler's ranges hold; `N` and `shift` come from
//! the circuit's parameter set) selects the output value. Outputs are affine combinations of wires,
//! decrypted by the client.

use crate::params::ParamSet;
use serde::{Deserialize, Serialize};

/// The most inputs, or bootstraps, a circuit may have (the compiler's bound on encrypted values,
/// `--max-encrypted-values`, is 2^22 by default).
pub const MAX_WIRES: usize = 1 << 26;

/// `bias + sum(weight * wire)`, in wrapping torus arithmetic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub terms: Vec<(u32, i64)>,
    pub bias: i64,
}

impl Affine {
    pub fn eval(&self, wires: &[i64]) -> i64 {
        self.terms.iter().fold(self.bias, |acc, &(w, c)| acc.wrapping_add(c.wrapping_mul(wires[w as usize])))
    }

    /// Euclidean norm of the weights on wires at or above `first_pbs_wire` (bootstrap outputs, whose
    /// noise dominates; fresh encryptions are ~2^33 times less noisy).
    pub fn pbs_weight_norm(&self, first_pbs_wire: u32) -> f64 {
        self.terms.iter().filter(|(w, _)| *w >= first_pbs_wire).map(|&(_, c)| (c as f64).powi(2)).sum::<f64>().sqrt()
    }
}

/// A lookup table over the usable positions (half the torus, so any function can be tabulated):
/// `values[p + N/2]` for position `p` in `[-N/2, N/2)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub values: Vec<i64>,
}

/// One programmable bootstrap: `table[position(input)]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pbs {
    pub input: Affine,
    pub table: u32,
    /// Standard deviation of the noise at this bootstrap's input, in positions (the noise model).
    pub noise_std: f64,
    /// Index into `Circuit::layers`: the source op this bootstrap comes from (for reports).
    pub layer: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    /// The tfhe-rs parameter set: table size, position scale and noise.
    pub params: ParamSet,
    pub n_inputs: usize,
    pub pbs: Vec<Pbs>,
    pub tables: Vec<Table>,
    pub outputs: Vec<Affine>,
    /// Names of the source ops the bootstraps come from.
    pub layers: Vec<String>,
}

impl Circuit {
    /// `n` independent bootstraps of one input through an identity table, their sum as the one output:
    /// the unit of bootstrap timing (one thread runs them as one batch where the set has a batch form).
    pub fn identity_bootstraps(params: ParamSet, n: usize) -> Circuit {
        let pbs = Pbs { input: Affine { terms: vec![(0, 1)], bias: 0 }, table: 0, noise_std: 0.0, layer: 0 };
        Circuit {
            params,
            n_inputs: 1,
            pbs: vec![pbs; n],
            tables: vec![Table { values: (0..params.positions() as i64).collect() }],
            outputs: vec![Affine { terms: (1..=n as u32).map(|w| (w, 1)).collect(), bias: 0 }],
            layers: vec!["identity".into()],
        }
    }

    /// Checks indices and table sizes: every wire a bootstrap or output reads exists before it.
    pub fn validate(&self) -> Result<(), crate::RuntimeError> {
        let bad = |m: String| Err(crate::RuntimeError::Invalid(m));
        // Wires are allocated per sample: a count no compiled circuit reaches is a damaged file.
        if self.n_inputs > MAX_WIRES || self.pbs.len() > MAX_WIRES {
            return bad(format!(
                "{} inputs and {} bootstraps: more than the {MAX_WIRES} wires a circuit may have",
                self.n_inputs,
                self.pbs.len()
            ));
        }
        let positions = self.params.positions();
        for (i, t) in self.tables.iter().enumerate() {
            if t.values.len() != positions {
                return bad(format!(
                    "table {i} has {} values, expected {positions} for {}",
                    t.values.len(),
                    self.params
                ));
            }
        }
        for (k, p) in self.pbs.iter().enumerate() {
            let defined = self.n_inputs + k;
            if let Some(&(w, _)) = p.input.terms.iter().find(|(w, _)| *w as usize >= defined) {
                return bad(format!("bootstrap {k} reads wire {w}, which is not defined before it"));
            }
            if p.table as usize >= self.tables.len() {
                return bad(format!("bootstrap {k} uses table {}, there are {}", p.table, self.tables.len()));
            }
        }
        let wires = self.n_inputs + self.pbs.len();
        for (i, o) in self.outputs.iter().enumerate() {
            if let Some(&(w, _)) = o.terms.iter().find(|(w, _)| *w as usize >= wires) {
                return bad(format!("output {i} reads wire {w}, there are {wires}"));
            }
        }
        Ok(())
    }

    /// Bootstraps grouped by dependency depth: all bootstraps of one level can run in parallel.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.n_inputs + self.pbs.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for (k, p) in self.pbs.iter().enumerate() {
            let d = p.input.terms.iter().map(|&(w, _)| depth[w as usize]).max().unwrap_or(0) + 1;
            depth[self.n_inputs + k] = d;
            if levels.len() < d {
                levels.resize(d, Vec::new());
            }
            levels[d - 1].push(k);
        }
        levels
    }
}
