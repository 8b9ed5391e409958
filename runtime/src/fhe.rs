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
use crate::circuit::{Affine, Circuit};
use crate::params::ParamSet;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::{
    ContiguousEntityContainer,
    LweCiphertextCount, LweCiphertextOwned, PlaintextList, SeededLweCiphertextListOwned, decrypt_lwe_ciphertext, new_seeder,
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

/// Client-to-server ciphertexts: one seeded list (the masks are regenerated from one seed), 8 bytes
/// per value plus the seed.
#[derive(Serialize, Deserialize)]
pub struct InputCiphertexts(SeededLweCiphertextListOwned<u64>);

/// Server-to-client ciphertexts.
#[derive(Serialize, Deserialize)]
pub struct OutputCiphertexts(Vec<LweCiphertextOwned<u64>>);

impl InputCiphertexts {
    pub fn len(&self) -> usize {
        self.0.lwe_ciphertext_count().0
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

    /// Encrypts torus values (the circuit's encoded inputs) under the key's LWE secret, in parallel.
    pub fn encrypt(&self, values: &[i64]) -> InputCiphertexts {
        let (key, noise) = self.1.encryption_key_and_noise();
        let modulus = self.1.parameters().ciphertext_modulus();
        let mut seeder = new_seeder();
        let mut list = SeededLweCiphertextListOwned::new(
            0u64,
            key.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            modulus,
        );
        let plain = PlaintextList::from_container(values.iter().map(|&v| v as u64).collect::<Vec<_>>());
        par_encrypt_seeded_lwe_ciphertext_list(&key, &mut list, &plain, noise, seeder.as_mut());
        InputCiphertexts(list)
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
            return Err(RuntimeError::Invalid(format!("the key's polynomial size is {}, the table has {}", coefs.len(), values.len())));
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

fn affine(a: &Affine, wires: &[Option<LweCiphertextOwned<u64>>], template: &LweCiphertextOwned<u64>) -> LweCiphertextOwned<u64> {
    let mut acc = LweCiphertextOwned::new(0u64, template.lwe_size(), template.ciphertext_modulus());
    for &(w, c) in &a.terms {
        let src = wires[w as usize].as_ref().expect("circuit validated: operands come first");
        slice_wrapping_add_scalar_mul_assign(acc.as_mut(), src.as_ref(), c as u64);
    }
    let body = acc.get_mut_body().data;
    *body = body.wrapping_add(a.bias as u64);
    acc
}

/// Evaluates the circuit on `samples` samples (their inputs one after another). Reads only the
/// evaluation key.
pub fn run_batch(circuit: &Circuit, key: &EvalKey, inputs: &InputCiphertexts, samples: usize) -> Result<OutputCiphertexts, RuntimeError> {
    circuit.validate()?;
    check_params(circuit, key.0)?;
    if inputs.len() != circuit.n_inputs * samples {
        return Err(RuntimeError::InputCount { expected: circuit.n_inputs * samples, got: inputs.len() });
    }
    let expected = key.1.ciphertext_lwe_dimension().to_lwe_size();
    if inputs.0.lwe_size() != expected {
        return Err(RuntimeError::Invalid(format!(
            "ciphertexts of LWE size {} do not match the evaluation key ({}): wrong key or corrupted input",
            inputs.0.lwe_size().0,
            expected.0
        )));
    }
    let tables = circuit.tables.iter().map(|t| key.lookup_table(&t.values)).collect::<Result<Vec<_>, _>>()?;
    // The masks are regenerated from the list's seed, in parallel.
    let cts: Vec<LweCiphertextOwned<u64>> = inputs
        .0
        .clone()
        .par_decompress_into_lwe_ciphertext_list()
        .iter()
        .map(|ct| LweCiphertextOwned::from_container(ct.as_ref().to_vec(), ct.ciphertext_modulus()))
        .collect();
    let mut out = Vec::with_capacity(circuit.outputs.len() * samples);
    for s in 0..samples.max(usize::from(circuit.n_inputs == 0)) {
        out.extend(run_one(circuit, key, &tables, &cts[s * circuit.n_inputs..(s + 1) * circuit.n_inputs]));
    }
    Ok(OutputCiphertexts(out))
}

/// One sample: bootstraps level by level, each level in parallel on the rayon pool.
fn run_one(circuit: &Circuit, key: &EvalKey, tables: &[LookupTableOwned], inputs: &[LweCiphertextOwned<u64>]) -> Vec<LweCiphertextOwned<u64>> {
    let expected = key.1.ciphertext_lwe_dimension().to_lwe_size();
    let mut wires: Vec<Option<LweCiphertextOwned<u64>>> = inputs.iter().map(|ct| Some(ct.clone())).collect();
    wires.resize_with(circuit.n_inputs + circuit.pbs.len(), || None);
    let template =
        wires.first().and_then(|w| w.clone()).unwrap_or_else(|| LweCiphertextOwned::new(0u64, expected, key.0.tfhe().ciphertext_modulus));
    // Sets whose modulus switch rounds to the nearest position read `round(phase - 1/2)`, i.e. the
    // position `floor(phase)` the circuit's semantics name.
    let shift = if key.0.rounds_to_nearest() { (1u64 << (key.0.position_shift() - 1)).wrapping_neg() } else { 0 };
    for level in circuit.levels() {
        let outs: Vec<LweCiphertextOwned<u64>> = level
            .par_iter()
            .map(|&k| {
                let p = &circuit.pbs[k];
                let mut acc = affine(&p.input, &wires, &template);
                let body = acc.get_mut_body().data;
                *body = body.wrapping_add(shift);
                key.1.apply_lookup_table(&key.wrap(acc), &tables[p.table as usize]).ct
            })
            .collect();
        for (&k, ct) in level.iter().zip(outs) {
            wires[circuit.n_inputs + k] = Some(ct);
        }
    }
    circuit.outputs.iter().map(|o| affine(o, &wires, &template)).collect()
}
