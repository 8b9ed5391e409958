//! Reading sample arrays and writing results as `.npy` (through ndarray-npy).

use crate::{DriverError, Stacked};
use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, write_npy};
use std::path::{Path, PathBuf};

/// Reads samples as f32; float64 and integer arrays are converted (numpy's default dtype is float64).
pub fn read_samples(path: &Path) -> Result<ArrayD<f32>, DriverError> {
    let err = |e: String| DriverError::Data(format!("{}: {e}", path.display()));
    if !path.exists() {
        return Err(err("no such file".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    samples_from_bytes(&bytes).map_err(err)
}

/// [`read_samples`] on the bytes of a `.npy` file; the error says what is wrong (without a file name).
pub fn samples_from_bytes(bytes: &[u8]) -> Result<ArrayD<f32>, String> {
    check_size(bytes)?;
    if let Ok(a) = ArrayD::<f32>::read_npy(bytes) {
        return Ok(a);
    }
    if let Ok(a) = ArrayD::<f64>::read_npy(bytes) {
        return Ok(a.mapv(|v| v as f32));
    }
    if let Ok(a) = ArrayD::<i64>::read_npy(bytes) {
        return Ok(a.mapv(|v| v as f32));
    }
    match ArrayD::<i32>::read_npy(bytes) {
        Ok(a) => Ok(a.mapv(|v| v as f32)),
        Err(e) => Err(format!("not a .npy array of float32, float64, int64 or int32 ({e})")),
    }
}

/// Refuses a header that declares more values than the file holds, before anything is allocated
/// for them (a header of 10^11 x 13 values would otherwise abort the process).
fn check_size(bytes: &[u8]) -> Result<(), String> {
    let mut reader = bytes;
    let header = Header::from_reader(&mut reader).map_err(|e| format!("not a .npy array ({e})"))?;
    let after_header = reader.len() as u64;
    // The item size from the dtype (`'<f4'`: 4 bytes); 1 where it cannot be read (the reader refuses those).
    let descr = header.type_descriptor.to_string();
    let code = descr.trim_matches(['\'', '"']).trim_start_matches(['<', '>', '=', '|']);
    let item: u64 = code.get(1..).and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let values = header.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    match values.and_then(|v| v.checked_mul(item)) {
        Some(bytes) if bytes <= after_header => Ok(()),
        _ => Err(format!(
            "the header declares shape {:?} ({} values), more than the {after_header} bytes after it hold",
            header.shape,
            values.map_or("too many".to_string(), |v| v.to_string())
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_declaring_more_values_than_the_file_holds_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.npy");
        write_npy(&good, &ndarray::Array2::<f32>::zeros((3, 2))).unwrap();
        assert_eq!(read_samples(&good).unwrap().shape(), [3, 2]);
        // The same header with an absurd shape (12 spaces of its padding make room), and the 24 bytes of data.
        let bytes = std::fs::read(&good).unwrap();
        let at = bytes.windows(6).position(|w| w == b"(3, 2)").unwrap();
        let rest = &bytes[at + 6..];
        let newline = rest.iter().position(|&b| b == b'\n').unwrap();
        let forged = [&bytes[..at], b"(100000000000, 13)", &rest[..newline - 12], &rest[newline..]].concat();
        let huge = dir.path().join("huge.npy");
        std::fs::write(&huge, forged).unwrap();
        let e = read_samples(&huge).unwrap_err().to_string();
        assert!(e.contains("declares shape [100000000000, 13]"), "{e}");
        let short = dir.path().join("short.npy");
        std::fs::write(&short, &bytes[..bytes.len() - 4]).unwrap();
        assert!(read_samples(&short).unwrap_err().to_string().contains("declares shape [3, 2]"));
    }
}
