//! Convolution, batch normalization and pooling.

use crate::ctx::{Ctx, Val};
use crate::proto::Attrs;
use fhec_ir::{Binary, ConvAttrs, Op, PoolAttrs, ReduceKind};

fn to_usizes(v: &[i64], what: &str) -> Result<Vec<usize>, String> {
    v.iter().map(|&x| usize::try_from(x).map_err(|_| format!("{what} must be non-negative, got {v:?}"))).collect()
}

/// Resolved window geometry: explicit pads (begin..., end...) from `pads` or `auto_pad`.
struct Geometry {
    strides: Vec<usize>,
    pads: Vec<usize>,
    dilations: Vec<usize>,
}

fn geometry(a: &Attrs, input: &[usize], kernel: &[usize], read_dilations: bool) -> Result<Geometry, String> {
    let s = kernel.len();
    if !(1..=2).contains(&s) {
        return Err(format!("{s}-D windows are not supported (1-D and 2-D are)"));
    }
    if input.len() != s + 2 {
        return Err(format!("input of shape {input:?} does not match a {s}-D window"));
    }
    let list = |name: &str, default: usize| -> Result<Vec<usize>, String> {
        match a.ints(name)? {
            Some(v) if v.len() == s => to_usizes(&v, name),
            Some(v) => Err(format!("`{name}` has {} values, expected {s}", v.len())),
            None => Ok(vec![default; s]),
        }
    };
    let strides = list("strides", 1)?;
    let dilations = if read_dilations { list("dilations", 1)? } else { vec![1; s] };
    let auto_pad = a.string("auto_pad", "NOTSET")?;
    let pads = match auto_pad.as_str() {
        "NOTSET" => match a.ints("pads")? {
            Some(v) if v.len() == 2 * s => to_usizes(&v, "pads")?,
            Some(v) => return Err(format!("`pads` has {} values, expected {}", v.len(), 2 * s)),
            None => vec![0; 2 * s],
        },
        "VALID" => vec![0; 2 * s],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = vec![0; 2 * s];
            for i in 0..s {
                let out = input[2 + i].div_ceil(strides[i]);
                let span = (kernel[i] - 1) * dilations[i] + 1;
                let total = ((out - 1) * strides[i] + span).saturating_sub(input[2 + i]);
                let small = total / 2;
                let (begin, end) =
                    if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                pads[i] = begin;
                pads[i + s] = end;
            }
            pads
        }
        other => return Err(format!("unknown auto_pad `{other}`")),
    };
    Ok(Geometry { strides, pads, dilations })
}

pub fn conv(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, w, b) = (ctx.input(0)?, ctx.input(1)?, ctx.opt_input(2)?);
    Ok(vec![conv_of(ctx, x, w, b)?])
}

/// A convolution with the node's attributes (Conv, and the quantized convolutions around it).
pub(super) fn conv_of(ctx: &mut Ctx, x: Val, w: Val, b: Option<Val>) -> Result<Val, String> {
    let (xs, ws) = (ctx.shape(&x), ctx.shape(&w));
    if ws.len() < 3 {
        return Err(format!("weight of shape {ws:?} is not a convolution kernel"));
    }
    let a = ctx.attrs();
    if let Some(k) = a.ints("kernel_shape")?
        && to_usizes(&k, "kernel_shape")? != ws[2..]
    {
        return Err(format!("kernel_shape {k:?} does not match the weight's shape {ws:?}"));
    }
    let g = geometry(&a, &xs, &ws[2..], true)?;
    let group = usize::try_from(a.int("group", 1)?).map_err(|_| "group must be positive")?;
    let mut operands = vec![x, w];
    operands.extend(b);
    let attrs = ConvAttrs { strides: g.strides, pads: g.pads, dilations: g.dilations, group };
    ctx.op(Op::Conv(attrs), &operands)
}

/// Inference-mode batch normalization, folded to `x * s + t` per channel.
pub fn batch_norm(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let a = ctx.attrs();
    if a.int("training_mode", 0)? != 0 {
        return Err("training_mode=1 is not supported; export the model in eval mode".into());
    }
    let eps = a.float("epsilon", 1e-5)?;
    let names = ["scale", "B", "input_mean", "input_var"];
    let mut params = Vec::new();
    for (i, name) in names.iter().enumerate() {
        params.push(
            ctx.const_input(i + 1, name)?.ok_or_else(|| format!("missing input {} ({name})", i + 1))?.to_f32_vec(),
        );
    }
    let shape = ctx.shape(&x);
    if shape.len() < 2 {
        return Err(format!("input of shape {shape:?} has no channel axis"));
    }
    let c = shape[1];
    if params.iter().any(|p| p.len() != c) {
        return Err(format!("scale, B, mean and var must all have {c} values (one per channel)"));
    }
    let scale: Vec<f32> = (0..c).map(|i| params[0][i] / (params[3][i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| params[1][i] - params[2][i] * scale[i]).collect();
    let mut bshape = vec![c];
    bshape.resize(shape.len() - 1, 1);
    let y = ctx.binary(Binary::Mul, &x, &Ctx::f32_const(bshape.clone(), scale))?;
    Ok(vec![ctx.binary(Binary::Add, &y, &Ctx::f32_const(bshape, shift))?])
}

fn pool(ctx: &mut Ctx, max: bool) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let xs = ctx.shape(&x);
    let a = ctx.attrs();
    let kernel = to_usizes(&a.ints("kernel_shape")?.ok_or("missing attribute `kernel_shape`")?, "kernel_shape")?;
    if a.int("storage_order", 0)? != 0 {
        return Err("storage_order=1 is not supported".into());
    }
    // Dilations exist for MaxPool from opset 10 and AveragePool from opset 19.
    let g = geometry(&a, &xs, &kernel, a.has("dilations"))?;
    let attrs = PoolAttrs {
        kernel,
        strides: g.strides,
        pads: g.pads,
        dilations: g.dilations,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
        count_include_pad: !max && a.int("count_include_pad", 0)? != 0,
    };
    let op = if max { Op::MaxPool(attrs) } else { Op::AvgPool(attrs) };
    Ok(vec![ctx.op(op, &[x])?])
}

pub fn average_pool(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    pool(ctx, false)
}

pub fn max_pool(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    pool(ctx, true)
}

/// A max pool whose window is the whole spatial extent.
pub fn global_max_pool(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    if shape.len() < 3 {
        return Err(format!("input of rank {} has no spatial axes", shape.len()));
    }
    let spatial = shape[2..].to_vec();
    let n = spatial.len();
    let attrs = PoolAttrs {
        kernel: spatial,
        strides: vec![1; n],
        pads: vec![0; 2 * n],
        dilations: vec![1; n],
        ceil_mode: false,
        count_include_pad: false,
    };
    Ok(vec![ctx.op(Op::MaxPool(attrs), &[x])?])
}

pub fn global_average_pool(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let rank = ctx.shape(&x).len();
    if rank < 3 {
        return Err(format!("input of rank {rank} has no spatial axes"));
    }
    Ok(vec![ctx.op(Op::Reduce { kind: ReduceKind::Mean, axes: (2..rank).collect(), keepdims: true }, &[x])?])
}
