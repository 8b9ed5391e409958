//! `fhec build`: compile a model for encrypted inference (TFHE, CKKS or the cheaper of the two).

use super::spinner;
use crate::Global;
use anyhow::Context;
use anyhow::Result;
use clap::Args;
use clap::ValueEnum;
use fhec::scheme::{Scheme, Settings};
use std::path::PathBuf;
use std::time::Instant;

/// Compile a model for encrypted inference: client and server artifacts and a report.
#[derive(Args)]
pub struct BuildArgs {
    pub model: PathBuf,
    /// Calibration samples (.npy, samples along axis 0): they set the input ranges. Optional for a
    /// pre-quantized model (ONNX QDQ or QOperator), whose input quantizer sets them.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Output directory (default: MODEL with the extension .fhec).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// tfhe-rs parameter set (default: the cheapest that keeps the accuracy budget).
    #[arg(long)]
    pub params: Option<String>,
    /// Bits of the integer weights applied to bootstrap outputs (default: chosen by accuracy).
    #[arg(long)]
    pub weight_bits: Option<u32>,
    /// log2 of the probability that noise corrupts one bootstrap.
    #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
    pub failure_log2: f64,
    /// What each table covers: the range its input took on the calibration samples, doubled
    /// (calibrated: finer, an input far outside wraps to a clipped value), or the interval bound
    /// of every input the client can send (bound: no input ever leaves its table).
    #[arg(long, value_enum, default_value_t = TableRangesArg::Calibrated)]
    pub table_ranges: TableRangesArg,
    /// Points of agreement with the float model's class the compiled model may lose on the
    /// calibration set (classifiers), in noisy simulation.
    #[arg(long, default_value_t = 0.2)]
    pub accuracy_budget: f64,
    /// For continuous outputs (regressors): the RMS error the compiled model may add, in percent
    /// of the output's spread over the calibration set.
    #[arg(long, default_value_t = 5.0)]
    pub error_budget: f64,
    /// 0: the naive lowering (one table per univariate op, max pools as written); 1: the e-graph
    /// optimizer (fused tables, max pooling before monotone activations).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub opt_level: u8,
    /// Optimizer limit: e-graph nodes.
    #[arg(long, default_value_t = 50_000)]
    pub egg_node_limit: usize,
    /// Optimizer limit: rewrite iterations.
    #[arg(long, default_value_t = 30)]
    pub egg_iter_limit: usize,
    /// Optimizer limit: seconds of equality saturation.
    #[arg(long, default_value_t = 5.0)]
    pub egg_time_limit: f64,
    /// Tree ensembles: keep the thresholds on the server. By default the client computes each
    /// decision (a feature against a threshold) before encrypting: exact and with no bootstrap,
    /// but the client artifact holds the thresholds and the features they test (not the trees or
    /// the leaf values). With this flag the server compares, one bootstrap per distinct decision,
    /// and a feature within a few table positions of a threshold may read the other side.
    #[arg(long)]
    pub private_thresholds: bool,
    /// The FHE scheme: tfhe, ckks (needs --calibration), or auto (the cheaper for --batch).
    #[arg(long, value_enum, default_value_t = SchemeArg::Tfhe)]
    pub scheme: SchemeArg,
    /// CKKS packing: batch-major (throughput), feature-major (latency), or auto (the cheaper for --batch).
    #[arg(long, value_enum, default_value_t = PackingArg::BatchMajor)]
    pub packing: PackingArg,
    /// CKKS: how polynomials approximate activations.
    #[arg(long, value_enum, default_value_t = FitArg::Auto)]
    pub polynomial_fit: FitArg,
    /// With --scheme auto or --packing auto: how many samples a request carries (the workload to optimize for).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

pub fn run(args: BuildArgs, g: &Global) -> Result<()> {
    let BuildArgs {
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
        private_thresholds,
        scheme,
        packing,
        polynomial_fit,
        batch,
    } = args;
    let quiet = g.quiet;
    let settings = Settings {
        scheme: match scheme {
            SchemeArg::Tfhe => Scheme::Tfhe,
            SchemeArg::Ckks => Scheme::Ckks,
            SchemeArg::Auto => Scheme::Auto,
        },
        params,
        weight_bits,
        failure_log2,
        table_ranges: match table_ranges {
            TableRangesArg::Calibrated => fhec_lower::tfhe::TableRanges::Calibrated,
            TableRangesArg::Bound => fhec_lower::tfhe::TableRanges::Bound,
        },
        accuracy_budget,
        error_budget,
        opt_level,
        egg_node_limit,
        egg_iter_limit,
        egg_time_limit,
        private_thresholds,
        packings: packing.packings().to_vec(),
        fits: polynomial_fit.fits(),
        batch,
        threads: g.threads,
        engine: g.engine,
    };
    let opts = settings.options()?;
    let dir = output.unwrap_or_else(|| model.with_extension("fhec"));
    let x = calibration.as_deref().map(fhec::npy::read_samples).transpose()?;
    let start = Instant::now();
    let pb = spinner(quiet, if scheme == SchemeArg::Ckks { "fitting polynomials" } else { "choosing parameters" });
    let (mut tried, mut size) = (0, String::new());
    let outcome = fhec::scheme::build(&model, x.as_ref(), &dir, &opts, |p| match p {
        // A large circuit's first candidate takes a while: say how large before it starts.
        fhec_lower::tfhe::Progress::Estimated(s) => {
            size = format!(" for about {} bootstraps per sample", fhec_lower::size::group(s.bootstraps));
            pb.set_message(format!("choosing parameters{size}: compiling the first candidate"));
        }
        fhec_lower::tfhe::Progress::Tried(t) => {
            tried += 1;
            pb.set_message(format!(
                "choosing parameters{size}: {tried} candidates simulated (last: {}, {})",
                t.options.params.name(),
                t.fidelity.map_or("too noisy".into(), |f| format!("{f:.2}%"))
            ));
        }
    })
    .with_context(|| format!("building {}", model.display()))?;
    pb.finish_and_clear();
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if !quiet {
        print!("{}", outcome.report);
    }
    println!("\nwrote {} in {:.2} s", dir.display(), start.elapsed().as_secs_f64());
    Ok(())
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// TFHE (tfhe-rs): one value per ciphertext, exact tables; lowest latency for few samples.
    Tfhe,
    /// CKKS (poulpy): thousands of samples per ciphertext, polynomial activations; highest
    /// throughput for large batches.
    Ckks,
    /// The one with the lower estimated time for --batch samples.
    Auto,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum PackingArg {
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
pub enum FitArg {
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
pub enum TableRangesArg {
    Calibrated,
    Bound,
}
