//! The operations of the IR, their attributes and their typing rules.
//!
//! Every op produces exactly one value. Attributes are fully resolved by the frontend: no negative axes,
//! no `auto_pad`, no symbolic dimensions. `Op::infer` is the single source of truth for result types; the
//! verifier and the builders both use it.

use crate::fun::Monotone;
use crate::tensor::Tensor;
use crate::types::{DType, Security, Shape, Type};
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
    Fused(Box<crate::fun::Fun>),
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

/// Elementwise binary ops with numpy broadcasting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// `x < 0 ? slope * x : x`, the slope broadcast to the shape of `x` (unidirectional).
    PRelu,
    /// The larger operand (ONNX `Max` of two inputs).
    Max,
    /// The smaller operand (ONNX `Min` of two inputs).
    Min,
}

impl Binary {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
            Binary::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
}

/// Convolution attributes for `x: [N, C, *spatial]`, `w: [M, C/group, *kernel]`, optional `b: [M]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvAttrs {
    pub strides: Vec<usize>,
    /// Begin pads for every spatial axis, then end pads (ONNX order).
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
}

/// Pooling attributes over the spatial axes of `[N, C, *spatial]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
    /// Average pooling only: whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// One IR operation. Each op produces one value; operands are other values of the module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A model input, named as in the source model. Always encrypted.
    Input {
        name: String,
    },
    /// A clear constant (weights, biases, folded subgraphs).
    Const(Tensor),
    Unary(Unary),
    Binary(Binary),
    /// numpy `matmul` semantics (1-D promotion, batch broadcasting).
    MatMul,
    /// Operands `x, w` or `x, w, b`.
    Conv(ConvAttrs),
    AvgPool(PoolAttrs),
    MaxPool(PoolAttrs),
    /// Sorted, distinct axes.
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    Reshape {
        shape: Shape,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// N-ary concatenation.
    Concat {
        axis: usize,
    },
    /// Per listed axis, the elements `start, start+step, ...` up to (excluding) `end`. Bounds are already
    /// clamped: `0 <= start <= dim`, `-1 <= end <= dim`, `step != 0`.
    Slice {
        axes: Vec<usize>,
        starts: Vec<i64>,
        ends: Vec<i64>,
        steps: Vec<i64>,
    },
    /// `data.take(indices, axis)` with constant, non-negative indices of shape `indices_shape`.
    Gather {
        axis: usize,
        indices: Vec<i64>,
        indices_shape: Shape,
    },
    /// Begin pads for every axis, then end pads.
    Pad {
        pads: Vec<usize>,
        mode: PadMode,
        value: f32,
    },
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },
    ArgMax {
        axis: usize,
        keepdims: bool,
        select_last_index: bool,
    },
}

/// An attribute value in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Bool(bool),
    Word(&'static str),
    /// A quoted string (the body of a fused function).
    Str(String),
}

impl Op {
    /// The op's name in the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const(_) => "const",
            Op::Unary(u) => match u {
                Unary::Relu => "relu",
                Unary::LeakyRelu { .. } => "leaky_relu",
                Unary::Sigmoid => "sigmoid",
                Unary::HardSigmoid { .. } => "hard_sigmoid",
                Unary::Tanh => "tanh",
                Unary::Softplus => "softplus",
                Unary::Elu { .. } => "elu",
                Unary::Selu { .. } => "selu",
                Unary::Erf => "erf",
                Unary::Abs => "abs",
                Unary::Exp => "exp",
                Unary::Log => "log",
                Unary::Sqrt => "sqrt",
                Unary::Neg => "neg",
                Unary::Clip { .. } => "clip",
                Unary::Pow { .. } => "pow",
                Unary::HardSwish => "hard_swish",
                Unary::Mish => "mish",
                Unary::Gelu { .. } => "gelu",
                Unary::Softsign => "softsign",
                Unary::ThresholdedRelu { .. } => "thresholded_relu",
                Unary::Celu { .. } => "celu",
                Unary::Sin => "sin",
                Unary::Cos => "cos",
                Unary::Reciprocal => "reciprocal",
                Unary::Floor => "floor",
                Unary::Ceil => "ceil",
                Unary::Round => "round",
                Unary::Sign => "sign",
                Unary::Compare { .. } => "compare",
                Unary::Fused(_) => "fused",
            },
            Op::Binary(b) => match b {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::PRelu => "prelu",
                Binary::Max => "max",
                Binary::Min => "min",
            },
            Op::MatMul => "matmul",
            Op::Conv(_) => "conv",
            Op::AvgPool(_) => "avgpool",
            Op::MaxPool(_) => "maxpool",
            Op::Reduce { kind: ReduceKind::Sum, .. } => "reduce_sum",
            Op::Reduce { kind: ReduceKind::Mean, .. } => "reduce_mean",
            Op::Reduce { kind: ReduceKind::Max, .. } => "reduce_max",
            Op::Reduce { kind: ReduceKind::Min, .. } => "reduce_min",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::Pad { .. } => "pad",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::ArgMax { .. } => "argmax",
        }
    }

    /// Every mnemonic the text form knows, except `input` and `const` which have their own syntax.
    pub const MNEMONICS: &'static [&'static str] = &[
        "relu",
        "leaky_relu",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softplus",
        "elu",
        "selu",
        "erf",
        "abs",
        "exp",
        "log",
        "sqrt",
        "neg",
        "clip",
        "pow",
        "hard_swish",
        "mish",
        "gelu",
        "softsign",
        "thresholded_relu",
        "celu",
        "sin",
        "cos",
        "reciprocal",
        "floor",
        "ceil",
        "round",
        "sign",
        "compare",
        "fused",
        "add",
        "sub",
        "mul",
        "div",
        "prelu",
        "max",
        "min",
        "matmul",
        "conv",
        "avgpool",
        "maxpool",
        "reduce_sum",
        "reduce_mean",
        "reduce_max",
        "reduce_min",
        "reshape",
        "transpose",
        "concat",
        "slice",
        "gather",
        "pad",
        "softmax",
        "log_softmax",
        "argmax",
    ];

    /// The attributes printed between braces, in a fixed order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Binary(_) | Op::MatMul => vec![],
            Op::Unary(u) => match u {
                Unary::Fused(f) => vec![("fn", Attr::Str(f.to_string()))],
                Unary::LeakyRelu { alpha }
                | Unary::Elu { alpha }
                | Unary::ThresholdedRelu { alpha }
                | Unary::Celu { alpha } => {
                    vec![("alpha", Attr::Float(*alpha))]
                }
                Unary::Gelu { tanh } => vec![("tanh", Attr::Bool(*tanh))],
                Unary::HardSigmoid { alpha, beta } => {
                    vec![("alpha", Attr::Float(*alpha)), ("beta", Attr::Float(*beta))]
                }
                Unary::Selu { alpha, gamma } => {
                    vec![("alpha", Attr::Float(*alpha)), ("gamma", Attr::Float(*gamma))]
                }
                Unary::Clip { min, max } => vec![("min", Attr::Float(*min)), ("max", Attr::Float(*max))],
                Unary::Pow { exponent } => vec![("exponent", Attr::Float(*exponent))],
                Unary::Compare { cmp, than } => {
                    vec![("cmp", Attr::Str(cmp.name().to_string())), ("than", Attr::Float(*than))]
                }
                _ => vec![],
            },
            Op::Conv(c) => vec![
                ("strides", ints(&c.strides)),
                ("pads", ints(&c.pads)),
                ("dilations", ints(&c.dilations)),
                ("group", Attr::Int(c.group as i64)),
            ],
            Op::AvgPool(p) | Op::MaxPool(p) => {
                let mut v = vec![
                    ("kernel", ints(&p.kernel)),
                    ("strides", ints(&p.strides)),
                    ("pads", ints(&p.pads)),
                    ("dilations", ints(&p.dilations)),
                    ("ceil_mode", Attr::Bool(p.ceil_mode)),
                ];
                if matches!(self, Op::AvgPool(_)) {
                    v.push(("count_include_pad", Attr::Bool(p.count_include_pad)));
                }
                v
            }
            Op::Reduce { axes, keepdims, .. } => {
                vec![("axes", ints(axes)), ("keepdims", Attr::Bool(*keepdims))]
            }
            Op::Reshape { shape } => vec![("shape", ints(shape))],
            Op::Transpose { perm } => vec![("perm", ints(perm))],
            Op::Concat { axis } | Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                vec![("axis", Attr::Int(*axis as i64))]
            }
            Op::Slice { axes, starts, ends, steps } => vec![
                ("axes", ints(axes)),
                ("starts", Attr::Ints(starts.clone())),
                ("ends", Attr::Ints(ends.clone())),
                ("steps", Attr::Ints(steps.clone())),
            ],
            Op::Gather { axis, indices, indices_shape } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("indices", Attr::Ints(indices.clone())),
                ("indices_shape", ints(indices_shape)),
            ],
            Op::Pad { pads, mode, value } => vec![
                ("pads", ints(pads)),
                (
                    "mode",
                    Attr::Word(match mode {
                        PadMode::Constant => "constant",
                        PadMode::Reflect => "reflect",
                        PadMode::Edge => "edge",
                    }),
                ),
                ("value", Attr::Float(*value)),
            ],
            Op::ArgMax { axis, keepdims, select_last_index } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("keepdims", Attr::Bool(*keepdims)),
                ("select_last_index", Attr::Bool(*select_last_index)),
            ],
        }
    }

    /// Rebuilds an op from its mnemonic and attributes (the inverse of `mnemonic` + `attrs`).
    pub fn from_parts(mnemonic: &str, attrs: &mut AttrMap) -> Result<Op, String> {
        let op = match mnemonic {
            "relu" => Op::Unary(Unary::Relu),
            "leaky_relu" => Op::Unary(Unary::LeakyRelu { alpha: attrs.float("alpha")? }),
            "sigmoid" => Op::Unary(Unary::Sigmoid),
            "hard_sigmoid" => {
                Op::Unary(Unary::HardSigmoid { alpha: attrs.float("alpha")?, beta: attrs.float("beta")? })
            }
            "tanh" => Op::Unary(Unary::Tanh),
            "softplus" => Op::Unary(Unary::Softplus),
            "elu" => Op::Unary(Unary::Elu { alpha: attrs.float("alpha")? }),
            "selu" => Op::Unary(Unary::Selu { alpha: attrs.float("alpha")?, gamma: attrs.float("gamma")? }),
            "erf" => Op::Unary(Unary::Erf),
            "abs" => Op::Unary(Unary::Abs),
            "exp" => Op::Unary(Unary::Exp),
            "log" => Op::Unary(Unary::Log),
            "sqrt" => Op::Unary(Unary::Sqrt),
            "neg" => Op::Unary(Unary::Neg),
            "clip" => Op::Unary(Unary::Clip { min: attrs.float("min")?, max: attrs.float("max")? }),
            "pow" => Op::Unary(Unary::Pow { exponent: attrs.float("exponent")? }),
            "hard_swish" => Op::Unary(Unary::HardSwish),
            "mish" => Op::Unary(Unary::Mish),
            "gelu" => Op::Unary(Unary::Gelu { tanh: attrs.bool("tanh")? }),
            "softsign" => Op::Unary(Unary::Softsign),
            "thresholded_relu" => Op::Unary(Unary::ThresholdedRelu { alpha: attrs.float("alpha")? }),
            "celu" => Op::Unary(Unary::Celu { alpha: attrs.float("alpha")? }),
            "sin" => Op::Unary(Unary::Sin),
            "cos" => Op::Unary(Unary::Cos),
            "reciprocal" => Op::Unary(Unary::Reciprocal),
            "floor" => Op::Unary(Unary::Floor),
            "ceil" => Op::Unary(Unary::Ceil),
            "round" => Op::Unary(Unary::Round),
            "sign" => Op::Unary(Unary::Sign),
            "compare" => {
                let name = attrs.string("cmp")?;
                let cmp = Cmp::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| format!("unknown comparison `{name}` (gt, ge, lt, le, eq)"))?;
                Op::Unary(Unary::Compare { cmp, than: attrs.float("than")? })
            }
            "fused" => Op::Unary(Unary::Fused(Box::new(crate::fun::Fun::parse(&attrs.string("fn")?)?))),
            "add" => Op::Binary(Binary::Add),
            "sub" => Op::Binary(Binary::Sub),
            "mul" => Op::Binary(Binary::Mul),
            "div" => Op::Binary(Binary::Div),
            "prelu" => Op::Binary(Binary::PRelu),
            "max" => Op::Binary(Binary::Max),
            "min" => Op::Binary(Binary::Min),
            "matmul" => Op::MatMul,
            "conv" => Op::Conv(ConvAttrs {
                strides: attrs.usizes("strides")?,
                pads: attrs.usizes("pads")?,
                dilations: attrs.usizes("dilations")?,
                group: attrs.usize("group")?,
            }),
            "avgpool" | "maxpool" => {
                let p = PoolAttrs {
                    kernel: attrs.usizes("kernel")?,
                    strides: attrs.usizes("strides")?,
                    pads: attrs.usizes("pads")?,
                    dilations: attrs.usizes("dilations")?,
                    ceil_mode: attrs.bool("ceil_mode")?,
                    count_include_pad: mnemonic == "avgpool" && attrs.bool("count_include_pad")?,
                };
                if mnemonic == "avgpool" { Op::AvgPool(p) } else { Op::MaxPool(p) }
            }
            "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" => Op::Reduce {
                kind: match mnemonic {
                    "reduce_sum" => ReduceKind::Sum,
                    "reduce_mean" => ReduceKind::Mean,
                    "reduce_max" => ReduceKind::Max,
                    _ => ReduceKind::Min,
                },
                axes: attrs.usizes("axes")?,
                keepdims: attrs.bool("keepdims")?,
            },
            "reshape" => Op::Reshape { shape: attrs.usizes("shape")? },
            "transpose" => Op::Transpose { perm: attrs.usizes("perm")? },
            "concat" => Op::Concat { axis: attrs.usize("axis")? },
            "slice" => Op::Slice {
                axes: attrs.usizes("axes")?,
                starts: attrs.ints("starts")?,
                ends: attrs.ints("ends")?,
                steps: attrs.ints("steps")?,
            },
            "gather" => Op::Gather {
                axis: attrs.usize("axis")?,
                indices: attrs.ints("indices")?,
                indices_shape: attrs.usizes("indices_shape")?,
            },
            "pad" => Op::Pad {
                pads: attrs.usizes("pads")?,
                mode: match attrs.word("mode")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(format!("unknown pad mode `{other}` (constant, reflect, edge)")),
                },
                value: attrs.float("value")?,
            },
            "softmax" => Op::Softmax { axis: attrs.usize("axis")? },
            "log_softmax" => Op::LogSoftmax { axis: attrs.usize("axis")? },
            "argmax" => Op::ArgMax {
                axis: attrs.usize("axis")?,
                keepdims: attrs.bool("keepdims")?,
                select_last_index: attrs.bool("select_last_index")?,
            },
            other => {
                return Err(format!("unknown op `{other}`; known ops: input, const, {}", Op::MNEMONICS.join(", ")));
            }
        };
        attrs.finish(mnemonic)?;
        Ok(op)
    }

    /// The result type of this op applied to operands of the given types, or why it is ill-typed.
    pub fn infer(&self, operands: &[&Type]) -> Result<Type, String> {
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

/// Attributes being parsed: each accessor removes what it reads, `finish` rejects leftovers.
#[derive(Default, Debug)]
pub struct AttrMap {
    pub(crate) entries: Vec<(String, AttrText)>,
}

/// An attribute value as written in text, before the op says what type it expects.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttrText {
    Num(String),
    List(Vec<String>),
    Word(String),
    Str(String),
}

impl AttrMap {
    fn take(&mut self, key: &str) -> Result<AttrText, String> {
        let i = self.entries.iter().position(|(k, _)| k == key).ok_or_else(|| format!("missing attribute `{key}`"))?;
        Ok(self.entries.remove(i).1)
    }

    fn float(&mut self, key: &str) -> Result<f32, String> {
        match self.take(key)? {
            AttrText::Num(s) | AttrText::Word(s) => {
                s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not a number"))
            }
            AttrText::List(_) | AttrText::Str(_) => Err(format!("attribute `{key}` must be a number")),
        }
    }

    fn int(&mut self, key: &str) -> Result<i64, String> {
        match self.take(key)? {
            AttrText::Num(s) => s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not an integer")),
            _ => Err(format!("attribute `{key}` must be an integer")),
        }
    }

    fn usize(&mut self, key: &str) -> Result<usize, String> {
        let v = self.int(key)?;
        usize::try_from(v).map_err(|_| format!("attribute `{key}` must be non-negative, got {v}"))
    }

    fn ints(&mut self, key: &str) -> Result<Vec<i64>, String> {
        match self.take(key)? {
            AttrText::List(items) => items
                .iter()
                .map(|s| s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not an integer")))
                .collect(),
            _ => Err(format!("attribute `{key}` must be a list of integers")),
        }
    }

    fn usizes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        self.ints(key)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format!("attribute `{key}` must be non-negative, got {v}")))
            .collect()
    }

    fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            AttrText::Word(w) if w == "true" => Ok(true),
            AttrText::Word(w) if w == "false" => Ok(false),
            _ => Err(format!("attribute `{key}` must be true or false")),
        }
    }

    fn string(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            // A bare word too: how a fused function's text writes a comparison's name.
            AttrText::Str(s) | AttrText::Word(s) => Ok(s),
            _ => Err(format!("attribute `{key}` must be a quoted string")),
        }
    }

    fn word(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            AttrText::Word(w) => Ok(w),
            _ => Err(format!("attribute `{key}` must be a word")),
        }
    }

    fn finish(&self, mnemonic: &str) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown attribute `{k}` for `{mnemonic}`")),
        }
    }
}
