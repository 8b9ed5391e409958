//! The deployed split, as the CLI's files: key generation, the client (secret key: encrypt,
//! decrypt), the server (evaluation key only: run) and the remote client of `fhec serve`.
//!
//! The server-side class holds no secret key by construction: it is built from a build directory
//! and an evaluation key file, and [`Server::run`] takes and returns ciphertext bytes.

use crate::{Failure, Measured, Outputs, detached, outputs, report_progress, samples};
use fhec::DriverError;
use fhec::keyfile::Protection;
#[cfg(feature = "ckks")]
use fhec_runtime::artifact::Tagged;
use fhec_runtime::artifact::{self, Kind};
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The error for a CKKS encrypted step in an extension built without poulpy.
#[cfg(not(feature = "ckks"))]
pub(crate) fn no_ckks() -> Failure {
    Failure::Driver(DriverError::Usage(
        "this fhec package was built without CKKS encryption (poulpy needs a nightly compiler): reinstall it with \
         `rustup run nightly pip install ./python --config-settings=build-args=\"--features ckks\"` (compiling and \
         simulating CKKS builds needs no feature)"
            .into(),
    ))
}

/// How the secret key is sealed at rest: a passphrase, or a key-management command pair (the
/// same as the CLI's `FHEC_PASSPHRASE` and `--kms-wrap`/`--kms-unwrap`), or neither (mode 0600).
fn protection(passphrase: Option<String>, wrap: Option<String>, unwrap: Option<String>) -> Result<Protection, Failure> {
    match (passphrase, wrap, unwrap) {
        (None, None, None) => Ok(Protection::None),
        (Some(p), None, None) if !p.is_empty() => Ok(Protection::Passphrase(zeroize::Zeroizing::new(p))),
        (None, Some(wrap), Some(unwrap)) => Ok(Protection::Command { wrap, unwrap }),
        _ => Err(Failure::Driver(DriverError::Usage(
            "seal the secret key with a non-empty passphrase, or with both kms_wrap and kms_unwrap commands, not both"
                .into(),
        ))),
    }
}

/// Generates keys for the build in `dir` into `keys/secret.key` (client only, mode 0600, sealed as
/// asked) and `keys/eval.key` (for the server); returns their sizes and the time taken.
#[pyfunction]
#[pyo3(signature = (dir, keys, passphrase=None, kms_wrap=None, kms_unwrap=None))]
pub fn keygen(
    py: Python<'_>,
    dir: PathBuf,
    keys: PathBuf,
    passphrase: Option<String>,
    kms_wrap: Option<String>,
    kms_unwrap: Option<String>,
) -> PyResult<Py<PyDict>> {
    let (bytes, seconds, scheme) = detached(py, || {
        let protection = protection(passphrase, kms_wrap, kms_unwrap)?;
        if fhec::ckks::is_ckks(&dir) {
            return ckks_keygen(&dir, &keys, &protection);
        }
        let client = fhec::tfhe::load_client(&dir)?.0;
        let (size, took) = fhec::tfhe::keygen(&keys, client.params, &protection)?;
        Ok((size, took.as_secs_f64(), "tfhe"))
    })?;
    let d = PyDict::new(py);
    d.set_item("scheme", scheme)?;
    d.set_item("eval_key_bytes", bytes)?;
    d.set_item("seconds", seconds)?;
    d.set_item("secret_key", keys.join("secret.key"))?;
    d.set_item("eval_key", keys.join("eval.key"))?;
    Ok(d.unbind())
}

#[cfg(feature = "ckks")]
fn ckks_keygen(dir: &Path, keys: &Path, protection: &Protection) -> Result<(usize, f64, &'static str), Failure> {
    let (size, _, took) = fhec::ckks::deploy::keygen(dir, keys, protection)?;
    Ok((size, took.as_secs_f64(), "ckks"))
}

#[cfg(not(feature = "ckks"))]
fn ckks_keygen(_: &Path, _: &Path, _: &Protection) -> Result<(usize, f64, &'static str), Failure> {
    Err(no_ckks())
}

/// The data owner's side: a build's client artifact and its secret key.
#[pyclass(frozen, module = "fhec._fhec")]
pub struct Client {
    session: fhec_serve::roundtrip::Session,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (dir, keys, passphrase=None, kms_wrap=None, kms_unwrap=None))]
    fn new(
        py: Python<'_>,
        dir: PathBuf,
        keys: PathBuf,
        passphrase: Option<String>,
        kms_wrap: Option<String>,
        kms_unwrap: Option<String>,
    ) -> PyResult<Client> {
        let session = detached(py, || {
            let protection = protection(passphrase, kms_wrap, kms_unwrap)?;
            Ok(fhec_serve::roundtrip::Session::load(&dir, &keys, &protection)?)
        })?;
        Ok(Client { session })
    }

    /// Encrypts samples: the bytes `fhec encrypt` writes (and `fhec run` and `fhec serve` read).
    fn encrypt<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'_, f32>) -> PyResult<Bound<'py, PyBytes>> {
        let x = samples(x);
        let bytes = detached(py, || Ok(self.session.encrypt(&x)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decrypts a server's answer (the bytes `fhec run` writes): the outputs, stacked over samples.
    fn decrypt(&self, py: Python<'_>, answer: Vec<u8>) -> PyResult<Outputs> {
        let outs = detached(py, || Ok(self.session.decrypt(&answer)?))?;
        Ok(outputs(py, outs))
    }

    /// The evaluation key's bytes (`eval.key`): what the server needs.
    #[getter]
    fn eval_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.session.eval_key)
    }

    /// Samples per request unless told otherwise.
    #[getter]
    fn default_batch(&self) -> usize {
        self.session.default_batch()
    }
}

enum ServerSide {
    Tfhe {
        server: Box<fhec_runtime::ServerArtifact>,
        digest: String,
        key: Box<fhec_runtime::fhe::EvalKey>,
        fingerprint: String,
    },
    #[cfg(feature = "ckks")]
    Ckks(Box<fhec::ckks::deploy::ServerSide>),
}

/// The server's side: a build's server artifact and one evaluation key. It has no secret key and
/// no way to decrypt.
#[pyclass(frozen, module = "fhec._fhec")]
pub struct Server {
    side: ServerSide,
}

#[pymethods]
impl Server {
    #[new]
    fn new(py: Python<'_>, dir: PathBuf, eval_key: PathBuf) -> PyResult<Server> {
        let side = detached(py, || {
            if fhec::ckks::is_ckks(&dir) {
                #[cfg(feature = "ckks")]
                return Ok(ServerSide::Ckks(Box::new(fhec::ckks::deploy::ServerSide::load(&dir, &eval_key)?)));
                #[cfg(not(feature = "ckks"))]
                return Err(no_ckks());
            }
            let (server, digest) = fhec::tfhe::load_server(&dir)?;
            let (key, fingerprint) = fhec::tfhe::load_eval(&eval_key)?;
            Ok(ServerSide::Tfhe { server: Box::new(server), digest, key: Box::new(key), fingerprint })
        })?;
        Ok(Server { side })
    }

    /// Runs the model on a client's ciphertexts (the bytes of `fhec encrypt`); returns the encrypted
    /// answer (the bytes of `fhec run`). Ciphertexts of another key or another build are refused.
    fn run<'py>(&self, py: Python<'py>, ciphertexts: Vec<u8>) -> PyResult<Bound<'py, PyBytes>> {
        let answer = detached(py, || {
            let bytes = match &self.side {
                ServerSide::Tfhe { server, digest, key, fingerprint } => {
                    let (cts, _) = artifact::from_bytes(&ciphertexts, Kind::Inputs)
                        .map_err(|e| DriverError::Artifact(format!("the ciphertexts {e}")))?;
                    artifact::to_bytes(Kind::Outputs, &fhec::tfhe::run(server, digest, key, fingerprint, &cts)?)
                }
                #[cfg(feature = "ckks")]
                ServerSide::Ckks(side) => {
                    let (cts, _): (Tagged<Vec<u8>>, _) = artifact::from_bytes(&ciphertexts, Kind::CkksInputs)
                        .map_err(|e| DriverError::Artifact(format!("the ciphertexts {e}")))?;
                    artifact::to_bytes(Kind::CkksOutputs, &side.run(&cts)?)
                }
            };
            Ok(bytes.map_err(DriverError::Artifact)?.0)
        })?;
        Ok(PyBytes::new(py, &answer))
    }
}

/// A client of `fhec serve`: encrypts here, evaluates there, decrypts here.
#[pyclass(frozen, module = "fhec._fhec")]
pub struct Remote {
    remote: fhec_serve::client::Remote,
    runtime: tokio::runtime::Runtime,
}

#[pymethods]
impl Remote {
    #[new]
    #[pyo3(signature = (url, token=None, ca_cert=None, retries=None))]
    fn new(
        py: Python<'_>,
        url: String,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        retries: Option<u32>,
    ) -> PyResult<Remote> {
        detached(py, || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| DriverError::Io(format!("cannot start the async runtime: {e}")))?;
            let mut remote = fhec_serve::client::Remote::new(&url, token, ca_cert.as_deref())?;
            if let Some(r) = retries {
                remote.retries = r;
            }
            Ok(Remote { remote, runtime })
        })
    }

    /// Registers the client's evaluation key (once), then runs the samples on the server's
    /// `model` in requests of `batch` samples; returns the outputs and what it measured.
    #[pyo3(signature = (client, model, x, batch=None, progress=None))]
    fn predict(
        &self,
        py: Python<'_>,
        client: &Bound<'_, Client>,
        model: String,
        x: PyReadonlyArrayDyn<'_, f32>,
        batch: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Measured> {
        let x = samples(x);
        let session = &client.get().session;
        let n = x.shape().first().copied().unwrap_or(0);
        let batch = batch.unwrap_or_else(|| session.default_batch()).max(1);
        let start = Instant::now();
        let run = detached(py, || {
            Ok(self.runtime.block_on(fhec_serve::roundtrip::predict(
                &self.remote,
                &model,
                session,
                &x,
                batch,
                |done| report_progress(progress.as_ref(), done, n),
            ))?)
        })?;
        let per = |s: f64| s * 1e3 / n.max(1) as f64;
        let d = PyDict::new(py);
        d.set_item("ms_per_sample", per(start.elapsed().as_secs_f64()))?;
        d.set_item("client_ms_per_sample", per(run.client.as_secs_f64()))?;
        d.set_item("round_trip_ms_per_sample", per(run.round_trips.as_secs_f64()))?;
        d.set_item("requests", run.requests)?;
        d.set_item("key_id", &run.key_id)?;
        Ok((outputs(py, run.outputs), d.unbind()))
    }
}
