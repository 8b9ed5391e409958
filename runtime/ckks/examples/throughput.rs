//! Batched throughput of a plan under CKKS: every slot of the ring filled with samples.
//!
//! `cargo +nightly run -p fhec-ckks --features poulpy --release --example throughput -- [PLAN.json] [RUNS]`
//! (default: the wine MLP's plan from `tests/data/mlp_wine.json`, whose samples are repeated to fill
//! the slots). Prints key generation, encryption, evaluation and decryption times, samples per
//! second, and the largest distance from the cleartext simulation over every slot.

use fhec_ckks::backend::{Context, Server};
use fhec_ckks::{Packing, Plan, Reads};
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Fixture {
    plan: Plan,
    inputs: Vec<Vec<f64>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path =
        args.get(1).cloned().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mlp_wine.json").into());
    let runs: usize = args.get(2).map_or(Ok(3), |r| r.parse())?;
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let params = f.plan.ring()?;
    let ctx = Context::new(params)?;
    let samples: Vec<Vec<f64>> = f.inputs.iter().cycle().take(params.slots()).cloned().collect();
    let server = Server::new(&ctx, &f.plan, Packing::BatchMajor)?;
    let t = Instant::now();
    let (client, eval) = ctx.keygen(&server.galois_elements())?;
    let keygen = t.elapsed();
    let cost = f.plan.cost();
    println!(
        "{path}: {} nodes, depth {}; ring 2^{} ({} slots, {}-bit modulus); {} threads",
        f.plan.nodes.len(),
        cost.depth,
        params.log_n,
        params.slots(),
        params.k,
        rayon::current_num_threads()
    );
    let mut times = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let inputs = ctx.encrypt(&client, &f.plan.client_layout(params, Packing::BatchMajor)?, &samples)?;
        let enc = t.elapsed();
        let t = Instant::now();
        let outputs = server.evaluate(&eval, &inputs)?;
        let ev = t.elapsed();
        let t = Instant::now();
        let got = ctx.decrypt(&client, &outputs)?;
        let dec = t.elapsed();
        let mut reads = Reads::default();
        let worst = samples
            .iter()
            .zip(&got)
            .map(|(x, g)| {
                f.plan.eval(x, &mut reads).map(|w| w.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .fold(0.0, f64::max);
        let total = enc + ev + dec;
        println!(
            "run {run}: encrypt {:.2} s, evaluate {:.2} s, decrypt {:.2} s: {:.0} samples/s ({:.3} ms/sample); largest error vs simulation {worst:.2e}; input ciphertexts {:.1} MB",
            enc.as_secs_f64(),
            ev.as_secs_f64(),
            dec.as_secs_f64(),
            samples.len() as f64 / total.as_secs_f64(),
            total.as_secs_f64() * 1e3 / samples.len() as f64,
            inputs.bytes() as f64 / 1e6
        );
        times.push(total.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "keygen {:.2} s; median {:.2} s per batch of {}: {:.0} samples/s",
        keygen.as_secs_f64(),
        median,
        samples.len(),
        samples.len() as f64 / median
    );
    Ok(())
}
