//! The CKKS lowering in cleartext simulation: every trained corpus model lowers to a plan of affine
//! maps and polynomials (fit and degree chosen by measured accuracy among the e-graph's candidates,
//! as `fhec build --scheme ckks` does), and its simulated accuracy stays within the budget of the float model.

use fhec_ir::Tensor;
use fhec_lower::Calibration;
use fhec_lower::ckks;
use fhec_testsuite::*;

#[test]
fn trained_models_keep_their_accuracy_under_ckks_polynomials() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for t in trained() {
        let name = &t.name;
        let choice = match ckks::choose(
            &t.module,
            &Calibration::from_samples(t.samples.clone()).unwrap(),
            &ckks::Search::default(),
        ) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut reads = fhec_lower::ckks_plan::Reads::default();
        let sim: Vec<Vec<Tensor>> =
            t.samples.iter().map(|x| choice.compiled.simulate(x, &mut reads).unwrap()).collect();
        let (af, asim) = (accuracy(&t.float, &t.labels), accuracy(&sim, &t.labels));
        let cost = choice.compiled.plan.cost();
        report.push(format!(
            "{name:28} nodes {:5} degrees {:?} ring 2^{} depth {:3} const-products {:6} fidelity {:6.2}% simulated {} float {af:.4} ckks-sim {asim:.4} outside {}/{}",
            choice.compiled.plan.nodes.len(),
            choice.degrees(),
            choice.compiled.plan.ring().map_or(0, |r| r.log_n),
            cost.depth,
            cost.scalar_ops,
            choice.fidelity,
            choice.trials.iter().filter(|t| t.fidelity.is_some()).count(),
            reads.outside,
            reads.total
        ));
        // A tree ensemble's steps become polynomials; where the search finds none within the budget
        // it says so, `--scheme auto` keeps TFHE, and `--scheme ckks` refuses (the test below).
        let trees = meta(&t.dir).unwrap()["tree_nodes"].is_u64();
        match t.labels {
            _ if trees && !choice.within_budget => {}
            fhec::metrics::Labels::Classes(_) if af - asim > t.budget() + 1e-9 => {
                failures.push(format!("{name}: simulated CKKS accuracy {asim:.4} vs float {af:.4}"))
            }
            // A regressor's budget is the error relative to the float outputs' spread
            // (`--error-budget`), not points of R²: 5% of the spread may cost a weak model
            // (R² 0.38) more than a point.
            fhec::metrics::Labels::Targets(_) if !choice.within_budget => {
                failures.push(format!("{name}: {:.2}% fidelity, {:.2}% needed", choice.fidelity, choice.required))
            }
            _ => {}
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Degrees chosen per layer never cost more than one degree for the whole model, within the same
/// budget, and cost less where layers differ in how much precision they need.
#[test]
fn a_degree_per_layer_is_cheaper_than_one_for_the_model() {
    let mut cheaper = Vec::new();
    for name in ["mlp_wine", "cnn_digits_nopad", "cnn_digits_qop"] {
        let t = Trained::load(root().join("models").join(name));
        let cal = Calibration::from_samples(t.samples).unwrap();
        let cost = |per_layer: bool| {
            let c = ckks::choose(&t.module, &cal, &ckks::Search { per_layer, ..ckks::Search::default() }).unwrap();
            assert!(c.within_budget, "{name}: {:.2}%", c.fidelity);
            let plan = &c.compiled.plan;
            (plan.estimated_batch_ms(plan.ring().unwrap(), 1), c.degrees())
        };
        let (per_layer, uniform) = (cost(true), cost(false));
        eprintln!(
            "{name:20} per layer {:?} {:.0} ms, one degree {:?} {:.0} ms",
            per_layer.1, per_layer.0, uniform.1, uniform.0
        );
        assert!(per_layer.0 <= uniform.0, "{name}: {per_layer:?} vs {uniform:?}");
        if per_layer.0 < uniform.0 * 0.95 {
            cheaper.push(name);
        }
    }
    assert!(cheaper.contains(&"cnn_digits_nopad") && cheaper.contains(&"cnn_digits_qop"), "{cheaper:?}");
}

/// The e-graph's least-squares rules (polynomials fitted to where each layer's inputs fell on the
/// calibration samples) never make a choice dearer than interpolation alone, and make the corpus
/// CNN's cheaper under both packings: least squares at degree 7 keeps the budget where interpolation
/// needs 15 on one layer.
#[test]
fn least_squares_polynomials_lower_the_cost_of_the_cnn() {
    use fhec_lower::ckks_plan::Packing;
    use fhec_lower::{Fit, poly};
    for (name, budget, packings) in [
        ("mlp_wine", None, &[Packing::BatchMajor, Packing::FeatureMajor][..]),
        ("cnn_digits_nopad", Some(1.0), &[Packing::BatchMajor, Packing::FeatureMajor]),
        // Its requantizations between layers are tables of their own: not a chain of layers.
        ("cnn_digits_qop", None, &[Packing::BatchMajor]),
    ] {
        let t = Trained::load(root().join("models").join(name));
        let cal = Calibration::from_samples(t.samples.clone()).unwrap();
        for &packing in packings {
            let cost = |fits: Vec<Fit>| {
                let search = ckks::Search {
                    packing,
                    fits,
                    budget_points: budget.unwrap_or(ckks::Search::default().budget_points),
                    ..ckks::Search::default()
                };
                let c = ckks::choose(&t.module, &cal, &search).unwrap();
                assert!(c.within_budget, "{name} {packing:?}: {:.2}%", c.fidelity);
                let plan = &c.compiled.plan;
                (plan.estimated_ms(plan.ring().unwrap(), packing, 1, 1), c)
            };
            let ((cheb_ms, cheb), (both_ms, both)) =
                (cost(vec![Fit::Chebyshev]), cost(vec![Fit::Chebyshev, Fit::LeastSquares]));
            let names = |c: &fhec_lower::ckks::Choice| c.approx.iter().map(|a| a.to_string()).collect::<Vec<_>>();
            eprintln!(
                "{name:18} {packing:?}: chebyshev {:?} {cheb_ms:.0} ms, with least squares {:?} {both_ms:.0} ms",
                names(&cheb),
                names(&both)
            );
            assert!(cheb.approx.iter().all(|a| a.fit == Fit::Chebyshev), "{name}: only the fits asked for");
            assert!(
                both.rules_fired
                    .iter()
                    .any(|(r, n)| r.starts_with("activation-to-least-squares") && *n == both.layers.len())
            );
            assert_eq!(both.rules_fired.len(), 2 * ckks::Search::default().degrees.len());
            assert!(both_ms <= cheb_ms, "{name} {packing:?}: {both_ms} vs {cheb_ms}");
            if name.starts_with("cnn") {
                assert!(both_ms < cheb_ms * 0.97, "{name} {packing:?}: {both_ms} vs {cheb_ms}");
                assert!(both.approx.iter().any(|a| a.fit == Fit::LeastSquares));
            }
            // A least-squares fit sits closer to the function on the calibration inputs than
            // interpolation of the same degree (what the ordering of equal-cost candidates uses).
            for c in &both.candidates {
                let at = |fit| c.iter().find(|(a, _)| a.fit == fit && a.degree == 7).map(|p| p.1);
                if let (Some(l), Some(i)) = (at(Fit::LeastSquares), at(Fit::Chebyshev)) {
                    assert!(l < i, "{name}: {c:?}");
                }
            }
        }
    }
    assert_eq!(poly::rule_names(&[Fit::LeastSquares], &[7]), ["activation-to-least-squares-7"]);
}

/// Feature-major packing: every layer of the corpus MLP and CNN shares one polynomial (a window per
/// layer), the plan is a chain of layers within the ring's slots, the shared windows still keep the
/// accuracy budget, and the estimates put feature-major ahead for one sample and batch-major ahead
/// for a full batch (what `--packing auto` decides by).
#[test]
fn feature_major_plans_share_a_polynomial_per_layer_and_win_at_small_batches() {
    use fhec_lower::ckks_plan::Packing;
    for (name, budget, block) in [("mlp_wine", None, 32), ("cnn_digits_nopad", Some(1.0), 512)] {
        let t = Trained::load(root().join("models").join(name));
        let cal = Calibration::from_samples(t.samples.clone()).unwrap();
        let search = |packing| ckks::Search {
            packing,
            budget_points: budget.unwrap_or(ckks::Search::default().budget_points),
            ..ckks::Search::default()
        };
        let fm = ckks::choose(&t.module, &cal, &search(Packing::FeatureMajor)).unwrap();
        let bm = ckks::choose(&t.module, &cal, &search(Packing::BatchMajor)).unwrap();
        assert!(fm.within_budget, "{name}: {:.2}%", fm.fidelity);
        let plan = &fm.compiled.plan;
        let layers = plan.layers().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(layers.block, block, "{name}");
        assert_eq!(
            layers.stages.len(),
            fm.layers.len() + 1,
            "{name}: one stage per activation layer, then the outputs"
        );
        // Windows per value give each value its own polynomial: no chain of shared ones.
        assert!(bm.compiled.plan.layers().is_err(), "{name}");
        let sim: Vec<Vec<Tensor>> =
            t.samples.iter().map(|x| fm.compiled.simulate(x, &mut Default::default()).unwrap()).collect();
        let (af, asim) = (accuracy(&t.float, &t.labels), accuracy(&sim, &t.labels));
        assert!(af - asim <= t.budget() + 1e-9, "{name}: feature-major simulation {asim:.4} vs float {af:.4}");
        let (rf, rb) = (plan.ring().unwrap(), bm.compiled.plan.ring().unwrap());
        let at = |c: &fhec_lower::ckks::Choice, r, n| c.compiled.plan.estimated_ms(r, c.packing, n, 1);
        let (one, full) = ((at(&fm, rf, 1), at(&bm, rb, 1)), (at(&fm, rf, 8192), at(&bm, rb, 8192)));
        eprintln!(
            "{name:20} feature-major degrees {:?} fidelity {:.2}%; one sample {:.0} vs {:.0} ms; 8192 samples {:.0} vs {:.0} ms",
            fm.degrees(),
            fm.fidelity,
            one.0,
            one.1,
            full.0,
            full.1
        );
        assert!(one.0 < one.1 && full.0 > full.1, "{name}: {one:?} {full:?}");
    }
    // The quantized CNN folds a scale per channel into its activations: no one polynomial per layer.
    let t = Trained::load(root().join("models/cnn_digits_qop"));
    let e = ckks::choose(
        &t.module,
        &Calibration::from_samples(t.samples).unwrap(),
        &ckks::Search { packing: Packing::FeatureMajor, ..ckks::Search::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("apply different functions") && e.contains("--packing batch-major"), "{e}");
}

/// The encrypted tests of `fhec-ckks` (nightly, feature `poulpy`) run the wine MLP's plan from
/// `runtime/ckks/tests/data/mlp_wine.json` without the compiler: this keeps that file what the compiler
/// produces now (set `FHEC_UPDATE_FIXTURES=1` to rewrite it).
#[test]
fn the_encrypted_tests_fixture_is_current() {
    let t = Trained::load(root().join("models/mlp_wine"));
    let choice =
        ckks::choose(&t.module, &Calibration::from_samples(t.samples.clone()).unwrap(), &ckks::Search::default())
            .unwrap();
    let c = &choice.compiled;
    let inputs: Vec<Vec<f64>> = t.samples.iter().map(|x| c.encode(x).unwrap()).collect();
    let expected: Vec<Vec<f64>> = inputs.iter().map(|x| c.plan.eval(x, &mut Default::default()).unwrap()).collect();
    let fixture = serde_json::json!({ "plan": c.plan, "inputs": inputs, "expected": expected });
    let path = root().join("../runtime/ckks/tests/data/mlp_wine.json");
    let text = serde_json::to_string(&fixture).unwrap();
    if std::env::var_os("FHEC_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == text, "{} is stale: rerun with FHEC_UPDATE_FIXTURES=1", path.display());
}

/// `--scheme ckks` refuses a tree ensemble whose steps no polynomial approximates within the
/// budget (naming the ensemble), builds one that stays within it, and `auto` picks TFHE for the
/// first. With its decisions on the client (the default), a single deep tree's steps are only its
/// leaf blocks on integer codes, and it builds; with the thresholds on the server it is refused.
#[test]
fn a_tree_ensemble_outside_the_budget_is_refused_under_ckks() {
    use fhec::scheme::{Built, Options, Scheme, build};
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, scheme: Scheme, private: bool| {
        let dir = root().join("models").join(name);
        let cal = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
        let mut opts = Options { scheme, ..Default::default() };
        opts.tfhe.optimize.client_decisions = !private;
        opts.ckks.optimize.client_decisions = !private;
        let out = tmp.path().join(format!("{name}-{}-{private}", scheme.name()));
        build(&dir.join("model.onnx"), Some(&cal), &out, &opts, |_| ())
    };
    let err = run("tree_cancer_skl", Scheme::Ckks, true).err().expect("refused").to_string();
    assert!(err.contains("tree ensemble \"TreeEnsembleClassifier\"") && err.contains("--scheme tfhe"), "{err}");
    assert!(matches!(run("tree_cancer_skl", Scheme::Auto, true).unwrap().built, Built::Tfhe(_)));
    assert!(matches!(run("tree_cancer_skl", Scheme::Ckks, false).unwrap().built, Built::Ckks(_)));
    assert!(matches!(run("lgbm_iris", Scheme::Ckks, true).unwrap().built, Built::Ckks(_)));
}
