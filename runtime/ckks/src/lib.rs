//! fhec's CKKS backend. The compiler lowers a model's scalarized server part into a [`Plan`]:
//! affine maps and Chebyshev polynomials (activations approximated on their calibrated windows). With
//! batch-major packing every slot of a ciphertext is one sample, so one evaluation scores thousands
//! of samples at the cost of one.
//!
//! Without features this crate is the plan format, the fitting and the cleartext simulation (stable
//! Rust). The `poulpy` feature adds encrypted evaluation with poulpy, which needs a nightly compiler;
//! `backend.rs` is the only module that touches it.
#![forbid(unsafe_code)]

#[cfg(feature = "poulpy")]
pub mod backend;
pub mod cheb;
mod layout;
pub mod plan;
mod plan_text;
pub mod train;

pub use layout::ClientLayout;

pub use plan::{
    Affine, BASE2K, CONST_BITS, Cost, HEADROOM, LOG_DELTA, Layers, MAX_DEGREE, Node, PLAN_VERSION, Packing, Plan,
    Reads, Ring, Stage,
};

#[derive(Debug, thiserror::Error)]
pub enum CkksError {
    #[error("invalid CKKS plan: {0}")]
    Plan(String),
    #[error("wrong shape: {0}")]
    Shape(String),
    #[error("CKKS backend: {0}")]
    Backend(String),
    /// The caller asked the computation to stop (a training job cancelled or over its time).
    #[error("stopped before the end")]
    Stopped,
}
