//! What a circuit will take, estimated from the optimized server module before any neuron is made
//! (pipeline stage 5): its encrypted values, bootstraps per sample (the optimizer's count), the
//! affine terms its forms will hold, and so the memory the lowering needs. A model beyond this
//! machine's bounds (`fhec_ir::limits`) is refused here in one line that says all of it, in
//! milliseconds, where scalarizing it would take minutes and more memory than the machine has.

use crate::LowerError;
use fhec_ir::{Fun, Module, Op, Security, Unary, ValueId};
use std::collections::HashMap;

/// Bytes the lowering holds per affine term at its peak: a term is a wire index and a weight (16
/// bytes) in the form that holds it, held again by the forms the passes copy and by the integerized
/// candidates of the search. Measured with peak RSS on this project's 2-core machine: 260 MB for a
/// two-layer CNN of 0.9 M terms, 19.6 GB for a batch of 20 through a 3×3 convolution (68 M terms,
/// `test_operator_conv`): about 290 bytes per term, and a margin.
const TERM_BYTES: f64 = 320.0;
/// Bytes per encrypted value (a form's header and bounds, a wire, their maps).
const VALUE_BYTES: f64 = 256.0;
/// Bytes per wire and calibration sample (each wire's value on every sample, for its range and
/// the search's simulation).
const SAMPLE_BYTES: f64 = 16.0;
/// Memory that every build takes whatever the model (the process, the search's buffers).
const BASE_MB: f64 = 100.0;

/// The estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Size {
    /// Elements of the module's encrypted tensors.
    pub encrypted_values: usize,
    /// Programmable bootstraps per sample, as the optimizer counts them.
    pub bootstraps: usize,
    /// Affine terms of all forms (each a weighted wire).
    pub terms: usize,
    /// Calibration samples the lowering carries through every wire.
    pub samples: usize,
}

impl Size {
    /// The estimate for `m` (the optimized server module) with `bootstraps` from the optimizer's
    /// cost model and `samples` calibration samples.
    pub fn estimate(m: &Module, bootstraps: f64, samples: usize) -> Result<Size, LowerError> {
        let enc = |v: ValueId| m.node(v).ty.security == Security::Enc;
        // Terms per element of each encrypted value: a table's output is one wire; an affine op
        // merges its operands' terms (a convolution of table outputs: one per tap). Capped by the
        // wires that exist (inputs and tables).
        let mut per: HashMap<ValueId, f64> = HashMap::new();
        let (mut values, mut terms) = (0f64, 0f64);
        let wires = bootstraps + m.inputs().iter().map(|&v| m.node(v).ty.numel() as f64).sum::<f64>();
        for v in m.topo_order()? {
            let node = m.node(v);
            if node.ty.security != Security::Enc {
                continue;
            }
            let ops = m.operands(v);
            let of = |i: usize| ops.get(i).filter(|&&o| enc(o)).map_or(0.0, |o| per.get(o).copied().unwrap_or(1.0));
            let shape = |i: usize| ops.get(i).map_or(&[][..], |&o| m.node(o).ty.shape.as_slice());
            let fan_in = |i: usize| shape(i).iter().skip(1).product::<usize>() as f64;
            let t = match &node.op {
                Op::Input { .. } => 1.0,
                Op::Unary(u) if !is_affine(u) => 1.0,
                Op::Conv(_) => of(0) * fan_in(1),
                Op::MatMul => of(0) * shape(0).last().copied().unwrap_or(1) as f64 + of(1),
                Op::AvgPool(p) => of(0) * p.kernel.iter().product::<usize>() as f64,
                // A chain of `a + relu(b - a)`: the first operand's terms and one wire per step.
                Op::MaxPool(p) => of(0) + p.kernel.iter().product::<usize>() as f64,
                Op::Reduce { axes, .. } => {
                    of(0) * axes.iter().map(|&a| shape(0).get(a).copied().unwrap_or(1)).product::<usize>() as f64
                }
                _ => (0..ops.len()).map(of).sum::<f64>().max(1.0),
            }
            .min(wires.max(1.0));
            per.insert(v, t);
            let n = node.ty.numel() as f64;
            values += n;
            terms += n * t;
        }
        let clamp = |x: f64| if x >= usize::MAX as f64 { usize::MAX } else { x as usize };
        Ok(Size { encrypted_values: clamp(values), bootstraps: clamp(bootstraps), terms: clamp(terms), samples })
    }

    /// The memory the lowering is estimated to take, in MiB.
    pub fn memory_mb(&self) -> f64 {
        let wires = self.bootstraps as f64 + self.encrypted_values as f64;
        BASE_MB
            + (self.terms as f64 * TERM_BYTES
                + self.encrypted_values as f64 * VALUE_BYTES
                + wires * self.samples as f64 * SAMPLE_BYTES)
                / (1024.0 * 1024.0)
    }

    /// The estimate against the bounds in force (`fhec_ir::limits`): the first one exceeded, in one
    /// line naming the estimate and the flag that raises the bound.
    pub fn check(&self) -> Result<(), LowerError> {
        let l = fhec_ir::limits::limits();
        let over = if self.bootstraps > l.max_bootstraps {
            Some(format!("beyond the limit of {} bootstraps per sample (--max-bootstraps)", group(l.max_bootstraps)))
        } else if self.memory_mb() > l.max_compile_memory_mb as f64 {
            Some(format!(
                "beyond the limit of {} MB to compile (--max-compile-memory-mb)",
                group(l.max_compile_memory_mb)
            ))
        } else if self.encrypted_values > l.max_encrypted_values {
            Some(format!(
                "beyond the limit of {} encrypted values (--max-encrypted-values)",
                group(l.max_encrypted_values)
            ))
        } else {
            None
        };
        match over {
            Some(why) => Err(LowerError::Model(format!(
                "the model is too large to run encrypted on this machine: {self}; {why}"
            ))),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Size {
    /// One line: bootstraps and their time, values, terms, memory, and the (model-independent) key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = fhec_runtime::ParamSet::P1024;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hours = self.bootstraps as f64 * set.pbs_ms() / cores as f64 / 3.6e6;
        let time = if hours >= 1.0 { format!("{hours:.1} h") } else { format!("{:.1} s", hours * 3600.0) };
        write!(
            f,
            "about {} bootstraps per sample ({time} per sample at {} ms each on {cores} cores), {} encrypted values and \
             {} affine terms, about {} MB to compile (an evaluation key of {} MB whatever the model's size)",
            group(self.bootstraps),
            set.pbs_ms(),
            group(self.encrypted_values),
            group(self.terms),
            group(self.memory_mb().ceil() as usize),
            set.eval_key_bytes().div_ceil(1 << 20),
        )
    }
}

fn is_affine(u: &Unary) -> bool {
    Fun::of_unary(u).affine_coeffs().is_some()
}

/// `n` with thousands separated by commas.
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(5_160_000), "5,160,000");
    }
}
