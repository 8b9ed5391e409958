//! Lowering to TFHE circuits: bootstrap counts per op, accuracy of the noise-free simulation, table
//! windows, refusals.

use super::*;
use crate::{Calibration, MAX_NARROWING, Prepared, optimize};
use fhec_ir::{Module, Tensor};

/// Deterministic inputs in [-2, 2) shaped like the module's input.
fn cal(xs: &[Tensor]) -> Calibration {
    Calibration::from_samples(xs.to_vec()).unwrap()
}

fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
    let shape = m.node(m.inputs()[0]).ty.shape.clone();
    let len = fhec_ir::numel(&shape);
    let mut state = 12345u64;
    (0..n)
        .map(|_| {
            let v = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect();
            Tensor::from_f32(shape.clone(), v).unwrap()
        })
        .collect()
}

/// Compiles `ir`, checks its bootstrap count and that the noise-free simulation stays within
/// `tolerance` (relative to the output's scale) of the float reference on 64 inputs.
fn check(ir: &str, pbs: usize, tolerance: f32) {
    let m: Module = ir.parse().unwrap();
    m.verify().unwrap();
    let xs = inputs(&m, 64);
    let c = compile(&m, &cal(&xs), &Options::default()).unwrap();
    assert_eq!(c.pbs_count(), pbs, "bootstrap count");
    let (mut worst, mut scale, mut at) = (0f32, 1e-6f32, String::new());
    for x in &xs {
        let want = fhec_interp::run(&m, std::slice::from_ref(x)).unwrap();
        let got = c.simulate(x, Noise::None).unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (g, w) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
                if (g - w).abs() > worst {
                    worst = (g - w).abs();
                    at = format!("input {:?}: {g} instead of {w}", x.to_f32_vec());
                }
                scale = scale.max(w.abs());
            }
        }
    }
    assert!(worst <= tolerance * scale, "max error {:e} of the output scale at {at}", worst / scale);
}

/// `2 relu(x0 + x1) + x0` and `relu(x0 + x1) + x1` (a matrix product keeps the relu on the
/// server, and the outputs' calibrated ranges, which `x` spans, leave room for any relu value)
/// calibrated on samples where `x1` nearly cancels `x0`: the sum stays within
/// +-0.2 while the input box allows +-4.4.
fn narrow_relu() -> (Module, Calibration) {
    let m: Module = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = const #0 : clear<f32>[2,1]\n%2 = matmul %0, %1 : enc<f32>[1,1]\n%3 = relu %2 : enc<f32>[1,1]\n%4 = concat{axis=1} %3, %0 : enc<f32>[1,3]\n%5 = const #1 : clear<f32>[3,2]\n%6 = matmul %4, %5 : enc<f32>[1,2]\noutput \"y\" = %6\ndata #0 = [1.0, 1.0]\ndata #1 = [2.0, 1.0, 1.0, 0.0, 0.0, 1.0]\n"
        .parse()
        .unwrap();
    let xs = (0..64)
        .map(|i| {
            let a = i as f32 / 16.0 - 2.0;
            Tensor::from_f32(vec![1, 2], vec![a, -a + 0.2 * ((i % 7) as f32 / 3.0 - 1.0)]).unwrap()
        })
        .collect::<Vec<_>>();
    (m, cal(&xs))
}

fn relu_at(c: &Compiled, x0: f32, x1: f32) -> f32 {
    c.simulate(&Tensor::from_f32(vec![1, 2], vec![x0, x1]).unwrap(), Noise::None).unwrap()[0].to_f32_vec()[0] - x0
}

#[test]
fn a_calibrated_table_is_finer_and_clips_beyond_its_window() {
    let (m, cal) = narrow_relu();
    let opts = |table_ranges| Options { params: fhec_runtime::ParamSet::P512A, table_ranges, ..Options::default() };
    let bound = compile(&m, &cal, &opts(TableRanges::Bound)).unwrap();
    let narrow = compile(&m, &cal, &opts(TableRanges::Calibrated)).unwrap();
    assert_eq!(bound.narrowing, [1.0]);
    // The window (+-0.2 doubled) would be 11x narrower than the bound: capped.
    assert_eq!(narrow.narrowing, [MAX_NARROWING]);
    // Within the window, the finer table errs less.
    let err = |c: &Compiled| {
        (0..=40)
            .map(|i| i as f32 / 100.0 - 0.2)
            .map(|z| (relu_at(c, 1.0, z - 1.0) - 2.0 * z.max(0.0)).abs())
            .fold(0f32, f32::max)
    };
    assert!(err(&narrow) * 4.0 < err(&bound), "max error {} calibrated, {} bound", err(&narrow), err(&bound));
    // Past the window's upper edge (4.4 / 8 = 0.55), the relu reads its edge: 2 * 0.55, not 2 * 1.0.
    assert!((relu_at(&bound, 1.0, 0.0) - 2.0).abs() < 0.05);
    let clipped = relu_at(&narrow, 1.0, 0.0);
    assert!((clipped - 1.1).abs() < 0.1, "{clipped}");
    // Past the lower edge, 0 as it should be.
    assert!(relu_at(&narrow, -1.0, 0.0).abs() < 0.05);
    // The 32 odd-numbered samples stay within the window the even-numbered ones give.
    assert_eq!(narrow.held_out, (0, 32));
    assert_eq!(bound.held_out, (0, 0));
}

#[test]
fn held_out_samples_beyond_the_even_samples_window_are_counted() {
    let (m, _) = narrow_relu();
    // Even-numbered samples sum to 0, odd-numbered ones to 3: outside the even ones' window
    // (8x narrower than the bound, about -4.4 to 7.3: +-0.7 around 0).
    let xs: Vec<Tensor> = (0..64)
        .map(|i| {
            let a = i as f32 / 16.0 - 2.0;
            Tensor::from_f32(vec![1, 2], vec![a, -a + if i % 2 == 1 { 3.0 } else { 0.0 }]).unwrap()
        })
        .collect();
    let c = compile(&m, &cal(&xs), &Options { params: fhec_runtime::ParamSet::P512A, ..Options::default() }).unwrap();
    assert_eq!(c.held_out, (32, 32));
}

#[test]
fn max_of_two_is_one_table() {
    check(
        "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,1,2]\n%1 = maxpool{kernel=[1,2], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %0 : enc<f32>[1,1,1,1]\n%2 = const #0 : clear<f32>[1]\n%3 = mul %1, %2 : enc<f32>[1,1,1,1]\noutput \"y\" = %3\ndata #0 = [2.0]\n",
        1,
        0.01,
    );
}

/// Three tables for the max, and a twin for each of the two that both later tables and the output read.
#[test]
fn max_pool_2x2_takes_three_tables() {
    check(
        "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,2,2]\n%1 = maxpool{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %0 : enc<f32>[1,1,1,1]\n%2 = const #0 : clear<f32>[1]\n%3 = mul %1, %2 : enc<f32>[1,1,1,1]\noutput \"y\" = %3\ndata #0 = [2.0]\n",
        5,
        0.01,
    );
}

/// The relu commutes with the max: 3 tables per window, then one relu per pooled value.
#[test]
fn max_pool_of_a_layer_then_linear() {
    check(
        "module \"m\"\n%0 = input \"x\" : enc<f32>[1,1,2,4]\n%1 = relu %0 : enc<f32>[1,1,2,4]\n%2 = maxpool{kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false} %1 : enc<f32>[1,1,1,2]\n%3 = reshape{shape=[1,2]} %2 : enc<f32>[1,2]\n%4 = const #0 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\n%6 = relu %5 : enc<f32>[1,1]\noutput \"y\" = %6\ndata #0 = [1.5, -0.5]\n",
        8,
        0.01,
    );
}

/// Every univariate op is one table per element, on the server when a layer reads it. Step
/// functions read their input at the table's resolution: an input within one position of a step
/// may land on the other side, so their error is bounded by one step times the largest weight
/// (1.5 of an output scale of about 5), not by the table resolution.
#[test]
fn every_univariate_op_is_one_table_per_element() {
    let module = |op: &str| {
        format!(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = {op} %0 : enc<f32>[1,4]\n%2 = const #0 : clear<f32>[4,1]\n%3 = matmul %1, %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n"
        )
    };
    for op in [
        "hard_swish",
        "mish",
        "gelu{tanh=false}",
        "gelu{tanh=true}",
        "softsign",
        "celu{alpha=0.7}",
        "sin",
        "cos",
        "relu",
        "tanh",
        "erf",
    ] {
        check(&module(op), 4, 0.01);
    }
    for op in [
        "floor",
        "ceil",
        "round",
        "sign",
        "thresholded_relu{alpha=0.5}",
        "compare{cmp=\"gt\", than=0.25}",
        "compare{cmp=\"ge\", than=0.25}",
        "compare{cmp=\"lt\", than=-0.5}",
        "compare{cmp=\"le\", than=0.0}",
    ] {
        check(&module(op), 4, 0.35);
    }
    // 1/x away from 0: x + 3 in [1, 5).
    check(
        "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #1 : clear<f32>[1]\n%2 = add %0, %1 : enc<f32>[1,4]\n%3 = reciprocal %2 : enc<f32>[1,4]\n%4 = const #0 : clear<f32>[4,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [1.5, -0.5, 0.25, 1.0]\ndata #1 = [3.0]\n",
        4,
        0.01,
    );
}

/// Exact equality of an encrypted value is refused, on the server (a table) and on the client (a
/// decrypted value): both read it only approximately. Equality of steps of it is exact and lowers.
#[test]
fn equality_of_an_encrypted_value_is_refused() {
    let server = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = compare{cmp=\"eq\", than=0.25} %0 : enc<f32>[1,4]\n%2 = const #0 : clear<f32>[4,1]\n%3 = matmul %1, %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
    let client = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #0 : clear<f32>[4,1]\n%2 = matmul %0, %1 : enc<f32>[1,1]\n%3 = compare{cmp=\"eq\", than=0.25} %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
    for (ir, side) in [(server, "an encrypted value"), (client, "a decrypted value")] {
        let m: Module = ir.parse().unwrap();
        let e = compile(&m, &cal(&inputs(&m, 8)), &Options::default()).err().expect("refused").to_string();
        assert!(e.contains(&format!("exact equality of {side}")), "{e}");
    }
    let steps = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = floor %0 : enc<f32>[1,4]\n%2 = compare{cmp=\"eq\", than=1.0} %1 : enc<f32>[1,4]\n%3 = const #0 : clear<f32>[4,1]\n%4 = matmul %2, %3 : enc<f32>[1,1]\noutput \"y\" = %4\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
    let m: Module = steps.parse().unwrap();
    assert!(compile(&m, &cal(&inputs(&m, 8)), &Options::default()).is_ok());
}

/// ONNX Max and Min: against a constant, a clip table; of two encrypted values, `a + relu(b - a)`.
#[test]
fn elementwise_max_min_and_products_of_encrypted_values() {
    let module = |body: &str| {
        format!(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = slice{{axes=[1], starts=[0], ends=[2], steps=[1]}} %0 : enc<f32>[1,2]\n%2 = slice{{axes=[1], starts=[2], ends=[4], steps=[1]}} %0 : enc<f32>[1,2]\n{body}%5 = const #0 : clear<f32>[2,1]\n%6 = matmul %4, %5 : enc<f32>[1,1]\noutput \"y\" = %6\ndata #0 = [1.5, -0.5]\ndata #1 = [0.25, -1.0]\n"
        )
    };
    for op in ["max", "min"] {
        check(&module(&format!("%3 = const #1 : clear<f32>[2]\n%4 = {op} %1, %2 : enc<f32>[1,2]\n")), 2, 0.01);
        check(&module(&format!("%3 = const #1 : clear<f32>[2]\n%4 = {op} %3, %1 : enc<f32>[1,2]\n")), 2, 0.01);
    }
    // Reductions by max and min: one table per element folded in.
    for op in ["reduce_max", "reduce_min"] {
        let ir = format!(
            "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = reshape{{shape=[2,2]}} %0 : enc<f32>[2,2]\n%2 = {op}{{axes=[1], keepdims=false}} %1 : enc<f32>[2]\n%3 = reshape{{shape=[1,2]}} %2 : enc<f32>[1,2]\n%4 = const #0 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [1.5, -0.5]\n"
        );
        check(&ir, 2, 0.01);
    }
    // A product of two encrypted values: two squares, ((a + c)^2 - (a - c)^2) / 4.
    check(&module("%3 = const #1 : clear<f32>[2]\n%4 = mul %1, %2 : enc<f32>[1,2]\n"), 4, 0.01);
}

/// LayerNormalization as the frontend writes it: the square fuses into one table, sqrt and
/// reciprocal into another, and `d * inv` is a product of encrypted values (two tables).
/// Interval analysis lets the variance reach 0, so `1 / sqrt(var + eps)` would span [0.3, 316]:
/// its table saturates near the calibrated variances instead (see `saturated` in `neurons::scalarize`): 2.5% of
/// the output scale off at worst on the 64 samples, against 268% without it.
#[test]
fn layer_normalization_lowers() {
    let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = reduce_mean{axes=[1], keepdims=true} %0 : enc<f32>[1,1]\n%2 = sub %0, %1 : enc<f32>[1,4]\n%3 = mul %2, %2 : enc<f32>[1,4]\n%4 = reduce_mean{axes=[1], keepdims=true} %3 : enc<f32>[1,1]\n%5 = const #1 : clear<f32>[]\n%6 = add %4, %5 : enc<f32>[1,1]\n%7 = sqrt %6 : enc<f32>[1,1]\n%8 = reciprocal %7 : enc<f32>[1,1]\n%9 = mul %2, %8 : enc<f32>[1,4]\n%10 = const #0 : clear<f32>[4,1]\n%11 = matmul %9, %10 : enc<f32>[1,1]\noutput \"y\" = %11\ndata #0 = [1.5, -0.5, 0.25, 1.0]\ndata #1 = [0.00001]\n";
    check(ir, 4 + 1 + 8, 0.03);
}

/// A per-element affine map between two tables (a per-channel batch normalization between a
/// requantization and an activation): the optimizer's maps are the same for every element, so
/// it leaves two tables per element; composing them after scalarization leaves one.
#[test]
fn tables_with_a_per_element_map_between_them_compose() {
    let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = relu %0 : enc<f32>[1,2]\n%2 = const #0 : clear<f32>[2]\n%3 = mul %1, %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2]\n%5 = add %3, %4 : enc<f32>[1,2]\n%6 = sigmoid %5 : enc<f32>[1,2]\n%7 = const #2 : clear<f32>[2,1]\n%8 = matmul %6, %7 : enc<f32>[1,1]\noutput \"y\" = %8\ndata #0 = [2.0, -0.5]\ndata #1 = [-1.0, 0.25]\ndata #2 = [1.5, -1.0]\n";
    check(ir, 2, 0.01);
    let m: Module = ir.parse().unwrap();
    let naive = optimize::Config { level: 0, ..optimize::Config::default() };
    let p = Prepared::new(&m, &cal(&inputs(&m, 16)), &naive).unwrap();
    assert_eq!(p.tfhe(&Options::default()).unwrap().pbs_count(), 4, "uncomposed at --opt-level 0");
}

/// `relu(avgpool(relu(x)))`-like: a relu of a sum of relus cannot see a negative input, and a
/// relu of `-relu(x) - 1` never a positive one. Both become leveled (the second a constant),
/// the results identical to the naive lowering's, which keeps their tables.
#[test]
fn tables_affine_over_their_bound_become_leveled() {
    let ir = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,2]\n%1 = relu %0 : enc<f32>[1,2]\n%2 = const #0 : clear<f32>[2,2]\n%3 = matmul %1, %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2]\n%5 = add %3, %4 : enc<f32>[1,2]\n%6 = relu %5 : enc<f32>[1,2]\n%7 = const #2 : clear<f32>[2,1]\n%8 = matmul %6, %7 : enc<f32>[1,1]\noutput \"y\" = %8\ndata #0 = [0.5, -1.0, 0.5, 0.0]\ndata #1 = [0.0, -1.0]\ndata #2 = [1.5, -2.0]\n";
    check(ir, 2, 0.01);
    let m: Module = ir.parse().unwrap();
    let xs = inputs(&m, 16);
    let opt = Prepared::new(&m, &cal(&xs), &optimize::Config::default()).unwrap();
    assert_eq!(opt.optimization.elided, 2);
    let naive = Prepared::new(&m, &cal(&xs), &optimize::Config { level: 0, ..optimize::Config::default() }).unwrap();
    assert_eq!(naive.optimization.elided, 0);
    assert_eq!(naive.tfhe(&Options::default()).unwrap().pbs_count(), 4, "kept at --opt-level 0");
    // The float semantics of the scalarized circuits agree, on samples and outside them.
    for x in xs.iter().chain(&inputs(&m, 40)[16..]) {
        let v: Vec<f64> = x.to_f32_vec().into_iter().map(f64::from).collect();
        let (a, b) = (opt.neurons.eval(&v), naive.neurons.eval(&v));
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-9), "{a:?} vs {b:?}");
    }
}

#[test]
fn hidden_relu_layer() {
    check(
        "module \"m\"\n%0 = input \"x\" : enc<f32>[1,3]\n%1 = const #0 : clear<f32>[3,2]\n%2 = matmul %0, %1 : enc<f32>[1,2]\n%3 = relu %2 : enc<f32>[1,2]\n%4 = const #1 : clear<f32>[2,1]\n%5 = matmul %3, %4 : enc<f32>[1,1]\noutput \"y\" = %5\ndata #0 = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1]\ndata #1 = [1.5, -0.5]\n",
        2,
        0.01,
    );
}
