//! The rewrite rules. Each rule is a function from an e-class to the plans it finds there; a plan
//! says what to add to the e-graph (and union with the class). Searching and applying run the same
//! function, so a plan is applied only if it still holds when the runner applies it.
//!
//! The rules are exact: the rewritten program computes the same f32 values as the original (the
//! fused functions evaluate the same operations in the same order), with one caveat on max pooling
//! and maths-library functions (see `maxpool_of_increasing_map`). Which form survives is the cost
//! model's choice at extraction.

use super::lang::{EG, ENode, fun_of, ty};
use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use fhec_ir::{Binary, DType, Fun, Monotone, Op, Security};

/// Composed functions larger than this are not built (they would only grow the e-graph).
const MAX_FUN_SIZE: usize = 48;

pub enum Build {
    /// `map(fun, x)`.
    Map(Fun, Id),
    /// `map(fun, op(x))` for the op `Op(op)` (a max pool).
    OpThenMap { op: u32, fun: Fun, x: Id },
}

pub struct Plan {
    /// The classes the plan reads (its identity, for matching search to application).
    pub ids: Vec<Id>,
    pub build: Build,
}

type Finder = fn(&EG, Id) -> Vec<Plan>;

/// The rules, by name.
pub fn rules() -> Vec<(&'static str, Finder)> {
    vec![
        ("compose-maps", compose_maps),
        ("fuse-maps-of-one-value", fuse_maps_of_one_value),
        ("scalar-operand-into-map", scalar_operand_into_map),
        ("maxpool-of-increasing-map", maxpool_of_increasing_map),
    ]
}

pub fn rewrites(only: Option<&[&str]>) -> Vec<Rewrite<ENode, super::lang::Tables>> {
    rules()
        .into_iter()
        .filter(|(n, _)| only.is_none_or(|o| o.contains(n)))
        .map(|(name, f)| Rewrite::new(name, Rule(f), Rule(f)).expect("rule vars are bound by its searcher"))
        .collect()
}

/// `(map f (map g y))` -> `(map f∘g y)`: two tables in a row become one.
fn compose_maps(eg: &EG, class: Id) -> Vec<Plan> {
    let mut out = Vec::new();
    for n in &eg[class].nodes {
        let ENode::Map([f, x]) = n else { continue };
        let Some(outer) = fun_of(eg, *f) else { continue };
        for inner in &eg[*x].nodes {
            let ENode::Map([g, y]) = inner else { continue };
            let Some(g_fun) = fun_of(eg, *g) else { continue };
            let h = outer.compose(g_fun).simplify();
            if h.size() <= MAX_FUN_SIZE {
                out.push(Plan { ids: vec![*f, *g, *y], build: Build::Map(h, *y) });
            }
        }
    }
    out
}

/// The ways a class is a function of another: itself (the identity) and each of its maps, with the
/// class that names the function (the function leaf, or the class itself for the identity).
fn views(eg: &EG, id: Id) -> Vec<(Fun, Id, Id)> {
    let mut v = vec![(Fun::X, eg.find(id), eg.find(id))];
    for n in &eg[id].nodes {
        if let ENode::Map([f, y]) = n
            && let Some(fun) = fun_of(eg, *f)
        {
            v.push((fun.clone(), eg.find(*y), eg.find(*f)));
        }
    }
    v
}

/// `(op (map f y) (map g y))` -> `(map (op f g) y)` for an elementwise binary op of two functions of
/// one encrypted value: `x * sigmoid(x)` (SiLU), `x * x`, a decomposed GELU. Without it a product of
/// two encrypted values costs two tables per element (`((a + b)^2 - (a - b)^2) / 4`) on top of the
/// tables of its operands, and a quotient cannot be lowered at all.
fn fuse_maps_of_one_value(eg: &EG, class: Id) -> Vec<Plan> {
    let mut out = Vec::new();
    for n in &eg[class].nodes {
        let ENode::Op(k, c) = n else { continue };
        let Op::Binary(b) = eg.analysis.ops[*k as usize] else { continue };
        let [l, r] = c.as_slice() else { continue };
        let Some(shape) = ty(eg, class).map(|t| t.shape.clone()) else { continue };
        for (fl, yl, nl) in views(eg, *l) {
            for (fr, yr, nr) in views(eg, *r) {
                let both_identity = fl == Fun::X && fr == Fun::X;
                if yl != yr || (both_identity && matches!(b, Binary::Add | Binary::Sub)) {
                    continue;
                }
                let Some(t) = ty(eg, yl) else { continue };
                if t.security != Security::Enc || t.dtype != DType::F32 || t.shape != shape {
                    continue;
                }
                let h = Fun::binary(b, fl.clone(), fr).simplify();
                if h.size() <= MAX_FUN_SIZE {
                    out.push(Plan { ids: vec![nl, nr, yl], build: Build::Map(h, yl) });
                }
            }
        }
    }
    out
}

/// The value of a constant class whose elements are all equal.
fn scalar(eg: &EG, id: Id) -> Option<f32> {
    eg[id].nodes.iter().find_map(|n| match n {
        ENode::Const(i) => {
            let t = &eg.analysis.consts[*i as usize];
            let v = t.as_f32()?;
            let first = *v.first()?;
            v.iter().all(|x| x.to_bits() == first.to_bits()).then_some(first)
        }
        _ => None,
    })
}

/// `(op x c)` -> `(map (op x c) x)` for a scalar constant `c`: the affine step becomes part of a
/// function, so that it can fuse with the tables around it (the affine map alone costs a table, so
/// extraction keeps the leveled op unless fusion pays).
fn scalar_operand_into_map(eg: &EG, class: Id) -> Vec<Plan> {
    let mut out = Vec::new();
    let Some(shape) = ty(eg, class).map(|t| t.shape.clone()) else { return out };
    for n in &eg[class].nodes {
        let ENode::Op(k, c) = n else { continue };
        let Op::Binary(b) = eg.analysis.ops[*k as usize] else { continue };
        let [l, r] = c.as_slice() else { continue };
        let enc = |id: Id| {
            ty(eg, id).is_some_and(|t| t.security == Security::Enc && t.dtype == DType::F32 && t.shape == shape)
        };
        if enc(*l)
            && let Some(v) = scalar(eg, *r)
        {
            out.push(Plan { ids: vec![*l, *r], build: Build::Map(Fun::binary(b, Fun::X, Fun::Const(v)), *l) });
        }
        if enc(*r)
            && let Some(v) = scalar(eg, *l)
        {
            out.push(Plan { ids: vec![*r, *l], build: Build::Map(Fun::binary(b, Fun::Const(v), Fun::X), *r) });
        }
    }
    out
}

/// `(maxpool (map f y))` -> `(map f (maxpool y))` for a non-decreasing `f`: one table per pooled value
/// instead of one per input (`max(f(a), f(b)) = f(max(a, b))`), when no window pools only padding.
/// Exact for functions whose f32 code is monotone (relu, clip, leaky relu, rounding, scalings); for
/// those computed through the maths library (sigmoid, tanh, erf, softsign...) the f32 code may
/// break monotonicity by an ulp, and the two forms then differ by that rounding.
fn maxpool_of_increasing_map(eg: &EG, class: Id) -> Vec<Plan> {
    let mut out = Vec::new();
    for n in &eg[class].nodes {
        let ENode::Op(k, c) = n else { continue };
        if !matches!(eg.analysis.ops[*k as usize], Op::MaxPool(_)) {
            continue;
        }
        let [x] = c.as_slice() else { continue };
        let Op::MaxPool(p) = &eg.analysis.ops[*k as usize] else { continue };
        // A window with no input element is -inf before the function and f(-inf) after it.
        let (Some(tx), Some(tc)) = (ty(eg, *x), ty(eg, class)) else { continue };
        if !windows_never_empty(p, &tx.shape, &tc.shape) {
            continue;
        }
        for m in &eg[*x].nodes {
            let ENode::Map([f, y]) = m else { continue };
            let Some(fun) = fun_of(eg, *f) else { continue };
            if fun.monotonicity() == Monotone::Increasing {
                out.push(Plan { ids: vec![*x, *f, *y], build: Build::OpThenMap { op: *k, fun: fun.clone(), x: *y } });
            }
        }
    }
    out
}

/// Whether every max-pool window covers at least one input element (else it pools only padding).
fn windows_never_empty(p: &fhec_ir::PoolAttrs, input: &[usize], output: &[usize]) -> bool {
    let spatial = p.kernel.len();
    if input.len() != spatial + 2 || output.len() != spatial + 2 {
        return false;
    }
    (0..spatial).all(|a| {
        let (n, k, s, d, pad) =
            (input[2 + a] as i64, p.kernel[a] as i64, p.strides[a] as i64, p.dilations[a] as i64, p.pads[a] as i64);
        (0..output[2 + a] as i64).all(|o| (0..k).any(|j| (0..n).contains(&(o * s - pad + j * d))))
    })
}

/// A rule as an egg searcher and applier.
struct Rule(Finder);

const VARS: [&str; 3] = ["?a", "?b", "?c"];

fn vars() -> Vec<Var> {
    VARS.iter().map(|v| v.parse().expect("valid var")).collect()
}

fn subst_of(ids: &[Id]) -> Subst {
    let mut s = Subst::default();
    for (v, id) in vars().into_iter().zip(ids) {
        s.insert(v, *id);
    }
    s
}

impl Searcher<ENode, super::lang::Tables> for Rule {
    fn search_eclass_with_limit(&self, eg: &EG, eclass: Id, limit: usize) -> Option<SearchMatches<'_, ENode>> {
        let mut substs: Vec<Subst> = (self.0)(eg, eclass).iter().map(|p| subst_of(&p.ids)).collect();
        substs.truncate(limit);
        (!substs.is_empty()).then_some(SearchMatches { eclass, substs, ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        vars()
    }
}

impl Applier<ENode, super::lang::Tables> for Rule {
    fn apply_one(
        &self,
        eg: &mut EG,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let want: Vec<Id> = vars().iter().filter_map(|v| subst.get(*v)).map(|id| eg.find(*id)).collect();
        let plans = (self.0)(eg, eclass);
        let Some(plan) = plans.into_iter().find(|p| p.ids.iter().map(|id| eg.find(*id)).collect::<Vec<_>>() == want)
        else {
            return vec![];
        };
        let new = match plan.build {
            Build::Map(fun, x) => {
                let k = eg.analysis.intern_fun(&fun);
                let f = eg.add(ENode::Fun(k));
                eg.add(ENode::Map([f, x]))
            }
            Build::OpThenMap { op, fun, x } => {
                let pooled = eg.add(ENode::Op(op, vec![x]));
                let k = eg.analysis.intern_fun(&fun);
                let f = eg.add(ENode::Fun(k));
                eg.add(ENode::Map([f, pooled]))
            }
        };
        if eg.union_trusted(eclass, new, rule) { vec![eclass] } else { vec![] }
    }

    fn vars(&self) -> Vec<Var> {
        vars()
    }
}
