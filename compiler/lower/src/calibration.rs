//! What the lowering knows about a model's inputs: the box the client clamps them into (the interval
//! analysis starts from it, so no accumulator can leave its table) and samples on which the search
//! measures fidelity.
//!
//! Two sources:
//! - calibration samples: the box is their per-element range with headroom;
//! - a pre-quantized model (ONNX QDQ or QOperator): the model quantizes its input itself
//!   (`QuantizeLinear`, after at most elementwise affine ops such as a standardization), so the box is
//!   the range that quantizer does not saturate. Clamping into it changes nothing the model computes.
//!   The search then measures fidelity on samples drawn uniformly from the box, and output ranges come
//!   from the interval analysis alone.

use crate::LowerError;
use fhec_ir::{Binary, Module, Op, Tensor, Unary, ValueId, broadcast_index};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand::rngs::StdRng;

/// Headroom added on each side of the calibrated range of every input element (a fraction of it).
pub const HEADROOM: f64 = 0.1;

/// Samples drawn from a quantizer's box when the model brings no calibration data, and their seed.
pub const SYNTHETIC_SAMPLES: usize = 200;
pub const SYNTHETIC_SEED: u64 = 0xca1;

/// Where a [`Calibration`] came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// Calibration samples given by the user.
    Samples,
    /// The model's own input quantizer (named by its source location); the samples are synthetic.
    InputQuantizer { at: String },
}

#[derive(Clone, Debug)]
pub struct Calibration {
    samples: Vec<Tensor>,
    input_box: Vec<(f64, f64)>,
    origin: Origin,
}

impl Calibration {
    /// The box from calibration samples (each shaped like the model input): per element, with
    /// headroom. A constant element gets the range of the whole tensor, so it can still vary at
    /// inference.
    pub fn from_samples(samples: Vec<Tensor>) -> Result<Calibration, LowerError> {
        let first = samples.first().ok_or_else(|| LowerError::Model("no calibration samples".into()))?;
        let n = first.numel();
        let (mut lo, mut hi) = (vec![f64::INFINITY; n], vec![f64::NEG_INFINITY; n]);
        for s in &samples {
            for (i, v) in s.to_f32_vec().into_iter().enumerate() {
                if !v.is_finite() {
                    return Err(LowerError::Model(format!("calibration sample has a non-finite value at element {i}")));
                }
                lo[i] = lo[i].min(f64::from(v));
                hi[i] = hi[i].max(f64::from(v));
            }
        }
        let (tlo, thi) =
            (lo.iter().copied().fold(f64::INFINITY, f64::min), hi.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        let input_box = (0..n)
            .map(|i| {
                let (l, h) = if hi[i] - lo[i] <= 1e-6 * (thi - tlo) { (tlo, thi) } else { (lo[i], hi[i]) };
                let pad = HEADROOM * (h - l).max(1e-6);
                (l - pad, h + pad)
            })
            .collect();
        Ok(Calibration { samples, input_box, origin: Origin::Samples })
    }

    /// The box from the model's own input quantizer, and `n` samples drawn uniformly from it (seeded:
    /// the same model gives the same samples). An error says why the model needs calibration samples.
    pub fn from_input_quantizer(module: &Module, n: usize, seed: u64) -> Result<Calibration, LowerError> {
        let (input_box, at) = quantizer_box(module).map_err(|why| {
            LowerError::Model(format!(
                "no calibration samples, and the model does not quantize its input itself ({why}): give calibration samples (`fhec build --calibration SAMPLES.npy`, or `.calibration(..)` in a build script)"
            ))
        })?;
        let shape = module.node(module.inputs()[0]).ty.shape.clone();
        let mut rng = StdRng::seed_from_u64(seed);
        let uniform: Vec<Uniform<f64>> = input_box
            .iter()
            .map(|&(lo, hi)| Uniform::new_inclusive(lo, hi).expect("a quantizer box is finite and ordered"))
            .collect();
        let samples = (0..n)
            .map(|_| {
                let x = uniform.iter().map(|u| u.sample(&mut rng) as f32).collect();
                Tensor::from_f32(shape.clone(), x).expect("one value per input element")
            })
            .collect();
        Ok(Calibration { samples, input_box, origin: Origin::InputQuantizer { at } })
    }

    pub fn samples(&self) -> &[Tensor] {
        &self.samples
    }

    /// Per input element (row-major), the range the client clamps it into.
    pub fn input_box(&self) -> &[(f64, f64)] {
        &self.input_box
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The calibration of `head`'s result (an elementwise, monotone map of the input, see `head`): the
    /// samples mapped, the box the box's ends map to.
    pub(crate) fn through(&self, head: &Module) -> Result<Calibration, LowerError> {
        let run = |x: &Tensor| crate::head::apply(head, x).map_err(LowerError::Model);
        let samples = self.samples.iter().map(run).collect::<Result<Vec<_>, _>>()?;
        let shape = head.node(head.inputs()[0]).ty.shape.clone();
        let end = |f: fn(&(f64, f64)) -> f64| {
            run(&Tensor::from_f32(shape.clone(), self.input_box.iter().map(|b| f(b) as f32).collect())
                .expect("one value per input element"))
        };
        let (lo, hi) = (end(|b| b.0)?.to_f32_vec(), end(|b| b.1)?.to_f32_vec());
        // A decision's bit (a head ending in a comparison) takes its whole range, 0 and 1, whatever
        // the calibration samples gave: the client computes it exactly for any input, so clamping it
        // would only copy a small calibration set's limits onto every prediction.
        let bits = crate::head::ends_in_decisions(head);
        let input_box = lo
            .iter()
            .zip(&hi)
            .map(|(&a, &b)| if bits { (0.0, 1.0) } else { (f64::from(a.min(b)), f64::from(a.max(b))) })
            .collect();
        Ok(Calibration { samples, input_box, origin: self.origin.clone() })
    }

    /// Samples whose outputs bound the encoded output ranges: the user's (real data), none for
    /// synthetic ones (which need not resemble real data: the interval bounds hold instead).
    pub(crate) fn output_samples(&self) -> &[Tensor] {
        match self.origin {
            Origin::Samples => &self.samples,
            Origin::InputQuantizer { .. } => &[],
        }
    }
}

/// Follows the only input through elementwise affine ops with constant operands (per element
/// `y = a x + b`) to `round`, an optional zero-point `add` and `clip`: the quantizer. Its box is where
/// `round(y) + zero_point` stays within the clip, end points at the centres of the extreme steps.
/// Returns the box and the quantizer's source location, or why there is none.
fn quantizer_box(m: &Module) -> Result<(Vec<(f64, f64)>, String), String> {
    let inputs = m.inputs();
    let [input] = inputs[..] else {
        return Err(format!("it has {} inputs", inputs.len()));
    };
    let n = m.node(input).ty.numel();
    let (mut a, mut b) = (vec![1.0f64; n], vec![0.0f64; n]);
    let describe = |v: ValueId| format!("%{} = {}", v.index(), m.node(v).describe());
    // The one user of `v`, or why the chain ends.
    let only_user = |v: ValueId| -> Result<ValueId, String> {
        match m.users(v)[..] {
            [u] => Ok(u),
            [] => Err(format!("%{} is a model output", v.index())),
            ref us => Err(format!("%{} is used by {} ops", v.index(), us.len())),
        }
    };
    // The per-element values of the constant operand of `u` (the other one being `v`).
    let constant = |u: ValueId, v: ValueId| -> Result<(Vec<f64>, bool), String> {
        let ops = m.operands(u);
        let (other, v_first) = if ops[0] == v && ops[1] != v {
            (ops[1], true)
        } else if ops[1] == v && ops[0] != v {
            (ops[0], false)
        } else {
            return Err(format!("{} uses it twice", describe(u)));
        };
        let Op::Const(c) = &m.node(other).op else {
            return Err(format!("{} combines it with a computed value", describe(u)));
        };
        if m.node(u).ty.shape != m.node(v).ty.shape {
            return Err(format!("{} broadcasts it to a larger shape", describe(u)));
        }
        let values = c.to_f32_vec();
        Ok((
            broadcast_index(&m.node(v).ty.shape, c.shape()).into_iter().map(|i| f64::from(values[i])).collect(),
            v_first,
        ))
    };
    let mut v = input;
    loop {
        let u = only_user(v)?;
        match &m.node(u).op {
            Op::Reshape { .. } => {}
            Op::Unary(Unary::Neg) => a.iter_mut().chain(b.iter_mut()).for_each(|x| *x = -*x),
            Op::Unary(Unary::Round) => {
                v = u;
                break;
            }
            Op::Binary(k @ (Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)) => {
                let (c, v_first) = constant(u, v)?;
                for i in 0..n {
                    match (k, v_first) {
                        (Binary::Add, _) => b[i] += c[i],
                        (Binary::Sub, true) => b[i] -= c[i],
                        (Binary::Sub, false) => (a[i], b[i]) = (-a[i], c[i] - b[i]),
                        (Binary::Mul, _) => (a[i], b[i]) = (a[i] * c[i], b[i] * c[i]),
                        (Binary::Div, true) if c[i] != 0.0 => (a[i], b[i]) = (a[i] / c[i], b[i] / c[i]),
                        _ => return Err(format!("{} is not affine in the input", describe(u))),
                    }
                }
            }
            _ => return Err(format!("the input reaches {} before any quantizer", describe(u))),
        }
        v = u;
    }
    let rounding = v;
    let mut zero_point = vec![0.0f64; n];
    let mut u = only_user(v)?;
    if let Op::Binary(Binary::Add) = m.node(u).op {
        zero_point = constant(u, v)?.0;
        v = u;
        u = only_user(v)?;
    }
    let Op::Unary(Unary::Clip { min, max }) = m.node(u).op else {
        return Err(format!("the input is rounded at {} but not clipped to an integer range", describe(rounding)));
    };
    let (min, max) = (f64::from(min), f64::from(max));
    if !(min.is_finite() && max.is_finite() && min <= max) {
        return Err(format!("{} clips to [{min}, {max}], not a finite integer range", describe(u)));
    }
    let input_box = (0..n)
        .map(|i| {
            if a[i] == 0.0 {
                // The element does not reach the quantizer: any value computes the same.
                return (-1.0, 1.0);
            }
            let (x0, x1) = ((min - zero_point[i] - b[i]) / a[i], (max - zero_point[i] - b[i]) / a[i]);
            (x0.min(x1), x0.max(x1))
        })
        .collect::<Vec<_>>();
    if input_box.iter().any(|(lo, hi)| !(lo.is_finite() && hi.is_finite())) {
        return Err(format!("the quantizer at {} has an infinite range", describe(rounding)));
    }
    let at = m.node(rounding).describe();
    Ok((input_box, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Module {
        text.parse().unwrap()
    }

    #[test]
    fn the_box_is_where_the_input_quantizer_does_not_saturate() {
        // (x - [1, 2]) / 0.5 -> round -> + 10 -> clip [0, 255]: y = 2x - [2, 4] in [-10, 245].
        let m = module(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = const #0 : clear<f32>[2]\n%2 = sub %0, %1 : enc<f32>[1,2]\n%3 = const #1 : clear<f32>[]\n%4 = div %2, %3 : enc<f32>[1,2]\n%5 = round %4 : enc<f32>[1,2]\n%6 = const #2 : clear<f32>[]\n%7 = add %5, %6 : enc<f32>[1,2]\n%8 = clip{min=0.0, max=255.0} %7 : enc<f32>[1,2]\noutput \"y\" = %8\ndata #0 = [1.0, 2.0]\ndata #1 = [0.5]\ndata #2 = [10.0]\n",
        );
        let c = Calibration::from_input_quantizer(&m, 50, 1).unwrap();
        assert_eq!(c.input_box(), &[(-4.0, 123.5), (-3.0, 124.5)]);
        assert_eq!(c.samples().len(), 50);
        for s in c.samples() {
            for (x, (lo, hi)) in s.to_f32_vec().into_iter().zip(c.input_box()) {
                assert!((*lo..=*hi).contains(&f64::from(x)));
            }
        }
        // The quantizer maps the box's ends to the clip's ends.
        for (i, (lo, hi)) in c.input_box().iter().enumerate() {
            let q = |x: f64| ((x - [1.0, 2.0][i]) / 0.5).round() + 10.0;
            assert_eq!((q(*lo), q(*hi)), (0.0, 255.0));
        }
        assert!(matches!(c.origin(), Origin::InputQuantizer { .. }));
        assert!(c.output_samples().is_empty());
    }

    #[test]
    fn a_model_without_an_input_quantizer_needs_samples() {
        let m = module(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = relu %0 : enc<f32>[1,2]\n%2 = round %1 : enc<f32>[1,2]\noutput \"y\" = %2\n",
        );
        let err = Calibration::from_input_quantizer(&m, 10, 1).unwrap_err().to_string();
        assert!(err.contains("the input reaches %1 = relu before any quantizer"), "{err}");
        assert!(err.contains("--calibration"), "{err}");
        let m = module(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = round %0 : enc<f32>[1,2]\noutput \"y\" = %1\n",
        );
        let err = Calibration::from_input_quantizer(&m, 10, 1).unwrap_err().to_string();
        assert!(err.contains("%1 is a model output"), "{err}");
    }
}
