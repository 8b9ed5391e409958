//! Shape and data-movement ops, plus the ops that only ever compute on constants (Shape, Cast, Range...)
//! and so fold away.

use super::{axes, axis};
use crate::ctx::{Ctx, Val, broadcast_to};
use fhec_ir::{DType, Op, PadMode, Tensor};

pub fn identity(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    Ok(vec![ctx.input(0)?])
}

/// Dropout at inference is the identity; its mask output is not computed.
pub fn dropout(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    if let Some(t) = ctx.const_input(2, "training_mode")?
        && t.to_i64_vec().first().is_some_and(|&v| v != 0)
    {
        return Err("training_mode=true is not supported; export the model in eval mode".into());
    }
    Ok(vec![ctx.input(0)?])
}

pub fn flatten(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let a = ctx.attrs().int("axis", 1)?;
    // axis may equal the rank here (everything in the first dimension).
    let ax = if a == shape.len() as i64 { shape.len() } else { axis(a, shape.len())? };
    let new = vec![shape[..ax].iter().product(), shape[ax..].iter().product()];
    Ok(vec![ctx.reshape(&x, new)?])
}

pub fn reshape(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let target = if ctx.opset < 5 {
        ctx.attrs().ints("shape")?.ok_or("missing attribute `shape`")?
    } else {
        ctx.const_ints(1, "shape")?.ok_or("missing input 1 (shape)")?
    };
    let allowzero = ctx.attrs().int("allowzero", 0)? != 0;
    let shape = ctx.shape(&x);
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*shape.get(i).ok_or(format!("shape {target:?} copies axis {i} that the input lacks"))?)
            }
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("invalid target shape {target:?}")),
        }
    }
    let total: usize = shape.iter().product();
    if let Some(i) = infer {
        let rest: usize = out.iter().product();
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!("cannot reshape {shape:?} to {target:?}"));
        }
        out[i] = total / rest;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {shape:?} ({total} elements) to {target:?}"));
    }
    Ok(vec![ctx.reshape(&x, out)?])
}

pub fn transpose(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let rank = ctx.shape(&x).len();
    let perm = match ctx.attrs().ints("perm")? {
        Some(p) => p.iter().map(|&a| axis(a, rank)).collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).rev().collect(),
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == rank {
        return Ok(vec![x]);
    }
    Ok(vec![ctx.op(Op::Transpose { perm }, &[x])?])
}

/// Squeeze/Unsqueeze axes: an attribute before opset 13, an input from 13 on.
fn axes_list(ctx: &Ctx) -> Result<Option<Vec<i64>>, String> {
    if ctx.opset < 13 { ctx.attrs().ints("axes") } else { ctx.const_ints(1, "axes") }
}

pub fn squeeze(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let drop = match axes_list(ctx)? {
        Some(l) => axes(&l, shape.len())?,
        None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
    };
    if let Some(&a) = drop.iter().find(|&&a| shape[a] != 1) {
        return Err(format!("cannot squeeze axis {a} of size {}", shape[a]));
    }
    let out = shape.iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, &d)| d).collect();
    Ok(vec![ctx.reshape(&x, out)?])
}

pub fn unsqueeze(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let list = axes_list(ctx)?.ok_or("missing axes")?;
    let rank = shape.len() + list.len();
    let add = axes(&list, rank)?;
    let mut rest = shape.iter();
    let out = (0..rank).map(|i| if add.contains(&i) { 1 } else { *rest.next().expect("counted") }).collect();
    Ok(vec![ctx.reshape(&x, out)?])
}

pub fn concat(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let xs = (0..ctx.n_inputs()).map(|i| ctx.input(i)).collect::<Result<Vec<_>, _>>()?;
    let first = xs.first().ok_or("no inputs")?;
    if !ctx.attrs().has("axis") {
        return Err("missing attribute `axis`".into());
    }
    let ax = axis(ctx.attrs().int("axis", 0)?, ctx.shape(first).len())?;
    // Empty tensors (a common artefact of shape arithmetic) contribute nothing.
    let xs: Vec<Val> = xs.into_iter().filter(|v| fhec_ir::numel(&ctx.shape(v)) > 0 || v.as_const().is_none()).collect();
    if xs.len() == 1 {
        return Ok(xs);
    }
    if xs.iter().any(|v| v.as_const().is_none()) && xs.iter().any(|v| ctx.ty(v).dtype != DType::F32) {
        return Err("concatenation of computed non-float tensors is not supported".into());
    }
    Ok(vec![ctx.op(Op::Concat { axis: ax }, &xs)?])
}

pub fn slice(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let (starts, ends, ax, steps) = if ctx.opset < 10 {
        let a = ctx.attrs();
        (a.ints("starts")?.ok_or("missing `starts`")?, a.ints("ends")?.ok_or("missing `ends`")?, a.ints("axes")?, None)
    } else {
        (
            ctx.const_ints(1, "starts")?.ok_or("missing starts")?,
            ctx.const_ints(2, "ends")?.ok_or("missing ends")?,
            ctx.const_ints(3, "axes")?,
            ctx.const_ints(4, "steps")?,
        )
    };
    let ax = ax.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || ax.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    let mut entries: Vec<(usize, i64, i64, i64)> = Vec::new();
    for i in 0..starts.len() {
        let a = axis(ax[i], shape.len())?;
        let dim = shape[a] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("slice step 0".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (s, e) = if step > 0 {
            (norm(starts[i]).clamp(0, dim), norm(ends[i]).clamp(0, dim))
        } else {
            (norm(starts[i]).clamp(0, (dim - 1).max(0)), norm(ends[i]).clamp(-1, dim - 1))
        };
        if entries.iter().any(|e| e.0 == a) {
            return Err(format!("axis {a} is sliced twice"));
        }
        entries.push((a, s, e, step));
    }
    entries.sort_unstable();
    let op = Op::Slice {
        axes: entries.iter().map(|e| e.0).collect(),
        starts: entries.iter().map(|e| e.1).collect(),
        ends: entries.iter().map(|e| e.2).collect(),
        steps: entries.iter().map(|e| e.3).collect(),
    };
    Ok(vec![ctx.op(op, &[x])?])
}

pub fn gather(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let idx = ctx.const_input(1, "indices")?.ok_or("missing indices")?;
    let ax = axis(ctx.attrs().int("axis", 0)?, shape.len())?;
    let dim = shape[ax] as i64;
    let indices = idx
        .to_i64_vec()
        .into_iter()
        .map(|i| {
            if (-dim..dim).contains(&i) {
                Ok(i.rem_euclid(dim))
            } else {
                Err(format!("index {i} out of range for axis {ax} of size {dim}"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![ctx.op(Op::Gather { axis: ax, indices, indices_shape: idx.shape().to_vec() }, &[x])?])
}

pub fn pad(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let rank = ctx.shape(&x).len();
    let a = ctx.attrs();
    let mode = match a.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => return Err(format!("pad mode `{other}` is not supported (constant, reflect, edge)")),
    };
    let (raw, value, pad_axes) = if ctx.opset < 11 {
        (a.ints("pads")?.ok_or("missing `pads`")?, a.float("value", 0.0)?, None)
    } else {
        let value = match ctx.const_input(2, "constant_value")? {
            Some(t) if t.numel() == 1 => t.to_f32_vec()[0],
            Some(_) => return Err("constant_value must be a scalar".into()),
            None => 0.0,
        };
        (ctx.const_ints(1, "pads")?.ok_or("missing pads")?, value, ctx.const_ints(3, "axes")?)
    };
    let pad_axes = match pad_axes {
        Some(l) => l.iter().map(|&v| axis(v, rank)).collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).collect(),
    };
    if raw.len() != 2 * pad_axes.len() {
        return Err(format!("pads has {} values, expected {}", raw.len(), 2 * pad_axes.len()));
    }
    if raw.iter().any(|&p| p < 0) {
        return Err(format!("negative pads {raw:?} are not supported"));
    }
    let mut pads = vec![0; 2 * rank];
    let n = pad_axes.len();
    for (k, &ax) in pad_axes.iter().enumerate() {
        pads[ax] = raw[k] as usize;
        pads[ax + rank] = raw[k + n] as usize;
    }
    if pads.iter().all(|&p| p == 0) {
        return Ok(vec![x]);
    }
    Ok(vec![ctx.op(Op::Pad { pads, mode, value }, &[x])?])
}

pub fn constant(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let a = ctx.attrs();
    let t = if let Some(t) = a.tensor("value")? {
        t
    } else if a.has("value_float") {
        Tensor::scalar_f32(a.float("value_float", 0.0)?)
    } else if let Some(v) = a.floats("value_floats")? {
        Tensor::from_f32(vec![v.len()], v).expect("1-D")
    } else if a.has("value_int") {
        Tensor::from_i64(vec![], vec![a.int("value_int", 0)?]).expect("scalar")
    } else if let Some(v) = a.ints("value_ints")? {
        Tensor::from_i64(vec![v.len()], v).expect("1-D")
    } else {
        return Err("only value, value_float(s) and value_int(s) constants are supported".into());
    };
    Ok(vec![Val::constant(t)])
}

fn ints(v: Vec<i64>) -> Val {
    Val::constant(Tensor::from_i64(vec![v.len()], v).expect("1-D"))
}

/// Shape of a tensor: always static here, so always a constant.
pub fn shape(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let dims: Vec<i64> = ctx.shape(&ctx.input(0)?).iter().map(|&d| d as i64).collect();
    let r = dims.len() as i64;
    let a = ctx.attrs();
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clampi(a.int("start", 0)?), clampi(a.int("end", r)?));
    Ok(vec![ints(dims[s..e.max(s)].to_vec())])
}

pub fn size(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let n = fhec_ir::numel(&ctx.shape(&ctx.input(0)?)) as i64;
    Ok(vec![Val::constant(Tensor::from_i64(vec![], vec![n]).expect("scalar"))])
}

pub fn constant_of_shape(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let shape = ctx.const_ints(0, "shape")?.ok_or("missing shape")?;
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension in {shape:?}")))
        .collect::<Result<_, _>>()?;
    let value = ctx.attrs().tensor("value")?.unwrap_or_else(|| Tensor::scalar_f32(0.0));
    let n = fhec_ir::numel(&shape);
    let t = match value.dtype() {
        DType::F32 => Tensor::from_f32(shape, vec![value.to_f32_vec()[0]; n]),
        DType::I64 => Tensor::from_i64(shape, vec![value.to_i64_vec()[0]; n]),
    };
    Ok(vec![Val::constant(t.expect("sized"))])
}

const INT64: i64 = 7;

/// ONNX TensorProto data types that are floats.
fn is_float_type(to: i64) -> bool {
    [1, 10, 11, 16].contains(&to) // FLOAT, FLOAT16, DOUBLE, BFLOAT16
}

pub fn cast(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let to = ctx.attrs().int("to", 0)?;
    let float = is_float_type(to);
    match (&x, float) {
        (Val::Const(t), true) => Ok(vec![Ctx::f32_const(t.shape().to_vec(), t.to_f32_vec())]),
        (Val::Const(t), false) => {
            // Bool casts normalize to 0/1, from the values themselves (0.5 is true).
            let v = if to == 9 {
                t.to_f32_vec().into_iter().map(|x| i64::from(x != 0.0)).collect()
            } else {
                t.to_i64_vec()
            };
            Ok(vec![Val::constant(Tensor::from_i64(t.shape().to_vec(), v).expect("same shape"))])
        }
        // A computed value keeps its representation: only casts that change nothing are accepted.
        (Val::Dyn(_), true) if ctx.ty(&x).dtype == DType::F32 => Ok(vec![x]),
        (Val::Dyn(_), false) if ctx.ty(&x).dtype == DType::I64 && to == INT64 => Ok(vec![x]),
        (Val::Dyn(_), _) => Err(format!(
            "casting a computed {} tensor to ONNX type {to} is not supported (only casts to the same kind are)",
            ctx.ty(&x).dtype
        )),
    }
}

pub fn range(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let args: Vec<Tensor> = (0..3)
        .map(|i| ctx.const_input(i, ["start", "limit", "delta"][i])?.ok_or_else(|| format!("missing input {i}")))
        .collect::<Result<_, String>>()?;
    if args.iter().all(|t| t.dtype() == DType::I64) {
        let [s, l, d] = [0, 1, 2].map(|i| args[i].to_i64_vec()[0]);
        if d == 0 {
            return Err("delta is 0".into());
        }
        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as i64;
        Ok(vec![ints((0..n).map(|k| s + k * d).collect())])
    } else {
        let [s, l, d] = [0, 1, 2].map(|i| args[i].to_f32_vec()[0]);
        if d == 0.0 {
            return Err("delta is 0".into());
        }
        let n = ((l - s) / d).ceil().max(0.0) as usize;
        Ok(vec![Ctx::f32_const(vec![n], (0..n).map(|k| s + k as f32 * d).collect())])
    }
}

/// Two constant operands broadcast to a common shape, as f64.
pub(super) type Zipped = (Vec<usize>, Vec<f64>, Vec<f64>);

/// Broadcasts two constant tensors elementwise (for the constant-only logic ops).
pub(super) fn const_zip(ctx: &Ctx, i: usize, j: usize) -> Result<Zipped, String> {
    let (a, b) = (
        ctx.const_input(i, "operand")?.ok_or("missing operand")?,
        ctx.const_input(j, "operand")?.ok_or("missing operand")?,
    );
    let shape = fhec_ir::broadcast_shapes(a.shape(), b.shape()).ok_or("operands do not broadcast")?;
    let expand = |t: &Tensor| -> Vec<f64> {
        let v: Vec<f64> = match t.dtype() {
            DType::F32 => t.to_f32_vec().into_iter().map(f64::from).collect(),
            DType::I64 => t.to_i64_vec().into_iter().map(|x| x as f64).collect(),
        };
        broadcast_to(&v, t.shape(), &shape)
    };
    Ok((shape.clone(), expand(&a), expand(&b)))
}

pub fn expand(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx
        .const_input(0, "input")
        .map_err(|e| format!("{e} (Expand is only supported on constants)"))?
        .ok_or("missing input")?;
    let shape = ctx.const_ints(1, "shape")?.ok_or("missing shape")?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let full = fhec_ir::broadcast_shapes(x.shape(), &shape).ok_or("shape does not broadcast")?;
    let t = match x.dtype() {
        DType::F32 => Tensor::from_f32(full.clone(), broadcast_to(x.as_f32().expect("f32"), x.shape(), &full)),
        DType::I64 => Tensor::from_i64(full.clone(), broadcast_to(x.as_i64().expect("i64"), x.shape(), &full)),
    };
    Ok(vec![Val::constant(t.expect("sized"))])
}

/// Split along `axis` into the parts given by the `split` input (opset 13+) or attribute, or into
/// `num_outputs` (opset 18) or as many equal parts as the node has outputs.
pub fn split(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let ax = axis(ctx.attrs().int("axis", 0)?, shape.len())?;
    let dim = shape[ax];
    let given = if ctx.opset >= 13 { ctx.const_ints(1, "split")? } else { ctx.attrs().ints("split")? };
    let parts: Vec<usize> = match given {
        Some(p) if !p.is_empty() => {
            let p: Vec<usize> = p
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| format!("negative split size {v}")))
                .collect::<Result<_, _>>()?;
            if p.iter().sum::<usize>() != dim {
                return Err(format!("split sizes {p:?} do not add up to the dimension {dim} of axis {ax}"));
            }
            p
        }
        _ => {
            let n = match ctx.attrs().int("num_outputs", 0)? {
                0 => ctx.n_outputs(),
                n => usize::try_from(n).map_err(|_| format!("num_outputs {n}"))?,
            };
            if n == 0 {
                return Err("split into 0 parts".into());
            }
            // Equal parts, the last one smaller if the dimension does not divide (opset 18).
            let size = dim.div_ceil(n);
            let mut p = vec![size; n];
            let last = dim.checked_sub(size * (n - 1)).ok_or_else(|| format!("cannot split {dim} into {n} parts"))?;
            p[n - 1] = last;
            p
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    for len in parts {
        let op =
            Op::Slice { axes: vec![ax], starts: vec![start as i64], ends: vec![(start + len) as i64], steps: vec![1] };
        out.push(ctx.op(op, std::slice::from_ref(&x))?);
        start += len;
    }
    Ok(out)
}

/// Tile with constant repeats: copies concatenated along each axis.
pub fn tile(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let mut x = ctx.input(0)?;
    let repeats = ctx.const_ints(1, "repeats")?.ok_or("Tile needs constant repeats")?;
    if repeats.len() != ctx.shape(&x).len() {
        return Err(format!("{} repeats for a rank-{} input", repeats.len(), ctx.shape(&x).len()));
    }
    for (ax, &r) in repeats.iter().enumerate() {
        let r = usize::try_from(r).map_err(|_| format!("negative repeat {r}"))?;
        if r == 0 {
            return Err("a repeat of 0 gives an empty tensor".into());
        }
        if r > 1 {
            let copies = vec![x.clone(); r];
            x = ctx.op(Op::Concat { axis: ax }, &copies)?;
        }
    }
    Ok(vec![x])
}

/// Resize (and Upsample), one resized axis at a time as in ONNX's reference:
/// - `nearest` is a gather of source indices: only data moves, free under FHE;
/// - `linear` and `cubic` (with `antialias`, `exclude_outside`, `cubic_coeff_a`, and the
///   extrapolation value of `tf_crop_and_resize`) weigh neighbouring elements by constants that
///   depend only on the shapes, so each axis is a constant [in, out] matrix product: a leveled linear
///   map under FHE, like a convolution with a fixed kernel.
pub fn resize(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let rank = shape.len();
    let a = ctx.attrs();
    let upsample = ctx.node.op_type == "Upsample";
    let legacy = upsample || ctx.opset < 11;
    let antialias = a.int("antialias", 0)? != 0;
    let kernel = match a.string("mode", "nearest")?.as_str() {
        "nearest" if antialias => return Err("antialias applies to linear and cubic modes, not to nearest".into()),
        "nearest" => None,
        "linear" => Some(Kernel::Linear { antialias }),
        "cubic" => Some(Kernel::Cubic { a: f64::from(a.float("cubic_coeff_a", -0.75)?), antialias }),
        other => return Err(format!("mode \"{other}\" is not a Resize mode (nearest, linear, cubic)")),
    };
    let coord =
        if legacy { "asymmetric".to_string() } else { a.string("coordinate_transformation_mode", "half_pixel")? };
    let nearest = if legacy { "floor".to_string() } else { a.string("nearest_mode", "round_prefer_floor")? };
    let policy = if legacy { "stretch".to_string() } else { a.string("keep_aspect_ratio_policy", "stretch")? };
    let exclude_outside = a.int("exclude_outside", 0)? != 0;
    let extrapolation = f64::from(a.float("extrapolation_value", 0.0)?);
    let axes_attr = a.ints("axes")?;
    // Inputs: opset 10 and Upsample (X, scales); 11+ (X, roi, scales, sizes).
    let (scales, sizes) = if legacy {
        let scales = match ctx.const_input(1, "scales")? {
            Some(t) => t.to_f32_vec(),
            None if upsample => a.floats("scales")?.ok_or("missing scales")?,
            None => return Err("missing scales".into()),
        };
        (Some(scales), None)
    } else {
        let scales = ctx.const_input(2, "scales")?.map(|t| t.to_f32_vec()).filter(|v| !v.is_empty());
        let sizes = ctx.const_ints(3, "sizes")?.filter(|v| !v.is_empty());
        (scales, sizes)
    };
    let axes: Vec<usize> = match axes_attr {
        Some(l) => l.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let n = axes.len();
    // The region of interest, [starts.., ends..] over the resized axes: read only by tf_crop_and_resize.
    let roi = match coord.as_str() {
        "tf_crop_and_resize" => {
            let roi = ctx.const_input(1, "roi")?.map(|t| t.to_f32_vec()).unwrap_or_default();
            if roi.len() != 2 * n {
                return Err(format!(
                    "tf_crop_and_resize needs a constant roi of {} values (start and end per resized axis), got {}",
                    2 * n,
                    roi.len()
                ));
            }
            Some(roi.into_iter().map(f64::from).collect::<Vec<_>>())
        }
        _ => None,
    };
    let (outs, factors): (Vec<usize>, Vec<f64>) = match (scales, sizes) {
        (_, Some(sz)) if sz.len() == n => {
            let outs: Vec<usize> = sz
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| format!("negative size {s}")))
                .collect::<Result<_, _>>()?;
            let stretched: Vec<f64> = axes.iter().zip(&outs).map(|(&ax, &o)| o as f64 / shape[ax] as f64).collect();
            // One scale for every resized axis, the smallest or the largest, and sizes rounded from it.
            let kept = match policy.as_str() {
                "stretch" => None,
                "not_larger" => Some(stretched.iter().copied().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(stretched.iter().copied().fold(0.0, f64::max)),
                other => {
                    return Err(format!(
                        "keep_aspect_ratio_policy \"{other}\" is not stretch, not_larger or not_smaller"
                    ));
                }
            };
            match kept {
                None => (outs, stretched),
                Some(s) => (axes.iter().map(|&ax| (s * shape[ax] as f64 + 0.5) as usize).collect(), vec![s; n]),
            }
        }
        (Some(sc), _) if sc.len() == n => {
            let f: Vec<f64> = sc.iter().map(|&s| f64::from(s)).collect();
            if f.iter().any(|&s| s.is_nan() || s <= 0.0 || s.is_infinite()) {
                return Err(format!("scales {sc:?} must be positive"));
            }
            let outs = axes.iter().zip(&f).map(|(&ax, &s)| (shape[ax] as f64 * s).floor() as usize).collect();
            (outs, f)
        }
        _ => return Err(format!("needs {n} scales or sizes (one per resized axis)")),
    };
    let mut y = x;
    for (i, ((&ax, &out), &s)) in axes.iter().zip(&outs).zip(&factors).enumerate() {
        let len = shape[ax];
        let roi = roi.as_ref().map(|r| (r[i], r[n + i]));
        if out == len && s == 1.0 && roi.is_none_or(|r| r == (0.0, 1.0)) {
            continue;
        }
        if out == 0 {
            return Err(format!("axis {ax} resized to 0 elements"));
        }
        y = match kernel {
            None => {
                let indices = nearest_indices(&coord, &nearest, len, out, s)?;
                ctx.op(Op::Gather { axis: ax, indices, indices_shape: vec![out] }, &[y])?
            }
            Some(k) => {
                let axis_map = Interpolation::new(k, &coord, len, out, s, roi, exclude_outside)?;
                axis_map.apply(ctx, y, ax, extrapolation)?
            }
        };
    }
    Ok(vec![y])
}

/// The source element of each output element of one axis, in `nearest` mode.
fn nearest_indices(coord: &str, nearest: &str, len: usize, out: usize, s: f64) -> Result<Vec<i64>, String> {
    let mut indices = Vec::with_capacity(out);
    for o in 0..out {
        let o = o as f64;
        let src = match coord {
            "half_pixel" => (o + 0.5) / s - 0.5,
            "pytorch_half_pixel" => {
                if out > 1 {
                    (o + 0.5) / s - 0.5
                } else {
                    0.0
                }
            }
            "asymmetric" => o / s,
            "tf_half_pixel_for_nn" => (o + 0.5) / s,
            "align_corners" => {
                if out > 1 {
                    o * (len as f64 - 1.0) / (out as f64 - 1.0)
                } else {
                    0.0
                }
            }
            "half_pixel_symmetric" => {
                let adj = out as f64 / (s * len as f64);
                let center = len as f64 / 2.0;
                center * (1.0 - adj) + (o + 0.5) / s - 0.5
            }
            other => return Err(format!("coordinate_transformation_mode \"{other}\" is not supported with nearest")),
        };
        let i = match nearest {
            "round_prefer_floor" => {
                if src.fract() == 0.5 {
                    src.floor()
                } else {
                    src.round()
                }
            }
            "round_prefer_ceil" => {
                if src.fract() == 0.5 {
                    src.ceil()
                } else {
                    src.round()
                }
            }
            "floor" => src.floor(),
            "ceil" => src.ceil(),
            other => return Err(format!("nearest_mode \"{other}\" is not supported")),
        };
        indices.push((i.max(0.0) as i64).min(len as i64 - 1));
    }
    Ok(indices)
}

/// An interpolating Resize kernel.
#[derive(Clone, Copy)]
enum Kernel {
    Linear {
        antialias: bool,
    },
    /// Keys' cubic convolution with coefficient `a`.
    Cubic {
        a: f64,
        antialias: bool,
    },
}

impl Kernel {
    /// The weights of the kernel's taps around a source coordinate `ratio` (in (0, 1]) past the tap
    /// left of it. With antialias and a downscale `s < 1`, the kernel is stretched by `1/s` (more
    /// taps) and normalized.
    fn weights(self, ratio: f64, s: f64) -> Vec<f64> {
        let normalized = |w: Vec<f64>| {
            let sum: f64 = w.iter().sum();
            w.into_iter().map(|v| v / sum).collect()
        };
        match self {
            Kernel::Linear { antialias: false } => vec![1.0 - ratio, ratio],
            Kernel::Linear { antialias: true } => {
                let s = s.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                normalized((start..2 - start).map(|k| (1.0 - ((k as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect())
            }
            Kernel::Cubic { a, antialias: false } => {
                let (r, q) = (ratio, 1.0 - ratio);
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
            Kernel::Cubic { a, antialias: true } => {
                let s = s.min(1.0);
                let cubic = |x: f64| {
                    let x = x.abs();
                    if x <= 1.0 {
                        (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
                    } else if x < 2.0 {
                        a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / s).floor() as i64 + 1;
                normalized((start..2 - start).map(|i| cubic(s * (i as f64 - ratio))).collect())
            }
        }
    }
}

/// One axis of an interpolating Resize: output element `o` is `Σ_i weights[i * out + o] · x[i]` (the
/// [len, out] matrix the axis is multiplied by), or the extrapolation value where
/// `tf_crop_and_resize` reads outside the input.
struct Interpolation {
    len: usize,
    out: usize,
    weights: Vec<f32>,
    extrapolated: Vec<bool>,
}

impl Interpolation {
    fn new(
        kernel: Kernel,
        coord: &str,
        len: usize,
        out: usize,
        s: f64,
        roi: Option<(f64, f64)>,
        exclude_outside: bool,
    ) -> Result<Self, String> {
        let (last, width) = (len as f64 - 1.0, s * len as f64);
        let mut weights = vec![0.0f64; len * out];
        let mut extrapolated = vec![false; out];
        for o in 0..out {
            let y = o as f64;
            let x = match coord {
                "align_corners" => {
                    if width == 1.0 {
                        0.0
                    } else {
                        y * last / (width - 1.0)
                    }
                }
                "asymmetric" => y / s,
                "pytorch_half_pixel" => {
                    if width == 1.0 {
                        -0.5
                    } else {
                        (y + 0.5) / s - 0.5
                    }
                }
                "half_pixel" => (y + 0.5) / s - 0.5,
                "half_pixel_symmetric" => len as f64 / 2.0 * (1.0 - out as f64 / width) + (y + 0.5) / s - 0.5,
                "tf_crop_and_resize" => {
                    let (lo, hi) = roi.ok_or("tf_crop_and_resize needs a roi")?;
                    let x = if width == 1.0 { (hi - lo) * last / 2.0 } else { y * (hi - lo) * last / (width - 1.0) };
                    x + lo * last
                }
                other => {
                    return Err(format!(
                        "coordinate_transformation_mode \"{other}\" is not supported with interpolation"
                    ));
                }
            };
            if coord == "tf_crop_and_resize" && !(0.0..=last).contains(&x) {
                extrapolated[o] = true;
                continue;
            }
            // The taps nearest to `x`, ties to the left; `ratio` in (0, 1] past the tap left of `x`.
            let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
            let mut w = kernel.weights(ratio, s);
            let taps = w.len() as i64;
            let pad = (taps + 1) / 2;
            let padded = x + pad as f64;
            let frac = padded - padded.floor();
            let offset = if taps % 2 == 0 {
                if frac == 0.0 { -(taps / 2) } else { -(taps / 2) + 1 }
            } else if frac <= 0.5 {
                -((taps - 1) / 2)
            } else {
                -((taps - 1) / 2) + 1
            };
            let first = padded.floor() as i64 + offset - pad;
            let inside = |j: usize| (0..len as i64).contains(&(first + j as i64));
            if exclude_outside {
                for (j, v) in w.iter_mut().enumerate() {
                    if !inside(j) {
                        *v = 0.0;
                    }
                }
                let sum: f64 = w.iter().sum();
                if sum != 0.0 {
                    w.iter_mut().for_each(|v| *v /= sum);
                }
            }
            // Taps outside the input read its edge.
            for (j, v) in w.into_iter().enumerate() {
                let i = (first + j as i64).clamp(0, len as i64 - 1) as usize;
                weights[i * out + o] += v;
            }
        }
        Ok(Self { len, out, weights: weights.into_iter().map(|w| w as f32).collect(), extrapolated })
    }

    /// Applies the map along axis `ax` of `x`: the axis moves last, is multiplied by the constant
    /// [len, out] matrix, gains the extrapolation value where it applies, and moves back.
    fn apply(&self, ctx: &mut Ctx, x: Val, ax: usize, extrapolation: f64) -> Result<Val, String> {
        let shape = ctx.shape(&x);
        let rank = shape.len();
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != ax).collect();
        perm.push(ax);
        let moved = if ax + 1 == rank { x } else { ctx.op(Op::Transpose { perm: perm.clone() }, &[x])? };
        let rows: Vec<usize> = perm[..rank - 1].iter().map(|&i| shape[i]).collect();
        let flat = ctx.reshape(&moved, vec![rows.iter().product(), self.len])?;
        let mut y = ctx.op(Op::MatMul, &[flat, Ctx::f32_const(vec![self.len, self.out], self.weights.clone())])?;
        if self.extrapolated.iter().any(|&e| e) {
            let fill = self.extrapolated.iter().map(|&e| if e { extrapolation as f32 } else { 0.0 }).collect();
            y = ctx.binary(fhec_ir::Binary::Add, &y, &Ctx::f32_const(vec![self.out], fill))?;
        }
        let y = ctx.reshape(&y, [rows, vec![self.out]].concat())?;
        if ax + 1 == rank {
            return Ok(y);
        }
        let mut back = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            back[p] = i;
        }
        ctx.op(Op::Transpose { perm: back }, &[y])
    }
}
