//! Compiling (`fhec.compile`'s Rust half) and a build directory loaded for predictions: the
//! compiled circuit in cleartext, with the noise model, or encrypted on this machine.

use crate::{Failure, Measured, Outputs, call_progress, detached, outputs, samples};
use fhec::DriverError;
use fhec::scheme::{Scheme, Settings};
use fhec_ckks::Packing;
use fhec_lower::Fit;
use fhec_runtime::{ClientArtifact, ServerArtifact};
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn usage(msg: String) -> Failure {
    Failure::Driver(DriverError::Usage(msg))
}

/// One keyword's value as `T`, or a usage error naming the keyword.
fn value<'py, T: FromPyObjectOwned<'py>>(key: &str, v: &Bound<'py, pyo3::PyAny>) -> Result<T, Failure> {
    v.extract::<T>().map_err(|_| usage(format!("{key}={v}: {}", std::any::type_name::<T>())))
}

/// One of `choices` (dashes and underscores alike), or a usage error listing them.
fn choice<T: Copy>(key: &str, v: &str, choices: &[(&str, T)]) -> Result<T, Failure> {
    let norm = v.replace('_', "-").to_ascii_lowercase();
    choices.iter().find(|(n, _)| *n == norm).map(|(_, t)| *t).ok_or_else(|| {
        usage(format!(
            "{key}={v:?}: expected one of {}",
            choices.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The build settings from Python keywords, named as `fhec build`'s flags (`accuracy_budget` for
/// `--accuracy-budget`); an unknown keyword is refused by name.
fn settings(kwargs: &Bound<'_, PyDict>) -> Result<Settings, Failure> {
    let mut s = Settings::default();
    for (k, v) in kwargs.iter() {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        match key.as_str() {
            "scheme" => {
                let name: String = value(&key, &v)?;
                s.scheme =
                    choice(&key, &name, &[("tfhe", Scheme::Tfhe), ("ckks", Scheme::Ckks), ("auto", Scheme::Auto)])?;
            }
            "params" => s.params = Some(value(&key, &v)?),
            "weight_bits" => s.weight_bits = Some(value(&key, &v)?),
            "failure_log2" => s.failure_log2 = value(&key, &v)?,
            "table_ranges" => {
                use fhec_lower::tfhe::TableRanges::*;
                let name: String = value(&key, &v)?;
                s.table_ranges = choice(&key, &name, &[("calibrated", Calibrated), ("bound", Bound)])?;
            }
            "accuracy_budget" => s.accuracy_budget = value(&key, &v)?,
            "error_budget" => s.error_budget = value(&key, &v)?,
            "opt_level" => s.opt_level = value(&key, &v)?,
            "private_thresholds" => s.private_thresholds = value(&key, &v)?,
            "packing" => {
                let name: String = value(&key, &v)?;
                let both: &[Packing] = &[Packing::BatchMajor, Packing::FeatureMajor];
                let one: [&[Packing]; 2] = [&both[..1], &both[1..]];
                s.packings =
                    choice(&key, &name, &[("batch-major", one[0]), ("feature-major", one[1]), ("auto", both)])?
                        .to_vec();
            }
            "polynomial_fit" => {
                let name: String = value(&key, &v)?;
                let both: &[Fit] = &[Fit::Chebyshev, Fit::LeastSquares];
                s.fits =
                    choice(&key, &name, &[("chebyshev", &both[..1]), ("least-squares", &both[1..]), ("auto", both)])?
                        .to_vec();
            }
            "batch" => s.batch = value(&key, &v)?,
            "threads" => s.threads = value(&key, &v)?,
            _ => return Err(usage(format!("compile() got an unknown setting {key:?}"))),
        }
    }
    Ok(s)
}

/// Compiles the ONNX model at `model` into the build directory `dir` (the files of `fhec build`);
/// returns the text report and the warnings. `progress(message)` hears the search's progress.
#[pyfunction]
#[pyo3(signature = (model, calibration, dir, settings, progress=None))]
pub fn compile(
    py: Python<'_>,
    model: PathBuf,
    calibration: Option<PyReadonlyArrayDyn<'_, f32>>,
    dir: PathBuf,
    settings: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(String, Vec<String>)> {
    let opts = self::settings(settings).and_then(|s| Ok(s.options()?)).map_err(|e| e.into_py(py))?;
    let x = calibration.map(samples);
    detached(py, || {
        let say = |msg: String| {
            if let Some(cb) = &progress {
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (msg,)) {
                        e.print(py);
                    }
                });
            }
        };
        let (mut tried, mut size) = (0, String::new());
        let outcome = fhec::scheme::build(&model, x.as_ref(), &dir, &opts, |p| match p {
            fhec_lower::tfhe::Progress::Estimated(s) => {
                size = format!(" for about {} bootstraps per sample", fhec_lower::size::group(s.bootstraps));
                say(format!("choosing parameters{size}: compiling the first candidate"));
            }
            fhec_lower::tfhe::Progress::Tried(_) => {
                tried += 1;
                say(format!("choosing parameters{size}: {tried} candidates simulated"));
            }
        })?;
        Ok((outcome.report, outcome.warnings))
    })
}

struct Tfhe {
    client: ClientArtifact,
    post: fhec_ir::Module,
    server: ServerArtifact,
    digest: String,
}

enum Loaded {
    Tfhe(Box<Tfhe>),
    Ckks(Box<fhec::ckks::Loaded>),
}

/// A build directory (either scheme), loaded and checked, for predictions on this machine.
#[pyclass(frozen, module = "fhec._fhec")]
pub struct Build {
    dir: PathBuf,
    loaded: Loaded,
}

fn load(dir: &Path) -> Result<Loaded, Failure> {
    if fhec::ckks::is_ckks(dir) {
        return Ok(Loaded::Ckks(Box::new(fhec::ckks::load(dir)?)));
    }
    let (client, post) = fhec::tfhe::load_client(dir)?;
    let (server, digest) = fhec::tfhe::load_server(dir)?;
    Ok(Loaded::Tfhe(Box::new(Tfhe { client, post, server, digest })))
}

/// What an encrypted run on this machine measured.
fn timings(py: Python<'_>, pairs: &[(&str, f64)]) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in pairs {
        d.set_item(k, v)?;
    }
    Ok(d.unbind())
}

#[pymethods]
impl Build {
    #[new]
    fn new(py: Python<'_>, dir: PathBuf) -> PyResult<Build> {
        let loaded = detached(py, || load(&dir))?;
        Ok(Build { dir, loaded })
    }

    /// "tfhe" or "ckks".
    #[getter]
    fn scheme(&self) -> &'static str {
        match self.loaded {
            Loaded::Tfhe(_) => "tfhe",
            Loaded::Ckks(_) => "ckks",
        }
    }

    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The compiled model in cleartext: noise-free, or with the parameter set's noise drawn from
    /// `noise_seed` (TFHE; a CKKS simulation is exact up to CKKS's own approximation error).
    #[pyo3(signature = (x, noise_seed=None))]
    fn simulate(&self, py: Python<'_>, x: PyReadonlyArrayDyn<'_, f32>, noise_seed: Option<u64>) -> PyResult<Outputs> {
        let x = samples(x);
        let outs = detached(py, || match &self.loaded {
            Loaded::Tfhe(t) => {
                let Tfhe { client, post, server, .. } = &**t;
                Ok(fhec::tfhe::simulate(client, post, server, &x, noise_seed, fhec_lower::Engine::Auto, |_| ())?)
            }
            Loaded::Ckks(l) => Ok(l.simulate(&x)?.0),
        })?;
        Ok(outputs(py, outs))
    }

    /// Encrypted on this machine: keys made in memory, then each sample encrypted, run with the
    /// evaluation key and decrypted (TFHE: one sample at a time, so that Ctrl-C stops between two;
    /// CKKS: in batches of a ciphertext's samples). Returns the outputs and the timings.
    #[pyo3(signature = (x, progress=None))]
    fn fhe(&self, py: Python<'_>, x: PyReadonlyArrayDyn<'_, f32>, progress: Option<Py<PyAny>>) -> PyResult<Measured> {
        let x = samples(x);
        let n = x.shape().first().copied().unwrap_or(0);
        match &self.loaded {
            Loaded::Tfhe(t) => {
                let Tfhe { client, post, server, digest } = &**t;
                let start = Instant::now();
                let (sk, ek, fp, key_bytes) = detached(py, || {
                    let (sk, compressed) = fhec_runtime::fhe::keygen(client.params);
                    let (bytes, fp) = fhec_runtime::artifact::eval_key_bytes(&compressed);
                    Ok((sk, compressed.decompress(), fp, bytes.len()))
                })?;
                let keygen = start.elapsed();
                let (mut client_t, mut server_t) = (Duration::ZERO, Duration::ZERO);
                let mut per_sample = Vec::with_capacity(n);
                for i in 0..n {
                    let xi = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned();
                    let (outs, c, s) = detached(py, || {
                        let t = Instant::now();
                        let cts = fhec::tfhe::encrypt(client, &sk, &fp, &xi)?;
                        let c = t.elapsed();
                        let t = Instant::now();
                        let out = fhec::tfhe::run(server, digest, &ek, &fp, &cts)?;
                        let s = t.elapsed();
                        let t = Instant::now();
                        let outs = fhec::tfhe::decrypt_samples(client, post, &sk, &fp, &out)?;
                        Ok((outs, c + t.elapsed(), s))
                    })?;
                    per_sample.extend(outs);
                    client_t += c;
                    server_t += s;
                    // Ctrl-C raises KeyboardInterrupt here, between two samples (or in the
                    // progress callback, when it lands while that runs).
                    py.check_signals()?;
                    call_progress(progress.as_ref(), i + 1, n)?;
                }
                let per = |d: Duration| d.as_secs_f64() * 1e3 / n.max(1) as f64;
                let stats = timings(
                    py,
                    &[
                        ("ms_per_sample", per(client_t + server_t)),
                        ("client_ms_per_sample", per(client_t)),
                        ("server_ms_per_sample", per(server_t)),
                        ("keygen_s", keygen.as_secs_f64()),
                        ("eval_key_bytes", key_bytes as f64),
                    ],
                )?;
                Ok((outputs(py, fhec::stack_outputs(post, per_sample)), stats))
            }
            Loaded::Ckks(l) => ckks_fhe(py, l, &x, progress),
        }
    }

    /// What the build costs before any key exists: for TFHE the bootstraps, the estimated latency
    /// of one sample and of `batch` samples on `threads` workers, and the evaluation key's size.
    #[pyo3(signature = (batch=1, threads=2))]
    fn estimate(&self, py: Python<'_>, batch: usize, threads: usize) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        match &self.loaded {
            Loaded::Tfhe(t) => {
                let Tfhe { client, server, .. } = &**t;
                let c = &server.circuit;
                let one = fhec::tfhe::estimated_latency_ms(c, threads);
                let many = fhec::tfhe::estimated_batch_ms(c, batch, threads);
                d.set_item("scheme", "tfhe")?;
                d.set_item("parameter_set", c.params.name())?;
                d.set_item("bootstraps_per_sample", c.pbs.len())?;
                d.set_item("levels", c.levels().len())?;
                d.set_item("latency_ms_per_sample", one)?;
                d.set_item("batch_ms", many)?;
                d.set_item("eval_key_bytes", c.params.eval_key_bytes())?;
                d.set_item("input_ciphertexts_per_sample", client.inputs.len())?;
                d.set_item("output_ciphertexts_per_sample", client.outputs.len())?;
            }
            Loaded::Ckks(l) => {
                d.set_item("scheme", "ckks")?;
                d.set_item("ring_log_n", l.ring.log_n)?;
                d.set_item("packing", l.packing.name())?;
                // The plan's estimate for this batch and these workers (the report's is for the
                // build's own batch).
                d.set_item("batch_ms", l.plan().estimated_ms(l.ring, l.packing, batch, threads))?;
            }
        }
        d.set_item("batch", batch)?;
        d.set_item("threads", threads)?;
        Ok(d.unbind())
    }
}

#[cfg(feature = "ckks")]
fn ckks_fhe(
    py: Python<'_>,
    l: &fhec::ckks::Loaded,
    x: &ndarray::ArrayD<f32>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Measured> {
    let n = x.shape().first().copied().unwrap_or(0);
    let run = detached(py, || Ok(fhec::ckks::fhe(l, x, |done| crate::report_progress(progress.as_ref(), done, n))?))?;
    let per = |d: Duration| d.as_secs_f64() * 1e3 / n.max(1) as f64;
    let stats = timings(
        py,
        &[
            ("ms_per_sample", per(run.client + run.server)),
            ("client_ms_per_sample", per(run.client)),
            ("server_ms_per_sample", per(run.server)),
            ("keygen_s", run.keygen.as_secs_f64()),
            ("batches", run.batches as f64),
            ("max_error", run.max_error),
        ],
    )?;
    Ok((outputs(py, run.outputs), stats))
}

#[cfg(not(feature = "ckks"))]
fn ckks_fhe(
    py: Python<'_>,
    _: &fhec::ckks::Loaded,
    _: &ndarray::ArrayD<f32>,
    _: Option<Py<PyAny>>,
) -> PyResult<Measured> {
    Err(crate::deploy::no_ckks().into_py(py))
}
