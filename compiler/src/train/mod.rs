//! `fhec train`: logistic and linear regression trained on encrypted data (CKKS), on one machine
//! playing both parts. The data owner's side scales the features (standardized with the training
//! set's statistics, clipped at ±`clip`), encrypts the set and refreshes the weights between rounds;
//! the server's side iterates with the evaluation key only ([`fhec_ckks::train`] is the algorithm,
//! `fhec_ckks::backend::train` its encrypted form). The result is a standard ONNX model over raw
//! features ([`fhec_onnx::export::LinearModel`]: the scaling folded in), which `fhec predict` and
//! `fhec build` take like any other.
//!
//! Every run also trains in float64 (the same algorithm on the unpacked data, and once with the
//! exact sigmoid), so that the report can say how far the result is from its reference.

#[cfg(feature = "ckks")]
pub mod bench;
pub mod deploy;

use crate::DriverError;
pub use fhec_ckks::train::{Hyper, Task, TrainPlan};
use fhec_onnx::export::{LinearModel, Link};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The float64 algorithm on the unpacked data.
    Clear,
    /// The encrypted program's slot operations in the clear (packing, masks, rotations).
    Simulate,
    /// Under encryption (needs the `ckks` feature).
    Fhe,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Clear => "clear",
            Mode::Simulate => "simulate",
            Mode::Fhe => "fhe",
        }
    }
}

/// A training (or test) set: samples by features, and a label or target per sample.
pub struct Dataset {
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
}

impl Dataset {
    /// Reads `x` (`[samples, features]`) and `y` (`[samples]` or `[samples, 1]`) from `.npy` files.
    pub fn read(x: &Path, y: &Path) -> Result<Dataset, DriverError> {
        let xs = crate::npy::read_samples(x)?;
        let ys = crate::npy::read_samples(y)?;
        if xs.ndim() != 2 {
            return Err(DriverError::Shape(format!(
                "{}: samples of shape {:?}; training takes [samples, features]",
                x.display(),
                xs.shape()
            )));
        }
        let n = xs.shape()[0];
        if ys.len() != n || ys.shape().iter().skip(1).any(|&d| d != 1) {
            return Err(DriverError::Shape(format!(
                "{}: {:?} labels for {n} samples in {}; one per sample",
                y.display(),
                ys.shape(),
                x.display()
            )));
        }
        let rows = xs.outer_iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect();
        Ok(Dataset { x: rows, y: ys.iter().map(|&v| f64::from(v)).collect() })
    }

    pub fn features(&self) -> usize {
        self.x.first().map_or(0, Vec::len)
    }

    /// Every value a number, every sample as wide as the first (checked on the raw data, before
    /// scaling spreads one bad value over a whole column).
    pub fn check(&self) -> Result<(), DriverError> {
        let d = self.features();
        for (i, row) in self.x.iter().enumerate() {
            if row.len() != d {
                return Err(DriverError::Shape(format!("sample {i} has {} features, sample 0 has {d}", row.len())));
            }
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(DriverError::Data(format!("sample {i}, feature {j}: {} is not a number", row[j])));
            }
        }
        if let Some(i) = self.y.iter().position(|v| !v.is_finite()) {
            return Err(DriverError::Data(format!("label {i}: {} is not a number", self.y[i])));
        }
        Ok(())
    }
}

/// The data owner's scaling, fitted on the training set on its own machine: never sent.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Scaling {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub clip: f64,
    /// Linear regression: the target's mean and standard deviation.
    pub target: Option<(f64, f64)>,
}

fn mean_std(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count().max(1) as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    // A constant feature keeps scale 1 (it becomes 0 after centering).
    (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
}

impl Scaling {
    pub fn fit(ds: &Dataset, task: Task, clip: f64) -> Scaling {
        let (mean, scale) = (0..ds.features()).map(|j| mean_std(ds.x.iter().map(move |r| r[j]))).unzip();
        let target = (task == Task::Linear).then(|| mean_std(ds.y.iter().copied()));
        Scaling { mean, scale, clip, target }
    }

    pub fn features(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        x.iter()
            .map(|r| {
                r.iter()
                    .zip(self.mean.iter().zip(&self.scale))
                    .map(|(v, (m, s))| ((v - m) / s).clamp(-self.clip, self.clip))
                    .collect()
            })
            .collect()
    }

    pub fn targets(&self, y: &[f64]) -> Vec<f64> {
        match self.target {
            Some((m, s)) => y.iter().map(|v| (v - m) / s).collect(),
            None => y.to_vec(),
        }
    }

    /// The ONNX model of `weights` (bias first; one row per output column) over raw features: this
    /// scaling, then a sigmoid (logistic) or the target's units (linear).
    pub fn model(&self, weights: &[Vec<f64>], doc: String) -> LinearModel {
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        LinearModel {
            mean: f32s(&self.mean),
            scale: f32s(&self.scale),
            clip: self.clip as f32,
            weights: weights.iter().map(|w| f32s(&w[1..])).collect(),
            bias: weights.iter().map(|w| w[0] as f32).collect(),
            link: match self.target {
                None => Link::Sigmoid,
                Some((m, s)) => Link::Affine { scale: s as f32, offset: m as f32 },
            },
            doc,
        }
    }
}

/// What `train` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub hyper: Hyper,
    pub mode: Mode,
    /// The ring (14 or 15); the plan's choice when `None`.
    pub ring: Option<usize>,
    /// Standardized features are clipped to ±`clip` (keeps `|w·x|` inside the sigmoid's interval).
    pub clip: f64,
}

/// What happens, for progress output.
pub enum Progress {
    Stage(&'static str),
    /// Iteration `done` of `total` finished.
    Iteration {
        done: usize,
        total: usize,
    },
}

/// Seconds spent, by side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Times {
    pub keygen_s: f64,
    pub encrypt_s: f64,
    /// The server's iterations, all rounds.
    pub server_s: f64,
    pub per_iteration_s: f64,
    /// The data owner's refreshes between rounds (decrypt and encrypt the weights).
    pub refresh_s: f64,
    pub decrypt_s: f64,
}

/// The report of a training run (`report.json` beside the model).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub task: Task,
    pub mode: Mode,
    pub samples: usize,
    pub features: usize,
    /// Classes (logistic: 2, or one model per class, one-vs-rest, for more; linear: 1).
    pub classes: usize,
    pub iterations: usize,
    pub step: f64,
    pub l2: f64,
    pub sigmoid_degree: Option<usize>,
    pub sigmoid_interval: Option<f64>,
    pub clip: f64,
    pub ring_log_n: usize,
    pub slots_used: usize,
    pub bits_per_iteration: usize,
    pub iterations_per_round: usize,
    /// Interactive refreshes (round trips to the data owner) between rounds, all models.
    pub refreshes: usize,
    /// The largest `|w·z|` over the sigmoid's interval any iteration met (logistic, clear and
    /// simulate; above 1 the polynomial left the interval it was fitted on).
    pub sigmoid_reach: Option<f64>,
    pub times: Times,
    pub eval_key_bytes: Option<usize>,
    /// The encrypted training set in memory (rows, and targets for linear regression).
    pub dataset_ciphertext_bytes: Option<usize>,
    /// The two weight ciphertexts one refresh moves each way.
    pub refresh_ciphertext_bytes: Option<usize>,
    pub peak_memory_mb: Option<f64>,
    /// Largest gap, over the weights, from the same algorithm in float64.
    pub distance_from_float64: f64,
    /// Largest gap from float64 with the exact sigmoid (what the polynomial costs).
    pub distance_from_exact_sigmoid: Option<f64>,
    /// Weights on the standardized features, bias first: one model, or one per class.
    pub weights: Vec<Vec<f64>>,
}

/// A trained model: its ONNX form, the report, and what it needs to predict in float64.
pub struct Trained {
    pub model: LinearModel,
    pub report: Report,
    pub scaling: Scaling,
    /// The float64 reference's weights (same algorithm), to compare predictions with.
    pub reference: Vec<Vec<f64>>,
}

fn gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

fn ckks(e: fhec_ckks::CkksError) -> DriverError {
    DriverError::Ckks(e.to_string())
}

/// The label vectors to train on: the targets (linear), the 0/1 labels (binary), or one 0/1 vector
/// per class for labels `0..K` (one-vs-rest, `K` ≥ 3).
fn label_sets(task: Task, y: &[f64]) -> Result<Vec<Vec<f64>>, DriverError> {
    if task == Task::Linear || y.iter().all(|&v| v == 0.0 || v == 1.0) {
        return Ok(vec![y.to_vec()]);
    }
    if let Some(i) = y.iter().position(|&v| v.fract() != 0.0 || !(0.0..64.0).contains(&v)) {
        return Err(DriverError::Data(format!(
            "label {i} is {}; logistic regression takes 0 or 1, or classes 0, 1, 2, ... (below 64) for one-vs-rest",
            y[i]
        )));
    }
    let classes = y.iter().fold(0.0f64, |m, &v| m.max(v)) as usize + 1;
    Ok((0..classes).map(|c| y.iter().map(|&v| f64::from(v as usize == c)).collect()).collect())
}

/// Trains on `ds` as `opts` says: one model, or one per class (one-vs-rest, the same keys).
pub fn train(ds: &Dataset, opts: &Options, progress: &mut dyn FnMut(Progress)) -> Result<Trained, DriverError> {
    let hyper = &opts.hyper;
    if !(opts.clip.is_finite() && opts.clip > 0.0) {
        return Err(DriverError::Usage(format!("clip {}: a positive number of standard deviations", opts.clip)));
    }
    ds.check()?;
    let plan = TrainPlan::at(hyper.clone(), ds.x.len(), ds.features(), opts.ring).map_err(ckks)?;
    let scaling = Scaling::fit(ds, hyper.task, opts.clip);
    let x = scaling.features(&ds.x);
    let sets = label_sets(hyper.task, &scaling.targets(&ds.y))?;
    // Labels and values are checked before anything runs.
    for y in &sets {
        plan.pack_rows(&x, y).map_err(ckks)?;
    }
    let reference: Vec<Vec<f64>> = sets.iter().map(|y| fhec_ckks::train::reference(&plan, &x, y, false)).collect();
    let exact: Option<Vec<Vec<f64>>> = (hyper.task == Task::Logistic)
        .then(|| sets.iter().map(|y| fhec_ckks::train::reference(&plan, &x, y, true)).collect());
    let mut times = Times::default();
    let mut sizes = (None, None, None);
    let mut reach = None;
    let mut simulated = || -> Result<Vec<Vec<f64>>, DriverError> {
        let mut out = Vec::new();
        for y in &sets {
            let (w, r) = plan.simulate(&x, y).map_err(ckks)?;
            reach = Some(reach.map_or(r, |m: f64| m.max(r)));
            out.push(w);
        }
        Ok(out)
    };
    let weights = match opts.mode {
        Mode::Clear => {
            simulated()?;
            reference.clone()
        }
        Mode::Simulate => {
            progress(Progress::Stage("simulating"));
            let t = Instant::now();
            let w = simulated()?;
            times.server_s = t.elapsed().as_secs_f64();
            w
        }
        Mode::Fhe => {
            simulated()?;
            fhe(&plan, &x, &sets, &mut times, &mut sizes, progress)?
        }
    };
    if hyper.task == Task::Linear {
        reach = None;
    }
    times.per_iteration_s = times.server_s / (hyper.iterations * sets.len()) as f64;
    let gaps = |other: &[Vec<f64>]| weights.iter().zip(other).fold(0.0f64, |m, (a, b)| m.max(gap(a, b)));
    let report = Report {
        task: hyper.task,
        mode: opts.mode,
        samples: ds.x.len(),
        features: ds.features(),
        classes: if sets.len() == 1 && hyper.task == Task::Logistic { 2 } else { sets.len() },
        iterations: hyper.iterations,
        step: hyper.step,
        l2: hyper.l2,
        sigmoid_degree: (hyper.task == Task::Logistic).then_some(hyper.degree),
        sigmoid_interval: (hyper.task == Task::Logistic).then_some(hyper.interval),
        clip: opts.clip,
        ring_log_n: plan.ring.log_n,
        slots_used: ds.x.len().next_power_of_two() * plan.block(),
        bits_per_iteration: fhec_ckks::train::bits_per_iteration(hyper),
        iterations_per_round: plan.per_round,
        refreshes: plan.refreshes() * sets.len(),
        sigmoid_reach: reach,
        times,
        eval_key_bytes: sizes.0,
        dataset_ciphertext_bytes: sizes.1,
        refresh_ciphertext_bytes: sizes.2,
        peak_memory_mb: crate::bench::peak_memory_mb(),
        distance_from_float64: gaps(&reference),
        distance_from_exact_sigmoid: exact.as_deref().map(gaps),
        weights: weights.clone(),
    };
    let model = scaling.model(
        &weights,
        format!(
            "fhec train: {} regression{}, {} iterations of Nesterov-accelerated gradient descent ({} mode), {} samples",
            hyper.task.name(),
            if sets.len() > 1 { format!(" (one-vs-rest, {} classes)", sets.len()) } else { String::new() },
            hyper.iterations,
            opts.mode.name(),
            ds.x.len()
        ),
    );
    Ok(Trained { model, report, scaling, reference })
}

#[cfg(feature = "ckks")]
fn fhe(
    plan: &TrainPlan,
    x: &[Vec<f64>],
    sets: &[Vec<f64>],
    times: &mut Times,
    sizes: &mut (Option<usize>, Option<usize>, Option<usize>),
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f64>>, DriverError> {
    use fhec_ckks::backend::Context;
    use fhec_ckks::backend::train::{Trainer, train_galois_elements};
    let secs = |t: Instant| t.elapsed().as_secs_f64();
    progress(Progress::Stage("generating keys"));
    let t = Instant::now();
    let ctx = Context::new(plan.ring).map_err(ckks)?;
    let galois = train_galois_elements(&ctx, plan);
    let (client, eval) = ctx.keygen(&galois).map_err(ckks)?;
    times.keygen_s = secs(t);
    sizes.0 = Some(ctx.eval_key_bytes(galois.len()));
    // The server's side: holds `eval`, never `client`.
    let trainer = Trainer::new(&ctx, &eval, plan).map_err(ckks)?;
    let total = plan.hyper.iterations * sets.len();
    let mut out = Vec::with_capacity(sets.len());
    for (c, y) in sets.iter().enumerate() {
        progress(Progress::Stage("encrypting the training set"));
        let t = Instant::now();
        let (data, mut state) = ctx.encrypt_training(&client, plan, x, y).map_err(ckks)?;
        times.encrypt_s += secs(t);
        sizes.1 = Some(data.rows.bytes() + data.targets.as_ref().map_or(0, |t| t.bytes()));
        sizes.2 = Some(state.w.bytes() + state.v.bytes());
        let base = c * plan.hyper.iterations;
        let mut done = 0;
        while done < plan.hyper.iterations {
            let end = (done + plan.per_round).min(plan.hyper.iterations);
            let t = Instant::now();
            state = trainer
                .round(&data, state, done..end, |k| progress(Progress::Iteration { done: base + k + 1, total }))
                .map_err(ckks)?;
            times.server_s += secs(t);
            if end < plan.hyper.iterations {
                progress(Progress::Stage("refreshing the weights (data owner)"));
                let t = Instant::now();
                state = ctx.refresh(&client, plan, &state).map_err(ckks)?;
                times.refresh_s += secs(t);
            }
            done = end;
        }
        let t = Instant::now();
        out.push(ctx.decrypt_weights(&client, plan, &state).map_err(ckks)?);
        times.decrypt_s += secs(t);
    }
    Ok(out)
}

#[cfg(not(feature = "ckks"))]
fn fhe(
    _: &TrainPlan,
    _: &[Vec<f64>],
    _: &[Vec<f64>],
    _: &mut Times,
    _: &mut (Option<usize>, Option<usize>, Option<usize>),
    _: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f64>>, DriverError> {
    Err(DriverError::Usage(
        "training under encryption needs an fhec built with CKKS (poulpy needs a nightly compiler): `cargo +nightly \
         build --release -p fhec-cli --features ckks`; `--mode simulate` runs the same program in the clear"
            .into(),
    ))
}

impl Trained {
    /// Predictions in float64 from raw features, per sample: a probability per model (logistic;
    /// one-vs-rest, one per class) or the target (linear); with `reference`, those of the float64
    /// run of the same algorithm.
    pub fn predict(&self, x: &[Vec<f64>], reference: bool) -> Vec<Vec<f64>> {
        let ws = if reference { &self.reference } else { &self.report.weights };
        self.scaling
            .features(x)
            .iter()
            .map(|r| {
                ws.iter()
                    .map(|w| {
                        let t = w[0] + r.iter().zip(&w[1..]).map(|(a, b)| a * b).sum::<f64>();
                        match self.scaling.target {
                            None => 1.0 / (1.0 + (-t).exp()),
                            Some((m, s)) => t * s + m,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// On a test set: accuracy (logistic; one-vs-rest, the most probable class) or R² (linear), of
    /// this model and of the float64 reference, and (logistic) how many test samples the two
    /// classify differently.
    pub fn score(&self, test: &Dataset) -> TestScore {
        let (p, r) = (self.predict(&test.x, false), self.predict(&test.x, true));
        match self.report.task {
            Task::Logistic => {
                let class = |v: &[Vec<f64>]| -> Vec<f64> {
                    v.iter()
                        .map(|q| match q.as_slice() {
                            [one] => f64::from(*one > 0.5),
                            many => {
                                many.iter()
                                    .enumerate()
                                    .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                                    .0 as f64
                            }
                        })
                        .collect()
                };
                let (cp, cr) = (class(&p), class(&r));
                let acc = |c: &[f64]| c.iter().zip(&test.y).filter(|(a, b)| a == b).count() as f64 / c.len() as f64;
                TestScore {
                    metric: "accuracy",
                    value: acc(&cp),
                    reference: acc(&cr),
                    disagreements: Some(cp.iter().zip(&cr).filter(|(a, b)| a != b).count()),
                }
            }
            Task::Linear => {
                let (p, r): (Vec<f64>, Vec<f64>) = (p.iter().map(|v| v[0]).collect(), r.iter().map(|v| v[0]).collect());
                let mean = test.y.iter().sum::<f64>() / test.y.len().max(1) as f64;
                let total: f64 = test.y.iter().map(|v| (v - mean) * (v - mean)).sum();
                let r2 = |q: &[f64]| 1.0 - q.iter().zip(&test.y).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / total;
                TestScore { metric: "R²", value: r2(&p), reference: r2(&r), disagreements: None }
            }
        }
    }
}

/// A trained model's score on a test set, beside its float64 reference's.
#[derive(Clone, Debug, Serialize)]
pub struct TestScore {
    pub metric: &'static str,
    pub value: f64,
    pub reference: f64,
    pub disagreements: Option<usize>,
}

/// Writes the model (`path`) and its report (`path` with `.json`, the scores included).
pub fn write(trained: &Trained, path: &Path, test: Option<&TestScore>) -> Result<(), DriverError> {
    let io = |p: &Path, e: std::io::Error| DriverError::Io(format!("{}: {e}", p.display()));
    std::fs::write(path, trained.model.to_onnx()).map_err(|e| io(path, e))?;
    let report_path = path.with_extension("json");
    let mut json = serde_json::to_value(&trained.report).map_err(|e| DriverError::Io(e.to_string()))?;
    if let Some(t) = test {
        json["test"] = serde_json::to_value(t).map_err(|e| DriverError::Io(e.to_string()))?;
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| DriverError::Io(e.to_string()))?;
    std::fs::write(&report_path, text + "\n").map_err(|e| io(&report_path, e))
}
