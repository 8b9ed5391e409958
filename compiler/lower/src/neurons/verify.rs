//! The neuron graph's verifier: the invariants every stage after `scalarize` keeps and every
//! backend relies on. Errors name the wire (`w7`), output element (`o0.3`) or field at fault.

use super::{Form, Neurons, QUANTILES};
use crate::LowerError;

fn invalid(at: impl Into<String>, why: impl Into<String>) -> LowerError {
    LowerError::InvalidNeurons { at: at.into(), why: why.into() }
}

/// `[lo, hi]` holds no NaN and `lo <= hi`.
fn interval(at: &str, what: &str, (lo, hi): (f64, f64)) -> Result<(), LowerError> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(invalid(at, format!("{what} [{lo:?}, {hi:?}] is not an interval")));
    }
    Ok(())
}

/// A form reads wires below `limit` (`limit_why` says why that is the limit), each once and in
/// increasing order, with no NaN in its coefficients, bias or bound.
fn form(at: &str, f: &Form, limit: usize, limit_why: &str) -> Result<(), LowerError> {
    let mut last = None;
    for &(w, c) in &f.terms {
        if w as usize >= limit {
            return Err(invalid(at, format!("reads w{w}, {limit_why}")));
        }
        if last.is_some_and(|l| l >= w) {
            return Err(invalid(at, format!("reads w{w} out of order or twice (terms go by increasing wire)")));
        }
        if c.is_nan() {
            return Err(invalid(at, format!("the weight of w{w} is NaN")));
        }
        last = Some(w);
    }
    if f.bias.is_nan() {
        return Err(invalid(at, "the bias is NaN"));
    }
    interval(at, "the form's bound", (f.lo, f.hi))
}

impl Neurons {
    /// Checks the graph's invariants: wires `0..n_inputs` are inputs (no table) and every later wire
    /// is a table; a table's input reads only earlier wires and the outputs only existing ones;
    /// every bound is an interval without NaN; a table's domain lies within its range; an input
    /// wire is its own class; the calibrated output ranges, if any, are one per output element.
    pub fn verify(&self) -> Result<(), LowerError> {
        if self.n_inputs > self.wires.len() {
            return Err(invalid("inputs", format!("{} inputs but {} wires", self.n_inputs, self.wires.len())));
        }
        for (k, w) in self.wires.iter().enumerate() {
            let at = format!("w{k}");
            interval(&at, "the bound", (w.lo, w.hi))?;
            let Some(l) = &w.lookup else {
                if k >= self.n_inputs {
                    return Err(invalid(
                        &at,
                        format!("an input wire past the {} inputs (must be a table)", self.n_inputs),
                    ));
                }
                if w.class != k {
                    return Err(invalid(&at, format!("input wire in class {} (each input is its own class)", w.class)));
                }
                continue;
            };
            if k < self.n_inputs {
                return Err(invalid(&at, format!("a table among the {} input wires", self.n_inputs)));
            }
            form(&at, &l.input, k, "which is not before it")?;
            interval(&at, "the input range", (l.lo, l.hi))?;
            interval(&at, "the domain", l.domain)?;
            if l.domain.0 < l.lo || l.domain.1 > l.hi {
                return Err(invalid(
                    &at,
                    format!("the domain {:?} exceeds the input range [{:?}, {:?}]", l.domain, l.lo, l.hi),
                ));
            }
            if l.center.is_nan() {
                return Err(invalid(&at, "the center is NaN"));
            }
            if let Some(c) = l.calibrated {
                interval(&at, "the calibrated window", c)?;
            }
            if l.held_out.0 > l.held_out.1 {
                return Err(invalid(&at, format!("{}/{} held-out reads outside", l.held_out.0, l.held_out.1)));
            }
            if l.quantiles.len() > QUANTILES {
                return Err(invalid(&at, format!("{} quantiles (at most {QUANTILES})", l.quantiles.len())));
            }
            if l.quantiles.iter().any(|q| q.is_nan()) || l.quantiles.windows(2).any(|p| p[0] > p[1]) {
                return Err(invalid(&at, "the quantiles are not ascending numbers"));
            }
        }
        for (i, group) in self.outputs.iter().enumerate() {
            for (e, f) in group.iter().enumerate() {
                form(&format!("o{i}.{e}"), f, self.wires.len(), &format!("there are {} wires", self.wires.len()))?;
            }
        }
        if let Some(ranges) = &self.calibrated {
            let n: usize = self.outputs.iter().map(Vec::len).sum();
            if ranges.len() != n {
                return Err(invalid("calibrated outputs", format!("{} ranges for {n} output elements", ranges.len())));
            }
            for (i, &r) in ranges.iter().enumerate() {
                interval("calibrated outputs", &format!("range {i}"), r)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::neurons::Neurons;

    const INPUTS: &str = "inputs 2\nw0 = input bound [-1.0, 1.0] class 0\nw1 = input bound [0.0, 2.0] class 1\n";

    /// A relu table line reading `input`, with the given range, domain and bound.
    fn table(input: &str, range: &str, domain: &str, bound: &str) -> String {
        format!("table relu ({input}) range {range} domain {domain} center 0.0 bound {bound} class 7 layer \"relu\"\n")
    }

    /// `body` after two input wires parses; the verifier refuses it with `want` (or accepts it if
    /// `want` is empty).
    fn check(body: &str, want: &str) {
        let n: Neurons = format!("{INPUTS}{body}").parse().unwrap();
        match (n.verify(), want) {
            (Ok(()), "") => {}
            (Ok(()), _) => panic!("accepted, wanted {want}:\n{n}"),
            (Err(e), _) => assert!(!want.is_empty() && e.to_string().contains(want), "{e} (wanted `{want}`)"),
        }
    }

    #[test]
    fn the_verifier_names_the_wire_at_fault() {
        let ok = table("1.0*w0 - 1.0*w1 in [-3.0, 1.0]", "[-3.0, 1.0]", "[-3.0, 1.0]", "[0.0, 1.0]");
        let out = "output 0 size 1\no0.0 = (2.0*w2 in [0.0, 2.0])\n";
        check(&format!("w2 = {ok}{out}calibrated outputs [0.0, 1.5]\n"), "");
        check(
            &format!("w2 = {}", table("1.0*w2 in [0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]")),
            "w2: reads w2, which is not before it",
        );
        check(
            &format!("w2 = {}", table("1.0*w1 + 1.0*w0 in [0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]")),
            "w2: reads w0 out of order",
        );
        check(
            &format!("w2 = {}", table("1.0*w0 in [0.0, 1.0]", "[1.0, 0.0]", "[0.0, 1.0]", "[0.0, 1.0]")),
            "w2: the input range [1.0, 0.0] is not an interval",
        );
        check(
            &format!("w2 = {}", table("1.0*w0 in [0.0, 1.0]", "[0.0, 1.0]", "[-1.0, 1.0]", "[0.0, 1.0]")),
            "w2: the domain (-1.0, 1.0) exceeds the input range",
        );
        check(
            &format!("w2 = {}", table("1.0*w0 in [0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]", "[NaN, 1.0]")),
            "w2: the bound [NaN, 1.0] is not an interval",
        );
        check(
            &format!("w2 = {ok}{out}calibrated outputs [0.0, 1.5] [0.0, 1.0]\n"),
            "calibrated outputs: 2 ranges for 1 output elements",
        );
        check(
            &format!("w2 = {ok}output 0 size 1\no0.0 = (1.0*w3 in [0.0, 2.0])\n"),
            "o0.0: reads w3, there are 3 wires",
        );
        check("w2 = input bound [0.0, 1.0] class 2\n", "w2: an input wire past the 2 inputs");
        let n: Neurons = format!(
            "inputs 2\nw0 = input bound [-1.0, 1.0] class 0\nw1 = {}",
            table("1.0*w0 in [0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]", "[0.0, 1.0]")
        )
        .parse()
        .unwrap();
        assert!(n.verify().unwrap_err().to_string().contains("w1: a table among the 2 input wires"));
        let n: Neurons = "inputs 1\nw0 = input bound [-1.0, 1.0] class 3\n".parse().unwrap();
        assert!(n.verify().unwrap_err().to_string().contains("w0: input wire in class 3"));
        let n: Neurons = "inputs 2\nw0 = input bound [-1.0, 1.0] class 0\n".parse().unwrap();
        assert!(n.verify().unwrap_err().to_string().contains("inputs: 2 inputs but 1 wires"));
    }
}
