//! The module: a dataflow graph of ops (petgraph nodes) whose edges carry operand positions.

use crate::error::IrError;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{Security, Type};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A value of the module: the single result of one node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) NodeIndex);

impl ValueId {
    /// A stable integer for this value (not the printed number, which follows topological order).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One op with its result type and the source location it came from (e.g. the ONNX node name).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub ty: Type,
    pub loc: Option<String>,
}

impl Node {
    /// `relu at "/fc1/Relu"`, for diagnostics.
    pub fn describe(&self) -> String {
        match &self.loc {
            Some(l) => format!("{} at \"{l}\"", self.op.mnemonic()),
            None => self.op.mnemonic().to_string(),
        }
    }
}

/// A graph of ops. Edges go from producer to consumer and are labelled with the operand position.
#[derive(Clone, Debug, Default)]
pub struct Module {
    pub name: String,
    graph: StableDiGraph<Node, u32>,
    outputs: Vec<(String, ValueId)>,
}

impl Module {
    pub fn new(name: impl Into<String>) -> Module {
        Module { name: name.into(), ..Module::default() }
    }

    /// Adds an encrypted model input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: Type) -> ValueId {
        let ty = Type { security: Security::Enc, ..ty };
        self.add_node(Node { op: Op::Input { name: name.into() }, ty, loc: None }, &[])
    }

    /// Adds a clear constant.
    pub fn add_const(&mut self, tensor: Tensor, loc: Option<String>) -> ValueId {
        let ty = Type::new(Security::Clear, tensor.dtype(), tensor.shape().to_vec());
        self.add_node(Node { op: Op::Const(tensor), ty, loc }, &[])
    }

    /// Adds an op, inferring its result type; fails when the operands do not fit the op.
    pub fn add_op(&mut self, op: Op, operands: &[ValueId], loc: Option<String>) -> Result<ValueId, IrError> {
        let types: Vec<&Type> = operands.iter().map(|&v| &self.node(v).ty).collect();
        let ty = op.infer(&types).map_err(|msg| IrError::Type { op: op.mnemonic(), loc: loc.clone(), msg })?;
        Ok(self.add_node(Node { op, ty, loc }, operands))
    }

    /// Adds a node with the given type without checking it (the parser does this; the verifier checks later).
    pub fn add_node(&mut self, node: Node, operands: &[ValueId]) -> ValueId {
        let n = self.graph.add_node(node);
        for (slot, v) in operands.iter().enumerate() {
            self.graph.add_edge(v.0, n, slot as u32);
        }
        ValueId(n)
    }

    pub fn add_output(&mut self, name: impl Into<String>, v: ValueId) {
        self.outputs.push((name.into(), v));
    }

    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    /// The input values, in the order they were added.
    pub fn inputs(&self) -> Vec<ValueId> {
        let mut v: Vec<ValueId> =
            self.graph.node_indices().filter(|&n| matches!(self.graph[n].op, Op::Input { .. })).map(ValueId).collect();
        v.sort();
        v
    }

    pub fn contains(&self, v: ValueId) -> bool {
        self.graph.contains_node(v.0)
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.graph[v.0]
    }

    pub fn node_mut(&mut self, v: ValueId) -> &mut Node {
        &mut self.graph[v.0]
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Every value, in insertion order.
    pub fn values(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.graph.node_indices().map(ValueId)
    }

    /// The operands of `v`, in operand order.
    pub fn operands(&self, v: ValueId) -> Vec<ValueId> {
        let mut e: Vec<(u32, ValueId)> =
            self.graph.edges_directed(v.0, Direction::Incoming).map(|e| (*e.weight(), ValueId(e.source()))).collect();
        e.sort();
        e.into_iter().map(|(_, v)| v).collect()
    }

    /// Operand slots of `v` as stored (for the verifier: they must be exactly 0..n).
    pub(crate) fn operand_slots(&self, v: ValueId) -> Vec<u32> {
        let mut s: Vec<u32> = self.graph.edges_directed(v.0, Direction::Incoming).map(|e| *e.weight()).collect();
        s.sort_unstable();
        s
    }

    /// The distinct values that use `v` as an operand, in insertion order.
    pub fn users(&self, v: ValueId) -> Vec<ValueId> {
        let mut u: Vec<ValueId> = self.graph.neighbors_directed(v.0, Direction::Outgoing).map(ValueId).collect();
        u.sort();
        u.dedup();
        u
    }

    /// Makes every use of `old` (operands and outputs) use `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<_> =
            self.graph.edges_directed(old.0, Direction::Outgoing).map(|e| (e.id(), e.target(), *e.weight())).collect();
        for (id, target, slot) in uses {
            self.graph.remove_edge(id);
            self.graph.add_edge(new.0, target, slot);
        }
        for (_, o) in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Replaces the operands of `v`.
    pub fn set_operands(&mut self, v: ValueId, operands: &[ValueId]) {
        let old: Vec<_> = self.graph.edges_directed(v.0, Direction::Incoming).map(|e| e.id()).collect();
        for id in old {
            self.graph.remove_edge(id);
        }
        for (slot, o) in operands.iter().enumerate() {
            self.graph.add_edge(o.0, v.0, slot as u32);
        }
    }

    /// Removes values that no output depends on. Inputs are kept. Returns how many were removed.
    pub fn remove_dead(&mut self) -> usize {
        let mut live = vec![false; self.graph.node_bound()];
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|(_, v)| v.0).collect();
        stack.extend(self.inputs().into_iter().map(|v| v.0));
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut live[n.index()], true) {
                stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeIndex> = self.graph.node_indices().filter(|n| !live[n.index()]).collect();
        for &n in &dead {
            self.graph.remove_node(n);
        }
        dead.len()
    }

    /// A topological order, deterministic: among ready values the earliest inserted comes first.
    /// Fails on a cycle, naming one value on it.
    pub fn topo_order(&self) -> Result<Vec<ValueId>, IrError> {
        let mut indegree = vec![0usize; self.graph.node_bound()];
        for e in self.graph.edge_references() {
            indegree[e.target().index()] += 1;
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> =
            self.graph.node_indices().filter(|n| indegree[n.index()] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(ValueId(n));
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                indegree[t.index()] -= 1;
                if indegree[t.index()] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        if order.len() != self.graph.node_count() {
            let stuck = self.graph.node_indices().find(|n| indegree[n.index()] > 0).map(ValueId);
            let what = stuck.map(|v| self.node(v).describe()).unwrap_or_default();
            return Err(IrError::Verify { value: what, msg: "the graph has a cycle through this value".into() });
        }
        Ok(order)
    }

    /// Number of nodes per mnemonic, sorted by mnemonic (for reports and tests).
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for n in self.graph.node_weights() {
            *counts.entry(n.op.mnemonic()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }
}
