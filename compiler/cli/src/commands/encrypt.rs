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
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: EncryptArgs, g: &Global) -> Result<()> {
    let EncryptArgs { dir, keys, input, output } = args;
    let protection = &g.protection;
    let (client, _) = tfhe::load_client(&dir)?;
    let (sk, fp) = tfhe::load_secret(&keys, protection)?;
    let x = fhec::npy::read_samples(&input)?;
    let cts = tfhe::encrypt(&client, &sk, &fp, &x)?;
    artifact::save(&output, Kind::Inputs, &cts)?;
    let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!("encrypted {} samples ({} values) to {}: {bytes} bytes", cts.samples, cts.data.len(), output.display());
    Ok(())
}
