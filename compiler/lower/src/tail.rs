//! The client/server split: the final ops that only shape the answer (softmax, sigmoid, argmax, any
//! univariate function, reshapes) run on the client after decryption, where they are free. The server
//! computes the "frontier": the values those ops read.

use fhec_ir::{Module, Op, ValueId};
use std::collections::HashSet;

/// Ops that may run on the client: those that carry no model weights (the client artifact holds none),
/// so elementwise arithmetic only with scalar constants.
fn client_op(m: &Module, v: ValueId) -> bool {
    match &m.node(v).op {
        Op::Unary(_)
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::ArgMax { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Concat { .. }
        | Op::Reduce { .. } => true,
        Op::Binary(_) => m.operands(v).iter().all(|&o| !matches!(&m.node(o).op, Op::Const(t) if t.numel() > 1)),
        // A constant that only client values read, or that is itself an output (a model that outputs
        // its input's shape): the client sees it anyway.
        Op::Const(_) => true,
        _ => false,
    }
}

/// The values computed on the client: every value whose users are all outputs or client values, and
/// whose op is a client op.
pub fn client_values(m: &Module) -> Result<HashSet<ValueId>, fhec_ir::IrError> {
    let outputs: HashSet<ValueId> = m.outputs().iter().map(|(_, v)| *v).collect();
    let mut client = HashSet::new();
    for v in m.topo_order()?.into_iter().rev() {
        let users = m.users(v);
        let all_users_client = users.iter().all(|u| client.contains(u));
        if client_op(m, v) && (outputs.contains(&v) || !users.is_empty()) && all_users_client {
            client.insert(v);
        }
    }
    Ok(client)
}

/// The server's results: operands of client values that are not client values, and outputs computed
/// on the server, in first-use order without repeats.
pub fn frontier(m: &Module, client: &HashSet<ValueId>) -> Vec<ValueId> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let order = m.topo_order().unwrap_or_default();
    for v in order {
        if client.contains(&v) {
            for o in m.operands(v) {
                if !client.contains(&o) && !matches!(m.node(o).op, Op::Const(_)) && seen.insert(o) {
                    out.push(o);
                }
            }
        }
    }
    for (_, v) in m.outputs() {
        if !client.contains(v) && seen.insert(*v) {
            out.push(*v);
        }
    }
    out
}
