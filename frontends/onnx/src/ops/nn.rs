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
    if !(1..=3).contains(&s) {
        return Err(format!("{s}-D windows are not supported (1-D, 2-D and 3-D are)"));
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

/// ConvTranspose, as a convolution: the input spread on a grid (input position `i` at
/// `i·stride + begin`, zeros between, `begin = dilation·(k − 1) − pad_begin`; a negative edge crops
/// the grid), then a stride-1 convolution with the kernel flipped and its two channel axes swapped
/// per group. The spreading is a product by a constant 0/1 matrix, leveled like the convolution.
pub fn conv_transpose(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, b) = (ctx.input(0)?, ctx.opt_input(2)?);
    let w = ctx.const_input(1, "W")?.ok_or("the kernel W must be constant")?;
    let (xs, ws) = (ctx.shape(&x), w.shape().to_vec());
    let s = ws.len().saturating_sub(2);
    if !(1..=3).contains(&s) {
        return Err(format!("a kernel of shape {ws:?}: {s}-D ConvTranspose is not supported (1-D, 2-D and 3-D are)"));
    }
    if xs.len() != s + 2 || xs[1] != ws[0] {
        return Err(format!("input of shape {xs:?} does not match the kernel {ws:?} (channels first)"));
    }
    let a = ctx.attrs();
    if let Some(k) = a.ints("kernel_shape")?
        && to_usizes(&k, "kernel_shape")? != ws[2..]
    {
        return Err(format!("kernel_shape {k:?} does not match the weight's shape {ws:?}"));
    }
    let group = usize::try_from(a.int("group", 1)?).ok().filter(|&g| g > 0 && ws[0] % g == 0).ok_or_else(|| {
        format!("group {} does not divide the {} input channels", a.int("group", 1).unwrap_or(0), ws[0])
    })?;
    let list = |name: &str, default: i64| -> Result<Vec<i64>, String> {
        match a.ints(name)? {
            Some(v) if v.len() == s && v.iter().all(|&x| x >= 0) => Ok(v),
            Some(v) => Err(format!("`{name}` is {v:?}: expected {s} non-negative values")),
            None => Ok(vec![default; s]),
        }
    };
    let (strides, dilations, extra) = (list("strides", 1)?, list("dilations", 1)?, list("output_padding", 0)?);
    if strides.contains(&0) || dilations.contains(&0) {
        return Err("strides and dilations must be positive".into());
    }
    let kernel: Vec<i64> = ws[2..].iter().map(|&k| k as i64).collect();
    let input: Vec<i64> = xs[2..].iter().map(|&n| n as i64).collect();
    let span = |i: usize| (kernel[i] - 1) * dilations[i] + 1;
    let auto_pad = a.string("auto_pad", "NOTSET")?;
    // Padding at each end: given, or what makes the asked output shape (ONNX's rule).
    let wanted = match (a.ints("output_shape")?, auto_pad.as_str()) {
        (Some(out), _) => {
            let out = if out.len() == s + 2 { out[2..].to_vec() } else { out };
            if out.len() != s {
                return Err(format!("`output_shape` {out:?} does not have {s} spatial values"));
            }
            Some(out)
        }
        (None, "SAME_UPPER" | "SAME_LOWER") => Some((0..s).map(|i| input[i] * strides[i]).collect()),
        (None, "NOTSET" | "VALID") => None,
        (None, other) => return Err(format!("unknown auto_pad `{other}`")),
    };
    let pads: Vec<(i64, i64)> = match wanted {
        Some(out) => (0..s)
            .map(|i| {
                let total = strides[i] * (input[i] - 1) + extra[i] + span(i) - out[i];
                let half = total.div_euclid(2); // floor, as ONNX's reference rounds a negative total
                if auto_pad == "SAME_UPPER" { (half, total - half) } else { (total - half, half) }
            })
            .collect(),
        None if auto_pad == "VALID" => vec![(0, 0); s],
        None => match a.ints("pads")? {
            Some(v) if v.len() == 2 * s && v.iter().all(|&p| p >= 0) => (0..s).map(|i| (v[i], v[i + s])).collect(),
            Some(v) => return Err(format!("`pads` is {v:?}: expected {} non-negative values", 2 * s)),
            None => vec![(0, 0); s],
        },
    };
    // The grid the convolution reads, and where each input position lands on it.
    let begin: Vec<i64> = (0..s).map(|i| span(i) - 1 - pads[i].0).collect();
    let grid: Vec<i64> =
        (0..s).map(|i| (input[i] - 1) * strides[i] + 1 + begin[i] + span(i) - 1 - pads[i].1 + extra[i]).collect();
    if (0..s).any(|i| grid[i] < span(i)) {
        return Err(format!("pads {pads:?} leave no output"));
    }
    let (n_in, n_grid) = (input.iter().product::<i64>() as usize, grid.iter().product::<i64>() as usize);
    if n_in.saturating_mul(n_grid) > 1 << 26 {
        return Err(format!("a {input:?} input spread on a {grid:?} grid is too large for this translation"));
    }
    let mut spread = vec![0f32; n_in * n_grid];
    for p in 0..n_in {
        // Row-major coordinates of input position `p`, then of its cell on the grid.
        let mut rest = p as i64;
        let mut at = vec![0i64; s];
        for i in (0..s).rev() {
            at[i] = rest % input[i];
            rest /= input[i];
        }
        let cell: Vec<i64> = (0..s).map(|i| at[i] * strides[i] + begin[i]).collect();
        if (0..s).all(|i| (0..grid[i]).contains(&cell[i])) {
            let q = (0..s).fold(0i64, |q, i| q * grid[i] + cell[i]);
            spread[p * n_grid + q as usize] = 1.0;
        }
    }
    let (batch, channels) = (xs[0], xs[1]);
    let rows = ctx.reshape(&x, vec![batch * channels, n_in])?;
    let spread = ctx.op(Op::MatMul, &[rows, Ctx::f32_const(vec![n_in, n_grid], spread)])?;
    let mut shape = vec![batch, channels];
    shape.extend(grid.iter().map(|&g| g as usize));
    let spread = ctx.reshape(&spread, shape)?;
    // The kernel [C, M/g, k...] as a convolution's [M, C/g, k...], flipped.
    let (per_in, per_out, taps) = (ws[0] / group, ws[1], ws[2..].iter().product::<usize>());
    let wv = w.to_f32_vec();
    let mut flipped = vec![0f32; wv.len()];
    for g in 0..group {
        for mo in 0..per_out {
            for ci in 0..per_in {
                for t in 0..taps {
                    let src = (((g * per_in + ci) * per_out + mo) * taps) + t;
                    flipped[(((g * per_out + mo) * per_in + ci) * taps) + (taps - 1 - t)] = wv[src];
                }
            }
        }
    }
    let mut kshape = vec![group * per_out, per_in];
    kshape.extend(&ws[2..]);
    let mut operands = vec![spread, Ctx::f32_const(kshape, flipped)];
    operands.extend(b);
    let attrs = ConvAttrs {
        strides: vec![1; s],
        pads: vec![0; 2 * s],
        dilations: dilations.iter().map(|&d| d as usize).collect(),
        group,
    };
    Ok(vec![ctx.op(Op::Conv(attrs), &operands)?])
}

/// LRN: `x / (bias + alpha/size · Σ x²)^beta`, the sum over `size` neighbouring channels: the
/// squares, their window sums (a constant 1×1 convolution mixing channels, leveled), the power of
/// the sum (one table each), and the product with `x`.
pub fn lrn(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let xs = ctx.shape(&x);
    if !(3..=4).contains(&xs.len()) {
        return Err(format!("input of shape {xs:?}: LRN is supported on [N, C, L] and [N, C, H, W]"));
    }
    let a = ctx.attrs();
    let size = a.int("size", 0)?;
    let size = usize::try_from(size).ok().filter(|&s| s > 0).ok_or(format!("size must be positive, got {size}"))?;
    let (alpha, beta, bias) = (a.float("alpha", 1e-4)?, a.float("beta", 0.75)?, a.float("bias", 1.0)?);
    let c = xs[1];
    let (below, above) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
    let mut band = vec![0f32; c * c];
    for out in 0..c {
        for i in out.saturating_sub(below)..=(out + above).min(c - 1) {
            band[out * c + i] = 1.0;
        }
    }
    let mut kshape = vec![c, c];
    kshape.resize(xs.len(), 1);
    let squares = ctx.binary(Binary::Mul, &x, &x)?;
    let s = xs.len() - 2;
    let attrs = ConvAttrs { strides: vec![1; s], pads: vec![0; 2 * s], dilations: vec![1; s], group: 1 };
    let sums = ctx.op(Op::Conv(attrs), &[squares, Ctx::f32_const(kshape, band)])?;
    let scaled = ctx.binary(Binary::Mul, &sums, &Ctx::f32_const(vec![], vec![alpha / size as f32]))?;
    let base = ctx.binary(Binary::Add, &scaled, &Ctx::f32_const(vec![], vec![bias]))?;
    let factor = ctx.op(Op::Unary(fhec_ir::Unary::Pow { exponent: -beta }), &[base])?;
    Ok(vec![ctx.binary(Binary::Mul, &x, &factor)?])
}
