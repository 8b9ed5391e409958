//! The verifier: checks every invariant the rest of the compiler relies on.
//!
//! - the graph is acyclic, every operand slot is filled exactly once;
//! - every node's type is what `Op::infer` gives for its operands (so shapes, element types and the
//!   clear/encrypted distinction are consistent);
//! - inputs are encrypted, constants are clear and match their data;
//! - outputs exist, input and output names are unique, and there is at least one output.

use crate::error::IrError;
use crate::module::{Module, ValueId};
use crate::op::Op;
use crate::types::{Security, Type};
use std::collections::HashSet;

impl Module {
    /// Checks the module's invariants; the error names the first offending value.
    pub fn verify(&self) -> Result<(), IrError> {
        let order = self.topo_order()?;
        // Values are named as the printer numbers them: by position in this same topological order.
        let fail = |i: usize, v: ValueId, msg: String| {
            Err(IrError::Verify { value: format!("%{i} ({})", self.node(v).describe()), msg })
        };
        let mut input_names = HashSet::new();
        for (i, &v) in order.iter().enumerate() {
            let node = self.node(v);
            let operands = self.operands(v);
            let slots = self.operand_slots(v);
            if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
                return fail(i, v, format!("operand slots {slots:?} are not 0..{}", slots.len()));
            }
            let expected = match &node.op {
                Op::Input { name } => {
                    if !input_names.insert(name.clone()) {
                        return fail(i, v, format!("input name \"{name}\" is used twice"));
                    }
                    if !operands.is_empty() || node.ty.security != Security::Enc {
                        return fail(i, v, "an input has no operands and is encrypted".into());
                    }
                    node.ty.clone()
                }
                Op::Const(t) => {
                    if !operands.is_empty() {
                        return fail(i, v, "a const has no operands".into());
                    }
                    Type::new(Security::Clear, t.dtype(), t.shape().to_vec())
                }
                op => {
                    let types: Vec<&Type> = operands.iter().map(|&o| &self.node(o).ty).collect();
                    match op.infer(&types) {
                        Ok(t) => t,
                        Err(msg) => return fail(i, v, msg),
                    }
                }
            };
            if expected != node.ty {
                return fail(i, v, format!("declared type {} but the op gives {expected}", node.ty));
            }
        }
        if self.outputs().is_empty() {
            return Err(IrError::Verify { value: format!("module \"{}\"", self.name), msg: "no outputs".into() });
        }
        let mut output_names = HashSet::new();
        for (name, v) in self.outputs() {
            if !self.contains(*v) {
                return Err(IrError::Verify {
                    value: format!("output \"{name}\""),
                    msg: "refers to a removed value".into(),
                });
            }
            if !output_names.insert(name) {
                return Err(IrError::Verify { value: format!("output \"{name}\""), msg: "name is used twice".into() });
            }
        }
        Ok(())
    }
}
