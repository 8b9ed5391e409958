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
    #[command(subcommand)]
    command: Command,
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
        /// Calibration samples (.npy, samples along axis 0): they set the input ranges.
        #[arg(long)]
        calibration: PathBuf,
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
        /// Latency runs (median, min and max are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Samples per batch for the throughput runs.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Also write the numbers as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
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
    },
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
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}/{eta}").expect("template").progress_chars("=> "));
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

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
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
            accuracy_budget,
            error_budget,
            opt_level,
            egg_node_limit,
            egg_iter_limit,
            egg_time_limit,
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
            if !(0.0..=100.0).contains(&error_budget) {
                bail!("--error-budget is in percent of the output's spread, between 0 and 100");
            }
            search.budget_points = accuracy_budget;
            search.error_budget_percent = error_budget;
            search.engine = engine;
            let dir = output.unwrap_or_else(|| model.with_extension("fhec"));
            let x = fhec::npy::read_samples(&calibration)?;
            let start = Instant::now();
            let pb = spinner(quiet, "choosing parameters");
            let mut tried = 0;
            let (choice, report) = pipeline::build(&model, &x, &dir, &search, |t| {
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
            if !quiet {
                print!("{report}");
            }
            if !choice.within_budget {
                eprintln!(
                    "warning: no candidate keeps the accuracy budget ({:.2}% fidelity needed, best {:.2}%); see report.txt",
                    choice.required, choice.fidelity
                );
            }
            println!("\nwrote {} in {:.2} s", dir.display(), start.elapsed().as_secs_f64());
        }
        Command::Keygen { dir, keys } => {
            let client = pipeline::load_client(&dir)?.0;
            let pb = spinner(quiet, "generating keys");
            let (size, took) = pipeline::keygen(&keys, client.params)?;
            pb.finish_and_clear();
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
            let (sk, fp) = pipeline::load_secret(&keys)?;
            let x = fhec::npy::read_samples(&input)?;
            let cts = pipeline::encrypt(&client, &sk, &fp, &x)?;
            artifact::save(&output, Kind::Inputs, &cts)?;
            let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
            println!("encrypted {} samples ({} values) to {}: {bytes} bytes", cts.samples, cts.data.len(), output.display());
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
            let (sk, fp) = pipeline::load_secret(&keys)?;
            let (out, _): (Tagged<OutputCiphertexts>, _) = artifact::load(&input, Kind::Outputs)?;
            let outs = pipeline::decrypt(&client, &post, &sk, &fp, &out)?;
            write_outputs(Some(&output), &outs)?;
        }
        Command::Bench { dir, input, runs, batch, json } => {
            let x = fhec::npy::read_samples(&input)?;
            let pb = spinner(quiet, "benchmarking (key generation, latency runs, batch runs)");
            let report = fhec::bench::bench(&dir, &x, runs, batch, threads)?;
            pb.finish_and_clear();
            let name = dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
            print!("{}", report.text(&name));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report.json(&name))?).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Predict { model, input, output, labels, mode, noise_seed } => {
            let x = fhec::npy::read_samples(&input)?;
            let n = x.shape().first().copied().unwrap_or(0).max(1) as f64;
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
            let (client, post) = pipeline::load_client(&model)?;
            let (server, digest) = pipeline::load_server(&model)?;
            let outs = match mode {
                Mode::Simulate => {
                    let start = Instant::now();
                    let outs = pipeline::simulate(&client, &post, &server, &x, noise_seed, engine, |why| eprintln!("warning: {why}"))?;
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
