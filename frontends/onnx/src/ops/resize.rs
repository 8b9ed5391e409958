//! Resize and Upsample: nearest-neighbour gathers and the constant interpolation matrices of linear
//! and cubic modes.

use super::axis;
use crate::ctx::{Ctx, Val};
use fhec_ir::Op;

/// Resize (and Upsample), one resized axis at a time as in ONNX's reference:
/// - `nearest` is a gather of source indices: only data moves, free under FHE;
/// - `linear` and `cubic` (with `antialias`, `exclude_outside`, `cubic_coeff_a`, and the
///   extrapolation value of `tf_crop_and_resize`) weigh neighbouring elements by constants that
///   depend only on the shapes, so each axis is a constant [in, out] matrix product: a leveled linear
///   map under FHE, like a convolution with a fixed kernel.
pub fn resize(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    let shape = ctx.shape(&x);
    let rank = shape.len();
    let a = ctx.attrs();
    let upsample = ctx.node.op_type == "Upsample";
    let legacy = upsample || ctx.opset < 11;
    let antialias = a.int("antialias", 0)? != 0;
    let kernel = match a.string("mode", "nearest")?.as_str() {
        "nearest" if antialias => return Err("antialias applies to linear and cubic modes, not to nearest".into()),
        "nearest" => None,
        "linear" => Some(Kernel::Linear { antialias }),
        "cubic" => Some(Kernel::Cubic { a: f64::from(a.float("cubic_coeff_a", -0.75)?), antialias }),
        other => return Err(format!("mode \"{other}\" is not a Resize mode (nearest, linear, cubic)")),
    };
    let coord =
        if legacy { "asymmetric".to_string() } else { a.string("coordinate_transformation_mode", "half_pixel")? };
    let nearest = if legacy { "floor".to_string() } else { a.string("nearest_mode", "round_prefer_floor")? };
    let policy = if legacy { "stretch".to_string() } else { a.string("keep_aspect_ratio_policy", "stretch")? };
    let exclude_outside = a.int("exclude_outside", 0)? != 0;
    let extrapolation = f64::from(a.float("extrapolation_value", 0.0)?);
    let axes_attr = a.ints("axes")?;
    // Inputs: opset 10 and Upsample (X, scales); 11+ (X, roi, scales, sizes).
    let (scales, sizes) = if legacy {
        let scales = match ctx.const_input(1, "scales")? {
            Some(t) => t.to_f32_vec(),
            None if upsample => a.floats("scales")?.ok_or("missing scales")?,
            None => return Err("missing scales".into()),
        };
        (Some(scales), None)
    } else {
        let scales = ctx.const_input(2, "scales")?.map(|t| t.to_f32_vec()).filter(|v| !v.is_empty());
        let sizes = ctx.const_ints(3, "sizes")?.filter(|v| !v.is_empty());
        (scales, sizes)
    };
    let axes: Vec<usize> = match axes_attr {
        Some(l) => l.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let n = axes.len();
    // The region of interest, [starts.., ends..] over the resized axes: read only by tf_crop_and_resize.
    let roi = match coord.as_str() {
        "tf_crop_and_resize" => {
            let roi = ctx.const_input(1, "roi")?.map(|t| t.to_f32_vec()).unwrap_or_default();
            if roi.len() != 2 * n {
                return Err(format!(
                    "tf_crop_and_resize needs a constant roi of {} values (start and end per resized axis), got {}",
                    2 * n,
                    roi.len()
                ));
            }
            Some(roi.into_iter().map(f64::from).collect::<Vec<_>>())
        }
        _ => None,
    };
    let (outs, factors): (Vec<usize>, Vec<f64>) = match (scales, sizes) {
        (_, Some(sz)) if sz.len() == n => {
            let outs: Vec<usize> = sz
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| format!("negative size {s}")))
                .collect::<Result<_, _>>()?;
            let stretched: Vec<f64> = axes.iter().zip(&outs).map(|(&ax, &o)| o as f64 / shape[ax] as f64).collect();
            // One scale for every resized axis, the smallest or the largest, and sizes rounded from it.
            let kept = match policy.as_str() {
                "stretch" => None,
                "not_larger" => Some(stretched.iter().copied().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(stretched.iter().copied().fold(0.0, f64::max)),
                other => {
                    return Err(format!(
                        "keep_aspect_ratio_policy \"{other}\" is not stretch, not_larger or not_smaller"
                    ));
                }
            };
            match kept {
                None => (outs, stretched),
                Some(s) => (axes.iter().map(|&ax| (s * shape[ax] as f64 + 0.5) as usize).collect(), vec![s; n]),
            }
        }
        (Some(sc), _) if sc.len() == n => {
            let f: Vec<f64> = sc.iter().map(|&s| f64::from(s)).collect();
            if f.iter().any(|&s| s.is_nan() || s <= 0.0 || s.is_infinite()) {
                return Err(format!("scales {sc:?} must be positive"));
            }
            let outs = axes.iter().zip(&f).map(|(&ax, &s)| (shape[ax] as f64 * s).floor() as usize).collect();
            (outs, f)
        }
        _ => return Err(format!("needs {n} scales or sizes (one per resized axis)")),
    };
    // The output, and each axis's interpolation matrix (input length x output length), bounded
    // before either is built.
    let mut full = shape.clone();
    for (&ax, &out) in axes.iter().zip(&outs) {
        full[ax] = out;
        fhec_ir::check_shape(&[shape[ax], out])?;
    }
    fhec_ir::check_shape(&full)?;
    let mut y = x;
    for (i, ((&ax, &out), &s)) in axes.iter().zip(&outs).zip(&factors).enumerate() {
        let len = shape[ax];
        let roi = roi.as_ref().map(|r| (r[i], r[n + i]));
        if out == len && s == 1.0 && roi.is_none_or(|r| r == (0.0, 1.0)) {
            continue;
        }
        if out == 0 {
            return Err(format!("axis {ax} resized to 0 elements"));
        }
        y = match kernel {
            None => {
                let indices = nearest_indices(&coord, &nearest, len, out, s)?;
                ctx.op(Op::Gather { axis: ax, indices, indices_shape: vec![out] }, &[y])?
            }
            Some(k) => {
                let axis_map = Interpolation::new(k, &coord, len, out, s, roi, exclude_outside)?;
                axis_map.apply(ctx, y, ax, extrapolation)?
            }
        };
    }
    Ok(vec![y])
}

/// The source element of each output element of one axis, in `nearest` mode.
fn nearest_indices(coord: &str, nearest: &str, len: usize, out: usize, s: f64) -> Result<Vec<i64>, String> {
    let mut indices = Vec::with_capacity(out);
    for o in 0..out {
        let o = o as f64;
        let src = match coord {
            "half_pixel" => (o + 0.5) / s - 0.5,
            "pytorch_half_pixel" => {
                if out > 1 {
                    (o + 0.5) / s - 0.5
                } else {
                    0.0
                }
            }
            "asymmetric" => o / s,
            "tf_half_pixel_for_nn" => (o + 0.5) / s,
            "align_corners" => {
                if out > 1 {
                    o * (len as f64 - 1.0) / (out as f64 - 1.0)
                } else {
                    0.0
                }
            }
            "half_pixel_symmetric" => {
                let adj = out as f64 / (s * len as f64);
                let center = len as f64 / 2.0;
                center * (1.0 - adj) + (o + 0.5) / s - 0.5
            }
            other => return Err(format!("coordinate_transformation_mode \"{other}\" is not supported with nearest")),
        };
        let i = match nearest {
            "round_prefer_floor" => {
                if src.fract() == 0.5 {
                    src.floor()
                } else {
                    src.round()
                }
            }
            "round_prefer_ceil" => {
                if src.fract() == 0.5 {
                    src.ceil()
                } else {
                    src.round()
                }
            }
            "floor" => src.floor(),
            "ceil" => src.ceil(),
            other => return Err(format!("nearest_mode \"{other}\" is not supported")),
        };
        indices.push((i.max(0.0) as i64).min(len as i64 - 1));
    }
    Ok(indices)
}

/// An interpolating Resize kernel.
#[derive(Clone, Copy)]
enum Kernel {
    Linear {
        antialias: bool,
    },
    /// Keys' cubic convolution with coefficient `a`.
    Cubic {
        a: f64,
        antialias: bool,
    },
}

impl Kernel {
    /// The weights of the kernel's taps around a source coordinate `ratio` (in (0, 1]) past the tap
    /// left of it. With antialias and a downscale `s < 1`, the kernel is stretched by `1/s` (more
    /// taps) and normalized.
    fn weights(self, ratio: f64, s: f64) -> Vec<f64> {
        let normalized = |w: Vec<f64>| {
            let sum: f64 = w.iter().sum();
            w.into_iter().map(|v| v / sum).collect()
        };
        match self {
            Kernel::Linear { antialias: false } => vec![1.0 - ratio, ratio],
            Kernel::Linear { antialias: true } => {
                let s = s.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                normalized((start..2 - start).map(|k| (1.0 - ((k as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect())
            }
            Kernel::Cubic { a, antialias: false } => {
                let (r, q) = (ratio, 1.0 - ratio);
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
            Kernel::Cubic { a, antialias: true } => {
                let s = s.min(1.0);
                let cubic = |x: f64| {
                    let x = x.abs();
                    if x <= 1.0 {
                        (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
                    } else if x < 2.0 {
                        a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / s).floor() as i64 + 1;
                normalized((start..2 - start).map(|i| cubic(s * (i as f64 - ratio))).collect())
            }
        }
    }
}

/// One axis of an interpolating Resize: output element `o` is `Σ_i weights[i * out + o] · x[i]` (the
/// [len, out] matrix the axis is multiplied by), or the extrapolation value where
/// `tf_crop_and_resize` reads outside the input.
struct Interpolation {
    len: usize,
    out: usize,
    weights: Vec<f32>,
    extrapolated: Vec<bool>,
}

impl Interpolation {
    fn new(
        kernel: Kernel,
        coord: &str,
        len: usize,
        out: usize,
        s: f64,
        roi: Option<(f64, f64)>,
        exclude_outside: bool,
    ) -> Result<Self, String> {
        let (last, width) = (len as f64 - 1.0, s * len as f64);
        let mut weights = vec![0.0f64; len * out];
        let mut extrapolated = vec![false; out];
        for o in 0..out {
            let y = o as f64;
            let x = match coord {
                "align_corners" => {
                    if width == 1.0 {
                        0.0
                    } else {
                        y * last / (width - 1.0)
                    }
                }
                "asymmetric" => y / s,
                "pytorch_half_pixel" => {
                    if width == 1.0 {
                        -0.5
                    } else {
                        (y + 0.5) / s - 0.5
                    }
                }
                "half_pixel" => (y + 0.5) / s - 0.5,
                "half_pixel_symmetric" => len as f64 / 2.0 * (1.0 - out as f64 / width) + (y + 0.5) / s - 0.5,
                "tf_crop_and_resize" => {
                    let (lo, hi) = roi.ok_or("tf_crop_and_resize needs a roi")?;
                    let x = if width == 1.0 { (hi - lo) * last / 2.0 } else { y * (hi - lo) * last / (width - 1.0) };
                    x + lo * last
                }
                other => {
                    return Err(format!(
                        "coordinate_transformation_mode \"{other}\" is not supported with interpolation"
                    ));
                }
            };
            if coord == "tf_crop_and_resize" && !(0.0..=last).contains(&x) {
                extrapolated[o] = true;
                continue;
            }
            // The taps nearest to `x`, ties to the left; `ratio` in (0, 1] past the tap left of `x`.
            let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
            let mut w = kernel.weights(ratio, s);
            let taps = w.len() as i64;
            let pad = (taps + 1) / 2;
            let padded = x + pad as f64;
            let frac = padded - padded.floor();
            let offset = if taps % 2 == 0 {
                if frac == 0.0 { -(taps / 2) } else { -(taps / 2) + 1 }
            } else if frac <= 0.5 {
                -((taps - 1) / 2)
            } else {
                -((taps - 1) / 2) + 1
            };
            let first = padded.floor() as i64 + offset - pad;
            let inside = |j: usize| (0..len as i64).contains(&(first + j as i64));
            if exclude_outside {
                for (j, v) in w.iter_mut().enumerate() {
                    if !inside(j) {
                        *v = 0.0;
                    }
                }
                let sum: f64 = w.iter().sum();
                if sum != 0.0 {
                    w.iter_mut().for_each(|v| *v /= sum);
                }
            }
            // Taps outside the input read its edge.
            for (j, v) in w.into_iter().enumerate() {
                let i = (first + j as i64).clamp(0, len as i64 - 1) as usize;
                weights[i * out + o] += v;
            }
        }
        Ok(Self { len, out, weights: weights.into_iter().map(|w| w as f32).collect(), extrapolated })
    }

    /// Applies the map along axis `ax` of `x`: the axis moves last, is multiplied by the constant
    /// [len, out] matrix, gains the extrapolation value where it applies, and moves back.
    fn apply(&self, ctx: &mut Ctx, x: Val, ax: usize, extrapolation: f64) -> Result<Val, String> {
        let shape = ctx.shape(&x);
        let rank = shape.len();
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != ax).collect();
        perm.push(ax);
        let moved = if ax + 1 == rank { x } else { ctx.op(Op::Transpose { perm: perm.clone() }, &[x])? };
        let rows: Vec<usize> = perm[..rank - 1].iter().map(|&i| shape[i]).collect();
        let flat = ctx.reshape(&moved, vec![rows.iter().product(), self.len])?;
        let mut y = ctx.op(Op::MatMul, &[flat, Ctx::f32_const(vec![self.len, self.out], self.weights.clone())])?;
        if self.extrapolated.iter().any(|&e| e) {
            let fill = self.extrapolated.iter().map(|&e| if e { extrapolation as f32 } else { 0.0 }).collect();
            y = ctx.binary(fhec_ir::Binary::Add, &y, &Ctx::f32_const(vec![self.out], fill))?;
        }
        let y = ctx.reshape(&y, [rows, vec![self.out]].concat())?;
        if ax + 1 == rank {
            return Ok(y);
        }
        let mut back = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            back[p] = i;
        }
        ctx.op(Op::Transpose { perm: back }, &[y])
    }
}
