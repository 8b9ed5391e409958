//! Encrypted evaluation against the cleartext simulation (nightly, `--features poulpy`): the wine
//! MLP's plan (`tests/data/mlp_wine.json`, kept current by the testsuite) on its 45 test samples, packed
//! in one batch.
#![cfg(feature = "poulpy")]

use fhec_ckks::backend::{Context, Server};
use fhec_ckks::{CkksError, Plan};

#[derive(serde::Deserialize)]
struct Fixture {
    plan: Plan,
    inputs: Vec<Vec<f64>>,
    expected: Vec<Vec<f64>>,
}

fn fixture() -> Fixture {
    serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mlp_wine.json")).unwrap()).unwrap()
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
    let (client, eval) = ctx.keygen().unwrap();
    let server = Server::new(&ctx, &f.plan).unwrap();
    let start = std::time::Instant::now();
    let inputs = ctx.encrypt(&client, &f.plan, &f.inputs).unwrap();
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
    let (client, _) = ctx.keygen().unwrap();
    let short = vec![vec![0.0; f.plan.n_inputs - 1]];
    assert!(matches!(ctx.encrypt(&client, &f.plan, &short), Err(CkksError::Shape(s)) if s.contains("sample 0")));
    let too_many = vec![vec![0.0; f.plan.n_inputs]; ctx.params.slots() + 1];
    assert!(matches!(ctx.encrypt(&client, &f.plan, &too_many), Err(CkksError::Shape(_))));
    // Chaining the MLP's layers many times over exceeds any ring without bootstrapping.
    let mut deep = f.plan.clone();
    let first = deep.nodes[0].clone();
    for _ in 0..40 {
        let k = (deep.n_inputs + deep.nodes.len() - 1) as u32;
        deep.nodes.push(fhec_ckks::Node { input: fhec_ckks::Affine { terms: vec![(k, 0.5)], bias: 0.0 }, ..first.clone() });
    }
    let last = (deep.n_inputs + deep.nodes.len() - 1) as u32;
    deep.outputs[0].terms.push((last, 1.0));
    let e = deep.ring().unwrap_err().to_string();
    assert!(e.contains("bits of modulus") && e.contains(&format!("node {}", deep.nodes.len() - 1)), "{e}");
}
