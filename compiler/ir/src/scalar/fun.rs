//! Scalar functions of one variable built from the IR's elementwise ops: the body of a fused table.
//!
//! The optimizer fuses chains of elementwise ops that depend on one encrypted value (`relu` then `clip`,
//! `x * sigmoid(x)`, a decomposed GELU) into one [`Unary::Fused`], which the lowering turns into one
//! table lookup per element. Evaluation applies the same f32 operations in the same order as the ops
//! it replaces, so a fused module computes bit-identical results in the float reference.
//!
//! Text form (an s-expression, kept in the `fn` attribute of `fused`): `x`, a float, `(relu x)`,
//! `(leaky_relu{alpha=0.1} x)`, `(mul x (sigmoid x))`. It is the ops' own text, so it is printed and
//! parsed in `op::attrs`, next to `Op::attrs` and `Op::from_parts`.
//!
//! Cycle with `unary`, inherent: a `Fun` is built of `Unary` nodes, and `Unary::Fused` holds a `Fun`.

use super::{Binary, Cmp, Unary};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fun {
    /// The variable.
    X,
    Const(f32),
    Unary(Unary, Box<Fun>),
    Binary(Binary, Box<Fun>, Box<Fun>),
}

/// How a function of one variable varies with it (non-strictly).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Monotone {
    Increasing,
    Decreasing,
    Constant,
    Unknown,
}

impl Monotone {
    fn flip(self) -> Monotone {
        match self {
            Monotone::Increasing => Monotone::Decreasing,
            Monotone::Decreasing => Monotone::Increasing,
            m => m,
        }
    }

    /// `outer(inner(x))`.
    pub fn compose(outer: Monotone, inner: Monotone) -> Monotone {
        match (outer, inner) {
            (Monotone::Constant, _) | (_, Monotone::Constant) => Monotone::Constant,
            (Monotone::Unknown, _) | (_, Monotone::Unknown) => Monotone::Unknown,
            (a, b) if a == b => Monotone::Increasing,
            _ => Monotone::Decreasing,
        }
    }

    fn sum(a: Monotone, b: Monotone) -> Monotone {
        match (a, b) {
            (Monotone::Constant, m) | (m, Monotone::Constant) => m,
            (a, b) if a == b => a,
            _ => Monotone::Unknown,
        }
    }
}

impl Fun {
    pub fn eval(&self, x: f32) -> f32 {
        match self {
            Fun::X => x,
            Fun::Const(c) => *c,
            Fun::Unary(u, f) => u.apply(f.eval(x)),
            Fun::Binary(b, l, r) => b.apply(l.eval(x), r.eval(x)),
        }
    }

    /// The function `u(x)` (a fused function is inlined).
    pub fn of_unary(u: &Unary) -> Fun {
        match u {
            Unary::Fused(f) => (**f).clone(),
            u => Fun::Unary(u.clone(), Box::new(Fun::X)),
        }
    }

    /// `self(inner(x))`.
    pub fn compose(&self, inner: &Fun) -> Fun {
        match self {
            Fun::X => inner.clone(),
            Fun::Const(c) => Fun::Const(*c),
            Fun::Unary(u, f) => Fun::Unary(u.clone(), Box::new(f.compose(inner))),
            Fun::Binary(b, l, r) => Fun::Binary(*b, Box::new(l.compose(inner)), Box::new(r.compose(inner))),
        }
    }

    /// `l op r`.
    /// Whether the function tests exact equality (`compare{cmp=eq}`) of a value that varies
    /// continuously with `x`. A table built from such a function is wrong under FHE: the table reads
    /// an approximation of `x`, which equals the threshold by chance only. Equality of values that
    /// steps produced (booleans, integers from floor/round) is exact and fine.
    pub fn tests_equality_of_a_continuous_value(&self) -> bool {
        match self {
            Fun::X | Fun::Const(_) => false,
            Fun::Unary(Unary::Compare { cmp: Cmp::Equal, .. }, f) => {
                !f.is_discrete() || f.tests_equality_of_a_continuous_value()
            }
            Fun::Unary(_, f) => f.tests_equality_of_a_continuous_value(),
            Fun::Binary(_, l, r) => {
                l.tests_equality_of_a_continuous_value() || r.tests_equality_of_a_continuous_value()
            }
        }
    }

    /// Whether the function takes finitely many values, each computed exactly: constants and steps
    /// (comparisons, floor, ceil, round, sign), and arithmetic on them.
    pub fn is_discrete(&self) -> bool {
        match self {
            Fun::X => false,
            Fun::Const(_) => true,
            Fun::Unary(Unary::Compare { .. } | Unary::Floor | Unary::Ceil | Unary::Round | Unary::Sign, _) => true,
            Fun::Unary(_, f) => f.is_discrete(),
            Fun::Binary(_, l, r) => l.is_discrete() && r.is_discrete(),
        }
    }

    pub fn binary(op: Binary, l: Fun, r: Fun) -> Fun {
        Fun::Binary(op, Box::new(l), Box::new(r))
    }

    /// The one-op function this is, if any: `(relu x)` is `relu`.
    pub fn as_unary(&self) -> Option<&Unary> {
        match self {
            Fun::Unary(u, f) if **f == Fun::X => Some(u),
            _ => None,
        }
    }

    /// Whether the function is affine in `x` (no table needed: a leveled op computes it).
    pub fn is_affine(&self) -> bool {
        self.affine_coeffs().is_some()
    }

    /// `(a, b)` with `f(x) = a x + b` for an affine function, computed in f64.
    pub fn affine_coeffs(&self) -> Option<(f64, f64)> {
        if self.is_constant() {
            let v = f64::from(self.eval(0.0));
            return v.is_finite().then_some((0.0, v));
        }
        let (a, b) = self.affine_parts()?;
        (a.is_finite() && b.is_finite()).then_some((a, b))
    }

    /// `(a, b)` with `f(x) = a x + b` for every `x` in `[lo, hi]`, where the function's structure
    /// shows it: a piecewise-linear op on one of its pieces (relu, clip, leaky relu, abs, hard
    /// sigmoid, ...), a step (floor, round, sign, a comparison) where it does not step, and affine
    /// arithmetic on such parts. `None` when the structure does not say (sigmoid, a product of two
    /// non-constant parts, an interval across a kink). A table of such a function over an input
    /// known to stay in `[lo, hi]` is a leveled affine map.
    pub fn affine_on(&self, lo: f64, hi: f64) -> Option<(f64, f64)> {
        // NaN bounds or an empty interval say nothing.
        if lo.partial_cmp(&hi).is_none_or(|o| o == std::cmp::Ordering::Greater) {
            return None;
        }
        let (a, b) = match self {
            Fun::X => (1.0, 0.0),
            Fun::Const(c) => (0.0, f64::from(*c)),
            Fun::Unary(u, f) => {
                let (a, b) = f.affine_on(lo, hi)?;
                let (p, q) = image(a, b, lo, hi);
                let (c, d) = u.affine_on(p, q)?;
                (c * a, c * b + d)
            }
            Fun::Binary(op, l, r) => {
                let ((a, b), (c, d)) = (l.affine_on(lo, hi)?, r.affine_on(lo, hi)?);
                // l - r over the interval: which operand a max or min picks everywhere.
                let (p, q) = image(a - c, b - d, lo, hi);
                match op {
                    Binary::Add => (a + c, b + d),
                    Binary::Sub => (a - c, b - d),
                    Binary::Mul if a == 0.0 => (b * c, b * d),
                    Binary::Mul if c == 0.0 => (a * d, b * d),
                    Binary::Div if c == 0.0 && d != 0.0 => (a / d, b / d),
                    Binary::Max if p >= 0.0 => (a, b),
                    Binary::Max if q <= 0.0 => (c, d),
                    Binary::Min if q <= 0.0 => (a, b),
                    Binary::Min if p >= 0.0 => (c, d),
                    Binary::PRelu if c == 0.0 => {
                        let (p, q) = image(a, b, lo, hi);
                        if p >= 0.0 {
                            (a, b)
                        } else if q <= 0.0 {
                            (d * a, d * b)
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
        };
        (a.is_finite() && b.is_finite()).then_some((a, b))
    }

    fn affine_parts(&self) -> Option<(f64, f64)> {
        match self {
            Fun::X => Some((1.0, 0.0)),
            Fun::Const(c) => Some((0.0, f64::from(*c))),
            Fun::Unary(Unary::Neg, f) => f.affine_parts().map(|(a, b)| (-a, -b)),
            Fun::Unary(..) if self.is_constant() => Some((0.0, f64::from(self.eval(0.0)))),
            Fun::Unary(..) => None,
            Fun::Binary(op, l, r) => {
                let ((a, b), (c, d)) = (l.affine_parts()?, r.affine_parts()?);
                match op {
                    Binary::Add => Some((a + c, b + d)),
                    Binary::Sub => Some((a - c, b - d)),
                    Binary::Mul if a == 0.0 => Some((b * c, b * d)),
                    Binary::Mul if c == 0.0 => Some((a * d, b * d)),
                    Binary::Div if c == 0.0 => Some((a / d, b / d)),
                    _ => None,
                }
            }
        }
    }

    fn is_constant(&self) -> bool {
        match self {
            Fun::X => false,
            Fun::Const(_) => true,
            Fun::Unary(_, f) => f.is_constant(),
            Fun::Binary(_, l, r) => l.is_constant() && r.is_constant(),
        }
    }

    fn constant(&self) -> Option<f32> {
        self.is_constant().then(|| self.eval(0.0))
    }

    /// A structural bound on how the function varies (`Unknown` when the structure does not say).
    pub fn monotonicity(&self) -> Monotone {
        if self.is_constant() {
            return if self.eval(0.0).is_finite() { Monotone::Constant } else { Monotone::Unknown };
        }
        match self {
            Fun::X => Monotone::Increasing,
            Fun::Const(_) => Monotone::Constant,
            Fun::Unary(u, f) => Monotone::compose(u.monotonicity(), f.monotonicity()),
            Fun::Binary(Binary::Add, l, r) => Monotone::sum(l.monotonicity(), r.monotonicity()),
            Fun::Binary(Binary::Sub, l, r) => Monotone::sum(l.monotonicity(), r.monotonicity().flip()),
            Fun::Binary(Binary::Mul, l, r) => match (l.constant(), r.constant()) {
                (Some(c), None) => scaled(r.monotonicity(), c, false),
                (None, Some(c)) => scaled(l.monotonicity(), c, false),
                _ => Monotone::Unknown,
            },
            Fun::Binary(Binary::Div, l, r) => match r.constant() {
                Some(c) => scaled(l.monotonicity(), c, true),
                None => Monotone::Unknown,
            },
            // max and min of two non-decreasing (non-increasing) functions are non-decreasing (...).
            Fun::Binary(Binary::Max | Binary::Min, l, r) => Monotone::sum(l.monotonicity(), r.monotonicity()),
            Fun::Binary(Binary::PRelu, l, r) => match r.constant() {
                Some(c) if c >= 0.0 => l.monotonicity(),
                _ => Monotone::Unknown,
            },
        }
    }

    /// Exact simplifications (the result computes bit-identical values for every input):
    /// constant subtrees folded, `neg(neg e) = e`, idempotent `relu`/`abs`/`sign`/`floor`/`ceil`/`round`,
    /// `e * 1 = e / 1 = e + (-0) = e - (+0) = e`.
    pub fn simplify(&self) -> Fun {
        if self.is_constant() {
            return Fun::Const(self.eval(0.0));
        }
        match self {
            Fun::X | Fun::Const(_) => self.clone(),
            Fun::Unary(u, f) => {
                let f = f.simplify();
                match (u, &f) {
                    (Unary::Neg, Fun::Unary(Unary::Neg, inner)) => (**inner).clone(),
                    (
                        Unary::Relu | Unary::Abs | Unary::Sign | Unary::Floor | Unary::Ceil | Unary::Round,
                        Fun::Unary(v, _),
                    ) if v == u => f,
                    _ => Fun::Unary(u.clone(), Box::new(f)),
                }
            }
            Fun::Binary(b, l, r) => {
                let (l, r) = (l.simplify(), r.simplify());
                match (b, &l, &r) {
                    (Binary::Mul | Binary::Div, e, Fun::Const(c)) if *c == 1.0 => e.clone(),
                    (Binary::Mul, Fun::Const(c), e) if *c == 1.0 => e.clone(),
                    // Exact for every x, signed zeros included: x + (-0) = x - (+0) = x.
                    (Binary::Add, e, Fun::Const(c)) | (Binary::Add, Fun::Const(c), e)
                        if c.to_bits() == (-0.0f32).to_bits() =>
                    {
                        e.clone()
                    }
                    (Binary::Sub, e, Fun::Const(c)) if c.to_bits() == 0.0f32.to_bits() => e.clone(),
                    _ => Fun::binary(*b, l, r),
                }
            }
        }
    }

    /// Number of nodes of the expression.
    pub fn size(&self) -> usize {
        match self {
            Fun::X | Fun::Const(_) => 1,
            Fun::Unary(_, f) => 1 + f.size(),
            Fun::Binary(_, l, r) => 1 + l.size() + r.size(),
        }
    }
}

/// `m` scaled by `c` (multiplied, or divided when `divide`). Division by zero and infinite or NaN
/// factors make infinities and NaNs, not a constant.
fn scaled(m: Monotone, c: f32, divide: bool) -> Monotone {
    if !c.is_finite() || (divide && c == 0.0) {
        Monotone::Unknown
    } else if c > 0.0 {
        m
    } else if c < 0.0 {
        m.flip()
    } else {
        Monotone::Constant
    }
}

/// The range of `a x + b` over `x` in `[lo, hi]`.
fn image(a: f64, b: f64, lo: f64, hi: f64) -> (f64, f64) {
    let (u, v) = (a * lo + b, a * hi + b);
    if a == 0.0 { (b, b) } else { (u.min(v), u.max(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each piecewise-linear op on each of its pieces, a step where it does not step, and
    /// compositions; `None` across a kink and for smooth functions. Every answer is checked against
    /// the function at 101 points of the interval.
    #[test]
    fn affine_on_finds_the_linear_piece_an_interval_lies_on() {
        type Case = (&'static str, f64, f64, Option<(f64, f64)>);
        let cases: [Case; 19] = [
            ("(relu x)", 0.5, 3.0, Some((1.0, 0.0))),
            ("(relu x)", -3.0, 0.0, Some((0.0, 0.0))),
            ("(relu x)", -1.0, 1.0, None),
            ("(leaky_relu{alpha=0.1} x)", -4.0, -1.0, Some((0.1f32 as f64, 0.0))),
            ("(abs x)", -2.0, -1.0, Some((-1.0, 0.0))),
            ("(clip{min=0.0,max=6.0} x)", 0.0, 6.0, Some((1.0, 0.0))),
            ("(clip{min=0.0,max=6.0} x)", 7.0, 9.0, Some((0.0, 6.0))),
            ("(clip{min=0.0,max=6.0} x)", 5.0, 7.0, None),
            ("(hard_sigmoid{alpha=0.2,beta=0.5} x)", -2.0, 2.0, Some((0.2f32 as f64, 0.5))),
            ("(hard_sigmoid{alpha=0.2,beta=0.5} x)", 3.0, 5.0, Some((0.0, 1.0))),
            ("(floor x)", 2.1, 2.9, Some((0.0, 2.0))),
            ("(floor x)", 2.5, 3.5, None),
            ("(compare{cmp=gt,than=0.0} x)", 0.5, 2.0, Some((0.0, 1.0))),
            ("(compare{cmp=eq,than=1.0} x)", 2.0, 3.0, Some((0.0, 0.0))),
            // relu(2x - 1) on [1, 3]: 2x - 1 lies in [1, 5].
            ("(relu (sub (mul x 2.0) 1.0))", 1.0, 3.0, Some((2.0, -1.0))),
            // relu(-x) + x on [-3, -1]: relu(-x) = -x there, so 0.
            ("(add (relu (neg x)) x)", -3.0, -1.0, Some((0.0, 0.0))),
            ("(max x 1.0)", 2.0, 4.0, Some((1.0, 0.0))),
            ("(sigmoid x)", 0.0, 1.0, None),
            ("(mul x (relu x))", 1.0, 2.0, None),
        ];
        for (text, lo, hi, want) in cases {
            let f = Fun::parse(text).unwrap();
            let got = f.affine_on(lo, hi);
            assert_eq!(got, want, "{text} on [{lo}, {hi}]");
            if let Some((a, b)) = got {
                for i in 0..=100 {
                    let x = lo + (hi - lo) * f64::from(i) / 100.0;
                    let (y, z) = (f64::from(f.eval(x as f32)), a * x + b);
                    assert!((y - z).abs() <= 1e-5 * (1.0 + y.abs()), "{text} at {x}: {y} vs {z}");
                }
            }
        }
    }

    #[test]
    fn equality_of_a_continuous_value_is_recognized() {
        for (text, continuous) in [
            ("(compare{cmp=eq,than=1.0} x)", true),
            ("(compare{cmp=eq,than=1.0} (add x 0.5))", true),
            ("(compare{cmp=eq,than=1.0} (add (compare{cmp=gt,than=0.0} x) (compare{cmp=lt,than=1.0} x)))", false),
            ("(compare{cmp=eq,than=2.0} (floor x))", false),
            ("(relu (compare{cmp=eq,than=2.0} (mul x 2.0)))", true),
            ("(compare{cmp=gt,than=1.0} x)", false),
        ] {
            assert_eq!(Fun::parse(text).unwrap().tests_equality_of_a_continuous_value(), continuous, "{text}");
        }
    }

    #[test]
    fn evaluation_and_composition_follow_the_ops() {
        let silu = Fun::parse("(mul x (sigmoid x))").unwrap();
        assert_eq!(silu.eval(2.0), 2.0 * Unary::Sigmoid.apply(2.0));
        let relu6 = Fun::parse("(clip{min=0.0,max=6.0} x)").unwrap().compose(&Fun::of_unary(&Unary::Relu));
        assert_eq!(relu6.to_string(), "(clip{min=0.0,max=6.0} (relu x))");
        assert_eq!(relu6.eval(7.5), 6.0);
    }

    #[test]
    fn simplification_is_exact() {
        for (text, want) in [
            ("(neg (neg (relu x)))", "(relu x)"),
            ("(relu (relu (add x -0.0)))", "(relu x)"),
            ("(reciprocal (add x 0.0))", "(reciprocal (add x 0.0))"),
            ("(mul (div x 1.0) (add 1.0 2.0))", "(mul x 3.0)"),
            ("(sigmoid (neg (neg x)))", "(sigmoid x)"),
        ] {
            let f = Fun::parse(text).unwrap();
            let s = f.simplify();
            assert_eq!(s.to_string(), want);
            for x in [-3.5f32, -0.25, -0.0, 0.0, 0.75, 9.0] {
                assert_eq!(f.eval(x).to_bits(), s.eval(x).to_bits(), "{text} at {x}");
            }
        }
    }

    #[test]
    fn monotonicity_is_structural() {
        let m = |t: &str| Fun::parse(t).unwrap().monotonicity();
        assert_eq!(m("(relu (add x 1.0))"), Monotone::Increasing);
        assert_eq!(m("(relu (mul x -2.0))"), Monotone::Decreasing);
        assert_eq!(m("(sigmoid (neg (tanh x)))"), Monotone::Decreasing);
        assert_eq!(m("(mul x (sigmoid x))"), Monotone::Unknown);
        assert_eq!(m("(add (relu x) (tanh x))"), Monotone::Increasing);
        assert_eq!(m("(sub (relu x) (tanh x))"), Monotone::Unknown);
        assert_eq!(m("(mul 2.0 3.0)"), Monotone::Constant);
        // Division by zero gives infinities of both signs: not a constant, not monotone.
        assert_eq!(m("(sub x (div x 0.0))"), Monotone::Unknown);
        assert_eq!(m("(add x (div 1.0 0.0))"), Monotone::Unknown);
        assert_eq!(Fun::parse("(add x (div 1.0 0.0))").unwrap().affine_coeffs(), None);
        assert_eq!(Fun::parse("(mul 2.0 3.0)").unwrap().affine_coeffs(), Some((0.0, 6.0)));
        assert!(Fun::parse("(div (add x 1.0) 2.0)").unwrap().is_affine());
        assert_eq!(Fun::parse("(div (add x 1.0) 2.0)").unwrap().affine_coeffs(), Some((0.5, 0.5)));
        assert_eq!(Fun::parse("(neg (sub 3.0 (mul x 2.0)))").unwrap().affine_coeffs(), Some((2.0, -3.0)));
        assert_eq!(Fun::parse("(relu x)").unwrap().affine_coeffs(), None);
        assert!(!Fun::parse("(mul x x)").unwrap().is_affine());
    }
}
