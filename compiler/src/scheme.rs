//! The scheme a build targets: [`Scheme::Tfhe`], [`Scheme::Ckks`], or [`Scheme::Auto`], the one
//! with the lower estimated time for a workload (`batch` samples on `threads` workers). Auto
//! compiles for both in memory and writes only the winner, with a first report line that states
//! both estimates.
//!
//! A build directory holds one build: both schemes write `client.fhec` and `server.fhec` (envelopes
//! of their own kinds, so that each command knows which it has), and a build removes the
//! `ckks.json` of an older fhec's CKKS build, so that no command finds a stale artifact beside a
//! fresh one.

use crate::{DriverError, ckks, tfhe};
use fhec_ckks::Packing;
use ndarray::ArrayD;
use std::path::Path;

/// Which scheme a model is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// TFHE (tfhe-rs): one value per ciphertext, exact tables; lowest latency for few samples.
    #[default]
    Tfhe,
    /// CKKS (poulpy): thousands of samples per ciphertext, polynomial activations; highest
    /// throughput for large batches. Needs calibration samples.
    Ckks,
    /// The one with the lower estimated time for the workload (a CKKS build that misses the
    /// accuracy budget does not win). Needs calibration samples.
    Auto,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Tfhe => "tfhe",
            Scheme::Ckks => "ckks",
            Scheme::Auto => "auto",
        }
    }
}

/// What a build is asked for: the scheme, each scheme's search, and the workload that `auto` (and
/// CKKS's packing choice) optimize for.
#[derive(Clone, Debug)]
pub struct Options {
    pub scheme: Scheme,
    pub tfhe: fhec_lower::tfhe::Search,
    pub ckks: fhec_lower::ckks::Search,
    /// CKKS packings to lower for; with more than one, the cheaper for the workload is kept.
    pub packings: Vec<Packing>,
    /// Samples per request.
    pub batch: usize,
    /// Worker threads of the server.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scheme: Scheme::Tfhe,
            tfhe: fhec_lower::tfhe::Search::default(),
            ckks: fhec_lower::ckks::Search::default(),
            packings: vec![Packing::BatchMajor],
            batch: 1,
            threads: 2,
        }
    }
}

/// A build as a user asks for it (the CLI's `fhec build` flags, the Python package's keywords of
/// the same names), checked into [`Options`] by [`Settings::options`]: one set of defaults and
/// one set of refusals for every front end.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scheme: Scheme,
    /// A tfhe-rs parameter set by name (default: the cheapest that keeps the budget).
    pub params: Option<String>,
    /// Bits of the integer weights on bootstrap outputs (default: chosen by accuracy).
    pub weight_bits: Option<u32>,
    /// log2 of the probability that noise corrupts one bootstrap.
    pub failure_log2: f64,
    pub table_ranges: fhec_lower::tfhe::TableRanges,
    /// Points of agreement with the float model's class the build may lose (classifiers).
    pub accuracy_budget: f64,
    /// RMS error the build may add, in percent of the output's spread (regressors).
    pub error_budget: f64,
    /// 0: the naive lowering; 1: the e-graph optimizer.
    pub opt_level: u8,
    pub egg_node_limit: usize,
    pub egg_iter_limit: usize,
    /// Seconds of equality saturation.
    pub egg_time_limit: f64,
    /// Tree ensembles: the server compares (the client artifact holds no thresholds).
    pub private_thresholds: bool,
    /// CKKS packings to lower for (more than one: the cheaper for `batch` is kept).
    pub packings: Vec<Packing>,
    /// CKKS polynomial fits offered per layer.
    pub fits: Vec<fhec_lower::Fit>,
    /// Samples per request: the workload `auto` optimizes for.
    pub batch: usize,
    /// Worker threads of the server.
    pub threads: usize,
    pub engine: fhec_lower::Engine,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            scheme: Scheme::Tfhe,
            params: None,
            weight_bits: None,
            failure_log2: -40.0,
            table_ranges: fhec_lower::tfhe::TableRanges::Calibrated,
            accuracy_budget: 0.2,
            error_budget: 5.0,
            opt_level: 1,
            egg_node_limit: 50_000,
            egg_iter_limit: 30,
            egg_time_limit: 5.0,
            private_thresholds: false,
            packings: vec![Packing::BatchMajor],
            fits: vec![fhec_lower::Fit::Chebyshev, fhec_lower::Fit::LeastSquares],
            batch: 1,
            threads: 2,
            engine: fhec_lower::Engine::Auto,
        }
    }
}

impl Settings {
    /// The build options, or the first setting out of range (named by its CLI flag).
    pub fn options(&self) -> Result<Options, DriverError> {
        let bad = |msg: &str| Err(DriverError::Usage(msg.into()));
        if !(self.egg_time_limit > 0.0 && self.egg_time_limit <= 3600.0) {
            return bad("--egg-time-limit is in seconds, more than 0 and at most 3600");
        }
        if self.egg_node_limit == 0 || self.egg_iter_limit == 0 {
            return bad("--egg-node-limit and --egg-iter-limit must be at least 1");
        }
        if self.opt_level > 1 {
            return bad("--opt-level is 0 (the naive lowering) or 1 (the e-graph optimizer)");
        }
        if self.weight_bits.is_some_and(|b| !(2..=16).contains(&b)) {
            return bad("--weight-bits must be between 2 and 16");
        }
        if !(-200.0..=-1.0).contains(&self.failure_log2) {
            return bad("--failure-log2 must be between -200 and -1 (the default -40 means 2^-40 per bootstrap)");
        }
        if !(0.0..=100.0).contains(&self.accuracy_budget) {
            return bad("--accuracy-budget is in points, between 0 and 100");
        }
        if !(0.0..=100.0).contains(&self.error_budget) {
            return bad("--error-budget is in percent of the output's spread, between 0 and 100");
        }
        if self.batch == 0 || self.threads == 0 {
            return bad("--batch and the number of threads must be at least 1");
        }
        if self.packings.is_empty() || self.fits.is_empty() {
            return bad("a CKKS build needs at least one packing and one polynomial fit");
        }
        if self.scheme == Scheme::Tfhe && self.packings != [Packing::BatchMajor] {
            return bad("--packing is for CKKS builds (--scheme ckks or auto): TFHE holds one value per ciphertext");
        }
        if self.scheme == Scheme::Tfhe && self.fits != Settings::default().fits {
            return bad("--polynomial-fit is for CKKS builds (--scheme ckks or auto): TFHE evaluates tables exactly");
        }
        let defaults = fhec_lower::tfhe::Search::default();
        let tfhe = fhec_lower::tfhe::Search {
            optimize: fhec_lower::optimize::Config {
                level: self.opt_level,
                limits: fhec_lower::optimize::Limits {
                    nodes: self.egg_node_limit,
                    iterations: self.egg_iter_limit,
                    time: std::time::Duration::from_secs_f64(self.egg_time_limit),
                },
                only: None,
                client_decisions: !self.private_thresholds,
            },
            weight_bits: self.weight_bits.map_or(defaults.weight_bits.clone(), |bits| vec![bits]),
            params: match &self.params {
                Some(name) => vec![fhec_runtime::ParamSet::from_name(name)?],
                None => defaults.params.clone(),
            },
            failure_log2: self.failure_log2,
            table_ranges: self.table_ranges,
            budget_points: self.accuracy_budget,
            error_budget_percent: self.error_budget,
            engine: self.engine,
            ..defaults
        };
        let ckks = fhec_lower::ckks::Search {
            budget_points: self.accuracy_budget,
            error_budget_percent: self.error_budget,
            optimize: tfhe.optimize.clone(),
            fits: self.fits.clone(),
            ..fhec_lower::ckks::Search::default()
        };
        Ok(Options {
            scheme: self.scheme,
            tfhe,
            ckks,
            packings: self.packings.clone(),
            batch: self.batch,
            threads: self.threads,
        })
    }
}

/// A build, written: which scheme won and what it holds.
pub enum Built {
    Tfhe(Box<tfhe::Build>),
    Ckks(Box<ckks::Build>),
}

/// What [`build`] did: the build, its text report (as written to `report.txt`), and warnings for
/// the user (the accuracy budget missed, simulation fallen back to the interpreter).
pub struct Outcome {
    pub built: Built,
    pub report: String,
    pub warnings: Vec<String>,
}

/// Compiles `model` for `opts.scheme` and writes the build into `dir` (see the module docs).
/// `progress` gets the TFHE circuit's estimated size, then each TFHE candidate tried.
pub fn build(
    model: &Path,
    calibration: Option<&ArrayD<f32>>,
    dir: &Path,
    opts: &Options,
    progress: impl FnMut(fhec_lower::tfhe::Progress<'_>),
) -> Result<Outcome, DriverError> {
    if opts.batch == 0 || opts.threads == 0 {
        return Err(DriverError::Usage("the workload needs a batch and threads of at least 1".into()));
    }
    let x = match (opts.scheme, calibration) {
        (Scheme::Tfhe, _) => None,
        (_, Some(x)) => Some(x),
        (s, None) => {
            return Err(DriverError::Usage(format!(
                "--scheme {} needs calibration samples (--calibration): polynomial windows come from real samples",
                s.name()
            )));
        }
    };
    let (batch, threads) = (opts.batch, opts.threads);
    let ckks_compile = |x| ckks::compile(model, x, &opts.ckks, &opts.packings, batch, threads);
    if opts.scheme == Scheme::Ckks {
        let b = ckks_compile(x.expect("checked"))?;
        refuse_ckks_trees(model, &b)?;
        let report = b.write(dir, "")?;
        let warnings = ckks_warnings(&b);
        return Ok(Outcome { built: Built::Ckks(Box::new(b)), report, warnings });
    }
    let t = tfhe::compile(model, calibration, &opts.tfhe, progress)?;
    let mut warnings: Vec<String> = t.choice.jit_fallback.iter().cloned().collect();
    let Some(x) = x else {
        let report = t.write(dir, "")?;
        warnings.extend(tfhe_warnings(&t));
        return Ok(Outcome { built: Built::Tfhe(Box::new(t)), report, warnings });
    };
    let tfhe_ms = t.estimated_ms(batch, threads);
    let (line, c) = match ckks_compile(x) {
        Ok(c) => {
            let ckks_ms = c.estimated_ms(batch, threads);
            let faster = ckks_ms < tfhe_ms;
            let use_ckks = faster && c.choice.within_budget;
            let line = format!(
                "scheme (--scheme auto, batch of {batch} on {threads} threads): {} — estimated TFHE {tfhe_ms:.0} ms, CKKS {ckks_ms:.0} ms ({}){}\n",
                if use_ckks { "CKKS" } else { "TFHE" },
                c.choice.packing.name(),
                if faster && !use_ckks { "; CKKS would be faster but misses the accuracy budget" } else { "" }
            );
            (line, use_ckks.then_some(c))
        }
        Err(e) => (format!("scheme (--scheme auto): TFHE; CKKS does not apply: {e}\n"), None),
    };
    Ok(match c {
        Some(c) => {
            let report = c.write(dir, &line)?;
            let warnings = ckks_warnings(&c);
            Outcome { built: Built::Ckks(Box::new(c)), report, warnings }
        }
        None => {
            let report = t.write(dir, &line)?;
            warnings.extend(tfhe_warnings(&t));
            Outcome { built: Built::Tfhe(Box::new(t)), report, warnings }
        }
    })
}

/// A tree ensemble's decisions are steps: where no polynomial keeps the accuracy budget, a CKKS
/// build of it would silently read decisions on the wrong side (a model that misses the budget for
/// smooth activations only loses precision, and is built with a warning). `auto` never picks it.
fn refuse_ckks_trees(model: &Path, b: &ckks::Build) -> Result<(), DriverError> {
    let c = &b.choice;
    if c.within_budget {
        return Ok(());
    }
    match fhec_onnx::tree_ensembles(model).unwrap_or_default().first() {
        Some(e) => Err(DriverError::Ckks(format!(
            "tree ensemble {:?}: no polynomial approximation of its steps ({} decisions{}) keeps the accuracy \
             budget under CKKS ({:.2}% fidelity, {:.2}% needed); build it with --scheme tfhe (or auto, which picks TFHE)",
            e.node,
            e.decisions,
            if b.choice.compiled.preprocess.as_ref().is_some_and(fhec_lower::ends_in_decisions) {
                " on the client, then its leaf blocks"
            } else {
                " on the server"
            },
            c.fidelity,
            c.required
        ))),
        None => Ok(()),
    }
}

fn tfhe_warnings(t: &tfhe::Build) -> Option<String> {
    let c = &t.choice;
    let synthetic = matches!(c.calibration.0, fhec_lower::Origin::InputQuantizer { .. });
    (!c.within_budget).then(|| {
        format!(
            "no candidate keeps the accuracy budget ({:.2}% fidelity needed, best {:.2}%); see report.txt{}",
            c.required,
            c.fidelity,
            if synthetic {
                "\n  (scored on samples drawn uniformly from the input quantizer's range, harsher than real data: \
                 check the accuracy with `fhec predict --mode simulate` on real samples, or build with --calibration)"
            } else {
                ""
            }
        )
    })
}

fn ckks_warnings(b: &ckks::Build) -> Vec<String> {
    let c = &b.choice;
    (!c.within_budget)
        .then(|| {
            format!(
                "no assignment of polynomials keeps the accuracy budget ({:.2}% fidelity needed, best {:.2}%); see report.txt",
                c.required, c.fidelity
            )
        })
        .into_iter()
        .collect()
}

/// Removes `path` if it exists: an artifact of the other scheme's earlier build.
pub(crate) fn remove_stale(path: &Path) -> Result<(), DriverError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DriverError::Io(format!("cannot remove the earlier build's {}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Writes `DIR/report.txt` and `DIR/report.json`.
pub(crate) fn write_reports(dir: &Path, text: &str, json: &serde_json::Value) -> Result<(), DriverError> {
    let write = |file: &str, content: &str| {
        std::fs::write(dir.join(file), content)
            .map_err(|e| DriverError::Io(format!("cannot write {}: {e}", dir.join(file).display())))
    };
    write("report.txt", text)?;
    write("report.json", &serde_json::to_string_pretty(json).expect("json"))
}
