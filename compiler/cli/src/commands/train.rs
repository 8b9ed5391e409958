//! `fhec train`: train a logistic or linear regression on encrypted data and write it as ONNX.

use super::bar;
use crate::Global;
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use fhec::train::{Dataset, Hyper, Mode, Options, Progress, Task};
use std::path::PathBuf;

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// Binary classification, labels 0 and 1.
    Logistic,
    /// Least squares on a numeric target.
    Linear,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The algorithm in float64, unencrypted.
    Clear,
    /// The encrypted program's slot operations, unencrypted.
    Simulate,
    /// Under CKKS encryption: keygen, encrypt, train (server side), decrypt.
    Fhe,
}

/// Train a model on encrypted data (CKKS): the whole round trip on this machine, the data owner's
/// side (scale, keygen, encrypt, refresh, decrypt) and the server's (iterate with the evaluation key
/// only). Writes a standard ONNX model over raw features, and its report beside it (.json).
#[derive(Args)]
pub struct TrainArgs {
    /// Training samples, [samples, features] (.npy).
    #[arg(long)]
    pub input: PathBuf,
    /// One label per sample: 0 or 1 (logistic), or the target (linear) (.npy).
    #[arg(long)]
    pub labels: PathBuf,
    #[arg(long, value_enum, default_value_t = TaskArg::Logistic)]
    pub task: TaskArg,
    #[arg(long, value_enum, default_value_t = ModeArg::Fhe)]
    pub mode: ModeArg,
    /// Iterations of Nesterov-accelerated gradient descent (default 8).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Gradient step (default: 2 for logistic, 2 / (features + 1) for linear).
    #[arg(long)]
    pub step: Option<f64>,
    /// L2 penalty on the weights (not the bias).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f64,
    /// Degree of the sigmoid's polynomial (logistic; odd; default 7).
    #[arg(long)]
    pub degree: Option<usize>,
    /// The sigmoid's polynomial is fitted on [-R, R] (logistic; default 32).
    #[arg(long)]
    pub interval: Option<f64>,
    /// Standardized features are clipped to ±CLIP standard deviations.
    #[arg(long, default_value_t = 3.0)]
    pub clip: f64,
    /// Ring degree 2^14 or 2^15 (default: the smallest that holds the data and the most iterations).
    #[arg(long)]
    pub ring: Option<usize>,
    /// A test set to score the model on, with --test-labels.
    #[arg(long, requires = "test_labels")]
    pub test_input: Option<PathBuf>,
    #[arg(long, requires = "test_input")]
    pub test_labels: Option<PathBuf>,
    /// The ONNX model to write (its report goes beside it, with .json).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: TrainArgs, g: &Global) -> Result<()> {
    let data = Dataset::read(&args.input, &args.labels)?;
    let test = match (&args.test_input, &args.test_labels) {
        (Some(x), Some(y)) => Some(Dataset::read(x, y)?),
        _ => None,
    };
    if let Some(t) = &test
        && t.features() != data.features()
    {
        bail!("the test set has {} features, the training set {}", t.features(), data.features());
    }
    let task = match args.task {
        TaskArg::Logistic => Task::Logistic,
        TaskArg::Linear => Task::Linear,
    };
    let defaults = Hyper::defaults(task, data.features());
    let hyper = Hyper {
        iterations: args.iterations.unwrap_or(defaults.iterations),
        step: args.step.unwrap_or(defaults.step),
        l2: args.l2,
        degree: args.degree.unwrap_or(defaults.degree),
        interval: args.interval.unwrap_or(defaults.interval),
        ..defaults
    };
    let mode = match args.mode {
        ModeArg::Clear => Mode::Clear,
        ModeArg::Simulate => Mode::Simulate,
        ModeArg::Fhe => Mode::Fhe,
    };
    let opts = Options { hyper: hyper.clone(), mode, ring: args.ring, clip: args.clip };
    let plan = fhec::train::TrainPlan::at(hyper.clone(), data.x.len(), data.features(), args.ring)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !g.quiet {
        eprintln!(
            "training {} regression on {} samples x {} features ({} mode): ring 2^{}, {} iterations, {} per encryption ({} interactive refresh{})",
            task.name(),
            data.x.len(),
            data.features(),
            mode.name(),
            plan.ring.log_n,
            hyper.iterations,
            plan.per_round,
            plan.refreshes(),
            if plan.refreshes() == 1 { "" } else { "es" }
        );
    }
    let pb = bar(g.quiet || mode == Mode::Clear, hyper.iterations, "training");
    let trained = fhec::train::train(&data, &opts, &mut |p| match p {
        Progress::Stage(s) => pb.set_message(s),
        Progress::Iteration { done, .. } => {
            pb.set_message("training (server)");
            pb.set_position(done as u64)
        }
    })?;
    pb.finish_and_clear();
    let r = &trained.report;
    let t = &r.times;
    if mode == Mode::Fhe {
        let refresh = match r.refreshes {
            0 => String::new(),
            n => format!(
                ", refresh {:.2} s ({n} round trip{}, {:.1} MB each way)",
                t.refresh_s,
                if n == 1 { "" } else { "s" },
                r.refresh_ciphertext_bytes.unwrap_or(0) as f64 / 1e6
            ),
        };
        println!(
            "data owner: keygen {:.2} s, encrypt {:.2} s{refresh}, decrypt {:.3} s; server: {:.2} s ({:.2} s per iteration)",
            t.keygen_s, t.encrypt_s, t.decrypt_s, t.server_s, t.per_iteration_s
        );
        println!(
            "sizes: evaluation key {:.1} MB, encrypted training set {:.1} MB; peak memory {:.0} MB",
            r.eval_key_bytes.unwrap_or(0) as f64 / 1e6,
            r.dataset_ciphertext_bytes.unwrap_or(0) as f64 / 1e6,
            r.peak_memory_mb.unwrap_or(0.0)
        );
    }
    match r.distance_from_exact_sigmoid {
        Some(e) => println!(
            "weights: {:.1e} from float64 (same algorithm), {e:.3} from float64 with the exact sigmoid",
            r.distance_from_float64
        ),
        None => println!("weights: {:.1e} from float64 (same algorithm)", r.distance_from_float64),
    }
    if let Some(reach) = r.sigmoid_reach
        && reach > 1.0
    {
        eprintln!("warning: |w·x| reached {:.1} times the sigmoid's interval; raise --interval or lower --step", reach);
    }
    let score = test.as_ref().map(|t| trained.score(t));
    if let Some(s) = &score {
        let pct = |v: f64| if s.metric == "accuracy" { format!("{:.2}%", 100.0 * v) } else { format!("{v:.4}") };
        let diff = s.disagreements.map_or(String::new(), |d| format!(", {d} test samples classified differently"));
        println!("test {}: {} (float64, same algorithm: {}{diff})", s.metric, pct(s.value), pct(s.reference));
    }
    fhec::train::write(&trained, &args.output, score.as_ref())?;
    println!("wrote {} (report: {})", args.output.display(), args.output.with_extension("json").display());
    Ok(())
}
