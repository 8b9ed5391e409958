//! The ops that only ever compute on constants and so fold away: Constant, Shape, Size,
//! ConstantOfShape, Cast, Range, Expand; and `const_zip`, the broadcasting of two constant operands
//! that the constant-only logic ops share.

use crate::ctx::{Ctx, Val, broadcast_to};
use fhec_ir::{DType, Tensor};

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
    let n = fhec_ir::check_shape(&shape)?;
    let value = ctx.attrs().tensor("value")?.unwrap_or_else(|| Tensor::scalar_f32(0.0));
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
        let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
        fhec_ir::check_shape(&[n as usize])?;
        Ok(vec![ints((0..n as i64).map(|k| s + k * d).collect())])
    } else {
        let [s, l, d] = [0, 1, 2].map(|i| args[i].to_f32_vec()[0]);
        if d == 0.0 {
            return Err("delta is 0".into());
        }
        let n = ((l - s) / d).ceil().max(0.0);
        if !n.is_finite() {
            return Err(format!("Range({s}, {l}, {d}) has no finite length"));
        }
        let n = fhec_ir::check_shape(&[n as usize])?;
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
    fhec_ir::check_shape(&shape)?;
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
    fhec_ir::check_shape(&full)?;
    let t = match x.dtype() {
        DType::F32 => Tensor::from_f32(full.clone(), broadcast_to(x.as_f32().expect("f32"), x.shape(), &full)),
        DType::I64 => Tensor::from_i64(full.clone(), broadcast_to(x.as_i64().expect("i64"), x.shape(), &full)),
    };
    Ok(vec![Val::constant(t.expect("sized"))])
}
