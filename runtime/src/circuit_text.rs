//! A readable text form of a [`Circuit`], for `fhec inspect --stage circuit`: its parameters and
//! sizes, then one line per bootstrap (the wire it defines, its table, its integer affine input,
//! noise and layer), one summary line per table and one line per output. It is for reading only:
//! tables are summarized, so it does not parse back; the artifact format is serde's.
//!
//! ```text
//! circuit P2048A: 13 inputs, 2 bootstraps, 1 table, 1 output
//! w13 = pbs t0 (3*w0 - 5*w1 + 1024) noise 0.12 layer "/fc1/Relu"
//! t0 = table of 2048 [0, 0, 0, 0, ..., 1021, 1022, 1023, 1024] min 0 max 1024
//! o0 = (12*w13 + 4*w14 - 7)
//! ```

use crate::circuit::{Affine, Circuit, Table};
use std::fmt;

/// How many values a table line shows at each end.
const TABLE_ENDS: usize = 4;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, &(w, c)) in self.terms.iter().enumerate() {
            let sign = match (c < 0, i == 0) {
                (true, true) => "-",
                (true, false) => " - ",
                (false, true) => "",
                (false, false) => " + ",
            };
            write!(f, "{sign}{}*w{w}", c.unsigned_abs())?;
        }
        if self.terms.is_empty() || self.bias != 0 {
            let sign = match (self.bias < 0, self.terms.is_empty()) {
                (true, true) => "-",
                (true, false) => " - ",
                (false, true) => "",
                (false, false) => " + ",
            };
            write!(f, "{sign}{}", self.bias.unsigned_abs())?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for Table {
    /// `of N [first values, ..., last values] min a max b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.values;
        let show = |s: &[i64]| s.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let body = if v.len() <= 2 * TABLE_ENDS {
            show(v)
        } else {
            format!("{}, ..., {}", show(&v[..TABLE_ENDS]), show(&v[v.len() - TABLE_ENDS..]))
        };
        write!(f, "of {} [{body}]", v.len())?;
        if let (Some(lo), Some(hi)) = (v.iter().min(), v.iter().max()) {
            write!(f, " min {lo} max {hi}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "circuit {}: {}, {}, {}, {}",
            self.params,
            plural(self.n_inputs, "input", "inputs"),
            plural(self.pbs.len(), "bootstrap", "bootstraps"),
            plural(self.tables.len(), "table", "tables"),
            plural(self.outputs.len(), "output", "outputs"),
        )?;
        for (k, p) in self.pbs.iter().enumerate() {
            write!(f, "w{} = pbs t{} {} noise {:?}", self.n_inputs + k, p.table, p.input, p.noise_std)?;
            match self.layers.get(p.layer as usize) {
                Some(name) => writeln!(f, " layer {name:?}")?,
                None => writeln!(f, " layer #{}", p.layer)?,
            }
        }
        for (i, t) in self.tables.iter().enumerate() {
            writeln!(f, "t{i} = table {t}")?;
        }
        for (i, o) in self.outputs.iter().enumerate() {
            writeln!(f, "o{i} = {o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Circuit, ParamSet};

    #[test]
    fn a_circuit_prints_one_line_per_bootstrap_table_and_output() {
        let params = ParamSet::P512A;
        let text = Circuit::identity_bootstraps(params, 2).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("circuit {params}: 1 input, 2 bootstraps, 1 table, 1 output"));
        assert_eq!(lines[1], "w1 = pbs t0 (1*w0) noise 0.0 layer \"identity\"");
        let n = params.positions();
        assert_eq!(
            lines[3],
            format!(
                "t0 = table of {n} [0, 1, 2, 3, ..., {}, {}, {}, {}] min 0 max {}",
                n - 4,
                n - 3,
                n - 2,
                n - 1,
                n - 1
            )
        );
        assert_eq!(lines[4], "o0 = (1*w1 + 1*w2)");
        assert_eq!(lines.len(), 5);
    }
}
