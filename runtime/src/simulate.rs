//! Cleartext execution of a circuit with the encrypted execution's integer semantics.
//!
//! Without noise the result is what an encryption with zero noise would decrypt to. With
//! [`Noise::Gaussian`], every bootstrap input is perturbed by its stated noise (`Pbs::noise_std`
//! positions), which is the noise model the encrypted execution is checked against.

use crate::circuit::{Circuit, POSITION_SHIFT, POSITIONS};
use crate::RuntimeError;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

pub enum Noise<'a> {
    None,
    /// Gaussian noise at every bootstrap input, drawn from this generator.
    Gaussian(&'a mut StdRng),
}

impl Noise<'_> {
    /// A deterministic generator for noisy simulation.
    pub fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }
}

/// The table position an accumulator reads (the centred modulus switch rounds down to the position).
pub fn position(acc: i64) -> i64 {
    acc >> POSITION_SHIFT
}

/// Runs the circuit on encoded inputs (torus values) and returns the output accumulators.
pub fn simulate(c: &Circuit, inputs: &[i64], mut noise: Noise<'_>) -> Result<Vec<i64>, RuntimeError> {
    if inputs.len() != c.n_inputs {
        return Err(RuntimeError::InputCount { expected: c.n_inputs, got: inputs.len() });
    }
    let half = (POSITIONS / 2) as i64;
    let mut wires = Vec::with_capacity(c.n_inputs + c.pbs.len());
    wires.extend_from_slice(inputs);
    for p in &c.pbs {
        let mut acc = p.input.eval(&wires);
        if let Noise::Gaussian(rng) = &mut noise {
            let n = Normal::new(0.0, p.noise_std.max(0.0)).expect("finite std").sample(*rng);
            acc = acc.wrapping_add((n * (1u64 << POSITION_SHIFT) as f64) as i64);
        }
        // Outside the usable half, the negacyclic rotation reads the mirrored table, negated.
        let pos = position(acc);
        let table = &c.tables[p.table as usize].values;
        let out = if (-half..half).contains(&pos) {
            table[(pos + half) as usize]
        } else {
            // Position p and p +- 2048 read the same coefficient with opposite signs.
            let mirrored = (pos + half).rem_euclid(2 * half) - half;
            table[(mirrored + half) as usize].wrapping_neg()
        };
        wires.push(out);
    }
    Ok(c.outputs.iter().map(|o| o.eval(&wires)).collect())
}
