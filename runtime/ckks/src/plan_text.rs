//! A readable text form of a [`Plan`], for `fhec inspect --stage plan`: its sizes and input box,
//! then one line per polynomial node (the value it defines, its degree, its affine input, its
//! layer and its first and last Chebyshev coefficients) and one line per output. It is for reading
//! only: coefficients are summarized, so it does not parse back; the plan format is serde's.
//!
//! ```text
//! plan v1: 2 inputs, 1 polynomial (degree 15), 1 output
//! input box [-2.0, 2.0] [-1.5, 3.0]
//! v2 = poly degree 15 (0.5*v0 - 1.25*v1 + 0.1) layer "/fc1/Relu" coeffs [0.61, 0.5, 0.21, ..., -0.0013]
//! o0 = (2.0*v2 + 0.25)
//! ```

use crate::plan::{Affine, Plan};
use std::fmt;

/// How many coefficients a node line shows at each end (the first three, the last one).
const HEAD: usize = 3;
/// Boxes the input box line shows before `...`.
const BOXES: usize = 8;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = |x: f64, first: bool| match (x.is_sign_negative(), first) {
            (true, true) => "-",
            (true, false) => " - ",
            (false, true) => "",
            (false, false) => " + ",
        };
        write!(f, "(")?;
        for (i, &(w, c)) in self.terms.iter().enumerate() {
            write!(f, "{}{:?}*v{w}", sign(c, i == 0), c.abs())?;
        }
        if self.terms.is_empty() || self.bias != 0.0 {
            write!(f, "{}{:?}", sign(self.bias, self.terms.is_empty()), self.bias.abs())?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let degrees = self.nodes.iter().map(|n| n.degree());
        let degree = match (degrees.clone().min(), degrees.max()) {
            (Some(a), Some(b)) if a == b => format!(" (degree {a})"),
            (Some(a), Some(b)) => format!(" (degrees {a} to {b})"),
            _ => String::new(),
        };
        writeln!(
            f,
            "plan v{}: {}, {}{degree}, {}",
            self.version,
            plural(self.n_inputs, "input", "inputs"),
            plural(self.nodes.len(), "polynomial", "polynomials"),
            plural(self.outputs.len(), "output", "outputs"),
        )?;
        write!(f, "input box")?;
        for (lo, hi) in self.input_box.iter().take(BOXES) {
            write!(f, " [{lo:?}, {hi:?}]")?;
        }
        if self.input_box.len() > BOXES {
            write!(f, " ... ({} in all)", self.input_box.len())?;
        }
        writeln!(f)?;
        for (k, n) in self.nodes.iter().enumerate() {
            let c = &n.coeffs;
            let show = |s: &[f64]| s.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
            let coeffs = if c.len() <= HEAD + 1 {
                show(c)
            } else {
                format!("{}, ..., {}", show(&c[..HEAD]), show(&c[c.len() - 1..]))
            };
            writeln!(
                f,
                "v{} = poly degree {} {} layer {:?} coeffs [{coeffs}]",
                self.n_inputs + k,
                n.degree(),
                n.input,
                n.layer
            )?;
        }
        for (i, o) in self.outputs.iter().enumerate() {
            writeln!(f, "o{i} = {o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{Affine, Node, PLAN_VERSION, Plan};

    #[test]
    fn a_plan_prints_one_line_per_node_and_output() {
        let plan = Plan {
            version: PLAN_VERSION,
            n_inputs: 2,
            input_box: vec![(-2.0, 2.0), (-1.5, 3.0)],
            nodes: vec![Node {
                input: Affine { terms: vec![(0, 0.5), (1, -1.25)], bias: 0.1 },
                coeffs: vec![0.5, 0.25, 0.125, 0.0625, -0.001],
                layer: "/fc1/Relu".into(),
            }],
            outputs: vec![Affine { terms: vec![(2, 2.0)], bias: -0.25 }],
        };
        assert_eq!(
            plan.to_string(),
            format!(
                "plan v{PLAN_VERSION}: 2 inputs, 1 polynomial (degree 4), 1 output\n\
                 input box [-2.0, 2.0] [-1.5, 3.0]\n\
                 v2 = poly degree 4 (0.5*v0 - 1.25*v1 + 0.1) layer \"/fc1/Relu\" coeffs [0.5, 0.25, 0.125, ..., -0.001]\n\
                 o0 = (2.0*v2 - 0.25)\n"
            )
        );
    }
}
