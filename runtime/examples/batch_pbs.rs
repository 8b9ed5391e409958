//! Does tfhe-rs's batch bootstrap (`batch_programmable_bootstrap_lwe_ciphertext_mem_optimized`,
//! which reads the bootstrapping key once per batch) pay on this machine? Times, single-threaded,
//! `COUNT` blind rotations one by one and in batches of 2 to 16, for every parameter set fhec may
//! choose, with core_crypto keys of the set's dimensions (timing only: the keys are not shortint's).
//! Run with `cargo run -p fhec-runtime --example batch_pbs`.

use fhec_runtime::ParamSet;
use std::time::Instant;
use tfhe::core_crypto::prelude::*;

const COUNT: usize = 16;

fn main() {
    for set in ParamSet::ALL {
        let p = set.tfhe();
        let mut boxed_seeder = new_seeder();
        let seeder = boxed_seeder.as_mut();
        let mut secret = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let mut encryption = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let modulus = CiphertextModulus::new_native();
        let small = LweSecretKey::generate_new_binary(p.lwe_dimension, &mut secret);
        let glwe = GlweSecretKey::generate_new_binary(p.glwe_dimension, p.polynomial_size, &mut secret);
        let bsk = par_allocate_and_generate_new_lwe_bootstrap_key(
            &small,
            &glwe,
            p.pbs_base_log,
            p.pbs_level,
            p.glwe_noise_distribution,
            modulus,
            &mut encryption,
        );
        let mut fourier = FourierLweBootstrapKey::new(
            bsk.input_lwe_dimension(),
            bsk.glwe_size(),
            bsk.polynomial_size(),
            bsk.decomposition_base_log(),
            bsk.decomposition_level_count(),
        );
        convert_standard_lwe_bootstrap_key_to_fourier(&bsk, &mut fourier);
        let glwe_size = p.glwe_dimension.to_glwe_size();
        let out_size = LweSize(p.glwe_dimension.0 * p.polynomial_size.0 + 1);
        let fft = Fft::new(p.polynomial_size);
        let fft = fft.as_view();
        let delta = 1u64 << 59;
        let mut inputs =
            LweCiphertextList::new(0u64, p.lwe_dimension.to_lwe_size(), LweCiphertextCount(COUNT), modulus);
        for (i, mut ct) in inputs.iter_mut().enumerate() {
            encrypt_lwe_ciphertext(
                &small,
                &mut ct,
                Plaintext((i as u64 % 8) * delta),
                p.lwe_noise_distribution,
                &mut encryption,
            );
        }
        let acc = generate_programmable_bootstrap_glwe_lut(p.polynomial_size, glwe_size, 16, modulus, delta, |x| x);

        let mut buffers = ComputationBuffers::new();
        let mut one_by_one = || {
            buffers.resize(
                programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement::<u64>(
                    glwe_size,
                    p.polynomial_size,
                    fft,
                )
                .unaligned_bytes_required(),
            );
            let mut out = LweCiphertext::new(0u64, out_size, modulus);
            let t = Instant::now();
            for ct in inputs.iter() {
                programmable_bootstrap_lwe_ciphertext_mem_optimized(
                    &ct,
                    &mut out,
                    &acc,
                    &fourier,
                    fft,
                    buffers.stack(),
                );
            }
            t.elapsed().as_secs_f64() * 1e3 / COUNT as f64
        };
        let single = median((0..5).map(|_| one_by_one()).collect());
        let mut line =
            format!("{:52} {:?} one by one {single:6.2} ms", set.name(), p.modulus_switch_noise_reduction_params);
        for batch in [2usize, 4, 8, 16] {
            let accs =
                GlweCiphertextList::from_container(acc.as_ref().repeat(batch), glwe_size, p.polynomial_size, modulus);
            let mut buffers = ComputationBuffers::new();
            buffers.resize(
                batch_programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement::<u64>(
                    glwe_size,
                    p.polynomial_size,
                    CiphertextCount(batch),
                    fft,
                )
                .unaligned_bytes_required(),
            );
            let mut out = LweCiphertextList::new(0u64, out_size, LweCiphertextCount(batch), modulus);
            let mut time = || {
                let t = Instant::now();
                for chunk in inputs.chunks(batch) {
                    batch_programmable_bootstrap_lwe_ciphertext_mem_optimized(
                        &chunk,
                        &mut out,
                        &accs,
                        &fourier,
                        fft,
                        buffers.stack(),
                    );
                }
                t.elapsed().as_secs_f64() * 1e3 / COUNT as f64
            };
            let mut runs = Vec::new();
            for _ in 0..5 {
                runs.push(time());
            }
            let ms = median(runs);
            line += &format!("  batch {batch:2}: {ms:6.2} ms ({:.2}x)", single / ms);
        }
        let again = median((0..5).map(|_| one_by_one()).collect());
        println!("{line}  one by one again {again:6.2} ms");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
