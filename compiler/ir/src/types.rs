//! Value types: security (clear or encrypted), element type and static shape.
//!
//! The printed form is `enc<f32>[1,30]` or `clear<i64>[]`: an encrypted value can never be mistaken
//! for a clear one when reading IR text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a value is known to the server (`clear`: weights, constants) or only to the data owner (`enc`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Security {
    Clear,
    Enc,
}

impl Security {
    /// The security of a value computed from operands of these securities: encrypted if any operand is.
    pub fn join(items: impl IntoIterator<Item = Security>) -> Security {
        items.into_iter().max().unwrap_or(Security::Clear)
    }
}

/// Element type of a tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "i64" => Some(DType::I64),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A static tensor shape. Every dimension is known at compile time (batch size 1).
pub type Shape = Vec<usize>;

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The full type of an IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Type {
    pub security: Security,
    pub dtype: DType,
    pub shape: Shape,
}

impl Type {
    pub fn new(security: Security, dtype: DType, shape: Shape) -> Type {
        Type { security, dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
}

/// Writes `[1,2,3]`.
pub(crate) struct ShapeDisplay<'a>(pub &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sec = match self.security {
            Security::Clear => "clear",
            Security::Enc => "enc",
        };
        write!(f, "{sec}<{}>{}", self.dtype, ShapeDisplay(&self.shape))
    }
}
