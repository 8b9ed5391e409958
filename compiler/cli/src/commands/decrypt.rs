//! `fhec decrypt`: decrypt and post-process results (client side).

use super::write_outputs;
use crate::Global;
use anyhow::Result;
use clap::Args;
use fhec::tfhe;
use fhec_runtime::artifact;
use fhec_runtime::artifact::Kind;
use fhec_runtime::artifact::Tagged;
use fhec_runtime::fhe::OutputCiphertexts;
use std::path::PathBuf;

/// Decrypt and post-process results (client side).
#[derive(Args)]
pub struct DecryptArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub keys: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// A training plan's directory: the feature scaling `fhec encrypt` wrote (DATA.owner.json); the
    /// output is then the trained ONNX model.
    #[arg(long)]
    pub owner: Option<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: DecryptArgs, g: &Global) -> Result<()> {
    let DecryptArgs { dir, keys, input, owner, output } = args;
    let protection = &g.protection;
    if fhec::train::deploy::is_training(&dir) {
        return super::train::split::decrypt(&dir, &keys, &input, owner.as_deref(), &output, g);
    }
    if owner.is_some() {
        anyhow::bail!("--owner is for a training plan's directory (fhec train plan); {} is a build", dir.display());
    }
    if fhec::ckks::is_ckks(&dir) {
        return ckks(&dir, &keys, &input, &output, g);
    }
    let (client, post) = tfhe::load_client(&dir)?;
    let (sk, fp) = tfhe::load_secret(&keys, protection)?;
    let (out, _): (Tagged<OutputCiphertexts>, _) = artifact::load(&input, Kind::Outputs)?;
    let outs = tfhe::decrypt(&client, &post, &sk, &fp, &out)?;
    write_outputs(Some(&output), &outs)?;
    Ok(())
}

/// Decrypts a CKKS build's results and runs the client's post-processing.
#[cfg(feature = "ckks")]
fn ckks(
    dir: &std::path::Path,
    keys: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    g: &Global,
) -> Result<()> {
    let side = fhec::ckks::deploy::ClientSide::load(dir, keys, &g.protection)?;
    let (out, _): (Tagged<Vec<u8>>, _) = artifact::load(input, Kind::CkksOutputs)?;
    write_outputs(Some(output), &side.decrypt(&out)?)?;
    Ok(())
}

#[cfg(not(feature = "ckks"))]
fn ckks(_: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &std::path::Path, _: &Global) -> Result<()> {
    super::ckks_missing()
}
