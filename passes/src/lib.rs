//! IR-to-IR passes. One file per pass; each pass is a name plus `run(&mut Module, &mut PassCtx)`.
//!
//! `run_passes` runs a list of passes in order and, when `PassCtx::verify_each` is set (always in
//! tests), runs the verifier after each one and names the pass that broke an invariant.
#![forbid(unsafe_code)]

mod cleanup;
pub mod optimize;

pub use cleanup::Cleanup;

use fhec_ir::{IrError, Module};
use thiserror::Error;

/// Whether a pass changed the module.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

/// Options and statistics shared by the passes of one pipeline run.
#[derive(Debug, Default)]
pub struct PassCtx {
    /// Run the verifier after every pass.
    pub verify_each: bool,
    /// One line per pass that ran: name, whether it changed something, and node counts.
    pub log: Vec<String>,
}

#[derive(Debug, Error)]
pub enum PassError {
    #[error("pass `{pass}` left an invalid module: {err}")]
    Broke { pass: &'static str, err: IrError },
    #[error("pass `{pass}`: {err}")]
    Failed { pass: &'static str, err: IrError },
}

pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&self, module: &mut Module, ctx: &mut PassCtx) -> Result<Changed, IrError>;
}

/// Runs `passes` in order on `module`.
pub fn run_passes(module: &mut Module, passes: &[&dyn Pass], ctx: &mut PassCtx) -> Result<(), PassError> {
    for pass in passes {
        let before = module.len();
        let changed = pass.run(module, ctx).map_err(|err| PassError::Failed { pass: pass.name(), err })?;
        ctx.log.push(format!("{}: {:?}, {} -> {} nodes", pass.name(), changed, before, module.len()));
        if ctx.verify_each {
            module.verify().map_err(|err| PassError::Broke { pass: pass.name(), err })?;
        }
    }
    Ok(())
}
