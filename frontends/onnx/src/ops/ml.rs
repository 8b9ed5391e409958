//! The `ai.onnx.ml` ops that scikit-learn exports (through skl2onnx) use for linear models.

use crate::ctx::{Ctx, Val};
use crate::proto::Attrs;
use fhec_ir::{Binary, Op, Unary};

/// `(x - offset) * scale`, both broadcast along the last axis.
pub fn scaler(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let a = ctx.attrs();
    let c = *ctx.shape(&x).last().ok_or("input is a scalar")?;
    let vec_attr = |name: &str| -> Result<Val, String> {
        let v = a.floats(name)?.unwrap_or_else(|| vec![if name == "scale" { 1.0 } else { 0.0 }]);
        if v.len() != 1 && v.len() != c {
            return Err(format!("`{name}` has {} values, the input has {c} features", v.len()));
        }
        Ok(Ctx::f32_const(vec![v.len()], v))
    };
    let (offset, scale) = (vec_attr("offset")?, vec_attr("scale")?);
    let y = ctx.binary(Binary::Sub, &x, &offset)?;
    Ok(vec![ctx.binary(Binary::Mul, &y, &scale)?])
}

/// `x @ coefficients^T + intercepts` for inputs `[N, C]`, coefficients `[E, C]` (flattened).
fn linear(
    ctx: &mut Ctx,
    x: &Val,
    coefficients: Vec<f32>,
    intercepts: Option<Vec<f32>>,
    e: usize,
) -> Result<Val, String> {
    let xs = ctx.shape(x);
    if xs.len() != 2 {
        return Err(format!("input must be [N, features], got {xs:?}"));
    }
    let c = xs[1];
    if coefficients.len() != e * c {
        return Err(format!("{} coefficients do not make {e} rows of {c} features", coefficients.len()));
    }
    let w = Ctx::f32_const(vec![e, c], coefficients);
    let w = ctx.op(Op::Transpose { perm: vec![1, 0] }, &[w])?;
    let y = ctx.op(Op::MatMul, &[x.clone(), w])?;
    match intercepts {
        Some(b) if b.len() == e => ctx.binary(Binary::Add, &y, &Ctx::f32_const(vec![e], b)),
        Some(b) => Err(format!("{} intercepts for {e} outputs", b.len())),
        None => Ok(y),
    }
}

pub(crate) fn post_transform(ctx: &mut Ctx, y: Val) -> Result<Val, String> {
    match ctx.attrs().string("post_transform", "NONE")?.as_str() {
        "NONE" => Ok(y),
        "LOGISTIC" => ctx.op(Op::Unary(Unary::Sigmoid), &[y]),
        "SOFTMAX" => ctx.op(Op::Softmax { axis: 1 }, &[y]),
        other => Err(format!("post_transform {other} is not supported (NONE, LOGISTIC, SOFTMAX)")),
    }
}

pub fn linear_regressor(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let a = ctx.attrs();
    let targets = usize::try_from(a.int("targets", 1)?).map_err(|_| "targets must be positive")?;
    let coefficients = a.floats("coefficients")?.ok_or("missing attribute `coefficients`")?;
    let y = linear(ctx, &x, coefficients, a.floats("intercepts")?, targets)?;
    Ok(vec![post_transform(ctx, y)?])
}

/// The number of classes of a classifier, whose integer labels (`classlabels_ints`, or
/// `classlabels_int64s` for trees) must be 0..k-1.
pub(crate) fn class_count(a: &Attrs) -> Result<usize, String> {
    if a.strings("classlabels_strings")?.is_some() {
        return Err("string class labels are not supported; train with integer labels 0..k-1".into());
    }
    let labels = match a.ints("classlabels_ints")? {
        Some(l) => l,
        None => a.ints("classlabels_int64s")?.ok_or("missing attribute `classlabels_ints`")?,
    };
    if labels.is_empty() || labels.iter().enumerate().any(|(i, &l)| l != i as i64) {
        return Err(format!(
            "class labels {labels:?} are not 0..{}; fhec needs labels equal to their index",
            labels.len()
        ));
    }
    Ok(labels.len())
}

/// Outputs: labels (argmax of the scores; class labels must be 0..k-1) and scores.
pub fn linear_classifier(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let a = ctx.attrs();
    let k = class_count(&a)?;
    let coefficients = a.floats("coefficients")?.ok_or("missing attribute `coefficients`")?;
    let intercepts = a.floats("intercepts")?;
    let models = intercepts.as_ref().map_or(k, Vec::len);
    let binary = k == 2 && models == 1 && a.int("multi_class", 0)? == 0;
    if !binary && models != k {
        return Err(format!("{models} models for {k} classes"));
    }
    let s = linear(ctx, &x, coefficients, intercepts, models)?;
    let scores = if binary {
        // One model scores class 1; the class-0 score is derived from it.
        let transform = ctx.attrs().string("post_transform", "NONE")?;
        match transform.as_str() {
            "LOGISTIC" => {
                let p = ctx.op(Op::Unary(Unary::Sigmoid), &[s])?;
                let q = ctx.binary(Binary::Sub, &Ctx::f32_const(vec![1, 1], vec![1.0]), &p)?;
                ctx.op(Op::Concat { axis: 1 }, &[q, p])?
            }
            "NONE" | "SOFTMAX" => {
                let n = ctx.op(Op::Unary(Unary::Neg), std::slice::from_ref(&s))?;
                let both = ctx.op(Op::Concat { axis: 1 }, &[n, s])?;
                if transform == "SOFTMAX" { ctx.op(Op::Softmax { axis: 1 }, &[both])? } else { both }
            }
            other => return Err(format!("post_transform {other} is not supported (NONE, LOGISTIC, SOFTMAX)")),
        }
    } else {
        post_transform(ctx, s)?
    };
    let label =
        ctx.op(Op::ArgMax { axis: 1, keepdims: false, select_last_index: false }, std::slice::from_ref(&scores))?;
    Ok(vec![label, scores])
}

/// `ArrayFeatureExtractor(X, Y)`: the elements of X at indices Y along X's last axis. skl2onnx uses it
/// to map argmax indices to class labels; that works here when the labels equal their indices (the
/// lookup is then the identity). With constant indices it is a gather.
pub fn array_feature_extractor(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, y) = (ctx.input(0)?, ctx.input(1)?);
    let xs = ctx.shape(&x);
    let n = fhec_ir::numel(&ctx.shape(&y));
    // A 1-D X gives [1, n] (as ONNX Runtime does), else X's leading axes followed by n.
    let mut out_shape = if xs.len() <= 1 { vec![1] } else { xs[..xs.len() - 1].to_vec() };
    out_shape.push(n);
    match (x.as_const(), y.as_const()) {
        (_, Some(idx)) => {
            let last = xs.len().checked_sub(1).ok_or("X is a scalar")?;
            let dim = xs[last] as i64;
            let indices = idx.to_i64_vec();
            if let Some(i) = indices.iter().find(|&&i| !(0..dim).contains(&i)) {
                return Err(format!("index {i} out of range for {dim} features"));
            }
            let g = ctx.op(Op::Gather { axis: last, indices, indices_shape: vec![n] }, &[x])?;
            Ok(vec![ctx.reshape(&g, out_shape)?])
        }
        (Some(classes), None) => {
            let identity = xs.len() == 1 && classes.to_i64_vec().iter().enumerate().all(|(i, &c)| c == i as i64);
            if !identity {
                return Err("looking up non-identity class labels with an encrypted index is not supported; train with labels 0..k-1".into());
            }
            Ok(vec![ctx.reshape(&y, out_shape)?])
        }
        (None, None) => Err("both X and the indices depend on the model input".into()),
    }
}

/// `Normalizer`: each row divided by its L1 or L2 norm (MAX needs a max reduction the IR lacks).
pub fn normalizer(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let rank = ctx.shape(&x).len();
    if rank != 2 {
        return Err(format!("input must be [N, features], got {:?}", ctx.shape(&x)));
    }
    let sum = |ctx: &mut Ctx, v: Val| {
        ctx.op(Op::Reduce { kind: fhec_ir::ReduceKind::Sum, axes: vec![1], keepdims: true }, &[v])
    };
    let norm = match ctx.attrs().string("norm", "MAX")?.as_str() {
        "L1" => {
            let a = ctx.op(Op::Unary(Unary::Abs), std::slice::from_ref(&x))?;
            sum(ctx, a)?
        }
        "L2" => {
            let sq = ctx.op(Op::Unary(Unary::Pow { exponent: 2.0 }), std::slice::from_ref(&x))?;
            let s = sum(ctx, sq)?;
            ctx.op(Op::Unary(Unary::Sqrt), &[s])?
        }
        other => return Err(format!("norm {other} is not supported (L1, L2)")),
    };
    Ok(vec![ctx.binary(Binary::Div, &x, &norm)?])
}
