//! The subcommands, one file each: its clap `Args` with their checks, and `run`. Shared here: progress
//! output, writing and scoring outputs, the async runtime for the HTTP commands.

pub mod bench;
pub mod build;
pub mod client;
pub mod decrypt;
pub mod encrypt;
pub mod inspect;
pub mod keygen;
pub mod predict;
pub mod run;
pub mod serve;
pub mod train;

#[cfg(not(feature = "ckks"))]
use anyhow::bail;
use anyhow::{Context, Result};
use fhec::Stacked;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The model name a build directory is served under: its file name without `.fhec`.
pub(crate) fn served_name(dir: &Path) -> String {
    let name = dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    name.strip_suffix(".fhec").map_or(name.clone(), str::to_string)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn spinner(quiet: bool, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub(crate) fn bar(quiet: bool, n: usize, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64).with_message(msg);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}/{eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb
}

pub(crate) fn write_outputs(output: Option<&Path>, outs: &[(String, Stacked)]) -> Result<()> {
    let Some(output) = output else { return Ok(()) };
    for (k, (name, a)) in outs.iter().enumerate() {
        let path = fhec::npy::output_path(output, k, name);
        fhec::npy::write_output(&path, a)?;
        let shape = match a {
            Stacked::F32(a) => a.shape().to_vec(),
            Stacked::I64(a) => a.shape().to_vec(),
        };
        eprintln!("wrote output \"{name}\" {shape:?} to {}", path.display());
    }
    Ok(())
}

pub(crate) fn score_line(outs: &[(String, Stacked)], labels: Option<&PathBuf>) -> Result<String> {
    Ok(match labels {
        Some(p) => format!("{}, ", fhec::metrics::score(&outs[0].1, &fhec::metrics::read_labels(p)?)?),
        None => String::new(),
    })
}

/// Encrypted CKKS runs in an fhec built without poulpy.
#[cfg(not(feature = "ckks"))]
pub(crate) fn ckks_missing<T>() -> Result<T> {
    bail!(
        "this fhec was built without CKKS encryption (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec-cli --features ckks` (for simulation, `fhec predict DIR --mode simulate` needs no feature)"
    )
}
