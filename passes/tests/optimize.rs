//! The e-graph optimizer: each rule fires on a module that needs it, lowers the table count (or makes
//! an unlowerable module lowerable), and preserves the float semantics bit for bit.

use fhec_ir::{Module, Op, Tensor, Unary};
use fhec_passes::optimize::{Config, CostModel, Limits, Report, optimize, rule_names, table_count};

fn module(body: &str) -> Module {
    let m: Module = format!("module \"m\"\n{body}").parse().unwrap();
    m.verify().unwrap();
    m
}

/// Deterministic inputs in [-4, 4), shaped like the module's input.
fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
    let shape = m.node(m.inputs()[0]).ty.shape.clone();
    let len = fhec_ir::numel(&shape);
    let mut state = 99u64;
    (0..n)
        .map(|_| {
            let v = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
                })
                .collect();
            Tensor::from_f32(shape.clone(), v).unwrap()
        })
        .collect()
}

/// Optimizes with `only` (all rules if `None`) and checks the outputs are bit-identical on 200 inputs.
fn run(m: &Module, only: Option<Vec<&'static str>>) -> (Module, Report) {
    let cfg = Config { only, ..Config::default() };
    let (out, report) = optimize(m, &cfg, &CostModel::default()).unwrap();
    out.verify().unwrap();
    for x in inputs(m, 200) {
        let want = fhec_interp::run(m, std::slice::from_ref(&x)).unwrap();
        let got = fhec_interp::run(&out, std::slice::from_ref(&x)).unwrap();
        for (w, g) in want.iter().zip(&got) {
            let (w, g) = (w.to_f32_vec(), g.to_f32_vec());
            assert!(
                w.iter().zip(&g).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
                "{w:?} vs {g:?}\n{out}"
            );
        }
    }
    (out, report)
}

fn applied(r: &Report, rule: &str) -> usize {
    r.applied.iter().find(|(n, _)| *n == rule).map_or(0, |e| e.1)
}

fn others(rule: &str) -> Option<Vec<&'static str>> {
    Some(rule_names().into_iter().filter(|n| *n != rule).collect())
}

const LINEAR: &str = "%9 = const #0 : clear<f32>[4,1]\n%10 = matmul %X, %9 : enc<f32>[1,1] loc(\"/fc/Gemm\")\noutput \"y\" = %10\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";

fn with_linear(body: &str, last: &str) -> Module {
    module(&format!("{body}{}", LINEAR.replace("%X", last)))
}

#[test]
fn compose_maps_makes_one_table_of_a_chain() {
    // ReLU6 written as relu then clip, then a tanh: three tables per element become one.
    let m = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = relu %0 : enc<f32>[1,4] loc(\"/act/Relu\")\n%2 = clip{min=0.0, max=6.0} %1 : enc<f32>[1,4] loc(\"/act/Clip\")\n%3 = tanh %2 : enc<f32>[1,4]\n",
        "%3",
    );
    assert_eq!(table_count(&m).unwrap(), 12);
    let (out, r) = run(&m, None);
    assert!(applied(&r, "compose-maps") > 0);
    assert_eq!(table_count(&out).unwrap(), 4);
    assert_eq!(r.before.pbs, 12.0);
    assert_eq!(r.after.pbs, 4.0);
    assert!(out.to_string().contains("fused{fn=\"(tanh (clip{min=0.0,max=6.0} (relu x)))\"}"), "{out}");
    let (_, without) = run(&m, others("compose-maps"));
    assert!(without.kept_input);
}

#[test]
fn fuse_maps_of_one_value_lowers_silu_squares_and_quotients() {
    // SiLU as exported by torch: x * sigmoid(x). Naively a sigmoid table and a product of two
    // encrypted values (two tables): 3 per element; fused: 1.
    let m = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = sigmoid %0 : enc<f32>[1,4]\n%2 = mul %0, %1 : enc<f32>[1,4] loc(\"/act/Mul\")\n",
        "%2",
    );
    let (out, r) = run(&m, None);
    assert_eq!((r.before.unsupported, r.before.pbs), (0, 12.0));
    assert_eq!((r.after.unsupported, r.after.pbs), (0, 4.0));
    assert!(applied(&r, "fuse-maps-of-one-value") > 0);
    assert!(out.to_string().contains("fused{fn=\"(mul x (sigmoid x))\"}"), "{out}");
    assert_eq!((table_count(&m).unwrap(), table_count(&out).unwrap()), (12, 4));
    let (_, without) = run(&m, others("fuse-maps-of-one-value"));
    assert!(without.kept_input);

    let sq = with_linear("%0 = input \"x\" : enc<f32>[1,4]\n%1 = mul %0, %0 : enc<f32>[1,4]\n", "%1");
    let (out, r) = run(&sq, None);
    assert_eq!((r.before.pbs, r.after.pbs), (8.0, 4.0));
    assert!(out.to_string().contains("fused{fn=\"(mul x x)\"}"), "{out}");

    // A quotient of two encrypted values has no lowering of its own: only the fused table.
    let q = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = sigmoid %0 : enc<f32>[1,4]\n%2 = div %0, %1 : enc<f32>[1,4]\n",
        "%2",
    );
    let (out, r) = run(&q, None);
    assert_eq!((r.before.unsupported, r.after.unsupported, r.after.pbs), (1, 0, 4.0));
    assert!(out.to_string().contains("fused{fn=\"(div x (sigmoid x))\"}"), "{out}");
}

#[test]
fn scalar_operand_into_map_fuses_a_decomposed_gelu() {
    // GELU as older exporters write it: 0.5 * x * (1 + erf(x / sqrt(2))).
    let m = module(&format!(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #1 : clear<f32>[]\n%2 = div %0, %1 : enc<f32>[1,4]\n%3 = erf %2 : enc<f32>[1,4]\n%4 = const #2 : clear<f32>[]\n%5 = add %3, %4 : enc<f32>[1,4]\n%6 = mul %0, %5 : enc<f32>[1,4]\n%7 = const #3 : clear<f32>[]\n%8 = mul %6, %7 : enc<f32>[1,4] loc(\"/gelu/Mul_1\")\n{}data #1 = [1.4142135]\ndata #2 = [1.0]\ndata #3 = [0.5]\n",
        LINEAR.replace("%X", "%8")
    ));
    let (out, r) = run(&m, None);
    // erf: 4 tables, the product of two encrypted values: 8.
    assert_eq!((r.before.pbs, r.after.pbs), (12.0, 4.0), "{out}");
    assert!(applied(&r, "scalar-operand-into-map") > 0);
    // Without folding the scalar steps into tables, erf(x / c) + 1 is not a function of x in the
    // e-graph and the product stays a product.
    let (_, without) = run(&m, others("scalar-operand-into-map"));
    assert!(without.kept_input && without.after.pbs == 12.0);
}

#[test]
fn maxpool_of_increasing_map_pools_before_the_activation() {
    let m = module(
        "%0 = input \"x\" : enc<f32>[1,1,4,4]\n%1 = relu %0 : enc<f32>[1,1,4,4] loc(\"/Relu\")\n%2 = maxpool{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %1 : enc<f32>[1,1,2,2] loc(\"/MaxPool\")\n%3 = reshape{shape=[1,4]} %2 : enc<f32>[1,4]\n%4 = const #0 : clear<f32>[4,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n",
    );
    // 16 relus + 4 windows of 3 maxes, then 4 windows of 3 maxes + 4 relus.
    assert_eq!(table_count(&m).unwrap(), 28);
    let (out, r) = run(&m, None);
    assert!(applied(&r, "maxpool-of-increasing-map") > 0);
    assert_eq!(table_count(&out).unwrap(), 16);
    let text = out.to_string();
    assert!(text.find("maxpool").unwrap() < text.find("relu").unwrap(), "{text}");
    // The rewritten relu keeps a source location: the class it computes is the max pool's.
    assert!(text.contains("relu %1 : enc<f32>[1,1,2,2] loc(\"/MaxPool\")"), "{text}");

    // A window made only of padding pools -inf, and relu(-inf) = 0: the rule must not fire.
    let padded = module(
        "%0 = input \"x\" : enc<f32>[1,1,2,2]\n%1 = relu %0 : enc<f32>[1,1,2,2]\n%2 = maxpool{kernel=[1,1], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], ceil_mode=false} %1 : enc<f32>[1,1,4,4]\noutput \"y\" = %2\n",
    );
    let (_, r) = run(&padded, None);
    assert_eq!(applied(&r, "maxpool-of-increasing-map"), 0);

    // A function that is not monotone does not move.
    let gelu: Module = m.to_string().replace("relu %0", "gelu{tanh=false} %0").parse().unwrap();
    let (_, r) = run(&gelu, None);
    assert_eq!(applied(&r, "maxpool-of-increasing-map"), 0);
    assert!(r.kept_input);
}

#[test]
fn nothing_to_gain_returns_the_input_and_level_zero_does_nothing() {
    let m = with_linear("%0 = input \"x\" : enc<f32>[1,4]\n%1 = relu %0 : enc<f32>[1,4]\n", "%1");
    let (out, r) = run(&m, None);
    assert!(r.kept_input);
    assert_eq!(out.to_string(), m.to_string());
    let chain = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = relu %0 : enc<f32>[1,4]\n%2 = tanh %1 : enc<f32>[1,4]\n",
        "%2",
    );
    let (out, r) = optimize(&chain, &Config { level: 0, ..Config::default() }, &CostModel::default()).unwrap();
    assert!(r.kept_input && r.iterations == 0);
    assert_eq!(out.to_string(), chain.to_string());
}

#[test]
fn limits_stop_saturation_and_the_result_stays_valid() {
    let m = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = relu %0 : enc<f32>[1,4]\n%2 = tanh %1 : enc<f32>[1,4]\n%3 = sigmoid %2 : enc<f32>[1,4]\n%4 = erf %3 : enc<f32>[1,4]\n",
        "%4",
    );
    let cfg = Config { limits: Limits { iterations: 1, ..Limits::default() }, ..Config::default() };
    let (out, r) = optimize(&m, &cfg, &CostModel::default()).unwrap();
    out.verify().unwrap();
    assert!(r.stop_reason.contains("IterationLimit"), "{}", r.stop_reason);
    assert!(r.after.pbs < r.before.pbs && r.after.pbs > 4.0, "one iteration composes pairs only: {r:?}");
    let (_, full) = run(&m, None);
    assert_eq!(full.after.pbs, 4.0);
    assert!(full.stop_reason.contains("Saturated"), "{}", full.stop_reason);
}

#[test]
fn fused_modules_print_and_parse_back() {
    let m = with_linear(
        "%0 = input \"x\" : enc<f32>[1,4]\n%1 = sigmoid %0 : enc<f32>[1,4]\n%2 = mul %0, %1 : enc<f32>[1,4]\n",
        "%2",
    );
    let (out, _) = run(&m, None);
    let text = out.to_string();
    let back: Module = text.parse().unwrap();
    back.verify().unwrap();
    assert_eq!(back.to_string(), text);
    assert!(back.values().any(|v| matches!(&back.node(v).op, Op::Unary(Unary::Fused(_)))));
}
