//! The client's pre-processing: when the model starts with an elementwise map of each input element
//! that ends in a quantizer (`round`, then `clip` to the integer range: a pre-quantized model's input
//! QuantizeLinear, after its standardization), the client applies it before encrypting, exactly and
//! for free, instead of the server spending one bootstrap per element on it. The server's circuit
//! then takes the quantized integers as its inputs.
//!
//! Only quantizers move: another univariate op on the input (a model starting with an activation)
//! would move the same way, but stays on the server, where the op tests exercise its table.
//!
//! What the client learns is that map's constants (a standardization's means and deviations, the input
//! quantizer's scale and zero point): no layer weights.
//!
//! A tree ensemble's decisions move too, unless the build keeps them private (`decisions` off,
//! `--private-thresholds`): a selection of input features (`gather`), minus constant thresholds,
//! compared with 0, is a one-bit quantizer of each selected feature. The client computes each
//! decision exactly and encrypts its bit, where the server would spend a bootstrap per decision and
//! read features within a few table positions of a threshold on either side under its noise. The
//! client then learns the ensemble's thresholds and the feature each one tests: not the trees, the
//! paths or the leaf values.

use crate::LowerError;
use fhec_ir::{Binary, Module, Op, Tensor, Unary, ValueId};
use std::collections::{HashMap, HashSet};

/// A model cut after its head.
pub struct Split {
    /// Input: the model's input; output `pre_0`: what the server's circuit takes instead.
    pub head: Module,
    /// The rest of the model, whose input (named as the model's) is the head's result.
    pub rest: Module,
}

/// Whether `u`, a user of `x`, can be part of the head: elementwise on `x`, with a constant as its
/// other operand if any, and monotone in `x` (so the image of an input box is the box of its ends'
/// images).
fn head_op(m: &Module, u: ValueId, x: ValueId, decisions: bool) -> bool {
    match &m.node(u).op {
        Op::Gather { .. } => decisions,
        Op::Unary(Unary::Compare { cmp, .. }) => decisions && *cmp != fhec_ir::Cmp::Equal,
        Op::Unary(f) => {
            matches!(
                f,
                Unary::Relu
                    | Unary::Sigmoid
                    | Unary::Tanh
                    | Unary::Neg
                    | Unary::Clip { .. }
                    | Unary::Floor
                    | Unary::Ceil
                    | Unary::Round
                    | Unary::Erf
                    | Unary::Softsign
            ) || matches!(f, Unary::LeakyRelu { alpha } if *alpha >= 0.0)
        }
        Op::Binary(k @ (Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)) => {
            let ops = m.operands(u);
            let (other, x_first) = match ops[..] {
                [a, b] if a == x && b != x => (b, true),
                [a, b] if b == x && a != x => (a, false),
                _ => return false,
            };
            let Op::Const(c) = &m.node(other).op else { return false };
            let same_shape = m.node(u).ty.shape == m.node(x).ty.shape;
            same_shape && (*k != Binary::Div || (x_first && c.to_f32_vec().iter().all(|v| *v != 0.0 && v.is_finite())))
        }
        _ => false,
    }
}

/// Whether a head (`Split::head`, the client's pre-processing) ends in a tree ensemble's decisions:
/// the client then computes them, and the circuit's inputs are their bits.
pub fn ends_in_decisions(head: &Module) -> bool {
    head.outputs().iter().any(|(_, v)| matches!(head.node(*v).op, Op::Unary(Unary::Compare { .. })))
}

/// Runs a head (`Split::head`) on one sample: what the circuit's input codes encode.
pub fn apply(head: &Module, x: &Tensor) -> Result<Tensor, String> {
    fhec_interp::run(head, std::slice::from_ref(x))
        .map(|mut o| o.swap_remove(0))
        .map_err(|e| format!("the client's pre-processing: {e}"))
}

/// Cuts the head off `m`, if it has one worth a bootstrap per element (with `decisions`, also a
/// comparison of selected features with constants: see the module docs).
pub fn split(m: &Module, decisions: bool) -> Result<Option<Split>, LowerError> {
    let inputs = m.inputs();
    let [input] = inputs[..] else { return Ok(None) };
    let outputs: HashSet<ValueId> = m.outputs().iter().map(|(_, v)| *v).collect();
    let (mut chain, mut cut, mut rounded, mut gathered) = (Vec::new(), 0, false, false);
    let mut v = input;
    while !outputs.contains(&v) {
        let [u] = m.users(v)[..] else { break };
        if !head_op(m, u, v, decisions) {
            break;
        }
        chain.push(u);
        match m.node(u).op {
            Op::Unary(Unary::Round) => rounded = true,
            Op::Unary(Unary::Clip { .. }) if rounded => cut = chain.len(),
            Op::Gather { .. } => gathered = true,
            Op::Unary(Unary::Compare { .. }) if gathered => {
                cut = chain.len();
                break;
            }
            // A comparison of the features themselves is an op the server's tables are tested on.
            Op::Unary(Unary::Compare { .. }) => break,
            _ => {}
        }
        v = u;
    }
    chain.truncate(cut);
    let Some(&end) = chain.last() else { return Ok(None) };
    if outputs.contains(&end) {
        return Ok(None);
    }
    let in_head: HashSet<ValueId> = chain.iter().copied().collect();
    let copy_const = |t: &mut Module, map: &mut HashMap<ValueId, ValueId>, o: ValueId| -> Result<ValueId, LowerError> {
        if let Some(&id) = map.get(&o) {
            return Ok(id);
        }
        match &m.node(o).op {
            Op::Const(c) => {
                let id = t.add_const(c.clone(), m.node(o).loc.clone());
                map.insert(o, id);
                Ok(id)
            }
            _ => {
                Err(LowerError::Model(format!("{} reads a value of the client's pre-processing", m.node(o).describe())))
            }
        }
    };
    let name = match &m.node(input).op {
        Op::Input { name } => name.clone(),
        _ => unreachable!("Module::inputs returns input nodes"),
    };
    let mut head = Module::new(format!("{}.preprocess", m.name));
    let mut map = HashMap::from([(input, head.add_input(name.clone(), m.node(input).ty.clone()))]);
    for &u in &chain {
        let operands =
            m.operands(u).into_iter().map(|o| copy_const(&mut head, &mut map, o)).collect::<Result<Vec<_>, _>>()?;
        let id = head.add_node(m.node(u).clone(), &operands);
        map.insert(u, id);
    }
    head.add_output("pre_0", map[&end]);
    head.verify()?;
    let mut rest = Module::new(m.name.clone());
    let mut map = HashMap::from([(end, rest.add_input(name, m.node(end).ty.clone()))]);
    for v in m.topo_order()? {
        if v == input || in_head.contains(&v) || matches!(m.node(v).op, Op::Const(_)) {
            continue;
        }
        let operands =
            m.operands(v).into_iter().map(|o| copy_const(&mut rest, &mut map, o)).collect::<Result<Vec<_>, _>>()?;
        let id = rest.add_node(m.node(v).clone(), &operands);
        map.insert(v, id);
    }
    for (out, v) in m.outputs() {
        let id = copy_const(&mut rest, &mut map, *v)?;
        rest.add_output(out.clone(), id);
    }
    rest.verify()?;
    Ok(Some(Split { head, rest }))
}
