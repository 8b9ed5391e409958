//! `Unary`: the elementwise functions of one variable, their reference semantics (`apply`) and what
//! their structure says (monotonicity, linear pieces).
//!
//! Cycle with `fun`, inherent: `Unary::Fused` holds a `Fun`, and a `Fun` is built of `Unary` nodes.

use super::fun::{Fun, Monotone};
use serde::{Deserialize, Serialize};

/// Elementwise univariate functions on f32 tensors: the functions that become table lookups under FHE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Unary {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    Tanh,
    Softplus,
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Erf,
    Abs,
    Exp,
    Log,
    Sqrt,
    Neg,
    Clip {
        min: f32,
        max: f32,
    },
    Pow {
        exponent: f32,
    },
    /// `x * hard_sigmoid(x)` with alpha 1/6, beta 1/2.
    HardSwish,
    /// `x * tanh(softplus(x))`.
    Mish,
    /// `x * Phi(x)`; with `tanh`, the tanh approximation.
    Gelu {
        tanh: bool,
    },
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x` where `x > alpha`, else 0.
    ThresholdedRelu {
        alpha: f32,
    },
    /// `max(0, x) + min(0, alpha (exp(x / alpha) - 1))`.
    Celu {
        alpha: f32,
    },
    Sin,
    Cos,
    Reciprocal,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sign,
    /// `x <cmp> than`: 1 where it holds, else 0 (ONNX's booleans, as numbers).
    Compare {
        cmp: Cmp,
        than: f32,
    },
    /// A function of one variable fused from elementwise ops by the optimizer: one table under FHE.
    Fused(Box<Fun>),
}

/// The comparison of [`Unary::Compare`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    Equal,
}

impl Cmp {
    pub const ALL: [Cmp; 5] = [Cmp::Greater, Cmp::GreaterOrEqual, Cmp::Less, Cmp::LessOrEqual, Cmp::Equal];

    pub fn holds<T: PartialOrd>(self, x: T, than: T) -> bool {
        match self {
            Cmp::Greater => x > than,
            Cmp::GreaterOrEqual => x >= than,
            Cmp::Less => x < than,
            Cmp::LessOrEqual => x <= than,
            Cmp::Equal => x == than,
        }
    }

    /// The comparison with its operands swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> Cmp {
        match self {
            Cmp::Greater => Cmp::Less,
            Cmp::GreaterOrEqual => Cmp::LessOrEqual,
            Cmp::Less => Cmp::Greater,
            Cmp::LessOrEqual => Cmp::GreaterOrEqual,
            Cmp::Equal => Cmp::Equal,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cmp::Greater => "gt",
            Cmp::GreaterOrEqual => "ge",
            Cmp::Less => "lt",
            Cmp::LessOrEqual => "le",
            Cmp::Equal => "eq",
        }
    }
}

impl Unary {
    /// How the function varies with its input (used to commute it with max pooling).
    pub fn monotonicity(&self) -> Monotone {
        use Monotone::*;
        match self {
            Unary::Relu
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::Softplus
            | Unary::Erf
            | Unary::Exp
            | Unary::Clip { .. }
            | Unary::Softsign
            | Unary::Floor
            | Unary::Ceil
            | Unary::Round
            | Unary::Sign
            | Unary::Compare { cmp: Cmp::Greater | Cmp::GreaterOrEqual, .. } => Increasing,
            Unary::Neg | Unary::Compare { cmp: Cmp::Less | Cmp::LessOrEqual, .. } => Decreasing,
            Unary::LeakyRelu { alpha }
            | Unary::Elu { alpha }
            | Unary::Celu { alpha }
            | Unary::ThresholdedRelu { alpha } => {
                if *alpha >= 0.0 {
                    Increasing
                } else {
                    Unknown
                }
            }
            Unary::HardSigmoid { alpha, .. } => {
                if *alpha >= 0.0 {
                    Increasing
                } else {
                    Decreasing
                }
            }
            Unary::Selu { alpha, gamma } => {
                if *alpha >= 0.0 && *gamma >= 0.0 {
                    Increasing
                } else {
                    Unknown
                }
            }
            Unary::Fused(f) => f.monotonicity(),
            Unary::Abs
            | Unary::Log
            | Unary::Sqrt
            | Unary::Pow { .. }
            | Unary::HardSwish
            | Unary::Mish
            | Unary::Gelu { .. }
            | Unary::Sin
            | Unary::Cos
            | Unary::Reciprocal
            | Unary::Compare { cmp: Cmp::Equal, .. } => Unknown,
        }
    }

    /// `(a, b)` with `self(x) = a x + b` for every `x` in `[lo, hi]` (the op evaluated in f32, as
    /// tables are), where the interval lies on one linear piece of the op; see [`Fun::affine_on`].
    pub fn affine_on(&self, lo: f64, hi: f64) -> Option<(f64, f64)> {
        let (lo32, hi32) = (lo as f32, hi as f32);
        // A non-decreasing step that takes one value at both ends takes it everywhere between.
        let flat = |u: &Unary| {
            let (a, b) = (u.apply(lo32), u.apply(hi32));
            (a == b).then_some((0.0, f64::from(a)))
        };
        let lin = |a: f32, b: f32| Some((f64::from(a), f64::from(b)));
        match *self {
            Unary::Neg => lin(-1.0, 0.0),
            Unary::Relu
            | Unary::Elu { .. }
            | Unary::Celu { .. }
            | Unary::LeakyRelu { .. }
            | Unary::Selu { .. }
            | Unary::Abs
                if lo >= 0.0 =>
            {
                match *self {
                    Unary::Selu { gamma, .. } => lin(gamma, 0.0),
                    _ => lin(1.0, 0.0),
                }
            }
            Unary::Relu if hi <= 0.0 => lin(0.0, 0.0),
            Unary::LeakyRelu { alpha } if hi <= 0.0 => lin(alpha, 0.0),
            Unary::Abs if hi <= 0.0 => lin(-1.0, 0.0),
            Unary::ThresholdedRelu { alpha } if lo32 > alpha => lin(1.0, 0.0),
            Unary::ThresholdedRelu { alpha } if hi32 <= alpha => lin(0.0, 0.0),
            Unary::HardSwish if lo >= 3.0 => lin(1.0, 0.0),
            Unary::HardSwish if hi <= -3.0 => lin(0.0, 0.0),
            Unary::Clip { min, max } if lo >= f64::from(min) && hi <= f64::from(max) => lin(1.0, 0.0),
            Unary::Clip { min, max } if hi <= f64::from(min) => lin(0.0, min.min(max)),
            Unary::Clip { max, .. } if lo >= f64::from(max) => lin(0.0, max),
            Unary::HardSigmoid { alpha, beta } => {
                let (y0, y1) = (f64::from(alpha) * lo + f64::from(beta), f64::from(alpha) * hi + f64::from(beta));
                let (ylo, yhi) = (y0.min(y1), y0.max(y1));
                if ylo >= 0.0 && yhi <= 1.0 {
                    lin(alpha, beta)
                } else if yhi <= 0.0 {
                    lin(0.0, 0.0)
                } else if ylo >= 1.0 {
                    lin(0.0, 1.0)
                } else {
                    None
                }
            }
            Unary::Floor | Unary::Ceil | Unary::Round | Unary::Sign => flat(self),
            Unary::Compare { cmp: Cmp::Equal, than } => (than < lo32 || than > hi32).then_some((0.0, 0.0)),
            Unary::Compare { .. } => flat(self),
            Unary::Fused(ref f) => f.affine_on(lo, hi),
            _ => None,
        }
    }

    /// Applies the function to one value (the reference semantics, shared by every interpreter).
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Unary::Sigmoid => sigmoid(x),
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::Tanh => x.tanh(),
            Unary::Softplus => softplus(x),
            Unary::Elu { alpha } => {
                if x < 0.0 {
                    alpha * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Unary::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * (alpha * x.exp() - alpha)
                } else {
                    gamma * x
                }
            }
            Unary::Erf => erf(x),
            Unary::Abs => x.abs(),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Neg => -x,
            Unary::Clip { min, max } => x.max(min).min(max),
            Unary::Pow { exponent } => {
                if exponent == 2.0 {
                    x * x
                } else {
                    x.powf(exponent)
                }
            }
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Mish => x * softplus(x).tanh(),
            Unary::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
            Unary::Gelu { tanh: true } => {
                let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Unary::Softsign => x / (1.0 + x.abs()),
            Unary::ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            Unary::Celu { alpha } => x.max(0.0) + (alpha * ((x / alpha).exp() - 1.0)).min(0.0),
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Reciprocal => 1.0 / x,
            Unary::Floor => x.floor(),
            Unary::Ceil => x.ceil(),
            Unary::Round => x.round_ties_even(),
            Unary::Fused(ref f) => f.eval(x),
            Unary::Compare { cmp, than } => {
                if cmp.holds(x, than) {
                    1.0
                } else {
                    0.0
                }
            }
            Unary::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus(x: f32) -> f32 {
    // log(1 + e^x) without overflow for large x.
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The error function, computed in f64 (Abramowitz-Stegun 7.1.26 is too coarse for a reference).
fn erf(x: f32) -> f32 {
    libm_erf(x as f64) as f32
}

/// erf by its Taylor series near 0 and its continued fraction (via erfc) in the tails; |error| < 1e-12.
fn libm_erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum: f64 = 0.0;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x2 / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz-free backward evaluation)
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + (k as f64 / 2.0) / f;
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f
    };
    if x < 0.0 { -r } else { r }
}
