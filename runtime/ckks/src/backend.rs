//! Encrypted evaluation of a [`Plan`] with poulpy (feature `poulpy`, nightly): the only module that
//! touches it, so that a poulpy release (whose API changes every minor version) touches one file.
//!
//! Batch-major packing: input element `i` of up to `slots` samples is one ciphertext, sample `s` in
//! slot `s`; every node of the plan is one ciphertext of the same slots. Affine maps are products by
//! constants and sums; polynomials go through poulpy's Chebyshev evaluation (baby-step giant-step,
//! minimal depth) on `[-1, 1]`, which the plan's affine maps already target.
//!
//! Parameters (see [`Params::for_plan`]): ring degree 2^14 when the plan's bit budget fits, else
//! 2^15; ternary secrets of Hamming weight 1024, σ = 3.2, base 2^52 limbs on the NTT backend (within
//! `Module::max_base2k`, above which poulpy's FFT backend silently computes garbage). 128-bit
//! security is judged on the widest object under the secret, the relinearization key, against the
//! bounds poulpy's presets use (851 bits at 2^15, from the sparse-key estimator they cite; 426 at
//! 2^14 from the same table, under the HE standard's 438 for uniform ternary secrets).
//!
//! Types keep the secret on the client: [`ClientKey`] holds the secret key; [`EvalKey`] holds only
//! the relinearization key, and [`Server::evaluate`] takes an `EvalKey`, never a `ClientKey`.

use crate::{CkksError, Plan};
use poulpy_ckks::layouts::{CKKSCiphertextOwned, CKKSPlaintext, CKKSPlaintextOwned, CKKSPlaintextVecHostCodec};
use poulpy_ckks::polynomial::{Basis, Polynomial, SplitStrategy};
use poulpy_ckks::prelude::*;
use poulpy_core::api::{GLWESecretPreparedFactory, GLWESecretSampling, GLWETensorKeyPreparedFactory};
use poulpy_core::layouts::prepared::{GLWESecretPrepared, GLWETensorKeyPrepared};
use poulpy_core::layouts::{Degree, GLWELayout, GLWESecretAlloc, GLWETensorKeyAlloc, GLWETensorKeyLayout, LWEInfos, Rank};
use poulpy_core::{GLWENormalize, GLWETensorKeyEncryptSk};
use poulpy_cpu_portable::NTT4x30Portable;
use poulpy_hal::api::{ScratchOwnedAlloc, ScratchOwnedBorrow};
use poulpy_hal::AlignedBuf;
use poulpy_hal::layouts::{Backend, HostBytesBackend, Module, ScratchOwned, Standard};
use poulpy_hal::source::Source;

type BE = NTT4x30Portable;
type Ct = CKKSCiphertextOwned<BE>;
type Pt = CKKSPlaintextOwned<BE>;
/// A polynomial prepared on the host for evaluation.
type Approx = PolynomialApproximation<CKKSPlaintext<AlignedBuf, i64, Standard>>;

/// Bits per limb: within `Module::<NTT4x30Portable>::max_base2k` (54 at 2^13..2^15, checked at setup).
const BASE2K: usize = 52;
/// Hamming weight of the ternary secret the security bounds assume.
const SECRET_WEIGHT: usize = 1024;
/// Scale of encrypted values (and of polynomial coefficients): 2^-30 resolution.
pub const LOG_DELTA: usize = 30;
/// Precision of the constants the affine maps multiply by (consumed by each such product).
pub const CONST_BITS: usize = 20;
/// Bits above the scale that intermediate values may use (|value| < 2^8): kept free at the top of
/// the modulus along the deepest path.
const HEADROOM: usize = 8;
/// Integer bits decrypted outputs may use (|value| < 2^40).
const DECODE_BITS: usize = 40;

/// Integer bits (sign included, one spare) for values up to `max` in magnitude.
fn int_bits(max: f64) -> usize {
    max.max(1.0).log2().ceil() as usize + 2
}

/// A ring degree and the ciphertext width the security bound allows there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub log_n: usize,
    /// Bits of a fresh ciphertext's modulus.
    pub k: usize,
}

impl Params {
    /// The 128-bit bound on the widest modulus under the secret (bits), see the module docs.
    fn bound(log_n: usize) -> usize {
        match log_n {
            14 => 426,
            15 => 851,
            _ => 0,
        }
    }

    /// The widest ciphertext whose relinearization key stays within the bound: the key is
    /// `ceil(k / BASE2K)` digits of `BASE2K` bits plus `BASE2K + log_n` auxiliary bits.
    fn at(log_n: usize) -> Params {
        let limbs = (Params::bound(log_n) - BASE2K - log_n) / BASE2K;
        Params { log_n, k: limbs * BASE2K }
    }

    pub fn slots(&self) -> usize {
        1 << (self.log_n - 1)
    }

    fn glwe(&self) -> GLWELayout {
        GLWELayout { n: (1usize << self.log_n).into(), base2k: BASE2K.into(), k: self.k.into(), rank: Rank(1) }
    }

    fn tensor_key(&self) -> GLWETensorKeyLayout {
        GLWETensorKeyLayout {
            n: (1usize << self.log_n).into(),
            base2k: BASE2K.into(),
            k_aux: (BASE2K + self.log_n).into(),
            rank: Rank(1),
            k_digit: BASE2K.into(),
            dnum: self.k.div_ceil(BASE2K).into(),
        }
    }

    /// The smallest ring whose fresh ciphertexts hold the plan's deepest path: `bits` (see
    /// [`bits_needed`]) plus the final scale and headroom. Errors name the node that does not fit.
    pub fn for_plan(plan: &Plan) -> Result<Params, CkksError> {
        let (need, at) = bits_needed(plan)?;
        let total = need + LOG_DELTA + HEADROOM;
        [14, 15].into_iter().map(Params::at).find(|p| p.k >= total).ok_or_else(|| {
            CkksError::Plan(format!(
                "the circuit needs {total} bits of modulus along its deepest path (ending at {at}), more than the {} a 128-bit ring of degree 2^15 holds without bootstrapping: lower the polynomial degree or split the model",
                Params::at(15).k
            ))
        })
    }
}

/// The bits a ciphertext's value occupies (scale plus remaining budget): results are allocated at
/// exactly the width an operation leaves, never wider, so that no stale high bits ride along.
fn width(ct: &Ct) -> usize {
    ct.log_delta() + ct.log_budget()
}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> CkksError {
    move |e| CkksError::Backend(format!("{what}: {e:?}"))
}

/// The polynomial of node `k`, prepared for evaluation.
fn approximation(coeffs: &[f64], host: &Module<HostBytesBackend>) -> Result<Approx, CkksError> {
    let meta = CoeffsMeta { k: (LOG_DELTA + int_bits(coeffs.iter().fold(0.0f64, |m, c| m.max(c.abs())))).into(), meta: GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 } };
    let p = Polynomial::new(Basis::Chebyshev, coeffs.to_vec()).with_interval(-1.0, 1.0);
    PolynomialApproximation::from_polynomial(&p, BASE2K.into(), meta, SplitStrategy::MinDepth, host).map_err(err("preparing a polynomial"))
}

/// Bits of modulus consumed along the plan's deepest path (before the final scale), and where that
/// path ends.
pub fn bits_needed(plan: &Plan) -> Result<(usize, String), CkksError> {
    let host = Module::<HostBytesBackend>::new(1 << 14);
    let mut used = vec![0usize; plan.n_inputs];
    for n in &plan.nodes {
        let input = n.input.terms.iter().map(|&(w, _)| used[w as usize]).max().unwrap_or(0) + if n.input.terms.is_empty() { 0 } else { CONST_BITS };
        let poly = approximation(&n.coeffs, &host)?.consumed_bits(LOG_DELTA);
        used.push(input + poly);
    }
    let mut deepest = (0, String::from("an input"));
    for (k, o) in plan.outputs.iter().enumerate() {
        let (d, w) = o.terms.iter().map(|&(w, _)| (used[w as usize], w)).max().unwrap_or((0, 0));
        if d + CONST_BITS > deepest.0 {
            let node = (w as usize).checked_sub(plan.n_inputs).map_or("an input".to_string(), |j| format!("node {j} ({})", plan.nodes[j].layer));
            deepest = (d + CONST_BITS, format!("output {k}, through {node}"));
        }
    }
    Ok(deepest)
}

/// A ring and its scratch space, shared by client and server.
pub struct Context {
    pub params: Params,
    module: Module<BE>,
    host: Module<HostBytesBackend>,
    scratch_bytes: usize,
}

/// The client's keys: the secret key (never leaves the client) and what encrypting needs.
pub struct ClientKey {
    sk: GLWESecretPrepared<<BE as Backend>::OwnedBuf, BE>,
}

/// The server's key: relinearization only, nothing secret.
pub struct EvalKey {
    tsk: GLWETensorKeyPrepared<<BE as Backend>::OwnedBuf, BE>,
}

/// Ciphertexts of up to `slots` samples, one per plan value (inputs, or outputs).
pub struct Batch {
    cts: Vec<Ct>,
    pub samples: usize,
}

impl Batch {
    /// Each ciphertext's scale and remaining budget, in bits.
    pub fn budgets(&self) -> Vec<(usize, usize)> {
        self.cts.iter().map(|c| (c.log_delta(), c.log_budget())).collect()
    }

    /// Bytes of the ciphertexts in memory.
    pub fn bytes(&self) -> usize {
        self.cts.iter().map(|c| (1usize << 1) * c.size() * c.n().as_usize() * 8).sum()
    }
}

fn os_seed() -> Result<[u8; 32], CkksError> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(err("reading the system's randomness"))?;
    Ok(s)
}

impl Context {
    pub fn new(params: Params) -> Result<Context, CkksError> {
        let n = 1usize << params.log_n;
        let module = Module::<BE>::new(n as u64);
        let limit = Module::<BE>::max_base2k(n, 2 * params.k.div_ceil(BASE2K), 64, true);
        if BASE2K > limit {
            return Err(CkksError::Backend(format!("limb width {BASE2K} above the backend's exact limit {limit} at degree 2^{}", params.log_n)));
        }
        let tsk_bits = params.k.div_ceil(BASE2K) * BASE2K + BASE2K + params.log_n;
        if tsk_bits > Params::bound(params.log_n) {
            return Err(CkksError::Backend(format!("a {tsk_bits}-bit key at degree 2^{} is beyond the 128-bit bound", params.log_n)));
        }
        let host = Module::<HostBytesBackend>::new(n as u64);
        let ct = module.ckks_ciphertext_alloc_from_glwe_infos(&params.glwe());
        let coeffs = CKKSLayout {
            glwe_layout: GLWELayout { n: n.into(), base2k: BASE2K.into(), k: (LOG_DELTA + 16).into(), rank: Rank(1) },
            meta: GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 },
        };
        let scratch_bytes = module.ckks_all_ops_tmp_bytes(&ct, &coeffs, &params.tensor_key()).max(CKKSEncodingHostOps::<BE, f64>::ckks_encoding_host_tmp_bytes(&module, params.slots()));
        Ok(Context { params, module, host, scratch_bytes })
    }

    fn scratch(&self, extra: usize) -> ScratchOwned<BE> {
        ScratchOwned::<BE>::alloc(self.scratch_bytes.max(extra))
    }

    /// A fresh secret key and the evaluation key that goes with it.
    pub fn keygen(&self) -> Result<(ClientKey, EvalKey), CkksError> {
        let (mut xs, mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?), Source::new(os_seed()?));
        let p = &self.params;
        let mut scratch = self.scratch(0);
        let mut raw = self.module.glwe_secret_alloc_from_infos(&p.glwe());
        self.module.glwe_secret_fill_ternary_hw(&mut raw, SECRET_WEIGHT, &mut xs);
        let mut sk = self.module.glwe_secret_prepared_alloc_from_infos(&p.glwe());
        self.module.glwe_secret_prepare(&mut sk, &raw);
        let mut tsk_raw = self.module.glwe_tensor_key_alloc_from_infos(&p.tensor_key());
        self.module.glwe_tensor_key_encrypt_sk(&mut tsk_raw, &raw, &mut xe, &mut xa, &mut scratch.borrow());
        let mut tsk = self.module.glwe_tensor_key_prepared_alloc_from_infos(&p.tensor_key());
        self.module.glwe_tensor_key_prepare(&mut tsk, &tsk_raw, &mut scratch.borrow());
        Ok((ClientKey { sk }, EvalKey { tsk }))
    }

    /// Encrypts `samples` (each the plan's input values, already clamped) batch-major.
    pub fn encrypt(&self, key: &ClientKey, plan: &Plan, samples: &[Vec<f64>]) -> Result<Batch, CkksError> {
        let slots = self.params.slots();
        if samples.len() > slots {
            return Err(CkksError::Shape(format!("{} samples for {slots} slots", samples.len())));
        }
        if let Some(s) = samples.iter().position(|s| s.len() != plan.n_inputs) {
            return Err(CkksError::Shape(format!("sample {s} has {} values; the plan takes {}", samples[s].len(), plan.n_inputs)));
        }
        let (mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?));
        let mut scratch = self.scratch(0);
        let im = vec![0.0; slots];
        let mut cts = Vec::with_capacity(plan.n_inputs);
        for (i, &(lo, hi)) in plan.input_box.iter().enumerate() {
            // Unused slots repeat the first sample: every slot goes through the polynomials, and a
            // slot far outside their windows (a zero below an input's box) would diverge and, through
            // the encoding's transform, spoil every other slot.
            let pad = samples.first().map_or((lo + hi) / 2.0, |s| s[i]).clamp(lo, hi);
            let mut re = vec![pad; slots];
            for (r, s) in re.iter_mut().zip(samples) {
                *r = s[i].clamp(lo, hi);
            }
            let mut pt = self.module.ckks_plaintext_alloc_from_slots(self.module.ckks_max_slots(), BASE2K.into(), (LOG_DELTA + int_bits(lo.abs().max(hi.abs()))).into());
            pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 });
            self.module.ckks_encode_slots_host_into(&mut pt, &re, &im, &mut scratch.borrow()).map_err(err("encoding"))?;
            let mut ct = self.module.ckks_ciphertext_alloc(BASE2K.into(), self.params.k.into());
            self.module.ckks_encrypt_sk(&mut ct, &pt, &key.sk, &mut xe, &mut xa, &mut scratch.borrow()).map_err(err("encrypting"))?;
            cts.push(ct);
        }
        Ok(Batch { cts, samples: samples.len() })
    }

    /// Decrypts the plan's outputs: per sample, one value per output.
    pub fn decrypt(&self, key: &ClientKey, outputs: &Batch) -> Result<Vec<Vec<f64>>, CkksError> {
        let slots = self.params.slots();
        let mut scratch = self.scratch(0);
        let mut per_output = Vec::with_capacity(outputs.cts.len());
        for ct in &outputs.cts {
            // Host decoding takes at most 127 bits: the scale plus the integer bits outputs may use.
            let head = ct.log_budget().min(DECODE_BITS);
            let mut pt = self.module.ckks_plaintext_alloc_from_slots(self.module.ckks_max_slots(), BASE2K.into(), (ct.log_delta() + head).into());
            pt.set_meta(ct.meta());
            self.module.ckks_decrypt(&mut pt, ct, &key.sk, &mut scratch.borrow()).map_err(err("decrypting"))?;
            let (mut re, mut im) = (vec![0.0; slots], vec![0.0; slots]);
            self.module.ckks_decode_slots_host_into(&pt, &mut re, &mut im, &mut scratch.borrow()).map_err(err("decoding"))?;
            per_output.push(re);
        }
        Ok((0..outputs.samples).map(|s| per_output.iter().map(|o| o[s]).collect()).collect())
    }
}

/// The server side: evaluates a plan on ciphertexts with an evaluation key.
pub struct Server<'a> {
    ctx: &'a Context,
    plan: &'a Plan,
    polys: Vec<Approx>,
}

impl<'a> Server<'a> {
    pub fn new(ctx: &'a Context, plan: &'a Plan) -> Result<Server<'a>, CkksError> {
        plan.validate()?;
        let polys = plan.nodes.iter().map(|n| approximation(&n.coeffs, &ctx.host)).collect::<Result<_, _>>()?;
        Ok(Server { ctx, plan, polys })
    }

    /// `bias + Σ c · values[w]` into a new ciphertext.
    fn affine(&self, a: &crate::Affine, values: &[&Ct], scratch: &mut ScratchOwned<BE>) -> Result<Ct, CkksError> {
        let m = &self.ctx.module;
        let mut acc: Option<Ct> = None;
        for &(w, c) in &a.terms {
            let src = values[w as usize];
            let mut pt: Pt = m.ckks_plaintext_alloc(Degree(1), BASE2K.into(), (CONST_BITS + int_bits(c.abs())).into());
            pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(CONST_BITS), slots: SlotsKind::Real, log_sparsity: 0 });
            pt.encode_host_floats(&[c]).map_err(err("encoding a weight"))?;
            let mut term = m.ckks_ciphertext_alloc(BASE2K.into(), width(src).saturating_sub(CONST_BITS).into());
            m.ckks_mul_pt_const_into(&mut term, src, &pt, 0, &mut scratch.borrow()).map_err(err("multiplying by a weight"))?;
            match acc.as_mut() {
                None => acc = Some(term),
                Some(acc) => m.ckks_add_assign(acc, &term, &mut scratch.borrow()).map_err(err("adding"))?,
            }
        }
        let mut acc = acc.ok_or_else(|| CkksError::Plan("an affine map without terms (a constant) has no ciphertext".into()))?;
        if a.bias != 0.0 {
            let mut pt: Pt = m.ckks_plaintext_alloc(Degree(1), BASE2K.into(), (acc.log_delta() + int_bits(a.bias.abs())).into());
            pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(acc.log_delta()), slots: SlotsKind::Real, log_sparsity: 0 });
            pt.encode_host_floats(&[a.bias]).map_err(err("encoding a bias"))?;
            m.ckks_add_pt_const_assign(&mut acc, 0, &pt, 0, &mut scratch.borrow()).map_err(err("adding a bias"))?;
        }
        // Sums leave limbs unnormalized (carries pending); the polynomial evaluation needs them
        // normalized, or it computes garbage from wide sums.
        m.glwe_normalize_assign(&mut acc, &mut scratch.borrow());
        Ok(acc)
    }

    /// Runs the plan on `inputs`; the result holds one ciphertext per plan output.
    pub fn evaluate(&self, key: &EvalKey, inputs: &Batch) -> Result<Batch, CkksError> {
        self.run(key, inputs, false)
    }

    /// Every value of the plan (inputs, then nodes), for diagnosing where a result departs from
    /// the simulation.
    pub fn evaluate_all(&self, key: &EvalKey, inputs: &Batch) -> Result<Batch, CkksError> {
        self.run(key, inputs, true)
    }

    fn run(&self, key: &EvalKey, inputs: &Batch, all: bool) -> Result<Batch, CkksError> {
        if inputs.cts.len() != self.plan.n_inputs {
            return Err(CkksError::Shape(format!("{} input ciphertexts for a plan of {} inputs", inputs.cts.len(), self.plan.n_inputs)));
        }
        let m = &self.ctx.module;
        let extra = self.polys.iter().map(|ap| {
            let ct = m.ckks_ciphertext_alloc_from_glwe_infos(&self.ctx.params.glwe());
            m.ckks_polynomial_approximation_eval_tmp_bytes(&ct, &ct, ap, &self.ctx.params.tensor_key())
        }).max().unwrap_or(0);
        let mut scratch = self.ctx.scratch(extra);
        let mut values: Vec<Ct> = Vec::with_capacity(self.plan.n_inputs + self.plan.nodes.len());
        values.extend(inputs.cts.iter().cloned());
        for (node, ap) in self.plan.nodes.iter().zip(&self.polys) {
            let refs: Vec<&Ct> = values.iter().collect();
            let t = self.affine(&node.input, &refs, &mut scratch)?;
            let mut out = m.ckks_ciphertext_alloc(BASE2K.into(), width(&t).saturating_sub(ap.consumed_bits(t.log_delta())).into());
            m.ckks_polynomial_approximation_eval(&mut out, &t, ap, &key.tsk, &mut scratch.borrow()).map_err(err("evaluating a polynomial"))?;
            values.push(out);
        }
        if all {
            return Ok(Batch { cts: values, samples: inputs.samples });
        }
        let refs: Vec<&Ct> = values.iter().collect();
        let cts = self.plan.outputs.iter().map(|o| self.affine(o, &refs, &mut scratch)).collect::<Result<_, _>>()?;
        Ok(Batch { cts, samples: inputs.samples })
    }
}
