//! Encrypted evaluation against the cleartext simulation (nightly, `--features poulpy`): the wine
//! MLP's plan (`tests/data/mlp_wine.json`, kept current by the testsuite) on its 45 test samples, packed
//! in one batch.
#![cfg(feature = "poulpy")]

use fhec_ckks::backend::{Context, Role, Server};
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
    let layout = f.plan.client_layout(params, Packing::BatchMajor).unwrap();
    let inputs = ctx.encrypt(&client, &layout, &f.inputs).unwrap();
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
    let layout = f.plan.client_layout(ctx.params, Packing::BatchMajor).unwrap();
    let short = vec![vec![0.0; f.plan.n_inputs - 1]];
    assert!(matches!(ctx.encrypt(&client, &layout, &short), Err(CkksError::Shape(s)) if s.contains("sample 0")));
    let too_many = vec![vec![0.0; f.plan.n_inputs]; ctx.params.slots() + 1];
    assert!(matches!(ctx.encrypt(&client, &layout, &too_many), Err(CkksError::Shape(_))));
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
    let layout = plan.client_layout(ctx.params, Packing::FeatureMajor).unwrap();
    let inputs = ctx.encrypt(&client, &layout, &samples).unwrap();
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
    let batch_major = plan.client_layout(ctx.params, Packing::BatchMajor).unwrap();
    let batch = ctx.encrypt(&client, &batch_major, &samples[..3]).unwrap();
    assert!(server.evaluate(&eval, &batch).err().unwrap().to_string().contains("packed batch-major"));
    let (_, no_rotations) = ctx.keygen(&[]).unwrap();
    let e = server
        .evaluate(&no_rotations, &ctx.encrypt(&client, &layout, &samples[..1]).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer 0 (fc1)") && e.contains("automorphism"), "{e}");
}

/// The deployed path: the client writes its keys and encrypted samples, the server reads the
/// evaluation key and the samples alone (no secret, no plan on the client), writes the results,
/// and the client decrypts them; the results are those of the in-process run.
#[test]
fn keys_and_ciphertexts_survive_their_files_and_bad_files_are_refused() {
    let plan = layered_plan();
    let ctx = Context::new(plan.ring().unwrap()).unwrap();
    let server = Server::new(&ctx, &plan, Packing::FeatureMajor).unwrap();
    let galois = server.galois_elements();
    let layout = plan.client_layout(ctx.params, Packing::FeatureMajor).unwrap();
    // The client: keys, then samples.
    let mut eval_bytes = Vec::new();
    let client = ctx.keygen_to(&galois, &mut eval_bytes).unwrap();
    let secret = client.to_bytes(&ctx);
    assert_eq!(secret.len(), 56, "ring and seed");
    let mut r = stream(3);
    let samples: Vec<Vec<f64>> = (0..5).map(|_| (0..13).map(|_| 2.0 * r()).collect()).collect();
    let mut input_bytes = Vec::new();
    ctx.write_batch(&ctx.encrypt(&client, &layout, &samples).unwrap(), &mut input_bytes).unwrap();
    // The server: the evaluation key and the inputs, from bytes.
    let eval = ctx.read_eval_key(&mut eval_bytes.as_slice(), &galois).unwrap();
    let inputs = ctx.read_batch(&mut input_bytes.as_slice(), &layout, Role::Inputs).unwrap();
    let mut output_bytes = Vec::new();
    ctx.write_batch(&server.evaluate(&eval, &inputs).unwrap(), &mut output_bytes).unwrap();
    // The client again, with its secret key read back.
    let client = ctx.client_key(&secret).unwrap();
    let outputs = ctx.read_batch(&mut output_bytes.as_slice(), &layout, Role::Outputs).unwrap();
    let got = ctx.decrypt(&client, &outputs).unwrap();
    let mut reads = Reads::default();
    let want: Vec<Vec<f64>> = samples.iter().map(|x| plan.eval(x, &mut reads).unwrap()).collect();
    let worst = got.iter().flatten().zip(want.iter().flatten()).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    assert!(worst < 2e-4, "encrypted through files vs simulated: {worst}");
    // Seed-compressed: a key at 2^14 took 12.58 MB in full (relinearization or one rotation).
    assert_eq!(ctx.params.log_n, 14);
    let per_key = eval_bytes.len() / (1 + galois.len());
    assert!(per_key < 7_000_000, "{per_key} bytes per key: not compressed");
    eprintln!(
        "evaluation key {:.1} MB ({} rotations), {} samples in {} KB of inputs, {} KB of outputs",
        eval_bytes.len() as f64 / 1e6,
        galois.len(),
        samples.len(),
        input_bytes.len() / 1000,
        output_bytes.len() / 1000
    );
    // Bad files: each an error that says what, never a panic.
    let shape = |r: Result<_, CkksError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    let e = shape(ctx.read_batch(&mut &input_bytes[..input_bytes.len() / 2], &layout, Role::Inputs).map(|_| ()));
    assert!(e.contains("ciphertext"), "truncated: {e}");
    let e = shape(ctx.read_batch(&mut output_bytes.as_slice(), &layout, Role::Inputs).map(|_| ()));
    assert!(e.contains("values per sample") || e.contains("fresh"), "outputs as inputs: {e}");
    let e = shape(ctx.read_batch(&mut eval_bytes.as_slice(), &layout, Role::Inputs).map(|_| ()));
    assert!(e.contains("not a CKKS ciphertext batch"), "a key as a batch: {e}");
    let e = shape(ctx.read_eval_key(&mut eval_bytes.as_slice(), &galois[1..]).map(|_| ()));
    assert!(e.contains("rotation keys; this plan uses"), "{e}");
    let e = shape(ctx.read_eval_key(&mut &eval_bytes[..eval_bytes.len() - 100], &galois).map(|_| ()));
    assert!(e.contains("rotation key"), "truncated key: {e}");
    let e = shape(ctx.client_key(&secret[..40]).map(|_| ()));
    assert!(e.contains("secret key of 40 bytes"), "{e}");
    let mut other_ring = secret.clone();
    other_ring[8] = 15;
    let e = shape(ctx.client_key(&other_ring).map(|_| ()));
    assert!(e.contains("ring 2^15"), "{e}");
    let batch_major = plan.client_layout(ctx.params, Packing::BatchMajor).unwrap();
    let e = shape(ctx.read_batch(&mut input_bytes.as_slice(), &batch_major, Role::Inputs).map(|_| ()));
    assert!(e.contains("packed feature-major"), "{e}");
}
