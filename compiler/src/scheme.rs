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
