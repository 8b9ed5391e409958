//! `elide-affine-tables`: a table whose function is affine over its input's range becomes that
//! affine map of its input, folded into every form that reads it: no bootstrap.
//!
//! Expects: a verified neuron graph whose table ranges hold for every input in the input box (as
//! `scalarize` makes them). Guarantees: a verified graph computing the same values on every input
//! in the box (the forms that read an elided table keep their structural bound); the elided tables
//! go and the wires after them are renumbered. Tables whose domain is narrower than their range
//! (a function with a pole saturated around its calibrated inputs) stay. Returns how many tables
//! went.
//!
//! Options: none. The pipeline runs it for TFHE only (see `Prepared::for_polynomials`).

use crate::neurons::passes::NeuronPass;
use crate::neurons::{Form, Neurons};
use fhec_ir::Fun;
use std::collections::HashMap;

/// See the module docs.
pub struct ElideAffineTables;

impl NeuronPass for ElideAffineTables {
    fn name(&self) -> &'static str {
        "elide-affine-tables"
    }

    fn run(&self, net: &mut Neurons) -> usize {
        elide_affine_tables(net)
    }
}

/// Replaces each table whose function is affine over its input's bound (`Fun::affine_on`: a
/// relu of a value that cannot be negative, a clip that cannot clip, a step that cannot step)
/// by that affine map of its input, folded into the forms that read it: no bootstrap. Exact:
/// the bound holds for every input in the input box (the circuit clamps inputs into it), and the
/// table would compute the same values there. Tables of functions with a pole keep their
/// calibrated domain (`saturated`) and are left alone when it is narrower than the bound.
/// Returns how many tables went.
pub fn elide_affine_tables(net: &mut Neurons) -> usize {
    let n = net.wires.len();
    let mut gone = vec![false; n];
    // The form each elided wire stands for, over wires that remain.
    let mut replaced: HashMap<u32, Form> = HashMap::new();
    for (k, (wire, gone)) in net.wires.iter_mut().zip(gone.iter_mut()).enumerate() {
        let Some(l) = wire.lookup.as_mut() else { continue };
        l.input = substitute(&l.input, &replaced);
        if l.domain.0 > l.lo || l.domain.1 < l.hi {
            continue;
        }
        let Some((a, b)) = Fun::of_unary(&l.f).affine_on(l.lo, l.hi) else { continue };
        let mut form = Form::combine(&[(a, &l.input), (1.0, &Form::constant(b - l.center))]);
        (form.lo, form.hi) = (wire.lo, wire.hi);
        replaced.insert(k as u32, form);
        *gone = true;
    }
    if replaced.is_empty() {
        return 0;
    }
    for f in net.outputs.iter_mut().flatten() {
        *f = substitute(f, &replaced);
    }
    net.remove_wires(&gone)
}

/// `f` with every term on a wire in `replaced` expanded into that wire's form. The structural
/// bound stays (the values are the same).
fn substitute(f: &Form, replaced: &HashMap<u32, Form>) -> Form {
    if !f.terms.iter().any(|(w, _)| replaced.contains_key(w)) {
        return f.clone();
    }
    let mut rest = f.clone();
    rest.terms.retain(|(w, _)| !replaced.contains_key(w));
    let mut parts: Vec<(f64, &Form)> = vec![(1.0, &rest)];
    parts.extend(f.terms.iter().filter_map(|(w, c)| replaced.get(w).map(|r| (*c, r))));
    let mut out = Form::combine(&parts);
    (out.lo, out.hi) = (f.lo, f.hi);
    out
}
