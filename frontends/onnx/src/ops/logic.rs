//! Comparisons, boolean logic and Where. fhec holds booleans as 0/1: integers in constants (shape
//! computations fold), f32 in computed values.
//!
//! Under FHE, a comparison of a computed value with a constant is one table per element (a step), and
//! so is a comparison of two computed values (the step of their difference, which is leveled). Equal
//! of a computed value is refused by the FHE lowering (a table reads its input approximately), unless
//! the value is itself made of steps (booleans). Not,
//! and And/Or/Xor with a constant operand, are affine: free. And/Or/Xor of two computed booleans are
//! one table of their sum. `Where(c, x, y)` is `c x + (1 - c) y`: leveled when the condition or both
//! branches are constants, else a product of encrypted values.

use super::constant::{Zipped, const_zip};
use crate::ctx::{Ctx, Val};
use fhec_ir::{Binary, Cmp, DType, Fun, Op, Tensor, Unary};

fn bools(shape: Vec<usize>, v: impl Iterator<Item = bool>) -> Val {
    Val::constant(Tensor::from_i64(shape, v.map(i64::from).collect()).expect("sized"))
}

/// Both operands constant: the broadcast values.
fn both_const(ctx: &Ctx) -> Option<Zipped> {
    match (ctx.opt_input(0), ctx.opt_input(1)) {
        (Ok(Some(a)), Ok(Some(b))) if a.as_const().is_some() && b.as_const().is_some() => const_zip(ctx, 0, 1).ok(),
        _ => None,
    }
}

/// A computed operand must be a float tensor (fhec computes no integers at run time).
fn computed_float(ctx: &Ctx, v: &Val, what: &str) -> Result<(), String> {
    if v.as_const().is_none() && ctx.ty(v).dtype != DType::F32 {
        return Err(format!("{what} of a computed {} tensor is not supported", ctx.ty(v).dtype));
    }
    Ok(())
}

fn scalar(v: &Val) -> Option<f32> {
    v.as_const().filter(|t| t.shape().iter().product::<usize>() == 1).map(|t| t.to_f32_vec()[0])
}

/// Greater, GreaterOrEqual, Less, LessOrEqual, Equal.
pub fn compare(ctx: &mut Ctx, cmp: Cmp) -> Result<Vec<Val>, String> {
    if let Some((shape, a, b)) = both_const(ctx) {
        return Ok(vec![bools(shape, a.iter().zip(&b).map(|(&x, &y)| cmp.holds(x, y)))]);
    }
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    computed_float(ctx, &a, "a comparison")?;
    computed_float(ctx, &b, "a comparison")?;
    let (x, cmp, than) = match (scalar(&b), scalar(&a)) {
        (Some(c), _) if a.as_const().is_none() && ctx.shape(&a).len() >= ctx.shape(&b).len() => (a, cmp, c),
        (_, Some(c)) if b.as_const().is_none() && ctx.shape(&b).len() >= ctx.shape(&a).len() => (b, cmp.flipped(), c),
        _ => (ctx.binary(Binary::Sub, &a, &b)?, cmp, 0.0),
    };
    Ok(vec![ctx.op(Op::Unary(Unary::Compare { cmp, than }), &[x])?])
}

pub fn not(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let x = ctx.input(0)?;
    if let Some(t) = x.as_const() {
        return Ok(vec![bools(t.shape().to_vec(), t.to_f32_vec().into_iter().map(|v| v == 0.0))]);
    }
    computed_float(ctx, &x, "Not")?;
    let one = Ctx::f32_const(vec![], vec![1.0]);
    Ok(vec![ctx.binary(Binary::Sub, &one, &x)?])
}

#[derive(Clone, Copy)]
pub enum Logic {
    And,
    Or,
    Xor,
}

pub fn logic(ctx: &mut Ctx, op: Logic) -> Result<Vec<Val>, String> {
    let truth = |a: bool, b: bool| match op {
        Logic::And => a && b,
        Logic::Or => a || b,
        Logic::Xor => a != b,
    };
    if let Some((shape, a, b)) = both_const(ctx) {
        return Ok(vec![bools(shape, a.iter().zip(&b).map(|(&x, &y)| truth(x != 0.0, y != 0.0)))]);
    }
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    computed_float(ctx, &a, "boolean logic")?;
    computed_float(ctx, &b, "boolean logic")?;
    let (x, c) = match (a.as_const(), b.as_const()) {
        (None, Some(t)) => (a.clone(), t),
        (Some(t), None) => (b.clone(), t),
        _ => {
            // Two computed booleans: one table of their sum s (0, 1 or 2), with thresholds halfway
            // between (the table reads s approximately): And is s > 1.5, Or s > 0.5, Xor both s > 0.5
            // and not s > 1.5.
            let sum = ctx.binary(Binary::Add, &a, &b)?;
            let above = |than| Fun::Unary(Unary::Compare { cmp: Cmp::Greater, than }, Box::new(Fun::X));
            let f = match op {
                Logic::And => Unary::Compare { cmp: Cmp::Greater, than: 1.5 },
                Logic::Or => Unary::Compare { cmp: Cmp::Greater, than: 0.5 },
                Logic::Xor => Unary::Fused(Box::new(Fun::binary(Binary::Sub, above(0.5), above(1.5)))),
            };
            return Ok(vec![ctx.op(Op::Unary(f), &[sum])?]);
        }
    };
    // One constant operand c (0/1): And = x c, Or = x (1 - c) + c, Xor = x (1 - 2c) + c; affine.
    let c = Val::constant(
        Tensor::from_f32(
            c.shape().to_vec(),
            c.to_f32_vec().into_iter().map(|v| if v != 0.0 { 1.0 } else { 0.0 }).collect(),
        )
        .expect("sized"),
    );
    let one = Ctx::f32_const(vec![], vec![1.0]);
    let y = match op {
        Logic::And => ctx.binary(Binary::Mul, &x, &c)?,
        Logic::Or => {
            let k = ctx.binary(Binary::Sub, &one, &c)?;
            let xk = ctx.binary(Binary::Mul, &x, &k)?;
            ctx.binary(Binary::Add, &xk, &c)?
        }
        Logic::Xor => {
            let two_c = ctx.binary(Binary::Add, &c, &c)?;
            let k = ctx.binary(Binary::Sub, &one, &two_c)?;
            let xk = ctx.binary(Binary::Mul, &x, &k)?;
            ctx.binary(Binary::Add, &xk, &c)?
        }
    };
    Ok(vec![y])
}

/// Where(condition, x, y). All constant: picked at compile time. Otherwise `c x + (1 - c) y` (or
/// `y + c (x - y)`, one product, when both are computed), which needs finite constants (an infinite
/// `x` or `y` would give NaN where it is not picked).
pub fn where_(ctx: &mut Ctx) -> Result<Vec<Val>, String> {
    let (c, x, y) = (ctx.input(0)?, ctx.input(1)?, ctx.input(2)?);
    if let (Some(cond), Some(_), Some(_)) = (c.as_const(), x.as_const(), y.as_const()) {
        let (shape, xv, yv) = const_zip(ctx, 1, 2)?;
        let full =
            fhec_ir::broadcast_shapes(cond.shape(), &shape).ok_or("the condition does not broadcast with x and y")?;
        let cv = crate::ctx::broadcast_to(&cond.to_i64_vec(), cond.shape(), &full);
        let (xv, yv) = (crate::ctx::broadcast_to(&xv, &shape, &full), crate::ctx::broadcast_to(&yv, &shape, &full));
        let pick: Vec<f64> =
            cv.iter().zip(xv.iter().zip(&yv)).map(|(&c, (&x, &y))| if c != 0 { x } else { y }).collect();
        let t = if ctx.ty(&x).dtype == DType::I64 {
            Tensor::from_i64(full, pick.iter().map(|&v| v as i64).collect())
        } else {
            Tensor::from_f32(full, pick.iter().map(|&v| v as f32).collect())
        };
        return Ok(vec![Val::constant(t.expect("sized"))]);
    }
    for (v, what) in [(&x, "x"), (&y, "y")] {
        computed_float(ctx, v, "Where")?;
        if v.as_const().is_some_and(|t| t.to_f32_vec().iter().any(|f| !f.is_finite())) {
            return Err(format!(
                "Where with a computed operand and an infinite or NaN constant {what} is not supported"
            ));
        }
    }
    computed_float(ctx, &c, "Where")?;
    if x.as_const().is_none() && y.as_const().is_none() {
        // Both computed: one product of encrypted values.
        let diff = ctx.binary(Binary::Sub, &x, &y)?;
        let picked = ctx.binary(Binary::Mul, &c, &diff)?;
        return Ok(vec![ctx.binary(Binary::Add, &y, &picked)?]);
    }
    // c x + (1 - c) y: exact for c in {0, 1} whatever the magnitudes (y + c (x - y) would lose x next
    // to a large constant y, such as an attention mask's -1e9).
    let one = Ctx::f32_const(vec![], vec![1.0]);
    let not_c = ctx.binary(Binary::Sub, &one, &c)?;
    let cx = ctx.binary(Binary::Mul, &c, &x)?;
    let ny = ctx.binary(Binary::Mul, &not_c, &y)?;
    Ok(vec![ctx.binary(Binary::Add, &cx, &ny)?])
}
