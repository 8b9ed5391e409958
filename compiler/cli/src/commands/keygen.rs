//! `fhec keygen`: generate a secret key (client) and an evaluation key (server).

use super::spinner;
use crate::Global;
use anyhow::Result;
use clap::Args;
use fhec::tfhe;
use std::path::PathBuf;

/// Generate a secret key (client) and an evaluation key (server) into KEYS/.
#[derive(Args)]
pub struct KeygenArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub keys: PathBuf,
}

pub fn run(args: KeygenArgs, g: &Global) -> Result<()> {
    let KeygenArgs { dir, keys } = args;
    let quiet = g.quiet;
    let protection = &g.protection;
    let client = tfhe::load_client(&dir)?.0;
    let pb = spinner(quiet, "generating keys");
    let (size, took) = tfhe::keygen(&keys, client.params, protection)?;
    pb.finish_and_clear();
    if matches!(protection, fhec::keyfile::Protection::None) {
        eprintln!(
            "note: secret.key is stored unencrypted (mode 0600); set FHEC_PASSPHRASE or --passphrase-file to seal it"
        );
    }
    println!(
        "keys for {} ({}): {}/secret.key (client only), {}/eval.key ({:.1} MB, for the server); {:.2} s",
        client.model,
        client.params,
        keys.display(),
        keys.display(),
        size as f64 / 1e6,
        took.as_secs_f64()
    );
    Ok(())
}
