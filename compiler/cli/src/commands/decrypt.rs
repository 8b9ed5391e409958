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
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: DecryptArgs, g: &Global) -> Result<()> {
    let DecryptArgs { dir, keys, input, output } = args;
    let protection = &g.protection;
    let (client, post) = tfhe::load_client(&dir)?;
    let (sk, fp) = tfhe::load_secret(&keys, protection)?;
    let (out, _): (Tagged<OutputCiphertexts>, _) = artifact::load(&input, Kind::Outputs)?;
    let outs = tfhe::decrypt(&client, &post, &sk, &fp, &out)?;
    write_outputs(Some(&output), &outs)?;
    Ok(())
}
