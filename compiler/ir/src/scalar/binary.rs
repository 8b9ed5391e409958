//! `Binary`: the elementwise functions of two variables and their reference semantics.

use serde::{Deserialize, Serialize};

/// Elementwise binary ops with numpy broadcasting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// `x < 0 ? slope * x : x`, the slope broadcast to the shape of `x` (unidirectional).
    PRelu,
    /// The larger operand (ONNX `Max` of two inputs).
    Max,
    /// The smaller operand (ONNX `Min` of two inputs).
    Min,
}

impl Binary {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
            Binary::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
        }
    }
}
