//! The import driver: checks every node has a translation, binds initializers and inputs, translates
//! the nodes in order through the `ops` table, and binds the outputs. `ctx` is the context it builds;
//! `ops` never call back here.

use crate::ctx::{Ctx, Val, display_name};
use crate::error::OnnxError;
use crate::ops::{self, Translate};
use crate::proto;
use fhec_ir::{DType, Module, Security, Type};
use tract_onnx::pb;

pub(crate) fn import(graph: &pb::GraphProto, name: &str, opset: i64, dir: Option<&str>) -> Result<Module, OnnxError> {
    let max_nodes = fhec_ir::limits::limits().max_graph_nodes;
    if graph.node.len() > max_nodes {
        return Err(OnnxError::Graph {
            what: "",
            name: graph.name.clone(),
            msg: format!(
                "has {} nodes, beyond the limit of {max_nodes} nodes per graph (--max-graph-nodes)",
                graph.node.len()
            ),
        });
    }
    let unsupported: Vec<(String, String)> = graph
        .node
        .iter()
        .filter(|n| ops::lookup(&n.domain, &n.op_type).is_none())
        .map(|n| (display_name(n), qualified_op(n)))
        .collect();
    if !unsupported.is_empty() {
        return Err(OnnxError::Unsupported {
            nodes: unsupported,
            supported: ops::supported_ops().into_iter().collect(),
        });
    }
    static EMPTY: std::sync::LazyLock<pb::NodeProto> = std::sync::LazyLock::new(pb::NodeProto::default);
    let elem_types = graph.initializer.iter().map(|i| (i.name.clone(), i.data_type)).collect();
    let mut ctx = Ctx::new(name, opset, elem_types, &EMPTY);
    for init in &graph.initializer {
        let t = proto::convert_tensor_in(init, dir).map_err(|msg| OnnxError::Graph {
            what: "initializer",
            name: init.name.clone(),
            msg,
        })?;
        ctx.define(init.name.clone(), Val::constant(t));
    }
    for vi in &graph.input {
        if ctx.value(&vi.name).is_some() {
            continue; // an initializer listed as an input (older exporters): a constant
        }
        let shape =
            proto::input_shape(vi).map_err(|msg| OnnxError::Graph { what: "input", name: vi.name.clone(), msg })?;
        let v = ctx.module.add_input(vi.name.clone(), Type::new(Security::Enc, DType::F32, shape));
        ctx.define(vi.name.clone(), Val::Dyn(v));
    }
    if ctx.module.inputs().is_empty() {
        return Err(OnnxError::Graph {
            what: "",
            name: graph.name.clone(),
            msg: "has no inputs besides initializers".into(),
        });
    }
    for node in &graph.node {
        ctx.node = node;
        let translate: Translate = ops::lookup(&node.domain, &node.op_type).expect("checked above");
        let err = |msg: String| OnnxError::Node { node: display_name(node), op_type: qualified_op(node), msg };
        let outs = translate(&mut ctx).map_err(err)?;
        for (i, name) in node.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match outs.get(i) {
                Some(v) => {
                    ctx.define(name.clone(), v.clone());
                }
                // Optional outputs we do not compute (Dropout's mask, MaxPool's indices) must be unused.
                None => {
                    if graph.node.iter().any(|n| n.input.contains(name)) || graph.output.iter().any(|o| &o.name == name)
                    {
                        return Err(err(format!(
                            "output {i} (\"{name}\") is used, but fhec only computes the first {} output(s)",
                            outs.len()
                        )));
                    }
                }
            }
        }
    }
    ctx.node = &EMPTY;
    for out in &graph.output {
        let v = ctx.value(&out.name).cloned().ok_or_else(|| OnnxError::Graph {
            what: "output",
            name: out.name.clone(),
            msg: "is not produced by any node".into(),
        })?;
        let id = ctx.materialize(&v);
        ctx.module.add_output(out.name.clone(), id);
    }
    ctx.module.remove_dead();
    ctx.module.verify().map_err(|e| OnnxError::Graph {
        what: "",
        name: graph.name.clone(),
        msg: format!("internal error, the imported IR does not verify: {e}"),
    })?;
    Ok(ctx.module)
}

fn qualified_op(n: &pb::NodeProto) -> String {
    if n.domain.is_empty() || n.domain == "ai.onnx" { n.op_type.clone() } else { format!("{}.{}", n.domain, n.op_type) }
}
