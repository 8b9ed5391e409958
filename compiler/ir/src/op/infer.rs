//! `Op::infer`: the typing rule of every op, and the shape arithmetic it shares with the interpreter
//! (broadcasting, slice lengths, sliding windows).

use super::{ConvAttrs, Op, PadMode, PoolAttrs};
use crate::scalar::Binary;
use crate::types::{DType, Security, Shape, Type};

impl Op {
    /// The result type of this op applied to operands of the given types, or why it is ill-typed
    /// (or too large: beyond [`crate::limits::check_shape`]'s bound).
    pub fn infer(&self, operands: &[&Type]) -> Result<Type, String> {
        let ty = self.infer_type(operands)?;
        crate::limits::check_shape(&ty.shape)?;
        Ok(ty)
    }

    fn infer_type(&self, operands: &[&Type]) -> Result<Type, String> {
        let security = Security::join(operands.iter().map(|t| t.security));
        let arity = |n: usize| -> Result<(), String> {
            if operands.len() == n {
                Ok(())
            } else {
                Err(format!("`{}` takes {n} operand(s), got {}", self.mnemonic(), operands.len()))
            }
        };
        let f32_only = |t: &Type| -> Result<(), String> {
            if t.dtype == DType::F32 {
                Ok(())
            } else {
                Err(format!("`{}` needs f32 operands, got {}", self.mnemonic(), t))
            }
        };
        let out = |shape: Shape| Type::new(security, DType::F32, shape);
        match self {
            Op::Input { .. } | Op::Const(_) => {
                Err(format!("`{}` has no operands and no inferred type", self.mnemonic()))
            }
            Op::Unary(_) => {
                arity(1)?;
                f32_only(operands[0])?;
                Ok(out(operands[0].shape.clone()))
            }
            Op::Binary(b) => {
                arity(2)?;
                f32_only(operands[0])?;
                f32_only(operands[1])?;
                let (a, s) = (&operands[0].shape, &operands[1].shape);
                if *b == Binary::PRelu {
                    match broadcast_shapes(a, s) {
                        Some(r) if &r == a => Ok(out(a.clone())),
                        _ => Err(format!("prelu slope {s:?} does not broadcast to input {a:?}")),
                    }
                } else {
                    broadcast_shapes(a, s).map(out).ok_or_else(|| format!("shapes {a:?} and {s:?} do not broadcast"))
                }
            }
            Op::MatMul => {
                arity(2)?;
                f32_only(operands[0])?;
                f32_only(operands[1])?;
                matmul_shape(&operands[0].shape, &operands[1].shape).map(out)
            }
            Op::Conv(c) => {
                if !(2..=3).contains(&operands.len()) {
                    return Err(format!("`conv` takes 2 or 3 operands, got {}", operands.len()));
                }
                for t in operands {
                    f32_only(t)?;
                }
                conv_shape(c, operands).map(out)
            }
            Op::AvgPool(p) | Op::MaxPool(p) => {
                arity(1)?;
                f32_only(operands[0])?;
                pool_shape(p, &operands[0].shape).map(out)
            }
            Op::Reduce { axes, keepdims, .. } => {
                arity(1)?;
                f32_only(operands[0])?;
                let x = &operands[0].shape;
                check_axes(axes, x.len(), true)?;
                Ok(out(reduce_shape(x, axes, *keepdims)))
            }
            Op::Reshape { shape } => {
                arity(1)?;
                let x = operands[0];
                if x.numel() != crate::types::numel(shape) {
                    return Err(format!("cannot reshape {:?} ({} elements) to {shape:?}", x.shape, x.numel()));
                }
                Ok(Type::new(security, x.dtype, shape.clone()))
            }
            Op::Transpose { perm } => {
                arity(1)?;
                let x = operands[0];
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..x.rank()).collect::<Vec<_>>() {
                    return Err(format!("perm {perm:?} is not a permutation of the {} axes", x.rank()));
                }
                Ok(Type::new(security, x.dtype, perm.iter().map(|&p| x.shape[p]).collect()))
            }
            Op::Concat { axis } => {
                let first = operands.first().ok_or("`concat` needs at least one operand")?;
                if *axis >= first.rank() {
                    return Err(format!("concat axis {axis} out of range for rank {}", first.rank()));
                }
                let mut shape = first.shape.clone();
                shape[*axis] = 0;
                for t in operands {
                    if t.dtype != first.dtype || t.rank() != first.rank() {
                        return Err(format!("concat operands {first} and {t} differ in type or rank"));
                    }
                    for (i, (&a, &b)) in t.shape.iter().zip(&first.shape).enumerate() {
                        if i != *axis && a != b {
                            return Err(format!("concat operands {first} and {t} differ off axis {axis}"));
                        }
                    }
                    shape[*axis] += t.shape[*axis];
                }
                Ok(Type::new(security, first.dtype, shape))
            }
            Op::Slice { axes, starts, ends, steps } => {
                arity(1)?;
                let x = operands[0];
                if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
                    return Err("slice axes, starts, ends and steps must have the same length".into());
                }
                check_axes(axes, x.rank(), true)?;
                let mut shape = x.shape.clone();
                for (i, &a) in axes.iter().enumerate() {
                    let dim = x.shape[a] as i64;
                    let (s, e, st) = (starts[i], ends[i], steps[i]);
                    let ok = match st.signum() {
                        1 => (0..=dim).contains(&s) && (0..=dim).contains(&e),
                        -1 => (0..dim.max(1)).contains(&s) && (-1..dim).contains(&e),
                        _ => false,
                    };
                    if !ok {
                        return Err(format!(
                            "slice bounds start={s} end={e} step={st} are not normalized for axis {a} of size {dim}"
                        ));
                    }
                    shape[a] = slice_len(s, e, st);
                }
                Ok(Type::new(security, x.dtype, shape))
            }
            Op::Gather { axis, indices, indices_shape } => {
                arity(1)?;
                let x = operands[0];
                if *axis >= x.rank() {
                    return Err(format!("gather axis {axis} out of range for rank {}", x.rank()));
                }
                if indices.len() != crate::types::numel(indices_shape) {
                    return Err("gather indices do not match indices_shape".into());
                }
                if let Some(i) = indices.iter().find(|&&i| i < 0 || i as usize >= x.shape[*axis]) {
                    return Err(format!("gather index {i} out of range for axis {axis} of size {}", x.shape[*axis]));
                }
                let mut shape = x.shape[..*axis].to_vec();
                shape.extend_from_slice(indices_shape);
                shape.extend_from_slice(&x.shape[axis + 1..]);
                Ok(Type::new(security, x.dtype, shape))
            }
            Op::Pad { pads, mode, .. } => {
                arity(1)?;
                let x = operands[0];
                if pads.len() != 2 * x.rank() {
                    return Err(format!("pad needs {} pads for rank {}, got {}", 2 * x.rank(), x.rank(), pads.len()));
                }
                let r = x.rank();
                if *mode == PadMode::Reflect && (0..r).any(|i| pads[i].max(pads[i + r]) >= x.shape[i].max(1)) {
                    return Err("reflect pads must be smaller than the padded axis".into());
                }
                if *mode == PadMode::Edge && (0..r).any(|i| x.shape[i] == 0 && pads[i] + pads[i + r] > 0) {
                    return Err("edge padding of an empty axis".into());
                }
                Ok(Type::new(security, x.dtype, (0..r).map(|i| x.shape[i] + pads[i] + pads[i + r]).collect()))
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                arity(1)?;
                f32_only(operands[0])?;
                check_axes(&[*axis], operands[0].rank(), false)?;
                Ok(out(operands[0].shape.clone()))
            }
            Op::ArgMax { axis, keepdims, .. } => {
                arity(1)?;
                f32_only(operands[0])?;
                check_axes(&[*axis], operands[0].rank(), false)?;
                Ok(Type::new(security, DType::I64, reduce_shape(&operands[0].shape, &[*axis], *keepdims)))
            }
        }
    }
}

fn check_axes(axes: &[usize], rank: usize, sorted_distinct: bool) -> Result<(), String> {
    if let Some(a) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {a} out of range for rank {rank}"));
    }
    if sorted_distinct && axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("axes {axes:?} must be sorted and distinct"));
    }
    Ok(())
}

/// Number of elements a normalized slice selects.
pub fn slice_len(start: i64, end: i64, step: i64) -> usize {
    let n = if step > 0 { (end - start + step - 1) / step } else { (start - end + (-step) - 1) / (-step) };
    n.max(0) as usize
}

fn reduce_shape(x: &[usize], axes: &[usize], keepdims: bool) -> Shape {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Shape, String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank >= 1".into());
    }
    let a2: Shape = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Shape = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("matmul inner dimensions differ: {a:?} x {b:?}"));
    }
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .ok_or_else(|| format!("matmul batch dimensions do not broadcast: {a:?} x {b:?}"))?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

/// Output size of one spatial axis of a sliding window.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    (pad_begin, pad_end): (usize, usize),
    dilation: usize,
    ceil: bool,
) -> Option<usize> {
    let span = (kernel - 1) * dilation + 1;
    let padded = input + pad_begin + pad_end;
    if padded < span || stride == 0 {
        return None;
    }
    let mut out = if ceil { (padded - span).div_ceil(stride) + 1 } else { (padded - span) / stride + 1 };
    // A window that would start in the end padding is dropped (ONNX Runtime and PyTorch agree).
    if ceil && out > 1 && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

fn spatial_out(
    x: &[usize],
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
    ceil: bool,
) -> Result<Shape, String> {
    let s = x.len().saturating_sub(2);
    if x.len() < 3 || kernel.len() != s || strides.len() != s || dilations.len() != s || pads.len() != 2 * s {
        return Err(format!(
            "window attributes do not match input {x:?}: kernel {kernel:?}, strides {strides:?}, pads {pads:?}, dilations {dilations:?}"
        ));
    }
    let mut out = x[..2].to_vec();
    for i in 0..s {
        if kernel[i] == 0 || strides[i] == 0 || dilations[i] == 0 {
            return Err("kernel, strides and dilations must be positive".into());
        }
        out.push(
            window_out(x[2 + i], kernel[i], strides[i], (pads[i], pads[i + s]), dilations[i], ceil)
                .ok_or_else(|| format!("window {kernel:?} does not fit input {x:?} with pads {pads:?}"))?,
        );
    }
    Ok(out)
}

fn conv_shape(c: &ConvAttrs, operands: &[&Type]) -> Result<Shape, String> {
    let (x, w) = (&operands[0].shape, &operands[1].shape);
    if w.len() != x.len() {
        return Err(format!("conv weight {w:?} and input {x:?} differ in rank"));
    }
    if c.group == 0 || x.len() < 3 || x[1] != w[1] * c.group || w[0] % c.group != 0 {
        return Err(format!("conv input {x:?}, weight {w:?} and group {} do not match", c.group));
    }
    if let Some(b) = operands.get(2)
        && b.shape != [w[0]]
    {
        return Err(format!("conv bias {:?} must be [{}]", b.shape, w[0]));
    }
    let mut out = spatial_out(x, &w[2..], &c.strides, &c.pads, &c.dilations, false)?;
    out[1] = w[0];
    Ok(out)
}

fn pool_shape(p: &PoolAttrs, x: &[usize]) -> Result<Shape, String> {
    spatial_out(x, &p.kernel, &p.strides, &p.pads, &p.dilations, p.ceil_mode)
}
