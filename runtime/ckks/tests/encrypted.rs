//! Encrypted evaluation against the cleartext simulation (nightly, `--features poulpy`): the wine
//! MLP's plan (`tests/data/mlp_wine.json`, kept current by the testsuite) on its 45 test samples, packed
//! in one batch.
#![cfg(feature = "poulpy")]

use fhec_ckks::backend::{Context, Server};
use fhec_ckks::{Affine, CkksError, Node, PLAN_VERSION, Packing, Plan, Reads, cheb};

#[derive(serde::Deserialize)]
struct Fixture {
    plan: Plan,
    inputs: Vec<Vec<f64>>,
    expected: Vec<Vec<f64>>,
}

fn fixture() -> Fixture {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mlp_wine.json")).unwrap(),
    )
    .unwrap()
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

#[test]
fn encrypted_outputs_equal_the_simulation_within_the_error_model() {
    let f = fixture();
    let params = f.plan.ring().unwrap();
    assert_eq!(params.log_n, 14, "the MLP fits the smaller ring");
    let ctx = Context::new(params).unwrap();
    let server = Server::new(&ctx, &f.plan, Packing::BatchMajor).unwrap();
    assert!(server.galois_elements().is_empty(), "batch-major packing rotates nothing");
    let (client, eval) = ctx.keygen(&[]).unwrap();
    let start = std::time::Instant::now();
    let inputs = ctx.encrypt(&client, &f.plan, &f.inputs, Packing::BatchMajor).unwrap();
    let outputs = server.evaluate(&eval, &inputs).unwrap();
    let got = ctx.decrypt(&client, &outputs).unwrap();
    eprintln!("{} samples in {:.2} s", f.inputs.len(), start.elapsed().as_secs_f64());
    let scale = f.expected.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got.iter().flatten().zip(f.expected.iter().flatten()).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    eprintln!("largest error {worst:.3e} of output scale {scale:.3}");
    // The error model: fresh ciphertexts and every product carry about 2^-LOG_DELTA relative noise,
    // each constant 2^-CONST_BITS absolute (inputs are mapped onto [-1, 1]); measured 2.8e-5 of the
    // output scale.
    assert!(worst < 2e-4 * scale, "encrypted vs simulated: {worst} (scale {scale})");
    let same = got.iter().zip(&f.expected).filter(|(g, w)| argmax(g) == argmax(w)).count();
    assert_eq!(same, f.inputs.len());
}

#[test]
fn wrong_inputs_and_too_deep_plans_are_refused() {
    let f = fixture();
    let ctx = Context::new(f.plan.ring().unwrap()).unwrap();
    let (client, _) = ctx.keygen(&[]).unwrap();
    let short = vec![vec![0.0; f.plan.n_inputs - 1]];
    assert!(
        matches!(ctx.encrypt(&client, &f.plan, &short, Packing::BatchMajor), Err(CkksError::Shape(s)) if s.contains("sample 0"))
    );
    let too_many = vec![vec![0.0; f.plan.n_inputs]; ctx.params.slots() + 1];
    assert!(matches!(ctx.encrypt(&client, &f.plan, &too_many, Packing::BatchMajor), Err(CkksError::Shape(_))));
    // The wine plan's polynomials are fitted per value: no layer shares one, so it cannot be packed
    // feature-major.
    let e = Server::new(&ctx, &f.plan, Packing::FeatureMajor).err().unwrap().to_string();
    assert!(e.contains("node 1") && e.contains("polynomial of its own"), "{e}");
    // Chaining the MLP's layers many times over exceeds any ring without bootstrapping.
    let mut deep = f.plan.clone();
    let first = deep.nodes[0].clone();
    for _ in 0..40 {
        let k = (deep.n_inputs + deep.nodes.len() - 1) as u32;
        deep.nodes
            .push(fhec_ckks::Node { input: fhec_ckks::Affine { terms: vec![(k, 0.5)], bias: 0.0 }, ..first.clone() });
    }
    let last = (deep.n_inputs + deep.nodes.len() - 1) as u32;
    deep.outputs[0].terms.push((last, 1.0));
    let e = deep.ring().unwrap_err().to_string();
    assert!(e.contains("bits of modulus") && e.contains(&format!("node {}", deep.nodes.len() - 1)), "{e}");
}

/// A small deterministic pseudo-random stream in [-1, 1).
fn stream(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed;
    move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// 13 inputs, two layers of 16 and 8 values each sharing one polynomial (a smooth ReLU on the
/// window), 3 outputs: the shape of the corpus MLPs, with one polynomial per layer.
fn layered_plan() -> Plan {
    let mut r = stream(7);
    let relu = cheb::interpolate(|t| (t + 0.2 * (t * 5.0).tanh()).max(0.0), 15);
    let square = cheb::interpolate(|t| 0.5 * t * t, 7);
    let dense = |r: &mut dyn FnMut() -> f64, from: u32, n: u32, m: usize| -> Vec<Affine> {
        (0..m)
            .map(|_| Affine {
                terms: (from..from + n).map(|w| (w, 0.5 * r() / (n as f64).sqrt())).collect(),
                bias: 0.1 * r(),
            })
            .collect()
    };
    let mut nodes: Vec<Node> = dense(&mut r, 0, 13, 16)
        .into_iter()
        .map(|input| Node { input, coeffs: relu.clone(), layer: "fc1".into() })
        .collect();
    nodes.extend(dense(&mut r, 13, 16, 8).into_iter().map(|input| Node {
        input,
        coeffs: square.clone(),
        layer: "fc2".into(),
    }));
    let outputs = dense(&mut r, 29, 8, 3);
    Plan { version: PLAN_VERSION, n_inputs: 13, input_box: vec![(-2.0, 2.0); 13], nodes, outputs }
}

#[test]
fn feature_major_packing_equals_the_simulation_across_ciphertexts() {
    let plan = layered_plan();
    plan.validate().unwrap();
    let layers = plan.layers().unwrap();
    assert_eq!((layers.block, layers.stages.len()), (16, 3));
    let ctx = Context::new(plan.ring().unwrap()).unwrap();
    let per = plan.samples_per_ciphertext(ctx.params, Packing::FeatureMajor).unwrap();
    assert_eq!(per, ctx.params.slots() / 16);
    let server = Server::new(&ctx, &plan, Packing::FeatureMajor).unwrap();
    let galois = server.galois_elements();
    assert!(!galois.is_empty() && galois.len() < 40, "{} rotation keys", galois.len());
    let (client, eval) = ctx.keygen(&galois).unwrap();
    // More samples than one ciphertext holds: two ciphertexts, the second partly filled.
    let mut r = stream(11);
    let samples: Vec<Vec<f64>> = (0..per + 5).map(|_| (0..13).map(|_| 2.0 * r()).collect()).collect();
    let start = std::time::Instant::now();
    let inputs = ctx.encrypt(&client, &plan, &samples, Packing::FeatureMajor).unwrap();
    let outputs = server.evaluate(&eval, &inputs).unwrap();
    let got = ctx.decrypt(&client, &outputs).unwrap();
    eprintln!("{} samples in 2 ciphertexts: {:.2} s", samples.len(), start.elapsed().as_secs_f64());
    let mut reads = Reads::default();
    let want: Vec<Vec<f64>> = samples.iter().map(|x| plan.eval(x, &mut reads).unwrap()).collect();
    assert_eq!(reads.outside, 0, "the test plan keeps every read in its window");
    let scale = want.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got.iter().flatten().zip(want.iter().flatten()).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    eprintln!("largest error {worst:.3e} of output scale {scale:.3}");
    assert_eq!(got.len(), samples.len());
    assert!(worst < 2e-4 * scale.max(1.0), "encrypted vs simulated: {worst} (scale {scale})");
    // Packings do not mix, and a server without the rotation keys it needs says so.
    let batch = ctx.encrypt(&client, &plan, &samples[..3], Packing::BatchMajor).unwrap();
    assert!(server.evaluate(&eval, &batch).err().unwrap().to_string().contains("packed batch-major"));
    let (_, no_rotations) = ctx.keygen(&[]).unwrap();
    let e = server
        .evaluate(&no_rotations, &ctx.encrypt(&client, &plan, &samples[..1], Packing::FeatureMajor).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer 0 (fc1)") && e.contains("automorphism"), "{e}");
}
