//! Reading sample arrays and writing results as `.npy` (through ndarray-npy).

use crate::{DriverError, Stacked};
use ndarray::ArrayD;
use ndarray_npy::{read_npy, write_npy};
use std::path::{Path, PathBuf};

/// Reads samples as f32; float64 and integer arrays are converted (numpy's default dtype is float64).
pub fn read_samples(path: &Path) -> Result<ArrayD<f32>, DriverError> {
    let err = |e: String| DriverError::Data(format!("{}: {e}", path.display()));
    if !path.exists() {
        return Err(err("no such file".into()));
    }
    if let Ok(a) = read_npy::<_, ArrayD<f32>>(path) {
        return Ok(a);
    }
    if let Ok(a) = read_npy::<_, ArrayD<f64>>(path) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = read_npy::<_, ArrayD<i64>>(path) {
        return Ok(a.mapv(|v| v as f32));
    }
    match read_npy::<_, ArrayD<i32>>(path) {
        Ok(a) => Ok(a.mapv(|v| v as f32)),
        Err(e) => Err(err(format!("not a .npy array of float32, float64, int64 or int32 ({e})"))),
    }
}

/// Where output `k` is written: the given path for the first output, `<stem>.<name>.npy` beside it for others.
pub fn output_path(first: &Path, k: usize, name: &str) -> PathBuf {
    if k == 0 {
        return first.to_path_buf();
    }
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    let stem = first.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    first.with_file_name(format!("{stem}.{clean}.npy"))
}

pub fn write_output(path: &Path, a: &Stacked) -> Result<(), DriverError> {
    let r = match a {
        Stacked::F32(a) => write_npy(path, a),
        Stacked::I64(a) => write_npy(path, a),
    };
    r.map_err(|e| DriverError::Io(format!("cannot write {}: {e}", path.display())))
}
