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
    if fhec::train::deploy::is_training(&dir) {
        return super::train::split::keygen(&dir, &keys, g);
    }
    if fhec::ckks::is_ckks(&dir) {
        return ckks(&dir, &keys, g);
    }
    let client = tfhe::load_client(&dir)?.0;
    let pb = spinner(quiet, "generating keys");
    let (size, took) = tfhe::keygen(&keys, client.params, protection)?;
    pb.finish_and_clear();
    unsealed_note(protection);
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

fn unsealed_note(protection: &fhec::keyfile::Protection) {
    if matches!(protection, fhec::keyfile::Protection::None) {
        eprintln!(
            "note: secret.key is stored unencrypted (mode 0600); set FHEC_PASSPHRASE or --passphrase-file to seal it"
        );
    }
}

/// Keys for a CKKS build: the secret (client) and the relinearization and rotation keys (server).
#[cfg(feature = "ckks")]
fn ckks(dir: &std::path::Path, keys: &std::path::Path, g: &Global) -> Result<()> {
    let client = fhec::ckks::load_client(dir)?;
    let pb = spinner(g.quiet, "generating keys");
    let (size, rotations, took) = fhec::ckks::deploy::keygen(dir, keys, &g.protection)?;
    pb.finish_and_clear();
    unsealed_note(&g.protection);
    println!(
        "keys for {} (CKKS, ring 2^{}): {}/secret.key (client only), {}/eval.key ({:.1} MB: relinearization and {rotations} rotation keys, for the server); {:.2} s",
        client.model,
        client.layout.ring.log_n,
        keys.display(),
        keys.display(),
        size as f64 / 1e6,
        took.as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "ckks"))]
fn ckks(_: &std::path::Path, _: &std::path::Path, _: &Global) -> Result<()> {
    super::ckks_missing()
}
