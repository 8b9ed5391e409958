//! The operations of the IR, their attributes and their typing rules.
//!
//! Every op produces exactly one value. Attributes are fully resolved by the frontend: no negative axes,
//! no `auto_pad`, no symbolic dimensions. `Op::infer` is the single source of truth for result types; the
//! verifier and the builders both use it.
//!
//! `attrs` is the text form of an op's attributes (and of a fused function); `infer` the typing rules.

mod attrs;
mod infer;

pub(crate) use attrs::AttrText;
pub use attrs::{Attr, AttrMap};
pub use infer::{broadcast_shapes, slice_len, window_out};

use crate::scalar::{Binary, Unary};
use crate::tensor::Tensor;
use crate::types::Shape;
use serde::{Deserialize, Serialize};

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
}
