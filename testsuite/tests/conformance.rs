//! The ONNX conformance node tests (from the `onnx` wheel, extracted by `gen/conformance.py` for the
//! ops fhec claims) through the frontend and the float reference interpreter.
//!
//! The node tests pass an op's parameters (axes, shapes, pads, indices, conditions, clip bounds,
//! exponents) as graph inputs; in a model they are initializers, and fhec requires them constant. The
//! harness turns every input that is not float data into an initializer holding the data set's value;
//! when the frontend then asks for a constant, it runs the test again with only the first input left
//! as data, so those tests exercise the op rather than stop at the input check.
//!
//! Every test that passes in the float reference is then compiled to an FHE circuit (calibrated on its
//! own input; an op's other inputs frozen as constants, since a circuit takes one encrypted input) and
//! run in noise-free cleartext simulation, which must stay within `QUANT_TOLERANCE` of the output's
//! scale; what the FHE lowering refuses is listed with its reason, and known gaps are named.
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
    /// Matches in the float reference; and how the quantized simulation did.
    Passed(Quant),
    /// Matches except where the test data is known to be wrong (see `ERRATA`), with the reason.
    Erratum(String, Quant),
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
    let ops: std::collections::BTreeSet<String> =
        proto.graph.map(|g| g.node.into_iter().map(|n| n.op_type).collect()).unwrap_or_default();
    ops.into_iter().collect::<Vec<_>>().join("+")
}

fn read(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    fhec_onnx::read_tensor_proto(&bytes).map_err(|e| e.to_string())
}

fn numbered(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    (0..).map(|i| dir.join(format!("{prefix}_{i}.pb"))).take_while(|p| p.exists()).collect()
}

/// The test compiled to an FHE circuit (the precision search calibrated on the test's own input) and
/// run in cleartext simulation, noise-free.
enum Quant {
    /// Within `QUANT_TOLERANCE` of the output's scale.
    Passed,
    /// Not compiled under FHE, with the compiler's reason (several inputs, a product of encrypted
    /// values it does not lower, an output that is not encrypted...).
    NotApplicable(String),
    Failed(String),
}

/// The quantized simulation's tolerance, as a fraction of the largest expected magnitude of each
/// output: table resolution and 6-bit weights (as `tests/simulate.rs` for single-op models). An
/// element that sits on a step or a spike (its float value jumps by over 10% of the scale when the
/// input moves by 0.1%: a tie in a comparison, equality) is not checked: a table, or the client reading a decrypted value,
/// sees the input only approximately and cannot resolve it.
const QUANT_TOLERANCE: f64 = 0.01;

fn quantized(m: &fhec_ir::Module, inputs: &[Tensor], want: &[Tensor]) -> Quant {
    if inputs.len() != 1 {
        return Quant::NotApplicable(format!("{} inputs (an FHE circuit takes one)", inputs.len()));
    }
    let compiled = match fhec_lower::Calibration::from_samples(inputs.to_vec())
        .and_then(|c| fhec_lower::tfhe::compile(m, &c, &fhec_lower::tfhe::Options::default()))
    {
        Ok(c) => c,
        Err(e) => return Quant::NotApplicable(first_line(&e.to_string())),
    };
    let got = match compiled.simulate(&inputs[0], fhec_runtime::Noise::None) {
        Ok(g) => g,
        Err(e) => return Quant::Failed(format!("simulation: {}", first_line(&e.to_string()))),
    };
    // The float outputs for the input moved by -0.1% and +0.1%: where they differ, the element sits on
    // a step (a tie in a comparison, an integer under floor), which a table cannot resolve.
    let nudged = |f: f32| {
        let x = &inputs[0];
        let moved =
            Tensor::from_f32(x.shape().to_vec(), x.to_f32_vec().iter().map(|v| v + f * (v.abs() + 1.0)).collect())
                .expect("same shape");
        fhec_interp::run(m, &[moved]).ok()
    };
    // Computed at the first mismatch only: most tests have none.
    let moved = std::cell::OnceCell::new();
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g.shape() != w.shape() {
            return Quant::Failed(format!("output {k}: shape {:?}, expected {:?}", g.shape(), w.shape()));
        }
        let w = values(w);
        let scale = w.iter().filter(|v| v.is_finite()).fold(0f64, |a, v| a.max(v.abs()));
        for (i, (g, w)) in values(g).into_iter().zip(w).enumerate() {
            if g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 + QUANT_TOLERANCE * scale {
                continue;
            }
            // A step jumps between the two sides; a spike (equality) jumps away from both. A jump is
            // over 10% of the output's scale for a 0.1% move: no continuous op comes close.
            let on_step = matches!(moved.get_or_init(|| (nudged(-1e-3), nudged(1e-3))), (Some(d), Some(u)) if {
                let (d, u) = (values(&d[k])[i], values(&u[k])[i]);
                let jump = 0.1 * scale;
                (d - u).abs() > jump || (d - w).abs() > jump
            });
            if !on_step {
                return Quant::Failed(format!("output {k} element {i}: {g} expected {w} (scale {scale:.3})"));
            }
        }
    }
    Quant::Passed
}

/// Node tests whose expected data is known to be wrong, and how: (test name prefix, reason, the
/// only values fhec may give where it differs from the data).
const ERRATA: &[(&str, &str, [f64; 2])] = &[
    (
        "test_qlinearmatmul_2D_int8_",
        "onnx 1.19's expected int8 outputs wrap out-of-range results instead of saturating them (onnx/onnx#7835, fixed by onnx/onnx#7868); fhec saturates, as the spec and onnxruntime do",
        [-128.0, 127.0],
    ),
    (
        "test_qlinearmatmul_3D_int8_",
        "onnx 1.19's expected int8 outputs wrap out-of-range results instead of saturating them (onnx/onnx#7835, fixed by onnx/onnx#7868); fhec saturates, as the spec and onnxruntime do",
        [-128.0, 127.0],
    ),
];

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
        let float = [pb::tensor_proto::DataType::Float as i32, pb::tensor_proto::DataType::Double as i32]
            .contains(&t.data_type);
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

/// The model with the inputs `keep` says as data (the others frozen), after the cleanup passes, and
/// those inputs' data in f32.
fn load_set(dir: &Path, model: &[u8], raw: &[Vec<u8>], keep: Keep) -> Result<(fhec_ir::Module, Vec<Tensor>), Outcome> {
    let (frozen, data) = freeze(model, raw, keep).map_err(|e| Outcome::Rejected(format!("test data: {e}")))?;
    let mut m = fhec_onnx::load_bytes(&frozen, "model", Some(&dir.to_string_lossy()))
        .map_err(|e| Outcome::Rejected(first_line(&e.to_string())))?;
    let mut ctx = fhec_passes::PassCtx::default();
    fhec_passes::run_passes(&mut m, &[&fhec_passes::Cleanup], &mut ctx)
        .map_err(|e| Outcome::Failed(format!("passes: {e}")))?;
    // Integer data (a quantized operand, a boolean) in f32, as fhec holds it.
    let as_f32 = |t: Tensor| match t.dtype() {
        DType::I64 => Tensor::from_f32(t.shape().to_vec(), t.to_i64_vec().into_iter().map(|v| v as f32).collect())
            .expect("same shape"),
        DType::F32 => t,
    };
    let inputs = data
        .iter()
        .map(|b| fhec_onnx::read_tensor_proto(b).map(as_f32).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Outcome::Rejected(format!("input data: {e}")))?;
    Ok((m, inputs))
}

/// Runs every data set with the inputs `keep` says as data, the others frozen.
fn run_with(dir: &Path, keep: Keep) -> Outcome {
    let model = std::fs::read(dir.join("model.onnx")).expect("conformance model");
    let mut errata = Vec::new();
    let mut quant: Option<Quant> = None;
    let mut sets: Vec<_> =
        std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    sets.sort();
    for set in sets {
        let raw: Vec<Vec<u8>> = numbered(&set, "input").iter().map(|p| std::fs::read(p).unwrap()).collect();
        let (m, inputs) = match load_set(dir, &model, &raw, keep) {
            Ok(l) => l,
            Err(outcome) => return outcome,
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
                    Some((_, why, allowed)) if allowed.contains(&g) => {
                        errata.push(format!("output {k} element {i}: {g} where the data says {w}: {why}"))
                    }
                    _ => return Outcome::Failed(format!("output {k} element {i}: {g} expected {w}")),
                }
            }
        }
        // The first data set that is not reproduced under FHE decides. An FHE circuit takes one
        // encrypted input: the test's other inputs become constants, as a model's parameters are.
        if !matches!(quant, Some(Quant::NotApplicable(_) | Quant::Failed(_))) {
            let reference = if errata.is_empty() { &want } else { &got };
            quant = Some(match inputs.len() {
                1 => quantized(&m, &inputs, reference),
                _ => match load_set(dir, &model, &raw, Keep::First) {
                    Ok((m1, x1)) => quantized(&m1, &x1, reference),
                    Err(_) => Quant::NotApplicable("needs several encrypted inputs".into()),
                },
            });
        }
    }
    let quant = quant.unwrap_or(Quant::NotApplicable("no data sets".into()));
    match errata.first() {
        Some(first) => Outcome::Erratum(format!("{first} ({} elements)", errata.len()), quant),
        None => Outcome::Passed(quant),
    }
}

/// Op groups whose quantized simulation is known to miss the tolerance, and why. The test fails if one
/// of them starts passing (update the list) or another group starts failing.
const KNOWN_QUANT_GAPS: &[(&str, &str)] = &[(
    "GRU",
    "each step multiplies the update gate by the state difference, two tables of squares per product, and the \
     rounding compounds over the sequence: 1.3% of the output's scale after two steps of `test_gru_seq_length`",
)];

/// One line of the table: the node tests of one set of op types.
#[derive(Default)]
struct Row {
    tests: usize,
    passed: usize,
    rejected: Vec<String>,
    failed: Vec<String>,
    quantized: usize,
    not_fhe: Vec<String>,
    quantized_failed: Vec<String>,
}

#[test]
fn onnx_node_tests_of_claimed_ops_pass_or_are_rejected_clearly() {
    let node = root().join("conformance/node");
    let mut tests: Vec<_> = std::fs::read_dir(&node)
        .expect("conformance tests extracted")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    tests.sort();
    let mut table: BTreeMap<String, Row> = BTreeMap::new();
    let mut errata = Vec::new();
    for dir in &tests {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let row = table.entry(op_types(dir)).or_default();
        row.tests += 1;
        let quant = match run(dir) {
            Outcome::Passed(q) => q,
            Outcome::Erratum(why, q) => {
                errata.push(format!("{name}: {why}"));
                q
            }
            Outcome::Rejected(why) => {
                row.rejected.push(format!("{name}: {why}"));
                continue;
            }
            Outcome::Failed(why) => {
                row.failed.push(format!("{name}: {why}"));
                continue;
            }
        };
        row.passed += 1;
        match quant {
            Quant::Passed => row.quantized += 1,
            Quant::NotApplicable(why) => row.not_fhe.push(format!("{name}: {why}")),
            Quant::Failed(why) => row.quantized_failed.push(format!("{name}: {why}")),
        }
    }
    let mut text = String::from(
        "| ops | tests | passed | rejected | failed | quantized passed | not under FHE | quantized failed |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (op, r) in &table {
        text.push_str(&format!(
            "| {op} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.tests,
            r.passed,
            r.rejected.len(),
            r.failed.len(),
            r.quantized,
            r.not_fhe.len(),
            r.quantized_failed.len()
        ));
    }
    let sum = |f: fn(&Row) -> usize| table.values().map(f).sum::<usize>();
    let (n, passed, quantized, not_fhe) =
        (sum(|r| r.tests), sum(|r| r.passed), sum(|r| r.quantized), sum(|r| r.not_fhe.len()));
    let claimed = table.keys().filter(|k| !k.contains('+')).count();
    text.push_str(&format!(
        "\n{passed} of {n} node tests pass over {claimed} single-op groups; of those, {quantized} also pass in quantized simulation (within {}% of the output's scale) and {not_fhe} do not compile under FHE\n\nrejected:\n",
        QUANT_TOLERANCE * 100.0
    ));
    for r in table.values() {
        for why in &r.rejected {
            text.push_str(&format!("- {why}\n"));
        }
    }
    text.push_str("\nnot under FHE (float reference only):\n");
    for r in table.values() {
        for why in &r.not_fhe {
            text.push_str(&format!("- {why}\n"));
        }
    }
    text.push_str("\npassed, where the test data is wrong:\n");
    for e in &errata {
        text.push_str(&format!("- {e}\n"));
    }
    text.push_str("\nquantized simulation, known gaps:\n");
    for (op, why) in KNOWN_QUANT_GAPS {
        let r = table.get(*op).expect("a known gap names an op group of the table");
        text.push_str(&format!(
            "- {op}: {} of {} tests off by more than the tolerance: {why}\n",
            r.quantized_failed.len(),
            r.passed
        ));
        for f in &r.quantized_failed {
            text.push_str(&format!("  - {f}\n"));
        }
        assert!(
            !r.quantized_failed.is_empty(),
            "{op} now passes in quantized simulation: remove it from KNOWN_QUANT_GAPS"
        );
    }
    let failures: Vec<&String> = table
        .iter()
        .flat_map(|(op, r)| {
            r.failed
                .iter()
                .chain(r.quantized_failed.iter().filter(move |_| !KNOWN_QUANT_GAPS.iter().any(|(k, _)| k == op)))
        })
        .collect();
    eprintln!("{text}");
    assert!(
        failures.is_empty(),
        "{} node tests accepted and then wrong:\n{}",
        failures.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
    insta::assert_snapshot!("conformance_table", text);
}

/// The torch `nn` module exports of the `onnx` wheel (`pytorch-converted`, `pytorch-operator`) whose
/// ops fhec claims, through the same harness as the node tests: the float reference equals the
/// expected output, and the FHE build (calibrated on the test's input) simulates within
/// `QUANT_TOLERANCE`, or is refused with its reason (several inputs, a model too large for this
/// machine...). None may be accepted and then wrong. Each test's wall time goes to stderr; the
/// slowest is in docs/onnx-ops.md (not asserted: timings belong to benchmarks).
#[test]
fn torch_module_exports_pass_or_are_refused_with_a_reason() {
    let base = root().join("conformance/pytorch");
    let mut tests: Vec<_> = ["pytorch-converted", "pytorch-operator"]
        .iter()
        .flat_map(|f| std::fs::read_dir(base.join(f)).expect("torch exports extracted").filter_map(|e| e.ok()))
        .map(|e| e.path())
        .collect();
    tests.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    let (mut text, mut failures, mut counts) = (String::new(), Vec::new(), [0usize; 4]);
    let mut slowest = (std::time::Duration::ZERO, String::new());
    for dir in &tests {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let start = std::time::Instant::now();
        let outcome = run(dir);
        let took = start.elapsed();
        eprintln!("{name}: {:.1} s", took.as_secs_f64());
        if took > slowest.0 {
            slowest = (took, name.clone());
        }
        let (float, fhe) = match outcome {
            Outcome::Passed(q) | Outcome::Erratum(_, q) => ("passes".to_string(), q),
            Outcome::Rejected(why) => (format!("refused: {why}"), Quant::NotApplicable("-".into())),
            Outcome::Failed(why) => {
                failures.push(format!("{name}: {why}"));
                (format!("FAILED: {why}"), Quant::NotApplicable("-".into()))
            }
        };
        let fhe = match fhe {
            Quant::Passed => {
                counts[1] += 1;
                "simulates within tolerance".to_string()
            }
            Quant::NotApplicable(why) if why == "-" => "-".to_string(),
            Quant::NotApplicable(why) => {
                counts[2] += 1;
                // The size estimate's numbers depend on the machine (its cores): the bound is kept.
                match (why.find(": about"), why.rfind("; beyond")) {
                    (Some(i), Some(j)) => format!("refused: {}{}", &why[..i], &why[j..]),
                    _ => format!("refused: {why}"),
                }
            }
            Quant::Failed(why) => {
                failures.push(format!("{name} (FHE): {why}"));
                format!("FAILED: {why}")
            }
        };
        counts[0] += usize::from(float == "passes");
        counts[3] += 1;
        text.push_str(&format!("- {name} ({}): float {float}; FHE {fhe}\n", op_types(dir)));
    }
    eprintln!("slowest: {} in {:.1} s", slowest.1, slowest.0.as_secs_f64());
    let text = format!(
        "{} of {} torch module exports pass in float; {} of those also simulate within {}% under FHE, {} are refused under FHE with a reason\n\n{text}",
        counts[0],
        counts[3],
        counts[1],
        QUANT_TOLERANCE * 100.0,
        counts[2]
    );
    eprintln!("{text}");
    assert!(failures.is_empty(), "accepted and then wrong:\n{}", failures.join("\n"));
    insta::assert_snapshot!("torch_module_exports", text);
}

/// The light model zoo (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet,
/// VGG-19, ZFNet-512; weights are constants) in the float reference: the expected output ONNX ships
/// (on its input `arange(n) / n`) with its tolerances, and, since that output is a softmax of equal
/// logits, the logits against onnxruntime's (`gen/conformance.py`). Then the FHE build of each is
/// refused before any neuron is made, in one line that gives its estimated bootstraps, key and
/// memory.
#[test]
fn light_model_zoo_matches_in_float_and_fhe_builds_refuse_with_a_size_estimate() {
    let dir = root().join("conformance/light");
    let models = [
        ("bvlc_alexnet", 1e-3),
        ("densenet121", 2e-3),
        ("inception_v1", 1e-3),
        ("inception_v2", 1e-3),
        ("resnet50", 1e-3),
        ("shufflenet", 1e-3),
        ("squeezenet", 1e-3),
        ("vgg19", 1e-3),
        ("zfnet512", 1e-3),
    ];
    let close = |got: &Tensor, want: &Tensor, rtol: f64, what: &str| {
        assert_eq!(got.numel(), want.numel(), "{what}: {:?} against {:?}", got.shape(), want.shape());
        for (i, (g, w)) in values(got).into_iter().zip(values(want)).enumerate() {
            assert!((g - w).abs() <= 1e-7 + rtol * w.abs(), "{what} element {i}: {g}, expected {w}");
        }
    };
    for (name, rtol) in models {
        let start = std::time::Instant::now();
        let m = fhec::load_model(&dir.join(format!("light_{name}.onnx"))).expect(name);
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let n: usize = shape.iter().product();
        let x = Tensor::from_f32(shape, (0..n).map(|i| (i as f64 / n as f64) as f32).collect()).unwrap();
        let got = fhec_interp::run(&m, std::slice::from_ref(&x)).expect(name);
        close(&got[0], &read(&dir.join(format!("light_{name}_output_0.pb"))).unwrap(), rtol, name);
        let cut = fhec::load_model(&dir.join(format!("light_{name}_logits.onnx"))).expect(name);
        let logits = fhec_interp::run(&cut, std::slice::from_ref(&x)).expect(name);
        let want = fhec::npy::read_samples(&dir.join(format!("light_{name}_logits.npy"))).unwrap();
        let want = Tensor::from_f32(want.shape().to_vec(), want.iter().copied().collect()).unwrap();
        close(&logits[0], &want, rtol, &format!("{name} logits"));
        let calibration = fhec_lower::Calibration::from_samples(vec![x]).unwrap();
        let refused = fhec_lower::Prepared::new(&m, &calibration, &Default::default()).err().expect(name).to_string();
        assert!(
            refused.contains("too large to run encrypted on this machine")
                && refused.contains("bootstraps per sample")
                && refused.contains("MB to compile")
                && refused.contains("evaluation key")
                && !refused.contains('\n'),
            "{name}: {refused}"
        );
        eprintln!("{name}: {:.1} s: {refused}", start.elapsed().as_secs_f64());
    }
}
