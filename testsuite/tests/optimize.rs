//! The e-graph optimizer on the corpus: for every model, the server part before and after
//! optimization (insta snapshots), bit-identical float results, never more tables, and every rule
//! firing on some corpus model. The table of tables per model (`--opt-level 0` vs default) is printed.

use fhec_ir::{DataMode, Module, Tensor};
use fhec_lower::{Calibration, Prepared, optimize};
use fhec_testsuite::*;
use std::collections::BTreeMap;

fn samples(dir: &std::path::Path, m: &Module, n: usize) -> Vec<Tensor> {
    let x = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
    let shape = m.node(m.inputs()[0]).ty.shape.clone();
    x.outer_iter().take(n).map(|s| Tensor::from_f32(shape.clone(), s.iter().copied().collect()).unwrap()).collect()
}

/// Models whose server part the lowering does not support with or without the optimizer (see
/// `tests/simulate.rs`).
const NOT_LOWERED: &[&str] = &["op_matmul_batched", "op_matmul_const_left"];

#[test]
fn optimized_server_parts_snapshot_and_compute_the_same() {
    let mut fired: BTreeMap<&str, Vec<String>> = optimize::rule_names().into_iter().map(|n| (n, Vec::new())).collect();
    let mut table = Vec::new();
    insta::glob!("../models", "*/model.onnx", |path| {
        let dir = path.parent().unwrap();
        let name = case_name(dir);
        let m = fhec::load_model(path).unwrap();
        let xs = samples(dir, &m, 32);
        let p = match Prepared::new(&m, &Calibration::from_samples(xs.clone()).unwrap(), &optimize::Config::default()) {
            Ok(p) => p,
            Err(e) => {
                assert!(NOT_LOWERED.contains(&name.as_str()), "{name}: {e}");
                return;
            }
        };
        let o = &p.optimization;
        for (rule, n) in &o.report.applied {
            if *n > 0 {
                fired.get_mut(rule).unwrap().push(name.clone());
            }
        }
        // Bit-identical float results of the server part, on what the client's pre-processing
        // (if any) sends it.
        for x in &p.preprocessed(&xs).unwrap() {
            let want = fhec_interp::run(&o.before, std::slice::from_ref(x)).unwrap();
            let got = fhec_interp::run(&o.after, std::slice::from_ref(x)).unwrap();
            for (w, g) in want.iter().zip(&got) {
                let same = w.to_f32_vec().iter().zip(g.to_f32_vec()).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}: optimized server part computes other values");
            }
        }
        let before =
            if o.report.before.unsupported > 0 { "not lowerable".to_string() } else { o.pbs_before().to_string() };
        assert!(
            o.report.before.unsupported > 0 || o.pbs_after() <= o.pbs_before(),
            "{name}: more tables after optimization"
        );
        if o.pbs_before() != o.pbs_after() || o.report.before.unsupported > 0 {
            table.push(format!("{name:28} {before:>14} -> {:5} PBS", o.pbs_after()));
        }
        let rules: Vec<String> =
            o.report.applied.iter().filter(|r| r.1 > 0).map(|(n, c)| format!("{n} x{c}")).collect();
        let text = if o.report.kept_input && o.pbs_after() == o.pbs_before() {
            format!("tables: {before} (unchanged)\n\n{}", o.after.to_text(DataMode::Elided))
        } else if o.report.kept_input {
            format!(
                "tables: {before} -> {} (the e-graph kept the module; after scalarization {} made leveled, {} composed)\n\n{}",
                o.pbs_after(),
                o.elided,
                o.composed,
                o.after.to_text(DataMode::Elided)
            )
        } else {
            format!(
                "tables: {before} -> {}\nrules: {}\n\nbefore:\n{}\nafter:\n{}",
                o.pbs_after(),
                rules.join(", "),
                o.before.to_text(DataMode::Elided),
                o.after.to_text(DataMode::Elided)
            )
        };
        insta::assert_snapshot!(text);
    });
    eprintln!("tables per sample, --opt-level 0 -> default (models where they differ):\n{}", table.join("\n"));
    for (rule, models) in &fired {
        assert!(!models.is_empty(), "rule {rule} fires on no corpus model");
        eprintln!("{rule}: {}", models.join(", "));
    }
}

/// The gains the optimizer must keep on the corpus.
#[test]
fn corpus_gains() {
    let gain = |name: &str| {
        let dir = root().join("models").join(name);
        let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let p =
            Prepared::new(&m, &Calibration::from_samples(samples(&dir, &m, 32)).unwrap(), &optimize::Config::default())
                .unwrap();
        let o = &p.optimization;
        (o.report.before.unsupported, o.pbs_before(), o.pbs_after())
    };
    // relu before the 2x2 max pool: 512 relus + 384 maxes -> 384 maxes + 128 relus; one relu of
    // the second layer cannot see a positive input (a constant).
    assert_eq!(gain("cnn_digits_maxpool"), (0, 1152, 767));
    // SiLU and decomposed GELU: an activation table and a two-table product per hidden unit
    // without fusion, one table with it.
    assert_eq!(gain("mlp_wine_silu"), (0, 48, 16));
    assert_eq!(gain("mlp_wine_gelu"), (0, 48, 16));
    // onnxruntime's QDQ quantization: round and clip tables per quantizer; fused with the
    // dequantizer and the activation between them, one table per value. The input quantizer runs on
    // the client.
    assert_eq!(gain("mlp_wine_qdq"), (0, 144, 48));
    // onnxruntime's QOperator CNN: per-channel batch normalization in float between each conv's
    // requantization and its ReLU; the requantization table composes into the ReLU's (512 fewer).
    assert_eq!(gain("cnn_digits_qop"), (0, 2560, 896));
    // The naive lowering is already one table per activation here.
    assert_eq!(gain("mlp_wine"), (0, 48, 48));
    // One relu of the first layer cannot see a positive input anywhere in the box the 32
    // calibration samples give: a constant, not a table.
    assert_eq!(gain("cnn_digits"), (0, 768, 767));
    // scikit-learn's MLP has hidden units that no input in the box can activate (dead relus, 5 of
    // 16): their tables go.
    assert_eq!(gain("mlp_iris_skl"), (0, 16, 11));
}
