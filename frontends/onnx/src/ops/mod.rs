//! The op table: every supported ONNX op type and the function that translates it.
//!
//! One file per family, in the manner of tract's `onnx/src/ops/`. A translation reads its node through
//! `Ctx` and returns the node's output values in order; errors are plain messages, the caller adds the
//! node's name and op type.

mod activation;
mod constant;
mod logic;
mod math;
mod ml;
mod nn;
mod quant;
mod resize;
mod rnn;
mod shape;
mod trees;

use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Cmp, Unary};

pub use trees::Summary as TreeSummary;
pub(crate) use trees::summary as tree_summary;

pub(crate) type Translate = fn(&mut Ctx) -> Result<Vec<Val>, String>;

const ML: &str = "ai.onnx.ml";

/// (domain, op type, translation). The default domain is "".
const REGISTRY: &[(&str, &str, Translate)] = &[
    ("", "Relu", |c| activation::unary(c, Unary::Relu)),
    ("", "LeakyRelu", activation::leaky_relu),
    ("", "PRelu", activation::prelu),
    ("", "Sigmoid", |c| activation::unary(c, Unary::Sigmoid)),
    ("", "HardSigmoid", activation::hard_sigmoid),
    ("", "Tanh", |c| activation::unary(c, Unary::Tanh)),
    ("", "Softplus", |c| activation::unary(c, Unary::Softplus)),
    ("", "Elu", activation::elu),
    ("", "Selu", activation::selu),
    ("", "Erf", |c| activation::unary(c, Unary::Erf)),
    ("", "Abs", |c| activation::unary(c, Unary::Abs)),
    ("", "Exp", |c| activation::unary(c, Unary::Exp)),
    ("", "Log", |c| activation::unary(c, Unary::Log)),
    ("", "Sqrt", |c| activation::unary(c, Unary::Sqrt)),
    ("", "Neg", |c| activation::unary(c, Unary::Neg)),
    ("", "Clip", activation::clip),
    ("", "Pow", activation::pow),
    ("", "HardSwish", |c| activation::unary(c, Unary::HardSwish)),
    ("", "Mish", |c| activation::unary(c, Unary::Mish)),
    ("", "Gelu", activation::gelu),
    ("", "Softsign", |c| activation::unary(c, Unary::Softsign)),
    ("", "ThresholdedRelu", activation::thresholded_relu),
    ("", "Celu", activation::celu),
    ("", "Sin", |c| activation::unary(c, Unary::Sin)),
    ("", "Cos", |c| activation::unary(c, Unary::Cos)),
    ("", "Reciprocal", |c| activation::unary(c, Unary::Reciprocal)),
    ("", "Floor", |c| activation::unary(c, Unary::Floor)),
    ("", "Ceil", |c| activation::unary(c, Unary::Ceil)),
    ("", "Round", |c| activation::unary(c, Unary::Round)),
    ("", "Sign", |c| activation::unary(c, Unary::Sign)),
    ("", "Add", |c| math::binary(c, Binary::Add)),
    ("", "Sub", |c| math::binary(c, Binary::Sub)),
    ("", "Mul", |c| math::binary(c, Binary::Mul)),
    ("", "Div", |c| math::binary(c, Binary::Div)),
    ("", "Max", |c| math::variadic(c, Binary::Max)),
    ("", "Min", |c| math::variadic(c, Binary::Min)),
    ("", "Sum", |c| math::variadic(c, Binary::Add)),
    ("", "Mean", math::mean),
    ("", "MatMul", math::matmul),
    ("", "Gemm", math::gemm),
    ("", "Einsum", math::einsum),
    ("", "ReduceSum", math::reduce_sum),
    ("", "ReduceMean", math::reduce_mean),
    ("", "ReduceMax", math::reduce_max),
    ("", "ReduceMin", math::reduce_min),
    ("", "ReduceL1", math::reduce_l1),
    ("", "ReduceL2", math::reduce_l2),
    ("", "ReduceSumSquare", math::reduce_sum_square),
    ("", "ReduceLogSum", math::reduce_log_sum),
    ("", "ReduceLogSumExp", math::reduce_log_sum_exp),
    ("", "LayerNormalization", math::layer_normalization),
    ("", "Softmax", math::softmax),
    ("", "LogSoftmax", math::log_softmax),
    ("", "ArgMax", math::argmax),
    ("", "Conv", nn::conv),
    ("", "ConvTranspose", nn::conv_transpose),
    ("", "BatchNormalization", nn::batch_norm),
    ("", "LRN", nn::lrn),
    ("", "AveragePool", nn::average_pool),
    ("", "MaxPool", nn::max_pool),
    ("", "GlobalAveragePool", nn::global_average_pool),
    ("", "GlobalMaxPool", nn::global_max_pool),
    ("", "Flatten", shape::flatten),
    ("", "Reshape", shape::reshape),
    ("", "Transpose", shape::transpose),
    ("", "Squeeze", shape::squeeze),
    ("", "Unsqueeze", shape::unsqueeze),
    ("", "Concat", shape::concat),
    ("", "Split", shape::split),
    ("", "QuantizeLinear", quant::quantize_linear),
    ("", "DequantizeLinear", quant::dequantize_linear),
    ("", "QLinearMatMul", quant::qlinear_matmul),
    ("", "QLinearConv", quant::qlinear_conv),
    ("", "MatMulInteger", quant::matmul_integer),
    ("", "ConvInteger", quant::conv_integer),
    ("", "Tile", shape::tile),
    ("", "Resize", resize::resize),
    ("", "Upsample", resize::resize),
    ("", "RNN", rnn::rnn),
    ("", "GRU", rnn::gru),
    ("", "LSTM", rnn::lstm),
    ("", "Slice", shape::slice),
    ("", "Gather", shape::gather),
    ("", "Pad", shape::pad),
    ("", "Identity", shape::identity),
    ("", "Dropout", shape::dropout),
    ("", "Constant", constant::constant),
    ("", "Shape", constant::shape),
    ("", "Size", constant::size),
    ("", "ConstantOfShape", constant::constant_of_shape),
    ("", "Cast", constant::cast),
    ("", "Range", constant::range),
    ("", "Equal", |c| logic::compare(c, Cmp::Equal)),
    ("", "Greater", |c| logic::compare(c, Cmp::Greater)),
    ("", "GreaterOrEqual", |c| logic::compare(c, Cmp::GreaterOrEqual)),
    ("", "Less", |c| logic::compare(c, Cmp::Less)),
    ("", "LessOrEqual", |c| logic::compare(c, Cmp::LessOrEqual)),
    ("", "Not", logic::not),
    ("", "And", |c| logic::logic(c, logic::Logic::And)),
    ("", "Or", |c| logic::logic(c, logic::Logic::Or)),
    ("", "Xor", |c| logic::logic(c, logic::Logic::Xor)),
    ("", "Where", logic::where_),
    ("", "Expand", constant::expand),
    (ML, "Scaler", ml::scaler),
    (ML, "LinearRegressor", ml::linear_regressor),
    (ML, "LinearClassifier", ml::linear_classifier),
    (ML, "ArrayFeatureExtractor", ml::array_feature_extractor),
    (ML, "Normalizer", ml::normalizer),
    (ML, "TreeEnsemble", trees::tree_ensemble),
    (ML, "TreeEnsembleClassifier", trees::tree_ensemble_classifier),
    (ML, "TreeEnsembleRegressor", trees::tree_ensemble_regressor),
];

pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<Translate> {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    REGISTRY.iter().find(|(d, o, _)| *d == domain && *o == op_type).map(|(_, _, f)| *f)
}

/// The supported op types, sorted; ops outside the default domain carry their domain as a prefix.
pub fn supported_ops() -> Vec<String> {
    let mut v: Vec<String> =
        REGISTRY.iter().map(|(d, o, _)| if d.is_empty() { o.to_string() } else { format!("{d}.{o}") }).collect();
    v.sort();
    v
}

/// Normalizes a possibly negative axis against a rank.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if (-r..r).contains(&a) {
        Ok(a.rem_euclid(r.max(1)) as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// Normalizes, sorts and de-duplicates a list of axes.
pub(crate) fn axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut v = list.iter().map(|&a| axis(a, rank)).collect::<Result<Vec<_>, _>>()?;
    v.sort_unstable();
    if v.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {list:?} repeat an axis"));
    }
    Ok(v)
}
