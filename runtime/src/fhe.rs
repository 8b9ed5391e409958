//! Encrypted execution on tfhe-rs: the only module that touches tfhe.
//!
//! Parameters: `PARAM_MESSAGE_2_CARRY_2_KS_PBS` (shipped by tfhe-rs, 128-bit security; N = 2048). The
//! circuit's tables fill the bootstrap accumulator directly, one value per coefficient, so a table has
//! 2048 positions at the cost of tfhe-rs's default 4-bit bootstrap (see the backend notes).
//!
//! Keys are split by type: [`SecretKey`] (client) encrypts and decrypts; [`EvalKey`] (server) can only
//! evaluate. An `EvalKey` is built only from the bytes of a compressed evaluation key: no server-side
//! function accepts or can derive secret material.

use crate::circuit::{Affine, Circuit, POSITIONS};
use crate::RuntimeError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::{
    LweCiphertextOwned, Plaintext, SeededLweCiphertext, allocate_and_encrypt_new_seeded_lwe_ciphertext,
    decrypt_lwe_ciphertext, new_seeder,
};
use tfhe::shortint::ciphertext::{Degree, NoiseLevel};
use tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS_PBS;
use tfhe::shortint::server_key::LookupTableOwned;
use tfhe::shortint::{AtomicPatternKind, Ciphertext, ClientKey, CompressedServerKey, PBSOrder, ServerKey};

/// The name of the parameter set, recorded in artifacts and checked against keys.
pub const PARAMETER_SET: &str = "PARAM_MESSAGE_2_CARRY_2_KS_PBS";

/// Noise model of this parameter set, in table positions (2^52 torus units), measured (backend notes;
/// `tests/fhe.rs` re-measures the first): a bootstrap's input carries keyswitch and modulus-switch noise
/// of this standard deviation...
pub const FRESH_NOISE_POSITIONS: f64 = 4.81;
/// ...plus this much per unit of the 2-norm of the weights applied to bootstrap outputs (whose own
/// noise is this large); fresh encryptions are ~2^33 times quieter.
pub const PBS_NOISE_PER_WEIGHT: f64 = 0.14;

/// The client's secret key. Never leaves the data owner.
#[derive(Serialize, Deserialize)]
pub struct SecretKey(ClientKey);

/// The evaluation key as it travels to the server (compressed, about 4x smaller than in memory).
#[derive(Serialize, Deserialize)]
pub struct CompressedEvalKey(CompressedServerKey);

/// The server's evaluation key: evaluates bootstraps, cannot decrypt.
pub struct EvalKey(ServerKey);

/// Client-to-server ciphertexts: seeded (the mask is regenerated from a seed), ~40 bytes each.
#[derive(Serialize, Deserialize)]
pub struct InputCiphertexts(Vec<SeededLweCiphertext<u64>>);

/// Server-to-client ciphertexts.
#[derive(Serialize, Deserialize)]
pub struct OutputCiphertexts(Vec<LweCiphertextOwned<u64>>);

impl InputCiphertexts {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

/// Generates a fresh secret key and the matching compressed evaluation key.
pub fn keygen() -> (SecretKey, CompressedEvalKey) {
    let ck = ClientKey::new(PARAM_MESSAGE_2_CARRY_2_KS_PBS);
    let ek = CompressedServerKey::new(&ck);
    (SecretKey(ck), CompressedEvalKey(ek))
}

impl CompressedEvalKey {
    /// Expands the key for evaluation (on the server).
    pub fn decompress(&self) -> EvalKey {
        EvalKey(self.0.decompress())
    }
}

impl SecretKey {
    /// Encrypts torus values (the circuit's encoded inputs) under the key's LWE secret.
    pub fn encrypt(&self, values: &[i64]) -> InputCiphertexts {
        let (key, noise) = self.0.encryption_key_and_noise();
        let modulus = self.0.parameters().ciphertext_modulus();
        let mut seeder = new_seeder();
        InputCiphertexts(
            values
                .iter()
                .map(|&v| allocate_and_encrypt_new_seeded_lwe_ciphertext(&key, Plaintext(v as u64), noise, modulus, seeder.as_mut()))
                .collect(),
        )
    }

    /// Decrypts the server's results to torus values (the circuit's output accumulators plus noise).
    pub fn decrypt(&self, cts: &OutputCiphertexts) -> Vec<i64> {
        let key = self.0.encryption_key();
        cts.0.iter().map(|ct| decrypt_lwe_ciphertext(&key, ct).0 as i64).collect()
    }
}

impl EvalKey {
    fn lookup_table(&self, values: &[i64]) -> Result<LookupTableOwned, RuntimeError> {
        let mut lut = self.0.generate_lookup_table(|_| 0);
        let mut body = lut.acc.get_mut_body();
        let coefs = body.as_mut();
        if coefs.len() != POSITIONS {
            return Err(RuntimeError::Invalid(format!("the key's polynomial size is {}, circuits need {POSITIONS}", coefs.len())));
        }
        // Position p in [0, N/2) reads coefficient p; p in [-N/2, 0) reads coefficient p + N negated.
        let half = POSITIONS / 2;
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
        let p = self.0.message_modulus;
        Ciphertext::new(ct, Degree::new(0), NoiseLevel::NOMINAL, p, self.0.carry_modulus, AtomicPatternKind::Standard(PBSOrder::KeyswitchBootstrap))
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
    if inputs.0.len() != circuit.n_inputs * samples {
        return Err(RuntimeError::InputCount { expected: circuit.n_inputs * samples, got: inputs.0.len() });
    }
    let tables = circuit.tables.iter().map(|t| key.lookup_table(&t.values)).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(circuit.outputs.len() * samples);
    for s in 0..samples.max(usize::from(circuit.n_inputs == 0)) {
        out.extend(run_one(circuit, key, &tables, &inputs.0[s * circuit.n_inputs..(s + 1) * circuit.n_inputs])?);
    }
    Ok(OutputCiphertexts(out))
}

/// One sample: bootstraps level by level, each level in parallel on the rayon pool.
fn run_one(
    circuit: &Circuit,
    key: &EvalKey,
    tables: &[LookupTableOwned],
    inputs: &[SeededLweCiphertext<u64>],
) -> Result<Vec<LweCiphertextOwned<u64>>, RuntimeError> {
    let expected = key.0.ciphertext_lwe_dimension().to_lwe_size();
    if let Some(ct) = inputs.iter().find(|ct| ct.lwe_size() != expected) {
        return Err(RuntimeError::Invalid(format!(
            "ciphertexts of LWE size {} do not match the evaluation key ({}): wrong key or corrupted input",
            ct.lwe_size().0,
            expected.0
        )));
    }
    let mut wires: Vec<Option<LweCiphertextOwned<u64>>> =
        inputs.par_iter().map(|ct| Some(ct.clone().decompress_into_lwe_ciphertext())).collect();
    wires.resize_with(circuit.n_inputs + circuit.pbs.len(), || None);
    let template = wires.first().and_then(|w| w.clone()).unwrap_or_else(|| LweCiphertextOwned::new(0u64, expected, PARAM_MESSAGE_2_CARRY_2_KS_PBS.ciphertext_modulus));
    for level in circuit.levels() {
        let outs: Vec<LweCiphertextOwned<u64>> = level
            .par_iter()
            .map(|&k| {
                let p = &circuit.pbs[k];
                let acc = key.wrap(affine(&p.input, &wires, &template));
                key.0.apply_lookup_table(&acc, &tables[p.table as usize]).ct
            })
            .collect();
        for (&k, ct) in level.iter().zip(outs) {
            wires[circuit.n_inputs + k] = Some(ct);
        }
    }
    Ok(circuit.outputs.iter().map(|o| affine(o, &wires, &template)).collect())
}


