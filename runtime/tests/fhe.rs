//! The encrypted execution agrees with the cleartext simulation: the table semantics (which position a
//! phase reads) and the noise model, measured on real tfhe-rs ciphertexts.

use fhec_runtime::fhe::{self, InputCiphertexts};
use fhec_runtime::{Affine, Circuit, Noise, POSITION_SHIFT, POSITIONS, Pbs, Table, simulate};

/// `values[q] = q << 51`: the output names the position read (in half positions, above the bootstrap's
/// output noise of ~0.14 position).
fn position_circuit(n: usize, weight: i64) -> Circuit {
    Circuit {
        n_inputs: n,
        pbs: (0..n)
            .map(|i| Pbs { input: Affine { terms: vec![(i as u32, weight)], bias: 0 }, table: 0, noise_std: 4.81, layer: 0 })
            .collect(),
        tables: vec![Table { values: (0..POSITIONS as i64).map(|q| q << 51).collect() }],
        outputs: (0..n).map(|i| Affine { terms: vec![((n + i) as u32, 1)], bias: 0 }).collect(),
        layers: vec!["positions".into()],
    }
}

#[test]
fn bootstraps_read_the_simulated_position_within_the_noise_model() {
    let (sk, ek) = fhe::keygen();
    let ek = ek.decompress();
    // Phases spread over the usable positions, at position centres.
    let positions: Vec<i64> = (-1000..1000).step_by(25).collect();
    let phases: Vec<i64> = positions.iter().map(|&p| (p << POSITION_SHIFT) + (1 << (POSITION_SHIFT - 1))).collect();
    let c = position_circuit(phases.len(), 1);
    let want = simulate(&c, &phases, Noise::None).unwrap();
    let cts: InputCiphertexts = sk.encrypt(&phases);
    let got = sk.decrypt(&fhe::run_batch(&c, &ek, &cts, 1).unwrap());
    let diffs: Vec<f64> = got.iter().zip(&want).map(|(&g, &w)| ((g - w) as f64 / (1u64 << 51) as f64).round()).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64).sqrt();
    eprintln!("position error over {} bootstraps: mean {mean:.2}, std {std:.2}, max {}", diffs.len(), diffs.iter().fold(0f64, |a, d| a.max(d.abs())));
    // The noise model says 4.81 positions: every read within 7 of that, and centred.
    assert!(diffs.iter().all(|d| d.abs() <= 7.0 * 4.81), "{diffs:?}");
    assert!(mean.abs() < 2.0 && std < 2.0 * 4.81, "mean {mean}, std {std}");
}

#[test]
fn wrong_input_count_is_an_error() {
    let (sk, ek) = fhe::keygen();
    let c = position_circuit(2, 1);
    let cts = sk.encrypt(&[0]);
    assert!(fhe::run_batch(&c, &ek.decompress(), &cts, 1).is_err());
}

