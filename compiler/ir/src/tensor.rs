//! Dense constant tensors (weights, folded constants) stored in the IR.

use crate::types::{DType, Shape, numel};
use serde::{Deserialize, Serialize};

/// Row-major element storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense, row-major tensor with a static shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    shape: Shape,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor; `None` when the element count does not match the shape.
    pub fn new(shape: Shape, data: TensorData) -> Option<Tensor> {
        let len = match &data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        };
        (len == numel(&shape)).then_some(Tensor { shape, data })
    }

    pub fn from_f32(shape: Shape, data: Vec<f32>) -> Option<Tensor> {
        Tensor::new(shape, TensorData::F32(data))
    }

    pub fn from_i64(shape: Shape, data: Vec<i64>) -> Option<Tensor> {
        Tensor::new(shape, TensorData::I64(data))
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor { shape: vec![], data: TensorData::F32(vec![v]) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_parts(self) -> (Shape, TensorData) {
        (self.shape, self.data)
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
        }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The elements converted to f32 (i64 values are rounded to the nearest f32).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements converted to i64 (f32 values are truncated toward zero, as ONNX Cast does).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I64(v) => v.clone(),
        }
    }

    /// The same data with another shape of the same element count.
    pub fn reshaped(self, shape: Shape) -> Option<Tensor> {
        Tensor::new(shape, self.data)
    }
}
