//! `compose-table-chains`: a table whose input is one other table's output, scaled and shifted,
//! becomes one table of the composed function when nothing else reads the inner table.
//!
//! Expects: a verified neuron graph. Guarantees: a verified graph computing the same function up to
//! the f32 rounding of the map between the two tables (its weight, bias and the inner table's
//! center are folded into the composed function as f32 constants); each composed table keeps the
//! inner table's input, range, domain and calibration and the outer table's center and layer;
//! the inner tables go and the wires after them are renumbered. Tables read more than once, or
//! whose input reads several wires, stay. Returns how many tables went.
//!
//! Options: none.

use crate::neurons::passes::NeuronPass;
use crate::neurons::{Lookup, Neurons};
use fhec_ir::{Binary, Fun, Unary};

/// See the module docs.
pub struct ComposeTableChains;

impl NeuronPass for ComposeTableChains {
    fn name(&self) -> &'static str {
        "compose-table-chains"
    }

    fn run(&self, net: &mut Neurons) -> usize {
        compose_chains(net)
    }
}

/// Composes each table whose input is another table's output (times a weight, plus a bias) with
/// that table when nothing else reads it: one bootstrap instead of two, and no rounding or noise
/// between them. The optimizer fuses such chains where the map between the tables is the same for
/// every element; this catches the rest, such as a per-channel batch normalization between a
/// requantization and an activation. Returns how many tables went.
pub fn compose_chains(net: &mut Neurons) -> usize {
    let n = net.wires.len();
    let mut uses = vec![0usize; n];
    let forms =
        net.wires.iter().filter_map(|w| w.lookup.as_ref().map(|l| &l.input)).chain(net.outputs.iter().flatten());
    for f in forms {
        for &(j, _) in &f.terms {
            uses[j as usize] += 1;
        }
    }
    let mut gone = vec![false; n];
    for k in net.n_inputs..n {
        let Some(outer) = &net.wires[k].lookup else { continue };
        let [(j, c)] = outer.input.terms[..] else { continue };
        let j = j as usize;
        let Some(inner) = net.wires[j].lookup.as_ref().filter(|_| uses[j] == 1) else { continue };
        // outer(clip(c * (inner(z) - inner.center) + bias, outer.domain)), z clamped to inner's domain.
        let between = Fun::binary(
            Binary::Add,
            Fun::binary(
                Binary::Mul,
                Fun::binary(Binary::Sub, Fun::of_unary(&inner.f), Fun::Const(inner.center as f32)),
                Fun::Const(c as f32),
            ),
            Fun::Const(outer.input.bias as f32),
        );
        let clipped =
            Fun::Unary(Unary::Clip { min: outer.domain.0 as f32, max: outer.domain.1 as f32 }, Box::new(between));
        let composed = Lookup {
            f: Unary::Fused(Box::new(Fun::of_unary(&outer.f).compose(&clipped))),
            input: inner.input.clone(),
            lo: inner.lo,
            hi: inner.hi,
            domain: inner.domain,
            center: outer.center,
            calibrated: inner.calibrated,
            held_out: inner.held_out,
            quantiles: inner.quantiles.clone(),
            layer: outer.layer.clone(),
        };
        net.wires[k].lookup = Some(composed);
        gone[j] = true;
    }
    net.remove_wires(&gone)
}
