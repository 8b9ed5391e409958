//! Cleartext execution of a circuit with the encrypted execution's integer semantics.
//!
//! Without noise the result is what an encryption with zero noise would decrypt to. With
//! [`Noise::Gaussian`], the parameter set's noise model (tfhe-rs's noise formulas, checked against
//! real ciphertexts in `tests/fhe.rs`) is applied where the encrypted execution creates the noise.

use crate::RuntimeError;
use crate::circuit::Circuit;
use crate::params::ParamSet;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

pub enum Noise<'a> {
    None,
    /// The parameter set's noise model, drawn from this generator.
    Gaussian(&'a mut StdRng),
    /// The noise model with every standard deviation multiplied by the factor: a pessimistic
    /// simulation, for choices that must hold when the model is optimistic.
    Inflated(&'a mut StdRng, f64),
}

impl Noise<'_> {
    /// A deterministic generator for noisy simulation.
    pub fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// The same noise, borrowed again: for running several samples from one generator.
    pub fn reborrow(&mut self) -> Noise<'_> {
        match self {
            Noise::None => Noise::None,
            Noise::Gaussian(r) => Noise::Gaussian(r),
            Noise::Inflated(r, f) => Noise::Inflated(r, *f),
        }
    }
}

/// The table position an accumulator reads (every set rounds down to the position; see
/// `ParamSet::rounds_to_nearest`).
pub fn position(acc: i64, shift: u32) -> i64 {
    acc >> shift
}

/// The noise a simulation adds, in the order it is consumed: for every bootstrap in circuit order, the
/// switch noise at its input, then its output's own noise (torus units). The interpreter and the JIT
/// (`fhec-jit`) both draw from it, so a seed gives both the same noisy run.
pub struct NoiseSampler<'a> {
    rng: Option<&'a mut StdRng>,
    switch: Normal<f64>,
    output: Normal<f64>,
}

impl<'a> NoiseSampler<'a> {
    pub fn new(params: ParamSet, noise: Noise<'a>) -> NoiseSampler<'a> {
        let (rng, factor) = match noise {
            Noise::None => (None, 0.0),
            Noise::Gaussian(r) => (Some(r), 1.0),
            Noise::Inflated(r, f) => (Some(r), f.max(0.0)),
        };
        let unit = (1u64 << params.position_shift()) as f64;
        // Without a generator nothing is drawn: skip the noise formulas.
        let model = if rng.is_some() {
            params.noise()
        } else {
            crate::NoiseModel { switch_var: 0.0, pbs_var: 0.0, fresh_var: 0.0 }
        };
        NoiseSampler {
            rng,
            switch: Normal::new(0.0, factor * model.switch_var.sqrt() * unit).expect("finite std"),
            output: Normal::new(0.0, factor * model.pbs_var.sqrt() * unit).expect("finite std"),
        }
    }

    /// Whether this sampler adds noise at all.
    pub fn is_noisy(&self) -> bool {
        self.rng.is_some()
    }

    /// One bootstrap's noise: (at its input, on its output); zeros without noise.
    pub fn draw(&mut self) -> (i64, i64) {
        match self.rng.as_mut() {
            Some(r) => (self.switch.sample(&mut **r) as i64, self.output.sample(&mut **r) as i64),
            None => (0, 0),
        }
    }

    /// Fills `buf` with consecutive draws: `[input, output]` per bootstrap.
    pub fn fill(&mut self, buf: &mut [i64]) {
        for pair in buf.chunks_exact_mut(2) {
            let (a, b) = self.draw();
            pair[0] = a;
            pair[1] = b;
        }
    }
}

/// The value bootstrap table `table` gives at accumulator `acc`: the position's entry inside the
/// usable half; outside it, the negacyclic rotation reads the mirrored entry, negated.
fn lookup(table: &[i64], acc: i64, shift: u32) -> i64 {
    let half = (table.len() / 2) as i64;
    let pos = position(acc, shift);
    if (-half..half).contains(&pos) {
        table[(pos + half) as usize]
    } else {
        // Position p and p +- N read the same coefficient with opposite signs.
        let mirrored = (pos + half).rem_euclid(2 * half) - half;
        table[(mirrored + half) as usize].wrapping_neg()
    }
}

/// Runs the circuit on encoded inputs (torus values) and returns the output accumulators.
///
/// With [`Noise::Gaussian`], the noise enters where the encrypted execution creates it: keyswitch and
/// modulus-switch noise at every bootstrap input, and each bootstrap output's own noise on its wire,
/// so that every later use of a wire sees the same error (their errors are correlated, as in the
/// encrypted execution). Fresh encryptions are ~2^30 times quieter and are taken as exact.
pub fn simulate(c: &Circuit, inputs: &[i64], noise: Noise<'_>) -> Result<Vec<i64>, RuntimeError> {
    simulate_sampled(c, inputs, &mut NoiseSampler::new(c.params, noise))
}

/// [`simulate`] drawing from a sampler made once for many runs (the noise formulas are evaluated when
/// it is made).
pub fn simulate_sampled(c: &Circuit, inputs: &[i64], noise: &mut NoiseSampler<'_>) -> Result<Vec<i64>, RuntimeError> {
    if inputs.len() != c.n_inputs {
        return Err(RuntimeError::InputCount { expected: c.n_inputs, got: inputs.len() });
    }
    let shift = c.params.position_shift();
    let mut wires = Vec::with_capacity(c.n_inputs + c.pbs.len());
    wires.extend_from_slice(inputs);
    for p in &c.pbs {
        let (at_input, at_output) = noise.draw();
        let acc = p.input.eval(&wires).wrapping_add(at_input);
        wires.push(lookup(&c.tables[p.table as usize].values, acc, shift).wrapping_add(at_output));
    }
    Ok(c.outputs.iter().map(|o| o.eval(&wires)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::{Affine, Pbs, Table};

    /// tfhe-rs's default set: 2048 positions of 2^52.
    const POSITIONS: usize = 2048;
    const POSITION_SHIFT: u32 = 52;

    /// One input, one bootstrap with table `values[q] = q` (the position index plus 1024), output = it.
    fn identity_circuit() -> Circuit {
        Circuit {
            params: ParamSet::P2048B,
            n_inputs: 1,
            pbs: vec![Pbs { input: Affine { terms: vec![(0, 1)], bias: 0 }, table: 0, noise_std: 0.0, layer: 0 }],
            tables: vec![Table { values: (0..POSITIONS as i64).collect() }],
            outputs: vec![Affine { terms: vec![(1, 1)], bias: 0 }],
            layers: vec!["identity".into()],
        }
    }

    fn at_position(p: i64) -> i64 {
        p << POSITION_SHIFT
    }

    #[test]
    fn a_position_reads_its_table_entry() {
        let c = identity_circuit();
        for p in [-1024, -1, 0, 5, 1023] {
            // Anywhere inside the position, the centred modulus switch rounds down to it.
            for frac in [0, 1 << 40, (1 << POSITION_SHIFT) - 1] {
                let out = simulate(&c, &[at_position(p) + frac], Noise::None).unwrap();
                assert_eq!(out, vec![p + 1024], "position {p}");
            }
        }
    }

    #[test]
    fn outside_the_usable_half_the_mirrored_entry_comes_back_negated() {
        let c = identity_circuit();
        // p and p - 2048 share a coefficient with opposite signs (negacyclic rotation).
        assert_eq!(simulate(&c, &[at_position(1024)], Noise::None).unwrap(), vec![-(-1024 + 1024)]);
        assert_eq!(simulate(&c, &[at_position(1500)], Noise::None).unwrap(), vec![-(1500 - 2048 + 1024)]);
        assert_eq!(simulate(&c, &[at_position(-1025)], Noise::None).unwrap(), vec![-(-1025 + 2048 + 1024)]);
    }

    #[test]
    fn noise_moves_positions_by_about_the_switch_noise() {
        let mut c = identity_circuit();
        // Table values in half positions, well above the outputs' own noise (0.14 position).
        c.tables[0].values = (0..POSITIONS as i64).map(|q| q << 51).collect();
        let mut rng = Noise::rng(1);
        let moves: Vec<i64> = (0..2000)
            .map(|_| {
                let out = simulate(&c, &[at_position(0)], Noise::Gaussian(&mut rng)).unwrap()[0];
                (out as f64 / (1u64 << 51) as f64).round() as i64 - 1024
            })
            .collect();
        let var = moves.iter().map(|&m| (m as f64 + 0.5).powi(2)).sum::<f64>() / moves.len() as f64;
        // The set's switch noise is 4.8 positions; the output's own noise adds ~0.3 half position.
        assert!((4.3..5.4).contains(&var.sqrt()), "std {}", var.sqrt());
    }

    #[test]
    fn wrong_input_count_and_bad_circuits_are_errors() {
        let mut c = identity_circuit();
        assert_eq!(simulate(&c, &[], Noise::None), Err(RuntimeError::InputCount { expected: 1, got: 0 }));
        c.pbs[0].input.terms[0].0 = 1; // reads its own output
        assert!(c.validate().is_err());
        let mut c = identity_circuit();
        c.tables[0].values.pop();
        assert!(c.validate().is_err());
    }

    #[test]
    fn levels_group_independent_bootstraps() {
        let mut c = identity_circuit();
        c.pbs.push(Pbs { input: Affine { terms: vec![(0, 2)], bias: 0 }, table: 0, noise_std: 0.0, layer: 0 });
        c.pbs.push(Pbs { input: Affine { terms: vec![(1, 1), (2, 1)], bias: 0 }, table: 0, noise_std: 0.0, layer: 0 });
        assert_eq!(c.levels(), vec![vec![0, 1], vec![2]]);
    }
}
