//! The `fhec` command line.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fhec::Stacked;
use fhec::fhe as pipeline;
use fhec_ir::DataMode;
use fhec_runtime::artifact::{self, Kind, Tagged};
use fhec_runtime::fhe::{InputCiphertexts, OutputCiphertexts};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "fhec", version, about = "Compile ONNX models to programs that run on encrypted data")]
struct Cli {
    /// No progress output (for scripts).
    #[arg(long, global = true)]
    quiet: bool,
    /// Worker threads for encrypted evaluation (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// What runs cleartext simulations (`build`'s precision search, `predict --mode simulate`): the
    /// JIT when the runs repay its compile time (auto), always the JIT, or the interpreter. The
    /// results are identical.
    #[arg(long, global = true, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// Same as --engine interpreter.
    #[arg(long, global = true)]
    no_jit: bool,
    /// Secret keys at rest: read the passphrase that seals `secret.key` from this file (or set
    /// FHEC_PASSPHRASE). `keygen` seals with it; commands that read the key unseal with it.
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    /// Secret keys at rest, with a key-management service: a shell command that reads a 32-byte data
    /// key on stdin and prints it wrapped (e.g. by a cloud KMS); used by `keygen`.
    #[arg(long, global = true, requires = "key_unwrap_command")]
    key_wrap_command: Option<String>,
    /// The command that reads the wrapped data key on stdin and prints the 32-byte key.
    #[arg(long, global = true)]
    key_unwrap_command: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum SchemeArg {
    /// TFHE (tfhe-rs): one value per ciphertext, exact tables; lowest latency for few samples.
    Tfhe,
    /// CKKS (poulpy): thousands of samples per ciphertext, polynomial activations; highest
    /// throughput for large batches.
    Ckks,
    /// The one with the lower estimated time for --batch samples.
    Auto,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum PackingArg {
    /// One sample per slot, thousands per ciphertext: throughput; one sample costs a whole batch.
    BatchMajor,
    /// One sample per block of slots, each layer a matrix-vector product with rotations: latency.
    FeatureMajor,
    /// Both lowered; the one with the lower estimated time for --batch samples is kept.
    Auto,
}

impl PackingArg {
    fn packings(self) -> &'static [fhec_ckks::Packing] {
        use fhec_ckks::Packing::*;
        match self {
            PackingArg::BatchMajor => &[BatchMajor],
            PackingArg::FeatureMajor => &[FeatureMajor],
            PackingArg::Auto => &[BatchMajor, FeatureMajor],
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum FitArg {
    /// Interpolation at the Chebyshev nodes of each window (near-best uniformly).
    Chebyshev,
    /// Least squares on where calibration put each layer's inputs, the window's grid beside them.
    LeastSquares,
    /// Both offered; per layer the cheapest that keeps the budget wins.
    Auto,
}

impl FitArg {
    fn fits(self) -> Vec<fhec_lower::Fit> {
        use fhec_lower::Fit::*;
        match self {
            FitArg::Chebyshev => vec![Chebyshev],
            FitArg::LeastSquares => vec![LeastSquares],
            FitArg::Auto => vec![Chebyshev, LeastSquares],
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum TableRangesArg {
    Calibrated,
    Bound,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Auto,
    Jit,
    Interpreter,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Cleartext execution of the compiled integer circuit (no encryption, no noise).
    Simulate,
    /// Real encryption: key generation, encrypt, run, decrypt, all locally.
    Fhe,
}

#[derive(Subcommand)]
enum Command {
    /// Print the model's IR (constant data elided unless --full).
    Inspect {
        model: PathBuf,
        /// Print every constant value (the output then parses back as IR).
        #[arg(long)]
        full: bool,
    },
    /// Compile a model for encrypted inference: client and server artifacts and a report.
    Build {
        model: PathBuf,
        /// Calibration samples (.npy, samples along axis 0): they set the input ranges. Optional for a
        /// pre-quantized model (ONNX QDQ or QOperator), whose input quantizer sets them.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Output directory (default: MODEL with the extension .fhec).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// tfhe-rs parameter set (default: the cheapest that keeps the accuracy budget).
        #[arg(long)]
        params: Option<String>,
        /// Bits of the integer weights applied to bootstrap outputs (default: chosen by accuracy).
        #[arg(long)]
        weight_bits: Option<u32>,
        /// log2 of the probability that noise corrupts one bootstrap.
        #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
        failure_log2: f64,
        /// What each table covers: the range its input took on the calibration samples, doubled
        /// (calibrated: finer, an input far outside wraps to a clipped value), or the interval bound
        /// of every input the client can send (bound: no input ever leaves its table).
        #[arg(long, value_enum, default_value_t = TableRangesArg::Calibrated)]
        table_ranges: TableRangesArg,
        /// Points of agreement with the float model's class the compiled model may lose on the
        /// calibration set (classifiers), in noisy simulation.
        #[arg(long, default_value_t = 0.2)]
        accuracy_budget: f64,
        /// For continuous outputs (regressors): the RMS error the compiled model may add, in percent
        /// of the output's spread over the calibration set.
        #[arg(long, default_value_t = 5.0)]
        error_budget: f64,
        /// 0: the naive lowering (one table per univariate op, max pools as written); 1: the e-graph
        /// optimizer (fused tables, max pooling before monotone activations).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        opt_level: u8,
        /// Optimizer limit: e-graph nodes.
        #[arg(long, default_value_t = 50_000)]
        egg_node_limit: usize,
        /// Optimizer limit: rewrite iterations.
        #[arg(long, default_value_t = 30)]
        egg_iter_limit: usize,
        /// Optimizer limit: seconds of equality saturation.
        #[arg(long, default_value_t = 5.0)]
        egg_time_limit: f64,
        /// The FHE scheme: tfhe, ckks (needs --calibration), or auto (the cheaper for --batch).
        #[arg(long, value_enum, default_value_t = SchemeArg::Tfhe)]
        scheme: SchemeArg,
        /// CKKS packing: batch-major (throughput), feature-major (latency), or auto (the cheaper for --batch).
        #[arg(long, value_enum, default_value_t = PackingArg::BatchMajor)]
        packing: PackingArg,
        /// CKKS: how polynomials approximate activations (the e-graph's rules).
        #[arg(long, value_enum, default_value_t = FitArg::Auto)]
        polynomial_fit: FitArg,
        /// With --scheme auto or --packing auto: how many samples a request carries (the workload to optimize for).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Generate a secret key (client) and an evaluation key (server) into KEYS/.
    Keygen {
        dir: PathBuf,
        #[arg(long)]
        keys: PathBuf,
    },
    /// Encode and encrypt samples (client side).
    Encrypt {
        dir: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Run the model on ciphertexts (server side: reads only the evaluation key).
    Run {
        dir: PathBuf,
        #[arg(long)]
        eval_key: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Decrypt and post-process results (client side).
    Decrypt {
        dir: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Benchmark a build: latency, batch throughput on 1 and all threads, against the physical limit.
    Bench {
        dir: PathBuf,
        /// Samples (.npy): the first one for latency, the first --batch ones for throughput.
        #[arg(long)]
        input: PathBuf,
        /// Latency runs (median, min and max are reported); for a CKKS build, full batches.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Samples per batch for the throughput runs (TFHE; a CKKS batch fills every slot).
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Also write the numbers as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Serve compiled models over HTTP: evaluation-key sessions and encrypted inference (see
    /// deploy/README.md). Holds no secret key.
    Serve {
        /// Build directories to serve, as DIR (named after the directory, without .fhec) or NAME=DIR.
        #[arg(required = true)]
        models: Vec<String>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where evaluation keys are kept (share it between replicas to let any replica serve any key).
        #[arg(long, default_value = "fhec-keys")]
        store: PathBuf,
        /// Bearer tokens: a file of `TENANT TOKEN` lines.
        #[arg(long, env = "FHEC_TOKENS_FILE")]
        tokens: Option<PathBuf>,
        /// No authentication: every caller is one tenant (local development only).
        #[arg(long, conflicts_with = "tokens")]
        allow_anonymous: bool,
        /// Requests evaluated at once (each uses every worker thread).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Requests that may wait for a worker; beyond them the server answers 429.
        #[arg(long, default_value_t = 8)]
        queue: usize,
        /// Hours an evaluation key is kept after its last upload.
        #[arg(long, default_value_t = 168.0)]
        key_ttl_hours: f64,
        #[arg(long, default_value_t = 64)]
        max_key_mb: usize,
        #[arg(long, default_value_t = 64)]
        max_request_mb: usize,
        /// Samples per inference request.
        #[arg(long, default_value_t = 256)]
        max_samples: usize,
        /// Seconds from a request's arrival to its answer, waiting included.
        #[arg(long, default_value_t = 300)]
        request_timeout: u64,
        /// Decompressed evaluation keys kept in memory.
        #[arg(long, default_value_t = 4)]
        key_cache: usize,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Serve HTTPS with this certificate chain (PEM, leaf first); reloaded when the file changes.
        #[arg(long, env = "FHEC_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, env = "FHEC_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Talk to an `fhec serve` server.
    Client {
        /// The server, e.g. https://fhec.example.org or http://127.0.0.1:8080.
        #[arg(long, env = "FHEC_SERVER")]
        server: String,
        /// Bearer token.
        #[arg(long, env = "FHEC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Trust only these certificates (PEM) for an https server, e.g. a private CA; default: the system's.
        #[arg(long, env = "FHEC_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Predict: with MODEL.onnx the float reference; with a build directory, --mode simulate or fhe.
    Predict {
        model: PathBuf,
        /// Samples along axis 0, each shaped like the model input without its batch dimension.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the first output; further outputs go to <stem>.<output name>.npy beside it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Labels (.npy) to score the first output against: accuracy, or RMSE and R².
        #[arg(long)]
        labels: Option<PathBuf>,
        /// For a build directory: simulate (cleartext circuit) or fhe (encrypted).
        #[arg(long, value_enum, default_value_t = Mode::Simulate)]
        mode: Mode,
        /// With --mode simulate: add the parameter set's noise (what an encrypted run sees), drawn
        /// from this seed.
        #[arg(long)]
        noise_seed: Option<u64>,
        /// Run on an `fhec serve` server (encrypting and decrypting here, with --keys).
        #[arg(long, env = "FHEC_SERVER", requires = "keys")]
        server: Option<String>,
        /// With --server: the keys from `fhec keygen`.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// With --server: the bearer token.
        #[arg(long, env = "FHEC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// With an https --server: trust only these certificates (PEM); default: the system's.
        #[arg(long, env = "FHEC_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// With --server: the model's name there (default: the build directory's name without .fhec).
        #[arg(long)]
        remote_model: Option<String>,
        /// With --server: samples per request.
        #[arg(long, default_value_t = 16)]
        batch: usize,
    },
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum ClientCommand {
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

/// The model name a build directory is served under: its file name without `.fhec`.
fn served_name(dir: &Path) -> String {
    let name = dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    name.strip_suffix(".fhec").map_or(name.clone(), str::to_string)
}

fn protection(cli: &Cli) -> Result<fhec::keyfile::Protection> {
    use fhec::keyfile::Protection;
    let pass = match (&cli.passphrase_file, std::env::var("FHEC_PASSPHRASE")) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    Ok(match (pass, &cli.key_wrap_command, &cli.key_unwrap_command) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            bail!("give a passphrase or key-management commands, not both")
        }
        (Some(p), _, _) => Protection::Passphrase(zeroize::Zeroizing::new(p)),
        (None, Some(wrap), Some(unwrap)) => Protection::Command { wrap: wrap.clone(), unwrap: unwrap.clone() },
        (None, None, Some(unwrap)) => Protection::Command { wrap: String::new(), unwrap: unwrap.clone() },
        (None, Some(_), None) => bail!("--key-wrap-command needs --key-unwrap-command"),
        (None, None, None) => Protection::None,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spinner(quiet: bool, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn bar(quiet: bool, n: usize, msg: &'static str) -> ProgressBar {
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

fn write_outputs(output: Option<&Path>, outs: &[(String, Stacked)]) -> Result<()> {
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

fn score_line(outs: &[(String, Stacked)], labels: Option<&PathBuf>) -> Result<String> {
    Ok(match labels {
        Some(p) => format!("{}, ", fhec::metrics::score(&outs[0].1, &fhec::metrics::read_labels(p)?)?),
        None => String::new(),
    })
}

async fn client_command(
    remote: &fhec::serve::client::Remote,
    command: ClientCommand,
    protection: &fhec::keyfile::Protection,
    quiet: bool,
) -> Result<()> {
    match command {
        ClientCommand::Models => {
            for m in remote.models().await? {
                println!(
                    "{}: {} inputs, {} outputs, {} PBS per sample, parameter set {}",
                    m.name, m.inputs, m.outputs, m.pbs_per_sample, m.params
                );
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
            let session = std::sync::Arc::new(fhec::serve::roundtrip::Session::load(&dir, &keys, protection)?);
            // What every answer must decrypt to: the cleartext simulation of the same circuit.
            let (server, _) = pipeline::load_server(&dir)?;
            let sim = pipeline::simulate(
                &session.client,
                &session.post,
                &server,
                &x,
                None,
                fhec_lower::Engine::Auto,
                |_| (),
            )?;
            let expected = fhec::metrics::predicted_classes(&sim[0].1)?;
            let name = model.unwrap_or_else(|| served_name(&dir));
            let pb = spinner(quiet, "load test running");
            let report = fhec::serve::roundtrip::loadtest(
                remote,
                &name,
                session,
                &x,
                &expected,
                fhec::serve::roundtrip::Load { clients, requests, samples },
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

/// `--scheme auto`: with the TFHE build already in `dir`, lowers for CKKS too and keeps the scheme
/// with the lower estimated time for `batch` samples on `threads` workers; the other's files go, and
/// the report states both estimates.
#[allow(clippy::too_many_arguments)]
fn choose_scheme(
    model: &Path,
    x: &ndarray::ArrayD<f32>,
    dir: &Path,
    search: &fhec_lower::CkksSearch,
    packings: &[fhec_ckks::Packing],
    tfhe: &fhec_lower::Choice,
    tfhe_report: String,
    batch: usize,
    threads: usize,
) -> Result<String> {
    let circuit = &tfhe.compiled.circuit;
    // One sample: the latency estimate; a batch: bootstraps spread over the workers, in batches.
    let tfhe_ms = pipeline::estimated_latency_ms(circuit, threads)
        .max(batch as f64 * circuit.pbs.len() as f64 * circuit.params.batched_pbs_ms() / threads as f64);
    // The CKKS build writes its own reports over the TFHE build's: keep the TFHE JSON report.
    let json_path = dir.join("report.json");
    let tfhe_json = std::fs::read(&json_path).with_context(|| format!("reading {}", json_path.display()))?;
    let remove = |p: PathBuf| std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()));
    let (text, line) = match fhec::ckks::build(model, x, dir, search, packings, batch, threads) {
        Ok((choice, ring, ckks_report)) => {
            let ckks_ms = choice.compiled.plan.estimated_ms(ring, choice.packing, batch, threads);
            let faster = ckks_ms < tfhe_ms;
            let use_ckks = faster && choice.within_budget;
            let line = format!(
                "scheme (--scheme auto, batch of {batch} on {threads} threads): {} — estimated TFHE {tfhe_ms:.0} ms, CKKS {ckks_ms:.0} ms ({}){}\n",
                if use_ckks { "CKKS" } else { "TFHE" },
                choice.packing.name(),
                if faster && !use_ckks { "; CKKS would be faster but misses the accuracy budget" } else { "" }
            );
            if use_ckks {
                remove(pipeline::client_path(dir))?;
                remove(pipeline::server_path(dir))?;
                (ckks_report, line)
            } else {
                remove(fhec::ckks::plan_path(dir))?;
                std::fs::write(&json_path, &tfhe_json).with_context(|| format!("writing {}", json_path.display()))?;
                (tfhe_report, line)
            }
        }
        Err(e) => (tfhe_report, format!("scheme (--scheme auto): TFHE; CKKS does not apply: {e}\n")),
    };
    let text = format!("{line}{text}");
    std::fs::write(dir.join("report.txt"), &text)
        .with_context(|| format!("writing {}", dir.join("report.txt").display()))?;
    Ok(text)
}

/// `fhec predict` on a CKKS build: the cleartext simulation, or (in an fhec built with the `ckks`
/// feature) an encrypted run in batches of the ring's slots.
fn predict_ckks(
    dir: &Path,
    x: &ndarray::ArrayD<f32>,
    mode: Mode,
    noise_seed: Option<u64>,
    labels: Option<&PathBuf>,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let loaded = fhec::ckks::load(dir)?;
    let samples = x.shape().first().copied().unwrap_or(0);
    let n = samples.max(1) as f64;
    if noise_seed.is_some() {
        bail!(
            "--noise-seed is for TFHE builds; a CKKS simulation is exact up to CKKS's approximation error (about 1e-4 of the outputs)"
        );
    }
    let outs = match mode {
        Mode::Simulate => {
            let start = Instant::now();
            let (outs, reads) = loaded.simulate(x)?;
            println!(
                "{samples} samples, {}{:.3} ms/sample (simulated CKKS polynomials, not encrypted); polynomial reads outside their window: {} of {}",
                score_line(&outs, labels)?,
                start.elapsed().as_secs_f64() * 1e3 / n,
                reads.outside,
                reads.total
            );
            outs
        }
        Mode::Fhe => ckks_fhe(&loaded, x, labels, quiet)?,
    };
    write_outputs(output, &outs)
}

#[cfg(feature = "ckks")]
fn ckks_fhe(
    loaded: &fhec::ckks::Loaded,
    x: &ndarray::ArrayD<f32>,
    labels: Option<&PathBuf>,
    quiet: bool,
) -> Result<Vec<(String, Stacked)>> {
    let samples = x.shape().first().copied().unwrap_or(0);
    let pb = bar(quiet, samples, "encrypted inference (CKKS batches)");
    let run = fhec::ckks::fhe(loaded, x, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    let n = samples.max(1) as f64;
    let total = run.client + run.server;
    println!(
        "{samples} samples, {}{:.3} ms/sample encrypted under CKKS ({}: {} batch{} of up to {} samples: client {:.2} s, server {:.2} s, {:.0} samples/s); keygen {:.2} s; largest distance from the simulation {:.1e}",
        score_line(&run.outputs, labels)?,
        total.as_secs_f64() * 1e3 / n,
        loaded.packing.name(),
        run.batches,
        if run.batches == 1 { "" } else { "es" },
        run.batch_size,
        run.client.as_secs_f64(),
        run.server.as_secs_f64(),
        n / total.as_secs_f64(),
        run.keygen.as_secs_f64(),
        run.max_error
    );
    Ok(run.outputs)
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

#[cfg(not(feature = "ckks"))]
fn bench_ckks(_: &Path, _: &ndarray::ArrayD<f32>, _: usize, _: &str, _: bool) -> Result<(String, serde_json::Value)> {
    ckks_missing()
}

/// Encrypted CKKS runs in an fhec built without poulpy.
#[cfg(not(feature = "ckks"))]
fn ckks_missing<T>() -> Result<T> {
    bail!(
        "this fhec was built without CKKS encryption (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec --features ckks`, or use --mode simulate"
    )
}

#[cfg(not(feature = "ckks"))]
fn ckks_fhe(
    _: &fhec::ckks::Loaded,
    _: &ndarray::ArrayD<f32>,
    _: Option<&PathBuf>,
    _: bool,
) -> Result<Vec<(String, Stacked)>> {
    ckks_missing()
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    let protection = protection(&cli)?;
    let engine = match (cli.no_jit, cli.engine) {
        (true, _) | (_, EngineArg::Interpreter) => fhec_lower::Engine::Interpreter,
        (false, EngineArg::Auto) => fhec_lower::Engine::Auto,
        (false, EngineArg::Jit) => fhec_lower::Engine::Jit,
    };
    let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("starting the worker pool")?;
    match cli.command {
        Command::Inspect { model, full } => {
            let m = fhec::load_model(&model)?;
            print!("{}", m.to_text(if full { DataMode::Full } else { DataMode::Elided }));
        }
        Command::Build {
            model,
            calibration,
            output,
            params,
            weight_bits,
            failure_log2,
            table_ranges,
            accuracy_budget,
            error_budget,
            opt_level,
            egg_node_limit,
            egg_iter_limit,
            egg_time_limit,
            scheme,
            packing,
            polynomial_fit,
            batch,
        } => {
            let mut search = fhec_lower::Search::default();
            if !(egg_time_limit > 0.0 && egg_time_limit <= 3600.0) {
                bail!("--egg-time-limit is in seconds, more than 0 and at most 3600");
            }
            if egg_node_limit == 0 || egg_iter_limit == 0 {
                bail!("--egg-node-limit and --egg-iter-limit must be at least 1");
            }
            search.optimize = fhec_lower::optimize::Config {
                level: opt_level,
                limits: fhec_lower::optimize::Limits {
                    nodes: egg_node_limit,
                    iterations: egg_iter_limit,
                    time: std::time::Duration::from_secs_f64(egg_time_limit),
                },
                only: None,
            };
            if let Some(bits) = weight_bits {
                if !(2..=16).contains(&bits) {
                    bail!("--weight-bits must be between 2 and 16");
                }
                search.weight_bits = vec![bits];
            }
            if let Some(name) = params {
                search.params = vec![fhec_runtime::ParamSet::from_name(&name)?];
            }
            if !(-200.0..=-1.0).contains(&failure_log2) {
                bail!("--failure-log2 must be between -200 and -1 (the default -40 means 2^-40 per bootstrap)");
            }
            if !(0.0..=100.0).contains(&accuracy_budget) {
                bail!("--accuracy-budget is in points, between 0 and 100");
            }
            search.failure_log2 = failure_log2;
            search.table_ranges = match table_ranges {
                TableRangesArg::Calibrated => fhec_lower::TableRanges::Calibrated,
                TableRangesArg::Bound => fhec_lower::TableRanges::Bound,
            };
            if !(0.0..=100.0).contains(&error_budget) {
                bail!("--error-budget is in percent of the output's spread, between 0 and 100");
            }
            search.budget_points = accuracy_budget;
            search.error_budget_percent = error_budget;
            search.engine = engine;
            let dir = output.unwrap_or_else(|| model.with_extension("fhec"));
            let x = calibration.as_deref().map(fhec::npy::read_samples).transpose()?;
            let start = Instant::now();
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let ckks_search = fhec_lower::CkksSearch {
                budget_points: accuracy_budget,
                error_budget_percent: error_budget,
                optimize: search.optimize.clone(),
                fits: polynomial_fit.fits(),
                ..fhec_lower::CkksSearch::default()
            };
            if scheme == SchemeArg::Tfhe && packing != PackingArg::BatchMajor {
                bail!("--packing is for CKKS builds (--scheme ckks or auto): TFHE holds one value per ciphertext");
            }
            if scheme == SchemeArg::Tfhe && polynomial_fit != FitArg::Auto {
                bail!("--polynomial-fit is for CKKS builds (--scheme ckks or auto): TFHE evaluates tables exactly");
            }
            if scheme != SchemeArg::Tfhe && x.is_none() {
                bail!("--scheme ckks and auto need --calibration: polynomial windows come from real samples");
            }
            if scheme == SchemeArg::Ckks {
                let pb = spinner(quiet, "fitting polynomials");
                let (choice, _, report) = fhec::ckks::build(
                    &model,
                    x.as_ref().expect("checked"),
                    &dir,
                    &ckks_search,
                    packing.packings(),
                    batch,
                    threads,
                )
                .with_context(|| format!("building {}", model.display()))?;
                pb.finish_and_clear();
                if !quiet {
                    print!("{report}");
                }
                if !choice.within_budget {
                    eprintln!(
                        "warning: no assignment of polynomials keeps the accuracy budget ({:.2}% fidelity needed, best {:.2}%); see report.txt",
                        choice.required, choice.fidelity
                    );
                }
                println!("\nwrote {} in {:.2} s", dir.display(), start.elapsed().as_secs_f64());
                return Ok(());
            }
            let pb = spinner(quiet, "choosing parameters");
            let mut tried = 0;
            let (choice, report) = pipeline::build(&model, x.as_ref(), &dir, &search, |t| {
                tried += 1;
                pb.set_message(format!(
                    "choosing parameters: {tried} candidates simulated (last: {}, {})",
                    t.options.params.name(),
                    t.fidelity.map_or("too noisy".into(), |f| format!("{f:.2}%"))
                ));
            })
            .with_context(|| format!("building {}", model.display()))?;
            pb.finish_and_clear();
            if let Some(why) = &choice.jit_fallback {
                eprintln!("warning: {why}");
            }
            let report = if scheme == SchemeArg::Auto {
                choose_scheme(
                    &model,
                    x.as_ref().expect("checked"),
                    &dir,
                    &ckks_search,
                    packing.packings(),
                    &choice,
                    report,
                    batch,
                    threads,
                )?
            } else {
                report
            };
            if !quiet {
                print!("{report}");
            }
            if !choice.within_budget {
                let synthetic = matches!(choice.calibration.0, fhec_lower::Origin::InputQuantizer { .. });
                eprintln!(
                    "warning: no candidate keeps the accuracy budget ({:.2}% fidelity needed, best {:.2}%); see report.txt{}",
                    choice.required,
                    choice.fidelity,
                    if synthetic {
                        "\n  (scored on samples drawn uniformly from the input quantizer's range, harsher than real data: \
                         check the accuracy with `fhec predict --mode simulate` on real samples, or build with --calibration)"
                    } else {
                        ""
                    }
                );
            }
            println!("\nwrote {} in {:.2} s", dir.display(), start.elapsed().as_secs_f64());
        }
        Command::Keygen { dir, keys } => {
            let client = pipeline::load_client(&dir)?.0;
            let pb = spinner(quiet, "generating keys");
            let (size, took) = pipeline::keygen(&keys, client.params, &protection)?;
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
        }
        Command::Encrypt { dir, keys, input, output } => {
            let (client, _) = pipeline::load_client(&dir)?;
            let (sk, fp) = pipeline::load_secret(&keys, &protection)?;
            let x = fhec::npy::read_samples(&input)?;
            let cts = pipeline::encrypt(&client, &sk, &fp, &x)?;
            artifact::save(&output, Kind::Inputs, &cts)?;
            let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
            println!(
                "encrypted {} samples ({} values) to {}: {bytes} bytes",
                cts.samples,
                cts.data.len(),
                output.display()
            );
        }
        Command::Run { dir, eval_key, input, output } => {
            let (server, digest) = pipeline::load_server(&dir)?;
            let (cts, _): (Tagged<InputCiphertexts>, _) = artifact::load(&input, Kind::Inputs)?;
            let pb = spinner(quiet, "loading the evaluation key");
            let (ek, fp) = pipeline::load_eval(&eval_key)?;
            pb.finish_and_clear();
            let pb = spinner(quiet, "running on ciphertexts");
            let start = Instant::now();
            let out = pipeline::run(&server, &digest, &ek, &fp, &cts)?;
            pb.finish_and_clear();
            artifact::save(&output, Kind::Outputs, &out)?;
            println!(
                "ran {} samples in {:.3} s ({:.1} ms/sample) to {}",
                cts.samples,
                start.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64() * 1e3 / cts.samples.max(1) as f64,
                output.display()
            );
        }
        Command::Decrypt { dir, keys, input, output } => {
            let (client, post) = pipeline::load_client(&dir)?;
            let (sk, fp) = pipeline::load_secret(&keys, &protection)?;
            let (out, _): (Tagged<OutputCiphertexts>, _) = artifact::load(&input, Kind::Outputs)?;
            let outs = pipeline::decrypt(&client, &post, &sk, &fp, &out)?;
            write_outputs(Some(&output), &outs)?;
        }
        Command::Bench { dir, input, runs, batch, json } => {
            let x = fhec::npy::read_samples(&input)?;
            let name = dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
            let (text, numbers) = if fhec::ckks::is_ckks(&dir) {
                bench_ckks(&dir, &x, runs, &name, quiet)?
            } else {
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
        }
        Command::Serve {
            models,
            listen,
            store,
            tokens,
            allow_anonymous,
            workers,
            queue,
            key_ttl_hours,
            max_key_mb,
            max_request_mb,
            max_samples,
            request_timeout,
            key_cache,
            log_format,
            tls_cert,
            tls_key,
        } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            match log_format {
                LogFormat::Json => logs.json().init(),
                LogFormat::Text => logs.init(),
            }
            let auth = match (tokens, allow_anonymous) {
                (Some(path), _) => fhec::serve::Auth::from_file(&path).map_err(anyhow::Error::msg)?,
                (None, true) => fhec::serve::Auth::Anonymous,
                (None, false) => {
                    bail!("give --tokens FILE (lines `TENANT TOKEN`) or, for local development, --allow-anonymous")
                }
            };
            if !(key_ttl_hours > 0.0 && key_ttl_hours <= 24.0 * 3650.0) {
                bail!("--key-ttl-hours must be more than 0 and at most ten years");
            }
            if workers == 0 || max_samples == 0 || key_cache == 0 || request_timeout == 0 {
                bail!("--workers, --max-samples, --key-cache and --request-timeout must be at least 1");
            }
            let models = models
                .iter()
                .map(|m| match m.split_once('=') {
                    Some((name, dir)) => (name.to_string(), PathBuf::from(dir)),
                    None => (served_name(Path::new(m)), PathBuf::from(m)),
                })
                .collect();
            let mut config = fhec::serve::Config::new(models, store, auth);
            config.workers = workers;
            config.queue = queue;
            config.key_ttl = Duration::from_secs_f64(key_ttl_hours * 3600.0);
            config.max_key_bytes = max_key_mb.saturating_mul(1 << 20);
            config.max_request_bytes = max_request_mb.saturating_mul(1 << 20);
            config.max_samples = max_samples;
            config.request_timeout = Duration::from_secs(request_timeout);
            config.key_cache = key_cache;
            let tls = match (&tls_cert, &tls_key) {
                (Some(cert), Some(key)) => {
                    Some(fhec::serve::tls::ServerTls::load(cert, key).map_err(anyhow::Error::msg)?)
                }
                _ => None,
            };
            let app = fhec::serve::App::new(config).map_err(anyhow::Error::msg)?;
            runtime()?.block_on(async move {
                let (listener, addr) =
                    fhec::serve::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
                let names: Vec<String> =
                    app.model_infos().iter().map(|m| format!("{} ({} PBS/sample)", m.name, m.pbs_per_sample)).collect();
                let scheme = if tls.is_some() { "https" } else { "http" };
                tracing::info!(%addr, scheme, threads, models = %names.join(", "), "serving");
                match tls {
                    Some(tls) => {
                        fhec::serve::serve(
                            app,
                            fhec::serve::tls::TlsListener::new(listener, tls)?,
                            fhec::serve::shutdown_signal(),
                        )
                        .await
                    }
                    None => fhec::serve::serve(app, listener, fhec::serve::shutdown_signal()).await,
                }
                .context("serving")
            })?;
        }
        Command::Client { server, token, ca_cert, command } => {
            let remote = fhec::serve::client::Remote::new(&server, token, ca_cert.as_deref())?;
            runtime()?.block_on(client_command(&remote, command, &protection, quiet))?;
        }
        Command::Predict {
            model,
            input,
            output,
            labels,
            mode,
            noise_seed,
            server,
            keys,
            token,
            ca_cert,
            remote_model,
            batch,
        } => {
            let x = fhec::npy::read_samples(&input)?;
            let n = x.shape().first().copied().unwrap_or(0).max(1) as f64;
            if let (Some(server), Some(keys)) = (server, keys) {
                let remote = fhec::serve::client::Remote::new(&server, token, ca_cert.as_deref())?;
                let session = fhec::serve::roundtrip::Session::load(&model, &keys, &protection)?;
                let name = remote_model.unwrap_or_else(|| served_name(&model));
                let samples = x.shape()[0];
                let pb = bar(quiet, samples, "encrypted inference on the server");
                let start = Instant::now();
                let run = runtime()?.block_on(fhec::serve::roundtrip::predict(
                    &remote,
                    &name,
                    &session,
                    &x,
                    batch,
                    |done| pb.set_position(done as u64),
                ))?;
                pb.finish_and_clear();
                println!(
                    "{samples} samples, {}{:.1} ms/sample on {server} ({} requests of up to {batch}; client {:.2} ms/sample, round trips {:.1} ms/sample; key {})",
                    score_line(&run.outputs, labels.as_ref())?,
                    start.elapsed().as_secs_f64() * 1e3 / n,
                    run.requests,
                    run.client.as_secs_f64() * 1e3 / n,
                    run.round_trips.as_secs_f64() * 1e3 / n,
                    &run.key_id[..16]
                );
                return write_outputs(output.as_deref(), &run.outputs);
            }
            if model.is_file() {
                let m = fhec::load_model(&model)?;
                let start = Instant::now();
                let outs = fhec::predict(&m, &x).with_context(|| format!("predicting {}", input.display()))?;
                let ms = start.elapsed().as_secs_f64() * 1e3 / n;
                println!(
                    "{} samples, {}{ms:.3} ms/sample (float reference, not encrypted)",
                    x.shape()[0],
                    score_line(&outs, labels.as_ref())?
                );
                return write_outputs(output.as_deref(), &outs);
            }
            if fhec::ckks::is_ckks(&model) {
                return predict_ckks(&model, &x, mode, noise_seed, labels.as_ref(), output.as_deref(), quiet);
            }
            let (client, post) = pipeline::load_client(&model)?;
            let (server, digest) = pipeline::load_server(&model)?;
            let outs = match mode {
                Mode::Simulate => {
                    let start = Instant::now();
                    let outs = pipeline::simulate(&client, &post, &server, &x, noise_seed, engine, |why| {
                        eprintln!("warning: {why}")
                    })?;
                    let ms = start.elapsed().as_secs_f64() * 1e3 / n;
                    println!(
                        "{} samples, {}{ms:.3} ms/sample (simulated integer circuit, {}, not encrypted)",
                        x.shape()[0],
                        score_line(&outs, labels.as_ref())?,
                        if noise_seed.is_some() { "with the noise model" } else { "noise-free" }
                    );
                    outs
                }
                Mode::Fhe => {
                    // Keys stay in memory; `size` is what eval.key would take on disk.
                    let pb = spinner(quiet, "generating keys");
                    let start = Instant::now();
                    let (sk, compressed) = fhec_runtime::fhe::keygen(client.params);
                    let keygen = start.elapsed();
                    let (bytes, fp) = artifact::eval_key_bytes(&compressed);
                    let size = bytes.len();
                    let ek = compressed.decompress();
                    pb.finish_and_clear();
                    let samples = x.shape()[0];
                    let pb = bar(quiet, samples, "encrypted inference");
                    let (mut client_t, mut server_t) = (Duration::ZERO, Duration::ZERO);
                    let mut per_sample = Vec::new();
                    for i in 0..samples {
                        let xi = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned();
                        let t = Instant::now();
                        let cts = pipeline::encrypt(&client, &sk, &fp, &xi)?;
                        client_t += t.elapsed();
                        let t = Instant::now();
                        let out = pipeline::run(&server, &digest, &ek, &fp, &cts)?;
                        server_t += t.elapsed();
                        let t = Instant::now();
                        per_sample.extend(pipeline::decrypt_samples(&client, &post, &sk, &fp, &out)?);
                        client_t += t.elapsed();
                        pb.inc(1);
                    }
                    pb.finish_and_clear();
                    let outs = fhec::stack_outputs(&post, per_sample);
                    println!(
                        "{samples} samples, {}{:.1} ms/sample encrypted (client {:.2} ms, server {:.1} ms); keygen {:.2} s, evaluation key {:.1} MB",
                        score_line(&outs, labels.as_ref())?,
                        (client_t + server_t).as_secs_f64() * 1e3 / n,
                        client_t.as_secs_f64() * 1e3 / n,
                        server_t.as_secs_f64() * 1e3 / n,
                        keygen.as_secs_f64(),
                        size as f64 / 1e6
                    );
                    outs
                }
            };
            write_outputs(output.as_deref(), &outs)?;
        }
    }
    Ok(())
}
