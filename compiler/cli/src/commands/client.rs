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
    /// Train on encrypted data through the server (data owner's side, CKKS): uploads KEYS/eval.key and
    /// the encrypted set, refreshes the weights between rounds, and writes the trained ONNX model.
    /// DIR is the `fhec train plan` directory, KEYS from `fhec keygen DIR`.
    Train {
        dir: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// Features (.npy, [samples, features]).
        #[arg(long)]
        input: PathBuf,
        /// Labels (.npy): 0/1 for logistic regression, targets for linear.
        #[arg(long)]
        labels: PathBuf,
        /// The trained model (ONNX, over raw features).
        #[arg(long, short)]
        output: PathBuf,
        /// The plan's name on the server (default: the directory's name without .fhec).
        #[arg(long)]
        model: Option<String>,
        /// Follow this job, submitted earlier from the same set, instead of submitting one (after
        /// an interruption on this side: the job kept running on the server).
        #[arg(long)]
        job: Option<String>,
    },
    /// This tenant's training jobs.
    Jobs,
    /// Delete a training job (its round stops if it runs).
    Cancel { id: String },
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
                if m.training {
                    println!(
                        "{}: training plan (CKKS), {} samples x {} features, keys for {}",
                        m.name, m.max_samples, m.inputs, m.params
                    );
                    continue;
                }
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
        ClientCommand::Train { dir, keys, input, labels, output, model, job } => {
            let files = TrainFiles { dir, keys, input, labels, output };
            train(remote, &files, model, job, protection, quiet).await?;
        }
        ClientCommand::Jobs => {
            for j in remote.jobs().await? {
                println!(
                    "{}  {}  {:?}  {}/{} iterations  {}",
                    j.id,
                    j.model,
                    j.status,
                    j.done,
                    j.total,
                    j.message.unwrap_or_default()
                );
            }
        }
        ClientCommand::Cancel { id } => {
            if !remote.delete_job(&id).await? {
                bail!("the server has no training job {id} for this tenant");
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

/// The files `fhec client train` reads and writes.
#[cfg_attr(not(feature = "ckks"), allow(dead_code))]
struct TrainFiles {
    dir: PathBuf,
    keys: PathBuf,
    input: PathBuf,
    labels: PathBuf,
    output: PathBuf,
}

/// `fhec client train`: the data owner's side of a training job.
#[cfg(feature = "ckks")]
async fn train(
    remote: &fhec_serve::client::Remote,
    files: &TrainFiles,
    model: Option<String>,
    job: Option<String>,
    protection: &fhec::keyfile::Protection,
    quiet: bool,
) -> Result<()> {
    let TrainFiles { dir, keys, input, labels, output } = files;
    let owner = fhec::train::deploy::Owner::load(dir, keys, protection)?;
    let ds = fhec::train::Dataset::read(input, labels)?;
    let name = model.unwrap_or_else(|| served_name(dir));
    let pb = spinner(quiet, "uploading the key and the encrypted set");
    let start = std::time::Instant::now();
    let poll = Duration::from_secs(1);
    let mut announced = false;
    let show = |job: &fhec_serve::jobs::JobMeta| {
        if !announced {
            pb.suspend(|| {
                eprintln!(
                    "training job {} (if this side is interrupted, follow it again with --job {})",
                    job.id, job.id
                )
            });
            announced = true;
        }
        pb.set_message(
            format!("job {}: {:?}, {} of {} iterations", &job.id[..8], job.status, job.done, job.total).to_lowercase(),
        )
    };
    let trained = match job {
        Some(id) => {
            let scaling = owner.scaling(&ds);
            fhec_serve::roundtrip::follow(remote, &owner, &id, &scaling, poll, show).await?
        }
        None => {
            let path = keys.join("eval.key");
            let eval_key = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            fhec_serve::roundtrip::train(remote, &name, &owner, eval_key, &ds, poll, show).await?
        }
    };
    pb.finish_and_clear();
    std::fs::write(output, &trained.onnx).with_context(|| format!("writing {}", output.display()))?;
    let server_s: f64 = trained.job.round_seconds.iter().sum();
    println!(
        "trained {} on the server ({} rounds, {:.1} s of server time; {:.1} s here; {:.1} s in all), sent {:.1} MB, received {:.1} MB: wrote {}",
        trained.job.model,
        trained.job.rounds,
        server_s,
        trained.client_s,
        start.elapsed().as_secs_f64(),
        trained.uploaded as f64 / 1e6,
        trained.downloaded as f64 / 1e6,
        output.display()
    );
    Ok(())
}

#[cfg(not(feature = "ckks"))]
async fn train(
    _: &fhec_serve::client::Remote,
    _: &TrainFiles,
    _: Option<String>,
    _: Option<String>,
    _: &fhec::keyfile::Protection,
    _: bool,
) -> Result<()> {
    bail!(
        "training runs on CKKS, which this fhec was built without (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec-cli --features ckks`"
    )
}
