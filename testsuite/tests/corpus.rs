//! The model corpus: every model imports, snapshots its IR, round-trips through the text form, and
//! computes what its exporter and tract compute.

use fhec_ir::{DataMode, Module};
use fhec_testsuite::*;

/// Models tract 0.23 itself cannot run; they are still checked against their exporter's outputs.
/// (tract 0.23 implements neither ai.onnx.ml.Scaler nor TreeEnsembleRegressor, and refuses a binary
/// TreeEnsembleClassifier with one base value for the one class it scores.)
const TRACT_CANNOT_RUN: &[&str] =
    &["logreg_cancer_skl", "logreg_iris_multiclass_skl", "gbr_diabetes_skl", "xgb_cancer"];

/// Outputs tract 0.23 computes differently from onnxruntime, which the exporter's outputs are:
/// the labels of a two-class tree ensemble (its probabilities agree).
const TRACT_DIFFERS: &[(&str, usize)] = &[("tree_cancer_skl", 0)];

/// "max abs error <= 1e-4 relative to the output scale".
const TOLERANCE: f32 = 1e-4;

#[test]
fn imported_ir_snapshots() {
    insta::glob!("../models", "*/model.onnx", |path| {
        let m = fhec::load_model(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        insta::assert_snapshot!(m.to_text(DataMode::Elided));
    });
}

#[test]
fn every_model_round_trips_through_text() {
    for dir in cases() {
        let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let text = m.to_string();
        let parsed: Module = text.parse().unwrap_or_else(|e| panic!("{}: {e}", case_name(&dir)));
        parsed.verify().unwrap_or_else(|e| panic!("{}: {e}", case_name(&dir)));
        assert_eq!(parsed.to_string(), text, "{}: print(parse(print(m))) differs", case_name(&dir));
    }
}

#[test]
fn interpreter_matches_exporter_and_tract() {
    let mut failures = Vec::new();
    let mut checked_with_tract = 0;
    for dir in cases() {
        let name = case_name(&dir);
        let model = dir.join("model.onnx");
        let m = match fhec::load_model(&model) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
        let ours = match fhec::predict(&m, &x) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let want = expected(&dir).unwrap();
        if ours.len() != want.len() {
            failures.push(format!("{name}: {} outputs, exporter has {}", ours.len(), want.len()));
            continue;
        }
        for (k, ((oname, got), want)) in ours.iter().zip(&want).enumerate() {
            match relative_error(got, want) {
                Ok(e) if e <= TOLERANCE => {}
                Ok(e) => failures.push(format!("{name} output {k} ({oname}): relative error {e:e} vs exporter")),
                Err(e) => failures.push(format!("{name} output {k} ({oname}): {e}")),
            }
        }
        let input_shape = m.node(m.inputs()[0]).ty.shape.clone();
        match run_tract(&model, &x, &input_shape) {
            Ok(tract) => {
                checked_with_tract += 1;
                for (k, ((oname, got), t)) in ours.iter().zip(&tract).enumerate() {
                    if TRACT_DIFFERS.contains(&(name.as_str(), k)) {
                        continue;
                    }
                    match relative_error(got, &fhec::Stacked::F32(t.clone())) {
                        Ok(e) if e <= TOLERANCE => {}
                        Ok(e) => failures.push(format!("{name} output {k} ({oname}): relative error {e:e} vs tract")),
                        Err(e) => failures.push(format!("{name} output {k} ({oname}) vs tract: {e}")),
                    }
                }
            }
            Err(e) if TRACT_CANNOT_RUN.contains(&name.as_str()) => eprintln!("{name}: tract cannot run it ({e})"),
            Err(e) => failures.push(format!("{name}: tract failed: {e:#}")),
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    assert!(checked_with_tract >= cases().len() - TRACT_CANNOT_RUN.len());
    assert!(cases().len() >= 10, "the corpus is missing");
}

#[test]
fn invalid_models_snapshot_their_diagnostics() {
    insta::glob!("../invalid", "*.onnx", |path| {
        let err = fhec::load_model(path).expect_err("invalid model must not load");
        // Paths differ between machines: keep the file name only.
        let msg = err.to_string().replace(&path.parent().unwrap().display().to_string(), "invalid");
        insta::assert_snapshot!(msg);
    });
}

#[test]
fn wrong_sample_shape_is_a_clear_error() {
    let m = fhec::load_model(&root().join("models/logreg_cancer_torch/model.onnx")).unwrap();
    let x = fhec::npy::read_samples(&root().join("invalid/wrong_shape.npy")).unwrap();
    let err = fhec::predict(&m, &x).unwrap_err().to_string();
    assert!(err.contains("[4, 29]") && err.contains("[N, 30]"), "{err}");
}

/// A missing value (NaN) or an infinity cannot be encrypted: refused by sample and element, before
/// the float reference, calibration or encryption see it.
#[test]
fn non_finite_inputs_are_refused_by_position() {
    let m = fhec::load_model(&root().join("models/lgbm_iris/model.onnx")).unwrap();
    let mut x = fhec::npy::read_samples(&root().join("models/lgbm_iris/inputs.npy")).unwrap();
    x[[2, 1]] = f32::NAN;
    let err = fhec::predict(&m, &x).unwrap_err().to_string();
    assert!(err.contains("sample 2 element 1 is NaN") && err.contains("impute"), "{err}");
    x[[2, 1]] = f32::INFINITY;
    assert!(fhec::predict(&m, &x).unwrap_err().to_string().contains("is inf"));
}

#[test]
fn float_accuracy_matches_the_exporters() {
    let mut checked = 0;
    for dir in cases() {
        let meta = meta(&dir).unwrap();
        let Some(want) = meta["float_accuracy"].as_f64() else { continue };
        let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
        let outs = fhec::predict(&m, &x).unwrap();
        let labels = fhec::metrics::read_labels(&dir.join("labels.npy")).unwrap();
        let got = match fhec::metrics::score(&outs[0].1, &labels).unwrap() {
            fhec::metrics::Score::Accuracy { correct, total } => correct as f64 / total as f64,
            fhec::metrics::Score::Regression { r2, .. } => r2,
        };
        assert!((got - want).abs() < 1e-3, "{}: {got} vs exporter {want}", case_name(&dir));
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} scored models");
}

/// Corrupted files must give errors, never panics: flip bytes of real models at many positions.
#[test]
fn corrupted_models_never_panic() {
    let mut errors = 0;
    for name in ["mlp_wine", "cnn_digits_maxpool", "logreg_cancer_skl", "op_conv2d_pads", "xgb_cancer"] {
        let bytes = std::fs::read(root().join("models").join(name).join("model.onnx")).unwrap();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut b = bytes.clone();
            let pos = (state >> 33) as usize % b.len();
            b[pos] ^= (state >> 17) as u8 | 1;
            if state.is_multiple_of(7) {
                b.truncate(pos.max(1));
            }
            let r = std::panic::catch_unwind(|| fhec_onnx::load_bytes(&b, name, None));
            let r = r.unwrap_or_else(|_| panic!("{name}: panic on a corruption at byte {pos}"));
            errors += usize::from(r.is_err());
        }
    }
    assert!(errors > 100, "mutations should mostly be rejected, {errors} were");
}

/// Every corpus tree ensemble is summarized for the build report: its trees, branches and leaves as
/// exported, and fewer tables than one per branch and one per leaf; other models have none.
#[test]
fn tree_ensembles_summarize_their_cost() {
    let mut checked = 0;
    for dir in cases() {
        let meta = meta(&dir).unwrap();
        let found = fhec_onnx::tree_ensembles(dir.join("model.onnx")).unwrap();
        let Some(nodes) = meta["tree_nodes"].as_u64() else {
            assert!(found.is_empty(), "{}: {found:?}", case_name(&dir));
            continue;
        };
        let [e] = found.as_slice() else { panic!("{}: {found:?}", case_name(&dir)) };
        assert_eq!(e.trees as u64, meta["trees"].as_u64().unwrap(), "{}", case_name(&dir));
        assert_eq!((e.branches + e.leaves) as u64, nodes, "{}", case_name(&dir));
        assert_eq!(e.leaves as u64, meta["tree_leaves"].as_u64().unwrap(), "{}", case_name(&dir));
        assert!((e.tables() as u64) < nodes, "{}: {} tables for {nodes} nodes", case_name(&dir), e.tables());
        assert_eq!(e.per_tree.len(), e.trees);
        checked += 1;
    }
    assert_eq!(checked, 6, "the corpus has six tree ensembles");
}

/// A graph of 100,000 nodes (a corpus model's node, repeated) is refused before any node is
/// translated, naming its count and the flag that raises the bound.
#[test]
fn a_graph_beyond_the_node_bound_is_refused_before_translation() {
    use prost::Message;
    use tract_onnx::pb;
    let bytes = std::fs::read(fhec_testsuite::root().join("models/op_relu/model.onnx")).unwrap();
    let mut proto = pb::ModelProto::decode(&bytes[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    graph.node = vec![graph.node[0].clone(); 100_000];
    let e = fhec_onnx::load_bytes(&proto.encode_to_vec(), "chain", None).unwrap_err().to_string();
    assert!(e.contains("has 100000 nodes, beyond the limit of 65536") && e.contains("--max-graph-nodes"), "{e}");
}
