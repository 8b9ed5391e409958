//! Training on encrypted data (`fhec.train`'s Rust half): `fhec::train` on one machine playing
//! both parts, as `fhec train` does; the result is a linear model as ONNX, which `fhec.compile`
//! takes like any other.

use crate::{Failure, detached, report_progress};
use fhec::DriverError;
use fhec::train::{Dataset, Hyper, Mode, Options, Progress, Task};
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;

/// A dataset from numpy arrays: samples by features, and one label or target per sample.
fn dataset(x: PyReadonlyArray2<'_, f64>, y: PyReadonlyArray1<'_, f64>) -> Result<Dataset, Failure> {
    let (x, y) = (x.as_array(), y.as_array());
    if y.len() != x.nrows() {
        return Err(Failure::Driver(DriverError::Shape(format!(
            "{} labels for {} samples: one per sample",
            y.len(),
            x.nrows()
        ))));
    }
    let ds = Dataset { x: x.outer_iter().map(|r| r.to_vec()).collect(), y: y.to_vec() };
    ds.check()?;
    Ok(ds)
}

/// Trains a logistic (binary, or one-vs-rest for labels 0..K) or linear regression on `x`, `y`:
/// `mode` "clear" (float64), "simulate" (the encrypted program's slot operations in the clear) or
/// "fhe" (under CKKS: needs the `ckks` feature). Unset hyperparameters take `fhec train`'s
/// defaults. `progress(done, total)` hears the iterations.
#[pyfunction]
#[pyo3(signature = (x, y, task, mode, iterations=None, step=None, l2=0.0, degree=None, interval=None, clip=3.0, ring=None, progress=None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments
pub fn train(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f64>,
    y: PyReadonlyArray1<'_, f64>,
    task: &str,
    mode: &str,
    iterations: Option<usize>,
    step: Option<f64>,
    l2: f64,
    degree: Option<usize>,
    interval: Option<f64>,
    clip: f64,
    ring: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Trained> {
    let usage = |msg: String| Failure::Driver(DriverError::Usage(msg)).into_py(py);
    let task = match task {
        "logistic" => Task::Logistic,
        "linear" => Task::Linear,
        other => return Err(usage(format!("task={other:?}: expected logistic or linear"))),
    };
    let mode = match mode {
        "clear" => Mode::Clear,
        "simulate" => Mode::Simulate,
        "fhe" => Mode::Fhe,
        other => return Err(usage(format!("mode={other:?}: expected clear, simulate or fhe"))),
    };
    let ds = dataset(x, y).map_err(|e| e.into_py(py))?;
    let defaults = Hyper::defaults(task, ds.features());
    let hyper = Hyper {
        iterations: iterations.unwrap_or(defaults.iterations),
        step: step.unwrap_or(defaults.step),
        l2,
        degree: degree.unwrap_or(defaults.degree),
        interval: interval.unwrap_or(defaults.interval),
        ..defaults
    };
    let opts = Options { hyper, mode, ring, clip };
    let trained = detached(py, || {
        Ok(fhec::train::train(&ds, &opts, &mut |p| {
            if let Progress::Iteration { done, total } = p {
                report_progress(progress.as_ref(), done, total)
            }
        })?)
    })?;
    Ok(Trained { trained })
}

/// A trained linear model: its ONNX form over raw features, its report, its float64 predictions.
#[pyclass(frozen, module = "fhec._fhec")]
pub struct Trained {
    trained: fhec::train::Trained,
}

#[pymethods]
impl Trained {
    /// The model as ONNX bytes (the scaling folded in): what `fhec.compile` takes.
    #[getter]
    fn onnx<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.trained.model.to_onnx())
    }

    /// The training report as JSON (what `fhec train` writes beside the model).
    #[getter]
    fn report_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.trained.report)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("the training report: {e}")))
    }

    /// Predictions in float64 from raw features, `[samples, models]`: a probability per model
    /// (logistic) or the target (linear); with `reference`, those of the float64 run of the same
    /// algorithm.
    #[pyo3(signature = (x, reference=false))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'_, f64>,
        reference: bool,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
        let rows: Vec<Vec<f64>> = x.as_array().outer_iter().map(|r| r.to_vec()).collect();
        let want = self.trained.report.features;
        if let Some(r) = rows.iter().find(|r| r.len() != want) {
            return Err(Failure::Driver(DriverError::Shape(format!(
                "samples of {} features; the model was trained on {want}",
                r.len()
            )))
            .into_py(py));
        }
        let out = self.trained.predict(&rows, reference);
        let cols = out.first().map_or(0, Vec::len);
        let flat: Vec<f64> = out.into_iter().flatten().collect();
        let array = ndarray::Array2::from_shape_vec((rows.len(), cols), flat)
            .map_err(|e| Failure::Internal(e.to_string()).into_py(py))?;
        Ok(array.into_pyarray(py))
    }

    /// On a test set: the metric (accuracy or R²), its value, the float64 reference's, and how
    /// many samples the two classify differently.
    fn score(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        y: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<Py<PyDict>> {
        let ds = dataset(x, y).map_err(|e| e.into_py(py))?;
        if ds.features() != self.trained.report.features {
            return Err(Failure::Driver(DriverError::Shape(format!(
                "the test set has {} features, the training set {}",
                ds.features(),
                self.trained.report.features
            )))
            .into_py(py));
        }
        let s = self.trained.score(&ds);
        let d = PyDict::new(py);
        d.set_item("metric", s.metric)?;
        d.set_item("value", s.value)?;
        d.set_item("reference", s.reference)?;
        d.set_item("disagreements", s.disagreements)?;
        Ok(d.unbind())
    }

    /// Writes the model to `path` and its report beside it (`.json`), as `fhec train -o` does.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        detached(py, || Ok(fhec::train::write(&self.trained, &path, None)?))
    }
}
