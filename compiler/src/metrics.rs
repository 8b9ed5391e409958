//! Scoring predictions against labels: accuracy for classifiers, RMSE and R² for regressors.

use crate::{DriverError, Stacked};
use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use std::fmt;
use std::path::Path;

/// Labels: integer class labels, or float regression targets.
pub enum Labels {
    Classes(Vec<i64>),
    Targets(Vec<f32>),
}

pub fn read_labels(path: &Path) -> Result<Labels, DriverError> {
    if let Ok(a) = read_npy::<_, ArrayD<i64>>(path) {
        return Ok(Labels::Classes(a.iter().copied().collect()));
    }
    if let Ok(a) = read_npy::<_, ArrayD<i32>>(path) {
        return Ok(Labels::Classes(a.iter().map(|&v| i64::from(v)).collect()));
    }
    let a = crate::npy::read_samples(path)?;
    Ok(Labels::Targets(a.iter().copied().collect()))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Score {
    Accuracy { correct: usize, total: usize },
    Regression { rmse: f64, r2: f64 },
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Score::Accuracy { correct, total } => {
                write!(f, "accuracy {:.2}% ({correct}/{total})", 100.0 * *correct as f64 / (*total).max(1) as f64)
            }
            Score::Regression { rmse, r2 } => write!(f, "RMSE {rmse:.4}, R² {r2:.4}"),
        }
    }
}

/// The predicted class of each sample (see [`score`]).
pub fn predicted_classes(output: &Stacked) -> Result<Vec<i64>, DriverError> {
    Ok(match output {
        Stacked::I64(a) => a.iter().copied().collect(),
        Stacked::F32(a) => {
            let n = a.shape()[0];
            let a = a
                .view()
                .into_shape_with_order((n, a.len() / n.max(1)))
                .map_err(|e| DriverError::Shape(e.to_string()))?;
            a.axis_iter(Axis(0))
                .map(|row| {
                    if row.len() == 1 {
                        i64::from(row[0] > 0.5)
                    } else {
                        row.iter()
                            .enumerate()
                            .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                            .0 as i64
                    }
                })
                .collect()
        }
    })
}

/// Scores the model's first output. For classes, the predicted class is: the output itself if it is an
/// integer label; the argmax of a score vector; `score > 0.5` for a single probability.
pub fn score(output: &Stacked, labels: &Labels) -> Result<Score, DriverError> {
    let n = match output {
        Stacked::F32(a) => a.shape()[0],
        Stacked::I64(a) => a.shape()[0],
    };
    let len = match labels {
        Labels::Classes(v) => v.len(),
        Labels::Targets(v) => v.len(),
    };
    if len != n {
        return Err(DriverError::Shape(format!("{len} labels for {n} samples")));
    }
    Ok(match labels {
        Labels::Classes(want) => {
            let predicted = predicted_classes(output)?;
            let correct = predicted.iter().zip(want).filter(|(p, w)| p == w).count();
            Score::Accuracy { correct, total: n }
        }
        Labels::Targets(want) => {
            let got: Vec<f64> = match output {
                Stacked::F32(a) => a.iter().map(|&v| f64::from(v)).collect(),
                Stacked::I64(a) => a.iter().map(|&v| v as f64).collect(),
            };
            if got.len() != n {
                return Err(DriverError::Shape("regression scoring needs one output value per sample".into()));
            }
            let mean = want.iter().map(|&v| f64::from(v)).sum::<f64>() / n.max(1) as f64;
            let sse: f64 = got.iter().zip(want).map(|(g, &w)| (g - f64::from(w)).powi(2)).sum();
            let sst: f64 = want.iter().map(|&w| (f64::from(w) - mean).powi(2)).sum();
            Score::Regression { rmse: (sse / n.max(1) as f64).sqrt(), r2: 1.0 - sse / sst.max(f64::MIN_POSITIVE) }
        }
    })
}
