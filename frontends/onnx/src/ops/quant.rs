//! QuantizeLinear and DequantizeLinear (QDQ models): the model's own scales and zero points, as
//! elementwise float ops. `q = clip(round(x / scale) + zero_point, qmin, qmax)` (round half to even)
//! holds integers in f32; `(q - zero_point) * scale` reads them back. On constants (quantized weights)
//! they fold at compile time; on encrypted values the optimizer fuses a Q/DQ pair with the activation
//! next to it into one table.
//!
//! The QOperator forms (QLinearMatMul, QLinearConv, MatMulInteger, ConvInteger) are the same
//! dequantize, float op, quantize chains, so they compile like the QDQ form.

use super::axis;
use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Op, Tensor, Unary};

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
        other => {
            return Err(format!(
                "quantization to element type {other} is not supported (integers of 4, 8, 16 or 32 bits are)"
            ));
        }
    })
}

/// Scale (and zero point) shaped to broadcast against `x`: a scalar, or a 1-D tensor along axis `ax`
/// (negative counts from the end; only checked when the tensor is 1-D).
fn along_axis(ctx: &mut Ctx, v: &Val, x: &Val, ax: i64, what: &str) -> Result<Val, String> {
    let shape = ctx.shape(v);
    let rank = ctx.shape(x).len();
    if shape.iter().product::<usize>() == 1 {
        return ctx.reshape(v, vec![]);
    }
    if shape.len() != 1 {
        return Err(format!(
            "{what} of shape {shape:?}: only per-tensor and per-axis quantization are supported (not blocked)"
        ));
    }
    let ax = axis(ax, rank)?;
    if ctx.shape(x)[ax] != shape[0] {
        return Err(format!(
            "{what} has {} values, which match no axis it may run along (axis {ax} of shape {:?})",
            shape[0],
            ctx.shape(x)
        ));
    }
    let mut b = vec![1; rank];
    b[ax] = shape[0];
    ctx.reshape(v, b)
}

/// The `axis` attribute of QuantizeLinear / DequantizeLinear.
fn axis_attr(ctx: &Ctx) -> Result<i64, String> {
    ctx.attrs().int("axis", 1)
}

fn check_block(ctx: &Ctx) -> Result<(), String> {
    if ctx.attrs().int("block_size", 0)? != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    Ok(())
}

/// `clip(round(x / scale) + zero_point)` to the range of element type `elem`, with a 1-D scale and
/// zero point running along axis `ax`.
fn quantize(ctx: &mut Ctx, x: &Val, scale: Tensor, zp: Option<Val>, elem: i32, ax: i64) -> Result<Val, String> {
    let (qmin, qmax) = range_of(elem)?;
    let s = along_axis(ctx, &Val::constant(scale), x, ax, "the output scale")?;
    let mut q = ctx.binary(Binary::Div, x, &s)?;
    q = ctx.op(Op::Unary(Unary::Round), &[q])?;
    if let Some(z) = zp {
        let z = along_axis(ctx, &z, x, ax, "the output zero point")?;
        q = ctx.binary(Binary::Add, &q, &z)?;
    }
    ctx.op(Op::Unary(Unary::Clip { min: qmin, max: qmax }), &[q])
}

/// `x - zero_point`: on integer constants (quantized weights) in integers, then converted to float, as
/// onnxruntime does.
fn centered(ctx: &mut Ctx, x: &Val, zp: Option<Val>, ax: i64, what: &str) -> Result<Val, String> {
    let mut y = x.clone();
    if let Some(z) = zp {
        let z = along_axis(ctx, &z, x, ax, what)?;
        y = ctx.binary(Binary::Sub, &y, &z)?;
    }
    if let Some(t) = y.as_const()
        && t.dtype() == fhec_ir::DType::I64
    {
        let f =
            Tensor::from_f32(t.shape().to_vec(), t.to_i64_vec().iter().map(|&v| v as f32).collect()).ok_or("shape")?;
        y = Val::constant(f);
    }
    Ok(y)
}

/// `(x - zero_point) * scale`.
fn dequantize(ctx: &mut Ctx, x: &Val, scale: Tensor, zp: Option<Val>, ax: i64, what: &str) -> Result<Val, String> {
    let y = centered(ctx, x, zp, ax, &format!("the zero point of {what}"))?;
    let s = along_axis(ctx, &Val::constant(scale), x, ax, &format!("the scale of {what}"))?;
    ctx.binary(Binary::Mul, &y, &s)
}

/// The element type of the quantized output: that of its zero point (input `zp`), else `attr`, else uint8.
fn output_elem(ctx: &Ctx, zp: usize, has_zp: bool, attr: i64) -> Result<i32, String> {
    match (ctx.input_elem_type(zp), attr) {
        (Some(t), _) => Ok(t),
        (None, 0) if !has_zp => Ok(UINT8),
        (None, 0) => Err("the output zero point must be a constant".into()),
        (None, t) => Ok(t as i32),
    }
}

/// A quantized operand's element type, when known, must be an integer one.
fn check_integer(ctx: &Ctx, i: usize) -> Result<(), String> {
    match ctx.input_elem_type(i) {
        Some(t) => range_of(t).map(|_| ()),
        None => Ok(()),
    }
}

fn scale_input(ctx: &Ctx, i: usize, what: &str) -> Result<Tensor, String> {
    ctx.const_input(i, what)?.ok_or_else(|| format!("missing required input {i} ({what})"))
}

pub fn quantize_linear(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    check_block(ctx)?;
    let x = ctx.input(0)?;
    let scale = scale_input(ctx, 1, "y_scale")?;
    let zp = ctx.opt_input(2)?;
    let elem = output_elem(ctx, 2, zp.is_some(), ctx.attrs().int("output_dtype", 0)?)?;
    let ax = axis_attr(ctx)?;
    Ok(vec![quantize(ctx, &x, scale, zp, elem, ax)?])
}

pub fn dequantize_linear(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    check_block(ctx)?;
    let x = ctx.input(0)?;
    check_integer(ctx, 0)?;
    let scale = scale_input(ctx, 1, "x_scale")?;
    let zp = ctx.opt_input(2)?;
    let ax = axis_attr(ctx)?;
    Ok(vec![dequantize(ctx, &x, scale, zp, ax, "x")?])
}

/// The axis a 1-D scale or zero point of a matrix product operand runs along: rows of A and of the
/// result (the second-to-last axis), columns of B (the last).
const ROWS: i64 = -2;
const COLUMNS: i64 = -1;

/// QLinearMatMul: `quantize(dequantize(a) @ dequantize(b))` with the node's scales and zero points
/// (per tensor, per row of `a`, per column of `b`). The integers are held in f32, exact below 2^24.
pub fn qlinear_matmul(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(3)?);
    check_integer(ctx, 0)?;
    check_integer(ctx, 3)?;
    let (a_zp, b_zp) = (ctx.opt_input(2)?, ctx.opt_input(5)?);
    let da = dequantize(ctx, &a, scale_input(ctx, 1, "a_scale")?, a_zp, ROWS, "a")?;
    let db = dequantize(ctx, &b, scale_input(ctx, 4, "b_scale")?, b_zp, COLUMNS, "b")?;
    let y = ctx.op(Op::MatMul, &[da, db])?;
    let y_zp = ctx.opt_input(7)?;
    let elem = output_elem(ctx, 7, y_zp.is_some(), 0)?;
    Ok(vec![quantize(ctx, &y, scale_input(ctx, 6, "y_scale")?, y_zp, elem, ROWS)?])
}

/// MatMulInteger: `(A - a_zero_point) @ (B - b_zero_point)` in integers (held in f32, exact below 2^24).
pub fn matmul_integer(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    check_integer(ctx, 0)?;
    check_integer(ctx, 1)?;
    let (a_zp, b_zp) = (ctx.opt_input(2)?, ctx.opt_input(3)?);
    let ca = centered(ctx, &a, a_zp, ROWS, "a_zero_point")?;
    let cb = centered(ctx, &b, b_zp, COLUMNS, "b_zero_point")?;
    Ok(vec![ctx.op(Op::MatMul, &[ca, cb])?])
}

/// QLinearConv: `quantize(conv(dequantize(x), dequantize(w)) + B * x_scale * w_scale)`, the weight
/// scale per tensor or per output channel; the int32 bias is in units of `x_scale * w_scale`.
pub fn qlinear_conv(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, w) = (ctx.input(0)?, ctx.input(3)?);
    check_integer(ctx, 0)?;
    check_integer(ctx, 3)?;
    let x_scale = scale_input(ctx, 1, "x_scale")?;
    let w_scale = scale_input(ctx, 4, "w_scale")?;
    let (x_zp, w_zp) = (ctx.opt_input(2)?, ctx.opt_input(5)?);
    let count = |t: &Tensor| t.shape().iter().product::<usize>();
    if count(&x_scale) != 1 {
        return Err(format!("x_scale has {} values: only a per-tensor input scale is defined", count(&x_scale)));
    }
    let dx = dequantize(ctx, &x, x_scale.clone(), x_zp, 1, "x")?;
    let dw = dequantize(ctx, &w, w_scale.clone(), w_zp, 0, "w")?;
    let bias = match ctx.opt_input(8)? {
        None => None,
        Some(b) => {
            let b = centered(ctx, &b, None, 0, "B")?;
            let xs = ctx.reshape(&Val::constant(x_scale), vec![])?;
            let ws = if count(&w_scale) == 1 {
                ctx.reshape(&Val::constant(w_scale), vec![])?
            } else {
                Val::constant(w_scale)
            };
            let s = ctx.binary(Binary::Mul, &xs, &ws)?;
            Some(ctx.binary(Binary::Mul, &b, &s)?)
        }
    };
    let y = super::nn::conv_of(ctx, dx, dw, bias)?;
    let y_zp = ctx.opt_input(7)?;
    let elem = output_elem(ctx, 7, y_zp.is_some(), 0)?;
    Ok(vec![quantize(ctx, &y, scale_input(ctx, 6, "y_scale")?, y_zp, elem, 1)?])
}

/// ConvInteger: `conv(x - x_zero_point, w - w_zero_point)` in integers (held in f32, exact below
/// 2^24), the weight zero point per tensor or per output channel.
pub fn conv_integer(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, w) = (ctx.input(0)?, ctx.input(1)?);
    check_integer(ctx, 0)?;
    check_integer(ctx, 1)?;
    let (x_zp, w_zp) = (ctx.opt_input(2)?, ctx.opt_input(3)?);
    let cx = centered(ctx, &x, x_zp, 1, "x_zero_point")?;
    let cw = centered(ctx, &w, w_zp, 0, "w_zero_point")?;
    Ok(vec![super::nn::conv_of(ctx, cx, cw, None)?])
}
