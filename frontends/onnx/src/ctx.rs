//! The translation context: ONNX value names to IR values (or folded constants), and the builder that
//! folds every op whose operands are all constant.

use crate::proto::Attrs;
use fhec_ir::{Binary, DType, Module, Op, Security, Tensor, Type, ValueId};
use std::collections::HashMap;
use std::rc::Rc;
use tract_onnx::pb;

/// An ONNX value during translation: a constant (folded, not yet in the module) or an IR value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Const(Rc<Tensor>),
    Dyn(ValueId),
}

impl Val {
    pub fn constant(t: Tensor) -> Val {
        Val::Const(Rc::new(t))
    }

    pub fn as_const(&self) -> Option<&Tensor> {
        match self {
            Val::Const(t) => Some(t),
            Val::Dyn(_) => None,
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub module: Module,
    values: HashMap<String, Val>,
    /// Constants already added to the module, keyed by identity (the `Rc` keeps the key's address alive).
    materialized: HashMap<*const Tensor, (Rc<Tensor>, ValueId)>,
    /// The default-domain opset the model was exported with.
    pub opset: i64,
    /// The node being translated.
    pub node: &'a pb::NodeProto,
    /// The ONNX element type of each initializer (the IR keeps integers as i64; quantization needs
    /// to know uint8 from int8).
    elem_types: HashMap<String, i32>,
}

pub(crate) fn display_name(n: &pb::NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        format!("{}->{}", n.op_type, n.output.first().map(String::as_str).unwrap_or("?"))
    }
}

impl<'a> Ctx<'a> {
    /// An empty context for a module named `name`, at `node`; `elem_types` are the initializers'
    /// ONNX element types.
    pub fn new(name: &str, opset: i64, elem_types: HashMap<String, i32>, node: &'a pb::NodeProto) -> Ctx<'a> {
        Ctx { module: Module::new(name), values: HashMap::new(), materialized: HashMap::new(), opset, node, elem_types }
    }

    /// Binds the ONNX value `name`.
    pub fn define(&mut self, name: String, v: Val) {
        self.values.insert(name, v);
    }

    /// The value the ONNX name is bound to.
    pub fn value(&self, name: &str) -> Option<&Val> {
        self.values.get(name)
    }

    pub fn attrs(&self) -> Attrs<'a> {
        Attrs(self.node)
    }

    fn loc(&self) -> Option<String> {
        Some(display_name(self.node))
    }

    /// Number of inputs given to the node (trailing empty names count as absent).
    /// The ONNX element type of input `i` when it is an initializer.
    pub fn input_elem_type(&self, i: usize) -> Option<i32> {
        self.node.input.get(i).and_then(|n| self.elem_types.get(n)).copied()
    }

    /// The node's output count (Split without sizes splits into this many parts).
    pub fn n_outputs(&self) -> usize {
        self.node.output.len()
    }

    pub fn n_inputs(&self) -> usize {
        self.node.input.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1)
    }

    /// Input `i`, or `None` when it is absent (an optional input left out).
    pub fn opt_input(&self, i: usize) -> Result<Option<Val>, String> {
        match self.node.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self
                .values
                .get(name)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("input \"{name}\" is not defined before this node")),
        }
    }

    pub fn input(&self, i: usize) -> Result<Val, String> {
        self.opt_input(i)?.ok_or_else(|| format!("missing required input {i}"))
    }

    /// Input `i`, which must be a constant (an initializer or a folded subgraph).
    pub fn const_input(&self, i: usize, what: &str) -> Result<Option<Tensor>, String> {
        match self.opt_input(i)? {
            None => Ok(None),
            Some(Val::Const(t)) => Ok(Some((*t).clone())),
            Some(Val::Dyn(_)) => Err(format!(
                "input {i} ({what}) must be a constant (initializer or constant subgraph), but it depends on the model input"
            )),
        }
    }

    /// Constant integer list input (axes, shapes, pads...).
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.const_input(i, what)?.map(|t| t.to_i64_vec()))
    }

    pub fn ty(&self, v: &Val) -> Type {
        match v {
            Val::Const(t) => Type::new(Security::Clear, t.dtype(), t.shape().to_vec()),
            Val::Dyn(id) => self.module.node(*id).ty.clone(),
        }
    }

    pub fn shape(&self, v: &Val) -> Vec<usize> {
        self.ty(v).shape
    }

    pub fn materialize(&mut self, v: &Val) -> ValueId {
        match v {
            Val::Dyn(id) => *id,
            Val::Const(t) => {
                let key = Rc::as_ptr(t);
                if let Some((_, id)) = self.materialized.get(&key) {
                    return *id;
                }
                let id = self.module.add_const((**t).clone(), None);
                self.materialized.insert(key, (t.clone(), id));
                id
            }
        }
    }

    /// Applies an op: folded to a constant when every operand is constant, else added to the module.
    pub fn op(&mut self, op: Op, xs: &[Val]) -> Result<Val, String> {
        let types: Vec<Type> = xs.iter().map(|v| self.ty(v)).collect();
        let refs: Vec<&Type> = types.iter().collect();
        let ty = op.infer(&refs)?;
        if xs.iter().all(|v| v.as_const().is_some()) {
            let ts: Vec<&Tensor> = xs.iter().filter_map(Val::as_const).collect();
            return fhec_interp::eval_op(&op, &ts, &ty).map(Val::constant);
        }
        let ids: Vec<ValueId> = xs.iter().map(|v| self.materialize(v)).collect();
        let loc = self.loc();
        self.module.add_op(op, &ids, loc).map(Val::Dyn).map_err(|e| e.to_string())
    }

    /// Elementwise arithmetic; integer constants (shape computations) fold with integer semantics.
    pub fn binary(&mut self, b: Binary, x: &Val, y: &Val) -> Result<Val, String> {
        if let (Some(p), Some(q)) = (x.as_const(), y.as_const())
            && (p.dtype() == DType::I64 || q.dtype() == DType::I64)
        {
            return int_binary(b, p, q).map(Val::constant);
        }
        for v in [x, y] {
            if v.as_const().is_none() && self.ty(v).dtype != DType::F32 {
                return Err(format!("arithmetic on a computed {} tensor is not supported", self.ty(v).dtype));
            }
        }
        let (x, y) = (self.to_f32(x), self.to_f32(y));
        self.op(Op::Binary(b), &[x, y])
    }

    /// A constant integer tensor is converted to f32 when it meets float arithmetic.
    fn to_f32(&self, v: &Val) -> Val {
        match v.as_const() {
            Some(t) if t.dtype() == DType::I64 => {
                Val::constant(Tensor::from_f32(t.shape().to_vec(), t.to_f32_vec()).expect("same shape"))
            }
            _ => v.clone(),
        }
    }

    pub fn reshape(&mut self, x: &Val, shape: Vec<usize>) -> Result<Val, String> {
        if self.shape(x) == shape {
            return Ok(x.clone());
        }
        self.op(Op::Reshape { shape }, std::slice::from_ref(x))
    }

    /// An f32 constant scalar or tensor.
    pub fn f32_const(shape: Vec<usize>, data: Vec<f32>) -> Val {
        Val::constant(Tensor::from_f32(shape, data).expect("shape matches data"))
    }
}

/// Integer elementwise arithmetic with numpy broadcasting (ONNX integer Div truncates).
fn int_binary(b: Binary, p: &Tensor, q: &Tensor) -> Result<Tensor, String> {
    let shape = fhec_ir::broadcast_shapes(p.shape(), q.shape())
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", p.shape(), q.shape()))?;
    let pv = broadcast_to(&p.to_i64_vec(), p.shape(), &shape);
    let qv = broadcast_to(&q.to_i64_vec(), q.shape(), &shape);
    let out = pv
        .iter()
        .zip(&qv)
        .map(|(&a, &c)| match b {
            Binary::Add => Ok(a.wrapping_add(c)),
            Binary::Sub => Ok(a.wrapping_sub(c)),
            Binary::Mul => Ok(a.wrapping_mul(c)),
            Binary::Div => a.checked_div(c).ok_or("integer division by zero"),
            Binary::Max => Ok(a.max(c)),
            Binary::Min => Ok(a.min(c)),
            Binary::PRelu => Err("prelu on integers"),
        })
        .collect::<Result<Vec<i64>, _>>()?;
    Tensor::from_i64(shape, out).ok_or_else(|| "shape".into())
}

/// Repeats `v` (of shape `from`) to shape `to` under numpy broadcasting (`from` right-aligned).
pub(crate) fn broadcast_to<T: Copy>(v: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    fhec_ir::broadcast_index(to, from).into_iter().map(|i| v[i]).collect()
}
