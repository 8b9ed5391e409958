//! Tree ensembles: `ai.onnx.ml` `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (scikit-learn's
//! trees and forests through skl2onnx, XGBoost and LightGBM through onnxmltools).
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
//! which the client cannot encrypt, so it is accepted and has no effect. Equality tests (`BRANCH_EQ`,
//! `BRANCH_NEQ`) are refused: a table reads its input approximately.

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

    let mut keys: HashMap<(usize, bool, u32), usize> = HashMap::new();
    let mut decisions = Vec::new();
    let mut nodes = Vec::with_capacity(n);
    let mut is_child = vec![false; n];
    for i in 0..n {
        let at = || format!("node {} of tree {}", node_ids[i], tree_ids[i]);
        let (strict, negate) = match modes[i].as_str() {
            "LEAF" => {
                nodes.push(Node::Leaf(Vec::new()));
                continue;
            }
            "BRANCH_LEQ" => (false, false),
            "BRANCH_LT" => (true, false),
            "BRANCH_GTE" => (true, true),
            "BRANCH_GT" => (false, true),
            m @ ("BRANCH_EQ" | "BRANCH_NEQ") => {
                return Err(format!(
                    "{} is {m}: an equality test of an encrypted feature is not supported (a table reads its \
                     input approximately); use an ordered split",
                    at()
                ));
            }
            m => return Err(format!("{} has mode {m:?} (LEAF, BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT)", at())),
        };
        let feature = usize::try_from(feature_ids[i])
            .ok()
            .filter(|&f| f < features)
            .ok_or_else(|| format!("{} tests feature {}, the input has {features}", at(), feature_ids[i]))?;
        let threshold = values[i];
        if !threshold.is_finite() {
            return Err(format!("{} has threshold {threshold}", at()));
        }
        let decision = *keys.entry((feature, strict, threshold.to_bits())).or_insert_with(|| {
            decisions.push(Decision { feature, strict, threshold });
            decisions.len() - 1
        });
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
    Ok(Ensemble { nodes, roots: roots.into_iter().map(|(_, r)| r).collect(), decisions, outputs })
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

impl Ensemble {
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
        };
        let mut visits = 0;
        for &root in &self.roots {
            self.walk(root, &mut Vec::new(), &mut out, &mut visits)?;
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
    // The decisions, non-strict then strict; `pos[d]` is decision d's column.
    let mut pos = vec![0; low.decisions.len()];
    let mut groups = Vec::new();
    let mut col = 0;
    for strict in [false, true] {
        let members: Vec<usize> = (0..low.decisions.len()).filter(|&d| low.decisions[d].strict == strict).collect();
        if members.is_empty() {
            continue;
        }
        for &d in &members {
            pos[d] = col;
            col += 1;
        }
        let indices: Vec<i64> = members.iter().map(|&d| low.decisions[d].feature as i64).collect();
        let thresholds: Vec<f32> = members.iter().map(|&d| low.decisions[d].threshold).collect();
        let k = members.len();
        let g = ctx.op(Op::Gather { axis: 1, indices, indices_shape: vec![k] }, std::slice::from_ref(x))?;
        let diff = ctx.binary(Binary::Sub, &g, &Ctx::f32_const(vec![k], thresholds))?;
        let cmp = if strict { Cmp::Less } else { Cmp::LessOrEqual };
        groups.push(ctx.op(Op::Unary(Unary::Compare { cmp, than: 0.0 }), &[diff])?);
    }
    let d = if groups.len() == 1 { groups.pop().expect("one") } else { ctx.op(Op::Concat { axis: 1 }, &groups)? };
    let k = col;

    let mut terms = Vec::new();
    if !low.tables.is_empty() {
        let b = low.inputs.len();
        let mut m = vec![0f32; k * b];
        for (j, input) in low.inputs.iter().enumerate() {
            for &(dec, c) in &input.coeffs {
                m[pos[dec] * b + j] += c;
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
            w[pos[dec] * outputs + o] += v;
        }
        terms.push(ctx.op(Op::MatMul, &[d, Ctx::f32_const(vec![k, outputs], w)])?);
    }
    let mut s = terms.remove(0);
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
        "AVERAGE" => {
            let trees = e.roots.len() as f32;
            for n in &mut e.nodes {
                if let Node::Leaf(ws) = n {
                    ws.iter_mut().for_each(|(_, w)| *w /= trees);
                }
            }
        }
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
