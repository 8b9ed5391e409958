//! Tests as data for the passes of the middle: `filetests/<pass>/<case>.<ext>`, one folder per
//! pass, one case per file. A case starts with a `; pass: <name>` header naming the pass (the
//! folder's name), then its input, a `; expect:` line and what the pass must give. Other `;` lines
//! before `; expect:` are comments, except `; set <key>=<value>`, an option of the pass.
//!
//! - `.neurons`: a neuron pass (`fhec_lower::neurons::passes`) on a neuron graph in its text form;
//!   expected: `; changed: N` (what the pass returns) and the graph after it.
//! - `.ir`: an IR pass on a module in its text form (the `;` lines are blanked before parsing).
//!   `cleanup` runs through `fhec_passes::run_passes` with `verify_each`; expected: `; log: ...`
//!   (the pass's line in `PassCtx::log`) and the module after it. `optimize` is the e-graph
//!   optimizer with the default cost model, options `level`, `iterations` (the saturation limit) and
//!   `without` (rules left out, comma-separated); expected: the table count and the unsupported ops
//!   before and after, the rules that applied, the saturation, whether the input was kept, and the
//!   module after it. An IR pass must also keep every output bit for bit on `SAMPLES`
//!   deterministic inputs (the float interpreter before and after; blessing cannot accept a case
//!   that does not), and its result must verify and print back the same after parsing.
//!
//! This one runner checks every case against its expectation and reports the file and a unified
//! diff on mismatch; `FHEC_BLESS=1` rewrites the expectations instead. Every pass has a folder and
//! every optimizer rule applies in some case.
//!
//! Also: the scalarized neurons of corpus models print and parse back to the same graph.

use anyhow::{Context, Result, bail, ensure};
use fhec_ir::{DType, Module, Tensor, TensorData};
use fhec_lower::neurons::{Neurons, passes};
use fhec_lower::{Calibration, Prepared, Stage, stage_text};
use fhec_passes::optimize::{Config, CostModel, optimize, rule_names, table_count};
use fhec_passes::{Cleanup, PassCtx, run_passes};
use fhec_testsuite::root;
use std::path::{Path, PathBuf};

const EXPECT: &str = "; expect:";
const OPTION: &str = "; set ";
const APPLIED: &str = "; applied: ";

/// The IR passes with filetests (`.ir` cases); the neuron passes' come from their registry.
const IR_PASSES: [&str; 2] = ["cleanup", "optimize"];

/// Inputs on which an IR pass must keep every output bit for bit.
const SAMPLES: usize = 200;

fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// The case extension of a pass's folder: `neurons` or `ir`.
fn extension(pass: &str) -> Option<&'static str> {
    if passes::lookup(pass).is_some() {
        Some("neurons")
    } else if IR_PASSES.contains(&pass) {
        Some("ir")
    } else {
        None
    }
}

/// Runs one filetest; `Ok(false)` if the expectation was rewritten.
fn run(path: &Path, bless: bool) -> Result<bool> {
    let text = std::fs::read_to_string(path)?;
    let folder = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default();
    let Some(name) = text.lines().next().and_then(|l| l.strip_prefix("; pass: ")) else {
        bail!("the first line must be `; pass: <name>`");
    };
    if name != folder {
        bail!("the header names pass `{name}`, the folder `{folder}`");
    }
    let at = text.find(&format!("\n{EXPECT}\n")).context("no `; expect:` line")? + EXPECT.len() + 2;
    let (input, expected) = text.split_at(at);
    let options = input
        .lines()
        .filter_map(|l| l.strip_prefix(OPTION))
        .map(|o| o.split_once('=').with_context(|| format!("`{OPTION}{o}`: not `key=value`")))
        .collect::<Result<Vec<_>>>()?;
    let actual = match path.extension().and_then(|e| e.to_str()) {
        Some("neurons") => neuron_pass(name, input, &options)?,
        Some("ir") => ir_pass(name, input, &options)?,
        _ => bail!("not a `.neurons` or `.ir` file"),
    };
    if actual == expected {
        return Ok(true);
    }
    if bless {
        std::fs::write(path, format!("{input}{actual}"))?;
        return Ok(false);
    }
    let diff = similar::TextDiff::from_lines(expected, &actual);
    bail!(
        "the output differs from the expectation (-expected +actual; FHEC_BLESS=1 rewrites it):\n{}",
        diff.unified_diff()
    );
}

/// A neuron pass on a neuron graph: `; changed: N` and the graph after it.
fn neuron_pass(name: &str, input: &str, options: &[(&str, &str)]) -> Result<String> {
    ensure!(options.is_empty(), "neuron passes take no options");
    let pass = passes::by_name(name)?;
    let mut n: Neurons = input.parse().context("the input")?;
    n.verify().context("the input")?;
    let changed = passes::run(pass, &mut n)?;
    n.verify().context("after the pass")?;
    Ok(format!("; changed: {changed}\n{n}"))
}

/// An IR pass on a module: what it reports, then the module after it, which must compute the same
/// outputs, verify and round-trip through its text.
fn ir_pass(name: &str, input: &str, options: &[(&str, &str)]) -> Result<String> {
    // Blanked rather than dropped, so that parse errors give the line in the file.
    let ir: Vec<&str> = input.lines().map(|l| if l.starts_with(';') { "" } else { l }).collect();
    let m: Module = ir.join("\n").parse().context("the input")?;
    m.verify().context("the input")?;
    let (out, report) = match name {
        "cleanup" => cleanup(&m, options)?,
        "optimize" => optimizer(&m, options)?,
        _ => bail!("no IR pass named `{name}`"),
    };
    out.verify().context("after the pass")?;
    same_outputs(&m, &out)?;
    let text = out.to_string();
    let back: Module = text.parse().context("the result does not parse back")?;
    ensure!(back.to_string() == text, "the result prints differently once parsed back:\n{back}");
    Ok(format!("{report}{text}"))
}

fn cleanup(m: &Module, options: &[(&str, &str)]) -> Result<(Module, String)> {
    ensure!(options.is_empty(), "cleanup takes no options");
    let mut out = m.clone();
    let mut ctx = PassCtx { verify_each: true, ..PassCtx::default() };
    run_passes(&mut out, &[&Cleanup], &mut ctx)?;
    let log: String = ctx.log.iter().map(|l| format!("; log: {l}\n")).collect();
    Ok((out, log))
}

fn optimizer(m: &Module, options: &[(&str, &str)]) -> Result<(Module, String)> {
    let mut cfg = Config::default();
    for &(key, value) in options {
        match key {
            "level" => cfg.level = value.parse().context("level")?,
            "iterations" => cfg.limits.iterations = value.parse().context("iterations")?,
            "without" => {
                let left_out: Vec<&str> = value.split(',').collect();
                let rules = rule_names();
                if let Some(r) = left_out.iter().find(|r| !rules.contains(r)) {
                    bail!("no optimizer rule named `{r}`");
                }
                cfg.only = Some(rules.into_iter().filter(|r| !left_out.contains(r)).collect());
            }
            _ => bail!("unknown option `{key}` (level, iterations, without)"),
        }
    }
    let (out, r) = optimize(m, &cfg, &CostModel::default())?;
    ensure!(table_count(m)? as f64 == r.before.pbs, "the report's tables before are not the input's");
    ensure!(table_count(&out)? as f64 == r.after.pbs, "the report's tables after are not the result's");
    let applied: Vec<&str> = r.applied.iter().filter(|(_, n)| *n > 0).map(|(rule, _)| *rule).collect();
    let stop = if r.stop_reason.is_empty() { "not run" } else { &r.stop_reason };
    let report = format!(
        "; tables: {} -> {}\n; unsupported: {} -> {}\n{APPLIED}{}\n; saturation: {stop}, iterations {}\n; kept input: {}\n",
        r.before.pbs,
        r.after.pbs,
        r.before.unsupported,
        r.after.unsupported,
        if applied.is_empty() { "none".to_string() } else { applied.join(", ") },
        r.iterations,
        if r.kept_input { "yes" } else { "no" },
    );
    Ok((out, report))
}

/// `SAMPLES` sets of inputs for `m`, uniform in [-4, 4) from a fixed seed.
fn sample_inputs(m: &Module) -> Result<Vec<Vec<Tensor>>> {
    let mut state = 99u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
    };
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let mut xs = Vec::new();
        for v in m.inputs() {
            let ty = &m.node(v).ty;
            ensure!(ty.dtype == DType::F32, "only f32 inputs are sampled");
            let data = (0..fhec_ir::numel(&ty.shape)).map(|_| next()).collect();
            xs.push(Tensor::from_f32(ty.shape.clone(), data).context("sample shape")?);
        }
        samples.push(xs);
    }
    Ok(samples)
}

/// `after` computes every output of `before`, bit for bit (any NaN equal to any NaN), on the samples.
fn same_outputs(before: &Module, after: &Module) -> Result<()> {
    let names = |m: &Module| m.outputs().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    ensure!(names(before) == names(after), "the outputs are now {:?}", names(after));
    ensure!(before.inputs().len() == after.inputs().len(), "the inputs changed");
    for (i, xs) in sample_inputs(before)?.iter().enumerate() {
        let want = fhec_interp::run(before, xs).context("the input on a sample")?;
        let got = fhec_interp::run(after, xs).context("the result on a sample")?;
        for ((name, w), g) in names(before).iter().zip(&want).zip(&got) {
            ensure!(
                bit_identical(w, g),
                "the pass changed output `{name}` on sample {i}:\n  before {:?}\n  after  {:?}",
                w.to_f32_vec(),
                g.to_f32_vec()
            );
        }
    }
    Ok(())
}

fn bit_identical(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
            }
            (x, y) => x == y,
        }
}

#[test]
fn passes_match_their_filetests() {
    let bless = std::env::var("FHEC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in sorted(&root().join("filetests")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let ext = extension(&name).unwrap_or_else(|| panic!("filetests/{name}: no pass of that name"));
        let cases = sorted(&dir);
        for case in &cases {
            assert!(case.extension().is_some_and(|e| e == ext), "{}: not a `.{ext}` file", case.display());
        }
        assert!(cases.len() >= 3, "filetests/{name}: {} cases (at least 3)", cases.len());
        for case in cases {
            match run(&case, bless) {
                Ok(true) => {}
                Ok(false) => eprintln!("blessed {}", case.display()),
                Err(e) => failures.push(format!("{}: {e:#}", case.display())),
            }
        }
    }
    let names = passes::PASSES.iter().map(|p| p.name()).chain(IR_PASSES);
    for name in names {
        assert!(root().join("filetests").join(name).is_dir(), "no filetests for {name}");
    }
    assert!(failures.is_empty(), "{} filetest(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// Every optimizer rule is shown applying by some `filetests/optimize` case (whose expectation the
/// test above checks).
#[test]
fn every_optimizer_rule_applies_in_a_filetest() {
    let mut applied = Vec::new();
    for case in sorted(&root().join("filetests").join("optimize")) {
        let text = std::fs::read_to_string(&case).unwrap();
        let (_, expected) = text.split_once(&format!("\n{EXPECT}\n")).unwrap();
        let line = expected.lines().find_map(|l| l.strip_prefix(APPLIED)).unwrap_or_default();
        applied.extend(line.split(", ").map(str::to_string));
    }
    for rule in rule_names() {
        assert!(applied.iter().any(|a| a == rule), "no filetests/optimize case applies `{rule}`");
    }
}

fn samples(dir: &Path, n: usize) -> Result<(fhec_ir::Module, Vec<Tensor>)> {
    let m = fhec::load_model(&dir.join("model.onnx"))?;
    let x = fhec::npy::read_samples(&dir.join("inputs.npy"))?;
    let shape = m.node(m.inputs()[0]).ty.shape.clone();
    let xs: Option<Vec<Tensor>> =
        x.outer_iter().take(n).map(|s| Tensor::from_f32(shape.clone(), s.iter().copied().collect())).collect();
    Ok((m, xs.context("sample shape")?))
}

/// The neuron graphs of corpus models (an MLP, a CNN) round-trip through their text, which is
/// what `stage_text(.., Stage::Neurons)` prints.
#[test]
fn corpus_neurons_round_trip_through_their_text() {
    for case in ["mlp_wine", "cnn_digits_nopad"] {
        let (m, xs) = samples(&root().join("models").join(case), 32).unwrap();
        let cal = Calibration::from_samples(xs).unwrap();
        let opt = Config::default();
        let p = Prepared::new(&m, &cal, &opt).unwrap();
        let n = p.neurons();
        n.verify().unwrap();
        assert!(n.wires.len() > n.n_inputs && n.calibrated.is_some(), "{case}: no tables or no calibration");
        let text = n.to_string();
        let back: Neurons = text.parse().unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(back == *n, "{case}: the parsed graph differs");
        assert_eq!(back.to_string(), text, "{case}");
        assert_eq!(stage_text(&m, &cal, &opt, Stage::Neurons).unwrap(), text, "{case}");
        let optimized = stage_text(&m, &cal, &opt, Stage::Optimized).unwrap();
        assert!(optimized.starts_with("// client pre-processing: "), "{case}: {optimized}");
    }
}
