//! `fhec predict`: the float reference, the compiled circuit in simulation, or an encrypted run.

#[cfg(not(feature = "ckks"))]
use super::ckks_missing;
use super::{bar, runtime, score_line, served_name, spinner, write_outputs};
use crate::Global;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::ValueEnum;
use fhec::Stacked;
use fhec::tfhe;
use fhec_runtime::artifact;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

/// Predict: with MODEL.onnx the float reference; with a build directory, --mode simulate or fhe.
#[derive(Args)]
pub struct PredictArgs {
    pub model: PathBuf,
    /// Samples along axis 0, each shaped like the model input without its batch dimension.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the first output; further outputs go to <stem>.<output name>.npy beside it.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Labels (.npy) to score the first output against: accuracy, or RMSE and R².
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// For a build directory: simulate (cleartext circuit) or fhe (encrypted).
    #[arg(long, value_enum, default_value_t = Mode::Simulate)]
    pub mode: Mode,
    /// With --mode simulate: add the parameter set's noise (what an encrypted run sees), drawn
    /// from this seed.
    #[arg(long)]
    pub noise_seed: Option<u64>,
    /// Run on an `fhec serve` server (encrypting and decrypting here, with --keys).
    #[arg(long, env = "FHEC_SERVER", requires = "keys")]
    pub server: Option<String>,
    /// With --server: the keys from `fhec keygen`.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// With --server: the bearer token.
    #[arg(long, env = "FHEC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With an https --server: trust only these certificates (PEM); default: the system's.
    #[arg(long, env = "FHEC_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// With --server: the model's name there (default: the build directory's name without .fhec).
    #[arg(long)]
    pub remote_model: Option<String>,
    /// With --server: samples per request (default: 16 for TFHE, a full ciphertext batch for CKKS).
    #[arg(long)]
    pub batch: Option<usize>,
}

pub fn run(args: PredictArgs, g: &Global) -> Result<()> {
    let PredictArgs {
        model,
        input,
        output,
        labels,
        mode,
        noise_seed,
        server,
        keys,
        token,
        ca_cert,
        remote_model,
        batch,
    } = args;
    let quiet = g.quiet;
    let engine = g.engine;
    let protection = &g.protection;
    let x = fhec::npy::read_samples(&input)?;
    let n = x.shape().first().copied().unwrap_or(0).max(1) as f64;
    if let (Some(server), Some(keys)) = (server, keys) {
        let remote = fhec_serve::client::Remote::new(&server, token, ca_cert.as_deref())?;
        let session = fhec_serve::roundtrip::Session::load(&model, &keys, protection)?;
        let batch = batch.unwrap_or_else(|| session.default_batch()).max(1);
        let name = remote_model.unwrap_or_else(|| served_name(&model));
        let samples = x.shape()[0];
        let pb = bar(quiet, samples, "encrypted inference on the server");
        let start = Instant::now();
        let run = runtime()?.block_on(fhec_serve::roundtrip::predict(&remote, &name, &session, &x, batch, |done| {
            pb.set_position(done as u64)
        }))?;
        pb.finish_and_clear();
        println!(
            "{samples} samples, {}{:.1} ms/sample on {server} ({} requests of up to {batch}; client {:.2} ms/sample, round trips {:.1} ms/sample; key {})",
            score_line(&run.outputs, labels.as_ref())?,
            start.elapsed().as_secs_f64() * 1e3 / n,
            run.requests,
            run.client.as_secs_f64() * 1e3 / n,
            run.round_trips.as_secs_f64() * 1e3 / n,
            &run.key_id[..16]
        );
        return write_outputs(output.as_deref(), &run.outputs);
    }
    if model.is_file() {
        let m = fhec::load_model(&model)?;
        let start = Instant::now();
        let outs = fhec::predict(&m, &x).with_context(|| format!("predicting {}", input.display()))?;
        let ms = start.elapsed().as_secs_f64() * 1e3 / n;
        println!(
            "{} samples, {}{ms:.3} ms/sample (float reference, not encrypted)",
            x.shape()[0],
            score_line(&outs, labels.as_ref())?
        );
        return write_outputs(output.as_deref(), &outs);
    }
    if fhec::ckks::is_ckks(&model) {
        return predict_ckks(&model, &x, mode, noise_seed, labels.as_ref(), output.as_deref(), quiet);
    }
    let (client, post) = tfhe::load_client(&model)?;
    let (server, digest) = tfhe::load_server(&model)?;
    let outs = match mode {
        Mode::Simulate => {
            let start = Instant::now();
            let outs =
                tfhe::simulate(&client, &post, &server, &x, noise_seed, engine, |why| eprintln!("warning: {why}"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3 / n;
            println!(
                "{} samples, {}{ms:.3} ms/sample (simulated integer circuit, {}, not encrypted)",
                x.shape()[0],
                score_line(&outs, labels.as_ref())?,
                if noise_seed.is_some() { "with the noise model" } else { "noise-free" }
            );
            outs
        }
        Mode::Fhe => {
            // Keys stay in memory; `size` is what eval.key would take on disk.
            let pb = spinner(quiet, "generating keys");
            let start = Instant::now();
            let (sk, compressed) = fhec_runtime::fhe::keygen(client.params);
            let keygen = start.elapsed();
            let (bytes, fp) = artifact::eval_key_bytes(&compressed);
            let size = bytes.len();
            let ek = compressed.decompress();
            pb.finish_and_clear();
            let samples = x.shape()[0];
            let pb = bar(quiet, samples, "encrypted inference");
            let (mut client_t, mut server_t) = (Duration::ZERO, Duration::ZERO);
            let mut per_sample = Vec::new();
            for i in 0..samples {
                let xi = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned();
                let t = Instant::now();
                let cts = tfhe::encrypt(&client, &sk, &fp, &xi)?;
                client_t += t.elapsed();
                let t = Instant::now();
                let out = tfhe::run(&server, &digest, &ek, &fp, &cts)?;
                server_t += t.elapsed();
                let t = Instant::now();
                per_sample.extend(tfhe::decrypt_samples(&client, &post, &sk, &fp, &out)?);
                client_t += t.elapsed();
                pb.inc(1);
            }
            pb.finish_and_clear();
            let outs = fhec::stack_outputs(&post, per_sample);
            println!(
                "{samples} samples, {}{:.1} ms/sample encrypted (client {:.2} ms, server {:.1} ms); keygen {:.2} s, evaluation key {:.1} MB",
                score_line(&outs, labels.as_ref())?,
                (client_t + server_t).as_secs_f64() * 1e3 / n,
                client_t.as_secs_f64() * 1e3 / n,
                server_t.as_secs_f64() * 1e3 / n,
                keygen.as_secs_f64(),
                size as f64 / 1e6
            );
            outs
        }
    };
    write_outputs(output.as_deref(), &outs)?;
    Ok(())
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Cleartext execution of the compiled integer circuit (no encryption, no noise).
    Simulate,
    /// Real encryption: key generation, encrypt, run, decrypt, all locally.
    Fhe,
}

/// `fhec predict` on a CKKS build: the cleartext simulation, or (in an fhec built with the `ckks`
/// feature) an encrypted run in batches of the ring's slots.
fn predict_ckks(
    dir: &Path,
    x: &ndarray::ArrayD<f32>,
    mode: Mode,
    noise_seed: Option<u64>,
    labels: Option<&PathBuf>,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let loaded = fhec::ckks::load(dir)?;
    let samples = x.shape().first().copied().unwrap_or(0);
    let n = samples.max(1) as f64;
    if noise_seed.is_some() {
        bail!(
            "--noise-seed is for TFHE builds; a CKKS simulation is exact up to CKKS's approximation error (about 1e-4 of the outputs)"
        );
    }
    let outs = match mode {
        Mode::Simulate => {
            let start = Instant::now();
            let (outs, reads) = loaded.simulate(x)?;
            println!(
                "{samples} samples, {}{:.3} ms/sample (simulated CKKS polynomials, not encrypted); polynomial reads outside their window: {} of {}",
                score_line(&outs, labels)?,
                start.elapsed().as_secs_f64() * 1e3 / n,
                reads.outside,
                reads.total
            );
            outs
        }
        Mode::Fhe => ckks_fhe(&loaded, x, labels, quiet)?,
    };
    write_outputs(output, &outs)
}

#[cfg(feature = "ckks")]
fn ckks_fhe(
    loaded: &fhec::ckks::Loaded,
    x: &ndarray::ArrayD<f32>,
    labels: Option<&PathBuf>,
    quiet: bool,
) -> Result<Vec<(String, Stacked)>> {
    let samples = x.shape().first().copied().unwrap_or(0);
    let pb = bar(quiet, samples, "encrypted inference (CKKS batches)");
    let run = fhec::ckks::fhe(loaded, x, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    let n = samples.max(1) as f64;
    let total = run.client + run.server;
    println!(
        "{samples} samples, {}{:.3} ms/sample encrypted under CKKS ({}: {} batch{} of up to {} samples: client {:.2} s, server {:.2} s, {:.0} samples/s); keygen {:.2} s; largest distance from the simulation {:.1e}",
        score_line(&run.outputs, labels)?,
        total.as_secs_f64() * 1e3 / n,
        loaded.packing.name(),
        run.batches,
        if run.batches == 1 { "" } else { "es" },
        run.batch_size,
        run.client.as_secs_f64(),
        run.server.as_secs_f64(),
        n / total.as_secs_f64(),
        run.keygen.as_secs_f64(),
        run.max_error
    );
    Ok(run.outputs)
}

#[cfg(not(feature = "ckks"))]
fn ckks_fhe(
    _: &fhec::ckks::Loaded,
    _: &ndarray::ArrayD<f32>,
    _: Option<&PathBuf>,
    _: bool,
) -> Result<Vec<(String, Stacked)>> {
    ckks_missing()
}
