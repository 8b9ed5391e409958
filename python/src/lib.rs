//! `fhec._fhec`: the extension module behind the `fhec` Python package (see `python/fhec/`). It
//! binds the library crate (`fhec`) and the service's client (`fhec-serve`), not the CLI: a build
//! compiled here writes the same files as `fhec build`, and every key, ciphertext and artifact file
//! reads and writes as the CLI's do.
//!
//! Every entry point runs its work with the GIL released ([`Python::detach`]) and inside
//! [`std::panic::catch_unwind`], so a bug in fhec is an `fhec.InternalError`, never a crash or a
//! foreign exception; library errors become the `fhec.errors` class of their kind (`Failure`)
//! with the CLI's text.

#![forbid(unsafe_code)]

mod build;
mod deploy;
mod train;

use fhec::{DriverError, Stacked};
use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A model's outputs for Python: `[(name, numpy array)]`, in order.
pub(crate) type Outputs = Vec<(String, Py<PyAny>)>;

/// Outputs and what producing them measured (a dict of timings).
pub(crate) type Measured = (Outputs, Py<PyDict>);

/// Why a call failed, before it becomes a Python exception (which needs the GIL).
pub(crate) enum Failure {
    Driver(DriverError),
    Serve(fhec_serve::ServeError),
    /// A panic: a bug in fhec, with its message.
    Internal(String),
    Py(PyErr),
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Failure {
        Failure::Driver(e)
    }
}

impl From<fhec_serve::ServeError> for Failure {
    fn from(e: fhec_serve::ServeError) -> Failure {
        match e {
            fhec_serve::ServeError::Driver(d) => Failure::Driver(d),
            e => Failure::Serve(e),
        }
    }
}

impl From<fhec_onnx::OnnxError> for Failure {
    fn from(e: fhec_onnx::OnnxError) -> Failure {
        Failure::Driver(e.into())
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Failure {
        Failure::Py(e)
    }
}

/// An instance of `fhec.errors.<class>` with `message` and the keyword fields, as a `PyErr`. A
/// class that cannot be imported (the extension used without its package) falls back to
/// `RuntimeError` with the same text.
fn raise(py: Python<'_>, class: &str, message: &str, fields: &[(&str, Py<PyAny>)]) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("fhec.errors")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in fields {
            kwargs.set_item(k, v)?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
    })();
    made.unwrap_or_else(|_| PyRuntimeError::new_err(message.to_string()))
}

impl Failure {
    pub(crate) fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Py(e) => e,
            Failure::Internal(msg) => raise(
                py,
                "InternalError",
                &format!("fhec failed with an internal error (a bug; please report it): {msg}"),
                &[],
            ),
            Failure::Serve(e) => {
                let class = match &e {
                    fhec_serve::ServeError::Busy(_) => "ServerBusy",
                    fhec_serve::ServeError::Usage(_) => "UsageError",
                    _ => "RemoteError",
                };
                raise(py, class, &e.to_string(), &[])
            }
            Failure::Driver(e) => driver_error(py, &e),
        }
    }
}

/// The `fhec.errors` class of a library error, with its fields where it has some (the node and op
/// type an unsupported op was found at, the layer a precision error names).
fn driver_error(py: Python<'_>, e: &DriverError) -> PyErr {
    let msg = e.to_string();
    let text = |s: &str| s.into_pyobject(py).expect("str").into_any().unbind();
    match e {
        DriverError::Onnx(o) => {
            let mut inner = o;
            while let fhec_onnx::OnnxError::InFile { inner: i, .. } = inner {
                inner = i;
            }
            match inner {
                fhec_onnx::OnnxError::Unsupported { nodes, .. } => {
                    let (node, op) = nodes.first().cloned().unwrap_or_default();
                    let all = PyList::new(py, nodes.iter().map(|(n, o)| (n.clone(), o.clone())))
                        .map(|l| l.into_any().unbind())
                        .unwrap_or_else(|_| py.None());
                    raise(py, "UnsupportedOp", &msg, &[("node", text(&node)), ("op", text(&op)), ("nodes", all)])
                }
                fhec_onnx::OnnxError::Node { node, op_type, .. } => {
                    raise(py, "ModelError", &msg, &[("node", text(node)), ("op", text(op_type))])
                }
                _ => raise(py, "ModelError", &msg, &[]),
            }
        }
        DriverError::Lower(fhec_lower::LowerError::Unsupported { node, .. }) => {
            raise(py, "UnsupportedOp", &msg, &[("node", text(node))])
        }
        DriverError::Lower(fhec_lower::LowerError::Noise { layer, .. }) => {
            raise(py, "PrecisionError", &msg, &[("layer", text(layer))])
        }
        DriverError::Shape(_) => raise(py, "ShapeError", &msg, &[]),
        DriverError::Mismatch(_) => raise(py, "KeyMismatch", &msg, &[]),
        DriverError::Key(_) => raise(py, "KeyProtectionError", &msg, &[]),
        DriverError::Artifact(_) => raise(py, "ArtifactError", &msg, &[]),
        DriverError::Data(_) => raise(py, "DataError", &msg, &[]),
        DriverError::Io(_) => raise(py, "FileError", &msg, &[]),
        DriverError::Usage(_) => raise(py, "UsageError", &msg, &[]),
        DriverError::Ckks(_) => raise(py, "CkksError", &msg, &[]),
        // A file the runtime could not read: missing, or there but not what it claims to be.
        DriverError::Runtime(fhec_runtime::RuntimeError::File { path, .. }) => {
            let class = if std::path::Path::new(path).exists() { "ArtifactError" } else { "FileError" };
            raise(py, class, &msg, &[])
        }
        DriverError::Runtime(_) => raise(py, "EvaluationError", &msg, &[]),
        DriverError::Lower(_) | DriverError::Pass(_) | DriverError::Interp(_) => raise(py, "CompileError", &msg, &[]),
    }
}

/// The text of a panic's payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f` with the GIL released, a panic caught: the one way this module calls into fhec.
pub(crate) fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Failure::Internal(panic_text(p)))))
        .map_err(|e| e.into_py(py))
}

/// The samples of a numpy array (float32, samples along axis 0), owned.
pub(crate) fn samples(x: PyReadonlyArrayDyn<'_, f32>) -> ndarray::ArrayD<f32> {
    x.as_array().to_owned()
}

/// The model's outputs as `[(name, numpy array)]`, in order.
pub(crate) fn outputs(py: Python<'_>, outs: Vec<(String, Stacked)>) -> Outputs {
    outs.into_iter()
        .map(|(name, s)| {
            let array = match s {
                Stacked::F32(a) => a.into_pyarray(py).into_any().unbind(),
                Stacked::I64(a) => a.into_pyarray(py).into_any().unbind(),
            };
            (name, array)
        })
        .collect()
}

/// Calls a Python progress callback `(done, total)` from any thread (taking the GIL for it), from
/// inside a library call; an exception it raises is printed, not propagated (a progress bar must
/// not abort the work), except a Ctrl-C, which is raised again once the call returns.
pub(crate) fn report_progress(callback: Option<&Py<PyAny>>, done: usize, total: usize) {
    if let Err(e) = call_progress(callback, done, total) {
        Python::attach(|py| {
            if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                // A Ctrl-C that landed in the callback cannot stop the library call it reports
                // from: it is raised again, as a new interrupt, once the call returns.
                if let Err(e) = py.import("_thread").and_then(|t| t.call_method0("interrupt_main")) {
                    e.print(py);
                }
            } else {
                e.print(py);
            }
        });
    }
}

/// Calls the progress callback, if any, with `(done, total)`; its exception (a Ctrl-C that landed
/// while it ran) is the caller's.
pub(crate) fn call_progress(callback: Option<&Py<PyAny>>, done: usize, total: usize) -> PyResult<()> {
    match callback {
        Some(cb) => Python::attach(|py| cb.call1(py, (done, total)).map(drop)),
        None => Ok(()),
    }
}

/// Test hook: panics inside fhec's guard, so that the tests can check that a panic becomes
/// `fhec.InternalError`.
#[pyfunction]
fn _panic_for_test(py: Python<'_>, message: String) -> PyResult<()> {
    detached(py, || -> Result<(), Failure> { panic!("{message}") })
}

/// The float reference: the ONNX model at `path` run by fhec's interpreter on every sample.
#[pyfunction]
fn reference(py: Python<'_>, path: std::path::PathBuf, x: PyReadonlyArrayDyn<'_, f32>) -> PyResult<Outputs> {
    let x = samples(x);
    let outs = detached(py, || {
        let module = fhec::load_model(&path)?;
        Ok(fhec::predict(&module, &x)?)
    })?;
    Ok(outputs(py, outs))
}

/// Whether this build of the extension runs CKKS encrypted (the `ckks` feature, nightly).
#[pyfunction]
fn has_ckks() -> bool {
    cfg!(feature = "ckks")
}

#[pymodule]
fn _fhec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(reference, m)?)?;
    m.add_function(wrap_pyfunction!(has_ckks, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(build::compile, m)?)?;
    m.add_class::<build::Build>()?;
    m.add_function(wrap_pyfunction!(deploy::keygen, m)?)?;
    m.add_class::<deploy::Client>()?;
    m.add_class::<deploy::Server>()?;
    m.add_class::<deploy::Remote>()?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_class::<train::Trained>()?;
    Ok(())
}
