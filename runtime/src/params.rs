//! The tfhe-rs parameter sets circuits run under, and their noise, from tfhe-rs's noise formulas.
//!
//! Circuits fill the bootstrap accumulator by hand (one table value per coefficient), so what a set
//! offers is its polynomial size `N` (the table has `N` positions over half the torus) and the noise
//! at a bootstrap's input in units of positions (`2^64 / 2N`). The message and carry moduli in the
//! names are the encoding tfhe-rs's own integer API uses on top; fhec does not use it. All sets are
//! shipped by tfhe-rs for 128-bit security; their `p-fail` label refers to tfhe-rs's encoding, fhec
//! keeps its own failure bound with the noise computed here.

use crate::RuntimeError;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::{
    keyswitch_additive_variance_132_bits_security_gaussian, keyswitch_additive_variance_132_bits_security_tuniform,
};
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::{
    pbs_variance_132_bits_security_gaussian_fft_mul, pbs_variance_132_bits_security_tuniform_fft_mul,
};
use tfhe::core_crypto::commons::noise_formulas::modulus_switch::modulus_switch_additive_variance;
use tfhe::core_crypto::prelude::{
    DecompositionBaseLog, DecompositionLevelCount, DynamicDistribution, GlweDimension, LweDimension, PolynomialSize,
    Variance,
};
use tfhe::shortint::ClassicPBSParameters;
use tfhe::shortint::parameters::{ModulusSwitchType, v1_2, v1_8};

/// A parameter set, cheapest first. Each is validated against real ciphertexts before the search may
/// use it: single bootstraps (`tests/fhe.rs`, `examples/pbs_noise.rs`) and whole corpus models run
/// encrypted under fresh keys against their noisy simulation (`fhec`'s `examples/fhe_vs_simulation.rs`:
/// on every set, the encrypted outputs' error is the simulated one's, with no offset per key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamSet {
    /// 512 positions, k = 3, n = 750.
    P512A,
    /// 512 positions, k = 3, n = 846.
    P512B,
    /// 1024 positions, k = 2, n = 884.
    P1024,
    /// 2048 positions, k = 1, n = 796.
    P2048A,
    /// 2048 positions, k = 1, n = 918: tfhe-rs's default.
    P2048B,
}

/// Noise at a bootstrap's input, as variances in positions².
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseModel {
    /// Keyswitch plus modulus switch: present at every bootstrap input.
    pub switch_var: f64,
    /// One bootstrap output, per unit of squared weight applied to it.
    pub pbs_var: f64,
    /// One fresh encryption, per unit of squared weight.
    pub fresh_var: f64,
}

impl NoiseModel {
    /// Standard deviation at a bootstrap input reading bootstrap outputs with weight 2-norm `pbs_norm`
    /// and fresh inputs with weight 2-norm `fresh_norm`.
    pub fn input_std(&self, pbs_norm: f64, fresh_norm: f64) -> f64 {
        (self.switch_var + self.pbs_var * pbs_norm.powi(2) + self.fresh_var * fresh_norm.powi(2)).sqrt()
    }
}

const TORUS: f64 = 18_446_744_073_709_551_616.0;

impl ParamSet {
    pub const ALL: [ParamSet; 5] =
        [ParamSet::P512A, ParamSet::P512B, ParamSet::P1024, ParamSet::P2048A, ParamSet::P2048B];

    /// tfhe-rs's name for the set.
    pub fn name(self) -> &'static str {
        match self {
            ParamSet::P512A => "V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40",
            ParamSet::P512B => "V1_2_PARAM_MESSAGE_2_CARRY_0_KS_PBS_GAUSSIAN_2M128",
            ParamSet::P1024 => "V1_2_PARAM_MESSAGE_2_CARRY_1_KS_PBS_GAUSSIAN_2M128",
            ParamSet::P2048A => "V1_2_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M40",
            ParamSet::P2048B => "V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
        }
    }

    pub fn from_name(name: &str) -> Result<ParamSet, RuntimeError> {
        ParamSet::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "unknown parameter set {name:?}; known: {}",
                ParamSet::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    pub fn tfhe(self) -> ClassicPBSParameters {
        match self {
            ParamSet::P512A => v1_2::V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40,
            ParamSet::P512B => v1_2::V1_2_PARAM_MESSAGE_2_CARRY_0_KS_PBS_GAUSSIAN_2M128,
            ParamSet::P1024 => v1_2::V1_2_PARAM_MESSAGE_2_CARRY_1_KS_PBS_GAUSSIAN_2M128,
            ParamSet::P2048A => v1_2::V1_2_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M40,
            ParamSet::P2048B => v1_8::V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
        }
    }

    /// One keyswitch + bootstrap, single-threaded, median ms measured on the project's 2-core machine
    /// (AMD EPYC, AVX-512; `cargo run -p fhec-runtime --example pbs_time`): the cost the compiler
    /// minimizes. tfhe-rs's `avx512` feature takes 11-12% off these; the Intel machine the project
    /// started on took about twice as long (24.9 ms at 1024 positions).
    pub fn pbs_ms(self) -> f64 {
        match self {
            ParamSet::P512A => 7.1,
            ParamSet::P512B => 7.8,
            ParamSet::P1024 => 11.6,
            ParamSet::P2048A => 13.5,
            ParamSet::P2048B => 14.7,
        }
    }

    /// Per bootstrap when a thread runs a full batch of them (`fhe::MAX_BATCH`, which reads the
    /// bootstrapping key once per batch; `cargo run -p fhec-runtime --example pbs_time`, two runs on the
    /// same machine as [`ParamSet::pbs_ms`]): about 5% less at 512 and 1024 positions, nothing
    /// measurable at 2048. The set with tfhe-rs's centred modulus switch has no batch form.
    pub fn batched_pbs_ms(self) -> f64 {
        match self {
            ParamSet::P512A => 6.4,
            ParamSet::P512B => 7.2,
            ParamSet::P1024 => 11.0,
            ParamSet::P2048A => 13.5,
            ParamSet::P2048B => 14.7,
        }
    }

    /// Bytes of the compressed evaluation key (seeded: one body per bootstrapping-key and
    /// keyswitching-key row): what `fhec keygen` writes and a server loads, within a few percent.
    pub fn eval_key_bytes(self) -> usize {
        let p = self.tfhe();
        let (n, k, big_n) = (p.lwe_dimension.0, p.glwe_dimension.0, p.polynomial_size.0);
        let bsk = n * (k + 1) * p.pbs_level.0 * big_n;
        let ksk = k * big_n * p.ks_level.0;
        (bsk + ksk) * 8
    }

    /// Table positions: the polynomial size.
    pub fn positions(self) -> usize {
        self.tfhe().polynomial_size.0
    }

    /// Bits of the torus below one position: `64 - log2(2N)`.
    pub fn position_shift(self) -> u32 {
        63 - self.positions().trailing_zeros()
    }

    /// Whether the modulus switch rounds to the nearest position (the server then subtracts half a
    /// position first, so every set reads position `floor(phase)`), rather than the centred switch,
    /// which already does.
    pub fn rounds_to_nearest(self) -> bool {
        matches!(self.tfhe().modulus_switch_noise_reduction_params, ModulusSwitchType::Standard)
    }

    /// The noise model, from tfhe-rs's noise formulas (`core_crypto::commons::noise_formulas`).
    pub fn noise(self) -> NoiseModel {
        let p = self.tfhe();
        let big = LweDimension(p.glwe_dimension.0 * p.polynomial_size.0);
        let two_n = 2.0 * p.polynomial_size.0 as f64;
        let gaussian = matches!(p.lwe_noise_distribution, DynamicDistribution::Gaussian(_));
        // tfhe-rs has one formula per noise distribution, with the same arguments.
        type Ks = fn(LweDimension, LweDimension, DecompositionBaseLog, DecompositionLevelCount, f64, f64) -> Variance;
        type Pbs = fn(
            LweDimension,
            GlweDimension,
            PolynomialSize,
            DecompositionBaseLog,
            DecompositionLevelCount,
            f64,
            f64,
        ) -> Variance;
        let (ks_formula, pbs_formula): (Ks, Pbs) = if gaussian {
            (keyswitch_additive_variance_132_bits_security_gaussian, pbs_variance_132_bits_security_gaussian_fft_mul)
        } else {
            (keyswitch_additive_variance_132_bits_security_tuniform, pbs_variance_132_bits_security_tuniform_fft_mul)
        };
        let ks = ks_formula(big, p.lwe_dimension, p.ks_base_log, p.ks_level, TORUS, TORUS);
        let ms = if self.rounds_to_nearest() {
            modulus_switch_additive_variance(p.lwe_dimension, TORUS, two_n)
        } else {
            centered_binary_shifted_modulus_switch_additive_variance(p.lwe_dimension, TORUS, two_n)
        };
        let pbs =
            pbs_formula(p.lwe_dimension, p.glwe_dimension, p.polynomial_size, p.pbs_base_log, p.pbs_level, 53.0, TORUS);
        let fresh = match p.glwe_noise_distribution {
            DynamicDistribution::Gaussian(_) => p.glwe_noise_distribution.gaussian_variance().0,
            DynamicDistribution::TUniform(t) => t.variance(TORUS).0,
        };
        let positions2 = two_n * two_n;
        NoiseModel {
            switch_var: (ks.0 + ms.0) * positions2,
            pbs_var: pbs.0 * positions2,
            fresh_var: fresh * positions2,
        }
    }
}

impl std::fmt::Display for ParamSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_are_cheapest_first() {
        for p in ParamSet::ALL {
            assert_eq!(ParamSet::from_name(p.name()).unwrap(), p);
            assert_eq!(1usize << (64 - p.position_shift()), 2 * p.positions());
        }
        assert!(ParamSet::ALL.windows(2).all(|w| w[0].pbs_ms() < w[1].pbs_ms()));
        assert!(ParamSet::from_name("PARAM_NONE").is_err());
    }

    #[test]
    fn noise_matches_the_measured_default_set() {
        // tfhe-rs's default set, measured in tests/fhe.rs and the backend notes: 4.81 positions at a
        // fresh bootstrap input, 0.14 position per unit weight on bootstrap outputs.
        let n = ParamSet::P2048B.noise();
        let std = n.switch_var.sqrt();
        assert!((4.0..5.5).contains(&std), "switch noise std {std}");
        let pbs = n.pbs_var.sqrt();
        assert!((0.07..0.28).contains(&pbs), "pbs noise std {pbs}");
        for p in ParamSet::ALL {
            let n = p.noise();
            eprintln!(
                "{p}: switch std {:.2}, pbs std {:.3}, fresh std {:.2e} positions",
                n.switch_var.sqrt(),
                n.pbs_var.sqrt(),
                n.fresh_var.sqrt()
            );
            assert!(n.fresh_var < 1e-6 * n.switch_var);
        }
    }
}
