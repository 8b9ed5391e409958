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

/// One activation: `Σ coeffs[k] T_k(input)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Maps the activation's input onto `[-1, 1]` over its window.
    pub input: Affine,
    /// Chebyshev coefficients, degree `coeffs.len() - 1`.
    pub coeffs: Vec<f64>,
    /// The window in the activation's own units: where the polynomial follows the function. Outside
    /// it a polynomial diverges, so a read outside is counted ([`Reads`]).
    pub window: (f64, f64),
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
    /// The client clamps each input element into its box before encrypting.
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
    /// Ciphertext-by-ciphertext products (with relinearization), the polynomials'.
    pub products: usize,
    /// Multiplicative depth of the longest path.
    pub depth: u32,
}

/// Ciphertext products to evaluate a degree-`d` polynomial: the power basis `T_2..T_d` by doubling
/// and products (`d - 1`). What `backend` does; baby-step giant-step would need about `2 sqrt(d)`.
pub fn products(degree: usize) -> usize {
    degree.saturating_sub(1)
}

impl Plan {
    /// Checks what a plan read from disk must satisfy before anything evaluates it.
    pub fn validate(&self) -> Result<(), CkksError> {
        let bad = |what: String| Err(CkksError::Plan(what));
        if self.version != PLAN_VERSION {
            return bad(format!("plan version {} (this fhec reads version {PLAN_VERSION}): rebuild the model", self.version));
        }
        if self.input_box.len() != self.n_inputs {
            return bad(format!("{} input boxes for {} inputs", self.input_box.len(), self.n_inputs));
        }
        if let Some((i, b)) = self.input_box.iter().enumerate().find(|(_, (lo, hi))| !(lo.is_finite() && hi.is_finite() && lo <= hi)) {
            return bad(format!("input {i}: box {b:?} is not a finite interval"));
        }
        let check = |a: &Affine, limit: usize, what: &dyn Fn() -> String| -> Result<(), CkksError> {
            if let Some(&(w, c)) = a.terms.iter().find(|&&(w, c)| w as usize >= limit || !c.is_finite()) {
                return Err(CkksError::Plan(format!("{}: term ({w}, {c}) reads a later value or is not finite", what())));
            }
            if !a.bias.is_finite() {
                return Err(CkksError::Plan(format!("{}: bias is not finite", what())));
            }
            Ok(())
        };
        for (k, n) in self.nodes.iter().enumerate() {
            check(&n.input, self.n_inputs + k, &|| format!("node {k} ({})", n.layer))?;
            if n.coeffs.is_empty() || n.degree() > MAX_DEGREE || n.coeffs.iter().any(|c| !c.is_finite()) {
                return bad(format!("node {k} ({}): {} coefficients (1 to {} finite ones)", n.layer, n.coeffs.len(), MAX_DEGREE + 1));
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
        let mut v: Vec<f64> = x.iter().zip(&self.input_box).map(|(&x, &(lo, hi))| x.clamp(lo, hi)).collect();
        v.reserve(self.nodes.len());
        for n in &self.nodes {
            let t = n.input.eval(&v);
            reads.total += 1;
            reads.outside += usize::from(t.abs() > 1.0);
            v.push(cheb::eval(&n.coeffs, t));
        }
        Ok(self.outputs.iter().map(|o| o.eval(&v)).collect())
    }

    /// The multiplicative depth of each value: inputs 0; a node one for its affine map (a product
    /// by real constants) plus its polynomial's.
    pub fn depths(&self) -> Vec<u32> {
        let mut d = vec![0u32; self.n_inputs];
        for n in &self.nodes {
            let input = n.input.terms.iter().map(|&(w, _)| d[w as usize]).max().unwrap_or(0);
            d.push(input + 1 + cheb::depth(n.degree()));
        }
        d
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan serializes")
    }

    /// A plan from its JSON text, validated.
    pub fn from_json(text: &str) -> Result<Plan, CkksError> {
        let plan: Plan = serde_json::from_str(text).map_err(|e| CkksError::Plan(format!("not a CKKS plan: {e}")))?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn cost(&self) -> Cost {
        let d = self.depths();
        let terms = |a: &Affine| a.terms.len();
        let out_depth = self.outputs.iter().map(|o| o.terms.iter().map(|&(w, _)| d[w as usize]).max().unwrap_or(0) + 1).max().unwrap_or(0);
        Cost {
            scalar_ops: self.nodes.iter().map(|n| terms(&n.input) + n.degree()).sum::<usize>() + self.outputs.iter().map(terms).sum::<usize>(),
            products: self.nodes.iter().map(|n| products(n.degree())).sum(),
            depth: out_depth,
        }
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
            nodes: vec![Node { input: Affine { terms: vec![(0, 0.5), (1, -0.25)], bias: 0.0 }, coeffs, window: (-4.0, 4.0), layer: "relu".into() }],
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
        let mut wide = p.clone();
        wide.input_box[0] = (-10.0, 10.0);
        wide.eval(&[5.0, 0.0], &mut reads).unwrap();
        assert_eq!(reads, Reads { outside: 1, total: 3 });
    }

    #[test]
    fn depth_and_cost() {
        let c = plan().cost();
        assert_eq!(c, Cost { scalar_ops: 2 + 31 + 1, products: 30, depth: 1 + 5 + 1 });
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
    fn plans_round_trip_through_json() {
        let p = plan();
        assert_eq!(Plan::from_json(&p.to_json()).unwrap(), p);
        assert!(Plan::from_json("{}").unwrap_err().to_string().contains("not a CKKS plan"));
    }
}
