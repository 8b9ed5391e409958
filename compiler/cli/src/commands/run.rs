//! `fhec run`: evaluate the model on ciphertexts (server side, evaluation key only).

use super::spinner;
use crate::Global;
use anyhow::Result;
use clap::Args;
use fhec::tfhe;
use fhec_runtime::artifact;
use fhec_runtime::artifact::Kind;
use fhec_runtime::artifact::Tagged;
use fhec_runtime::fhe::InputCiphertexts;
use std::path::PathBuf;
use std::time::Instant;

/// Run the model on ciphertexts (server side: reads only the evaluation key).
#[derive(Args)]
pub struct RunArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub eval_key: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// A training plan's directory: the weights of the previous round, refreshed by the data owner.
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: RunArgs, g: &Global) -> Result<()> {
    let RunArgs { dir, eval_key, input, state, output } = args;
    let quiet = g.quiet;
    if fhec::train::deploy::is_training(&dir) {
        return super::train::split::run(&dir, &eval_key, &input, state.as_deref(), &output, g);
    }
    if state.is_some() {
        anyhow::bail!("--state is for a training plan's directory (fhec train plan); {} is a build", dir.display());
    }
    if fhec::ckks::is_ckks(&dir) {
        return ckks(&dir, &eval_key, &input, &output, g);
    }
    let (server, digest) = tfhe::load_server(&dir)?;
    let (cts, _): (Tagged<InputCiphertexts>, _) = artifact::load(&input, Kind::Inputs)?;
    let pb = spinner(quiet, "loading the evaluation key");
    let (ek, fp) = tfhe::load_eval(&eval_key)?;
    pb.finish_and_clear();
    let pb = spinner(quiet, "running on ciphertexts");
    let start = Instant::now();
    let out = tfhe::run(&server, &digest, &ek, &fp, &cts)?;
    pb.finish_and_clear();
    artifact::save(&output, Kind::Outputs, &out)?;
    println!(
        "ran {} samples in {:.3} s ({:.1} ms/sample) to {}",
        cts.samples,
        start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64() * 1e3 / cts.samples.max(1) as f64,
        output.display()
    );
    Ok(())
}

/// Runs a CKKS build's plan on a file of ciphertexts, with the evaluation key only.
#[cfg(feature = "ckks")]
fn ckks(
    dir: &std::path::Path,
    eval_key: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    g: &Global,
) -> Result<()> {
    let (cts, _): (Tagged<Vec<u8>>, _) = artifact::load(input, Kind::CkksInputs)?;
    let pb = spinner(g.quiet, "loading the evaluation key");
    let side = fhec::ckks::deploy::ServerSide::load(dir, eval_key)?;
    pb.finish_and_clear();
    let pb = spinner(g.quiet, "running on ciphertexts");
    let start = Instant::now();
    let out = side.run(&cts)?;
    pb.finish_and_clear();
    artifact::save(output, Kind::CkksOutputs, &out)?;
    let s = start.elapsed().as_secs_f64();
    println!(
        "ran {} samples in {s:.3} s ({:.0} samples/s) to {}",
        out.samples,
        out.samples as f64 / s.max(1e-9),
        output.display()
    );
    Ok(())
}

#[cfg(not(feature = "ckks"))]
fn ckks(_: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &Global) -> Result<()> {
    super::ckks_missing()
}
