//! The ONNX conformance node tests (from the `onnx` wheel, extracted by `gen/conformance.py` for the
//! ops fhec claims) through the frontend and the float reference interpreter.
//!
//! The node tests pass an op's parameters (axes, shapes, pads, indices, conditions, clip bounds,
//! exponents) as graph inputs; in a model they are initializers, and fhec requires them constant. The
//! harness turns every input that is not float data into an initializer holding the data set's value;
//! when the frontend then asks for a constant, it runs the test again with only the first input left
//! as data, so those tests exercise the op rather than stop at the input check.
//!
//! Each test either runs and matches every output of every data set (ONNX's own tolerance: `|got -
//! want| <= 1e-7 + 1e-3 |want|`; NaN matches NaN), or is rejected up front with a clear error (a data
//! type fhec does not hold, a shape that depends on data...). A test the frontend accepts and then
//! gets wrong fails the build. The per-op table (tests, passed, rejected with the reasons) is an insta
//! snapshot, so coverage changes show in review.

use fhec_ir::{DType, Tensor};
use fhec_testsuite::root;
use std::collections::BTreeMap;
use std::path::Path;
use tract_onnx::prelude::Framework;

enum Outcome {
    Passed,
    /// Matches except where the test data is known to be wrong (see `ERRATA`), with the reason.
    Erratum(String),
    /// The frontend refused the model or its data: not applicable, with the reason.
    Rejected(String),
    Failed(String),
}

fn values(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F32 => t.to_f32_vec().into_iter().map(f64::from).collect(),
        DType::I64 => t.to_i64_vec().into_iter().map(|v| v as f64).collect(),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// The op types of the test's graph, for the table.
fn op_types(dir: &Path) -> String {
    let proto = tract_onnx::onnx().proto_model_for_path(dir.join("model.onnx")).expect("conformance model decodes");
    let ops: std::collections::BTreeSet<String> = proto.graph.map(|g| g.node.into_iter().map(|n| n.op_type).collect()).unwrap_or_default();
    ops.into_iter().collect::<Vec<_>>().join("+")
}

fn read(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    fhec_onnx::read_tensor_proto(&bytes).map_err(|e| e.to_string())
}

fn numbered(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    (0..).map(|i| dir.join(format!("{prefix}_{i}.pb"))).take_while(|p| p.exists()).collect()
}

/// Node tests whose expected data is known to be wrong, and how: (test name prefix, reason, the
/// only values fhec may give where it differs from the data).
const ERRATA: &[(&str, &str, [f64; 2])] = &[(
    "test_qlinearmatmul_",
    "onnx 1.19's expected int8 outputs wrap out-of-range results instead of saturating them (onnx/onnx#7835, fixed by onnx/onnx#7868); fhec saturates, as the spec and onnxruntime do",
    [-128.0, 127.0],
)];

/// Which graph inputs stay data; the others become initializers.
#[derive(Clone, Copy)]
enum Keep {
    /// The first `n` float inputs.
    Floats(usize),
    /// The first input, whatever its type: a quantized op's integer operand, which fhec holds in f32.
    First,
    /// Every input, whatever its type: booleans and small integers, which fhec holds in f32.
    All,
}

/// Ops whose integer or boolean operands are data in a model (fhec holds them in f32): quantization,
/// comparisons and boolean logic.
const INTEGER_DATA: [&str; 16] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulInteger",
    "ConvInteger",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Equal",
    "Not",
    "And",
    "Or",
    "Xor",
    "Where",
];

/// The model with every graph input that `keep` does not keep turned into an initializer holding
/// `data`'s value for it; the remaining inputs' data, in order.
fn freeze(model: &[u8], data: &[Vec<u8>], keep: Keep) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    use prost::Message;
    use tract_onnx::pb;
    let mut proto = pb::ModelProto::decode(model).map_err(|e| e.to_string())?;
    let graph = proto.graph.as_mut().ok_or("no graph")?;
    let initialized: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let inputs: Vec<pb::ValueInfoProto> = graph.input.drain(..).filter(|i| !initialized.contains(&i.name)).collect();
    if inputs.len() != data.len() {
        return Err(format!("{} input files for {} graph inputs", data.len(), inputs.len()));
    }
    let mut kept = Vec::new();
    for (i, (input, bytes)) in inputs.into_iter().zip(data).enumerate() {
        let mut t = pb::TensorProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
        // float64 data too (fhec computes it in f32, within the tolerance for these tests' values).
        let float = [pb::tensor_proto::DataType::Float as i32, pb::tensor_proto::DataType::Double as i32].contains(&t.data_type);
        let keep_it = match keep {
            Keep::Floats(n) => float && kept.len() < n,
            Keep::First => i == 0,
            Keep::All => true,
        };
        if keep_it {
            let mut input = input;
            // An integer or boolean operand is fed as floats holding its values, as fhec holds it.
            if let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                t.elem_type = pb::tensor_proto::DataType::Float as i32;
            }
            graph.input.push(input);
            kept.push(bytes.clone());
        } else {
            t.name = input.name;
            graph.initializer.push(t);
        }
    }
    Ok((proto.encode_to_vec(), kept))
}

fn run(dir: &Path) -> Outcome {
    let outcome = match run_with(dir, Keep::Floats(usize::MAX)) {
        Outcome::Rejected(why) if why.contains("must be a constant") => run_with(dir, Keep::Floats(1)),
        outcome => outcome,
    };
    if !op_types(dir).split('+').all(|op| INTEGER_DATA.contains(&op)) {
        return outcome;
    }
    let outcome = match outcome {
        Outcome::Rejected(_) => run_with(dir, Keep::All),
        outcome => outcome,
    };
    match outcome {
        Outcome::Rejected(why) if why.contains("must be a constant") => run_with(dir, Keep::First),
        outcome => outcome,
    }
}

/// Runs every data set with the inputs `keep` says as data, the others frozen.
fn run_with(dir: &Path, keep: Keep) -> Outcome {
    let model = std::fs::read(dir.join("model.onnx")).expect("conformance model");
    let mut errata = Vec::new();
    let mut sets: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    sets.sort();
    for set in sets {
        let data: Vec<Vec<u8>> = numbered(&set, "input").iter().map(|p| std::fs::read(p).unwrap()).collect();
        let (frozen, data) = match freeze(&model, &data, keep) {
            Ok(f) => f,
            Err(e) => return Outcome::Rejected(format!("test data: {e}")),
        };
        let mut m = match fhec_onnx::load_bytes(&frozen, "model", Some(&dir.to_string_lossy())) {
            Ok(m) => m,
            Err(e) => return Outcome::Rejected(first_line(&e.to_string())),
        };
        let mut ctx = fhec_passes::PassCtx::default();
        if let Err(e) = fhec_passes::run_passes(&mut m, &[&fhec_passes::Cleanup], &mut ctx) {
            return Outcome::Failed(format!("passes: {e}"));
        }
        // Integer data (a quantized operand) in f32, as fhec holds it.
        let as_f32 = |t: Tensor| match t.dtype() {
            DType::I64 => Tensor::from_f32(t.shape().to_vec(), t.to_i64_vec().into_iter().map(|v| v as f32).collect()).expect("same shape"),
            DType::F32 => t,
        };
        let inputs = match data.iter().map(|b| fhec_onnx::read_tensor_proto(b).map(as_f32).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>() {
            Ok(i) => i,
            Err(e) => return Outcome::Rejected(format!("input data: {e}")),
        };
        let want = match numbered(&set, "output").iter().map(|p| read(p)).collect::<Result<Vec<_>, _>>() {
            Ok(w) => w,
            Err(e) => return Outcome::Rejected(format!("expected output data: {e}")),
        };
        if inputs.len() != m.inputs().len() {
            return Outcome::Rejected(format!("{} input files for {} model inputs", inputs.len(), m.inputs().len()));
        }
        // fhec binds symbolic dimensions to 1; data of another size is refused by the interpreter.
        for (x, &v) in inputs.iter().zip(&m.inputs()) {
            if x.shape() != m.node(v).ty.shape.as_slice() {
                return Outcome::Rejected(format!(
                    "input data of shape {:?}; the model binds {:?} (symbolic dimensions become 1)",
                    x.shape(),
                    m.node(v).ty.shape
                ));
            }
        }
        let got = match fhec_interp::run(&m, &inputs) {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(format!("interpreter: {}", first_line(&e.to_string()))),
        };
        if got.len() != want.len() {
            return Outcome::Failed(format!("{} outputs, expected {}", got.len(), want.len()));
        }
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            if g.shape() != w.shape() {
                return Outcome::Failed(format!("output {k}: shape {:?}, expected {:?}", g.shape(), w.shape()));
            }
            let name = dir.file_name().unwrap().to_string_lossy();
            let erratum = ERRATA.iter().find(|(prefix, ..)| name.starts_with(prefix));
            for (i, (g, w)) in values(g).into_iter().zip(values(w)).enumerate() {
                if g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-7 + 1e-3 * w.abs() {
                    continue;
                }
                match erratum {
                    Some((_, why, allowed)) if allowed.contains(&g) => errata.push(format!("output {k} element {i}: {g} where the data says {w}: {why}")),
                    _ => return Outcome::Failed(format!("output {k} element {i}: {g} expected {w}")),
                }
            }
        }
    }
    match errata.first() {
        Some(first) => Outcome::Erratum(format!("{first} ({} elements)", errata.len())),
        None => Outcome::Passed,
    }
}

#[test]
fn onnx_node_tests_of_claimed_ops_pass_or_are_rejected_clearly() {
    let node = root().join("conformance/node");
    let mut tests: Vec<_> = std::fs::read_dir(&node).expect("conformance tests extracted").filter_map(|e| e.ok().map(|e| e.path())).collect();
    tests.sort();
    // op -> (tests, passed, rejected reasons, failures)
    let mut table: BTreeMap<String, (usize, usize, Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut errata = Vec::new();
    for dir in &tests {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let row = table.entry(op_types(dir)).or_default();
        row.0 += 1;
        match run(dir) {
            Outcome::Passed => row.1 += 1,
            Outcome::Erratum(why) => {
                row.1 += 1;
                errata.push(format!("{name}: {why}"));
            }
            Outcome::Rejected(why) => row.2.push(format!("{name}: {why}")),
            Outcome::Failed(why) => row.3.push(format!("{name}: {why}")),
        }
    }
    let mut text = String::from("| ops | tests | passed | rejected | failed |\n|---|---|---|---|---|\n");
    for (op, (n, passed, rejected, failed)) in &table {
        text.push_str(&format!("| {op} | {n} | {passed} | {} | {} |\n", rejected.len(), failed.len()));
    }
    let (n, passed): (usize, usize) = table.values().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    let claimed = table.keys().filter(|k| !k.contains('+')).count();
    text.push_str(&format!("\n{passed} of {n} node tests pass over {claimed} single-op groups\n\nrejected:\n"));
    for (_, _, rejected, _) in table.values() {
        for r in rejected {
            text.push_str(&format!("- {r}\n"));
        }
    }
    text.push_str("\npassed, where the test data is wrong:\n");
    for e in &errata {
        text.push_str(&format!("- {e}\n"));
    }
    let failures: Vec<&String> = table.values().flat_map(|r| &r.3).collect();
    eprintln!("{text}");
    assert!(failures.is_empty(), "{} node tests accepted and then wrong:\n{}", failures.len(), failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n"));
    insta::assert_snapshot!("conformance_table", text);
}
