//! The e-graph optimizer (egg): equality saturation over the IR, then extraction of the cheapest
//! program under a cost model where a table lookup (a programmable bootstrap) costs what it costs on
//! this machine and leveled ops are nearly free.
//!
//! The module goes into an e-graph (`lang`): every univariate op becomes `map(f, x)`, a table per
//! element of `x`. The rules (`rules`) add equivalent forms: composed tables, products of functions
//! of one value fused into one table, scalar steps folded into tables, max pooling moved before a
//! monotone activation. Extraction picks, per class, the cheapest form; the result is kept only if its
//! whole-program (DAG) cost is lower than the input's, so the optimizer never makes a module worse.
//!
//! The lowering (`fhec_lower`) is naive on purpose; `fhec build --opt-level 0` skips this pass so its
//! gain stays measurable.
//!
//! Its cases, one per rule and per reason not to fire, a module in and the report and module out:
//! `testsuite/filetests/optimize/*.ir`.

mod lang;
mod rules;

use egg::{Id, Language, Runner};
use fhec_ir::{IrError, Module, Op, Security};
use lang::{EG, ENode, fun_of, ty};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The rewrite rules' names, in the order reports list them.
pub fn rule_names() -> Vec<&'static str> {
    rules::rules().into_iter().map(|(n, _)| n).collect()
}

/// Bounds on equality saturation. The defaults saturate every corpus model well inside them.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub nodes: usize,
    pub iterations: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { nodes: 50_000, iterations: 30, time: Duration::from_secs(5) }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// 0: no optimization (the naive lowering); 1: the e-graph optimizer.
    pub level: u8,
    pub limits: Limits,
    /// Run only these rules (tests); `None`: all of them.
    pub only: Option<Vec<&'static str>>,
    /// Whether the client computes comparisons of selected input features with constant thresholds
    /// (a tree ensemble's decisions) before encrypting, exactly and for no bootstrap; the client
    /// then learns the thresholds (`fhec_lower::head`). Off: the server compares, one bootstrap per
    /// distinct decision, and the thresholds stay on the server (`--private-thresholds`).
    pub client_decisions: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config { level: 1, limits: Limits::default(), only: None, client_decisions: true }
    }
}

/// What one table and one leveled op cost, in milliseconds.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct CostModel {
    /// One programmable bootstrap (the parameter set's measured time).
    pub pbs_ms: f64,
    /// One output element of a leveled op (LWE multiply-adds: about a microsecond per term).
    pub leveled_ms: f64,
}

impl Default for CostModel {
    /// The 1024-position set measured on the project's 2-core machine (see `fhec_runtime::ParamSet`).
    fn default() -> CostModel {
        CostModel { pbs_ms: 11.6, leveled_ms: 0.001 }
    }
}

/// The cost of a program: bootstraps, leveled work, and ops the FHE lowering cannot do at all.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub pbs: f64,
    pub leveled: f64,
    /// Quotients (or PReLU slopes) of two encrypted values (no table computes them).
    pub unsupported: usize,
}

impl Totals {
    fn ms(&self, c: &CostModel) -> f64 {
        self.pbs * c.pbs_ms + self.leveled * c.leveled_ms + self.unsupported as f64 * UNSUPPORTED_MS
    }

    fn add(&mut self, o: Totals) {
        self.pbs += o.pbs;
        self.leveled += o.leveled;
        self.unsupported += o.unsupported;
    }
}

/// The cost of an op that cannot be lowered: any lowerable alternative wins.
const UNSUPPORTED_MS: f64 = 1e9;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub before: Totals,
    pub after: Totals,
    /// Times each rule was applied, in rule order (rules that never applied included).
    pub applied: Vec<(&'static str, usize)>,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub stop_reason: String,
    pub time: Duration,
    /// The extracted program was not cheaper: the input is returned unchanged.
    pub kept_input: bool,
}

/// The cost of one e-node alone.
fn node_cost(eg: &EG, n: &ENode) -> Totals {
    let numel = |id: Id| ty(eg, id).map_or(0, |t| t.numel()) as f64;
    let enc = |id: Id| ty(eg, id).is_some_and(|t| t.security == Security::Enc);
    match n {
        ENode::Input(_) | ENode::Const(_) | ENode::Fun(_) => Totals::default(),
        ENode::Map([f, x]) => {
            let affine = fun_of(eg, *f).is_some_and(|f| f.is_affine());
            if enc(*x) && !affine {
                Totals { pbs: numel(*x), ..Totals::default() }
            } else {
                Totals { leveled: numel(*x), ..Totals::default() }
            }
        }
        ENode::Op(k, c) => {
            let op = &eg.analysis.ops[*k as usize];
            let result = eg.lookup(n.clone()).map_or(0.0, numel);
            match op {
                Op::MaxPool(p) if c.first().is_some_and(|x| enc(*x)) => {
                    let window: usize = p.kernel.iter().product();
                    Totals { pbs: result * window.saturating_sub(1) as f64, leveled: result, unsupported: 0 }
                }
                // Two tables per element: `((a + b)^2 - (a - b)^2) / 4`.
                Op::Binary(fhec_ir::Binary::Mul) if c.len() == 2 && enc(c[0]) && enc(c[1]) => {
                    Totals { pbs: 2.0 * result, leveled: result, unsupported: 0 }
                }
                Op::Binary(fhec_ir::Binary::Div | fhec_ir::Binary::PRelu) if c.len() == 2 && enc(c[0]) && enc(c[1]) => {
                    Totals { unsupported: 1, ..Totals::default() }
                }
                // One table per element folded in: `a + relu(b - a)`.
                Op::Reduce { kind: fhec_ir::ReduceKind::Max | fhec_ir::ReduceKind::Min, .. }
                    if c.first().is_some_and(|x| enc(*x)) =>
                {
                    Totals { pbs: (numel(c[0]) - result).max(0.0), leveled: result, unsupported: 0 }
                }
                // One table per element: a clip against a constant, or `a + relu(b - a)`.
                Op::Binary(fhec_ir::Binary::Max | fhec_ir::Binary::Min) if c.iter().any(|x| enc(*x)) => {
                    Totals { pbs: result, leveled: result, unsupported: 0 }
                }
                _ => Totals { leveled: result, ..Totals::default() },
            }
        }
    }
}

/// Cost per node plus a small constant, so that among equal costs the smaller program wins.
const NODE_MS: f64 = 1e-6;

/// The cost of the tree rooted at `n`, given its children's: its own cost plus theirs (a class
/// shared by two children counts twice; the DAG cost is measured after extraction).
fn tree_cost(eg: &EG, model: &CostModel, n: &ENode, costs: &HashMap<Id, (f64, ENode)>) -> Option<f64> {
    let own = node_cost(eg, n).ms(model) + NODE_MS;
    n.children().iter().try_fold(own, |acc, c| costs.get(&eg.find(*c)).map(|(cost, _)| acc + cost))
}

/// The cheapest node of every class by tree cost, as egg's `Extractor` chooses them, in linear time
/// on a DAG. egg recomputes every class in hash order until no cost falls, about one sweep per level
/// of depth (quadratic on a long chain). Here the classes are swept children first (a depth-first
/// post-order; a cycle's back edge is the only thing left for a later sweep), so one sweep settles an
/// acyclic e-graph and a second confirms it. As in egg, a class takes the first node of least cost
/// and changes only for a strictly lower one.
fn extract(eg: &EG, model: &CostModel) -> HashMap<Id, (f64, ENode)> {
    let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    ids.sort();
    let mut order = Vec::with_capacity(ids.len());
    let mut seen = HashSet::with_capacity(ids.len());
    for &root in &ids {
        let mut stack = vec![(root, false)];
        while let Some((id, children_done)) = stack.pop() {
            if children_done {
                order.push(id);
            } else if seen.insert(id) {
                stack.push((id, true));
                for n in &eg[id].nodes {
                    stack.extend(n.children().iter().map(|c| (eg.find(*c), false)).filter(|(c, _)| !seen.contains(c)));
                }
            }
        }
    }
    let mut costs: HashMap<Id, (f64, ENode)> = HashMap::with_capacity(ids.len());
    let mut changed = true;
    while changed {
        changed = false;
        for &id in &order {
            let best = eg[id]
                .nodes
                .iter()
                .filter_map(|n| tree_cost(eg, model, n, &costs).map(|c| (c, n)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((cost, n)) = best
                && costs.get(&id).is_none_or(|(old, _)| cost < *old)
            {
                costs.insert(id, (cost, n.clone()));
                changed = true;
            }
        }
    }
    costs
}

/// The cost of the program made of `choose(class)` for every class reachable from `roots`, each
/// class counted once.
fn dag_cost(eg: &EG, roots: &[Id], choose: &dyn Fn(Id) -> ENode) -> Totals {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|r| eg.find(*r)).collect();
    let mut total = Totals::default();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let n = choose(id);
        total.add(node_cost(eg, &n));
        stack.extend(n.children().iter().map(|c| eg.find(*c)));
    }
    total
}

/// The cost of the program as loaded (each class's original node).
fn input_cost(loaded: &lang::Loaded) -> Totals {
    let roots: Vec<Id> = loaded.outputs.iter().map(|(_, id)| *id).collect();
    // Loading only adds nodes (no unions), so every class id is its own canonical id.
    dag_cost(&loaded.egraph, &roots, &|id| loaded.original[&id].clone())
}

/// Optimizes `m` (see the module docs). With `cfg.level == 0` the module is returned as is.
pub fn optimize(m: &Module, cfg: &Config, model: &CostModel) -> Result<(Module, Report), IrError> {
    let loaded = lang::to_egraph(m)?;
    let roots: Vec<Id> = loaded.outputs.iter().map(|(_, id)| *id).collect();
    let before = input_cost(&loaded);
    let mut report = Report { before, after: before, kept_input: true, ..Report::default() };
    report.applied = rule_names().into_iter().map(|n| (n, 0)).collect();
    if cfg.level == 0 {
        return Ok((m.clone(), report));
    }
    let start = std::time::Instant::now();
    let runner = Runner::default()
        .with_egraph(loaded.egraph)
        .with_node_limit(cfg.limits.nodes)
        .with_iter_limit(cfg.limits.iterations)
        .with_time_limit(cfg.limits.time)
        .run(&rules::rewrites(cfg.only.as_deref()));
    report.time = start.elapsed();
    report.iterations = runner.iterations.len();
    report.egraph_nodes = runner.egraph.total_number_of_nodes();
    report.stop_reason = runner.stop_reason.as_ref().map_or("none".into(), |r| format!("{r:?}"));
    for it in &runner.iterations {
        for (name, count) in &it.applied {
            if let Some(e) = report.applied.iter_mut().find(|(n, _)| *n == name.as_str()) {
                e.1 += count;
            }
        }
    }
    let eg = &runner.egraph;
    let chosen = extract(eg, model);
    let best = |id: Id| chosen[&eg.find(id)].1.clone();
    let after = dag_cost(eg, &roots, &best);
    if after.ms(model) >= before.ms(model) - NODE_MS {
        return Ok((m.clone(), report));
    }
    let out = lang::to_module(&m.name, eg, &loaded.outputs, &loaded.locs, &best)?;
    report.after = after;
    report.kept_input = false;
    Ok((out, report))
}

/// Tables the lowering will make for `m`: the optimizer's cost model on the module as it stands.
pub fn table_count(m: &Module) -> Result<usize, IrError> {
    Ok(input_cost(&lang::to_egraph(m)?).pbs as usize)
}
