//! Tests as data for the passes of the middle: `filetests/<pass>/<case>.<ext>`, one folder per
//! pass, one case per file. A case starts with a `; pass: <name>` header naming the pass (the
//! folder's name), then its input, a `; expect:` line and what the pass must give. Other `;` lines
//! before `; expect:` are comments, except `; set <key>=<value>`, an option of the pass, and
//! `; tolerance: X` (`scalarize`).
//!
//! - `.neurons`: a neuron pass (`fhec_lower::neurons::passes`) on a neuron graph in its text form;
//!   expected: `; changed: N` (what the pass returns) and the graph after it, which must print and
//!   parse back to the same graph.
//! - `.ir`: an IR pass on a module in its text form (the `;` lines are blanked before parsing).
//!   `cleanup` runs through `fhec_passes::run_passes` with `verify_each`; expected: `; log: ...`
//!   (the pass's line in `PassCtx::log`) and the module after it. `optimize` is the e-graph
//!   optimizer with the default cost model, options `level`, `iterations` (the saturation limit) and
//!   `without` (rules left out, comma-separated); expected: the table count and the unsupported ops
//!   before and after, the rules that applied, the saturation, whether the input was kept, and the
//!   module after it. An IR pass must also keep every output bit for bit on `SAMPLES`
//!   deterministic inputs (the float interpreter before and after; blessing cannot accept a case
//!   that does not), and its result must verify and print back the same after parsing.
//! - `scalarize` (`.ir` too): the lowering of a module to the neuron graph the backends read
//!   (`Prepared::new`, option `opt-level`, 1 unless set), calibrated on `LOWERING_SAMPLES` inputs
//!   generated from the module's one input shape: uniform in [-2, 2) from seed 12345, by the linear
//!   congruential generator of `sample_inputs` (the same as the IR passes' samples, which are in
//!   [-4, 4) from seed 99). Expected: the ops of the client's pre- and post-processing, what each
//!   neuron pass changed, the graph's tables and the bootstraps of its TFHE circuit (default
//!   `tfhe::Options`), a line saying so where the naive lowering (opt-level 0) fails, and the graph
//!   as `stage_text(.., Stage::Neurons)` (`fhec inspect --stage neurons`) prints it. Checked on the
//!   way, none of which blessing can accept: the graph parses back from that text; the client/server
//!   split (pre-processing, the server module before and after the optimizer, post-processing)
//!   computes the model's outputs bit for bit on the samples and on inputs from a box four times
//!   wider; the noise-free simulation of the circuit stays within the case's `; tolerance: X` of
//!   the float model (`fhec_interp::run`) on the samples: the largest error over every output
//!   element is at most X times the largest output magnitude; and `Neurons::eval` finds the same
//!   function in the graph and in the naive one, and in the naive one after each neuron pass in
//!   turn, each of which prints and parses back: up to f64 rounding, or f32 rounding after
//!   `compose-table-chains` or an optimizer that changed the module.
//!
//! This one runner checks every case against its expectation and reports the file and a unified
//! diff on mismatch; `FHEC_BLESS=1` rewrites the expectations instead. Every pass has a folder and
//! every optimizer rule applies in some case.
//!
//! Also: the scalarized neurons of corpus models print and parse back to the same graph.

use anyhow::{Context, Result, bail, ensure};
use fhec_ir::{DType, Module, Op, Tensor, TensorData};
use fhec_lower::neurons::{Neurons, passes};
use fhec_lower::tfhe::{Compiled, Options};
use fhec_lower::{Calibration, Prepared, Stage, neuron_passes, stage_text};
use fhec_passes::optimize::{Config, CostModel, optimize, rule_names, table_count};
use fhec_passes::{Cleanup, PassCtx, run_passes};
use fhec_runtime::Noise;
use fhec_testsuite::root;
use std::path::{Path, PathBuf};

const EXPECT: &str = "; expect:";
const OPTION: &str = "; set ";
const APPLIED: &str = "; applied: ";

/// The IR passes with filetests (`.ir` cases); the neuron passes' come from their registry.
const IR_PASSES: [&str; 2] = ["cleanup", "optimize"];

/// The lowering from IR to the neuron graph (`.ir` cases too).
const SCALARIZE: &str = "scalarize";
const TOLERANCE: &str = "; tolerance: ";

/// Samples a `scalarize` case is calibrated and checked on.
const LOWERING_SAMPLES: usize = 64;

/// How far apart (of the output scale) `Neurons::eval` may find two graphs that compute the same
/// function: exactly but for f64 rounding, or up to f32 rounding (`compose-table-chains` folds the
/// map between two tables into the composed function as f32 constants, and so the optimized graph).
const EXACT: f64 = 1e-9;
const F32_ROUNDING: f64 = 1e-5;

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
    } else if IR_PASSES.contains(&pass) || pass == SCALARIZE {
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
        Some("ir") if name == SCALARIZE => scalarize(input, &options)?,
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
    let text = n.to_string();
    round_trip(&n, &text).context("after the pass")?;
    Ok(format!("; changed: {changed}\n{text}"))
}

/// An IR pass on a module: what it reports, then the module after it, which must compute the same
/// outputs, verify and round-trip through its text.
fn ir_pass(name: &str, input: &str, options: &[(&str, &str)]) -> Result<String> {
    let m = module(input)?;
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

/// The module of a case's input, which must verify.
fn module(input: &str) -> Result<Module> {
    // Blanked rather than dropped, so that parse errors give the line in the file.
    let ir: Vec<&str> = input.lines().map(|l| if l.starts_with(';') { "" } else { l }).collect();
    let m: Module = ir.join("\n").parse().context("the input")?;
    m.verify().context("the input")?;
    Ok(m)
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

/// The lowering of a module to its neuron graph (`Prepared::new`, at `opt-level`), calibrated on
/// `LOWERING_SAMPLES` inputs uniform in [-2, 2) from seed 12345: what the client computes, what
/// the neuron passes changed, the tables and the compiled circuit's bootstraps, then the graph as
/// `stage_text(.., Stage::Neurons)` prints it. Checked on the way (see the module docs).
fn scalarize(input: &str, options: &[(&str, &str)]) -> Result<String> {
    let m = module(input)?;
    let tolerance: f32 = input
        .lines()
        .find_map(|l| l.strip_prefix(TOLERANCE))
        .with_context(|| format!("no `{TOLERANCE}X` line"))?
        .parse()
        .context("the tolerance")?;
    let mut opt = Config::default();
    for &(key, value) in options {
        match key {
            "opt-level" => opt.level = value.parse().context("opt-level")?,
            _ => bail!("unknown option `{key}` (opt-level)"),
        }
    }
    ensure!(m.inputs().len() == 1, "a lowering takes one input");
    let xs: Vec<Tensor> = sample_inputs(&m, LOWERING_SAMPLES, 12345, (-2.0, 2.0))?.into_iter().flatten().collect();
    let cal = Calibration::from_samples(xs.clone())?;
    let p = Prepared::new(&m, &cal, &opt)?;
    let text = stage_text(&m, &cal, &opt, Stage::Neurons)?;
    round_trip(p.neurons(), &text).context("the graph")?;
    let c = p.tfhe(&Options::default()).context("the TFHE lowering")?;
    the_split_computes_the_model(&m, &p, &c, &xs)?;
    within_tolerance(&m, &c, &xs, tolerance)?;
    // The naive graph (no optimizer, no neuron passes) computes what the graph computes, and so
    // does it after each neuron pass in turn; where the naive lowering fails, the expectation says so.
    let naive = match Prepared::new(&m, &cal, &Config { level: 0, ..Config::default() }) {
        Ok(naive) => {
            // Only f64 rounding apart where the optimizer kept its input and nothing composed.
            let o = &p.optimization;
            let tolerance = if o.report.kept_input && o.composed == 0 { EXACT } else { F32_ROUNDING };
            naive_graphs(&m, &naive, p.neurons(), tolerance)?;
            String::new()
        }
        Err(e) => format!("; opt-level 0 fails: {e}\n"),
    };
    let ran = neuron_passes(&opt, true)
        .into_iter()
        .map(|name| match name {
            "elide-affine-tables" => Ok(format!("{name} {}", p.optimization.elided)),
            "compose-table-chains" => Ok(format!("{name} {}", p.optimization.composed)),
            _ => bail!("what neuron pass `{name}` changed is not reported"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(format!(
        "; client pre-processing: {}\n; client post-processing: {}\n; neuron passes: {}\n; tables: {}\n; bootstraps: {}\n{naive}{text}",
        ops(c.preprocess.as_ref()),
        ops(Some(&c.postprocess)),
        if ran.is_empty() { "none".to_string() } else { ran.join(", ") },
        p.optimization.pbs_after(),
        c.pbs_count(),
    ))
}

/// `graph` and the naive graph compute the same function (within `tolerance`), and so does the
/// naive graph after each neuron pass in turn, which also prints and parses back.
fn naive_graphs(m: &Module, naive: &Prepared, graph: &Neurons, tolerance: f64) -> Result<()> {
    let points = eval_points(m, naive)?;
    let want = eval(naive.neurons(), &points);
    same_values(&want, &eval(graph, &points), tolerance).context("the graph against the naive one")?;
    let mut n = naive.neurons().clone();
    round_trip(&n, &n.to_string()).context("the naive graph")?;
    for pass in passes::PASSES {
        passes::run(*pass, &mut n)?;
        let after = || format!("the naive graph after {}", pass.name());
        round_trip(&n, &n.to_string()).with_context(after)?;
        let tolerance = if pass.name() == "compose-table-chains" { F32_ROUNDING } else { EXACT };
        same_values(&want, &eval(&n, &points), tolerance).with_context(after)?;
    }
    Ok(())
}

/// Where `scalarize` cases compare neuron graphs: the calibration samples and as many more from
/// the same generator, through the client's pre-processing.
fn eval_points(m: &Module, p: &Prepared) -> Result<Vec<Vec<f64>>> {
    let xs: Vec<Tensor> = sample_inputs(m, 2 * LOWERING_SAMPLES, 12345, (-2.0, 2.0))?.into_iter().flatten().collect();
    Ok(p.preprocessed(&xs)?.iter().map(|x| x.to_f32_vec().into_iter().map(f64::from).collect()).collect())
}

fn eval(n: &Neurons, points: &[Vec<f64>]) -> Vec<Vec<f64>> {
    points.iter().map(|x| n.eval(x)).collect()
}

/// `got` is `want` within `tolerance` of its largest magnitude (at least 1).
fn same_values(want: &[Vec<f64>], got: &[Vec<f64>], tolerance: f64) -> Result<()> {
    let scale = want.iter().flatten().fold(1f64, |s, w| s.max(w.abs()));
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        ensure!(w.len() == g.len(), "{} output values instead of {}", g.len(), w.len());
        for (a, b) in w.iter().zip(g) {
            ensure!((a - b).abs() <= tolerance * scale, "computes {g:?} instead of {w:?} at point {i}");
        }
    }
    Ok(())
}

/// `text` parses back to `n`, which verifies, and prints the same once parsed.
fn round_trip(n: &Neurons, text: &str) -> Result<()> {
    n.verify()?;
    let back: Neurons = text.parse().context("the text does not parse back")?;
    ensure!(back == *n, "the text parses back to another graph:\n{back}");
    ensure!(back.to_string() == text, "the text prints differently once parsed back:\n{back}");
    Ok(())
}

/// The ops of a client module in order (`none` without any), as `stage_text(.., Stage::Optimized)`
/// names them.
fn ops(m: Option<&Module>) -> String {
    let Some(m) = m else { return "none".into() };
    let names: Vec<&str> = m
        .topo_order()
        .expect("a client module is acyclic")
        .into_iter()
        .map(|v| &m.node(v).op)
        .filter(|op| !matches!(op, Op::Input { .. } | Op::Const(_)))
        .map(Op::mnemonic)
        .collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// The client's pre-processing, the server module (before and after the optimizer) and the
/// client's post-processing compute the model's outputs bit for bit, on the samples and on as many
/// inputs from a box four times wider (where an input quantizer's clip saturates).
fn the_split_computes_the_model(m: &Module, p: &Prepared, c: &Compiled, xs: &[Tensor]) -> Result<()> {
    let wide = sample_inputs(m, LOWERING_SAMPLES, 12345, (-8.0, 8.0))?.into_iter().flatten();
    let xs: Vec<Tensor> = xs.iter().cloned().chain(wide).collect();
    let pre = p.preprocessed(&xs)?;
    for (server, which) in [(&p.optimization.before, "before"), (&p.optimization.after, "after")] {
        for (i, (x, pre)) in xs.iter().zip(&pre).enumerate() {
            let want = fhec_interp::run(m, std::slice::from_ref(x))?;
            let frontier = fhec_interp::run(server, std::slice::from_ref(pre))?;
            let got = fhec_interp::run(&c.postprocess, &frontier)?;
            ensure!(want.len() == got.len(), "{} outputs from the split, {} from the model", got.len(), want.len());
            for ((name, _), (w, g)) in m.outputs().iter().zip(want.iter().zip(&got)) {
                ensure!(
                    bit_identical(w, g),
                    "the split (server {which} the optimizer) changes output `{name}` on sample {i}:\n  model {:?}\n  split {:?}",
                    w.to_f32_vec(),
                    g.to_f32_vec()
                );
            }
        }
    }
    Ok(())
}

/// The noise-free simulation of `c` stays within `tolerance` of the float model on the samples:
/// the largest error over every output element, relative to the largest output magnitude.
fn within_tolerance(m: &Module, c: &Compiled, xs: &[Tensor], tolerance: f32) -> Result<()> {
    let (mut worst, mut scale, mut at) = (0f32, 1e-6f32, String::new());
    for x in xs {
        let want = fhec_interp::run(m, std::slice::from_ref(x))?;
        let got = c.simulate(x, Noise::None)?;
        for (g, w) in got.iter().zip(&want) {
            for (g, w) in g.to_f32_vec().iter().zip(w.to_f32_vec()) {
                if (g - w).abs() > worst {
                    worst = (g - w).abs();
                    at = format!("input {:?}: {g} instead of {w}", x.to_f32_vec());
                }
                scale = scale.max(w.abs());
            }
        }
    }
    ensure!(
        worst <= tolerance * scale,
        "the noise-free simulation errs by {:e} of the output scale (tolerance {tolerance}) at {at}",
        worst / scale
    );
    Ok(())
}

/// `n` sets of inputs for `m`, uniform in [lo, hi) from `seed`: a linear congruential generator
/// (Knuth's MMIX constants), whose state's bits 40..64 give each value.
fn sample_inputs(m: &Module, n: usize, seed: u64, (lo, hi): (f32, f32)) -> Result<Vec<Vec<Tensor>>> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo) + lo
    };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
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
    for (i, xs) in sample_inputs(before, SAMPLES, 99, (-4.0, 4.0))?.iter().enumerate() {
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
    let names = passes::PASSES.iter().map(|p| p.name()).chain(IR_PASSES).chain([SCALARIZE]);
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
