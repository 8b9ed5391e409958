//! The IR's error type.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum IrError {
    /// The text form could not be parsed.
    #[error("line {line}: {msg}")]
    Parse { line: usize, msg: String },
    /// An op was given operands it cannot take.
    #[error("{op}{}: {msg}", loc.as_ref().map(|l| format!(" at \"{l}\"")).unwrap_or_default())]
    Type { op: &'static str, loc: Option<String>, msg: String },
    /// The module breaks an invariant; `value` names the offending value.
    #[error("{value}: {msg}")]
    Verify { value: String, msg: String },
}
