//! The JIT against the interpreter (`fhec_runtime::simulate`, the oracle) on thousands of random
//! circuits: bit-identical outputs, noise-free and noisy (one seed for both). Circuits are drawn to
//! reach every corner of the semantics: weights and biases over the whole 64-bit range (wrap-around),
//! accumulators anywhere on the torus (positions outside the usable half read mirrored, negated
//! entries), every parameter set, bootstraps reading inputs and earlier bootstraps, outputs reading
//! any wire, batches longer than one chunk. The corpus models are checked the same way in
//! `testsuite/tests/jit.rs`.

use fhec_jit::{Jit, JitError};
use fhec_runtime::{Affine, Circuit, Noise, ParamSet, Pbs, Table, simulate};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A weight: often small (as the compiler makes them), sometimes anywhere in i64.
fn weight(r: &mut StdRng) -> i64 {
    match r.random_range(0..10) {
        0 => r.random::<i64>(),
        1 => *[i64::MIN, i64::MAX, 0, 1, -1].get(r.random_range(0..5)).unwrap(),
        _ => r.random_range(-64..=64),
    }
}

fn affine(r: &mut StdRng, wires: u32) -> Affine {
    let n = if wires == 0 { 0 } else { r.random_range(0..=6.min(wires as usize * 2)) };
    let terms = (0..n).map(|_| (r.random_range(0..wires), weight(r))).collect();
    Affine { terms, bias: if r.random_bool(0.5) { r.random::<i64>() } else { 0 } }
}

fn random_circuit(r: &mut StdRng) -> Circuit {
    let params = ParamSet::ALL[r.random_range(0..ParamSet::ALL.len())];
    let n = params.positions();
    let n_inputs = r.random_range(0..6usize);
    let tables: Vec<Table> = (0..r.random_range(1..4))
        .map(|_| Table {
            values: (0..n).map(|q| if r.random_bool(0.5) { r.random::<i64>() } else { q as i64 * 7 - 3 }).collect(),
        })
        .collect();
    let n_pbs = if n_inputs == 0 { 0 } else { r.random_range(0..12usize) };
    let pbs = (0..n_pbs)
        .map(|k| Pbs {
            input: affine(r, (n_inputs + k) as u32),
            table: r.random_range(0..tables.len() as u32),
            noise_std: 0.0,
            layer: 0,
        })
        .collect();
    let wires = (n_inputs + n_pbs) as u32;
    let outputs = (0..r.random_range(0..5)).map(|_| affine(r, wires)).collect();
    Circuit { params, n_inputs, pbs, tables, outputs, layers: vec!["random".into()] }
}

/// Inputs anywhere on the torus or near position boundaries of the circuit's set.
fn random_inputs(r: &mut StdRng, c: &Circuit, samples: usize) -> Vec<i64> {
    let shift = c.params.position_shift();
    (0..c.n_inputs * samples)
        .map(|_| match r.random_range(0..3) {
            0 => r.random::<i64>(),
            1 => (r.random_range(-(c.params.positions() as i64)..c.params.positions() as i64) << shift)
                .wrapping_add(r.random_range(-2..=2)),
            _ => r.random_range(-1000..1000),
        })
        .collect()
}

fn interpreter(c: &Circuit, inputs: &[i64], samples: usize, mut noise: Noise<'_>) -> Vec<i64> {
    (0..samples)
        .flat_map(|s| simulate(c, &inputs[s * c.n_inputs..(s + 1) * c.n_inputs], noise.reborrow()).unwrap())
        .collect()
}

#[test]
fn random_circuits_run_bit_identically_in_the_jit_and_the_interpreter() {
    let mut r = StdRng::seed_from_u64(0xfec);
    let mut checked_values = 0usize;
    for case in 0..2000 {
        let c = random_circuit(&mut r);
        let jit = Jit::compile(&c).unwrap_or_else(|e| panic!("case {case}: {e}"));
        // Mostly small batches; some longer than one chunk of the JIT's noise buffer.
        let samples = if case % 50 == 0 { 150 } else { r.random_range(0..4) };
        let inputs = random_inputs(&mut r, &c, samples);
        assert_eq!(
            jit.run(&inputs, samples, Noise::None).unwrap(),
            interpreter(&c, &inputs, samples, Noise::None),
            "case {case}: {c:?}"
        );
        let seed = r.random::<u64>();
        let (mut a, mut b) = (Noise::rng(seed), Noise::rng(seed));
        let got = jit.run(&inputs, samples, Noise::Gaussian(&mut a)).unwrap();
        assert_eq!(got, interpreter(&c, &inputs, samples, Noise::Gaussian(&mut b)), "case {case}, noisy: {c:?}");
        checked_values += got.len();
    }
    assert!(checked_values > 5000, "only {checked_values} output values compared");
}

#[test]
fn noise_streams_continue_across_runs_as_in_the_interpreter() {
    // The search runs many samples from one generator: the JIT must consume it exactly as a loop of
    // interpreter runs does, so that the next draw after a run is the same too.
    let mut r = StdRng::seed_from_u64(3);
    let c = loop {
        let c = random_circuit(&mut r);
        if c.pbs.len() > 3 {
            break c;
        }
    };
    let jit = Jit::compile(&c).unwrap();
    let inputs = random_inputs(&mut r, &c, 70);
    let (mut a, mut b) = (Noise::rng(9), Noise::rng(9));
    for _ in 0..2 {
        assert_eq!(
            jit.run(&inputs, 70, Noise::Inflated(&mut a, 1.3)).unwrap(),
            interpreter(&c, &inputs, 70, Noise::Inflated(&mut b, 1.3))
        );
    }
}

#[test]
fn invalid_circuits_and_wrong_input_counts_are_errors() {
    let mut r = StdRng::seed_from_u64(5);
    let mut c = loop {
        let c = random_circuit(&mut r);
        if !c.pbs.is_empty() {
            break c;
        }
    };
    let jit = Jit::compile(&c).unwrap();
    assert!(matches!(jit.run(&vec![0; c.n_inputs + 1], 1, Noise::None), Err(JitError::Circuit(_))));
    // A bootstrap reading its own output would read memory the code never wrote: refused up front.
    let k = c.pbs.len() - 1;
    c.pbs[k].input.terms.push(((c.n_inputs + k) as u32, 1));
    assert!(matches!(Jit::compile(&c), Err(JitError::Circuit(_))));
    c.pbs[k].input.terms.pop();
    c.tables[0].values.pop();
    assert!(matches!(Jit::compile(&c), Err(JitError::Circuit(_))));
}
