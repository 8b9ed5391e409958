//! Tree ensembles: `ai.onnx.ml` `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (scikit-learn's
//! trees and forests through skl2onnx, XGBoost and LightGBM through onnxmltools), and opset 5's
//! `TreeEnsemble`. See docs/trees.md.
//!
//! The translation is built for few bootstraps, in the IR's own ops, so the float reference, the
//! optimizer and both lowerings see ordinary tensors:
//! 1. **Decisions.** Every distinct test `x[f] <= t` or `x[f] < t` of the whole ensemble, once
//!    (`BRANCH_GTE`/`BRANCH_GT` are the negations of `LT`/`LEQ` and share their decision): a gather, a
//!    subtraction and a comparison, one table per decision under FHE.
//! 2. **Blocks.** A tree is cut into blocks: the bottom subtrees small enough that one table reads
//!    their decisions at once. A block's table input is the leveled sum
//!    `q = 2^k (agreements on the path to the block - path length) + sum_i 2^i D_i` over its `k`
//!    decisions: `q < 0` when the path does not lead to the block, else the code of the leaf reached.
//!    One table per block and output (the leaf values looked up), or one per leaf (an indicator) when
//!    that is fewer; a stump at the root and a leaf one decision deep need no table at all.
//! 3. **Scores**: a leveled sum of the tables and decisions, plus base values; the post-transform and
//!    the label (argmax) follow, as for `LinearClassifier`, and go to the client.
//!
//! Inputs are numbers under FHE, never missing: `nodes_missing_value_tracks_true` only routes NaN,
//! which fhec refuses to encrypt, so it is accepted and has no effect. Equality and membership tests
//! (`BRANCH_EQ`, `BRANCH_NEQ`, `BRANCH_MEMBER`) are refused: a table reads its input approximately.
//! Malformed ensembles (missing children, cycles, more than [`MAX_VISITS`] paths) are refused by node.

use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Cmp, Fun, Op, Unary};
use std::collections::HashMap;

/// A block's table input must take at most this many values (5 bits), so that the precision search
/// can keep every code apart.
const BLOCK_CODES: usize = 32;
/// Paths enumerated over all trees at most: a hostile graph (a DAG, deep chains) stops here.
const MAX_VISITS: usize = 1 << 20;

/// One node of one tree.
enum Node {
    Leaf(Vec<(usize, f32)>),
    /// Goes to `yes` when decision `decision` equals `!negate`, else to `no`.
    Branch {
        decision: usize,
        negate: bool,
        yes: usize,
        no: usize,
    },
}

/// A distinct test `x[feature] <= threshold` (or `<` when `strict`).
#[derive(Clone, Copy)]
struct Decision {
    feature: usize,
    strict: bool,
    threshold: f32,
}

/// The distinct decisions, keyed by feature, strictness and threshold bits.
#[derive(Default)]
struct Decisions {
    keys: HashMap<(usize, bool, u32), usize>,
    list: Vec<Decision>,
}

impl Decisions {
    fn add(&mut self, feature: usize, strict: bool, threshold: f32) -> usize {
        *self.keys.entry((feature, strict, threshold.to_bits())).or_insert_with(|| {
            self.list.push(Decision { feature, strict, threshold });
            self.list.len() - 1
        })
    }
}

/// `(strict, negate)` of an ordered split: `x <= t`, `x < t`, or the negation of one.
fn split(mode: &str, at: &dyn Fn() -> String) -> Result<Option<(bool, bool)>, String> {
    Ok(Some(match mode {
        "LEAF" => return Ok(None),
        "BRANCH_LEQ" => (false, false),
        "BRANCH_LT" => (true, false),
        "BRANCH_GTE" => (true, true),
        "BRANCH_GT" => (false, true),
        m @ ("BRANCH_EQ" | "BRANCH_NEQ" | "BRANCH_MEMBER") => {
            return Err(format!(
                "{} is {m}: an equality or membership test of an encrypted feature is not supported (a table \
                 reads its input approximately); use an ordered split",
                at()
            ));
        }
        m => return Err(format!("{} has mode {m:?} (LEAF, BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT)", at())),
    }))
}

/// A feature index within `features`.
fn feature_index(f: i64, features: usize, at: &dyn Fn() -> String) -> Result<usize, String> {
    usize::try_from(f)
        .ok()
        .filter(|&f| f < features)
        .ok_or_else(|| format!("{} tests feature {f}, the input has {features}", at()))
}

/// One table: `fun(q)` of the block input `q`, weighted into the outputs.
struct Table {
    input: usize,
    fun: Fun,
    weights: Vec<(usize, f32)>,
}

/// A block input: `q = bias + sum coeff * D[decision]`.
struct BlockInput {
    coeffs: Vec<(usize, f32)>,
    bias: f32,
}

/// The ensemble as decisions, block inputs, tables and leveled terms.
struct Lowered {
    decisions: Vec<Decision>,
    inputs: Vec<BlockInput>,
    tables: Vec<Table>,
    /// `weight * D[decision]` into an output.
    direct: Vec<(usize, usize, f32)>,
    constant: Vec<f32>,
    /// The tables each tree added, in root order.
    tables_per_tree: Vec<usize>,
}

/// The parsed ensemble: nodes, each tree's root, the decisions they test.
struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<usize>,
    decisions: Vec<Decision>,
    outputs: usize,
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("missing attribute `{name}`"))
}

/// Reads the node arrays and the leaf weights (`prefix` is `class` or `target`).
fn parse(ctx: &Ctx, features: usize, prefix: &str, outputs: usize) -> Result<Ensemble, String> {
    let a = ctx.attrs();
    let weights_tensor = format!("{prefix}_weights_as_tensor");
    for name in ["nodes_values_as_tensor", "nodes_hitrates_as_tensor", "base_values_as_tensor", &weights_tensor] {
        if a.has(name) {
            return Err(format!(
                "`{name}` (double-precision attributes) is not supported; export with float thresholds"
            ));
        }
    }
    let tree_ids = required(a.ints("nodes_treeids")?, "nodes_treeids")?;
    let node_ids = required(a.ints("nodes_nodeids")?, "nodes_nodeids")?;
    let feature_ids = required(a.ints("nodes_featureids")?, "nodes_featureids")?;
    let values = required(a.floats("nodes_values")?, "nodes_values")?;
    let modes = required(a.strings("nodes_modes")?, "nodes_modes")?;
    let yes_ids = required(a.ints("nodes_truenodeids")?, "nodes_truenodeids")?;
    let no_ids = required(a.ints("nodes_falsenodeids")?, "nodes_falsenodeids")?;
    let n = tree_ids.len();
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", feature_ids.len()),
        ("nodes_values", values.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", yes_ids.len()),
        ("nodes_falsenodeids", no_ids.len()),
    ] {
        if len != n {
            return Err(format!("`{name}` has {len} entries, `nodes_treeids` has {n}"));
        }
    }
    if n == 0 {
        return Err("the ensemble has no nodes".into());
    }
    let mut index = HashMap::with_capacity(n);
    for i in 0..n {
        if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
            return Err(format!("node {} of tree {} is defined twice", node_ids[i], tree_ids[i]));
        }
    }
    let child = |i: usize, id: i64| {
        index.get(&(tree_ids[i], id)).copied().ok_or_else(|| {
            format!(
                "node {} of tree {} names child {id}, which tree {} does not have",
                node_ids[i], tree_ids[i], tree_ids[i]
            )
        })
    };

    let mut decisions = Decisions::default();
    let mut nodes = Vec::with_capacity(n);
    let mut is_child = vec![false; n];
    for i in 0..n {
        let at = || format!("node {} of tree {}", node_ids[i], tree_ids[i]);
        let Some((strict, negate)) = split(&modes[i], &at)? else {
            nodes.push(Node::Leaf(Vec::new()));
            continue;
        };
        let feature = feature_index(feature_ids[i], features, &at)?;
        let threshold = values[i];
        if !threshold.is_finite() {
            return Err(format!("{} has threshold {threshold}", at()));
        }
        let decision = decisions.add(feature, strict, threshold);
        let (yes, no) = (child(i, yes_ids[i])?, child(i, no_ids[i])?);
        is_child[yes] = true;
        is_child[no] = true;
        nodes.push(Node::Branch { decision, negate, yes, no });
    }

    let ids = |s: &str| a.ints(&format!("{prefix}_{s}"));
    let w_trees = required(ids("treeids")?, &format!("{prefix}_treeids"))?;
    let w_nodes = required(ids("nodeids")?, &format!("{prefix}_nodeids"))?;
    let w_ids = required(ids("ids")?, &format!("{prefix}_ids"))?;
    let weights = required(a.floats(&format!("{prefix}_weights"))?, &format!("{prefix}_weights"))?;
    if [w_nodes.len(), w_ids.len(), weights.len()].iter().any(|&l| l != w_trees.len()) {
        return Err(format!("the `{prefix}_*` leaf arrays differ in length"));
    }
    for j in 0..w_trees.len() {
        let at = format!("`{prefix}_weights` entry {j} (tree {}, node {})", w_trees[j], w_nodes[j]);
        let i = *index.get(&(w_trees[j], w_nodes[j])).ok_or_else(|| format!("{at} names no node"))?;
        let o = usize::try_from(w_ids[j])
            .ok()
            .filter(|&o| o < outputs)
            .ok_or_else(|| format!("{at} is for output {}, the model has {outputs}", w_ids[j]))?;
        if !weights[j].is_finite() {
            return Err(format!("{at} is {}", weights[j]));
        }
        match &mut nodes[i] {
            Node::Leaf(ws) => ws.push((o, weights[j])),
            Node::Branch { .. } => return Err(format!("{at} weights a branch, not a leaf")),
        }
    }

    // Each tree's root: its one node that no node names as a child, in the order trees appear.
    let mut roots: Vec<(i64, usize)> = Vec::new();
    for i in (0..n).filter(|&i| !is_child[i]) {
        if let Some((t, _)) = roots.iter().find(|(t, _)| *t == tree_ids[i]) {
            return Err(format!("tree {t} has two roots (nodes that are nobody's child)"));
        }
        roots.push((tree_ids[i], i));
    }
    let trees: std::collections::HashSet<i64> = tree_ids.iter().copied().collect();
    if let Some(t) = trees.iter().find(|t| !roots.iter().any(|(r, _)| r == *t)) {
        return Err(format!("tree {t} has no root: its nodes form a cycle"));
    }
    Ok(Ensemble { nodes, roots: roots.into_iter().map(|(_, r)| r).collect(), decisions: decisions.list, outputs })
}

/// `TreeEnsemble` (ai.onnx.ml opset 5): leaves in arrays of their own, children flagged as leaves,
/// roots listed, splits and weights as tensors.
fn parse_v5(ctx: &Ctx, features: usize, outputs: usize) -> Result<Ensemble, String> {
    let a = ctx.attrs();
    let ints = |name: &str| a.ints(name)?.ok_or_else(|| format!("missing attribute `{name}`"));
    let tensor = |name: &str| a.tensor(name)?.ok_or_else(|| format!("missing attribute `{name}`"));
    let roots = ints("tree_roots")?;
    let feature_ids = ints("nodes_featureids")?;
    let splits = tensor("nodes_splits")?.to_f32_vec();
    let modes = tensor("nodes_modes")?.to_i64_vec();
    let (yes_ids, yes_leaf) = (ints("nodes_truenodeids")?, ints("nodes_trueleafs")?);
    let (no_ids, no_leaf) = (ints("nodes_falsenodeids")?, ints("nodes_falseleafs")?);
    let targets = ints("leaf_targetids")?;
    let weights = tensor("leaf_weights")?.to_f32_vec();
    let n = feature_ids.len();
    for (name, len) in [
        ("nodes_splits", splits.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", yes_ids.len()),
        ("nodes_trueleafs", yes_leaf.len()),
        ("nodes_falsenodeids", no_ids.len()),
        ("nodes_falseleafs", no_leaf.len()),
    ] {
        if len != n {
            return Err(format!("`{name}` has {len} entries, `nodes_featureids` has {n}"));
        }
    }
    if weights.len() != targets.len() {
        return Err(format!("{} leaf weights for {} leaf targets", weights.len(), targets.len()));
    }
    // Nodes 0..n are the branches, n.. the leaves.
    let mut nodes = Vec::with_capacity(n + weights.len());
    let mut decisions = Decisions::default();
    let child = |i: usize, id: i64, leaf: i64| -> Result<usize, String> {
        let (base, count, what) = if leaf != 0 { (n, weights.len(), "leaf") } else { (0, n, "node") };
        usize::try_from(id)
            .ok()
            .filter(|&c| c < count)
            .map(|c| base + c)
            .ok_or_else(|| format!("node {i} names {what} {id}, which does not exist"))
    };
    for i in 0..n {
        let at = || format!("node {i}");
        let mode = match modes[i] {
            0 => "BRANCH_LEQ",
            1 => "BRANCH_LT",
            2 => "BRANCH_GTE",
            3 => "BRANCH_GT",
            4 => "BRANCH_EQ",
            5 => "BRANCH_NEQ",
            6 => "BRANCH_MEMBER",
            m => return Err(format!("node {i} has mode {m} (0-6)")),
        };
        let (strict, negate) = split(mode, &at)?.expect("a branch");
        let feature = feature_index(feature_ids[i], features, &at)?;
        if !splits[i].is_finite() {
            return Err(format!("node {i} has split {}", splits[i]));
        }
        let decision = decisions.add(feature, strict, splits[i]);
        let (yes, no) = (child(i, yes_ids[i], yes_leaf[i])?, child(i, no_ids[i], no_leaf[i])?);
        nodes.push(Node::Branch { decision, negate, yes, no });
    }
    for (j, (&t, &w)) in targets.iter().zip(&weights).enumerate() {
        let o = usize::try_from(t)
            .ok()
            .filter(|&o| o < outputs)
            .ok_or_else(|| format!("leaf {j} is for target {t}, the model has {outputs}"))?;
        if !w.is_finite() {
            return Err(format!("leaf {j} has weight {w}"));
        }
        nodes.push(Node::Leaf(vec![(o, w)]));
    }
    let roots = roots
        .iter()
        .map(|&r| usize::try_from(r).ok().filter(|&r| r < n).ok_or_else(|| format!("tree root {r} is not a node")))
        .collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err("the ensemble has no trees".into());
    }
    Ok(Ensemble { nodes, roots, decisions: decisions.list, outputs })
}

/// `TreeEnsemble` (ai.onnx.ml opset 5): `[N, n_targets]` scores, summed or averaged over trees, then
/// post-transformed.
pub fn tree_ensemble(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, f) = features(ctx)?;
    let a = ctx.attrs();
    let targets =
        usize::try_from(a.int("n_targets", 1)?).ok().filter(|&t| t > 0).ok_or("n_targets must be positive")?;
    let mut e = parse_v5(ctx, f, targets)?;
    match a.int("aggregate_function", 1)? {
        1 => {}
        0 => e.average(),
        m => return Err(format!("aggregate_function {m} is not supported (0 AVERAGE, 1 SUM)")),
    }
    let s = emit(ctx, &x, &e.lower()?, targets)?;
    Ok(vec![match a.int("post_transform", 0)? {
        0 => s,
        1 => ctx.op(Op::Softmax { axis: 1 }, &[s])?,
        2 => ctx.op(Op::Unary(Unary::Sigmoid), &[s])?,
        m => return Err(format!("post_transform {m} is not supported (0 NONE, 1 SOFTMAX, 2 LOGISTIC)")),
    }])
}

/// The function `sum_c (v(c) - v(c-1)) [q > c - 1/2]` over codes `0..v.len()`, `v(-1) = 0`: `v(q)`
/// for an integer `q` in the codes, 0 below them. `None` when it is zero everywhere.
fn lookup(v: &[f32]) -> Option<Fun> {
    let mut f: Option<Fun> = None;
    let mut prev = 0.0;
    for (c, &x) in v.iter().enumerate() {
        let step = x - prev;
        prev = x;
        if step == 0.0 {
            continue;
        }
        let cmp = Fun::Unary(Unary::Compare { cmp: Cmp::Greater, than: c as f32 - 0.5 }, Box::new(Fun::X));
        let term = if step == 1.0 { cmp } else { Fun::Binary(Binary::Mul, Box::new(Fun::Const(step)), Box::new(cmp)) };
        f = Some(match f {
            None => term,
            Some(f) => Fun::Binary(Binary::Add, Box::new(f), Box::new(term)),
        });
    }
    f
}

/// What the translation makes of one tree-ensemble node: the count of a node-by-node lowering (one
/// bootstrap per branch and one per leaf) beside its own (shared decisions and block tables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The ONNX node's name (or op and output).
    pub node: String,
    pub trees: usize,
    pub branches: usize,
    pub leaves: usize,
    /// Distinct decisions over all trees (one table each).
    pub decisions: usize,
    /// Per tree: its block tables, and the distinct decisions it reads (shared with other trees).
    pub per_tree: Vec<(usize, usize)>,
}

impl Summary {
    /// The tables the translation makes: decisions plus every tree's block tables.
    pub fn tables(&self) -> usize {
        self.decisions + self.per_tree.iter().map(|t| t.0).sum::<usize>()
    }
}

/// The summary of a tree-ensemble node, `None` for other nodes; an ensemble that does not translate
/// gives its error.
pub(crate) fn summary(node: &tract_onnx::pb::NodeProto) -> Option<Result<Summary, String>> {
    let ctx = Ctx::new("", 0, HashMap::new(), node);
    let a = ctx.attrs();
    let targets = || usize::try_from(a.int("n_targets", 1)?).map_err(|_| "n_targets must be positive".to_string());
    let e = match node.op_type.as_str() {
        "TreeEnsembleClassifier" => super::ml::class_count(&a).and_then(|k| parse(&ctx, usize::MAX, "class", k)),
        "TreeEnsembleRegressor" => targets().and_then(|t| parse(&ctx, usize::MAX, "target", t)),
        "TreeEnsemble" => targets().and_then(|t| parse_v5(&ctx, usize::MAX, t)),
        _ => return None,
    };
    Some(e.and_then(|e| {
        let low = e.lower()?;
        let branches = e.nodes.iter().filter(|n| matches!(n, Node::Branch { .. })).count();
        let per_tree = e.roots.iter().zip(&low.tables_per_tree).map(|(&r, &t)| (t, e.tree_decisions(r))).collect();
        Ok(Summary {
            node: crate::ctx::display_name(node),
            trees: e.roots.len(),
            branches,
            leaves: e.nodes.len() - branches,
            decisions: low.decisions.len(),
            per_tree,
        })
    }))
}

impl Ensemble {
    /// The distinct decisions the tree at `root` reads.
    fn tree_decisions(&self, root: usize) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![root];
        let mut visits = 0;
        while let Some(n) = stack.pop() {
            visits += 1;
            if visits > MAX_VISITS {
                break;
            }
            if let Node::Branch { decision, yes, no, .. } = &self.nodes[n] {
                seen.insert(*decision);
                stack.extend([*yes, *no]);
            }
        }
        seen.len()
    }

    /// Leaf values divided by the number of trees (`AVERAGE`).
    fn average(&mut self) {
        let trees = self.roots.len() as f32;
        for n in &mut self.nodes {
            if let Node::Leaf(ws) = n {
                ws.iter_mut().for_each(|(_, w)| *w /= trees);
            }
        }
    }

    /// The decisions of the subtree at `n` in preorder (`None` past `limit`).
    fn block_decisions(&self, n: usize, limit: usize, out: &mut Vec<usize>) -> bool {
        match &self.nodes[n] {
            Node::Leaf(_) => true,
            Node::Branch { yes, no, .. } => {
                out.push(n);
                out.len() <= limit && self.block_decisions(*yes, limit, out) && self.block_decisions(*no, limit, out)
            }
        }
    }

    /// The leaf reached from `n` when the block's `i`-th branch (preorder, `order`) reads bit `i` of `code`.
    fn reach(&self, mut n: usize, order: &[usize], code: usize) -> usize {
        loop {
            match &self.nodes[n] {
                Node::Leaf(_) => return n,
                Node::Branch { negate, yes, no, .. } => {
                    let i = order.iter().position(|&b| b == n).expect("a block branch");
                    let d = (code >> i) & 1 == 1;
                    n = if d != *negate { *yes } else { *no };
                }
            }
        }
    }

    fn lower(&self) -> Result<Lowered, String> {
        let mut out = Lowered {
            decisions: self.decisions.clone(),
            inputs: Vec::new(),
            tables: Vec::new(),
            direct: Vec::new(),
            constant: vec![0.0; self.outputs],
            tables_per_tree: Vec::with_capacity(self.roots.len()),
        };
        let mut visits = 0;
        for &root in &self.roots {
            let before = out.tables.len();
            self.walk(root, &mut Vec::new(), &mut out, &mut visits)?;
            out.tables_per_tree.push(out.tables.len() - before);
        }
        Ok(out)
    }

    /// Lowers the subtree at `n`, reached when every `(decision, value)` of `path` holds.
    fn walk(
        &self,
        n: usize,
        path: &mut Vec<(usize, bool)>,
        out: &mut Lowered,
        visits: &mut usize,
    ) -> Result<(), String> {
        *visits += 1;
        if *visits > MAX_VISITS || path.len() > 64 {
            return Err(format!(
                "the trees are too large or not trees: more than {MAX_VISITS} paths or deeper than 64"
            ));
        }
        // q = 2^k (sum_path agree - len) + code; agree is D or 1 - D.
        let path_input = |scale: f32| {
            let mut coeffs = Vec::new();
            let mut bias = -(path.len() as f32) * scale;
            for &(d, want) in path.iter() {
                coeffs.push((d, if want { scale } else { -scale }));
                if !want {
                    bias += scale;
                }
            }
            BlockInput { coeffs, bias }
        };
        match &self.nodes[n] {
            Node::Leaf(ws) => match path.as_slice() {
                [] => ws.iter().for_each(|&(o, w)| out.constant[o] += w),
                [(d, want)] => {
                    for &(o, w) in ws {
                        if *want {
                            out.direct.push((*d, o, w));
                        } else {
                            out.constant[o] += w;
                            out.direct.push((*d, o, -w));
                        }
                    }
                }
                _ => {
                    if !ws.is_empty() {
                        out.inputs.push(path_input(1.0));
                        let fun = lookup(&[1.0]).expect("nonzero");
                        out.tables.push(Table { input: out.inputs.len() - 1, fun, weights: ws.clone() });
                    }
                }
            },
            Node::Branch { decision, negate, yes, no } => {
                let mut order = Vec::new();
                let fits = self.block_decisions(n, 5, &mut order);
                let k = order.len();
                let stump_at_root = path.is_empty() && k == 1;
                if fits && !stump_at_root && (path.len() + 1) << k <= BLOCK_CODES {
                    self.block(n, &order, path_input((1 << k) as f32), out);
                } else {
                    path.push((*decision, !*negate));
                    self.walk(*yes, path, out, visits)?;
                    path.pop();
                    path.push((*decision, *negate));
                    self.walk(*no, path, out, visits)?;
                    path.pop();
                }
            }
        }
        Ok(())
    }

    /// One table input for the subtree at `n` (branches `order`), and its tables.
    fn block(&self, n: usize, order: &[usize], mut input: BlockInput, out: &mut Lowered) {
        for (i, &b) in order.iter().enumerate() {
            if let Node::Branch { decision, .. } = &self.nodes[b] {
                input.coeffs.push((*decision, (1u32 << i) as f32));
            }
        }
        let codes = 1usize << order.len();
        let reached: Vec<usize> = (0..codes).map(|c| self.reach(n, order, c)).collect();
        let mut leaves = reached.clone();
        leaves.sort_unstable();
        leaves.dedup();
        let weights = |l: usize| match &self.nodes[l] {
            Node::Leaf(ws) => ws.as_slice(),
            Node::Branch { .. } => &[],
        };
        let mut used: Vec<usize> = leaves.iter().flat_map(|&l| weights(l).iter().map(|&(o, _)| o)).collect();
        used.sort_unstable();
        used.dedup();
        out.inputs.push(input);
        let input = out.inputs.len() - 1;
        if used.len() <= leaves.len() {
            // One table per output: the leaf values looked up.
            for o in used {
                let v: Vec<f32> = reached
                    .iter()
                    .map(|&l| weights(l).iter().filter(|&&(p, _)| p == o).map(|&(_, w)| w).sum())
                    .collect();
                if let Some(fun) = lookup(&v) {
                    out.tables.push(Table { input, fun, weights: vec![(o, 1.0)] });
                }
            }
        } else {
            // One indicator per leaf.
            for l in leaves {
                let v: Vec<f32> = reached.iter().map(|&r| f32::from(u8::from(r == l))).collect();
                if let Some(fun) = lookup(&v) {
                    out.tables.push(Table { input, fun, weights: weights(l).to_vec() });
                }
            }
        }
    }
}

/// Emits the lowered ensemble on `x` (`[N, features]`): the scores `[N, outputs]`.
fn emit(ctx: &mut Ctx, x: &Val, low: &Lowered, outputs: usize) -> Result<Val, String> {
    if low.decisions.is_empty() {
        return Err("the ensemble makes no decision: its output does not depend on the input".into());
    }
    // The decisions as one comparison `x[f] - t <= 0`; a strict `x[f] < t` is `x[f] <= t'` with
    // `t'` the float just below `t` (the features are f32). One chain of gather, subtract and
    // compare is what the client computes before encrypting (`fhec_lower::head`).
    let k = low.decisions.len();
    let indices: Vec<i64> = low.decisions.iter().map(|d| d.feature as i64).collect();
    let thresholds: Vec<f32> =
        low.decisions.iter().map(|d| if d.strict { d.threshold.next_down() } else { d.threshold }).collect();
    let g = ctx.op(Op::Gather { axis: 1, indices, indices_shape: vec![k] }, std::slice::from_ref(x))?;
    let diff = ctx.binary(Binary::Sub, &g, &Ctx::f32_const(vec![k], thresholds))?;
    let d = ctx.op(Op::Unary(Unary::Compare { cmp: Cmp::LessOrEqual, than: 0.0 }), &[diff])?;

    let mut terms = Vec::new();
    if !low.tables.is_empty() {
        let b = low.inputs.len();
        let mut m = vec![0f32; k * b];
        for (j, input) in low.inputs.iter().enumerate() {
            for &(dec, c) in &input.coeffs {
                m[dec * b + j] += c;
            }
        }
        let q = ctx.op(Op::MatMul, &[d.clone(), Ctx::f32_const(vec![k, b], m)])?;
        let q = ctx.binary(Binary::Add, &q, &Ctx::f32_const(vec![b], low.inputs.iter().map(|i| i.bias).collect()))?;
        let mut columns: Vec<Option<Val>> = vec![None; b];
        let mut tables = Vec::with_capacity(low.tables.len());
        for t in &low.tables {
            if columns[t.input].is_none() {
                let j = t.input as i64;
                let slice = Op::Slice { axes: vec![1], starts: vec![j], ends: vec![j + 1], steps: vec![1] };
                columns[t.input] = Some(ctx.op(slice, std::slice::from_ref(&q))?);
            }
            let column = columns[t.input].clone().expect("sliced");
            tables.push(ctx.op(Op::Unary(Unary::Fused(Box::new(t.fun.clone()))), &[column])?);
        }
        let n = tables.len();
        let t = if n == 1 { tables.pop().expect("one") } else { ctx.op(Op::Concat { axis: 1 }, &tables)? };
        let mut w = vec![0f32; n * outputs];
        for (i, table) in low.tables.iter().enumerate() {
            for &(o, v) in &table.weights {
                w[i * outputs + o] += v;
            }
        }
        terms.push(ctx.op(Op::MatMul, &[t, Ctx::f32_const(vec![n, outputs], w)])?);
    }
    if !low.direct.is_empty() {
        let mut w = vec![0f32; k * outputs];
        for &(dec, o, v) in &low.direct {
            w[dec * outputs + o] += v;
        }
        terms.push(ctx.op(Op::MatMul, &[d, Ctx::f32_const(vec![k, outputs], w)])?);
    }
    let mut terms = terms.into_iter();
    let mut s = terms.next().ok_or("no leaf weight depends on the input: the ensemble's output is a constant")?;
    for t in terms {
        s = ctx.binary(Binary::Add, &s, &t)?;
    }
    if low.constant.iter().any(|&c| c != 0.0) {
        s = ctx.binary(Binary::Add, &s, &Ctx::f32_const(vec![outputs], low.constant.clone()))?;
    }
    Ok(s)
}

/// The input `[N, features]` and its feature count.
fn features(ctx: &Ctx) -> Result<(Val, usize), String> {
    let x = ctx.input(0)?;
    match ctx.shape(&x).as_slice() {
        [_, f] => Ok((x, *f)),
        s => Err(format!("input must be [N, features], got {s:?}")),
    }
}

fn base_values(ctx: &Ctx, outputs: usize) -> Result<Vec<f32>, String> {
    let b = ctx.attrs().floats("base_values")?.unwrap_or_default();
    match b.len() {
        0 => Ok(vec![0.0; outputs]),
        l if l == outputs => Ok(b),
        l => Err(format!("{l} base values for {outputs} outputs")),
    }
}

pub fn tree_ensemble_regressor(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, f) = features(ctx)?;
    let a = ctx.attrs();
    let targets =
        usize::try_from(a.int("n_targets", 1)?).ok().filter(|&t| t > 0).ok_or("n_targets must be positive")?;
    let mut e = parse(ctx, f, "target", targets)?;
    match a.string("aggregate_function", "SUM")?.as_str() {
        "SUM" => {}
        "AVERAGE" => e.average(),
        other => return Err(format!("aggregate_function {other} is not supported (SUM, AVERAGE)")),
    }
    let mut low = e.lower()?;
    for (c, b) in low.constant.iter_mut().zip(base_values(ctx, targets)?) {
        *c += b;
    }
    let s = emit(ctx, &x, &low, targets)?;
    Ok(vec![super::ml::post_transform(ctx, s)?])
}

/// Outputs: labels (argmax of the scores; class labels must be 0..k-1) and scores, as ONNX Runtime
/// computes them, including its binary case (one class scored).
pub fn tree_ensemble_classifier(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (x, f) = features(ctx)?;
    let a = ctx.attrs();
    let k = super::ml::class_count(&a)?;
    let e = parse(ctx, f, "class", k)?;
    let class_ids = a.ints("class_ids")?.unwrap_or_default();
    let transform = a.string("post_transform", "NONE")?;
    let base = a.floats("base_values")?.unwrap_or_default();
    let mut low = e.lower()?;
    let binary = k == 2 && !class_ids.is_empty() && class_ids.iter().all(|&c| c == class_ids[0]);
    let scores = if binary {
        if class_ids[0] != 0 {
            return Err("two classes scored through class 1 only are not supported".into());
        }
        match base.as_slice() {
            [] => {}
            [b] => low.constant[0] += b,
            _ => return Err(format!("{} base values for a binary ensemble that scores one class", base.len())),
        }
        low.constant.truncate(1);
        for t in &mut low.tables {
            t.weights.retain(|&(o, _)| o == 0);
        }
        let s = emit(ctx, &x, &low, 1)?;
        let positive = a.floats("class_weights")?.unwrap_or_default().iter().all(|&w| w >= 0.0);
        match (positive, transform.as_str()) {
            (true, "NONE") => {
                let q = ctx.binary(Binary::Sub, &Ctx::f32_const(vec![1, 1], vec![1.0]), &s)?;
                ctx.op(Op::Concat { axis: 1 }, &[q, s])?
            }
            (false, "NONE" | "LOGISTIC") => {
                let n = ctx.op(Op::Unary(Unary::Neg), std::slice::from_ref(&s))?;
                let both = ctx.op(Op::Concat { axis: 1 }, &[n, s])?;
                if transform == "LOGISTIC" { ctx.op(Op::Unary(Unary::Sigmoid), &[both])? } else { both }
            }
            (_, other) => {
                return Err(format!(
                    "post_transform {other} on a binary ensemble that scores one class is not supported (NONE; LOGISTIC with signed weights)"
                ));
            }
        }
    } else {
        match base.len() {
            0 => {}
            l if l == k && k > 2 => low.constant.iter_mut().zip(&base).for_each(|(c, b)| *c += b),
            l => return Err(format!("{l} base values for {k} classes")),
        }
        let s = emit(ctx, &x, &low, k)?;
        super::ml::post_transform(ctx, s)?
    };
    let label =
        ctx.op(Op::ArgMax { axis: 1, keepdims: false, select_last_index: false }, std::slice::from_ref(&scores))?;
    Ok(vec![label, scores])
}
