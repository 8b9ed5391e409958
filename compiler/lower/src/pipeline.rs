//! The middle of the compiler as one list of stages, from a float IR module to the neuron graph
//! that the backends integerize ([`Prepared`]):
//!
//! 1. client input split (`head`): leading ops on the input that need no weights (or, unless
//!    `--private-thresholds`, a tree ensemble's decisions) move to the client;
//! 2. client output split (`tail`): the final ops that only shape the answer move to the client;
//! 3. the server module: what the frontier values need;
//! 4. the e-graph optimizer (`fhec_passes::optimize`);
//! 5. exact equality of an encrypted value refused; the circuit's size estimated and a model too
//!    large for this machine refused ([`crate::size`]);
//! 6. `scalarize` into the neuron graph;
//! 7. the neuron passes by name ([`neuron_passes`], `neurons::passes`), verified after each in
//!    debug builds;
//! 8. the outputs' calibrated ranges.
//!
//! [`stage_text`] prints what a stage made, for `fhec inspect --stage`.

use crate::neurons::{self, Neurons, passes};
use crate::{Calibration, LowerError, Optimization, Prepared, head, optimize, tail};
use fhec_ir::{DataMode, Module, Op, ValueId};
use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The neuron passes a build runs, in order: above `--opt-level 0`, `elide-affine-tables` where
/// `elide` (TFHE; see `Prepared::for_polynomials`), then `compose-table-chains`.
pub fn neuron_passes(opt: &optimize::Config, elide: bool) -> Vec<&'static str> {
    let mut names = Vec::new();
    if opt.level > 0 && elide {
        names.push("elide-affine-tables");
    }
    if opt.level > 0 {
        names.push("compose-table-chains");
    }
    names
}

/// Runs the stages on `module` (see the module docs).
pub(crate) fn prepare(
    module: &Module,
    calibration: &Calibration,
    opt: &optimize::Config,
    elide: bool,
) -> Result<Prepared, LowerError> {
    let mut laps = Laps::start();
    // 1. Client input split.
    let (preprocess, module, calibration) = client_input_split(module, calibration, opt.client_decisions)?;
    let (module, calibration) = (module.as_ref(), calibration.as_ref());
    // 2. Client output split.
    let client = tail::client_values(module)?;
    let frontier = tail::frontier(module, &client);
    if frontier.is_empty() {
        return Err(LowerError::Model("no output depends on the encrypted input (the outputs are constants, such as its shape): nothing to compute under FHE".into()));
    }
    laps.lap("client split");
    // 3. The server module.
    let server = server_module(module, &frontier)?;
    // 4. The e-graph optimizer.
    let (optimized, report) = optimize::optimize(&server, opt, &optimize::CostModel::default())?;
    laps.lap("optimize");
    // 5. Exact equality refused; the size estimated and checked.
    refuse_exact_equality(&optimized, Side::Server)?;
    let samples = calibration_samples(calibration);
    let size = crate::size::Size::estimate(&optimized, report.after.pbs, samples.len())?;
    size.check()?;
    // 6. Scalarization.
    let input_box = calibration.input_box();
    check_input_box(module, input_box)?;
    let mut neurons = neurons::scalarize(&optimized, &outputs(&optimized), input_box, &samples)?;
    if cfg!(debug_assertions) {
        neurons.verify()?;
    }
    let scalarized = neurons.tables_per_layer();
    laps.lap("scalarize");
    // 7. The neuron passes, by name.
    let mut ran = Vec::new();
    for name in neuron_passes(opt, elide) {
        ran.push((name, passes::run(passes::by_name(name)?, &mut neurons)?));
        laps.lap(name);
    }
    // 8. Calibrated output ranges.
    neurons.calibrate(&samples);
    laps.lap("calibrate");

    // What the optimizer and the neuron passes did, for reports.
    let changed = |pass: &str| ran.iter().find(|r| r.0 == pass).map_or(0, |r| r.1);
    let layers_after = neurons.tables_per_layer();
    // The unoptimized server part may not lower at all (a product of two encrypted values that
    // only the optimizer fuses into a table): then it has no table count.
    let layers_before = if report.kept_input {
        scalarized
    } else {
        neurons::scalarize(&server, &outputs(&server), input_box, &samples)
            .map(|n| n.tables_per_layer())
            .unwrap_or_default()
    };
    let postprocess = postprocess_module(module, &client, &frontier)?;
    refuse_exact_equality(&postprocess, Side::Client)?;
    laps.lap("reports and post-processing");
    let optimization = Optimization {
        config: opt.clone(),
        report,
        composed: changed("compose-table-chains"),
        elided: changed("elide-affine-tables"),
        before: server,
        after: optimized,
        layers_before,
        layers_after,
        stage_times: laps.laps,
        size,
    };
    Ok(Prepared { preprocess, neurons, postprocess, optimization })
}

/// Wall time per stage, for reports: each lap is the time since the previous one.
struct Laps {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn start() -> Laps {
        Laps { last: Instant::now(), laps: Vec::new() }
    }

    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }
}

/// What a stage of the pipeline made, as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The module as given.
    Ir,
    /// The optimized server module, after a comment line naming the client's pre- and
    /// post-processing.
    Optimized,
    /// The neuron graph the backends read: after the neuron passes (TFHE's) and calibration.
    Neurons,
}

/// The text of `stage` for `module` (IR text with constants elided, or the neuron graph's text
/// form), running the pipeline as [`Prepared::new`] does.
pub fn stage_text(
    module: &Module,
    calibration: &Calibration,
    opt: &optimize::Config,
    stage: Stage,
) -> Result<String, LowerError> {
    if stage == Stage::Ir {
        return Ok(module.to_text(DataMode::Elided));
    }
    let p = Prepared::new(module, calibration, opt)?;
    Ok(match stage {
        Stage::Ir => unreachable!("returned above"),
        Stage::Optimized => format!(
            "// client pre-processing: {}; client post-processing: {}\n{}",
            ops(p.preprocess.as_ref()),
            ops(Some(&p.postprocess)),
            p.optimization.after.to_text(DataMode::Elided)
        ),
        Stage::Neurons => p.neurons.to_string(),
    })
}

/// The ops of a client module in order (`none` without any).
fn ops(m: Option<&Module>) -> String {
    let Some(m) = m else { return "none".into() };
    let order = match m.topo_order() {
        Ok(o) => o,
        Err(e) => return format!("(unordered: {e})"),
    };
    let names: Vec<&str> = order
        .iter()
        .map(|&v| &m.node(v).op)
        .filter(|op| !matches!(op, Op::Input { .. } | Op::Const(_)))
        .map(Op::mnemonic)
        .collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

impl Prepared {
    /// The neuron graph the backends read (see [`Stage::Neurons`]).
    pub fn neurons(&self) -> &Neurons {
        &self.neurons
    }
}

/// The client's pre-processing, if any, and the rest of the module with its calibration.
type InputSplit<'a> = (Option<Module>, Cow<'a, Module>, Cow<'a, Calibration>);

/// Splits the client's pre-processing off `module` and takes the calibration through it.
fn client_input_split<'a>(
    module: &'a Module,
    calibration: &'a Calibration,
    decisions: bool,
) -> Result<InputSplit<'a>, LowerError> {
    Ok(match head::split(module, decisions)? {
        Some(s) => {
            let c = calibration.through(&s.head)?;
            (Some(s.head), Cow::Owned(s.rest), Cow::Owned(c))
        }
        None => (None, Cow::Borrowed(module), Cow::Borrowed(calibration)),
    })
}

fn outputs(m: &Module) -> Vec<ValueId> {
    m.outputs().iter().map(|(_, v)| *v).collect()
}

/// The calibration's input box must bound every input element.
fn check_input_box(module: &Module, input_box: &[(f64, f64)]) -> Result<(), LowerError> {
    let n_inputs: usize = module.inputs().iter().map(|&v| module.node(v).ty.numel()).sum();
    if input_box.len() != n_inputs {
        return Err(LowerError::Model(format!(
            "the calibration has {} values per sample; the model input has {n_inputs}",
            input_box.len()
        )));
    }
    Ok(())
}

/// The calibration samples that set table domains and output ranges, as input elements per sample.
fn calibration_samples(calibration: &Calibration) -> Vec<Vec<f64>> {
    calibration.output_samples().iter().map(|x| x.to_f32_vec().into_iter().map(f64::from).collect()).collect()
}

/// The server part of `m` as a module of its own: what the frontier values need, with outputs
/// `frontier_<k>`.
fn server_module(m: &Module, frontier: &[ValueId]) -> Result<Module, LowerError> {
    let needed = neurons::needed(m, frontier);
    let mut t = Module::new(m.name.clone());
    let mut map = std::collections::HashMap::new();
    for v in m.topo_order()? {
        if needed.contains(&v) || matches!(m.node(v).op, Op::Input { .. }) {
            let operands: Vec<ValueId> = m.operands(v).iter().map(|o| map[o]).collect();
            map.insert(v, t.add_node(m.node(v).clone(), &operands));
        }
    }
    for (k, f) in frontier.iter().enumerate() {
        t.add_output(format!("frontier_{k}"), map[f]);
    }
    t.verify()?;
    Ok(t)
}

/// The client part of the module as a module of its own, reading the frontier values as inputs.
fn postprocess_module(m: &Module, client: &HashSet<ValueId>, frontier: &[ValueId]) -> Result<Module, LowerError> {
    let mut t = Module::new(format!("{}.postprocess", m.name));
    let mut map = std::collections::HashMap::new();
    for (k, &f) in frontier.iter().enumerate() {
        map.insert(f, t.add_input(format!("frontier_{k}"), m.node(f).ty.clone()));
    }
    for v in m.topo_order()? {
        if !client.contains(&v) || map.contains_key(&v) {
            continue;
        }
        let mut operands = Vec::new();
        for o in m.operands(v) {
            let id = match (map.get(&o), &m.node(o).op) {
                (Some(&id), _) => id,
                (None, Op::Const(c)) => t.add_const(c.clone(), None),
                (None, _) => {
                    return Err(LowerError::Client(format!(
                        "{} reads a value the server does not return",
                        m.node(v).describe()
                    )));
                }
            };
            operands.push(id);
        }
        let id = t.add_node(m.node(v).clone(), &operands);
        map.insert(v, id);
    }
    for (name, v) in m.outputs() {
        t.add_output(name.clone(), map[v]);
    }
    t.verify()?;
    Ok(t)
}

/// Which part of the split a module is, for [`refuse_exact_equality`].
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// The server part: every table reads its input approximately, so no value stays exact across ops.
    Server,
    /// The client's post-processing: its inputs are decrypted approximations, but what it computes
    /// from steps of them (a comparison, then equality of that) is exact.
    Client,
}

/// Exact equality of a value that approximates the model's (an encrypted value in a table, a decrypted
/// one on the client) holds by chance only: refused, with what to write instead. Equality of steps of
/// it (booleans, floor) is exact and allowed.
fn refuse_exact_equality(m: &Module, side: Side) -> Result<(), LowerError> {
    let mut exact = std::collections::HashSet::new();
    for v in m.topo_order()? {
        let operands = m.operands(v);
        let node = m.node(v);
        let operands_exact = side == Side::Client && operands.iter().all(|o| exact.contains(o));
        let is_exact = match &node.op {
            Op::Const(_) | Op::ArgMax { .. } => true,
            Op::Input { .. } => false,
            Op::Unary(u) => {
                let f = fhec_ir::Fun::of_unary(u);
                if f.tests_equality_of_a_continuous_value() && !operands_exact {
                    let why = match side {
                        Side::Server => "exact equality of an encrypted value (a table reads it only approximately)",
                        Side::Client => "exact equality of a decrypted value (it approximates the model's)",
                    };
                    return Err(LowerError::Unsupported {
                        node: node.describe(),
                        why: format!("{why}; compare within a tolerance instead, e.g. Less(Abs(x - c), eps)"),
                    });
                }
                operands_exact || f.is_discrete()
            }
            _ => operands_exact,
        };
        if is_exact {
            exact.insert(v);
        }
    }
    Ok(())
}
