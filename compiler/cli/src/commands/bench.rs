//! `fhec bench`: latency, batch throughput and the physical limit of a build.

#[cfg(feature = "ckks")]
use super::bar;
#[cfg(not(feature = "ckks"))]
use super::ckks_missing;
use super::spinner;
use crate::Global;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use std::path::Path;
use std::path::PathBuf;

/// Benchmark a build: latency, batch throughput on 1 and all threads, against the physical limit.
#[derive(Args)]
pub struct BenchArgs {
    pub dir: PathBuf,
    /// Samples (.npy): the first one for latency, the first --batch ones for throughput.
    #[arg(long)]
    pub input: PathBuf,
    /// Latency runs (median, min and max are reported); for a CKKS build, full batches.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Samples per batch for the throughput runs (TFHE; a CKKS batch fills every slot).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Also write the numbers as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// For a training plan (`fhec train plan`): the training set's labels; --input is its features.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

pub fn run(args: BenchArgs, g: &Global) -> Result<()> {
    let BenchArgs { dir, input, runs, batch, json, labels } = args;
    let quiet = g.quiet;
    let threads = g.threads;
    let name = dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    if labels.is_some() && !fhec::train::deploy::is_training(&dir) {
        bail!("--labels is for a training plan, and {} holds a build", dir.display());
    }
    let (text, numbers) = if fhec::train::deploy::is_training(&dir) {
        let labels = labels.context("a training plan is benchmarked on a training set: give its --labels too")?;
        bench_training(&dir, &input, &labels, runs, &name, quiet)?
    } else if fhec::ckks::is_ckks(&dir) {
        let x = fhec::npy::read_samples(&input)?;
        bench_ckks(&dir, &x, runs, &name, quiet)?
    } else {
        let x = fhec::npy::read_samples(&input)?;
        let pb = spinner(quiet, "benchmarking (key generation, latency runs, batch runs)");
        let report = fhec::bench::bench(&dir, &x, runs, batch, threads)?;
        pb.finish_and_clear();
        (report.text(&name), report.json(&name))
    };
    print!("{text}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&numbers)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `fhec bench` on a CKKS build: full batches (a batch is one sample's latency and many samples'
/// throughput). Returns the report's text and JSON.
#[cfg(feature = "ckks")]
fn bench_ckks(
    dir: &Path,
    x: &ndarray::ArrayD<f32>,
    runs: usize,
    name: &str,
    quiet: bool,
) -> Result<(String, serde_json::Value)> {
    let loaded = fhec::ckks::load(dir)?;
    let pb = bar(quiet, runs.max(1), "benchmarking (key generation, full CKKS batches)");
    let report = fhec::ckks::bench(&loaded, x, runs, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    Ok((report.text(name), report.json(name)))
}

/// `fhec bench` on a training plan: keys once, then `runs` whole encrypted trainings.
#[cfg(feature = "ckks")]
fn bench_training(
    dir: &Path,
    input: &Path,
    labels: &Path,
    runs: usize,
    name: &str,
    quiet: bool,
) -> Result<(String, serde_json::Value)> {
    let ds = fhec::train::Dataset::read(input, labels)?;
    let pb = bar(quiet, runs.max(1), "benchmarking (key generation, whole encrypted trainings)");
    let report = fhec::train::bench::bench(dir, &ds, runs, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    Ok((report.text(name), report.json(name)))
}

#[cfg(not(feature = "ckks"))]
fn bench_training(_: &Path, _: &Path, _: &Path, _: usize, _: &str, _: bool) -> Result<(String, serde_json::Value)> {
    ckks_missing()
}

#[cfg(not(feature = "ckks"))]
fn bench_ckks(_: &Path, _: &ndarray::ArrayD<f32>, _: usize, _: &str, _: bool) -> Result<(String, serde_json::Value)> {
    ckks_missing()
}
