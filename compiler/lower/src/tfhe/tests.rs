//! Lowering to TFHE circuits: table windows and refusals. Bootstrap counts per op and the accuracy
//! of the noise-free simulation are filetests (`testsuite/filetests/scalarize`).

use super::*;
use crate::{Calibration, MAX_NARROWING};
use fhec_ir::{Module, Tensor};

fn cal(xs: &[Tensor]) -> Calibration {
    Calibration::from_samples(xs.to_vec()).unwrap()
}

/// Deterministic inputs in [-2, 2] shaped like the module's input.
fn inputs(m: &Module, n: usize) -> Vec<Tensor> {
    let shape = m.node(m.inputs()[0]).ty.shape.clone();
    let x = |i: usize| (0..fhec_ir::numel(&shape)).map(|j| ((i * 7 + j * 3) % 17) as f32 / 4.0 - 2.0).collect();
    (0..n).map(|i| Tensor::from_f32(shape.clone(), x(i)).unwrap()).collect()
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

/// Exact equality of an encrypted value is refused, on the server (a table) and on the client (a
/// decrypted value): both read it only approximately. (Equality of steps of it is exact and lowers:
/// `filetests/scalarize/equality_of_steps_is_exact_and_lowers.ir`.)
#[test]
fn equality_of_an_encrypted_value_is_refused() {
    let server = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = compare{cmp=\"eq\", than=0.25} %0 : enc<f32>[1,4]\n%2 = const #0 : clear<f32>[4,1]\n%3 = matmul %1, %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
    let client = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #0 : clear<f32>[4,1]\n%2 = matmul %0, %1 : enc<f32>[1,1]\n%3 = compare{cmp=\"eq\", than=0.25} %2 : enc<f32>[1,1]\noutput \"y\" = %3\ndata #0 = [1.5, -0.5, 0.25, 1.0]\n";
    for (ir, side) in [(server, "an encrypted value"), (client, "a decrypted value")] {
        let m: Module = ir.parse().unwrap();
        let e = compile(&m, &cal(&inputs(&m, 8)), &Options::default()).err().expect("refused").to_string();
        assert!(e.contains(&format!("exact equality of {side}")), "{e}");
    }
}

/// A relu layer read by three outputs through coarse integer weights (at most 2): rounding scales
/// each relu's value by up to 1.5x, which shifts every output on average; bias correction takes
/// the mean shift back on the calibration samples (and the error left is smaller).
#[test]
fn bias_correction_takes_back_the_mean_shift_of_rounded_weights() {
    let m: Module = "module \"m\"\n%0 = input \"x\" : enc<f32>[1,4]\n%1 = const #0 : clear<f32>[4,6]\n%2 = matmul %0, %1 : enc<f32>[1,6]\n%3 = relu %2 : enc<f32>[1,6]\n%4 = const #1 : clear<f32>[6,3]\n%5 = matmul %3, %4 : enc<f32>[1,3]\noutput \"y\" = %5\ndata #0 = [0.9, -0.4, 0.3, 0.7, -0.2, 0.5, 0.1, 0.8, -0.6, 0.4, 0.2, -0.3, 0.5, 0.3, 0.9, -0.1, 0.6, 0.2, -0.7, 0.4, 0.1, 0.5, -0.5, 0.8]\ndata #1 = [1.0, 0.37, -0.62, 0.45, 1.0, 0.28, -0.71, 0.33, 1.0, 1.0, -0.41, 0.58, 0.36, 1.0, -0.27, 0.52, 0.64, 1.0]\n"
        .parse()
        .unwrap();
    let xs = inputs(&m, 64);
    let cal = cal(&xs);
    let errors = |bias_correction: bool| {
        let opts = Options {
            params: fhec_runtime::ParamSet::P1024,
            output_weight_max: 2.0,
            bias_correction,
            ..Options::default()
        };
        let c = compile(&m, &cal, &opts).unwrap();
        let mut e = Vec::new();
        for x in &xs {
            let want = fhec_interp::run(&m, std::slice::from_ref(x)).unwrap()[0].to_f32_vec();
            let got = c.simulate(x, Noise::None).unwrap()[0].to_f32_vec();
            e.push(want.iter().zip(&got).map(|(w, g)| f64::from(g - w)).collect::<Vec<_>>());
        }
        let mean: Vec<f64> = (0..3).map(|k| e.iter().map(|v| v[k]).sum::<f64>() / e.len() as f64).collect();
        let rms = (e.iter().flatten().map(|d| d * d).sum::<f64>() / (3 * e.len()) as f64).sqrt();
        (mean.iter().map(|m| m.abs()).fold(0.0, f64::max), rms)
    };
    let (shift, rms) = errors(false);
    let (corrected_shift, corrected_rms) = errors(true);
    assert!(corrected_shift * 5.0 < shift, "largest mean shift {corrected_shift} corrected, {shift} not");
    assert!(corrected_rms < rms, "rms error {corrected_rms} corrected, {rms} not");
}
