//! The `fhec` command line: global options and one subcommand per file under `commands/`.
#![forbid(unsafe_code)]

mod commands;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "fhec", version, about = "Compile ONNX models to programs that run on encrypted data")]
pub struct Cli {
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
    /// Resource bound: elements of any one tensor a model declares or computes (default 2^28).
    #[arg(long, global = true, value_name = "N")]
    max_tensor_elements: Option<usize>,
    /// Resource bound: nodes of an ONNX graph (default 65536).
    #[arg(long, global = true, value_name = "N")]
    max_graph_nodes: Option<usize>,
    /// Resource bound: encrypted values of a circuit, the sum of its encrypted tensors' sizes
    /// (default 2^22).
    #[arg(long, global = true, value_name = "N")]
    max_encrypted_values: Option<usize>,
    /// Resource bound: bootstraps per sample of a circuit (default 2^20).
    #[arg(long, global = true, value_name = "N")]
    max_bootstraps: Option<usize>,
    /// Resource bound: memory a build may take, as estimated before it starts (default 3/4 of this
    /// machine's memory).
    #[arg(long, global = true, value_name = "MB")]
    max_compile_memory_mb: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Auto,
    Jit,
    Interpreter,
}

#[derive(Subcommand)]
enum Command {
    /// Print the model's IR (constant data elided unless --full).
    Inspect(commands::inspect::InspectArgs),
    /// Compile a model for encrypted inference: client and server artifacts and a report.
    Build(commands::build::BuildArgs),
    /// Generate a secret key (client) and an evaluation key (server) into KEYS/.
    Keygen(commands::keygen::KeygenArgs),
    /// Encode and encrypt samples (client side).
    Encrypt(commands::encrypt::EncryptArgs),
    /// Run the model on ciphertexts (server side: reads only the evaluation key).
    Run(commands::run::RunArgs),
    /// Decrypt and post-process results (client side).
    Decrypt(commands::decrypt::DecryptArgs),
    /// Benchmark a build: latency, batch throughput on 1 and all threads, against the physical limit.
    Bench(commands::bench::BenchArgs),
    /// Serve compiled models over HTTP: evaluation-key sessions and encrypted inference (see
    /// deploy/README.md). Holds no secret key.
    Serve(commands::serve::ServeArgs),
    /// Talk to an `fhec serve` server.
    Client(commands::client::ClientArgs),
    /// Predict: with MODEL.onnx the float reference; with a build directory, --mode simulate or fhe.
    Predict(commands::predict::PredictArgs),
    /// Train a logistic or linear regression on encrypted data (CKKS) and write it as ONNX.
    Train(commands::train::TrainArgs),
}

/// What every subcommand may use of the global options.
pub struct Global {
    pub quiet: bool,
    /// Worker threads for encrypted evaluation (the global rayon pool has this many).
    pub threads: usize,
    pub engine: fhec_lower::Engine,
    /// How secret keys are protected at rest.
    pub protection: fhec::keyfile::Protection,
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    let defaults = fhec_ir::Limits::default();
    fhec_ir::limits::set_limits(fhec_ir::Limits {
        max_tensor_elements: cli.max_tensor_elements.unwrap_or(defaults.max_tensor_elements),
        max_graph_nodes: cli.max_graph_nodes.unwrap_or(defaults.max_graph_nodes),
        max_encrypted_values: cli.max_encrypted_values.unwrap_or(defaults.max_encrypted_values),
        max_bootstraps: cli.max_bootstraps.unwrap_or(defaults.max_bootstraps),
        max_compile_memory_mb: cli
            .max_compile_memory_mb
            .or_else(|| fhec_ir::limits::machine_memory_mb().map(|mb| mb / 4 * 3))
            .unwrap_or(defaults.max_compile_memory_mb),
    });
    let global = Global { quiet, threads, engine, protection };
    match cli.command {
        Command::Inspect(args) => commands::inspect::run(args, &global),
        Command::Build(args) => commands::build::run(args, &global),
        Command::Keygen(args) => commands::keygen::run(args, &global),
        Command::Encrypt(args) => commands::encrypt::run(args, &global),
        Command::Run(args) => commands::run::run(args, &global),
        Command::Decrypt(args) => commands::decrypt::run(args, &global),
        Command::Bench(args) => commands::bench::run(args, &global),
        Command::Serve(args) => commands::serve::run(args, &global),
        Command::Client(args) => commands::client::run(args, &global),
        Command::Predict(args) => commands::predict::run(args, &global),
        Command::Train(args) => commands::train::run(args, &global),
    }
}
