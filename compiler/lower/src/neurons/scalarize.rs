//! Scalarization: the server part of a module becomes a graph of neurons. Every tensor element is an
//! affine form (real coefficients) over wires; every univariate non-linearity makes a new wire (a table
//! lookup); linear ops and data movement only transform forms. Max pooling uses
//! `max(a, b) = a + relu(b - a)`. This lowering is naive on purpose: PBS-saving rewrites (fused tables,
//! max pooling before a monotone activation) are the optimizer's (`fhec_passes::optimize`) and the
//! neuron passes' (`passes`). Value ranges are propagated by interval analysis as wires are made.

use super::{Form, Lookup, Neurons, QUANTILES, Wire, quantiles};
use crate::LowerError;
use fhec_ir::{Binary, Fun, Module, Op, ReduceKind, Tap, Tensor, Type, Unary, ValueId, Window};
use std::collections::HashMap;

enum V {
    Const(Tensor),
    Enc(Vec<Form>),
}

struct Builder {
    wires: Vec<Wire>,
    /// Per calibration sample, the value of every wire so far (the circuit's semantics); empty
    /// without samples.
    samples: Vec<Vec<f64>>,
    /// The source op being lowered, for reports.
    layer: String,
}

impl Builder {
    /// `max(a, c)` as `a + relu(c - a)`, or `min(a, c)` as `a - relu(a - c)`: one table. The result's
    /// bound is the operands' (tighter than the sum's).
    fn extremum(&mut self, a: &Form, c: &Form, max: bool, class: usize) -> Form {
        let s = if max { 1.0 } else { -1.0 };
        let r = self.lookup(Unary::Relu, Form::combine(&[(s, c), (-s, a)]), class);
        let (lo, hi) = if max { (a.lo.max(c.lo), a.hi.max(c.hi)) } else { (a.lo.min(c.lo), a.hi.min(c.hi)) };
        let mut f = Form::combine(&[(1.0, a), (s, &r)]);
        f.lo = f.lo.max(lo);
        f.hi = f.hi.min(hi);
        f
    }

    fn lookup(&mut self, f: Unary, input: Form, class: usize) -> Form {
        if input.terms.is_empty() {
            return Form::constant(f64::from(f.apply(input.bias as f32)));
        }
        let (lo, hi) = input.range(&self.wires);
        let calibrated: Vec<f64> = self.samples.iter().map(|v| input.eval(v)).collect();
        let mut l = Lookup {
            f,
            input,
            lo,
            hi,
            domain: (lo, hi),
            center: 0.0,
            calibrated: span(&calibrated),
            held_out: (0, 0),
            quantiles: quantiles(&calibrated, QUANTILES),
            layer: self.layer.clone(),
        };
        if calibrated.len() >= 4
            && let Some(even) = span(calibrated.iter().step_by(2))
        {
            let (wlo, whi) = crate::window::window(even, (lo, hi));
            let odd = calibrated.iter().skip(1).step_by(2);
            l.held_out = (odd.clone().filter(|&&z| z < wlo || z > whi).count(), odd.count());
        }
        if let Some(domain) = saturated(&l, &calibrated) {
            l.domain = domain;
        }
        l.center = (l.eval(lo) + l.eval(hi)) / 2.0;
        let (olo, ohi) = image(&l, lo, hi);
        let center = l.center;
        for (v, z) in self.samples.iter_mut().zip(&calibrated) {
            v.push(l.eval(*z));
        }
        self.wires.push(Wire { lookup: Some(l), lo: olo, hi: ohi, class });
        let w = self.wires.len() - 1;
        let mut out = Form::wire(w as u32, &self.wires[w]);
        out.bias = center;
        out.lo += center;
        out.hi += center;
        out
    }
}

/// The smallest and largest of `values` (NaNs ignored); `None` if there are none.
fn span<'a>(values: impl IntoIterator<Item = &'a f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.into_iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &z| (a.min(z), b.max(z)));
    (lo <= hi).then_some((lo, hi))
}

/// The range of `l`'s table over inputs in `[lo, hi]`: the function over a dense grid.
fn image(l: &Lookup, lo: f64, hi: f64) -> (f64, f64) {
    (0..=4096)
        .map(|i| l.eval(lo + (hi - lo) * i as f64 / 4096.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

/// Whether `f` has a pole: a reciprocal, a quotient by the variable, a log, a negative power.
fn has_pole(f: &Fun) -> bool {
    match f {
        Fun::X | Fun::Const(_) => false,
        Fun::Unary(Unary::Reciprocal | Unary::Log, _) => true,
        Fun::Unary(Unary::Pow { exponent }, g) => *exponent < 0.0 || has_pole(g),
        Fun::Unary(_, g) => has_pole(g),
        Fun::Binary(Binary::Div, l, r) => has_pole(l) || !matches!(**r, Fun::Const(_)),
        Fun::Binary(_, l, r) => has_pole(l) || has_pole(r),
    }
}

/// A table takes up this many times more output range over its input's interval than over its
/// domain before it saturates.
const STEEP: f64 = 8.0;
/// Headroom of a saturating table's outputs around those of the calibrated inputs, relative to their
/// largest magnitude or spread.
const OUTPUT_HEADROOM: f64 = 0.5;

/// The domain a table with a pole saturates to: around the calibrated inputs, as far as the function
/// stays within the calibrated outputs plus [`OUTPUT_HEADROOM`], when it spans more than [`STEEP`]
/// times as much over the whole interval. Interval analysis cannot see that LayerNormalization's
/// variance and the deviations it divides are small together: without this, 1/sqrt(var + eps)
/// reaches 1/sqrt(eps) and the product after it needs tables hundreds of times too wide. An input
/// far flatter than any calibration sample then reads the bound instead.
fn saturated(l: &Lookup, calibrated: &[f64]) -> Option<(f64, f64)> {
    let fun = match &l.f {
        Unary::Fused(f) => (**f).clone(),
        u => Fun::of_unary(u),
    };
    let (zmin, zmax) = l.calibrated?;
    if !has_pole(&fun) || l.lo >= l.hi || l.lo.is_nan() || l.hi.is_nan() {
        return None;
    }
    let (zmin, zmax) = (zmin.clamp(l.lo, l.hi), zmax.clamp(l.lo, l.hi));
    let f = |z: f64| f64::from(l.f.apply(z as f32));
    let (olo, ohi) = calibrated
        .iter()
        .map(|&z| f(z.clamp(l.lo, l.hi)))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let pad = OUTPUT_HEADROOM * (ohi - olo).max(olo.abs()).max(ohi.abs());
    let allowed = |z: f64| f(z).is_finite() && (olo - pad..=ohi + pad).contains(&f(z));
    // Outward from the calibrated inputs over a grid of the interval, while the outputs stay allowed.
    let step = (l.hi - l.lo) / 4096.0;
    let (mut dlo, mut dhi) = (zmin, zmax);
    while dlo - step >= l.lo && allowed(dlo - step) {
        dlo -= step;
    }
    while dhi + step <= l.hi && allowed(dhi + step) {
        dhi += step;
    }
    let domain = (dlo, dhi);
    let spread = |(a, b): (f64, f64)| b - a;
    let whole = spread(image(l, l.lo, l.hi));
    let within = spread(image(&Lookup { domain, ..l.clone() }, domain.0, domain.1));
    (whole.is_finite() && whole > STEEP * within.max(1e-12)).then_some(domain)
}

fn unsupported(m: &Module, v: ValueId, why: &str) -> LowerError {
    LowerError::Unsupported { node: m.node(v).describe(), why: why.into() }
}

/// Flat index maps for data movement: runs the op on a tensor of (index + 1), 0 marking padding.
fn index_map(op: &Op, shapes: &[&[usize]], ty: &Type) -> Result<Vec<i64>, String> {
    let mut offset = 1i64;
    let mut tensors = Vec::new();
    for s in shapes {
        let n = fhec_ir::numel(s) as i64;
        tensors.push(Tensor::from_i64(s.to_vec(), (offset..offset + n).collect()).expect("sized"));
        offset += n;
    }
    let op = match op {
        Op::Pad { pads, mode, .. } => Op::Pad { pads: pads.clone(), mode: *mode, value: 0.0 },
        other => other.clone(),
    };
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let ty = Type { dtype: fhec_ir::DType::I64, ..ty.clone() };
    Ok(fhec_interp::eval_op(&op, &refs, &ty)?.to_i64_vec())
}

/// Scalarizes the module's server part. `input_box[i]` bounds input element `i`.
/// `samples` (input elements per calibration sample, possibly none) set the domain of tables with a
/// pole (see `saturated`).
pub fn scalarize(
    m: &Module,
    frontier: &[ValueId],
    input_box: &[(f64, f64)],
    samples: &[Vec<f64>],
) -> Result<Neurons, LowerError> {
    let inputs = m.inputs();
    let [input] = inputs.as_slice() else {
        return Err(LowerError::Model(format!("the model has {} inputs; FHE compilation supports one", inputs.len())));
    };
    let n_inputs = m.node(*input).ty.numel();
    // Each input element is its own class; a layer's class is `n_inputs + node index`.
    let mut b = Builder {
        wires: input_box.iter().enumerate().map(|(i, &(lo, hi))| Wire { lookup: None, lo, hi, class: i }).collect(),
        samples: samples
            .iter()
            .map(|x| x.iter().zip(input_box).map(|(&v, &(lo, hi))| v.clamp(lo, hi)).collect())
            .collect(),
        layer: String::new(),
    };
    let mut vals: HashMap<ValueId, V> = HashMap::new();
    let needed = needed(m, frontier);
    // Bounded before a neuron is made: every encrypted element becomes at least one form.
    let encrypted: usize = needed
        .iter()
        .map(|&v| &m.node(v).ty)
        .filter(|t| t.security == fhec_ir::Security::Enc)
        .map(|t| t.numel())
        .fold(0usize, usize::saturating_add);
    let max = fhec_ir::limits::limits().max_encrypted_values;
    if encrypted > max {
        return Err(LowerError::Model(format!(
            "the circuit would hold {encrypted} encrypted values (the sizes of its encrypted tensors), beyond the \
             limit of {max} (--max-encrypted-values): the model is too large to run encrypted on this machine"
        )));
    }
    for v in m.topo_order()? {
        if !needed.contains(&v) {
            continue;
        }
        let node = m.node(v);
        let ops = m.operands(v);
        let shape = &node.ty.shape;
        let n = node.ty.numel();
        let class = n_inputs + v.index();
        b.layer = node.describe();
        let val = match &node.op {
            Op::Input { .. } => V::Enc((0..n_inputs).map(|i| Form::wire(i as u32, &b.wires[i])).collect()),
            Op::Const(t) => V::Const(t.clone()),
            op => {
                let x: Vec<&V> = ops.iter().map(|o| &vals[o]).collect();
                let shapes: Vec<&[usize]> = ops.iter().map(|o| m.node(*o).ty.shape.as_slice()).collect();
                let forms = |i: usize| -> Vec<Form> {
                    match x[i] {
                        V::Enc(f) => f.clone(),
                        V::Const(t) => t.to_f32_vec().into_iter().map(|c| Form::constant(f64::from(c))).collect(),
                    }
                };
                match op {
                    Op::Unary(u) => match fhec_ir::Fun::of_unary(u).affine_coeffs() {
                        // `neg`, or a fused scalar step: a leveled op, no table.
                        Some((a, c)) => V::Enc(
                            forms(0)
                                .into_iter()
                                .map(|f| {
                                    let mut g = f.scaled(a);
                                    g.bias += c;
                                    g.lo += c;
                                    g.hi += c;
                                    g
                                })
                                .collect(),
                        ),
                        None => V::Enc(forms(0).into_iter().map(|f| b.lookup(u.clone(), f, class)).collect()),
                    },
                    Op::Binary(kind) => {
                        let (ia, ib) =
                            (fhec_ir::broadcast_index(shape, shapes[0]), fhec_ir::broadcast_index(shape, shapes[1]));
                        let (fa, fb) = (forms(0), forms(1));
                        let both_enc = matches!((x[0], x[1]), (V::Enc(_), V::Enc(_)));
                        let konst = |i: usize, k: usize| match x[i] {
                            V::Const(t) => Some(f64::from(t.to_f32_vec()[k])),
                            V::Enc(_) => None,
                        };
                        let mut out = Vec::with_capacity(n);
                        for e in 0..n {
                            let (a, c) = (&fa[ia[e]], &fb[ib[e]]);
                            out.push(match kind {
                                Binary::Add => Form::combine(&[(1.0, a), (1.0, c)]),
                                Binary::Sub => Form::combine(&[(1.0, a), (-1.0, c)]),
                                Binary::Mul if !both_enc => match konst(1, ib[e]) {
                                    Some(k) => a.scaled(k),
                                    None => c.scaled(konst(0, ia[e]).expect("one side is constant")),
                                },
                                // a c = ((k a + c / k)^2 - (k a - c / k)^2) / 4: two tables. k balances the
                                // operands' magnitudes so that neither drowns in the other's resolution.
                                Binary::Mul => {
                                    let mag = |f: &Form| {
                                        let (lo, hi) = f.range(&b.wires);
                                        lo.abs().max(hi.abs()).max(1e-9)
                                    };
                                    let k = (mag(c) / mag(a)).sqrt();
                                    let square = Unary::Pow { exponent: 2.0 };
                                    let p = b.lookup(square.clone(), Form::combine(&[(k, a), (1.0 / k, c)]), class);
                                    let q = b.lookup(square, Form::combine(&[(k, a), (-1.0 / k, c)]), class);
                                    Form::combine(&[(0.25, &p), (-0.25, &q)])
                                }
                                Binary::Div if konst(1, ib[e]).is_some() => a.scaled(1.0 / konst(1, ib[e]).expect("checked")),
                                Binary::Max | Binary::Min => {
                                    let max = *kind == Binary::Max;
                                    let bound = |k: f64| {
                                        if max {
                                            Unary::Clip { min: k as f32, max: f32::INFINITY }
                                        } else {
                                            Unary::Clip { min: f32::NEG_INFINITY, max: k as f32 }
                                        }
                                    };
                                    match (konst(0, ia[e]), konst(1, ib[e])) {
                                        (None, Some(k)) => b.lookup(bound(k), a.clone(), class),
                                        (Some(k), None) => b.lookup(bound(k), c.clone(), class),
                                        _ => b.extremum(a, c, max, class),
                                    }
                                }
                                Binary::PRelu if konst(1, ib[e]).is_some() => {
                                    b.lookup(Unary::LeakyRelu { alpha: konst(1, ib[e]).expect("checked") as f32 }, a.clone(), class)
                                }
                                _ => {
                                    return Err(unsupported(m, v, "a quotient or PReLU slope of two encrypted values needs a bivariate table (not supported yet)"));
                                }
                            });
                        }
                        V::Enc(out)
                    }
                    Op::MatMul => V::Enc(matmul(m, v, &x, &shapes, shape)?),
                    Op::Conv(c) => V::Enc(conv(m, v, c, &x, &shapes, shape)?),
                    Op::AvgPool(p) | Op::MaxPool(p) => {
                        let max = matches!(op, Op::MaxPool(_));
                        V::Enc(
                            pool(&mut b, p, &forms(0), shapes[0], shape, max, class)
                                .map_err(|e| unsupported(m, v, &e))?,
                        )
                    }
                    Op::Reduce { kind: kind @ (ReduceKind::Max | ReduceKind::Min), axes, keepdims: _ } => {
                        // A chain of `a + relu(b - a)` (max) or `a - relu(a - b)` (min) per group.
                        let f = forms(0);
                        let map = reduce_map(shapes[0], axes);
                        let mut groups: Vec<Vec<&Form>> = vec![Vec::new(); n];
                        for (i, g) in map.iter().enumerate() {
                            groups[*g].push(&f[i]);
                        }
                        let max = *kind == ReduceKind::Max;
                        let mut out = Vec::with_capacity(n);
                        for g in groups {
                            let Some((first, rest)) = g.split_first() else {
                                return Err(unsupported(m, v, "a max or min over no elements"));
                            };
                            let mut acc = (*first).clone();
                            for e in rest {
                                acc = b.extremum(&acc, e, max, class);
                            }
                            out.push(acc);
                        }
                        V::Enc(out)
                    }
                    Op::Reduce { kind, axes, keepdims: _ } => {
                        let f = forms(0);
                        let map = reduce_map(shapes[0], axes);
                        let count = (f.len() / n.max(1)) as f64;
                        let scale = if *kind == ReduceKind::Mean { 1.0 / count } else { 1.0 };
                        let mut groups: Vec<Vec<(f64, &Form)>> = vec![Vec::new(); n];
                        for (i, g) in map.iter().enumerate() {
                            groups[*g].push((scale, &f[i]));
                        }
                        V::Enc(groups.iter().map(|g| Form::combine(g)).collect())
                    }
                    Op::Reshape { .. } => V::Enc(forms(0)),
                    Op::Transpose { .. }
                    | Op::Concat { .. }
                    | Op::Slice { .. }
                    | Op::Gather { .. }
                    | Op::Pad { .. } => {
                        let all: Vec<Form> = (0..x.len()).flat_map(forms).collect();
                        let pad = match op {
                            Op::Pad { value, .. } => f64::from(*value),
                            _ => 0.0,
                        };
                        let map = index_map(op, &shapes, &node.ty).map_err(|e| unsupported(m, v, &e))?;
                        V::Enc(
                            map.iter()
                                .map(|&i| if i == 0 { Form::constant(pad) } else { all[i as usize - 1].clone() })
                                .collect(),
                        )
                    }
                    Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::ArgMax { .. } => {
                        return Err(unsupported(
                            m,
                            v,
                            "softmax, log-softmax and argmax run only as the model's final ops (on the client)",
                        ));
                    }
                    Op::Input { .. } | Op::Const(_) => unreachable!("handled above"),
                }
            }
        };
        vals.insert(v, val);
    }
    let mut outputs = Vec::new();
    for f in frontier {
        outputs.push(match &vals[f] {
            V::Enc(forms) => forms.clone(),
            V::Const(t) => t.to_f32_vec().into_iter().map(|c| Form::constant(f64::from(c))).collect(),
        });
    }
    Ok(Neurons { wires: b.wires, n_inputs, outputs, calibrated: None })
}

/// The values the frontier depends on.
pub(crate) fn needed(m: &Module, frontier: &[ValueId]) -> std::collections::HashSet<ValueId> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<ValueId> = frontier.to_vec();
    while let Some(v) = stack.pop() {
        if seen.insert(v) {
            stack.extend(m.operands(v));
        }
    }
    seen
}

/// For each input element, the output element of a reduction over `axes`.
fn reduce_map(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(fhec_ir::numel(shape));
    fhec_ir::for_each_index(shape, |idx| {
        out.push(shape.iter().enumerate().fold(0, |f, (k, &d)| if axes.contains(&k) { f } else { f * d + idx[k] }));
    });
    out
}

fn matmul(m: &Module, v: ValueId, x: &[&V], shapes: &[&[usize]], out: &[usize]) -> Result<Vec<Form>, LowerError> {
    let (a, w, transpose) = match (x[0], x[1]) {
        (V::Enc(a), V::Const(w)) if w.shape().len() <= 2 => (a, w, false),
        (V::Const(w), V::Enc(a)) if w.shape().len() == 2 && shapes[1].len() == 2 => (a, w, true),
        (V::Const(_), V::Const(_)) => unreachable!("constant matmuls are folded by the frontend"),
        _ if matches!((x[0], x[1]), (V::Const(_), _) | (_, V::Const(_))) => {
            return Err(unsupported(
                m,
                v,
                &format!(
                    "matmul of {:?} by {:?}: only an encrypted [.., M, K] times a constant [K, N], or a constant [M, K] times an encrypted [K, N], is supported yet",
                    shapes[0], shapes[1]
                ),
            ));
        }
        _ => {
            return Err(unsupported(m, v, "matmul of two encrypted values needs encrypted products (not supported)"));
        }
    };
    let wv = w.to_f32_vec();
    let ws = w.shape();
    let mut res = Vec::with_capacity(fhec_ir::numel(out));
    if !transpose {
        // a: [..., M, K] (or [K]), w: [K, N] (or [K]).
        let k = ws[0];
        let nn = if ws.len() == 2 { ws[1] } else { 1 };
        let rows = a.len() / k;
        for r in 0..rows {
            for j in 0..nn {
                let parts: Vec<(f64, &Form)> = (0..k).map(|i| (f64::from(wv[i * nn + j]), &a[r * k + i])).collect();
                res.push(Form::combine(&parts));
            }
        }
    } else {
        // w: [M, K], a: [K, N].
        let (mm, k) = (ws[0], ws[1]);
        let nn = shapes[1][1];
        for r in 0..mm {
            for j in 0..nn {
                let parts: Vec<(f64, &Form)> = (0..k).map(|i| (f64::from(wv[r * k + i]), &a[i * nn + j])).collect();
                res.push(Form::combine(&parts));
            }
        }
    }
    Ok(res)
}

fn conv(
    m: &Module,
    v: ValueId,
    c: &fhec_ir::ConvAttrs,
    x: &[&V],
    shapes: &[&[usize]],
    out: &[usize],
) -> Result<Vec<Form>, LowerError> {
    let (V::Enc(xf), V::Const(w)) = (x[0], x[1]) else {
        return Err(unsupported(m, v, "convolution weights must be constant"));
    };
    let bias: Option<Vec<f32>> = match x.get(2) {
        Some(V::Const(b)) => Some(b.to_f32_vec()),
        None => None,
        Some(V::Enc(_)) => {
            return Err(unsupported(m, v, "convolution bias must be constant"));
        }
    };
    let (xs, ws) = (shapes[0], w.shape());
    let g = Window::new(&xs[2..], &out[2..], &ws[2..], &c.strides, &c.pads, &c.dilations).map_err(LowerError::Model)?;
    let (ch, il, ol, kl) = (xs[1], g.input_len(), g.output_len(), g.kernel_len());
    let taps = g.tap_table();
    let wv = w.to_f32_vec();
    let (mtot, cg) = (ws[0], ws[1]);
    let per_group = mtot / c.group;
    let mut res = Vec::with_capacity(fhec_ir::numel(out));
    // A static batch: each sample is convolved on its own, its outputs after the previous sample's.
    for (mo, n) in (0..xs[0]).flat_map(|n| (0..mtot).map(move |mo| (mo, n))) {
        let grp = mo / per_group;
        for o in 0..ol {
            let mut parts = Vec::new();
            for ci in 0..cg {
                let plane = &xf[(n * ch + grp * cg + ci) * il..][..il];
                for t in 0..kl {
                    if let Some(i) = taps[o * kl + t] {
                        parts.push((f64::from(wv[(mo * cg + ci) * kl + t]), &plane[i]));
                    }
                }
            }
            let mut f = Form::combine(&parts);
            let b = bias.as_ref().map_or(0.0, |b| f64::from(b[mo]));
            f.bias += b;
            f.lo += b;
            f.hi += b;
            res.push(f);
        }
    }
    Ok(res)
}

fn pool(
    b: &mut Builder,
    p: &fhec_ir::PoolAttrs,
    x: &[Form],
    xs: &[usize],
    out: &[usize],
    max: bool,
    class: usize,
) -> Result<Vec<Form>, String> {
    // A max's tables join the class of the pooled wires when the input is one layer's outputs.
    let classes: std::collections::HashSet<usize> =
        x.iter().flat_map(|f| f.terms.iter().map(|&(w, _)| b.wires[w as usize].class)).collect();
    let class = if classes.len() == 1 { *classes.iter().next().expect("one") } else { class };
    let g = Window::new(&xs[2..], &out[2..], &p.kernel, &p.strides, &p.pads, &p.dilations)?;
    // Pooling is per channel: a static batch's samples are more channels.
    let (planes, il, ol) = (xs[0] * xs[1], g.input_len(), g.output_len());
    let mut res = Vec::with_capacity(planes * ol);
    for c in 0..planes {
        let plane = &x[c * il..][..il];
        for o in 0..ol {
            let mut window = Vec::new();
            let mut padded = 0usize;
            g.taps(o, |_, tap| match tap {
                Tap::In(i) => window.push(&plane[i]),
                Tap::Pad => padded += 1,
                Tap::Beyond => {}
            });
            if max && window.is_empty() {
                return Err("a max-pool window lies entirely in the padding".into());
            }
            res.push(if max {
                let mut acc = window[0].clone();
                for f in &window[1..] {
                    acc = b.extremum(&acc, f, true, class);
                }
                acc
            } else {
                let count = if p.count_include_pad { window.len() + padded } else { window.len() };
                let parts: Vec<(f64, &Form)> = window.iter().map(|f| (1.0 / count as f64, *f)).collect();
                Form::combine(&parts)
            });
        }
    }
    Ok(res)
}
