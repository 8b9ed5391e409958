//! The FHE circuit in cleartext simulation: every trained corpus model compiles (parameter set and
//! precision chosen by the search, as `fhec build` does), and its simulated accuracy (with the
//! parameter set's noise model) stays within the budget of the float model.

use fhec_ir::Tensor;
use fhec_lower::Calibration;
use fhec_lower::tfhe::{Options, Search, TableRanges, choose, compile};
use fhec_runtime::Noise;
use fhec_testsuite::*;

/// Models that do not meet the accuracy budget yet under the noise model, with the loss they may not
/// exceed (so that a regression still fails) and why.
const KNOWN_GAPS: &[(&str, f64, &str)] = &[];

/// The corpus's compile-time bound, in the work a build does rather than wall time (which the tests
/// do not assert): scalarization grows with affine terms and the precision search with bootstraps,
/// both estimated before lowering (`fhec_lower::size`). The largest corpus builds are the budget:
/// `cnn_digits_qop` at 1,408 estimated bootstraps and `cnn_digits` at 94,272 terms (24.7 s and 10.8 s
/// for `fhec build` in release on the 2-core Xeon). A corpus model beyond it fails this test, so
/// the budget is raised knowingly; a model beyond the machine's bounds is refused in one line
/// (`--max-bootstraps`, `--max-compile-memory-mb`).
const BUILD_BUDGET: (usize, usize) = (1536, 131_072);

#[test]
fn trained_models_keep_their_accuracy_in_simulation() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for t in trained() {
        let (name, xs) = (&t.name, &t.samples);
        let choice =
            match choose(&t.module, &Calibration::from_samples(xs.clone()).unwrap(), &Search::default(), |_| ()) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
        let compiled = &choice.compiled;
        let size = choice.optimization.size;
        report.push(format!("{name:28} estimated {size}"));
        if size.bootstraps > BUILD_BUDGET.0 || size.terms > BUILD_BUDGET.1 {
            failures.push(format!(
                "{name}: {} bootstraps and {} terms, beyond the build budget {BUILD_BUDGET:?}",
                size.bootstraps, size.terms
            ));
        }
        let exact: Vec<Vec<Tensor>> = xs.iter().map(|x| compiled.simulate(x, Noise::None).unwrap()).collect();
        let mut rng = Noise::rng(7);
        let noisy: Vec<Vec<Tensor>> =
            xs.iter().map(|x| compiled.simulate(x, Noise::Gaussian(&mut rng)).unwrap()).collect();
        let (af, ae, an) = (accuracy(&t.float, &t.labels), accuracy(&exact, &t.labels), accuracy(&noisy, &t.labels));
        report.push(format!(
            "{name:28} pbs {:5}  {:52} w{} o{:<3} fidelity {:6.2}%  float {af:.4}  sim {ae:.4}  sim+noise {an:.4}",
            compiled.pbs_count(),
            choice.chosen.params.name(),
            choice.chosen.weight_bits,
            choice.chosen.output_weight_max,
            choice.fidelity
        ));
        // A tree ensemble takes fewer bootstraps than one per node and one per leaf.
        if let Some(nodes) = meta(&t.dir).unwrap()["tree_nodes"].as_u64() {
            let pbs = compiled.pbs_count() as u64;
            report.push(format!("{name:28} {pbs} bootstraps, {nodes} for one per node and one per leaf"));
            if pbs >= nodes {
                failures.push(format!("{name}: {pbs} bootstraps for {nodes} tree nodes"));
            }
        }
        let budget = KNOWN_GAPS.iter().find(|g| g.0 == t.name).map_or(t.budget(), |g| g.1);
        if af - an > budget + 1e-9 {
            failures.push(format!("{name}: simulated accuracy {an:.4} vs float {af:.4}"));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A tree ensemble's decisions run on the client by default: exact (the noise-free simulation keeps
/// the float model's accuracy) and free (only the block tables bootstrap); with the thresholds kept
/// on the server (`--private-thresholds`), each distinct decision is a bootstrap.
#[test]
fn tree_decisions_on_the_client_are_exact_and_cost_no_bootstrap() {
    use fhec_lower::{Prepared, optimize::Config};
    let t = Trained::load(root().join("models/xgb_cancer"));
    let cal = Calibration::from_samples(t.samples.clone()).unwrap();
    let summary = &fhec_onnx::tree_ensembles(t.dir.join("model.onnx")).unwrap()[0];
    let build = |client_decisions| {
        Prepared::new(&t.module, &cal, &Config { client_decisions, ..Config::default() })
            .unwrap()
            .tfhe(&Options::default())
            .unwrap()
    };
    let (client, server) = (build(true), build(false));
    assert!(client.preprocess.as_ref().unwrap().to_string().contains("compare"));
    assert_eq!(client.pbs_count(), summary.tables() - summary.decisions);
    // Every decision is one more bootstrap on the server (the optimizer may add a few tables there).
    assert!(server.pbs_count() >= client.pbs_count() + summary.decisions, "{}", server.pbs_count());
    let exact: Vec<Vec<Tensor>> = t.samples.iter().map(|x| client.simulate(x, Noise::None).unwrap()).collect();
    assert_eq!(accuracy(&exact, &t.labels), accuracy(&t.float, &t.labels));
    // Calibrated on 2 samples, most decisions never flip there; their bits still take 0 and 1 (the
    // client computes them for any input) rather than being clamped to what those samples gave.
    let few = Calibration::from_samples(t.samples[..2].to_vec()).unwrap();
    let c = Prepared::new(&t.module, &few, &Config::default()).unwrap().tfhe(&Options::default()).unwrap();
    assert!(c.inputs.iter().all(|i| i.lo <= 0.0 && i.hi >= 1.0), "{:?}", &c.inputs[..3]);
}

/// Op models the FHE lowering does not support yet, with the reason.
const NOT_LOWERED: &[(&str, &str)] = &[
    ("op_matmul_batched", "batched constant matmul operand"),
    ("op_matmul_const_left", "constant left operand of a 3-D matmul"),
];

/// Models whose output goes through comparisons (steps), and why they get the looser bound below.
const STEPS: &[(&str, &str)] = &[
    ("op_where_greater", "x > 0.25 picks A or B"),
    ("op_logic_and_or_not", "comparisons of x with 0 and 1"),
    ("op_less_two_encrypted", "a comparison of two encrypted values"),
    ("op_xor_two_encrypted", "Xor of comparisons of different elements"),
];

/// Single-op models: the noise-free simulation tracks the float reference within 1% of the output's
/// scale (table resolution and 6-bit weights), and every op model compiles but the listed ones. Models
/// with comparisons (`STEPS`): within 10% (see the bound in the test).
#[test]
fn op_models_track_the_float_reference() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for dir in cases().into_iter().filter(|d| case_name(d).starts_with("op_")) {
        let name = case_name(&dir);
        let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let xs = samples(&dir, &m);
        let compiled = match compile(&m, &Calibration::from_samples(xs.clone()).unwrap(), &Options::default()) {
            Ok(c) => c,
            Err(e) => {
                if !NOT_LOWERED.iter().any(|(n, _)| *n == name) {
                    failures.push(format!("{name}: {e}"));
                }
                continue;
            }
        };
        let (mut scale, mut errors) = (1e-6f32, Vec::new());
        for x in &xs {
            let want = fhec_interp::run(&m, std::slice::from_ref(x)).unwrap();
            let got = compiled.simulate(x, Noise::None).unwrap();
            let mut sample = 0f32;
            for (g, w) in got.iter().zip(&want) {
                for (g, w) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
                    sample = sample.max((g - w).abs());
                    scale = scale.max(w.abs());
                }
            }
            errors.push(sample);
        }
        let worst = errors.iter().copied().fold(0f32, f32::max);
        let off = errors.iter().filter(|&&e| e > 0.01 * scale).count();
        report.push(format!(
            "{name:36} pbs {:4} max error {:.2e}, samples off by over 1%: {off}/{}",
            compiled.pbs_count(),
            worst / scale,
            errors.len()
        ));
        match STEPS.iter().find(|(n, _)| *n == name) {
            // A comparison's output is exactly 0 or 1, so the weights after it meet no rounding slack:
            // each of the n terms is off by up to half a step of its quantized weight (6 bits: ~1.6% of
            // the largest), and an input within a table position of the threshold may read the other
            // side. Measured 3-6.4% for these models.
            Some((_, why)) if worst > 0.1 * scale => failures.push(format!(
                "{name} ({why}): {off}/{} samples off by over 1%, worst {:.2e} of the output scale",
                errors.len(),
                worst / scale
            )),
            None if worst > 0.01 * scale => {
                failures.push(format!("{name}: error {:.2e} of the output scale", worst / scale))
            }
            _ => {}
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A pre-quantized model (onnxruntime's static QDQ quantization of the wine MLP) compiles without
/// calibration samples: the input ranges are its own input quantizer's, the search scores samples
/// drawn from them (scored in quantization steps), and the client applies that quantizer before
/// encrypting. On the test set, compared with onnxruntime's own outputs: the same classes, and the
/// noise-free integer circuit mostly within one quantization step of them.
///
/// Not within one step everywhere (the goal): every table reads an accumulator whose interval
/// spans several hundred levels of the quantizer after it, so a 2048-position table (the largest set
/// this machine takes) resolves a level with a few positions, and rounding moves values by a level
/// or two per layer (bootstrap noise, a few positions, moves them further). The bounds below are the
/// measured ones (94.8% within one step, at most 3 steps), so a regression fails.
#[test]
fn a_pre_quantized_model_compiles_without_calibration_and_tracks_onnxruntime() {
    let dir = root().join("models/mlp_wine_qdq");
    let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
    let cal = Calibration::from_input_quantizer(&m, fhec_lower::SYNTHETIC_SAMPLES, fhec_lower::SYNTHETIC_SEED).unwrap();
    assert!(
        matches!(cal.origin(), fhec_lower::Origin::InputQuantizer { at } if at.contains("QuantizeLinear")),
        "{:?}",
        cal.origin()
    );
    let choice = choose(&m, &cal, &Search::default(), |_| ()).unwrap();
    assert!(choice.steps.is_some(), "the output is quantized: its distance in steps is reported");
    // The input quantizer runs on the client: 32 + 16 tables, not 13 more for the input.
    assert!(choice.compiled.preprocess.is_some());
    assert_eq!(choice.compiled.pbs_count(), 48);
    let xs = samples(&dir, &m);
    let ort = as_f32(&expected(&dir).unwrap()[0]);
    let labels = fhec::metrics::read_labels(&dir.join("labels.npy")).unwrap();
    let got: Vec<Vec<Tensor>> = xs.iter().map(|x| choice.compiled.simulate(x, Noise::None).unwrap()).collect();
    let ort_rows: Vec<Vec<Tensor>> = ort
        .outer_iter()
        .map(|r| vec![Tensor::from_f32(vec![1, r.len()], r.iter().copied().collect()).unwrap()])
        .collect();
    assert_eq!(accuracy(&got, &labels), accuracy(&ort_rows, &labels), "accuracy of the circuit and of onnxruntime");
    // onnxruntime's outputs are dequantized levels: the step is their smallest gap.
    let mut levels: Vec<f32> = ort.iter().copied().collect();
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    let step = levels.windows(2).map(|p| p[1] - p[0]).fold(f32::INFINITY, f32::min);
    let (mut within, mut worst) = (0, 0f32);
    for (g, w) in got.iter().zip(ort.outer_iter()) {
        for (g, w) in g[0].to_f32_vec().into_iter().zip(w.iter()) {
            let d = (g - w).abs() / step;
            within += usize::from(d <= 1.01);
            worst = worst.max(d);
        }
    }
    let share = within as f64 / ort.len() as f64;
    eprintln!(
        "mlp_wine_qdq without calibration: {:.1}% of outputs within one step of onnxruntime, at most {worst:.1} steps",
        100.0 * share
    );
    assert!(share >= 0.94 && worst <= 3.5, "{:.1}% within one step, worst {worst} steps", 100.0 * share);
}

/// Tables spread over their calibrated inputs (doubled) instead of the interval bound resolve the
/// reference-shape CNN's activations several times more finely: at the same parameter set and
/// weights, the noisy circuit's logits stay closer to the float model's, and it agrees with the
/// float model's class more often.
#[test]
fn calibrated_table_ranges_beat_the_interval_bound() {
    let dir = root().join("models/cnn_digits_nopad");
    let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
    let xs = samples(&dir, &m);
    let cal = Calibration::from_samples(xs.clone()).unwrap();
    let float: Vec<Vec<f32>> =
        xs.iter().map(|x| fhec_interp::run(&m, std::slice::from_ref(x)).unwrap()[0].to_f32_vec()).collect();
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let measure = |table_ranges| {
        let options = Options {
            params: fhec_runtime::ParamSet::P1024,
            weight_bits: 6,
            output_weight_max: 32.0,
            table_ranges,
            ..Options::default()
        };
        let c = compile(&m, &cal, &options).unwrap();
        let mut rng = Noise::rng(7);
        let (mut err2, mut agree, mut n) = (0f64, 0usize, 0usize);
        for _ in 0..3 {
            for (x, f) in xs.iter().zip(&float) {
                let got = c.simulate(x, Noise::Gaussian(&mut rng)).unwrap()[0].to_f32_vec();
                err2 += got.iter().zip(f).map(|(g, w)| f64::from(g - w).powi(2)).sum::<f64>();
                agree += usize::from(argmax(&got) == argmax(f));
                n += 1;
            }
        }
        let narrowed = c.narrowing.iter().filter(|&&g| g > 1.0).count();
        ((err2 / (n * float[0].len()) as f64).sqrt(), agree as f64 / n as f64, narrowed)
    };
    let (rms_cal, agree_cal, narrowed_cal) = measure(TableRanges::Calibrated);
    let (rms_bound, agree_bound, narrowed_bound) = measure(TableRanges::Bound);
    eprintln!(
        "calibrated: rms {rms_cal:.4}, agreement {agree_cal:.4}, {narrowed_cal} tables narrowed; bound: rms {rms_bound:.4}, agreement {agree_bound:.4}"
    );
    assert_eq!(narrowed_bound, 0);
    assert!(narrowed_cal > 200, "{narrowed_cal} of 352 tables narrowed");
    assert!(rms_cal < 0.6 * rms_bound, "logit error: calibrated {rms_cal}, bound {rms_bound}");
    assert!(agree_cal > agree_bound, "class agreement: calibrated {agree_cal}, bound {agree_bound}");
}

/// The op models again with a static batch of 2 (the graph's data input and outputs declared with a
/// leading 2 instead of 1): each compiles to a circuit for both samples that tracks the float
/// reference as the batch-1 circuit does (same bounds), or is refused with its reason, by the
/// frontend or the lowering, before any circuit is made. Never a circuit for one sample of two.
#[test]
fn op_models_with_a_static_batch_of_two() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for dir in cases().into_iter().filter(|d| case_name(d).starts_with("op_")) {
        let name = case_name(&dir);
        let mut proto = tract_onnx::pb::ModelProto::decode(&*std::fs::read(dir.join("model.onnx")).unwrap()).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let constant: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        let mut batched = 0;
        for v in graph.input.iter_mut().filter(|v| !constant.contains(&v.name)).chain(graph.output.iter_mut()) {
            use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto::Value as Ty};
            let Some(Ty::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else { continue };
            if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
                && matches!(d.value, Some(Value::DimValue(1)))
            {
                d.value = Some(Value::DimValue(2));
                batched += 1;
            }
        }
        graph.value_info.clear();
        if batched == 0 {
            report.push(format!("{name:36} no leading batch of 1"));
            continue;
        }
        let path = tmp.path().join(format!("{name}.onnx"));
        std::fs::write(&path, proto.encode_to_vec()).unwrap();
        let m = match fhec::load_model(&path) {
            Ok(m) => m,
            Err(e) => {
                report
                    .push(format!("{name:36} refused by the frontend: {}", e.to_string().lines().next().unwrap_or("")));
                continue;
            }
        };
        let one = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let xs: Vec<Tensor> = samples(&dir, &one)
            .chunks_exact(2)
            .map(|p| Tensor::from_f32(shape.clone(), p.iter().flat_map(|t| t.to_f32_vec()).collect()).unwrap())
            .collect();
        let compiled = match compile(&m, &Calibration::from_samples(xs.clone()).unwrap(), &Options::default()) {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                if e.contains("internal") || NOT_LOWERED.iter().all(|(n, _)| *n != name) {
                    failures.push(format!("{name}: batch 2 refused, batch 1 compiles: {e}"));
                }
                report.push(format!("{name:36} refused by the lowering: {e}"));
                continue;
            }
        };
        let (mut scale, mut worst) = (1e-6f32, 0f32);
        for x in &xs {
            let want = fhec_interp::run(&m, std::slice::from_ref(x)).unwrap();
            let got = compiled.simulate(x, Noise::None).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.shape(), w.shape(), "{name}: output shapes");
                for (g, w) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
                    worst = worst.max((g - w).abs());
                    scale = scale.max(w.abs());
                }
            }
        }
        let bound = if STEPS.iter().any(|(n, _)| *n == name) { 0.1 } else { 0.01 };
        report.push(format!("{name:36} pbs {:4} max error {:.2e}", compiled.pbs_count(), worst / scale));
        if worst > bound * scale {
            failures.push(format!("{name}: batch 2 error {:.2e} of the output scale", worst / scale));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
