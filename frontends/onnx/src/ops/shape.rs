//! Shape and data-movement ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
//! Gather, Pad, Tile, and the identities (Identity, Dropout).

use super::{axes, axis};
use crate::ctx::{Ctx, Val};
use fhec_ir::{DType, Op, PadMode};

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
        let rest = fhec_ir::checked_numel(&out).unwrap_or(0);
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!("cannot reshape {shape:?} to {target:?}"));
        }
        out[i] = total / rest;
    }
    if fhec_ir::checked_numel(&out) != Some(total) {
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
    let reps: Vec<usize> = repeats
        .iter()
        .map(|&r| usize::try_from(r).map_err(|_| format!("negative repeat {r}")))
        .collect::<Result<_, _>>()?;
    let full: Vec<usize> = ctx.shape(&x).iter().zip(&reps).map(|(&d, &r)| d.saturating_mul(r)).collect();
    fhec_ir::check_shape(&full)?;
    for (ax, r) in reps.into_iter().enumerate() {
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
