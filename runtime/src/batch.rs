//! Several bootstraps at once on one thread, with tfhe-rs's batch bootstrap, which reads the
//! bootstrapping key once per batch instead of once per ciphertext. Against core_crypto's one-by-one
//! bootstrap it gives 1.2-1.3x at 8 per batch (`examples/batch_pbs.rs`); against shortint's, which the
//! server used before and is faster, about 5% at 512 and 1024 positions and nothing measurable at
//! 2048 (`examples/pbs_time.rs`, keyswitches included).
//!
//! Each ciphertext goes through exactly what shortint's `apply_lookup_table` does for a classic
//! keyswitch-then-bootstrap key (keyswitch, the set's modulus-switch noise reduction, modulus switch,
//! blind rotation, sample extraction), so the outputs are bit-identical to it (tested below) and the
//! noise model is unchanged. Sets whose switch is tfhe-rs's centred one have no batch form: for them
//! [`Batcher::new`] returns `None` and the caller bootstraps one by one.

use std::cell::RefCell;
use tfhe::core_crypto::algorithms::modulus_switch_noise_reduction::improve_lwe_ciphertext_modulus_switch_noise_for_binary_key;
use tfhe::core_crypto::commons::computation_buffers::ComputationBuffers;
use tfhe::core_crypto::fft_impl::fft64::math::fft::Fft;
use tfhe::core_crypto::prelude::{
    CiphertextCount, ContiguousEntityContainerMut, FourierLweBootstrapKeyOwned, GlweCiphertextList, LweCiphertextCount,
    LweCiphertextList, LweCiphertextOwned, LweKeyswitchKeyOwned,
    batch_programmable_bootstrap_lwe_ciphertext_mem_optimized,
    batch_programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement, keyswitch_lwe_ciphertext,
};
use tfhe::shortint::PBSOrder;
use tfhe::shortint::atomic_pattern::AtomicPatternServerKey;
use tfhe::shortint::server_key::{
    LookupTableOwned, ModulusSwitchConfiguration, ModulusSwitchNoiseReductionKey, ServerKey, ShortintBootstrappingKey,
};

/// The most bootstraps one batch takes: the gain flattens out past 8 (`examples/batch_pbs.rs`), and
/// larger batches leave a thread with more of a level's tail.
pub const MAX_BATCH: usize = 8;

/// The parts of a server key a batch reads.
pub struct Batcher<'k> {
    ksk: &'k LweKeyswitchKeyOwned<u64>,
    bsk: &'k FourierLweBootstrapKeyOwned,
    /// The drift technique's encryptions of zero, for sets that use it.
    drift: Option<&'k ModulusSwitchNoiseReductionKey<u64>>,
}

thread_local! {
    static BUFFERS: RefCell<ComputationBuffers> = RefCell::new(ComputationBuffers::new());
}

impl<'k> Batcher<'k> {
    /// `None` where the key has no batch form (centred modulus switch, multi-bit or other atomic
    /// patterns): bootstrap those one by one.
    pub fn new(key: &'k ServerKey) -> Option<Batcher<'k>> {
        let AtomicPatternServerKey::Standard(ap) = &key.atomic_pattern else { return None };
        if ap.pbs_order != PBSOrder::KeyswitchBootstrap {
            return None;
        }
        let ShortintBootstrappingKey::Classic { bsk, modulus_switch_noise_reduction_key } = &ap.bootstrapping_key
        else {
            return None;
        };
        let drift = match modulus_switch_noise_reduction_key {
            ModulusSwitchConfiguration::Standard => None,
            ModulusSwitchConfiguration::DriftTechniqueNoiseReduction(k) => Some(k),
            ModulusSwitchConfiguration::CenteredMeanNoiseReduction => return None,
        };
        Some(Batcher { ksk: &ap.key_switching_key, bsk, drift })
    }

    /// Bootstraps `inputs[i]` through `tables[i]`; the outputs in order.
    pub fn bootstrap(
        &self,
        inputs: &[LweCiphertextOwned<u64>],
        tables: &[&LookupTableOwned],
    ) -> Vec<LweCiphertextOwned<u64>> {
        assert_eq!(inputs.len(), tables.len(), "one table per input");
        let count = inputs.len();
        if count == 0 {
            return Vec::new();
        }
        let modulus = inputs[0].ciphertext_modulus();
        let small = self.ksk.output_key_lwe_dimension().to_lwe_size();
        let polynomial_size = self.bsk.polynomial_size();
        let log_modulus = polynomial_size.to_blind_rotation_input_modulus_log();
        let mut switched = LweCiphertextList::new(0u64, small, LweCiphertextCount(count), modulus);
        for (input, mut out) in inputs.iter().zip(switched.iter_mut()) {
            keyswitch_lwe_ciphertext(self.ksk, input, &mut out);
            if let Some(d) = self.drift {
                improve_lwe_ciphertext_modulus_switch_noise_for_binary_key(
                    &mut out,
                    &d.modulus_switch_zeros,
                    d.ms_r_sigma_factor,
                    d.ms_bound,
                    d.ms_input_variance,
                    log_modulus,
                );
            }
        }
        let glwe_size = self.bsk.glwe_size();
        let accumulators = GlweCiphertextList::from_container(
            tables.iter().flat_map(|t| t.acc.as_ref().iter().copied()).collect::<Vec<u64>>(),
            glwe_size,
            polynomial_size,
            modulus,
        );
        let mut out = LweCiphertextList::new(
            0u64,
            self.bsk.output_lwe_dimension().to_lwe_size(),
            LweCiphertextCount(count),
            modulus,
        );
        let fft = Fft::new(polynomial_size);
        let fft = fft.as_view();
        BUFFERS.with_borrow_mut(|buffers| {
            buffers.resize(
                batch_programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement::<u64>(
                    glwe_size,
                    polynomial_size,
                    CiphertextCount(count),
                    fft,
                )
                .unaligned_bytes_required(),
            );
            batch_programmable_bootstrap_lwe_ciphertext_mem_optimized(
                &switched,
                &mut out,
                &accumulators,
                self.bsk,
                fft,
                buffers.stack(),
            );
        });
        let size = out.lwe_size();
        out.into_container()
            .chunks_exact(size.0)
            .map(|c| LweCiphertextOwned::from_container(c.to_vec(), modulus))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamSet;
    use tfhe::core_crypto::prelude::{
        DefaultRandomGenerator, EncryptionRandomGenerator, LweCiphertext, Plaintext, encrypt_lwe_ciphertext, new_seeder,
    };
    use tfhe::shortint::ciphertext::{Degree, NoiseLevel};
    use tfhe::shortint::{AtomicPatternKind, Ciphertext, ClientKey};

    /// The batch gives exactly shortint's ciphertexts, for a standard-switch set and a drift-technique
    /// set; the centred-switch set has no batch form.
    #[test]
    fn batches_equal_shortint_bit_for_bit() {
        for set in [ParamSet::P512A, ParamSet::P1024, ParamSet::P2048B] {
            let ck = ClientKey::new(set.tfhe());
            let sk = ServerKey::new(&ck);
            let Some(batcher) = Batcher::new(&sk) else {
                assert_eq!(set, ParamSet::P2048B, "{set:?} should batch");
                continue;
            };
            assert_ne!(set, ParamSet::P2048B);
            let key = ck.encryption_key();
            let modulus = set.tfhe().ciphertext_modulus;
            let positions = set.positions() as u64;
            let step = 1u64 << (63 - positions.trailing_zeros());
            // Two different tables, so that a batch that mixed up accumulators would show.
            let tables = [sk.generate_lookup_table(|x| x), sk.generate_lookup_table(|x| 3 - (x % 4))];
            let mut seeder = new_seeder();
            let mut engine = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder.as_mut());
            let inputs: Vec<LweCiphertextOwned<u64>> = (0..5u64)
                .map(|i| {
                    let mut ct = LweCiphertext::new(0u64, key.lwe_dimension().to_lwe_size(), modulus);
                    encrypt_lwe_ciphertext(
                        &key,
                        &mut ct,
                        Plaintext(i * 37 * step),
                        set.tfhe().lwe_noise_distribution,
                        &mut engine,
                    );
                    ct
                })
                .collect();
            let chosen: Vec<&LookupTableOwned> = (0..inputs.len()).map(|i| &tables[i % 2]).collect();
            let batched = batcher.bootstrap(&inputs, &chosen);
            for (i, (input, got)) in inputs.iter().zip(&batched).enumerate() {
                let ct = Ciphertext::new(
                    input.clone(),
                    Degree::new(0),
                    NoiseLevel::NOMINAL,
                    sk.message_modulus,
                    sk.carry_modulus,
                    AtomicPatternKind::Standard(PBSOrder::KeyswitchBootstrap),
                );
                let want = sk.apply_lookup_table(&ct, chosen[i]).ct;
                assert!(want == *got, "{set:?}: ciphertext {i} differs from shortint's");
            }
        }
    }
}
