//! One kernel per op, on ndarray views of IR tensors.

use fhec_ir::{ConvAttrs, DType, Op, PadMode, PoolAttrs, ReduceKind, Tap, Tensor, Type, Window};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Ix2, IxDyn, Slice, Zip};

fn view_f32(t: &Tensor) -> Result<ArrayViewD<'_, f32>, String> {
    let data = t.as_f32().ok_or("expected an f32 operand")?;
    ArrayViewD::from_shape(IxDyn(t.shape()), data).map_err(|e| e.to_string())
}

fn from_f32(a: ArrayD<f32>) -> Tensor {
    let shape = a.shape().to_vec();
    Tensor::from_f32(shape, a.iter().copied().collect()).expect("array shape matches its data")
}

/// Evaluates one op on its operand tensors; `ty` is the result type the module declares.
pub fn eval_op(op: &Op, xs: &[&Tensor], ty: &Type) -> Result<Tensor, String> {
    let out = match op {
        Op::Input { .. } | Op::Const(_) => return Err("inputs and constants are not evaluated".into()),
        Op::Unary(u) => from_f32(view_f32(xs[0])?.mapv(|x| u.apply(x))),
        Op::Binary(b) => {
            let shape = IxDyn(&ty.shape);
            let a = view_f32(xs[0])?;
            let c = view_f32(xs[1])?;
            let a = a.broadcast(shape.clone()).ok_or("operands do not broadcast")?;
            let c = c.broadcast(shape).ok_or("operands do not broadcast")?;
            from_f32(Zip::from(&a).and(&c).map_collect(|&x, &y| b.apply(x, y)))
        }
        Op::MatMul => matmul(xs[0], xs[1], ty)?,
        Op::Conv(c) => conv(c, xs, ty)?,
        Op::AvgPool(p) => pool(p, xs[0], ty, false)?,
        Op::MaxPool(p) => pool(p, xs[0], ty, true)?,
        Op::Reduce { kind: kind @ (ReduceKind::Max | ReduceKind::Min), axes, keepdims } => {
            let mut a = view_f32(xs[0])?.to_owned();
            let max = *kind == ReduceKind::Max;
            for &ax in axes.iter().rev() {
                let init = if max { f32::NEG_INFINITY } else { f32::INFINITY };
                a = a.fold_axis(Axis(ax), init, |&m, &x| if max { m.max(x) } else { m.min(x) });
                if *keepdims {
                    a.insert_axis_inplace(Axis(ax));
                }
            }
            from_f32(a)
        }
        Op::Reduce { kind, axes, keepdims } => {
            let mut a = view_f32(xs[0])?.mapv(f64::from);
            let mut count = 1usize;
            for &ax in axes.iter().rev() {
                count *= a.shape()[ax];
                a = a.sum_axis(Axis(ax));
                if *keepdims {
                    a.insert_axis_inplace(Axis(ax));
                }
            }
            let scale = if *kind == ReduceKind::Mean { 1.0 / count as f64 } else { 1.0 };
            from_f32(a.mapv(|s| (s * scale) as f32))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let mut a = view_f32(xs[0])?.to_owned();
            let log = matches!(op, Op::LogSoftmax { .. });
            for mut lane in a.lanes_mut(Axis(*axis)) {
                let max = lane.fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let sum: f64 = lane.iter().map(|&x| f64::from(x - max).exp()).sum();
                lane.mapv_inplace(|x| {
                    let z = f64::from(x - max);
                    (if log { z - sum.ln() } else { z.exp() / sum }) as f32
                });
            }
            from_f32(a)
        }
        Op::ArgMax { axis, keepdims, select_last_index } => {
            let a = view_f32(xs[0])?;
            let mut idx = a.map_axis(Axis(*axis), |lane| {
                let mut best = 0;
                for (i, &x) in lane.iter().enumerate() {
                    let better = if *select_last_index { x >= lane[best] } else { x > lane[best] };
                    if better {
                        best = i;
                    }
                }
                best as i64
            });
            if *keepdims {
                idx.insert_axis_inplace(Axis(*axis));
            }
            let shape = idx.shape().to_vec();
            Tensor::from_i64(shape, idx.iter().copied().collect()).expect("shape matches")
        }
        // Data movement works on any element type.
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Pad { .. } => match xs[0].dtype() {
            DType::F32 => {
                let views = xs.iter().map(|t| view_f32(t)).collect::<Result<Vec<_>, _>>()?;
                from_f32(move_data(op, &views, ty, |v| v)?)
            }
            DType::I64 => {
                let views = xs
                    .iter()
                    .map(|t| {
                        let d = t.as_i64().ok_or("mixed element types")?;
                        ArrayViewD::from_shape(IxDyn(t.shape()), d).map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let a = move_data(op, &views, ty, |v| v as i64)?;
                Tensor::from_i64(a.shape().to_vec(), a.iter().copied().collect()).expect("shape matches")
            }
        },
    };
    if out.shape() != ty.shape.as_slice() || out.dtype() != ty.dtype {
        return Err(format!("computed {}{:?}, declared {ty}", out.dtype(), out.shape()));
    }
    Ok(out)
}

/// Reshape, transpose, concat, slice, gather and pad, generic over the element type.
fn move_data<T: Copy>(
    op: &Op,
    xs: &[ArrayViewD<'_, T>],
    ty: &Type,
    pad_value: impl Fn(f32) -> T,
) -> Result<ArrayD<T>, String> {
    let x = &xs[0];
    Ok(match op {
        Op::Reshape { shape } => {
            ArrayD::from_shape_vec(IxDyn(shape), x.iter().copied().collect()).map_err(|e| e.to_string())?
        }
        Op::Transpose { perm } => x.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        Op::Concat { axis } => ndarray::concatenate(Axis(*axis), xs).map_err(|e| e.to_string())?,
        Op::Slice { axes, starts, ends, steps } => {
            let mut a = x.to_owned();
            for (i, &ax) in axes.iter().enumerate() {
                let n = fhec_ir::slice_len(starts[i], ends[i], steps[i]);
                let idx: Vec<usize> = (0..n as i64).map(|k| (starts[i] + k * steps[i]) as usize).collect();
                a = a.select(Axis(ax), &idx);
            }
            a
        }
        Op::Gather { axis, indices, .. } => {
            let idx: Vec<usize> = indices.iter().map(|&i| i as usize).collect();
            let a = x.select(Axis(*axis), &idx);
            ArrayD::from_shape_vec(IxDyn(&ty.shape), a.iter().copied().collect()).map_err(|e| e.to_string())?
        }
        Op::Pad { pads, mode, value } => {
            let r = x.ndim();
            match mode {
                PadMode::Constant => {
                    let mut out = ArrayD::from_elem(IxDyn(&ty.shape), pad_value(*value));
                    out.slice_each_axis_mut(|ax| {
                        let b = pads[ax.axis.index()] as isize;
                        Slice::from(b..b + x.shape()[ax.axis.index()] as isize)
                    })
                    .assign(x);
                    out
                }
                PadMode::Reflect | PadMode::Edge => {
                    let mut a = x.to_owned();
                    for ax in 0..r {
                        let n = x.shape()[ax] as i64;
                        let idx: Vec<usize> = (-(pads[ax] as i64)..n + pads[ax + r] as i64)
                            .map(|i| {
                                if *mode == PadMode::Edge {
                                    i.clamp(0, n - 1) as usize
                                } else {
                                    let period = 2 * (n - 1).max(1);
                                    let m = i.rem_euclid(period);
                                    (if m >= n { period - m } else { m }) as usize
                                }
                            })
                            .collect();
                        a = a.select(Axis(ax), &idx);
                    }
                    a
                }
            }
        }
        _ => unreachable!("move_data only handles data-movement ops"),
    })
}

fn matmul(a: &Tensor, b: &Tensor, ty: &Type) -> Result<Tensor, String> {
    let (sa, sb) = (a.shape(), b.shape());
    let a2: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let b2: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let batch = fhec_ir::broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok_or("batch dims differ")?;
    let nb: usize = batch.iter().product();
    let va = ArrayViewD::from_shape(IxDyn(&a2), a.as_f32().ok_or("f32 expected")?).map_err(|e| e.to_string())?;
    let vb = ArrayViewD::from_shape(IxDyn(&b2), b.as_f32().ok_or("f32 expected")?).map_err(|e| e.to_string())?;
    let full = |mut s: Vec<usize>, r: usize, c: usize| {
        s.extend([r, c]);
        s
    };
    let va = va.broadcast(IxDyn(&full(batch.clone(), m, k))).ok_or("broadcast")?.as_standard_layout().into_owned();
    let vb = vb.broadcast(IxDyn(&full(batch.clone(), k, n))).ok_or("broadcast")?.as_standard_layout().into_owned();
    let va = va.into_shape_with_order((nb, m, k)).map_err(|e| e.to_string())?;
    let vb = vb.into_shape_with_order((nb, k, n)).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        let x = va.index_axis(Axis(0), i).mapv(f64::from).into_dimensionality::<Ix2>().map_err(|e| e.to_string())?;
        let y = vb.index_axis(Axis(0), i).mapv(f64::from).into_dimensionality::<Ix2>().map_err(|e| e.to_string())?;
        out.extend(x.dot(&y).iter().map(|&v| v as f32));
    }
    Tensor::from_f32(ty.shape.clone(), out).ok_or_else(|| "matmul result size".into())
}

fn window(
    x: &[usize],
    out: &[usize],
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dil: &[usize],
) -> Result<Window, String> {
    if x.len() < 3 || out.len() != x.len() {
        return Err(format!("a window over input {x:?} and output {out:?}: no spatial axes"));
    }
    Window::new(&x[2..], &out[2..], kernel, strides, pads, dil)
}

/// Output positions per product in [`conv`]: bounds the unfolded input (`taps x positions` f64s).
const CONV_CHUNK_ELEMENTS: usize = 1 << 21;

/// A convolution as products: per sample and group, the input unfolded into a matrix (a row per
/// channel and tap, a column per output position, in chunks), multiplied by the group's weights in
/// f64 (matrixmultiply's kernels), the bias added.
fn conv(c: &ConvAttrs, xs: &[&Tensor], ty: &Type) -> Result<Tensor, String> {
    let (x, w) = (xs[0], xs[1]);
    let (xsh, ws) = (x.shape(), w.shape());
    let g = window(xsh, &ty.shape, &ws[2..], &c.strides, &c.pads, &c.dilations)?;
    let (xd, wd) = (x.as_f32().ok_or("f32")?, w.as_f32().ok_or("f32")?);
    let bias = xs.get(2).map(|b| b.as_f32().ok_or("f32")).transpose()?;
    let (batch, channels) = (xsh[0], xsh[1]);
    let (m_total, cg) = (ws[0], ws[1]);
    let per_group = m_total / c.group.max(1);
    let (il, ol, kl) = (g.input_len(), g.output_len(), g.kernel_len());
    let taps = g.tap_table();
    let rows = cg * kl;
    let chunk = (CONV_CHUNK_ELEMENTS / rows.max(1)).clamp(1, ol.max(1));
    let mut out = vec![0f32; ty.shape.iter().product()];
    for grp in 0..c.group {
        let weights =
            Array2::from_shape_fn((per_group, rows), |(m, r)| f64::from(wd[(grp * per_group + m) * rows + r]));
        for n in 0..batch {
            for p0 in (0..ol).step_by(chunk) {
                let p1 = (p0 + chunk).min(ol);
                let mut cols = Array2::<f64>::zeros((rows, p1 - p0));
                for ci in 0..cg {
                    let plane = &xd[(n * channels + grp * cg + ci) * il..][..il];
                    for t in 0..kl {
                        let mut row = cols.row_mut(ci * kl + t);
                        for (j, p) in (p0..p1).enumerate() {
                            if let Some(i) = taps[p * kl + t] {
                                row[j] = f64::from(plane[i]);
                            }
                        }
                    }
                }
                let product = weights.dot(&cols);
                for m in 0..per_group {
                    let mo = grp * per_group + m;
                    let b = bias.map_or(0.0, |b| f64::from(b[mo]));
                    let dst = &mut out[(n * m_total + mo) * ol..][p0..p1];
                    for (d, v) in dst.iter_mut().zip(product.row(m)) {
                        *d = (v + b) as f32;
                    }
                }
            }
        }
    }
    Tensor::from_f32(ty.shape.clone(), out).ok_or_else(|| "conv result size".into())
}

fn pool(p: &PoolAttrs, x: &Tensor, ty: &Type, max: bool) -> Result<Tensor, String> {
    let g = window(x.shape(), &ty.shape, &p.kernel, &p.strides, &p.pads, &p.dilations)?;
    let xd = x.as_f32().ok_or("f32")?;
    let (il, ol) = (g.input_len(), g.output_len());
    let planes = x.shape()[0] * x.shape()[1];
    let mut out = vec![0f32; ty.shape.iter().product()];
    for o in 0..ol {
        // Positions inside the declared padding count towards count_include_pad's divisor.
        let (mut at, mut padded) = (Vec::new(), 0usize);
        g.taps(o, |_, tap| match tap {
            Tap::In(i) => at.push(i),
            Tap::Pad => padded += 1,
            Tap::Beyond => {}
        });
        let divisor = if p.count_include_pad { at.len() + padded } else { at.len() };
        for nc in 0..planes {
            let plane = &xd[nc * il..][..il];
            out[nc * ol + o] = if max {
                at.iter().map(|&i| plane[i]).fold(f32::NEG_INFINITY, f32::max)
            } else {
                (at.iter().map(|&i| f64::from(plane[i])).sum::<f64>() / divisor.max(1) as f64) as f32
            };
        }
    }
    Tensor::from_f32(ty.shape.clone(), out).ok_or_else(|| "pool result size".into())
}
