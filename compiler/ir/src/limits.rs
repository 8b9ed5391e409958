//! Resource bounds on what a model may declare, checked before anything of that size is allocated.
//!
//! A hostile or broken file can declare a tensor of 10^12 elements in one line (an input shape, a
//! `ConstantOfShape`, a `Range`, a `Resize` scale). Every shape the frontends, the IR parser and
//! type inference produce goes through [`check_shape`]; ONNX graphs are bounded in nodes, and the
//! lowering in encrypted values, bootstraps and the memory it would take (estimated before any
//! neuron is made). The bounds are process-wide (the CLI's `--max-tensor-elements`,
//! `--max-graph-nodes`, `--max-encrypted-values`, `--max-bootstraps` and `--max-compile-memory-mb`
//! set them) with defaults far above any model that runs encrypted here and below what exhausts the
//! machine's memory.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The bounds in force (see [`limits`] and [`set_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Elements of any one tensor (input, constant or intermediate): 2^28 by default (1 GiB of f32;
    /// VGG-19's largest weight has 2^26.6).
    pub max_tensor_elements: usize,
    /// Nodes of one ONNX graph: 65,536 by default (the model zoo's largest graphs have a few thousand).
    pub max_graph_nodes: usize,
    /// Encrypted values of one circuit, the sum of the sizes of its encrypted tensors: 2^22 by
    /// default (a circuit that size needs hours per sample and tens of GB to compile).
    pub max_encrypted_values: usize,
    /// Bootstraps per sample of one circuit: 2^20 by default (over 3 hours per sample at 11.6 ms
    /// per bootstrap on two cores, and the precision search simulates each candidate on every
    /// calibration sample).
    pub max_bootstraps: usize,
    /// Memory the lowering may take, in MiB, as estimated from the circuit's affine terms, values and
    /// calibration samples: 16 GiB by default (the CLI's default is 3/4 of the machine's memory).
    pub max_compile_memory_mb: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_tensor_elements: 1 << 28,
            max_graph_nodes: 1 << 16,
            max_encrypted_values: 1 << 22,
            max_bootstraps: 1 << 20,
            max_compile_memory_mb: 16 << 10,
        }
    }
}

static MAX_TENSOR_ELEMENTS: AtomicUsize = AtomicUsize::new(1 << 28);
static MAX_GRAPH_NODES: AtomicUsize = AtomicUsize::new(1 << 16);
static MAX_ENCRYPTED_VALUES: AtomicUsize = AtomicUsize::new(1 << 22);
static MAX_BOOTSTRAPS: AtomicUsize = AtomicUsize::new(1 << 20);
static MAX_COMPILE_MEMORY_MB: AtomicUsize = AtomicUsize::new(16 << 10);

/// The bounds in force.
pub fn limits() -> Limits {
    Limits {
        max_tensor_elements: MAX_TENSOR_ELEMENTS.load(Ordering::Relaxed),
        max_graph_nodes: MAX_GRAPH_NODES.load(Ordering::Relaxed),
        max_encrypted_values: MAX_ENCRYPTED_VALUES.load(Ordering::Relaxed),
        max_bootstraps: MAX_BOOTSTRAPS.load(Ordering::Relaxed),
        max_compile_memory_mb: MAX_COMPILE_MEMORY_MB.load(Ordering::Relaxed),
    }
}

/// Sets the bounds for the whole process (the CLI does this once, from its flags).
pub fn set_limits(l: Limits) {
    MAX_TENSOR_ELEMENTS.store(l.max_tensor_elements, Ordering::Relaxed);
    MAX_GRAPH_NODES.store(l.max_graph_nodes, Ordering::Relaxed);
    MAX_ENCRYPTED_VALUES.store(l.max_encrypted_values, Ordering::Relaxed);
    MAX_BOOTSTRAPS.store(l.max_bootstraps, Ordering::Relaxed);
    MAX_COMPILE_MEMORY_MB.store(l.max_compile_memory_mb, Ordering::Relaxed);
}

/// This machine's memory in MiB (from `/proc/meminfo`), where it can be read.
pub fn machine_memory_mb() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize =
        info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024)
}

/// The number of elements of `shape`, or `None` when the product overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The number of elements of `shape`, or why it is refused: beyond `usize`, or beyond
/// [`Limits::max_tensor_elements`]. The message names the shape and the flag that raises the bound.
pub fn check_shape(shape: &[usize]) -> Result<usize, String> {
    let max = MAX_TENSOR_ELEMENTS.load(Ordering::Relaxed);
    match checked_numel(shape) {
        Some(n) if n <= max => Ok(n),
        n => Err(format!(
            "a tensor of shape {shape:?} ({} elements) is beyond the limit of {max} elements per tensor \
             (--max-tensor-elements)",
            n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_beyond_the_bound_or_usize_are_refused() {
        assert_eq!(check_shape(&[2, 3]), Ok(6));
        assert_eq!(check_shape(&[]), Ok(1));
        let e = check_shape(&[1_000_000, 1_000_000]).unwrap_err();
        assert!(e.contains("1000000000000 elements") && e.contains("--max-tensor-elements"), "{e}");
        let e = check_shape(&[usize::MAX, 2]).unwrap_err();
        assert!(e.contains("more than 2^64"), "{e}");
    }
}
