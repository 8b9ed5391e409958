//! Reading ONNX protobuf pieces: attributes, tensors and value types.

use fhec_ir::Tensor;
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

/// Typed attribute access on a node; every error says which attribute and what was expected.
pub(crate) struct Attrs<'a>(pub &'a pb::NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, ty: AttributeType) -> Result<Option<&'a pb::AttributeProto>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == ty as i32 => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute `{name}` has type {:?}, expected {ty:?}",
                AttributeType::try_from(a.r#type).map(|t| format!("{t:?}")).unwrap_or_else(|_| a.r#type.to_string())
            )),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.typed(name, AttributeType::Int)?.map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.typed(name, AttributeType::Float)?.map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.typed(name, AttributeType::String)? {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s.clone()).map_err(|_| format!("attribute `{name}` is not UTF-8")),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        self.typed(name, AttributeType::Strings)?
            .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
            .map(Ok)
            .transpose()
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, String> {
        self.typed(name, AttributeType::Tensor)?.and_then(|a| a.t.as_ref()).map(convert_tensor).transpose()
    }
}

/// Element types we can bring into the IR (as f32 or i64).
fn supported_dtype(dt: i32) -> bool {
    use DataType::*;
    [Float, Uint8, Int8, Uint16, Int16, Int32, Int64, Bool, Float16, Double, Uint32, Uint64]
        .iter()
        .any(|&d| d as i32 == dt)
}

fn dtype_name(dt: i32) -> String {
    DataType::try_from(dt).map(|d| format!("{d:?}")).unwrap_or_else(|_| format!("type {dt}"))
}

/// Converts an ONNX tensor (initializer or attribute) to an IR tensor: floats become f32, integers and
/// booleans become i64.
pub(crate) fn convert_tensor(t: &pb::TensorProto) -> Result<Tensor, String> {
    convert_tensor_in(t, None)
}

pub(crate) fn convert_tensor_in(t: &pb::TensorProto, dir: Option<&str>) -> Result<Tensor, String> {
    if !supported_dtype(t.data_type) {
        return Err(format!(
            "tensor \"{}\" has element type {}, which fhec does not support",
            t.name,
            dtype_name(t.data_type)
        ));
    }
    // Declared dimensions are bounded before anything of that size is decoded or read.
    if t.dims.iter().all(|&d| d >= 0) {
        fhec_ir::check_shape(&t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>())
            .map_err(|e| format!("tensor \"{}\": {e}", t.name))?;
    }
    let resolver = tract_onnx::data_resolver::default();
    let tensor = tract_onnx::tensor::load_tensor(&*resolver, t, dir)
        .map_err(|e| format!("cannot decode tensor \"{}\": {e}", t.name))?;
    let shape = tensor.shape().to_vec();
    let out = if tensor.datum_type().is_float() {
        let t = tensor.cast_to::<f32>().map_err(|e| e.to_string())?;
        Tensor::from_f32(shape, t.to_plain_array_view::<f32>().map_err(|e| e.to_string())?.iter().copied().collect())
    } else {
        let t = tensor.cast_to::<i64>().map_err(|e| e.to_string())?;
        Tensor::from_i64(shape, t.to_plain_array_view::<i64>().map_err(|e| e.to_string())?.iter().copied().collect())
    };
    out.ok_or_else(|| format!("tensor \"{}\": data does not match its dims", t.name))
}

/// The static shape of a graph input; a symbolic (or unknown) leading dimension is the batch and binds to 1.
pub(crate) fn input_shape(vi: &pb::ValueInfoProto) -> Result<Vec<usize>, String> {
    use pb::tensor_shape_proto::dimension::Value;
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        _ => return Err("is not a tensor (sequence, map and optional inputs are not supported)".into()),
    };
    if ![DataType::Float as i32, DataType::Double as i32, DataType::Float16 as i32].contains(&tensor.elem_type) {
        return Err(format!("has element type {}; fhec models take float inputs", dtype_name(tensor.elem_type)));
    }
    let dims = &tensor.shape.as_ref().ok_or("has no shape; export the model with a static input shape")?.dim;
    dims.iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(Value::DimValue(v)) if *v > 0 => Ok(*v as usize),
            _ if i == 0 => Ok(1),
            Some(Value::DimParam(p)) => Err(format!(
                "has a symbolic dimension \"{p}\" at axis {i}; only the leading (batch) dimension may be symbolic"
            )),
            _ => {
                Err(format!("has an unknown dimension at axis {i}; only the leading (batch) dimension may be unknown"))
            }
        })
        .collect::<Result<Vec<usize>, String>>()
        .and_then(|shape| fhec_ir::check_shape(&shape).map(|_| shape))
}
