//! The fhec graph IR: a petgraph dataflow graph of tensor ops with typed values.
//!
//! Every value has a [`Type`]: security (`clear` or `enc`), element type and a fully static shape.
//! [`Module`] holds the graph; [`Op::infer`] gives each op's typing rule; `Module::verify` checks the
//! invariants; `Display`/`FromStr` are the canonical text form (see [`mod@print`]).
//!
//! This crate depends on petgraph, serde and thiserror only: never on tract, tfhe, egg or cranelift.
#![forbid(unsafe_code)]

mod error;
mod index;
pub mod limits;
mod module;
mod op;
mod parse;
pub mod print;
mod scalar;
mod tensor;
mod types;
mod verify;
pub mod window;

pub use error::IrError;
pub use index::{broadcast_index, for_each_index};
pub use limits::{Limits, check_shape, checked_numel};
pub use module::{Module, Node, ValueId};
pub use op::{Attr, AttrMap, ConvAttrs, Op, PadMode, PoolAttrs, ReduceKind, broadcast_shapes, slice_len, window_out};
pub use print::DataMode;
pub use scalar::{Binary, Cmp, Fun, Monotone, Unary};
pub use tensor::{Tensor, TensorData};
pub use types::{DType, Security, Shape, Type, numel};
pub use window::{Tap, Window};
