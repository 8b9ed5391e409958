//! Arithmetic, linear algebra, reductions, softmax and argmax.

use super::{axes, axis};
use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Op, ReduceKind, Unary};

pub fn binary(ctx: &mut Ctx, b: Binary) -> Result<Vec<Val>, String> {
    let (x, y) = (ctx.input(0)?, ctx.input(1)?);
    Ok(vec![ctx.binary(b, &x, &y)?])
}

/// `Max` and `Min`: one or more inputs, broadcast together, folded left to right.
pub fn variadic(ctx: &mut Ctx, b: Binary) -> Result<Vec<Val>, String> {
    if ctx.n_inputs() == 0 {
        return Err("needs at least one input".into());
    }
    let mut acc = ctx.input(0)?;
    for i in 1..ctx.n_inputs() {
        let x = ctx.input(i)?;
        acc = ctx.binary(b, &acc, &x)?;
    }
    Ok(vec![acc])
}

/// Mean: the inputs' broadcast sum times `1 / n`.
pub fn mean(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let sum = variadic(ctx, Binary::Add)?.remove(0);
    let n = ctx.n_inputs() as f32;
    Ok(vec![ctx.binary(Binary::Mul, &sum, &Ctx::f32_const(vec![], vec![1.0 / n]))?])
}

pub fn matmul(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    Ok(vec![ctx.op(Op::MatMul, &[a, b])?])
}

/// Gemm: `alpha * A' B' + beta * C` with A' and B' optionally transposed. Constant factors fold into
/// the constant operands where there are some.
pub fn gemm(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let a_ = ctx.attrs();
    let (alpha, beta) = (a_.float("alpha", 1.0)?, a_.float("beta", 1.0)?);
    let (trans_a, trans_b) = (a_.int("transA", 0)? != 0, a_.int("transB", 0)? != 0);
    let (mut a, mut b) = (ctx.input(0)?, ctx.input(1)?);
    for (v, t) in [(&mut a, trans_a), (&mut b, trans_b)] {
        if ctx.shape(v).len() != 2 {
            return Err(format!("Gemm operands must be 2-D, got {:?}", ctx.shape(v)));
        }
        if t {
            *v = ctx.op(Op::Transpose { perm: vec![1, 0] }, std::slice::from_ref(v))?;
        }
    }
    if alpha != 1.0 {
        let s = Ctx::f32_const(vec![], vec![alpha]);
        // Scale whichever operand is constant (folded); else the product.
        if b.as_const().is_some() {
            b = ctx.binary(Binary::Mul, &b, &s)?;
        } else if a.as_const().is_some() {
            a = ctx.binary(Binary::Mul, &a, &s)?;
        }
    }
    let mut y = ctx.op(Op::MatMul, &[a.clone(), b.clone()])?;
    if alpha != 1.0 && a.as_const().is_none() && b.as_const().is_none() {
        y = ctx.binary(Binary::Mul, &y, &Ctx::f32_const(vec![], vec![alpha]))?;
    }
    if let Some(c) = ctx.opt_input(2)?
        && beta != 0.0
    {
        let c = if beta != 1.0 { ctx.binary(Binary::Mul, &c, &Ctx::f32_const(vec![], vec![beta]))? } else { c };
        let out_shape = ctx.shape(&y);
        y = ctx.binary(Binary::Add, &y, &c)?;
        if ctx.shape(&y) != out_shape {
            return Err(format!("C of shape {:?} does not broadcast to the result {:?}", ctx.shape(&c), out_shape));
        }
    }
    Ok(vec![y])
}

/// ReduceSum / ReduceMean: axes are an attribute, or an input from opset 13 (Sum) / 18 (Mean).
fn reduce(ctx: &mut Ctx, kind: ReduceKind, axes_as_input_from: i64) -> Result<Vec<Val>, String> {
    reduce_with(ctx, kind, axes_as_input_from, None, None)
}

/// A reduction with an elementwise function before it and one after it (ReduceL2 is
/// `sqrt(sum(x^2))`). With `noop_with_empty_axes` and no axes, only `pre` applies.
fn reduce_with(
    ctx: &mut Ctx,
    kind: ReduceKind,
    axes_as_input_from: i64,
    pre: Option<Unary>,
    post: Option<Unary>,
) -> Result<Vec<Val>, String> {
    let mut x = ctx.input(0)?;
    if let Some(u) = pre {
        x = ctx.op(Op::Unary(u), &[x])?;
    }
    let rank = ctx.shape(&x).len();
    let a = ctx.attrs();
    let keepdims = a.int("keepdims", 1)? != 0;
    let noop_with_empty_axes = a.int("noop_with_empty_axes", 0)? != 0;
    let list = if ctx.opset >= axes_as_input_from { ctx.const_ints(1, "axes")? } else { a.ints("axes")? };
    let list = match list {
        Some(l) if !l.is_empty() => axes(&l, rank)?,
        _ if noop_with_empty_axes => return Ok(vec![x]),
        _ => (0..rank).collect(),
    };
    let mut y = ctx.op(Op::Reduce { kind, axes: list, keepdims }, &[x])?;
    if let Some(u) = post {
        y = ctx.op(Op::Unary(u), &[y])?;
    }
    Ok(vec![y])
}

const SQUARE: Unary = Unary::Pow { exponent: 2.0 };

pub fn reduce_max(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce(ctx, ReduceKind::Max, 18)
}

pub fn reduce_min(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce(ctx, ReduceKind::Min, 18)
}

pub fn reduce_l1(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce_with(ctx, ReduceKind::Sum, 18, Some(Unary::Abs), None)
}

pub fn reduce_l2(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce_with(ctx, ReduceKind::Sum, 18, Some(SQUARE), Some(Unary::Sqrt))
}

pub fn reduce_sum_square(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce_with(ctx, ReduceKind::Sum, 18, Some(SQUARE), None)
}

pub fn reduce_log_sum(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce_with(ctx, ReduceKind::Sum, 18, None, Some(Unary::Log))
}

pub fn reduce_log_sum_exp(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce_with(ctx, ReduceKind::Sum, 18, Some(Unary::Exp), Some(Unary::Log))
}

/// LayerNormalization (opset 17): over the axes from `axis` on, `(x - mean) / sqrt(var + epsilon)`,
/// times `Scale`, plus `B`; the optional outputs `Mean` and `InvStdDev` too. Under FHE: a table per square, one for `1 / sqrt(var + epsilon)`, and a
/// product of two encrypted values (two tables) per element.
pub fn layer_normalization(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let rank = ctx.shape(&x).len();
    let a = ctx.attrs();
    let ax = axis(a.int("axis", -1)?, rank)?;
    let eps = a.float("epsilon", 1e-5)?;
    let axes: Vec<usize> = (ax..rank).collect();
    if ctx.ty(&x).dtype != fhec_ir::DType::F32 {
        return Err("LayerNormalization of a non-float tensor".into());
    }
    let mean =
        ctx.op(Op::Reduce { kind: ReduceKind::Mean, axes: axes.clone(), keepdims: true }, std::slice::from_ref(&x))?;
    let d = ctx.binary(Binary::Sub, &x, &mean)?;
    let d2 = ctx.binary(Binary::Mul, &d, &d)?;
    let var = ctx.op(Op::Reduce { kind: ReduceKind::Mean, axes, keepdims: true }, &[d2])?;
    let var = ctx.binary(Binary::Add, &var, &Ctx::f32_const(vec![], vec![eps]))?;
    // d * (1 / std) rather than d / std: a product of encrypted values lowers, a quotient does not.
    let std = ctx.op(Op::Unary(Unary::Sqrt), &[var])?;
    let inv = ctx.op(Op::Unary(Unary::Reciprocal), &[std])?;
    let mut y = ctx.binary(Binary::Mul, &d, &inv)?;
    let scale = ctx.input(1)?;
    y = ctx.binary(Binary::Mul, &y, &scale)?;
    if let Some(b) = ctx.opt_input(2)? {
        y = ctx.binary(Binary::Add, &y, &b)?;
    }
    Ok(vec![y, mean, inv])
}

pub fn reduce_sum(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce(ctx, ReduceKind::Sum, 13)
}

pub fn reduce_mean(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    reduce(ctx, ReduceKind::Mean, 18)
}

/// Softmax and LogSoftmax. Before opset 13 the input is seen as 2-D, flattened at `axis` (default 1).
fn softmax_like(ctx: &mut Ctx, log: bool) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let default = if ctx.opset < 13 { 1 } else { -1 };
    let ax = axis(ctx.attrs().int("axis", default)?, shape.len())?;
    let make = |axis| if log { Op::LogSoftmax { axis } } else { Op::Softmax { axis } };
    if ctx.opset >= 13 || ax + 1 == shape.len() {
        return Ok(vec![ctx.op(make(ax), &[x])?]);
    }
    let flat = vec![shape[..ax].iter().product(), shape[ax..].iter().product()];
    let x2 = ctx.reshape(&x, flat)?;
    let y2 = ctx.op(make(1), &[x2])?;
    Ok(vec![ctx.reshape(&y2, shape)?])
}

pub fn softmax(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    softmax_like(ctx, false)
}

pub fn log_softmax(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    softmax_like(ctx, true)
}

pub fn argmax(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let a = ctx.attrs();
    let ax = axis(a.int("axis", 0)?, ctx.shape(&x).len())?;
    let keepdims = a.int("keepdims", 1)? != 0;
    let select_last_index = a.int("select_last_index", 0)? != 0;
    Ok(vec![ctx.op(Op::ArgMax { axis: ax, keepdims, select_last_index }, &[x])?])
}

/// One operand's subscripts after expanding `...`: one label per axis.
fn einsum_labels(term: &str, rank: usize, ellipsis: &mut Option<usize>, what: &str) -> Result<Vec<char>, String> {
    let dots = term.matches("...").count();
    if dots > 1 || (dots == 0 && term.contains('.')) {
        return Err(format!("{what} subscripts \"{term}\": `...` may appear once"));
    }
    let letters: Vec<char> = term.replace("...", "").chars().collect();
    if let Some(c) = letters.iter().find(|c| !c.is_ascii_alphabetic()) {
        return Err(format!("{what} subscripts \"{term}\": `{c}` is not a letter"));
    }
    if dots == 0 {
        if letters.len() != rank {
            return Err(format!("{what} subscripts \"{term}\" name {} axes, the operand has {rank}", letters.len()));
        }
        return Ok(letters);
    }
    let extra = rank
        .checked_sub(letters.len())
        .ok_or_else(|| format!("{what} subscripts \"{term}\" name more axes than the operand's {rank}"))?;
    match ellipsis {
        Some(n) if *n != extra => {
            return Err(format!(
                "`...` stands for {n} axes in one operand and {extra} in another: broadcasting across it is not supported"
            ));
        }
        _ => *ellipsis = Some(extra),
    }
    // The ellipsis axes get private-use characters as labels, which no explicit subscript can clash with.
    let at = term.find("...").unwrap_or(0);
    let before = term[..at].chars().count();
    let mut out: Vec<char> = letters[..before].to_vec();
    out.extend((0..extra).map(|i| char::from_u32(0xE000 + i as u32).unwrap_or('\u{E000}')));
    out.extend_from_slice(&letters[before..]);
    Ok(out)
}

/// Sums `x` (labelled `labels`) over the labels not in `keep`, returning the result and its labels.
fn einsum_sum_out(ctx: &mut Ctx, x: Val, labels: Vec<char>, keep: &[char]) -> Result<(Val, Vec<char>), String> {
    let axes: Vec<usize> = (0..labels.len()).filter(|&i| !keep.contains(&labels[i])).collect();
    if axes.is_empty() {
        return Ok((x, labels));
    }
    let y = ctx.op(Op::Reduce { kind: ReduceKind::Sum, axes: axes.clone(), keepdims: false }, &[x])?;
    Ok((y, labels.into_iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, c)| c).collect()))
}

/// The diagonal of `x` over each label it repeats (`ii` -> `i`, `bjij` -> `bji`): a gather of the
/// flattened tensor at constant indices, so only data moves. Labels keep their first places.
fn einsum_diagonal(ctx: &mut Ctx, x: Val, labels: Vec<char>) -> Result<(Val, Vec<char>), String> {
    let kept: Vec<char> =
        labels.iter().enumerate().filter(|(i, c)| !labels[..*i].contains(c)).map(|(_, c)| *c).collect();
    if kept.len() == labels.len() {
        return Ok((x, labels));
    }
    let shape = ctx.shape(&x);
    let dims: Vec<usize> =
        kept.iter().map(|c| shape[labels.iter().position(|l| l == c).expect("a kept label")]).collect();
    let strides: Vec<usize> = (0..shape.len()).map(|a| shape[a + 1..].iter().product()).collect();
    // Each element of the diagonal: its index per kept label, spread over the axes that carry it.
    let mut indices = Vec::with_capacity(dims.iter().product());
    let mut at = vec![0usize; kept.len()];
    for _ in 0..dims.iter().product::<usize>() {
        indices.push(
            labels
                .iter()
                .zip(&strides)
                .map(|(c, s)| at[kept.iter().position(|k| k == c).expect("a kept label")] * s)
                .sum::<usize>() as i64,
        );
        for k in (0..at.len()).rev() {
            at[k] += 1;
            if at[k] < dims[k] {
                break;
            }
            at[k] = 0;
        }
    }
    let flat = ctx.reshape(&x, vec![shape.iter().product()])?;
    let y = ctx.op(Op::Gather { axis: 0, indices, indices_shape: dims }, &[flat])?;
    Ok((y, kept))
}

/// Reorders `x` (labelled `from`) to the labels `to` (the same set).
fn einsum_permute(ctx: &mut Ctx, x: Val, from: &[char], to: &[char]) -> Result<Val, String> {
    let perm: Vec<usize> = to.iter().map(|c| from.iter().position(|f| f == c).expect("same labels")).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x);
    }
    ctx.op(Op::Transpose { perm }, &[x])
}

/// Einsum with one or two operands: diagonals of labels an operand repeats, transposes, sums and one
/// batched matrix product, e.g. `ij,jk->ik`, `bij,bjk->bik`, `...ij,jk`, `i,i->`, `ij->ji`,
/// `ij->i`. Without `->` the output is the labels used once, in alphabetical order.
pub fn einsum(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let equation: String = ctx.attrs().string("equation", "")?.chars().filter(|c| !c.is_whitespace()).collect();
    let n = ctx.n_inputs();
    if !(1..=2).contains(&n) {
        return Err(format!("Einsum of {n} operands is not supported (one or two are)"));
    }
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (equation.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != n {
        return Err(format!("equation \"{equation}\" has {} operand terms for {n} inputs", terms.len()));
    }
    let mut ellipsis = None;
    let mut operands = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let x = ctx.input(i)?;
        let labels = einsum_labels(term, ctx.shape(&x).len(), &mut ellipsis, &format!("operand {i}"))?;
        operands.push((x, labels));
    }
    let out: Vec<char> = match rhs {
        Some(r) => {
            let rank = r.replace("...", "").chars().count() + if r.contains("...") { ellipsis.unwrap_or(0) } else { 0 };
            einsum_labels(&r, rank, &mut ellipsis.clone(), "output")?
        }
        None => {
            // The `...` axes first, then the labels used once, alphabetically (as numpy).
            let all: Vec<char> = operands.iter().flat_map(|(_, l)| l.clone()).collect();
            let mut implicit: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| !c.is_ascii_alphabetic() || all.iter().filter(|d| *d == c).count() == 1)
                .collect();
            implicit.sort_by_key(|c| (c.is_ascii_alphabetic(), *c));
            implicit.dedup();
            implicit
        }
    };
    for c in &out {
        if !operands.iter().any(|(_, l)| l.contains(c)) {
            return Err(format!("output label `{c}` appears in no operand"));
        }
        if out.iter().filter(|d| *d == c).count() > 1 {
            return Err(format!("output repeats label `{c}`"));
        }
    }
    // Sizes agree wherever a label appears.
    let mut sizes: Vec<(char, usize)> = Vec::new();
    for (x, labels) in &operands {
        for (c, d) in labels.iter().zip(ctx.shape(x)) {
            match sizes.iter().find(|(l, _)| l == c) {
                Some((_, s)) if *s != d => {
                    return Err(format!("label `{c}` has size {s} in one place and {d} in another"));
                }
                Some(_) => {}
                None => sizes.push((*c, d)),
            }
        }
    }
    let size = |c: &char| sizes.iter().find(|(l, _)| l == c).map_or(1, |(_, s)| *s);
    let operands: Vec<(Val, Vec<char>)> =
        operands.into_iter().map(|(x, l)| einsum_diagonal(ctx, x, l)).collect::<Result<_, _>>()?;
    let mut operands = operands.into_iter();
    let (a, la) = operands.next().expect("one operand");
    let Some((b, lb)) = operands.next() else {
        let (y, ly) = einsum_sum_out(ctx, a, la, &out)?;
        return Ok(vec![einsum_permute(ctx, y, &ly, &out)?]);
    };
    // A label only one operand has and the output lacks is summed there first.
    let (a, la) = einsum_sum_out(ctx, a, la.clone(), &[out.clone(), lb.clone()].concat())?;
    let (b, lb) = einsum_sum_out(ctx, b, lb.clone(), &[out.clone(), la.clone()].concat())?;
    let batch: Vec<char> = out.iter().copied().filter(|c| la.contains(c) && lb.contains(c)).collect();
    let left: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
    let right: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
    let contracted: Vec<char> = la.iter().copied().filter(|c| lb.contains(c) && !out.contains(c)).collect();
    let prod = |labels: &[char]| labels.iter().map(size).product::<usize>();
    // A batch axis only where there are batch labels: the FHE lowering takes an encrypted [M, K] by a
    // constant [K, N] (and the converse) without one.
    let matrix =
        |rows: usize, cols: usize| if batch.is_empty() { vec![rows, cols] } else { vec![prod(&batch), rows, cols] };
    let a = einsum_permute(ctx, a, &la, &[batch.clone(), left.clone(), contracted.clone()].concat())?;
    let a = ctx.reshape(&a, matrix(prod(&left), prod(&contracted)))?;
    let b = einsum_permute(ctx, b, &lb, &[batch.clone(), contracted.clone(), right.clone()].concat())?;
    let b = ctx.reshape(&b, matrix(prod(&contracted), prod(&right)))?;
    let y = ctx.op(Op::MatMul, &[a, b])?;
    let ly = [batch, left, right].concat();
    let y = ctx.reshape(&y, ly.iter().map(size).collect())?;
    Ok(vec![einsum_permute(ctx, y, &ly, &out)?])
}
