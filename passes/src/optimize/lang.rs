//! The e-graph's language and analysis, and the conversions IR -> e-graph -> IR.
//!
//! An e-node is a model input, a constant, a scalar function (a leaf naming a [`Fun`]), `map(f, x)`
//! (the function applied to every element of `x`: what becomes one table per element), or any other
//! IR op over its operands. Ops, constants and functions live in side tables of the analysis; nodes
//! carry their indices, so two identical ops on the same operands are one e-node (common
//! subexpressions merge for free).

use egg::{Analysis, DidMerge, EGraph, Id, Language};
use fhec_ir::{DType, Fun, Module, Op, Security, Tensor, Type, Unary, ValueId};
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ENode {
    Input(u32),
    Const(u32),
    Fun(u32),
    /// `[f, x]`: the function of class `f` applied elementwise to `x`.
    Map([Id; 2]),
    Op(u32, Vec<Id>),
}

impl Language for ENode {
    type Discriminant = (u8, u32);

    fn discriminant(&self) -> (u8, u32) {
        match self {
            ENode::Input(i) => (0, *i),
            ENode::Const(i) => (1, *i),
            ENode::Fun(i) => (2, *i),
            ENode::Map(_) => (3, 0),
            ENode::Op(k, _) => (4, *k),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant() && self.children().len() == other.children().len()
    }

    fn children(&self) -> &[Id] {
        match self {
            ENode::Map(c) => c,
            ENode::Op(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            ENode::Map(c) => c,
            ENode::Op(_, c) => c,
            _ => &mut [],
        }
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ENode::Input(i) => write!(f, "input{i}"),
            ENode::Const(i) => write!(f, "const{i}"),
            ENode::Fun(i) => write!(f, "fn{i}"),
            ENode::Map(_) => write!(f, "map"),
            ENode::Op(k, _) => write!(f, "op{k}"),
        }
    }
}

/// The side tables, and the analysis: every class's IR type (`None` for function leaves).
#[derive(Debug, Default)]
pub struct Tables {
    pub inputs: Vec<(String, Type)>,
    pub consts: Vec<Tensor>,
    pub ops: Vec<Op>,
    op_keys: HashMap<String, u32>,
    pub funs: Vec<Fun>,
    fun_keys: HashMap<String, u32>,
}

impl Tables {
    pub fn intern_op(&mut self, op: &Op) -> u32 {
        let key = format!("{}{:?}", op.mnemonic(), op.attrs());
        *self.op_keys.entry(key).or_insert_with(|| {
            self.ops.push(op.clone());
            (self.ops.len() - 1) as u32
        })
    }

    pub fn intern_fun(&mut self, f: &Fun) -> u32 {
        *self.fun_keys.entry(f.to_string()).or_insert_with(|| {
            self.funs.push(f.clone());
            (self.funs.len() - 1) as u32
        })
    }
}

pub type EG = EGraph<ENode, Tables>;

impl Analysis<ENode> for Tables {
    type Data = Option<Type>;

    fn make(egraph: &mut EG, enode: &ENode) -> Option<Type> {
        let t = &egraph.analysis;
        match enode {
            ENode::Input(i) => Some(t.inputs[*i as usize].1.clone()),
            ENode::Const(i) => {
                let c = &t.consts[*i as usize];
                Some(Type::new(Security::Clear, c.dtype(), c.shape().to_vec()))
            }
            ENode::Fun(_) => None,
            ENode::Map([_, x]) => egraph[*x].data.clone().map(|ty| Type { dtype: DType::F32, ..ty }),
            ENode::Op(k, children) => {
                let tys: Option<Vec<Type>> = children.iter().map(|c| egraph[*c].data.clone()).collect();
                let tys = tys?;
                t.ops[*k as usize].infer(&tys.iter().collect::<Vec<_>>()).ok()
            }
        }
    }

    fn merge(&mut self, a: &mut Option<Type>, b: Option<Type>) -> DidMerge {
        match (a.is_some(), b.is_some()) {
            (false, true) => {
                *a = b;
                DidMerge(true, false)
            }
            (true, false) => DidMerge(false, true),
            _ => DidMerge(false, false),
        }
    }
}

/// The function of a `Fun` leaf class.
pub fn fun_of(eg: &EG, id: Id) -> Option<&Fun> {
    eg[id].nodes.iter().find_map(|n| match n {
        ENode::Fun(k) => Some(&eg.analysis.funs[*k as usize]),
        _ => None,
    })
}

pub fn ty(eg: &EG, id: Id) -> Option<&Type> {
    eg[id].data.as_ref()
}

/// A module in an e-graph: the root class of each output, and the source location of each class.
pub struct Loaded {
    pub egraph: EG,
    pub outputs: Vec<(String, Id)>,
    pub locs: HashMap<Id, String>,
    /// The e-node each class was made from (the unoptimized program).
    pub original: HashMap<Id, ENode>,
}

pub fn to_egraph(m: &Module) -> Result<Loaded, fhec_ir::IrError> {
    let mut eg = EG::new(Tables::default());
    let mut ids: HashMap<ValueId, Id> = HashMap::new();
    let mut locs = HashMap::new();
    let mut original = HashMap::new();
    for v in m.topo_order()? {
        let node = m.node(v);
        let ops: Vec<Id> = m.operands(v).iter().map(|o| ids[o]).collect();
        let enode = match &node.op {
            Op::Input { name } => {
                eg.analysis.inputs.push((name.clone(), node.ty.clone()));
                ENode::Input((eg.analysis.inputs.len() - 1) as u32)
            }
            Op::Const(t) => {
                eg.analysis.consts.push(t.clone());
                ENode::Const((eg.analysis.consts.len() - 1) as u32)
            }
            Op::Unary(u) => {
                let k = eg.analysis.intern_fun(&Fun::of_unary(u));
                let f = eg.add(ENode::Fun(k));
                original.entry(f).or_insert(ENode::Fun(k));
                ENode::Map([f, ops[0]])
            }
            op => ENode::Op(eg.analysis.intern_op(op), ops),
        };
        let id = eg.add(enode.clone());
        if let Some(l) = &node.loc {
            locs.entry(id).or_insert_with(|| l.clone());
        }
        original.entry(id).or_insert(enode);
        ids.insert(v, id);
    }
    let outputs = m.outputs().iter().map(|(n, v)| (n.clone(), ids[v])).collect();
    eg.rebuild();
    Ok(Loaded { egraph: eg, outputs, locs, original })
}

/// Builds the module that computes `outputs` with the e-node `choose(class)` for every class it
/// needs. Locations come from the class (or, for a class the rewrites made, from its first user).
pub fn to_module(
    name: &str,
    eg: &EG,
    outputs: &[(String, Id)],
    locs: &HashMap<Id, String>,
    choose: &dyn Fn(Id) -> ENode,
) -> Result<Module, fhec_ir::IrError> {
    let mut m = Module::new(name);
    let mut done: HashMap<Id, ValueId> = HashMap::new();
    // Inputs first, in their original order.
    for (i, (n, t)) in eg.analysis.inputs.iter().enumerate() {
        if let Some(id) = eg.lookup(ENode::Input(i as u32)) {
            done.insert(eg.find(id), m.add_input(n.clone(), t.clone()));
        }
    }
    // One location per canonical class: that of its earliest original node (deterministic when
    // located classes merged).
    let mut by_class: HashMap<Id, (Id, &String)> = HashMap::new();
    for (k, l) in locs {
        let e = by_class.entry(eg.find(*k)).or_insert((*k, l));
        if *k < e.0 {
            *e = (*k, l);
        }
    }
    let loc_of = |id: Id| by_class.get(&id).map(|(_, l)| (*l).clone());
    let mut class_locs: HashMap<Id, Option<String>> = HashMap::new();
    // Depth-first with an explicit stack: (class, location inherited from the user).
    let mut stack: Vec<(Id, Option<String>, bool)> =
        outputs.iter().rev().map(|(_, id)| (eg.find(*id), None, false)).collect();
    while let Some((id, inherited, expanded)) = stack.pop() {
        if done.contains_key(&id) {
            continue;
        }
        let node = choose(id);
        // Constants keep their own location only (they are operands, not layers).
        let own = loc_of(id);
        let loc = class_locs
            .entry(id)
            .or_insert_with(|| if matches!(node, ENode::Const(_)) { own } else { own.or(inherited) })
            .clone();
        let children: Vec<Id> = match &node {
            ENode::Map([_, x]) => vec![eg.find(*x)],
            n => n.children().iter().map(|c| eg.find(*c)).collect(),
        };
        if !expanded {
            stack.push((id, loc.clone(), true));
            for c in children.iter().rev() {
                if !done.contains_key(c) {
                    stack.push((*c, loc.clone(), false));
                }
            }
            continue;
        }
        let operands: Vec<ValueId> = children.iter().map(|c| done[c]).collect();
        let t = &eg.analysis;
        let v = match &node {
            ENode::Input(_) => unreachable!("inputs are added first"),
            ENode::Fun(_) => unreachable!("function leaves are read by their map"),
            ENode::Const(i) => m.add_const(t.consts[*i as usize].clone(), loc),
            ENode::Map([f, _]) => {
                let fun = fun_of(eg, *f).expect("a map's first child is a function").simplify();
                let u = match fun.as_unary() {
                    Some(u) => u.clone(),
                    None => Unary::Fused(Box::new(fun)),
                };
                m.add_op(Op::Unary(u), &operands, loc)?
            }
            ENode::Op(k, _) => m.add_op(t.ops[*k as usize].clone(), &operands, loc)?,
        };
        done.insert(id, v);
    }
    for (n, id) in outputs {
        m.add_output(n.clone(), done[&eg.find(*id)]);
    }
    m.verify()?;
    Ok(m)
}
