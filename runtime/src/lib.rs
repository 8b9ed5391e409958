//! The fhec runtime: the FHE circuit format and its execution.
//!
//! The runtime knows nothing of the compiler: it receives a [`Circuit`] (serde-serializable) and runs
//! it, in the clear ([`simulate`], with the encrypted execution's exact integer semantics: torus
//! arithmetic modulo 2^64 and table lookups indexed by the top bits of the accumulator) or encrypted
//! ([`fhe`], tfhe-rs; this is the only crate that touches tfhe). [`artifact`] owns the file formats.
#![forbid(unsafe_code)]

pub mod artifact;
mod batch;
mod circuit;
mod circuit_text;
pub mod fhe;
mod params;
mod simulate;

pub use artifact::{ClientArtifact, InputCode, OutputCode, ServerArtifact};
pub use circuit::{Affine, Circuit, Pbs, Table};
pub use params::{NoiseModel, ParamSet};
pub use simulate::{Noise, NoiseSampler, simulate, simulate_sampled};

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum RuntimeError {
    #[error("the circuit takes {expected} input values, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("invalid circuit: {0}")]
    Invalid(String),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}
