//! Training under encryption: the slot program of [`crate::train`] on poulpy ciphertexts. The
//! data owner encrypts the packed rows, the targets and the starting weights
//! ([`Context::encrypt_training`]); the server runs rounds of iterations with the evaluation key
//! only ([`Trainer`]); the data owner decrypts the weights, and between rounds refreshes them
//! ([`Context::refresh`]): the weights are the only values it decrypts and encrypts again.

use super::*;
use crate::train::sum_stages;
use crate::train::{Data, Slots, State, TrainPlan};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A ciphertext of the training program: rows, targets, or weights.
pub struct Cipher(pub(super) Ct);

impl Cipher {
    /// Bytes in memory.
    pub fn bytes(&self) -> usize {
        2 * self.0.size() * self.0.n().as_usize() * 8
    }

    /// Bits of budget left.
    pub fn budget(&self) -> usize {
        self.0.log_budget()
    }
}

/// Galois elements of the rotations training uses ([`TrainPlan::shifts`]): the keys to generate.
pub fn train_galois_elements(ctx: &Context, plan: &TrainPlan) -> Vec<i64> {
    let mut all: Vec<i64> = plan.shifts().into_iter().map(|k| ctx.module.ckks_galois_element(k)).collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn check_ring(ctx: &Context, plan: &TrainPlan) -> Result<(), CkksError> {
    if ctx.params != plan.ring {
        return Err(CkksError::Shape(format!(
            "a training plan for ring 2^{} in a context of ring 2^{}",
            plan.ring.log_n, ctx.params.log_n
        )));
    }
    Ok(())
}

impl Context {
    /// Encrypts one vector of slot values whose magnitudes stay below `max`.
    pub(super) fn encrypt_slots(&self, key: &ClientKey, re: &[f64], max: f64) -> Result<Ct, CkksError> {
        let (mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?));
        let mut scratch = self.scratch(0);
        let mut pt = self.module.ckks_plaintext_alloc_from_slots(
            self.module.ckks_max_slots(),
            BASE2K.into(),
            (LOG_DELTA + int_bits(max)).into(),
        );
        pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 });
        self.module
            .ckks_encode_slots_host_into(&mut pt, re, &vec![0.0; re.len()], &mut scratch.borrow())
            .map_err(err("encoding"))?;
        let mut ct = self.module.ckks_ciphertext_alloc(BASE2K.into(), self.params.k.into());
        self.module
            .ckks_encrypt_sk(&mut ct, &pt, &key.sk, &mut xe, &mut xa, &mut scratch.borrow())
            .map_err(err("encrypting"))?;
        Ok(ct)
    }

    /// Decrypts one ciphertext's slots.
    pub(super) fn decrypt_slots(&self, key: &ClientKey, ct: &Ct) -> Result<Vec<f64>, CkksError> {
        let slots = self.params.slots();
        let mut scratch = self.scratch(0);
        // Host decoding takes at most 127 bits: the scale plus the integer bits values may use.
        let head = ct.log_budget().min(DECODE_BITS);
        let mut pt = self.module.ckks_plaintext_alloc_from_slots(
            self.module.ckks_max_slots(),
            BASE2K.into(),
            (ct.log_delta() + head).into(),
        );
        pt.set_meta(ct.meta());
        self.module.ckks_decrypt(&mut pt, ct, &key.sk, &mut scratch.borrow()).map_err(err("decrypting"))?;
        let (mut re, mut im) = (vec![0.0; slots], vec![0.0; slots]);
        self.module
            .ckks_decode_slots_host_into(&pt, &mut re, &mut im, &mut scratch.borrow())
            .map_err(err("decoding"))?;
        Ok(re)
    }

    /// The data owner's side: the training set (`x` already scaled, `y` the labels or targets)
    /// packed as `plan` says and encrypted, and the starting weights (zero).
    pub fn encrypt_training(
        &self,
        key: &ClientKey,
        plan: &TrainPlan,
        x: &[Vec<f64>],
        y: &[f64],
    ) -> Result<(Data<Cipher>, State<Cipher>), CkksError> {
        check_ring(self, plan)?;
        let rows = plan.pack_rows(x, y)?;
        let largest = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let data = Data {
            rows: Cipher(self.encrypt_slots(key, &rows, largest(&rows))?),
            targets: match plan.hyper.task {
                crate::train::Task::Linear => {
                    let t = plan.pack_targets(y);
                    Some(Cipher(self.encrypt_slots(key, &t, largest(&t))?))
                }
                crate::train::Task::Logistic => None,
            },
        };
        let state = self.encrypt_weights(key, plan, &vec![0.0; plan.columns], &vec![0.0; plan.columns])?;
        Ok((data, state))
    }

    fn encrypt_weights(
        &self,
        key: &ClientKey,
        plan: &TrainPlan,
        w: &[f64],
        v: &[f64],
    ) -> Result<State<Cipher>, CkksError> {
        let big = w.iter().chain(v).fold(0.0f64, |m, x| m.max(x.abs()));
        Ok(State {
            w: Cipher(self.encrypt_slots(key, &plan.pack_weights(w), big)?),
            v: Cipher(self.encrypt_slots(key, &plan.pack_weights(v), big)?),
        })
    }

    /// The data owner's side: the weights `w` (bias first) of a state.
    pub fn decrypt_weights(
        &self,
        key: &ClientKey,
        plan: &TrainPlan,
        state: &State<Cipher>,
    ) -> Result<Vec<f64>, CkksError> {
        Ok(plan.unpack_weights(&self.decrypt_slots(key, &state.w.0)?))
    }

    /// The data owner's side of an interactive refresh: both vectors of the state decrypted (their
    /// first block) and encrypted again at full budget. Nothing else is decrypted.
    pub fn refresh(
        &self,
        key: &ClientKey,
        plan: &TrainPlan,
        state: &State<Cipher>,
    ) -> Result<State<Cipher>, CkksError> {
        check_ring(self, plan)?;
        let w = plan.unpack_weights(&self.decrypt_slots(key, &state.w.0)?);
        let v = plan.unpack_weights(&self.decrypt_slots(key, &state.v.0)?);
        self.encrypt_weights(key, plan, &w, &v)
    }
}

impl Context {
    /// Writes a training set and its starting weights (one file: what the data owner uploads).
    pub fn write_training(
        &self,
        data: &Data<Cipher>,
        state: &State<Cipher>,
        w: &mut dyn std::io::Write,
    ) -> Result<(), CkksError> {
        let mut cts = vec![&data.rows.0];
        cts.extend(data.targets.as_ref().map(|t| &t.0));
        cts.extend([&state.w.0, &state.v.0]);
        self.write_cts(&cts, w)
    }

    /// Reads what [`Context::write_training`] wrote, for `plan`: every ciphertext fresh.
    pub fn read_training(
        &self,
        plan: &TrainPlan,
        r: &mut dyn std::io::Read,
    ) -> Result<(Data<Cipher>, State<Cipher>), CkksError> {
        check_ring(self, plan)?;
        // The rows, the targets (linear regression), then `w` and `v`.
        let count = 1 + usize::from(plan.hyper.task == crate::train::Task::Linear) + 2;
        let mut cts = self.read_cts(r, count, true)?.into_iter().map(Cipher);
        let mut next = || cts.next().expect("counted");
        let rows = next();
        let targets = (plan.hyper.task == crate::train::Task::Linear).then(&mut next);
        let (w, v) = (next(), next());
        Ok((Data { rows, targets }, State { w, v }))
    }

    /// Writes weights between rounds.
    pub fn write_state(&self, state: &State<Cipher>, w: &mut dyn std::io::Write) -> Result<(), CkksError> {
        self.write_cts(&[&state.w.0, &state.v.0], w)
    }

    /// Reads weights between rounds (`fresh`: as the data owner refreshed them).
    pub fn read_state(
        &self,
        plan: &TrainPlan,
        r: &mut dyn std::io::Read,
        fresh: bool,
    ) -> Result<State<Cipher>, CkksError> {
        check_ring(self, plan)?;
        let mut cts = self.read_cts(r, 2, fresh)?.into_iter().map(Cipher);
        let (w, v) = (cts.next().expect("counted"), cts.next().expect("counted"));
        Ok(State { w, v })
    }
}

/// The server's side: the training program's operations on ciphertexts, with the evaluation key.
pub struct Trainer<'a> {
    ctx: &'a Context,
    key: &'a EvalKey,
    plan: &'a TrainPlan,
    /// Scratch space, one per worker at a time (the gradient's two products run in parallel).
    scratch: Mutex<Vec<ScratchOwned<BE>>>,
    scratch_bytes: usize,
    /// The link polynomial, prepared once (its coefficients are the same every iteration).
    sigmoid: Option<Approx>,
    /// Set by the caller to stop the round at its next product or rotation ([`CkksError::Stopped`]).
    stop: Option<&'a AtomicBool>,
}

impl<'a> Trainer<'a> {
    pub fn new(ctx: &'a Context, key: &'a EvalKey, plan: &'a TrainPlan) -> Result<Trainer<'a>, CkksError> {
        check_ring(ctx, plan)?;
        if let Some(g) = train_galois_elements(ctx, plan).into_iter().find(|g| !key.rotations.contains_key(g)) {
            return Err(CkksError::Shape(format!(
                "the evaluation key has no rotation key for Galois element {g}, which this training uses: it was made \
                 for another plan"
            )));
        }
        let ct = ctx.module.ckks_ciphertext_alloc_from_glwe_infos(&glwe(&ctx.params));
        let mut bytes = ctx.scratch_bytes.max(ctx.module.ckks_rotate_tmp_bytes(&ct, &rotation_key(&ctx.params)));
        let mut sigmoid = None;
        if !plan.sigmoid.is_empty() {
            let ap = approximation(&plan.sigmoid_link(), &ctx.host)?;
            bytes = bytes.max(ctx.module.ckks_polynomial_approximation_eval_tmp_bytes(
                &ct,
                &ct,
                &ap,
                &tensor_key(&ctx.params),
            ));
            let planned = cheb::depth(plan.hyper.degree) as usize * LOG_DELTA;
            if ap.consumed_bits(LOG_DELTA) > planned {
                return Err(CkksError::Backend(format!(
                    "the sigmoid's polynomial consumes {} bits, {planned} were planned",
                    ap.consumed_bits(LOG_DELTA)
                )));
            }
            sigmoid = Some(ap);
        }
        Ok(Trainer { ctx, key, plan, scratch: Mutex::new(Vec::new()), scratch_bytes: bytes, sigmoid, stop: None })
    }

    /// Stops a round at its next product or rotation once `flag` is set: the round then fails with
    /// [`CkksError::Stopped`] (its input state is unchanged, and the round can be run again).
    pub fn stop_on(mut self, flag: &'a AtomicBool) -> Trainer<'a> {
        self.stop = Some(flag);
        self
    }

    fn check_stop(&self) -> Result<(), CkksError> {
        match self.stop {
            Some(f) if f.load(Ordering::Relaxed) => Err(CkksError::Stopped),
            _ => Ok(()),
        }
    }

    /// Iterations `range` (at most one round) on `state`, calling `progress` after each.
    pub fn round(
        &self,
        data: &Data<Cipher>,
        state: State<Cipher>,
        range: std::ops::Range<usize>,
        progress: impl FnMut(usize),
    ) -> Result<State<Cipher>, CkksError> {
        if range.len() > self.plan.per_round {
            return Err(CkksError::Plan(format!(
                "{} iterations in one round; the budget carries {}",
                range.len(),
                self.plan.per_round
            )));
        }
        self.plan.run(self, data, state, range, progress)
    }

    /// Runs `f` with a scratch space of its own.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut ScratchOwned<BE>) -> T) -> T {
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| self.ctx.scratch(self.scratch_bytes));
        let out = f(&mut scratch);
        self.scratch.lock().unwrap_or_else(|p| p.into_inner()).push(scratch);
        out
    }

    fn alloc(&self, k: usize) -> Ct {
        self.ctx.module.ckks_ciphertext_alloc(BASE2K.into(), k.into())
    }

    /// A sum or difference of `a` and `b` (`op`), at the narrower width, carries resolved.
    fn combine(
        &self,
        a: &Cipher,
        b: &Cipher,
        what: &'static str,
        op: impl FnOnce(&Module<BE>, &mut Ct, &mut poulpy_hal::layouts::ScratchArena<'_, BE>) -> poulpy_ckks::CKKSResult<()>,
    ) -> Result<Cipher, CkksError> {
        let m = &self.ctx.module;
        let mut out = self.alloc(width(&a.0).min(width(&b.0)));
        self.with_scratch(|s| {
            op(m, &mut out, &mut s.borrow()).map_err(err(what))?;
            m.glwe_normalize_assign(&mut out, &mut s.borrow());
            Ok(Cipher(out))
        })
    }

    fn rotated(&self, a: &Ct, k: usize) -> Result<Ct, CkksError> {
        self.check_stop()?;
        let mut out = self.alloc(width(a));
        self.with_scratch(|s| {
            self.ctx.module.ckks_rotate_into(k as i64, &mut out, a, &self.key.rotations, &mut s.borrow())
        })
        .map_err(err("rotating"))?;
        Ok(out)
    }
}

impl Slots for Trainer<'_> {
    type V = Cipher;

    fn mul(&self, a: &Cipher, b: &Cipher) -> Result<Cipher, CkksError> {
        self.check_stop()?;
        let mut out = self.alloc(width(&a.0).min(width(&b.0)).saturating_sub(LOG_DELTA));
        self.with_scratch(|s| self.ctx.module.ckks_mul_into(&mut out, &a.0, &b.0, &self.key.tsk, &mut s.borrow()))
            .map_err(err("multiplying ciphertexts"))?;
        Ok(Cipher(out))
    }

    /// `a · c`, `c` encoded with 20 significant bits whatever its magnitude.
    fn mul_const(&self, a: &Cipher, c: f64) -> Result<Cipher, CkksError> {
        let m = &self.ctx.module;
        if c == 0.0 || !c.is_finite() {
            return Err(CkksError::Plan(format!("a product by the constant {c}")));
        }
        // Small constants get more fractional bits (at most 30 more), so that each keeps 20 bits.
        let bits = CONST_BITS + (-c.abs().log2().floor()).clamp(0.0, 30.0) as usize;
        let mut pt: Pt = m.ckks_plaintext_alloc(Degree(1), BASE2K.into(), (bits + int_bits(c.abs())).into());
        pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(bits), slots: SlotsKind::Real, log_sparsity: 0 });
        pt.encode_host_floats(&[c]).map_err(err("encoding a constant"))?;
        let mut out = self.alloc(width(&a.0).saturating_sub(bits));
        self.with_scratch(|s| m.ckks_mul_pt_const_into(&mut out, &a.0, &pt, 0, &mut s.borrow()))
            .map_err(err("multiplying by a constant"))?;
        Ok(Cipher(out))
    }

    fn mul_vec(&self, a: &Cipher, v: &[f64]) -> Result<Cipher, CkksError> {
        let m = &self.ctx.module;
        let largest = v.iter().fold(0.0f64, |x, y| x.max(y.abs()));
        let mut pt = m.ckks_plaintext_alloc_from_slots(
            m.ckks_max_slots(),
            BASE2K.into(),
            (CONST_BITS + int_bits(largest)).into(),
        );
        pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(CONST_BITS), slots: SlotsKind::Real, log_sparsity: 0 });
        let mut out = self.alloc(width(&a.0).saturating_sub(CONST_BITS));
        self.with_scratch(|s| {
            m.ckks_encode_slots_host_into(&mut pt, v, &vec![0.0; v.len()], &mut s.borrow())
                .map_err(err("encoding a vector of constants"))?;
            m.ckks_mul_pt_vec_into(&mut out, &a.0, &pt, &mut s.borrow())
                .map_err(err("multiplying by a vector of constants"))
        })?;
        Ok(Cipher(out))
    }

    fn add(&self, a: &Cipher, b: &Cipher) -> Result<Cipher, CkksError> {
        self.combine(a, b, "adding", |m, out, s| m.ckks_add_into(out, &a.0, &b.0, s))
    }

    fn sub(&self, a: &Cipher, b: &Cipher) -> Result<Cipher, CkksError> {
        self.combine(a, b, "subtracting", |m, out, s| m.ckks_sub_into(out, &a.0, &b.0, s))
    }

    fn rotate(&self, a: &Cipher, k: usize) -> Result<Cipher, CkksError> {
        Ok(Cipher(self.rotated(&a.0, k)?))
    }

    /// By stages ([`sum_stages`]): a stage of radix `r` and shift `d` is Horner's
    /// `b = a + rot(b, d)`, `r − 1` times, which is `Σ_{j<r} rot(a, j·d)` from one key.
    fn inner_sum(&self, a: &Cipher, log_batch: usize, log_count: usize) -> Result<Cipher, CkksError> {
        let mut acc = a.0.clone();
        for (shift, radix) in sum_stages(log_batch, log_count) {
            let stage_in = acc.clone();
            for _ in 1..radix {
                let r = self.rotated(&acc, shift)?;
                acc = self.add(&Cipher(stage_in.clone()), &Cipher(r))?.0;
            }
        }
        Ok(Cipher(acc))
    }

    fn poly(&self, a: &Cipher, coeffs: &[f64]) -> Result<Cipher, CkksError> {
        let ap = self
            .sigmoid
            .as_ref()
            .filter(|_| coeffs == self.plan.sigmoid_link().as_slice())
            .ok_or_else(|| CkksError::Plan("a polynomial other than the plan's sigmoid".into()))?;
        let mut out = self.alloc(width(&a.0).saturating_sub(ap.consumed_bits(a.0.log_delta())));
        self.with_scratch(|s| {
            self.ctx.module.ckks_polynomial_approximation_eval(&mut out, &a.0, ap, &self.key.tsk, &mut s.borrow())
        })
        .map_err(err("evaluating the sigmoid's polynomial"))?;
        Ok(Cipher(out))
    }

    fn join<A: Send, B: Send>(&self, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
        rayon::join(a, b)
    }
}
