//! The fhec runtime: the FHE circuit format and its execution.
//!
//! The runtime knows nothing of the compiler: it receives a [`Circuit`] (serde-serializable) and runs
//! it. Today it runs it in the clear ([`simulate`]), with the exact integer semantics the encrypted
//! execution will have: torus arithmetic modulo 2^64 and table lookups indexed by the top bits of the
//! accumulator. It will be the only crate that touches tfhe.

mod circuit;
mod simulate;

pub use circuit::{Affine, Circuit, Pbs, Table, POSITIONS, POSITION_SHIFT};
pub use simulate::{Noise, simulate};

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum RuntimeError {
    #[error("the circuit takes {expected} input values, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("invalid circuit: {0}")]
    Invalid(String),
}
