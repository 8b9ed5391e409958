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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_passes;

    /// Runs cleanup on `input` (IR text), checks the printed result and that outputs are unchanged
    /// on a sample input.
    fn check(input: &str, expect: &str) {
        let mut m: Module = input.parse().expect("test input parses");
        m.verify().expect("test input verifies");
        let sample = sample_inputs(&m);
        let before = fhec_interp::run(&m, &sample).expect("runs before");
        let mut ctx = PassCtx { verify_each: true, ..PassCtx::default() };
        run_passes(&mut m, &[&Cleanup], &mut ctx).expect("pass runs");
        let after = fhec_interp::run(&m, &sample).expect("runs after");
        assert_eq!(before, after, "cleanup changed the results");
        assert_eq!(m.to_string().trim(), expect.trim());
    }

    fn sample_inputs(m: &Module) -> Vec<fhec_ir::Tensor> {
        m.inputs()
            .iter()
            .map(|&v| {
                let shape = m.node(v).ty.shape.clone();
                let n = fhec_ir::numel(&shape);
                fhec_ir::Tensor::from_f32(shape, (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()).unwrap()
            })
            .collect()
    }

    #[test]
    fn reshape_chains_collapse_and_identities_vanish() {
        check(
            r#"module "m"
%0 = input "x" : enc<f32>[1,2,3]
%1 = reshape{shape=[2,3]} %0 : enc<f32>[2,3]
%2 = reshape{shape=[6]} %1 : enc<f32>[6]
%3 = reshape{shape=[1,2,3]} %2 : enc<f32>[1,2,3]
%4 = relu %3 : enc<f32>[1,2,3]
output "y" = %4
"#,
            r#"module "m"
%0 = input "x" : enc<f32>[1,2,3]
%1 = relu %0 : enc<f32>[1,2,3]
output "y" = %1
"#,
        );
    }

    #[test]
    fn transposes_compose() {
        check(
            r#"module "m"
%0 = input "x" : enc<f32>[2,3,4]
%1 = transpose{perm=[1,2,0]} %0 : enc<f32>[3,4,2]
%2 = transpose{perm=[0,2,1]} %1 : enc<f32>[3,2,4]
output "y" = %2
"#,
            r#"module "m"
%0 = input "x" : enc<f32>[2,3,4]
%1 = transpose{perm=[1,0,2]} %0 : enc<f32>[3,2,4]
output "y" = %1
"#,
        );
    }

    #[test]
    fn inverse_transposes_cancel_and_dead_code_goes() {
        check(
            r#"module "m"
%0 = input "x" : enc<f32>[2,3]
%1 = transpose{perm=[1,0]} %0 : enc<f32>[3,2]
%2 = transpose{perm=[1,0]} %1 : enc<f32>[2,3]
%3 = sigmoid %0 : enc<f32>[2,3]
%4 = tanh %2 : enc<f32>[2,3]
output "y" = %4
"#,
            r#"module "m"
%0 = input "x" : enc<f32>[2,3]
%1 = tanh %0 : enc<f32>[2,3]
output "y" = %1
"#,
        );
    }

    #[test]
    fn nothing_to_do_reports_no_change() {
        let mut m: Module =
            "module \"m\"\n%0 = input \"x\" : enc<f32>[2]\n%1 = relu %0 : enc<f32>[2]\noutput \"y\" = %1\n"
                .parse()
                .unwrap();
        assert_eq!(Cleanup.run(&mut m, &mut PassCtx::default()).unwrap(), Changed::No);
    }
}
