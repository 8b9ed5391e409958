//! `fhec encrypt`: encode and encrypt samples (client side).

use crate::Global;
use anyhow::Result;
use clap::Args;
use fhec::tfhe;
use fhec_runtime::artifact;
use fhec_runtime::artifact::Kind;
use std::path::PathBuf;

/// Encode and encrypt samples (client side).
#[derive(Args)]
pub struct EncryptArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub keys: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// A training plan's directory: the training set's labels or targets (.npy).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: EncryptArgs, g: &Global) -> Result<()> {
    let EncryptArgs { dir, keys, input, labels, output } = args;
    let protection = &g.protection;
    if fhec::train::deploy::is_training(&dir) {
        return super::train::split::encrypt(&dir, &keys, &input, labels.as_deref(), &output, g);
    }
    if labels.is_some() {
        anyhow::bail!("--labels is for a training plan's directory (fhec train plan); {} is a build", dir.display());
    }
    if fhec::ckks::is_ckks(&dir) {
        return ckks(&dir, &keys, &input, &output, g);
    }
    let (client, _) = tfhe::load_client(&dir)?;
    let (sk, fp) = tfhe::load_secret(&keys, protection)?;
    let x = fhec::npy::read_samples(&input)?;
    let cts = tfhe::encrypt(&client, &sk, &fp, &x)?;
    artifact::save(&output, Kind::Inputs, &cts)?;
    let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!("encrypted {} samples ({} values) to {}: {bytes} bytes", cts.samples, cts.data.len(), output.display());
    Ok(())
}

/// Encrypts for a CKKS build: the samples packed into as few ciphertexts as its layout allows.
#[cfg(feature = "ckks")]
fn ckks(
    dir: &std::path::Path,
    keys: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    g: &Global,
) -> Result<()> {
    let side = fhec::ckks::deploy::ClientSide::load(dir, keys, &g.protection)?;
    let x = fhec::npy::read_samples(input)?;
    let cts = side.encrypt(&x)?;
    artifact::save(output, Kind::CkksInputs, &cts)?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let layout = &side.artifact.layout;
    println!(
        "encrypted {} samples to {} ({} packing, {} samples per ciphertext): {:.1} MB",
        cts.samples,
        output.display(),
        layout.packing.name(),
        layout.samples_per_ciphertext,
        bytes as f64 / 1e6
    );
    Ok(())
}

#[cfg(not(feature = "ckks"))]
fn ckks(_: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &Global) -> Result<()> {
    super::ckks_missing()
}
