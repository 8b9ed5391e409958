//! `fhec client`: talk to an `fhec serve` server.

use super::{runtime, served_name, spinner};
use crate::Global;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// Talk to an `fhec serve` server.
#[derive(Args)]
pub struct ClientArgs {
    /// The server, e.g. https://fhec.example.org or http://127.0.0.1:8080.
    #[arg(long, env = "FHEC_SERVER")]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "FHEC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust only these certificates (PEM) for an https server, e.g. a private CA; default: the system's.
    #[arg(long, env = "FHEC_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ClientCommand,
}

pub fn run(args: ClientArgs, g: &Global) -> Result<()> {
    let ClientArgs { server, token, ca_cert, command } = args;
    let quiet = g.quiet;
    let protection = &g.protection;
    let remote = fhec_serve::client::Remote::new(&server, token, ca_cert.as_deref())?;
    runtime()?.block_on(client_command(&remote, command, protection, quiet))?;
    Ok(())
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// The models the server serves.
    Models,
    /// Upload KEYS/eval.key (idempotent); prints its id.
    Register {
        #[arg(long)]
        keys: PathBuf,
    },
    /// This tenant's keys on the server.
    Keys,
    /// Delete a key from the server.
    Delete { id: String },
    /// Load test: concurrent clients send encrypted requests; every answer is decrypted and checked
    /// against the local cleartext simulation. Prints throughput, latency percentiles, rejections.
    Loadtest {
        dir: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// Samples (.npy) to send, cycled.
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 16)]
        requests: usize,
        /// Samples per request.
        #[arg(long, default_value_t = 1)]
        samples: usize,
        /// The model's name on the server (default: the directory's name without .fhec).
        #[arg(long)]
        model: Option<String>,
        /// Attempts after a refusal (429/503) before a client gives up on a request.
        #[arg(long, default_value_t = 30)]
        retries: u32,
        /// Also write the numbers as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

async fn client_command(
    remote: &fhec_serve::client::Remote,
    command: ClientCommand,
    protection: &fhec::keyfile::Protection,
    quiet: bool,
) -> Result<()> {
    match command {
        ClientCommand::Models => {
            for m in remote.models().await? {
                match m.samples_per_ciphertext {
                    Some(per) => println!(
                        "{}: CKKS, {} inputs, {} outputs, {per} samples per ciphertext, up to {} per request, keys for {}",
                        m.name, m.inputs, m.outputs, m.max_samples, m.params
                    ),
                    None => println!(
                        "{}: TFHE, {} inputs, {} outputs, {} PBS per sample, up to {} samples per request, parameter set {}",
                        m.name, m.inputs, m.outputs, m.pbs_per_sample, m.max_samples, m.params
                    ),
                }
            }
        }
        ClientCommand::Register { keys } => {
            let path = keys.join("eval.key");
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let meta = remote.register_key(bytes).await?;
            println!("{}", meta.id);
            eprintln!(
                "registered {} ({:.1} MB, {}); expires in {:.1} h",
                path.display(),
                meta.bytes as f64 / 1e6,
                meta.params,
                meta.expires.saturating_sub(meta.created) as f64 / 3600.0
            );
        }
        ClientCommand::Keys => {
            for k in remote.keys().await? {
                println!("{}  {}  {:.1} MB  expires {}", k.id, k.params, k.bytes as f64 / 1e6, k.expires);
            }
        }
        ClientCommand::Delete { id } => {
            if !remote.delete_key(&id).await? {
                bail!("the server has no key {id} for this tenant");
            }
            println!("deleted {id}");
        }
        ClientCommand::Loadtest { dir, keys, input, clients, requests, samples, model, retries, json } => {
            let mut remote = remote.clone();
            remote.retries = retries;
            let remote = &remote;
            let x = fhec::npy::read_samples(&input)?;
            let session = std::sync::Arc::new(fhec_serve::roundtrip::Session::load(&dir, &keys, protection)?);
            // What every answer must decrypt to: the cleartext simulation of the same circuit.
            let sim = session.simulate(&dir, &x)?;
            let expected = fhec::metrics::predicted_classes(&sim[0].1)?;
            let name = model.unwrap_or_else(|| served_name(&dir));
            let pb = spinner(quiet, "load test running");
            let report = fhec_serve::roundtrip::loadtest(
                remote,
                &name,
                session,
                &x,
                &expected,
                fhec_serve::roundtrip::Load { clients, requests, samples },
            )
            .await?;
            pb.finish_and_clear();
            print!("{}", report.text());
            for e in report.errors.iter().take(5) {
                eprintln!("error: {e}");
            }
            if let Some(path) = json {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                let j = serde_json::json!({
                    "model": name, "clients": clients, "requests": requests, "samples_per_request": samples,
                    "completed": report.completed, "gave_up": report.gave_up, "failed": report.failed, "wrong_samples": report.wrong, "rejected_429_503": report.rejected,
                    "wall_s": report.wall.as_secs_f64(),
                    "requests_per_s": report.completed as f64 / report.wall.as_secs_f64().max(1e-9),
                    "p50_ms": ms(report.percentile(0.5)), "p99_ms": ms(report.percentile(0.99)),
                });
                std::fs::write(&path, serde_json::to_string_pretty(&j)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if report.failed > 0 || report.wrong > 0 {
                bail!("{} requests failed and {} samples came back wrong", report.failed, report.wrong);
            }
        }
    }
    Ok(())
}
