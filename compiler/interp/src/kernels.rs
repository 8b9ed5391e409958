//! One kernel per op, on ndarray views of IR tensors.

use fhec_ir::{ConvAttrs, DType, Op, PadMode, PoolAttrs, ReduceKind, Tensor, Type};
use ndarray::{ArrayD, ArrayViewD, Axis, Ix2, IxDyn, Slice, Zip};

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

/// The geometry of a 1-D or 2-D sliding window, with 1-D lifted to 2-D (height 1).
struct Window {
    n: usize,
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
}

fn window(
    x: &[usize],
    out: &[usize],
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dil: &[usize],
) -> Result<Window, String> {
    match x.len() {
        3 => Ok(Window {
            n: x[0],
            c: x[1],
            ih: 1,
            iw: x[2],
            oh: 1,
            ow: out[2],
            kh: 1,
            kw: kernel[0],
            sh: 1,
            sw: strides[0],
            dh: 1,
            dw: dil[0],
            pt: 0,
            pl: pads[0],
        }),
        4 => Ok(Window {
            n: x[0],
            c: x[1],
            ih: x[2],
            iw: x[3],
            oh: out[2],
            ow: out[3],
            kh: kernel[0],
            kw: kernel[1],
            sh: strides[0],
            sw: strides[1],
            dh: dil[0],
            dw: dil[1],
            pt: pads[0],
            pl: pads[1],
        }),
        r => Err(format!("only 1-D and 2-D windows are supported, got rank {r}")),
    }
}

fn conv(c: &ConvAttrs, xs: &[&Tensor], ty: &Type) -> Result<Tensor, String> {
    let (x, w) = (xs[0], xs[1]);
    let ws = w.shape();
    let g = window(x.shape(), &ty.shape, &ws[2..], &c.strides, &c.pads, &c.dilations)?;
    let (xd, wd) = (x.as_f32().ok_or("f32")?, w.as_f32().ok_or("f32")?);
    let bias = xs.get(2).map(|b| b.as_f32().ok_or("f32")).transpose()?;
    let m_total = ws[0];
    let cg = ws[1];
    let m_per_group = m_total / c.group;
    let mut out = vec![0f32; ty.shape.iter().product()];
    for n in 0..g.n {
        for m in 0..m_total {
            let grp = m / m_per_group;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias.map_or(0.0, |b| f64::from(b[m]));
                    for ci in 0..cg {
                        let ch = grp * cg + ci;
                        for ky in 0..g.kh {
                            let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                            if iy < 0 || iy >= g.ih as isize {
                                continue;
                            }
                            for kx in 0..g.kw {
                                let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                                if ix < 0 || ix >= g.iw as isize {
                                    continue;
                                }
                                let xv = xd[((n * g.c + ch) * g.ih + iy as usize) * g.iw + ix as usize];
                                let wv = wd[((m * cg + ci) * g.kh + ky) * g.kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((n * m_total + m) * g.oh + oy) * g.ow + ox] = acc as f32;
                }
            }
        }
    }
    Tensor::from_f32(ty.shape.clone(), out).ok_or_else(|| "conv result size".into())
}

fn pool(p: &PoolAttrs, x: &Tensor, ty: &Type, max: bool) -> Result<Tensor, String> {
    let g = window(x.shape(), &ty.shape, &p.kernel, &p.strides, &p.pads, &p.dilations)?;
    let xd = x.as_f32().ok_or("f32")?;
    // Window positions inside [-pad_begin, in + pad_end) count towards count_include_pad's divisor.
    let (pb, pe) = if x.shape().len() == 3 {
        ((0, p.pads[0]), (0, p.pads[1]))
    } else {
        ((p.pads[0], p.pads[1]), (p.pads[2], p.pads[3]))
    };
    let mut out = vec![0f32; ty.shape.iter().product()];
    for nc in 0..g.n * g.c {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (mut acc, mut best, mut valid, mut padded) = (0f64, f32::NEG_INFINITY, 0usize, 0usize);
                for ky in 0..g.kh {
                    let iy = (oy * g.sh + ky * g.dh) as isize - pb.0 as isize;
                    for kx in 0..g.kw {
                        let ix = (ox * g.sw + kx * g.dw) as isize - pb.1 as isize;
                        let in_pads = iy < (g.ih + pe.0) as isize && ix < (g.iw + pe.1) as isize;
                        if iy < 0 || ix < 0 || iy >= g.ih as isize || ix >= g.iw as isize {
                            padded += usize::from(in_pads);
                            continue;
                        }
                        let v = xd[(nc * g.ih + iy as usize) * g.iw + ix as usize];
                        acc += f64::from(v);
                        best = best.max(v);
                        valid += 1;
                    }
                }
                let divisor = if p.count_include_pad { valid + padded } else { valid };
                out[(nc * g.oh + oy) * g.ow + ox] = if max { best } else { (acc / divisor.max(1) as f64) as f32 };
            }
        }
    }
    Tensor::from_f32(ty.shape.clone(), out).ok_or_else(|| "pool result size".into())
}
