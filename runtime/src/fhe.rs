//! Encrypted execution on tfhe-rs: the only module that touches tfhe.
//!
//! Parameters: one of the tfhe-rs sets in [`ParamSet`] (shipped by tfhe-rs, 128-bit security), chosen
//! per circuit by the compiler. The circuit's tables fill the bootstrap accumulator directly, one value
//! per coefficient, so a table has `N` positions at the cost of one bootstrap (see the backend notes).
//!
//! Keys are split by type: [`SecretKey`] (client) encrypts and decrypts; [`EvalKey`] (server) can only
//! evaluate. An `EvalKey` is built only from the bytes of a compressed evaluation key: no server-side
//! function accepts or can derive secret material. Every key records its parameter set; running a
//! circuit under a key of another set is an error.

use crate::RuntimeError;
use crate::batch::Batcher;
pub use crate::batch::MAX_BATCH;
use crate::circuit::{Affine, Circuit};
use crate::params::ParamSet;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::{
    CiphertextModulus, ContiguousEntityContainer, GlweSecretKey, LweCiphertextCount, LweCiphertextOwned, LweSize,
    MonomialDegree, PlaintextList, SeededGlweCiphertextOwned, SeededLweCiphertextListOwned, decrypt_lwe_ciphertext,
    encrypt_seeded_glwe_ciphertext, extract_lwe_sample_from_glwe_ciphertext, new_seeder,
    par_encrypt_seeded_lwe_ciphertext_list,
};
use tfhe::shortint::ciphertext::{Degree, NoiseLevel};
use tfhe::shortint::server_key::LookupTableOwned;
use tfhe::shortint::{AtomicPatternKind, Ciphertext, ClientKey, CompressedServerKey, PBSOrder, ServerKey};

/// The client's secret key. Never leaves the data owner.
#[derive(Serialize, Deserialize)]
pub struct SecretKey(ParamSet, ClientKey);

/// The evaluation key as it travels to the server (compressed, about 4x smaller than in memory).
#[derive(Serialize, Deserialize)]
pub struct CompressedEvalKey(ParamSet, CompressedServerKey);

/// The server's evaluation key: evaluates bootstraps, cannot decrypt.
pub struct EvalKey(ParamSet, ServerKey);

/// Client-to-server ciphertexts, seeded (masks are regenerated from a seed on the server), in one of
/// two packings:
/// - `List`: one LWE ciphertext per value, 8 bytes each plus one seed; encryption draws a mask of
///   `k N` words per value;
/// - `Packed`: the values are the coefficients of seeded GLWE ciphertexts (`N` values each), from
///   which the server extracts one LWE ciphertext per value (a copy, no noise). One mask per `N`
///   values: much faster to encrypt and expand, `8 N` bytes per ciphertext.
///
/// [`SecretKey::encrypt`] packs when that costs at most [`PACKED_BYTES_PER_VALUE`] per value.
#[derive(Serialize, Deserialize)]
pub enum InputCiphertexts {
    List(SeededLweCiphertextListOwned<u64>),
    Packed { glwe: Vec<SeededGlweCiphertextOwned<u64>>, count: usize },
}

/// Upload budget per value under which inputs are GLWE-packed (the project's target is 200 bytes).
pub const PACKED_BYTES_PER_VALUE: usize = 200;

/// Server-to-client ciphertexts.
#[derive(Serialize, Deserialize)]
pub struct OutputCiphertexts(Vec<LweCiphertextOwned<u64>>);

impl InputCiphertexts {
    pub fn len(&self) -> usize {
        match self {
            InputCiphertexts::List(l) => l.lwe_ciphertext_count().0,
            InputCiphertexts::Packed { count, .. } => *count,
        }
    }

    /// Checks that the ciphertexts are well-formed for an evaluation key whose ciphertexts have
    /// `lwe_size` (what decoding cannot: serde fills tfhe-rs's entities without their constructors'
    /// checks): the size the server works on, the native modulus, and packed ciphertexts whose
    /// bodies are as long as their polynomials and that hold at least the values announced.
    pub fn check(&self, lwe_size: usize) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Invalid(m));
        if let Some(size) = self.lwe_size().filter(|&s| s != lwe_size) {
            return bad(format!(
                "ciphertexts of LWE size {size} do not match the evaluation key ({lwe_size}): wrong key or corrupted input"
            ));
        }
        self.check_packing()
    }

    /// The part of [`Self::check`] that needs no key (and that [`Self::expand`] relies on): the
    /// native modulus, and packed ciphertexts of one shape whose bodies are as long as their
    /// polynomials and that hold at least the values announced.
    fn check_packing(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Invalid(m));
        match self {
            InputCiphertexts::List(l) => {
                if !l.ciphertext_modulus().is_native_modulus() {
                    return bad("ciphertexts with a non-native modulus: corrupted input".into());
                }
            }
            InputCiphertexts::Packed { glwe, count } => {
                let shape = |g: &SeededGlweCiphertextOwned<u64>| (g.glwe_size(), g.polynomial_size());
                if glwe.iter().any(|g| shape(g) != shape(&glwe[0])) {
                    return bad("packed ciphertexts of different sizes: corrupted input".into());
                }
                for (i, g) in glwe.iter().enumerate() {
                    let n = g.polynomial_size().0;
                    if !n.is_power_of_two() || g.as_ref().len() != n || !g.ciphertext_modulus().is_native_modulus() {
                        return bad(format!("packed ciphertext {i} is malformed: corrupted input"));
                    }
                }
                let capacity: usize = glwe.iter().map(|g| g.polynomial_size().0).sum();
                if capacity < *count {
                    return bad(format!("{count} values announced, the ciphertexts hold {capacity}"));
                }
            }
        }
        Ok(())
    }

    /// The LWE size of the ciphertexts the server works on.
    fn lwe_size(&self) -> Option<usize> {
        match self {
            InputCiphertexts::List(l) => Some(l.lwe_size().0),
            InputCiphertexts::Packed { glwe, .. } => glwe.first().map(|g| {
                g.glwe_size().to_glwe_dimension().to_equivalent_lwe_dimension(g.polynomial_size()).to_lwe_size().0
            }),
        }
    }

    /// Expands to one LWE ciphertext per value (regenerating the masks). Call [`Self::check`] first
    /// on ciphertexts from outside.
    pub fn expand(&self) -> Result<Vec<LweCiphertextOwned<u64>>, RuntimeError> {
        match self {
            InputCiphertexts::List(l) => Ok(l
                .clone()
                .par_decompress_into_lwe_ciphertext_list()
                .iter()
                .map(|ct| LweCiphertextOwned::from_container(ct.as_ref().to_vec(), ct.ciphertext_modulus()))
                .collect()),
            InputCiphertexts::Packed { glwe, count } => {
                self.check_packing()?;
                let glwe: Vec<_> = glwe.par_iter().map(|g| g.clone().decompress_into_glwe_ciphertext()).collect();
                let mut out = Vec::with_capacity(*count);
                for g in &glwe {
                    let size = g
                        .glwe_size()
                        .to_glwe_dimension()
                        .to_equivalent_lwe_dimension(g.polynomial_size())
                        .to_lwe_size();
                    for i in 0..g.polynomial_size().0.min(count - out.len()) {
                        let mut lwe = LweCiphertextOwned::new(0u64, size, g.ciphertext_modulus());
                        extract_lwe_sample_from_glwe_ciphertext(g, &mut lwe, MonomialDegree(i));
                        out.push(lwe);
                    }
                }
                Ok(out)
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OutputCiphertexts {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Generates a fresh secret key and the matching compressed evaluation key for a parameter set.
pub fn keygen(params: ParamSet) -> (SecretKey, CompressedEvalKey) {
    let ck = ClientKey::new(params.tfhe());
    let ek = CompressedServerKey::new(&ck);
    (SecretKey(params, ck), CompressedEvalKey(params, ek))
}

fn check_params(circuit: &Circuit, key: ParamSet) -> Result<(), RuntimeError> {
    if circuit.params != key {
        return Err(RuntimeError::Invalid(format!(
            "the key is for parameter set {key}, the circuit was compiled for {}: generate keys for this model",
            circuit.params
        )));
    }
    Ok(())
}

impl CompressedEvalKey {
    /// Checks that the key is a well-formed key of its parameter set (tfhe-rs's conformance check:
    /// every dimension, modulus and level count), so that decoding, decompressing and evaluating it
    /// cannot fail or allocate beyond its set's size. Required of every key read from outside.
    pub fn check(&self) -> Result<(), RuntimeError> {
        use tfhe::conformance::ParameterSetConformant;
        let p = self.0.tfhe();
        let max_degree =
            tfhe::shortint::ciphertext::MaxDegree::from_msg_carry_modulus(p.message_modulus, p.carry_modulus);
        let expected = (tfhe::shortint::parameters::AtomicPatternParameters::from(p), max_degree);
        if self.1.is_conformant(&expected) {
            Ok(())
        } else {
            Err(RuntimeError::Invalid(format!(
                "the evaluation key does not conform to its parameter set {}: corrupted, or not made by fhec keygen",
                self.0
            )))
        }
    }

    /// Expands the key for evaluation (on the server).
    pub fn decompress(&self) -> EvalKey {
        EvalKey(self.0, self.1.decompress())
    }

    pub fn params(&self) -> ParamSet {
        self.0
    }
}

impl EvalKey {
    pub fn params(&self) -> ParamSet {
        self.0
    }
}

impl SecretKey {
    pub fn params(&self) -> ParamSet {
        self.0
    }

    /// Encrypts torus values (the circuit's encoded inputs) under the key's LWE secret (the GLWE key
    /// seen as an LWE key), packed when that fits the upload budget (see [`InputCiphertexts`]).
    pub fn encrypt(&self, values: &[i64]) -> InputCiphertexts {
        let (key, noise) = self.1.encryption_key_and_noise();
        let modulus = self.1.parameters().ciphertext_modulus();
        let n = self.0.positions();
        let mut seeder = new_seeder();
        let glwe_count = values.len().div_ceil(n);
        if !values.is_empty() && glwe_count * n * 8 <= values.len() * PACKED_BYTES_PER_VALUE {
            let glwe_key = GlweSecretKey::from_container(key.as_ref(), self.1.parameters().polynomial_size());
            let glwe = values
                .chunks(n)
                .map(|chunk| {
                    let mut plain = vec![0u64; n];
                    for (p, &v) in plain.iter_mut().zip(chunk) {
                        *p = v as u64;
                    }
                    let mut ct = SeededGlweCiphertextOwned::new(
                        0u64,
                        glwe_key.glwe_dimension().to_glwe_size(),
                        glwe_key.polynomial_size(),
                        seeder.seed().into(),
                        modulus,
                    );
                    encrypt_seeded_glwe_ciphertext(
                        &glwe_key,
                        &mut ct,
                        &PlaintextList::from_container(plain),
                        noise,
                        seeder.as_mut(),
                    );
                    ct
                })
                .collect();
            return InputCiphertexts::Packed { glwe, count: values.len() };
        }
        let mut list = SeededLweCiphertextListOwned::new(
            0u64,
            key.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            modulus,
        );
        let plain = PlaintextList::from_container(values.iter().map(|&v| v as u64).collect::<Vec<_>>());
        par_encrypt_seeded_lwe_ciphertext_list(&key, &mut list, &plain, noise, seeder.as_mut());
        InputCiphertexts::List(list)
    }

    /// Decrypts the server's results to torus values (the circuit's output accumulators plus noise).
    pub fn decrypt(&self, cts: &OutputCiphertexts) -> Vec<i64> {
        let key = self.1.encryption_key();
        cts.0.iter().map(|ct| decrypt_lwe_ciphertext(&key, ct).0 as i64).collect()
    }
}

impl EvalKey {
    fn lookup_table(&self, values: &[i64]) -> Result<LookupTableOwned, RuntimeError> {
        let mut lut = self.1.generate_lookup_table(|_| 0);
        let mut body = lut.acc.get_mut_body();
        let coefs = body.as_mut();
        let positions = self.0.positions();
        if coefs.len() != positions || values.len() != positions {
            return Err(RuntimeError::Invalid(format!(
                "the key's polynomial size is {}, the table has {}",
                coefs.len(),
                values.len()
            )));
        }
        // Position p in [0, N/2) reads coefficient p; p in [-N/2, 0) reads coefficient p + N negated.
        let half = positions / 2;
        for (q, &v) in values.iter().enumerate() {
            if q >= half {
                coefs[q - half] = v as u64;
            } else {
                coefs[q + half] = v.wrapping_neg() as u64;
            }
        }
        Ok(lut)
    }

    fn wrap(&self, ct: LweCiphertextOwned<u64>) -> Ciphertext {
        let p = self.1.message_modulus;
        Ciphertext::new(
            ct,
            Degree::new(0),
            NoiseLevel::NOMINAL,
            p,
            self.1.carry_modulus,
            AtomicPatternKind::Standard(PBSOrder::KeyswitchBootstrap),
        )
    }
}

/// `bias + sum(weight * wire)` over ciphertexts, `wire` giving each operand.
fn affine<'w>(
    a: &Affine,
    wire: impl Fn(usize) -> &'w LweCiphertextOwned<u64>,
    size: LweSize,
    modulus: CiphertextModulus<u64>,
) -> LweCiphertextOwned<u64> {
    let mut acc = LweCiphertextOwned::new(0u64, size, modulus);
    for &(w, c) in &a.terms {
        slice_wrapping_add_scalar_mul_assign(acc.as_mut(), wire(w as usize).as_ref(), c as u64);
    }
    let body = acc.get_mut_body().data;
    *body = body.wrapping_add(a.bias as u64);
    acc
}

/// One batch in flight: inputs, bootstrap outputs as they complete, and how many operands each
/// bootstrap of each sample still waits for.
struct Dataflow<'a> {
    circuit: &'a Circuit,
    key: &'a EvalKey,
    tables: Vec<LookupTableOwned>,
    /// Per sample, its input ciphertexts.
    inputs: Vec<Vec<LweCiphertextOwned<u64>>>,
    /// `samples x bootstraps`, each set once.
    outputs: Vec<OnceLock<LweCiphertextOwned<u64>>>,
    pending: Vec<AtomicUsize>,
    /// For each bootstrap, the bootstraps that read its output.
    readers: Vec<Vec<usize>>,
    size: LweSize,
    modulus: CiphertextModulus<u64>,
    /// Added to every bootstrap input (see `run_batch`).
    shift: u64,
    /// `(sample, bootstrap)` pairs whose operands are all done, waiting for a worker.
    ready: Mutex<Vec<(usize, usize)>>,
    /// Batch bootstraps, where the key's parameter set has them.
    batcher: Option<Batcher<'a>>,
    threads: usize,
}

impl<'a> Dataflow<'a> {
    fn wire(&self, s: usize, w: usize) -> &LweCiphertextOwned<u64> {
        let n = self.circuit.n_inputs;
        if w < n {
            &self.inputs[s][w]
        } else {
            self.outputs[s * self.circuit.pbs.len() + w - n].get().expect("a bootstrap runs after its operands")
        }
    }

    /// Queues bootstrap `k` of sample `s`, whose operands are all done, and spawns a worker task for it.
    fn schedule<'s>(&'s self, scope: &rayon::Scope<'s>, s: usize, k: usize) {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).push((s, k));
        scope.spawn(move |scope| self.drain(scope));
    }

    /// Takes a batch of ready bootstraps (its share of the queue, at most [`MAX_BATCH`]: none if other
    /// tasks took them all), runs it, then schedules every reader whose last operand was in it.
    fn drain<'s>(&'s self, scope: &rayon::Scope<'s>) {
        let batch = {
            let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            let take = if self.batcher.is_some() { ready.len().div_ceil(self.threads).clamp(1, MAX_BATCH) } else { 1 };
            let from = ready.len().saturating_sub(take);
            ready.split_off(from)
        };
        if batch.is_empty() {
            return;
        }
        let inputs: Vec<LweCiphertextOwned<u64>> = batch
            .iter()
            .map(|&(s, k)| {
                let mut acc = affine(&self.circuit.pbs[k].input, |w| self.wire(s, w), self.size, self.modulus);
                let body = acc.get_mut_body().data;
                *body = body.wrapping_add(self.shift);
                acc
            })
            .collect();
        let tables: Vec<&LookupTableOwned> =
            batch.iter().map(|&(_, k)| &self.tables[self.circuit.pbs[k].table as usize]).collect();
        let outputs = match &self.batcher {
            Some(b) if batch.len() > 1 => b.bootstrap(&inputs, &tables),
            _ => inputs
                .into_iter()
                .zip(&tables)
                .map(|(acc, t)| self.key.1.apply_lookup_table(&self.key.wrap(acc), t).ct)
                .collect(),
        };
        let n_pbs = self.circuit.pbs.len();
        for (&(s, k), out) in batch.iter().zip(outputs) {
            // Each output is computed exactly once: it is queued when its count reaches zero.
            let _ = self.outputs[s * n_pbs + k].set(out);
            for &r in &self.readers[k] {
                if self.pending[s * n_pbs + r].fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.schedule(scope, s, r);
                }
            }
        }
    }
}

/// Evaluates the circuit on `samples` samples (their inputs one after another). Reads only the
/// evaluation key.
pub fn run_batch(
    circuit: &Circuit,
    key: &EvalKey,
    inputs: &InputCiphertexts,
    samples: usize,
) -> Result<OutputCiphertexts, RuntimeError> {
    circuit.validate()?;
    check_params(circuit, key.0)?;
    let expected = circuit.n_inputs.saturating_mul(samples);
    if inputs.len() != expected {
        return Err(RuntimeError::InputCount { expected, got: inputs.len() });
    }
    let expected = key.1.ciphertext_lwe_dimension().to_lwe_size();
    inputs.check(expected.0)?;
    let tables = circuit.tables.iter().map(|t| key.lookup_table(&t.values)).collect::<Result<Vec<_>, _>>()?;
    let mut cts = inputs.expand()?.into_iter();
    let samples = samples.max(usize::from(circuit.n_inputs == 0));
    let n_in = circuit.n_inputs;
    let n_pbs = circuit.pbs.len();
    // Who reads each bootstrap's output, and how many distinct bootstraps each one waits for.
    let mut readers = vec![Vec::new(); n_pbs];
    let mut waits = vec![0usize; n_pbs];
    for (k, p) in circuit.pbs.iter().enumerate() {
        let mut operands: Vec<usize> =
            p.input.terms.iter().map(|&(w, _)| w as usize).filter(|&w| w >= n_in).map(|w| w - n_in).collect();
        operands.sort_unstable();
        operands.dedup();
        waits[k] = operands.len();
        for o in operands {
            readers[o].push(k);
        }
    }
    let flow = Dataflow {
        circuit,
        key,
        tables,
        inputs: (0..samples).map(|_| cts.by_ref().take(n_in).collect()).collect(),
        outputs: (0..samples * n_pbs).map(|_| OnceLock::new()).collect(),
        pending: (0..samples).flat_map(|_| waits.iter().map(|&w| AtomicUsize::new(w))).collect(),
        readers,
        size: expected,
        modulus: key.0.tfhe().ciphertext_modulus,
        // Sets whose modulus switch rounds to the nearest position read `round(phase - 1/2)`, i.e. the
        // position `floor(phase)` the circuit's semantics name.
        shift: if key.0.rounds_to_nearest() { (1u64 << (key.0.position_shift() - 1)).wrapping_neg() } else { 0 },
        ready: Mutex::new(Vec::new()),
        batcher: Batcher::new(&key.1),
        threads: rayon::current_num_threads(),
    };
    // Dataflow on the rayon pool: every bootstrap of every sample is ready as soon as the bootstraps
    // it reads are done, so workers never wait for a whole level to finish; each worker takes the
    // ready ones in batches, which read the bootstrapping key once per batch.
    rayon::scope(|scope| {
        let flow = &flow;
        for s in 0..samples {
            for k in (0..n_pbs).filter(|&k| waits[k] == 0) {
                flow.schedule(scope, s, k);
            }
        }
    });
    let out = (0..samples)
        .flat_map(|s| circuit.outputs.iter().map(move |o| (s, o)))
        .map(|(s, o)| affine(o, |w| flow.wire(s, w), flow.size, flow.modulus))
        .collect();
    Ok(OutputCiphertexts(out))
}
