//! `fhec train`: train a logistic or linear regression on encrypted data and write it as ONNX.

use super::bar;
use crate::Global;
use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
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

/// The algorithm's choices, shared by the round trip and `train plan`.
#[derive(Args, Clone)]
pub struct HyperArgs {
    #[arg(long, value_enum, default_value_t = TaskArg::Logistic)]
    pub task: TaskArg,
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
}

impl HyperArgs {
    fn hyper(&self, features: usize) -> Hyper {
        let task = match self.task {
            TaskArg::Logistic => Task::Logistic,
            TaskArg::Linear => Task::Linear,
        };
        let defaults = Hyper::defaults(task, features);
        Hyper {
            iterations: self.iterations.unwrap_or(defaults.iterations),
            step: self.step.unwrap_or(defaults.step),
            l2: self.l2,
            degree: self.degree.unwrap_or(defaults.degree),
            interval: self.interval.unwrap_or(defaults.interval),
            ..defaults
        }
    }
}

/// Train a model on encrypted data (CKKS): the whole round trip on this machine, the data owner's
/// side (scale, keygen, encrypt, refresh, decrypt) and the server's (iterate with the evaluation key
/// only). Writes a standard ONNX model over raw features, and its report beside it (.json). For a
/// deployment split between machines: `train plan`, then keygen, encrypt, run, `train refresh`,
/// decrypt (docs/training.md).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub step: Option<TrainStep>,
    /// Training samples, [samples, features] (.npy).
    #[arg(long, required = true)]
    pub input: Option<PathBuf>,
    /// One label per sample: 0 or 1 (logistic), or the target (linear) (.npy).
    #[arg(long, required = true)]
    pub labels: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ModeArg::Fhe)]
    pub mode: ModeArg,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// A test set to score the model on, with --test-labels.
    #[arg(long, requires = "test_labels")]
    pub test_input: Option<PathBuf>,
    #[arg(long, requires = "test_input")]
    pub test_labels: Option<PathBuf>,
    /// The ONNX model to write (its report goes beside it, with .json).
    #[arg(short, long, required = true)]
    pub output: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TrainStep {
    /// Plan training for a data shape: DIR/train.fhec (no data), for keygen, encrypt, run, decrypt.
    Plan(PlanArgs),
    /// Data owner, between rounds: decrypt the weights and encrypt them again (nothing else).
    Refresh(RefreshArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    /// Read the shape (samples, features) from this .npy (nothing else is read)...
    #[arg(long, conflicts_with_all = ["samples", "features"])]
    pub input: Option<PathBuf>,
    /// ... or give it.
    #[arg(long, requires = "features")]
    pub samples: Option<usize>,
    #[arg(long, requires = "samples")]
    pub features: Option<usize>,
    #[command(flatten)]
    pub hyper: HyperArgs,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct RefreshArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub keys: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: TrainArgs, g: &Global) -> Result<()> {
    match args.step {
        Some(TrainStep::Plan(p)) => return plan(p),
        Some(TrainStep::Refresh(r)) => return split::refresh(&r.dir, &r.keys, &r.input, &r.output, g),
        None => {}
    }
    let (Some(input), Some(labels), Some(output)) = (&args.input, &args.labels, &args.output) else {
        bail!("fhec train needs --input, --labels and --output (or a step: plan, refresh)");
    };
    let data = Dataset::read(input, labels)?;
    let test = match (&args.test_input, &args.test_labels) {
        (Some(x), Some(y)) => Some(Dataset::read(x, y)?),
        _ => None,
    };
    if let Some(t) = &test
        && t.features() != data.features()
    {
        bail!("the test set has {} features, the training set {}", t.features(), data.features());
    }
    let hyper = args.hyper.hyper(data.features());
    let task = hyper.task;
    let mode = match args.mode {
        ModeArg::Clear => Mode::Clear,
        ModeArg::Simulate => Mode::Simulate,
        ModeArg::Fhe => Mode::Fhe,
    };
    let opts = Options { hyper: hyper.clone(), mode, ring: args.hyper.ring, clip: args.hyper.clip };
    let plan = fhec::train::TrainPlan::at(hyper.clone(), data.x.len(), data.features(), args.hyper.ring)
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
    if task == Task::Logistic && r.classes > 2 {
        println!("one-vs-rest: {} classes, a model each, under the same keys", r.classes);
    }
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
    fhec::train::write(&trained, output, score.as_ref())?;
    println!("wrote {} (report: {})", output.display(), output.with_extension("json").display());
    Ok(())
}

/// `fhec train plan`: the plan for a data shape, and what it will cost.
fn plan(p: PlanArgs) -> Result<()> {
    let (samples, features) = match (&p.input, p.samples, p.features) {
        (Some(x), _, _) => {
            let a = fhec::npy::read_samples(x)?;
            if a.ndim() != 2 {
                bail!("{}: samples of shape {:?}; training takes [samples, features]", x.display(), a.shape());
            }
            (a.shape()[0], a.shape()[1])
        }
        (None, Some(n), Some(d)) => (n, d),
        _ => bail!("fhec train plan needs the data's shape: --input X.npy, or --samples N --features D"),
    };
    let hyper = p.hyper.hyper(features);
    let plan =
        fhec::train::TrainPlan::at(hyper, samples, features, p.hyper.ring).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !(p.hyper.clip.is_finite() && p.hyper.clip > 0.0) {
        bail!("clip {}: a positive number of standard deviations", p.hyper.clip);
    }
    let file = fhec::train::deploy::PlanFile { plan, clip: p.hyper.clip };
    fhec::train::deploy::write_plan(&p.output, &file)?;
    let plan = &file.plan;
    println!(
        "planned {} regression on {samples} samples x {features} features: ring 2^{}, {} iterations in {} round{} ({} per encryption, {} refresh{} by the data owner); wrote {}",
        plan.hyper.task.name(),
        plan.ring.log_n,
        plan.hyper.iterations,
        plan.rounds(),
        if plan.rounds() == 1 { "" } else { "s" },
        plan.per_round,
        plan.refreshes(),
        if plan.refreshes() == 1 { "" } else { "es" },
        p.output.join("train.fhec").display()
    );
    Ok(())
}

/// The split deployment's steps (feature `ckks`), called by `keygen`, `encrypt`, `run`, `decrypt`
/// on a training plan's directory, and `train refresh`.
#[cfg(feature = "ckks")]
pub mod split {
    use super::super::spinner;
    use crate::Global;
    use anyhow::{Context, Result};
    use fhec::train::deploy::{Owner, Server, owner_path};
    use std::path::Path;

    pub fn keygen(dir: &Path, keys: &Path, g: &Global) -> Result<()> {
        let pb = spinner(g.quiet, "generating keys");
        let (size, rotations, took) = fhec::train::deploy::keygen(dir, keys, &g.protection)?;
        pb.finish_and_clear();
        println!(
            "keys for the training plan in {} (CKKS): {}/secret.key (data owner only), {}/eval.key ({:.1} MB: relinearization and {rotations} rotation keys, for the server); {:.2} s",
            dir.display(),
            keys.display(),
            keys.display(),
            size as f64 / 1e6,
            took.as_secs_f64()
        );
        Ok(())
    }

    pub fn encrypt(
        dir: &Path,
        keys: &Path,
        input: &Path,
        labels: Option<&Path>,
        output: &Path,
        g: &Global,
    ) -> Result<()> {
        let labels = labels.context("a training plan encrypts a training set: give its --labels too")?;
        let owner = Owner::load(dir, keys, &g.protection)?;
        let data = fhec::train::Dataset::read(input, labels)?;
        let bytes = owner.encrypt(&data, output)?;
        println!(
            "encrypted {} samples x {} features to {} ({:.1} MB, for the server); the feature scaling is in {} (keep it: decrypt needs it)",
            data.x.len(),
            data.features(),
            output.display(),
            bytes as f64 / 1e6,
            owner_path(output).display()
        );
        Ok(())
    }

    pub fn run(
        dir: &Path,
        eval_key: &Path,
        input: &Path,
        state: Option<&Path>,
        output: &Path,
        g: &Global,
    ) -> Result<()> {
        let pb = spinner(g.quiet, "loading the evaluation key");
        let server = Server::load(dir, eval_key)?;
        pb.finish_and_clear();
        let pb = spinner(g.quiet, "training on ciphertexts");
        let start = std::time::Instant::now();
        let (bytes, done, total) =
            server.round(input, state, |k| pb.set_message(format!("training: iteration {} done", k + 1)))?;
        pb.finish_and_clear();
        std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
        let next = if done < total {
            format!(
                "; {} left: the data owner refreshes it (`fhec train refresh`), then run again with --state",
                total - done
            )
        } else {
            "; training is complete: the data owner decrypts it".to_string()
        };
        println!(
            "ran iterations to {done} of {total} in {:.2} s; weights to {}{next}",
            start.elapsed().as_secs_f64(),
            output.display()
        );
        Ok(())
    }

    pub fn refresh(dir: &Path, keys: &Path, input: &Path, output: &Path, g: &Global) -> Result<()> {
        let owner = Owner::load(dir, keys, &g.protection)?;
        let left = owner.refresh(input, output)?;
        println!(
            "refreshed the weights to {} ({left} iteration{} left)",
            output.display(),
            if left == 1 { "" } else { "s" }
        );
        Ok(())
    }

    pub fn decrypt(
        dir: &Path,
        keys: &Path,
        input: &Path,
        owner_file: Option<&Path>,
        output: &Path,
        g: &Global,
    ) -> Result<()> {
        let owner_file = owner_file
            .context("decrypting trained weights needs the scaling `fhec encrypt` wrote: --owner DATA.owner.json")?;
        let owner = Owner::load(dir, keys, &g.protection)?;
        let w = owner.decrypt(input, owner_file, output)?;
        println!("decrypted {} weights (bias first: {:.4}); wrote the model to {}", w.len(), w[0], output.display());
        Ok(())
    }
}

#[cfg(not(feature = "ckks"))]
pub mod split {
    use crate::Global;
    use anyhow::Result;
    use std::path::Path;

    pub fn keygen(_: &Path, _: &Path, _: &Global) -> Result<()> {
        super::super::ckks_missing()
    }
    pub fn encrypt(_: &Path, _: &Path, _: &Path, _: Option<&Path>, _: &Path, _: &Global) -> Result<()> {
        super::super::ckks_missing()
    }
    pub fn run(_: &Path, _: &Path, _: &Path, _: Option<&Path>, _: &Path, _: &Global) -> Result<()> {
        super::super::ckks_missing()
    }
    pub fn refresh(_: &Path, _: &Path, _: &Path, _: &Path, _: &Global) -> Result<()> {
        super::super::ckks_missing()
    }
    pub fn decrypt(_: &Path, _: &Path, _: &Path, _: Option<&Path>, _: &Path, _: &Global) -> Result<()> {
        super::super::ckks_missing()
    }
}
