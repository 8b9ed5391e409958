//! QuantizeLinear and DequantizeLinear (QDQ models): the model's own scales and zero points, as
//! elementwise float ops. `q = clip(round(x / scale) + zero_point, qmin, qmax)` (round half to even)
//! holds integers in f32; `(q - zero_point) * scale` reads them back. On constants (quantized weights)
//! they fold at compile time; on encrypted values the optimizer fuses a Q/DQ pair with the activation
//! next to it into one table.

use super::axis;
use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Op, Unary};

/// ONNX element types (`TensorProto.DataType`) of the quantized integers.
const UINT8: i32 = 2;
const INT8: i32 = 3;
const UINT16: i32 = 4;
const INT16: i32 = 5;
const INT32: i32 = 6;
const UINT4: i32 = 21;
const INT4: i32 = 22;

/// The integer range of an ONNX element type.
fn range_of(dt: i32) -> Result<(f32, f32), String> {
    Ok(match dt {
        UINT8 => (0.0, 255.0),
        INT8 => (-128.0, 127.0),
        UINT16 => (0.0, 65535.0),
        INT16 => (-32768.0, 32767.0),
        // Quantized biases.
        INT32 => (-2147483648.0, 2147483647.0),
        UINT4 => (0.0, 15.0),
        INT4 => (-8.0, 7.0),
        other => return Err(format!("quantization to element type {other} is not supported (integers of 4, 8, 16 or 32 bits are)")),
    })
}

/// Scale (and zero point) shaped to broadcast against `x`: a scalar, or a 1-D tensor along `axis`.
fn along_axis(ctx: &mut Ctx, v: &Val, x: &Val, what: &str) -> Result<Val, String> {
    let shape = ctx.shape(v);
    let rank = ctx.shape(x).len();
    if shape.iter().product::<usize>() == 1 {
        return ctx.reshape(v, vec![]);
    }
    if shape.len() != 1 {
        return Err(format!("{what} of shape {shape:?}: only per-tensor and per-axis quantization are supported (not blocked)"));
    }
    let ax = axis(ctx.attrs().int("axis", 1)?, rank)?;
    if ctx.shape(x)[ax] != shape[0] {
        return Err(format!("{what} has {} values for axis {ax} of size {}", shape[0], ctx.shape(x)[ax]));
    }
    let mut b = vec![1; rank];
    b[ax] = shape[0];
    ctx.reshape(v, b)
}

fn check_block(ctx: &Ctx) -> Result<(), String> {
    if ctx.attrs().int("block_size", 0)? != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    Ok(())
}

pub fn quantize_linear(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    check_block(ctx)?;
    let x = ctx.input(0)?;
    let scale = ctx.const_input(1, "y_scale")?.ok_or("y_scale must be a constant")?;
    let zp = ctx.opt_input(2)?;
    let elem = match (ctx.input_elem_type(2), ctx.attrs().int("output_dtype", 0)?) {
        (Some(t), _) => t,
        (None, 0) if zp.is_none() => UINT8,
        (None, 0) => return Err("y_zero_point must be a constant".into()),
        (None, t) => t as i32,
    };
    let (qmin, qmax) = range_of(elem)?;
    let s = along_axis(ctx, &Val::constant(scale), &x, "y_scale")?;
    let mut q = ctx.binary(Binary::Div, &x, &s)?;
    q = ctx.op(Op::Unary(Unary::Round), &[q])?;
    if let Some(z) = zp {
        let z = along_axis(ctx, &z, &x, "y_zero_point")?;
        q = ctx.binary(Binary::Add, &q, &z)?;
    }
    Ok(vec![ctx.op(Op::Unary(Unary::Clip { min: qmin, max: qmax }), &[q])?])
}

pub fn dequantize_linear(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    check_block(ctx)?;
    let x = ctx.input(0)?;
    if let Some(t) = ctx.input_elem_type(0) {
        range_of(t)?;
    }
    let scale = ctx.const_input(1, "x_scale")?.ok_or("x_scale must be a constant")?;
    let mut y = x.clone();
    if let Some(z) = ctx.opt_input(2)? {
        let z = along_axis(ctx, &z, &x, "x_zero_point")?;
        y = ctx.binary(Binary::Sub, &y, &z)?;
    }
    // Integer constants (quantized weights): `x - zero_point` in integers, then float, as onnxruntime does.
    if let Some(t) = y.as_const()
        && t.dtype() == fhec_ir::DType::I64
    {
        let f = fhec_ir::Tensor::from_f32(t.shape().to_vec(), t.to_i64_vec().iter().map(|&v| v as f32).collect()).ok_or("shape")?;
        y = Val::constant(f);
    }
    let s = along_axis(ctx, &Val::constant(scale), &x, "x_scale")?;
    Ok(vec![ctx.binary(Binary::Mul, &y, &s)?])
}
