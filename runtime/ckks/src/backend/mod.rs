//! Encrypted evaluation of a [`Plan`] with poulpy (feature `poulpy`, nightly): the only module that
//! touches it, so that a poulpy release (whose API changes every minor version) touches one file.
//!
//! Batch-major packing: input element `i` of up to `slots` samples is one ciphertext, sample `s` in
//! slot `s`; every node of the plan is one ciphertext of the same slots. Affine maps are products by
//! constants and sums; polynomials go through poulpy's Chebyshev evaluation (baby-step giant-step,
//! minimal depth) on `[-1, 1]`, which the plan's affine maps already target.
//!
//! Parameters (see [`Plan::ring`]): ring degree 2^14 when the plan's bit budget fits, else
//! 2^15; ternary secrets of Hamming weight 1024, σ = 3.2, base 2^52 limbs on the NTT backend (within
//! `Module::max_base2k`, above which poulpy's FFT backend silently computes garbage). 128-bit
//! security is judged on the widest object under the secret, the relinearization key, against the
//! bounds poulpy's presets use (851 bits at 2^15, from the sparse-key estimator they cite; 426 at
//! 2^14 from the same table, under the HE standard's 438 for uniform ternary secrets).
//!
//! Feature-major packing ([`Packing::FeatureMajor`]): sample `s` of a ciphertext occupies slots
//! `s·block .. (s+1)·block`, one layer's values side by side; each layer is one ciphertext. The affine
//! maps between layers are block-diagonal matrices over the slots, evaluated by poulpy's
//! baby-step giant-step linear transformation from their diagonals (stored once per block period);
//! their rows past a layer's width are zero, so unused slots hold 0 (the middle of every window)
//! and never reach a result. Keys: one automorphism key per rotation the transformations use, and
//! no others ([`Server::galois_elements`]).
//!
//! Types keep the secret on the client: [`ClientKey`] holds the secret key; [`EvalKey`] holds only
//! the relinearization key, and [`Server::evaluate`] takes an `EvalKey`, never a `ClientKey`.

mod client;
mod files;
pub mod train;

pub use files::Role;

use crate::{BASE2K, CONST_BITS, CkksError, ClientLayout, LOG_DELTA, Packing, Plan, Ring, cheb};
use poulpy_ckks::api::{CKKSLinearTransformationOps, LinearTransformationPrepared};
use poulpy_ckks::encoding::{
    ckks_linear_transformation_encode_from_diagonals, ckks_linear_transformation_encode_tmp_bytes,
};
use poulpy_ckks::layouts::{
    CKKSCiphertextOwned, CKKSPlaintext, CKKSPlaintextOwned, CKKSPlaintextVecHostCodec, ComplexDiagonals,
};
use poulpy_ckks::polynomial::{Basis, Polynomial, SplitStrategy};
use poulpy_ckks::prelude::*;
use poulpy_core::api::{
    GLWEAutomorphismKeyPreparedFactory, GLWESecretPreparedFactory, GLWESecretSampling, GLWETensorKeyPreparedFactory,
};
use poulpy_core::layouts::prepared::{GLWEAutomorphismKeyPrepared, GLWESecretPrepared, GLWETensorKeyPrepared};
use poulpy_core::layouts::{
    Degree, Diagonals, GLWEAutomorphismKeyAlloc, GLWEAutomorphismKeyLayout, GLWELayout, GLWESecretAlloc,
    GLWETensorKeyAlloc, GLWETensorKeyLayout, LWEInfos, LinearTransformationStrategy, Rank,
};
use poulpy_core::{GLWEAutomorphismKeyEncryptSk, GLWENormalize, GLWETensorKeyEncryptSk, optimal_bsgs_giant_step};
use poulpy_cpu_portable::NTT4x30Portable;
use poulpy_hal::AlignedBuf;
use poulpy_hal::api::{ScratchOwnedAlloc, ScratchOwnedBorrow};
use poulpy_hal::layouts::{Backend, CyclotomicOrder, HostBytesBackend, Module, ScratchOwned, Standard};
use poulpy_hal::source::Source;
use rayon::prelude::*;
use std::collections::HashMap;

type BE = NTT4x30Portable;
type RotationKey = GLWEAutomorphismKeyPrepared<<BE as Backend>::OwnedBuf, BE>;
type Ct = CKKSCiphertextOwned<BE>;
type Pt = CKKSPlaintextOwned<BE>;
/// A polynomial prepared on the host for evaluation.
type Approx = PolynomialApproximation<CKKSPlaintext<AlignedBuf, i64, Standard>>;

/// Hamming weight of the ternary secret the security bounds assume.
const SECRET_WEIGHT: usize = 1024;
/// Integer bits decrypted outputs may use (|value| < 2^40).
const DECODE_BITS: usize = 40;

/// Integer bits (sign included, one spare) for values up to `max` in magnitude.
fn int_bits(max: f64) -> usize {
    max.max(1.0).log2().ceil() as usize + 2
}

fn glwe(p: &Ring) -> GLWELayout {
    GLWELayout { n: (1usize << p.log_n).into(), base2k: BASE2K.into(), k: p.k.into(), rank: Rank(1) }
}

fn tensor_key(p: &Ring) -> GLWETensorKeyLayout {
    GLWETensorKeyLayout {
        n: (1usize << p.log_n).into(),
        base2k: BASE2K.into(),
        k_aux: (BASE2K + p.log_n).into(),
        rank: Rank(1),
        k_digit: BASE2K.into(),
        dnum: p.k.div_ceil(BASE2K).into(),
    }
}

/// Automorphism (rotation) keys: the relinearization key's shape.
fn rotation_key(p: &Ring) -> GLWEAutomorphismKeyLayout {
    let t = tensor_key(p);
    GLWEAutomorphismKeyLayout {
        n: t.n,
        base2k: t.base2k,
        dnum: t.dnum,
        k_aux: t.k_aux,
        rank: t.rank,
        k_digit: t.k_digit,
    }
}

/// The bits a ciphertext's value occupies (scale plus remaining budget): results are allocated at
/// exactly the width an operation leaves.
fn width(ct: &Ct) -> usize {
    ct.log_delta() + ct.log_budget()
}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> CkksError {
    move |e| CkksError::Backend(format!("{what}: {e:?}"))
}

/// The polynomial of node `k`, prepared for evaluation.
fn approximation(coeffs: &[f64], host: &Module<HostBytesBackend>) -> Result<Approx, CkksError> {
    let meta = CoeffsMeta {
        k: (LOG_DELTA + int_bits(coeffs.iter().fold(0.0f64, |m, c| m.max(c.abs())))).into(),
        meta: GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 },
    };
    let p = Polynomial::new(Basis::Chebyshev, coeffs.to_vec()).with_interval(-1.0, 1.0);
    PolynomialApproximation::from_polynomial(&p, BASE2K.into(), meta, SplitStrategy::MinDepth, host)
        .map_err(err("preparing a polynomial"))
}

/// A ring and its scratch space, shared by client and server.
pub struct Context {
    pub params: Ring,
    module: Module<BE>,
    host: Module<HostBytesBackend>,
    scratch_bytes: usize,
}

/// The client's keys: the secret key (never leaves the client) and what encrypting needs.
pub struct ClientKey {
    /// The seed the secret was sampled from (what the key file holds, see `files`).
    seed: [u8; 32],
    sk: GLWESecretPrepared<<BE as Backend>::OwnedBuf, BE>,
}

/// The server's keys: relinearization and the rotations a plan needs, nothing secret.
pub struct EvalKey {
    tsk: GLWETensorKeyPrepared<<BE as Backend>::OwnedBuf, BE>,
    rotations: HashMap<i64, RotationKey>,
}

/// Samples under encryption (inputs, or outputs). Batch-major: one ciphertext per plan value, up to
/// `slots` samples. Feature-major: one ciphertext per `slots / block` samples, `values` per sample.
pub struct Batch {
    cts: Vec<Ct>,
    pub samples: usize,
    pub packing: Packing,
    block: usize,
    values: usize,
}

impl Batch {
    /// Bytes of the ciphertexts in memory.
    pub fn bytes(&self) -> usize {
        // Two polynomials of `size` limbs of `n` 8-byte coefficients.
        self.cts.iter().map(|c| 2 * c.size() * c.n().as_usize() * 8).sum()
    }
}

fn os_seed() -> Result<[u8; 32], CkksError> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(err("reading the system's randomness"))?;
    Ok(s)
}

impl Context {
    pub fn new(params: Ring) -> Result<Context, CkksError> {
        let n = 1usize << params.log_n;
        let module = Module::<BE>::new(n as u64);
        let limit = Module::<BE>::max_base2k(n, 2 * params.k.div_ceil(BASE2K), 64, true);
        if BASE2K > limit {
            return Err(CkksError::Backend(format!(
                "limb width {BASE2K} above the backend's exact limit {limit} at degree 2^{}",
                params.log_n
            )));
        }
        if params.key_bits() > Ring::bound(params.log_n) {
            return Err(CkksError::Backend(format!(
                "a {}-bit key at degree 2^{} is beyond the 128-bit bound",
                params.key_bits(),
                params.log_n
            )));
        }
        let host = Module::<HostBytesBackend>::new(n as u64);
        let ct = module.ckks_ciphertext_alloc_from_glwe_infos(&glwe(&params));
        let coeffs = CKKSLayout {
            glwe_layout: GLWELayout { n: n.into(), base2k: BASE2K.into(), k: (LOG_DELTA + 16).into(), rank: Rank(1) },
            meta: GLWEPlaintextMeta { scale: Scale::Log(LOG_DELTA), slots: SlotsKind::Real, log_sparsity: 0 },
        };
        let scratch_bytes = module
            .ckks_all_ops_with_atk_tmp_bytes(&ct, &coeffs, &tensor_key(&params), &rotation_key(&params))
            .max(CKKSEncodingHostOps::<BE, f64>::ckks_encoding_host_tmp_bytes(&module, params.slots()));
        Ok(Context { params, module, host, scratch_bytes })
    }

    fn scratch(&self, extra: usize) -> ScratchOwned<BE> {
        ScratchOwned::<BE>::alloc(self.scratch_bytes.max(extra))
    }

    /// A fresh secret key and the evaluation keys that go with it: relinearization, and a rotation
    /// key for each of `galois` (the elements [`Server::galois_elements`] lists, no others).
    pub fn keygen(&self, galois: &[i64]) -> Result<(ClientKey, EvalKey), CkksError> {
        let (client, eval) = self.keygen_with(galois, None)?;
        Ok((client, eval.expect("kept when not written")))
    }

    /// Samples the secret from a fresh seed and encrypts the evaluation keys under it. With `out`,
    /// each evaluation key is written there as it is made (see `files`) and none is kept.
    fn keygen_with(
        &self,
        galois: &[i64],
        out: Option<&mut dyn std::io::Write>,
    ) -> Result<(ClientKey, Option<EvalKey>), CkksError> {
        let seed = os_seed()?;
        let (mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?));
        let p = &self.params;
        let mut scratch = self.scratch(0);
        let raw = self.secret_from_seed(seed);
        let mut sk = self.module.glwe_secret_prepared_alloc_from_infos(&glwe(p));
        self.module.glwe_secret_prepare(&mut sk, &raw);
        if let Some(w) = out {
            // For a file: seed-compressed keys (the masks regenerated from a seed on reading).
            files::write_eval_key(self, w, &raw, galois)?;
            return Ok((ClientKey { seed, sk }, None));
        }
        // The relinearization key and the rotation keys are independent (at ring 2^15, seconds
        // each): one per worker, each rotation key from its own seeds.
        let tensor = || {
            let mut tsk_raw = self.module.glwe_tensor_key_alloc_from_infos(&tensor_key(p));
            self.module.glwe_tensor_key_encrypt_sk(&mut tsk_raw, &raw, &mut xe, &mut xa, &mut scratch.borrow());
            self.prepare_tensor_key(&tsk_raw)
        };
        let rotations = || {
            galois
                .par_iter()
                .map(|&g| {
                    let (mut xa, mut xe) = (Source::new(os_seed()?), Source::new(os_seed()?));
                    let mut scratch = self.scratch(0);
                    let mut raw_key = self.module.glwe_automorphism_key_alloc_from_infos(&rotation_key(p));
                    self.module.glwe_automorphism_key_encrypt_sk(
                        &mut raw_key,
                        g,
                        &raw,
                        &mut xe,
                        &mut xa,
                        &mut scratch.borrow(),
                    );
                    Ok((g, self.prepare_rotation_key(&raw_key)))
                })
                .collect::<Result<HashMap<_, _>, CkksError>>()
        };
        let (tsk, rotations) = rayon::join(tensor, rotations);
        let rotations = rotations?;
        Ok((ClientKey { seed, sk }, Some(EvalKey { tsk, rotations })))
    }

    /// The ternary secret of weight [`SECRET_WEIGHT`] that `seed` draws (poulpy's sampler, its
    /// stream of this seed).
    fn secret_from_seed(
        &self,
        seed: [u8; 32],
    ) -> poulpy_core::layouts::GLWESecret<<BE as Backend>::OwnedBuf, <BE as Backend>::ZnxWord> {
        let mut raw = self.module.glwe_secret_alloc_from_infos(&glwe(&self.params));
        self.module.glwe_secret_fill_ternary_hw(&mut raw, SECRET_WEIGHT, &mut Source::new(seed));
        raw
    }

    fn prepare_tensor_key(&self, raw: &files::RawTensorKey) -> GLWETensorKeyPrepared<<BE as Backend>::OwnedBuf, BE> {
        let mut scratch = self.scratch(0);
        let mut tsk = self.module.glwe_tensor_key_prepared_alloc_from_infos(&tensor_key(&self.params));
        self.module.glwe_tensor_key_prepare(&mut tsk, raw, &mut scratch.borrow());
        tsk
    }

    fn prepare_rotation_key(&self, raw: &files::RawRotationKey) -> RotationKey {
        let mut scratch = self.scratch(0);
        let mut key = self.module.glwe_automorphism_key_prepared_alloc_from_infos(&rotation_key(&self.params));
        self.module.glwe_automorphism_key_prepare(&mut key, raw, &mut scratch.borrow());
        key
    }
}

/// One layer under feature-major packing: its affine maps as one block-diagonal matrix over the
/// slots (by diagonals), the biases slot by slot, then the shared polynomial.
struct FeatureStage {
    /// Diagonals prepared once (resident), not per evaluation.
    matrix: LinearTransformationPrepared<BE>,
    bias: Vec<f64>,
    /// Integer bits the biases need.
    bias_bits: usize,
    poly: Option<Approx>,
    layer: String,
}

/// The server side: evaluates a plan on ciphertexts with an evaluation key.
pub struct Server<'a> {
    ctx: &'a Context,
    plan: &'a Plan,
    packing: Packing,
    polys: Vec<Approx>,
    /// Feature-major packing: the layers, and slots per sample.
    stages: Vec<FeatureStage>,
    block: usize,
    /// Scratch bytes a worker needs for any node (the polynomials' evaluation included).
    scratch_bytes: usize,
}

impl<'a> Server<'a> {
    pub fn new(ctx: &'a Context, plan: &'a Plan, packing: Packing) -> Result<Server<'a>, CkksError> {
        plan.validate()?;
        if packing == Packing::FeatureMajor {
            return Server::feature_major(ctx, plan);
        }
        let polys: Vec<Approx> =
            plan.nodes.iter().map(|n| approximation(&n.coeffs, &ctx.host)).collect::<Result<_, _>>()?;
        // The ring was chosen by `Plan::ring`'s count of the bits each polynomial consumes.
        for (k, (n, ap)) in plan.nodes.iter().zip(&polys).enumerate() {
            let planned = cheb::depth(n.degree()) as usize * LOG_DELTA;
            if ap.consumed_bits(LOG_DELTA) > planned {
                return Err(CkksError::Backend(format!(
                    "node {k} ({}): its polynomial consumes {} bits, {planned} were planned",
                    n.layer,
                    ap.consumed_bits(LOG_DELTA)
                )));
            }
        }
        let ct = ctx.module.ckks_ciphertext_alloc_from_glwe_infos(&glwe(&ctx.params));
        let scratch_bytes = polys
            .iter()
            .map(|ap| ctx.module.ckks_polynomial_approximation_eval_tmp_bytes(&ct, &ct, ap, &tensor_key(&ctx.params)))
            .max()
            .unwrap_or(0);
        Ok(Server { ctx, plan, packing, polys, stages: Vec::new(), block: 1, scratch_bytes })
    }

    /// Each layer's matrix encoded by its diagonals (each a period of `block` slots, the same in every
    /// sample's block), its biases and polynomial.
    fn feature_major(ctx: &'a Context, plan: &'a Plan) -> Result<Server<'a>, CkksError> {
        let layers = plan.layers()?;
        let slots = ctx.params.slots();
        layers.samples_per_ciphertext(ctx.params)?;
        let block = layers.block;
        let m = &ctx.module;
        let mut scratch = ctx.scratch(ckks_linear_transformation_encode_tmp_bytes::<BE, _, f64>(m, slots));
        let mut stages = Vec::with_capacity(layers.stages.len());
        let ct = m.ckks_ciphertext_alloc_from_glwe_infos(&glwe(&ctx.params));
        let mut scratch_bytes = 0;
        for (i, st) in layers.stages.iter().enumerate() {
            let diagonals = st.diagonal_values(block);
            let largest = diagonals.values().flatten().fold(0.0f64, |a, c| a.max(c.abs()));
            let indexes: Vec<i64> = diagonals.keys().map(|&d| d.rem_euclid(slots as i64)).collect();
            let (mut re, im) = (Diagonals::new(slots), Diagonals::new(slots));
            for (d, values) in diagonals {
                re.set(d, values);
            }
            let meta = CoeffsMeta {
                k: (CONST_BITS + int_bits(largest)).into(),
                meta: GLWEPlaintextMeta { scale: Scale::Log(CONST_BITS), slots: SlotsKind::Real, log_sparsity: 0 },
            };
            let strategy = LinearTransformationStrategy::Bsgs { giant_step: optimal_bsgs_giant_step(indexes, slots) };
            let matrix = ckks_linear_transformation_encode_from_diagonals(
                m,
                BASE2K.into(),
                meta,
                &ComplexDiagonals::new(re, im),
                strategy,
                false,
                &mut scratch.borrow(),
            )
            .map_err(|e| CkksError::Backend(format!("layer {i} ({}): encoding its matrix: {e:#}", st.layer)))?;
            let first = matrix
                .first_diagonal_plaintext()
                .ok_or_else(|| CkksError::Plan(format!("layer {i} ({}) has no weights", st.layer)))?;
            scratch_bytes = scratch_bytes.max(m.ckks_linear_transformation_eval_self_tmp_bytes(
                false,
                &ct,
                first,
                &matrix.index(),
                &tensor_key(&ctx.params),
                &rotation_key(&ctx.params),
            ));
            let mut prepared = LinearTransformationPrepared::<BE>::alloc_prepared_from_index(m, &matrix.index(), first);
            let mut prep_scratch = ctx.scratch(m.ckks_linear_transformation_rhs_prepare_tmp_bytes(first));
            m.ckks_linear_transformation_rhs_prepare(&mut prepared, &matrix, &mut prep_scratch.borrow())
                .map_err(|e| CkksError::Backend(format!("layer {i} ({}): preparing its matrix: {e:#}", st.layer)))?;
            let matrix = prepared;
            let poly = st.coeffs.as_deref().map(|c| approximation(c, &ctx.host)).transpose()?;
            if let Some(ap) = &poly {
                scratch_bytes = scratch_bytes.max(m.ckks_polynomial_approximation_eval_tmp_bytes(
                    &ct,
                    &ct,
                    ap,
                    &tensor_key(&ctx.params),
                ));
            }
            let mut bias = vec![0.0; slots];
            for chunk in bias.chunks_mut(block) {
                for (v, row) in chunk.iter_mut().zip(&st.rows) {
                    *v = row.bias;
                }
            }
            let bias_bits = int_bits(st.rows.iter().fold(0.0f64, |a, r| a.max(r.bias.abs())));
            stages.push(FeatureStage { matrix, bias, bias_bits, poly, layer: st.layer.clone() });
        }
        Ok(Server { ctx, plan, packing: Packing::FeatureMajor, polys: Vec::new(), stages, block, scratch_bytes })
    }

    /// The Galois elements of the rotations this server's evaluation uses: the keys to generate.
    pub fn galois_elements(&self) -> Vec<i64> {
        let order = self.ctx.module.cyclotomic_order();
        let mut all: Vec<i64> = self.stages.iter().flat_map(|s| s.matrix.galois_elements(order)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// One feature-major ciphertext through every layer.
    fn feature_major_one(&self, key: &EvalKey, x: &Ct, scratch: &mut ScratchOwned<BE>) -> Result<Ct, CkksError> {
        let m = &self.ctx.module;
        let slots = self.ctx.params.slots();
        let mut x = x.clone();
        for (i, st) in self.stages.iter().enumerate() {
            let at = |what: &'static str| {
                move |e: poulpy_ckks::CKKSError| CkksError::Backend(format!("layer {i} ({}): {what}: {e:?}", st.layer))
            };
            let mut t = m.ckks_ciphertext_alloc(BASE2K.into(), width(&x).saturating_sub(CONST_BITS).into());
            m.ckks_linear_transformation_eval_self_into(&mut t, &x, &st.matrix, &key.rotations, &mut scratch.borrow())
                .map_err(at("matrix-vector product"))?;
            let mut pt = m.ckks_plaintext_alloc_from_slots(
                m.ckks_max_slots(),
                BASE2K.into(),
                (t.log_delta() + st.bias_bits).into(),
            );
            pt.set_meta(GLWEPlaintextMeta {
                scale: Scale::Log(t.log_delta()),
                slots: SlotsKind::Real,
                log_sparsity: 0,
            });
            m.ckks_encode_slots_host_into(&mut pt, &st.bias, &vec![0.0; slots], &mut scratch.borrow())
                .map_err(at("encoding biases"))?;
            m.ckks_add_pt_vec_assign(&mut t, &pt, &mut scratch.borrow()).map_err(at("adding biases"))?;
            m.glwe_normalize_assign(&mut t, &mut scratch.borrow());
            x = match &st.poly {
                Some(ap) => {
                    let mut out = m.ckks_ciphertext_alloc(
                        BASE2K.into(),
                        width(&t).saturating_sub(ap.consumed_bits(t.log_delta())).into(),
                    );
                    m.ckks_polynomial_approximation_eval(&mut out, &t, ap, &key.tsk, &mut scratch.borrow())
                        .map_err(at("evaluating its polynomial"))?;
                    out
                }
                None => t,
            };
        }
        Ok(x)
    }

    /// `bias + Σ c · values[w]` into a new ciphertext.
    fn affine(
        &self,
        a: &crate::Affine,
        values: &[Option<&Ct>],
        scratch: &mut ScratchOwned<BE>,
    ) -> Result<Ct, CkksError> {
        let m = &self.ctx.module;
        let mut acc: Option<Ct> = None;
        for &(w, c) in &a.terms {
            let src = values[w as usize].expect("plans read earlier values only (validated)");
            let mut pt: Pt = m.ckks_plaintext_alloc(Degree(1), BASE2K.into(), (CONST_BITS + int_bits(c.abs())).into());
            pt.set_meta(GLWEPlaintextMeta { scale: Scale::Log(CONST_BITS), slots: SlotsKind::Real, log_sparsity: 0 });
            pt.encode_host_floats(&[c]).map_err(err("encoding a weight"))?;
            let mut term = m.ckks_ciphertext_alloc(BASE2K.into(), width(src).saturating_sub(CONST_BITS).into());
            m.ckks_mul_pt_const_into(&mut term, src, &pt, 0, &mut scratch.borrow())
                .map_err(err("multiplying by a weight"))?;
            match acc.as_mut() {
                None => acc = Some(term),
                Some(acc) => m.ckks_add_assign(acc, &term, &mut scratch.borrow()).map_err(err("adding"))?,
            }
        }
        let mut acc =
            acc.ok_or_else(|| CkksError::Plan("an affine map without terms (a constant) has no ciphertext".into()))?;
        if a.bias != 0.0 {
            let mut pt: Pt =
                m.ckks_plaintext_alloc(Degree(1), BASE2K.into(), (acc.log_delta() + int_bits(a.bias.abs())).into());
            pt.set_meta(GLWEPlaintextMeta {
                scale: Scale::Log(acc.log_delta()),
                slots: SlotsKind::Real,
                log_sparsity: 0,
            });
            pt.encode_host_floats(&[a.bias]).map_err(err("encoding a bias"))?;
            m.ckks_add_pt_const_assign(&mut acc, 0, &pt, 0, &mut scratch.borrow()).map_err(err("adding a bias"))?;
        }
        // Sums leave carries pending (poulpy marks the result non-canonical): resolved once here,
        // before the polynomial's products read it.
        m.glwe_normalize_assign(&mut acc, &mut scratch.borrow());
        Ok(acc)
    }

    /// Runs the plan on `inputs`; the result holds one ciphertext per plan output.
    pub fn evaluate(&self, key: &EvalKey, inputs: &Batch) -> Result<Batch, CkksError> {
        if inputs.packing != self.packing || (self.packing == Packing::FeatureMajor && inputs.block != self.block) {
            return Err(CkksError::Shape(format!(
                "inputs packed {} for a server evaluating {}",
                inputs.packing.name(),
                self.packing.name()
            )));
        }
        if self.packing == Packing::FeatureMajor {
            if inputs.values != self.plan.n_inputs {
                return Err(CkksError::Shape(format!(
                    "{} input values per sample for a plan of {}",
                    inputs.values, self.plan.n_inputs
                )));
            }
            // Ciphertexts are independent: one per worker.
            let cts = inputs
                .cts
                .par_iter()
                .map_init(
                    || self.ctx.scratch(self.scratch_bytes),
                    |scratch, ct| self.feature_major_one(key, ct, scratch),
                )
                .collect::<Result<_, _>>()?;
            return Ok(Batch {
                cts,
                samples: inputs.samples,
                packing: self.packing,
                block: self.block,
                values: self.plan.outputs.len(),
            });
        }
        if inputs.cts.len() != self.plan.n_inputs {
            return Err(CkksError::Shape(format!(
                "{} input ciphertexts for a plan of {} inputs",
                inputs.cts.len(),
                self.plan.n_inputs
            )));
        }
        let m = &self.ctx.module;
        let n_in = self.plan.n_inputs;
        // Nodes by level (one more than the deepest node they read): a level's nodes are
        // independent and run in parallel on the worker pool, each worker with its own scratch.
        let level = self.plan.longest_paths(0, |_| 1);
        let mut levels: Vec<Vec<usize>> = vec![Vec::new(); level.iter().copied().max().unwrap_or(0)];
        for k in 0..self.plan.nodes.len() {
            levels[level[n_in + k] - 1].push(k);
        }
        let mut values: Vec<Option<Ct>> = inputs.cts.iter().cloned().map(Some).collect();
        values.resize_with(n_in + self.plan.nodes.len(), || None);
        for nodes in &levels {
            let refs: Vec<Option<&Ct>> = values.iter().map(Option::as_ref).collect();
            let done: Vec<Ct> = nodes
                .par_iter()
                .map_init(
                    || self.ctx.scratch(self.scratch_bytes),
                    |scratch, &k| {
                        let (node, ap) = (&self.plan.nodes[k], &self.polys[k]);
                        let t = self.affine(&node.input, &refs, scratch)?;
                        let mut out = m.ckks_ciphertext_alloc(
                            BASE2K.into(),
                            width(&t).saturating_sub(ap.consumed_bits(t.log_delta())).into(),
                        );
                        m.ckks_polynomial_approximation_eval(&mut out, &t, ap, &key.tsk, &mut scratch.borrow())
                            .map_err(err("evaluating a polynomial"))?;
                        Ok(out)
                    },
                )
                .collect::<Result<_, CkksError>>()?;
            for (&k, ct) in nodes.iter().zip(done) {
                values[n_in + k] = Some(ct);
            }
        }
        let refs: Vec<Option<&Ct>> = values.iter().map(Option::as_ref).collect();
        let cts = self
            .plan
            .outputs
            .par_iter()
            .map_init(|| self.ctx.scratch(0), |scratch, o| self.affine(o, &refs, scratch))
            .collect::<Result<_, _>>()?;
        Ok(Batch { cts, samples: inputs.samples, packing: self.packing, block: 1, values: self.plan.outputs.len() })
    }
}
