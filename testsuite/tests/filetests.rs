//! Tests as data for the neuron passes: `filetests/<pass>/*.neurons`, each a neuron graph in its
//! text form, a `; pass: <name>` header naming the pass (the folder's name), a `; expect:` line,
//! then what the pass returns (`; changed: N`) and the graph after it. This one runner parses the
//! input, verifies it, runs the pass, verifies and prints the result and compares it with the
//! expectation, reporting the file and a diff on mismatch. `FHEC_BLESS=1` rewrites expectations.
//!
//! Also: the scalarized neurons of corpus models print and parse back to the same graph.

use anyhow::{Context, Result, bail};
use fhec_ir::Tensor;
use fhec_lower::neurons::{Neurons, passes};
use fhec_lower::{Calibration, Prepared, Stage, optimize, stage_text};
use fhec_testsuite::root;
use std::path::{Path, PathBuf};

const EXPECT: &str = "; expect:";

fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
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
    let pass = passes::by_name(name)?;
    let mut n: Neurons = input.parse().context("the input")?;
    n.verify().context("the input")?;
    let changed = passes::run(pass, &mut n)?;
    n.verify().context("after the pass")?;
    let actual = format!("; changed: {changed}\n{n}");
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

#[test]
fn neuron_passes_match_their_filetests() {
    let bless = std::env::var("FHEC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in sorted(&root().join("filetests")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(passes::lookup(&name).is_some(), "filetests/{name}: no neuron pass of that name");
        let cases: Vec<PathBuf> =
            sorted(&dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "neurons")).collect();
        assert!(cases.len() >= 3, "filetests/{name}: {} cases (at least 3)", cases.len());
        for case in cases {
            match run(&case, bless) {
                Ok(true) => {}
                Ok(false) => eprintln!("blessed {}", case.display()),
                Err(e) => failures.push(format!("{}: {e:#}", case.display())),
            }
        }
    }
    for pass in passes::PASSES {
        assert!(root().join("filetests").join(pass.name()).is_dir(), "no filetests for {}", pass.name());
    }
    assert!(failures.is_empty(), "{} filetest(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
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
        let opt = optimize::Config::default();
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
