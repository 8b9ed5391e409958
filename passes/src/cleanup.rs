//! `cleanup`: removes data movement that does nothing.
//!
//! Expects: a verified module. Guarantees: the same outputs for every input (the rewrites are exact),
//! a verified module, and no node that is
//! - a `reshape` to its operand's own shape, or a `transpose` by the identity permutation (replaced by
//!   the operand);
//! - a `reshape` of a `reshape` (the outer one reads the inner one's operand);
//! - a `transpose` of a `transpose` (composed into one);
//! - unused by any output (removed).
//!
//! Frontends produce such chains from Flatten/Squeeze/Unsqueeze sequences and layout shuffles. No options.
//! Its cases, a module in and the module out: `testsuite/filetests/cleanup/*.ir`.

use crate::{Changed, Pass, PassCtx};
use fhec_ir::{IrError, Module, Op};

pub struct Cleanup;

impl Pass for Cleanup {
    fn name(&self) -> &'static str {
        "cleanup"
    }

    fn run(&self, m: &mut Module, _ctx: &mut PassCtx) -> Result<Changed, IrError> {
        let mut changed = false;
        for v in m.topo_order()? {
            let operand = match m.operands(v).first() {
                Some(&o) => o,
                None => continue,
            };
            let same_shape = m.node(operand).ty.shape == m.node(v).ty.shape;
            match (&m.node(v).op, &m.node(operand).op) {
                (Op::Reshape { .. }, _) if same_shape => {
                    m.replace_all_uses(v, operand);
                    changed = true;
                }
                (Op::Transpose { perm }, _) if perm.iter().enumerate().all(|(i, &p)| i == p) => {
                    m.replace_all_uses(v, operand);
                    changed = true;
                }
                (Op::Reshape { .. }, Op::Reshape { .. }) => {
                    let inner = m.operands(operand)[0];
                    m.set_operands(v, &[inner]);
                    changed = true;
                }
                (Op::Transpose { perm: outer }, Op::Transpose { perm: inner_perm }) => {
                    // y[i] = t[outer[i]] = x[inner[outer[i]]]
                    let composed: Vec<usize> = outer.iter().map(|&i| inner_perm[i]).collect();
                    let inner = m.operands(operand)[0];
                    m.node_mut(v).op = Op::Transpose { perm: composed };
                    m.set_operands(v, &[inner]);
                    changed = true;
                }
                _ => {}
            }
        }
        // A rewired reshape may now reshape to its new operand's own shape; one more sweep settles it.
        if changed {
            for v in m.topo_order()? {
                if let (Op::Reshape { .. } | Op::Transpose { .. }, Some(&o)) = (&m.node(v).op, m.operands(v).first()) {
                    let identity = match &m.node(v).op {
                        Op::Reshape { .. } => m.node(o).ty.shape == m.node(v).ty.shape,
                        Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
                        _ => false,
                    };
                    if identity {
                        m.replace_all_uses(v, o);
                    }
                }
            }
        }
        let removed = m.remove_dead();
        Ok(if changed || removed > 0 { Changed::Yes } else { Changed::No })
    }
}
