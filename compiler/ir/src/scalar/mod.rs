//! Scalar semantics: the elementwise functions of the IR on one f32 (`Unary`, `Binary`, `Cmp`) and
//! `Fun`, the functions of one variable composed of them (the body of a fused table).
//!
//! No tensors, no graph and no text here: `op` wraps these in tensor ops, and the text form of a `Fun`
//! (an s-expression of op mnemonics) lives with the ops' attributes in `op::attrs`.

mod binary;
mod fun;
mod unary;

pub use binary::Binary;
pub use fun::{Fun, Monotone};
pub use unary::{Cmp, Unary};
