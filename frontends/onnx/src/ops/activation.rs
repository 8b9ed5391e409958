//! Elementwise activations and univariate math: Relu, Sigmoid, Clip, Pow, ...

use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Op, Unary};

pub fn unary(ctx: &mut Ctx, u: Unary) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    // Shape arithmetic negates integer constants (LayerNormalization's expanded form does).
    if let (Unary::Neg | Unary::Abs, Some(t)) = (&u, x.as_const())
        && t.dtype() == fhec_ir::DType::I64
    {
        let v: Vec<i64> =
            t.to_i64_vec().iter().map(|&a| if u == Unary::Neg { a.wrapping_neg() } else { a.wrapping_abs() }).collect();
        let t = fhec_ir::Tensor::from_i64(t.shape().to_vec(), v).ok_or("integer negation: shape")?;
        return Ok(vec![Val::constant(t)]);
    }
    Ok(vec![ctx.op(Op::Unary(u), &[x])?])
}

pub fn leaky_relu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let alpha = ctx.attrs().float("alpha", 0.01)?;
    unary(ctx, Unary::LeakyRelu { alpha })
}

/// PRelu. Before opset 7 a slope of one value per channel (`[C]`) applies along axis 1 (torch's
/// exports of that time); from opset 7 the slope broadcasts as numpy's.
pub fn prelu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, mut slope) = (ctx.input(0)?, ctx.input(1)?);
    let (xs, ss) = (ctx.shape(&x), ctx.shape(&slope));
    if ctx.opset < 7 && ss.len() == 1 && ss[0] > 1 && xs.len() > 2 && xs[1] == ss[0] {
        let mut per_channel = vec![ss[0]];
        per_channel.resize(xs.len() - 1, 1);
        slope = ctx.reshape(&slope, per_channel)?;
    }
    Ok(vec![ctx.binary(Binary::PRelu, &x, &slope)?])
}

pub fn hard_sigmoid(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let a = ctx.attrs();
    let (alpha, beta) = (a.float("alpha", 0.2)?, a.float("beta", 0.5)?);
    unary(ctx, Unary::HardSigmoid { alpha, beta })
}

pub fn thresholded_relu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let alpha = ctx.attrs().float("alpha", 1.0)?;
    unary(ctx, Unary::ThresholdedRelu { alpha })
}

pub fn celu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let alpha = ctx.attrs().float("alpha", 1.0)?;
    if alpha == 0.0 {
        return Err("alpha must not be 0".into());
    }
    unary(ctx, Unary::Celu { alpha })
}

/// Gelu (opset 20): `approximate` is "none" (erf) or "tanh".
pub fn gelu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let tanh = match ctx.attrs().string("approximate", "none")?.as_str() {
        "none" => false,
        "tanh" => true,
        other => return Err(format!("attribute `approximate` is {other:?}, expected \"none\" or \"tanh\"")),
    };
    unary(ctx, Unary::Gelu { tanh })
}

pub fn elu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let alpha = ctx.attrs().float("alpha", 1.0)?;
    unary(ctx, Unary::Elu { alpha })
}

pub fn selu(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let a = ctx.attrs();
    let alpha = a.float("alpha", 1.673_263_2)?;
    let gamma = a.float("gamma", 1.050_701)?;
    unary(ctx, Unary::Selu { alpha, gamma })
}

/// Clip: bounds are attributes before opset 11 and optional constant inputs from 11 on.
pub fn clip(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (min, max) = if ctx.opset < 11 {
        let a = ctx.attrs();
        (a.float("min", f32::NEG_INFINITY)?, a.float("max", f32::INFINITY)?)
    } else {
        let scalar = |t: Option<fhec_ir::Tensor>, default: f32| -> Result<f32, String> {
            match t {
                None => Ok(default),
                Some(t) if t.numel() == 1 => Ok(t.to_f32_vec()[0]),
                Some(t) => Err(format!("clip bounds must be scalars, got shape {:?}", t.shape())),
            }
        };
        (scalar(ctx.const_input(1, "min")?, f32::NEG_INFINITY)?, scalar(ctx.const_input(2, "max")?, f32::INFINITY)?)
    };
    unary(ctx, Unary::Clip { min, max })
}

/// Pow with a constant exponent that is the same for every element.
pub fn pow(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let base = ctx.input(0)?;
    let e = ctx.const_input(1, "exponent")?.ok_or("missing required input 1 (exponent)")?;
    let ev = e.to_f32_vec();
    let exponent = *ev.first().ok_or("empty exponent")?;
    if ev.iter().any(|&x| x != exponent) {
        return Err("the exponent must be one value (the same for every element)".into());
    }
    let out = ctx.op(Op::Unary(Unary::Pow { exponent }), std::slice::from_ref(&base))?;
    // A broadcasting exponent tensor may raise the rank: reshape like numpy would.
    let shape = fhec_ir::broadcast_shapes(&ctx.shape(&base), e.shape()).ok_or("shapes do not broadcast")?;
    Ok(vec![ctx.reshape(&out, shape)?])
}
