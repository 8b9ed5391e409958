//! Recurrent layers (RNN, GRU, LSTM), unrolled over their fixed sequence length into what the rest
//! of fhec already compiles: per step and gate, matrix products by the weights, a bias, an
//! activation, and for GRU and LSTM elementwise products of gates with states (two tables each under
//! FHE, as any product of two encrypted values). Semantics follow ONNX's reference
//! (`onnx/reference/ops/op_rnn.py`, `op_gru.py`, `op_lstm.py`).

use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Op, Unary};

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Rnn,
    Gru,
    Lstm,
}

impl Cell {
    /// Gates per step, in ONNX's weight order: RNN one; GRU z, r, h; LSTM i, o, f, c.
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }

    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

pub fn rnn(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    recurrent(ctx, Cell::Rnn)
}

pub fn gru(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    recurrent(ctx, Cell::Gru)
}

pub fn lstm(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    recurrent(ctx, Cell::Lstm)
}

/// An activation of the `activations` attribute, with its alpha and beta where it takes them.
#[derive(Clone)]
enum Act {
    Unary(Unary),
    Affine { alpha: f32, beta: f32 },
}

impl Act {
    fn parse(name: &str, alpha: Option<f32>, beta: Option<f32>) -> Result<Act, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "tanh" => Act::Unary(Unary::Tanh),
            "sigmoid" => Act::Unary(Unary::Sigmoid),
            "relu" => Act::Unary(Unary::Relu),
            "leakyrelu" => Act::Unary(Unary::LeakyRelu { alpha: alpha.unwrap_or(0.01) }),
            "hardsigmoid" => Act::Unary(Unary::HardSigmoid { alpha: alpha.unwrap_or(0.2), beta: beta.unwrap_or(0.5) }),
            "elu" => Act::Unary(Unary::Elu { alpha: alpha.unwrap_or(1.0) }),
            "softsign" => Act::Unary(Unary::Softsign),
            "softplus" => Act::Unary(Unary::Softplus),
            "thresholdedrelu" => Act::Unary(Unary::ThresholdedRelu { alpha: alpha.unwrap_or(1.0) }),
            "affine" => Act::Affine { alpha: alpha.unwrap_or(1.0), beta: beta.unwrap_or(0.0) },
            _ => return Err(format!("activation \"{name}\" is not supported in a recurrent layer")),
        })
    }

    fn apply(&self, ctx: &mut Ctx, x: &Val) -> Result<Val, String> {
        match self {
            Act::Unary(u) => ctx.op(Op::Unary(u.clone()), std::slice::from_ref(x)),
            Act::Affine { alpha, beta } => {
                let y = ctx.binary(Binary::Mul, x, &Ctx::f32_const(vec![], vec![*alpha]))?;
                ctx.binary(Binary::Add, &y, &Ctx::f32_const(vec![], vec![*beta]))
            }
        }
    }
}

/// One direction's weights, per gate: `W^T` [input, hidden], `R^T` [hidden, hidden], the biases
/// [hidden] (none without `B`): `Wb + Rb` added once per step, each kept apart for GRU's
/// `linear_before_reset`; LSTM's peepholes.
struct Weights {
    w: Vec<Val>,
    r: Vec<Val>,
    wb: Vec<Option<Val>>,
    rb: Vec<Option<Val>>,
    bias: Vec<Option<Val>>,
    p: Vec<Val>,
}

/// `v + b`, or `v` without a bias.
fn plus(ctx: &mut Ctx, v: Val, b: Option<&Val>) -> Result<Val, String> {
    match b {
        Some(b) => ctx.binary(Binary::Add, &v, b),
        None => Ok(v),
    }
}

fn recurrent(ctx: &mut Ctx, cell: Cell) -> Result<Vec<Val>, String> {
    let a = ctx.attrs();
    let layout = a.int("layout", 0)?;
    let direction = a.string("direction", "forward")?;
    let dirs = match direction.as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        other => return Err(format!("direction \"{other}\" is not forward, reverse or bidirectional")),
    };
    let clip = a.has("clip").then(|| a.float("clip", 0.0)).transpose()?;
    let linear_before_reset = a.int("linear_before_reset", 0)? != 0;
    if a.int("input_forget", 0)? != 0 {
        return Err("input_forget=1 (coupled input and forget gates) is not supported".into());
    }
    let names: Vec<String> = match a.strings("activations")? {
        Some(n) => n,
        None => cell
            .default_activations()
            .iter()
            .cycle()
            .take(cell.default_activations().len() * dirs)
            .map(|s| s.to_string())
            .collect(),
    };
    let per_dir = cell.default_activations().len();
    if names.len() != per_dir * dirs {
        return Err(format!("{} activations for {dirs} direction(s); {per_dir} per direction expected", names.len()));
    }
    let (alphas, betas) =
        (a.floats("activation_alpha")?.unwrap_or_default(), a.floats("activation_beta")?.unwrap_or_default());
    // alpha and beta are listed in the order of the activations that take them.
    let (mut ai, mut bi) = (0, 0);
    let mut acts = Vec::new();
    for n in &names {
        let lower = n.to_ascii_lowercase();
        let next = |used: bool, list: &[f32], i: &mut usize| {
            used.then(|| {
                *i += 1;
                list.get(*i - 1).copied()
            })
            .flatten()
        };
        let alpha = next(
            matches!(lower.as_str(), "leakyrelu" | "hardsigmoid" | "elu" | "thresholdedrelu" | "affine"),
            &alphas,
            &mut ai,
        );
        let beta = next(matches!(lower.as_str(), "hardsigmoid" | "affine"), &betas, &mut bi);
        acts.push(Act::parse(n, alpha, beta)?);
    }

    let mut x = ctx.input(0)?;
    if layout == 1 {
        x = ctx.op(Op::Transpose { perm: vec![1, 0, 2] }, &[x])?;
    }
    let xs = ctx.shape(&x);
    if xs.len() != 3 {
        return Err(format!("input X has rank {}, expected 3 ([seq_length, batch, input])", xs.len()));
    }
    let (seq, batch) = (xs[0], xs[1]);
    if seq == 0 {
        return Err("an empty sequence".into());
    }
    let (w, r) = (ctx.input(1)?, ctx.input(2)?);
    let rs = ctx.shape(&r);
    let g = cell.gates();
    if rs.len() != 3 || rs[0] != dirs || !rs[1].is_multiple_of(g) || rs[1] / g != rs[2] {
        return Err(format!("R has shape {rs:?}, expected [{dirs}, {g} x hidden, hidden]"));
    }
    let hidden = rs[2];
    if a.has("hidden_size") && a.int("hidden_size", 0)? != hidden as i64 {
        return Err(format!("hidden_size {} differs from R's {hidden}", a.int("hidden_size", 0)?));
    }
    let ws = ctx.shape(&w);
    if ws != [dirs, g * hidden, xs[2]] {
        return Err(format!("W has shape {ws:?}, expected [{dirs}, {}, {}]", g * hidden, xs[2]));
    }
    if let Some(lens) = ctx.opt_input(4)? {
        let lens = lens
            .as_const()
            .ok_or("sequence_lens computed at run time: data-dependent lengths cannot be encrypted")?
            .to_i64_vec();
        if lens.iter().any(|&l| l != seq as i64) {
            return Err(format!("sequence_lens {lens:?} shorter than the sequence ({seq}) are not supported"));
        }
    }
    let b = ctx.opt_input(3)?;
    let mut states = Vec::new();
    for (k, what) in [(5, "initial_h"), (6, "initial_c")] {
        let s = match ctx.opt_input(k)? {
            Some(s) if cell == Cell::Lstm || k == 5 => {
                Some(if layout == 1 { ctx.op(Op::Transpose { perm: vec![1, 0, 2] }, &[s])? } else { s })
            }
            _ => None,
        };
        if let Some(s) = &s
            && ctx.shape(s) != [dirs, batch, hidden]
        {
            return Err(format!("{what} has shape {:?}, expected [{dirs}, {batch}, {hidden}]", ctx.shape(s)));
        }
        states.push(s);
    }
    let peepholes = if cell == Cell::Lstm { ctx.opt_input(7)? } else { None };

    let mut ys: Vec<Vec<Val>> = Vec::new();
    let (mut y_h, mut y_c) = (Vec::new(), Vec::new());
    for d in 0..dirs {
        let weights = direction_weights(ctx, cell, d, hidden, &w, &r, b.as_ref(), peepholes.as_ref())?;
        let pick = |ctx: &mut Ctx, s: &Option<Val>| s.as_ref().map(|s| take(ctx, s, 0, d)).transpose();
        let mut h = pick(ctx, &states[0])?;
        let mut c = pick(ctx, &states[1])?;
        let acts = &acts[d * per_dir..(d + 1) * per_dir];
        let reverse = direction == "reverse" || d == 1;
        let mut outs: Vec<Option<Val>> = vec![None; seq];
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let xt = take(ctx, &x, 0, t)?;
            let (nh, nc) = step_cell(
                ctx,
                cell,
                &weights,
                acts,
                clip,
                linear_before_reset,
                &xt,
                h.as_ref(),
                c.as_ref(),
                batch,
                hidden,
            )?;
            outs[t] = Some(nh.clone());
            h = Some(nh);
            c = nc;
        }
        ys.push(outs.into_iter().map(|o| o.expect("every step ran")).collect());
        y_h.push(h.expect("at least one step"));
        if let Some(c) = c {
            y_c.push(c);
        }
    }
    // Y [seq, dirs, batch, hidden]; Y_h and Y_c [dirs, batch, hidden].
    let mut steps = Vec::with_capacity(seq);
    for t in 0..seq {
        let per_dir: Vec<Val> =
            ys.iter().map(|y| ctx.reshape(&y[t], vec![1, 1, batch, hidden])).collect::<Result<_, _>>()?;
        steps.push(concat(ctx, per_dir, 1)?);
    }
    let mut y = concat(ctx, steps, 0)?;
    let stack = |ctx: &mut Ctx, v: Vec<Val>| -> Result<Val, String> {
        let v: Vec<Val> = v.iter().map(|s| ctx.reshape(s, vec![1, batch, hidden])).collect::<Result<_, _>>()?;
        concat(ctx, v, 0)
    };
    let mut last = vec![stack(ctx, y_h)?];
    if cell == Cell::Lstm {
        last.push(stack(ctx, y_c)?);
    }
    if layout == 1 {
        y = ctx.op(Op::Transpose { perm: vec![2, 0, 1, 3] }, &[y])?;
        last =
            last.into_iter().map(|s| ctx.op(Op::Transpose { perm: vec![1, 0, 2] }, &[s])).collect::<Result<_, _>>()?;
    }
    Ok([vec![y], last].concat())
}

/// `x[.., i, ..]` along `axis`, the axis removed.
fn take(ctx: &mut Ctx, x: &Val, axis: usize, i: usize) -> Result<Val, String> {
    ctx.op(Op::Gather { axis, indices: vec![i as i64], indices_shape: vec![] }, std::slice::from_ref(x))
}

/// Elements `[from, from + len)` along `axis`.
fn range(ctx: &mut Ctx, x: &Val, axis: usize, from: usize, len: usize) -> Result<Val, String> {
    ctx.op(
        Op::Gather { axis, indices: (from..from + len).map(|i| i as i64).collect(), indices_shape: vec![len] },
        std::slice::from_ref(x),
    )
}

fn concat(ctx: &mut Ctx, xs: Vec<Val>, axis: usize) -> Result<Val, String> {
    if xs.len() == 1 {
        return Ok(xs.into_iter().next().expect("one"));
    }
    ctx.op(Op::Concat { axis }, &xs)
}

#[allow(clippy::too_many_arguments)]
fn direction_weights(
    ctx: &mut Ctx,
    cell: Cell,
    d: usize,
    hidden: usize,
    w: &Val,
    r: &Val,
    b: Option<&Val>,
    p: Option<&Val>,
) -> Result<Weights, String> {
    let g = cell.gates();
    let wd = take(ctx, w, 0, d)?;
    let rd = take(ctx, r, 0, d)?;
    let wt = ctx.op(Op::Transpose { perm: vec![1, 0] }, &[wd])?;
    let rt = ctx.op(Op::Transpose { perm: vec![1, 0] }, &[rd])?;
    let bd = match b {
        Some(b) => {
            let bs = ctx.shape(b);
            if bs.len() != 2 || bs[1] != 2 * g * hidden {
                return Err(format!("B has shape {bs:?}, expected [directions, {}]", 2 * g * hidden));
            }
            Some(take(ctx, b, 0, d)?)
        }
        None => None,
    };
    let (mut ws, mut rs, mut wbs, mut rbs, mut bias, mut ps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..g {
        ws.push(range(ctx, &wt, 1, k * hidden, hidden)?);
        rs.push(range(ctx, &rt, 1, k * hidden, hidden)?);
        let (wb, rb) = match &bd {
            Some(bd) => {
                (Some(range(ctx, bd, 0, k * hidden, hidden)?), Some(range(ctx, bd, 0, (g + k) * hidden, hidden)?))
            }
            None => (None, None),
        };
        bias.push(match (&wb, &rb) {
            (Some(wb), Some(rb)) => Some(ctx.binary(Binary::Add, wb, rb)?),
            _ => None,
        });
        wbs.push(wb);
        rbs.push(rb);
    }
    if let Some(p) = p {
        let pd = take(ctx, p, 0, d)?;
        for k in 0..3 {
            ps.push(range(ctx, &pd, 0, k * hidden, hidden)?);
        }
    }
    Ok(Weights { w: ws, r: rs, wb: wbs, rb: rbs, bias, p: ps })
}

/// One step of one direction: the new hidden state (and LSTM's cell state).
#[allow(clippy::too_many_arguments)]
fn step_cell(
    ctx: &mut Ctx,
    cell: Cell,
    wt: &Weights,
    acts: &[Act],
    clip: Option<f32>,
    linear_before_reset: bool,
    x: &Val,
    h: Option<&Val>,
    c: Option<&Val>,
    batch: usize,
    hidden: usize,
) -> Result<(Val, Option<Val>), String> {
    use Binary::{Add, Mul, Sub};
    let act = |ctx: &mut Ctx, k: usize, v: Val| -> Result<Val, String> {
        let v = match clip {
            Some(t) => ctx.op(Op::Unary(Unary::Clip { min: -t, max: t }), &[v])?,
            None => v,
        };
        acts[k].apply(ctx, &v)
    };
    // x W_k^T + h R_k^T + Wb_k + Rb_k, with `h`'s product left out while the state is zero.
    let pre = |ctx: &mut Ctx, k: usize, with_h: bool| -> Result<Val, String> {
        let mut v = ctx.op(Op::MatMul, &[x.clone(), wt.w[k].clone()])?;
        if with_h && let Some(h) = h {
            let hr = ctx.op(Op::MatMul, &[h.clone(), wt.r[k].clone()])?;
            v = ctx.binary(Add, &v, &hr)?;
        }
        plus(ctx, v, wt.bias[k].as_ref())
    };
    let zero = || Ctx::f32_const(vec![batch, hidden], vec![0.0; batch * hidden]);
    match cell {
        Cell::Rnn => {
            let v = pre(ctx, 0, true)?;
            Ok((act(ctx, 0, v)?, None))
        }
        Cell::Gru => {
            let z = pre(ctx, 0, true)?;
            let z = act(ctx, 0, z)?;
            let r = pre(ctx, 1, true)?;
            let r = act(ctx, 0, r)?;
            let hh = match h {
                _ if linear_before_reset => {
                    // x W^T + r (h R^T + Rb) + Wb; `r (h R^T + Rb)` vanishes with neither a state nor Rb.
                    let xw = ctx.op(Op::MatMul, &[x.clone(), wt.w[2].clone()])?;
                    let hr = match h {
                        Some(h) => {
                            let hr = ctx.op(Op::MatMul, &[h.clone(), wt.r[2].clone()])?;
                            Some(plus(ctx, hr, wt.rb[2].as_ref())?)
                        }
                        None => wt.rb[2].clone(),
                    };
                    let v = match hr {
                        Some(hr) => {
                            let rh = ctx.binary(Mul, &r, &hr)?;
                            ctx.binary(Add, &xw, &rh)?
                        }
                        None => xw,
                    };
                    plus(ctx, v, wt.wb[2].as_ref())?
                }
                None => pre(ctx, 2, false)?,
                Some(h) => {
                    let xw = ctx.op(Op::MatMul, &[x.clone(), wt.w[2].clone()])?;
                    let rh = ctx.binary(Mul, &r, h)?;
                    let hr = ctx.op(Op::MatMul, &[rh, wt.r[2].clone()])?;
                    let v = ctx.binary(Add, &xw, &hr)?;
                    plus(ctx, v, wt.bias[2].as_ref())?
                }
            };
            let hh = act(ctx, 1, hh)?;
            // (1 - z) h~ + z h = h~ + z (h - h~)
            let diff = ctx.binary(Sub, h.unwrap_or(&zero()), &hh)?;
            let zd = ctx.binary(Mul, &z, &diff)?;
            Ok((ctx.binary(Add, &hh, &zd)?, None))
        }
        Cell::Lstm => {
            let peep = |ctx: &mut Ctx, v: Val, k: usize, state: Option<&Val>| -> Result<Val, String> {
                match (wt.p.get(k), state) {
                    (Some(p), Some(s)) => {
                        let ps = ctx.binary(Mul, p, s)?;
                        ctx.binary(Add, &v, &ps)
                    }
                    _ => Ok(v),
                }
            };
            let i = pre(ctx, 0, true)?;
            let i = peep(ctx, i, 0, c)?;
            let i = act(ctx, 0, i)?;
            let f = pre(ctx, 2, true)?;
            let f = peep(ctx, f, 2, c)?;
            let f = act(ctx, 0, f)?;
            let g = pre(ctx, 3, true)?;
            let g = act(ctx, 1, g)?;
            let ig = ctx.binary(Mul, &i, &g)?;
            let c = match c {
                Some(c) => {
                    let fc = ctx.binary(Mul, &f, c)?;
                    ctx.binary(Add, &fc, &ig)?
                }
                None => ig,
            };
            let o = pre(ctx, 1, true)?;
            let o = peep(ctx, o, 1, Some(&c))?;
            let o = act(ctx, 0, o)?;
            let hc = act(ctx, 2, c.clone())?;
            Ok((ctx.binary(Mul, &o, &hc)?, Some(c)))
        }
    }
}
