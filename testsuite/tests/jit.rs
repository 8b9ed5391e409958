//! The JIT (`fhec-jit`) against the interpreter (`fhec_runtime::simulate`, the oracle) on every corpus
//! model that lowers: bit-identical output accumulators on all of its samples, noise-free and with the
//! noise model (one seed for both), under two parameter sets. Random circuits are covered in
//! `compiler/jit/tests/differential.rs`.

use fhec_ir::Tensor;
use fhec_lower::tfhe::{Options, compile};
use fhec_lower::{Engine, Simulator};
use fhec_runtime::{Noise, ParamSet};
use fhec_testsuite::*;

#[test]
fn every_corpus_circuit_runs_bit_identically_in_the_jit_and_the_interpreter() {
    let mut checked = Vec::new();
    for dir in cases() {
        let name = case_name(&dir);
        let m = fhec::load_model(&dir.join("model.onnx")).unwrap();
        let x = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
        let shape = m.node(m.inputs()[0]).ty.shape.clone();
        let xs: Vec<Tensor> =
            x.outer_iter().map(|s| Tensor::from_f32(shape.clone(), s.iter().copied().collect()).unwrap()).collect();
        // The 512-position set holds the MLPs' bootstraps with fewer weight bits.
        for (params, weight_bits) in [(ParamSet::P512A, 3), (ParamSet::P1024, 6), (ParamSet::P2048B, 6)] {
            // Op models the lowering does not take are listed in `simulate.rs`.
            let Ok(compiled) = compile(
                &m,
                &fhec_lower::Calibration::from_samples(xs.clone()).unwrap(),
                &Options { params, weight_bits, ..Options::default() },
            ) else {
                continue;
            };
            let inputs: Vec<i64> = xs.iter().flat_map(|x| compiled.encode(x).expect("encodes")).collect();
            let (jit, fallback) = Simulator::new(&compiled.circuit, Engine::Jit, 1);
            assert_eq!((jit.engine(), fallback), ("jit", None), "{name}");
            let (interp, _) = Simulator::new(&compiled.circuit, Engine::Interpreter, 1);
            assert_eq!(interp.engine(), "interpreter");
            let n = xs.len();
            assert_eq!(
                jit.run(&inputs, n, Noise::None).unwrap(),
                interp.run(&inputs, n, Noise::None).unwrap(),
                "{name} under {params}"
            );
            let (mut a, mut b) = (Noise::rng(11), Noise::rng(11));
            assert_eq!(
                jit.run(&inputs, n, Noise::Gaussian(&mut a)).unwrap(),
                interp.run(&inputs, n, Noise::Gaussian(&mut b)).unwrap(),
                "{name} under {params}, noisy"
            );
            checked.push(format!("{name} ({params}, {} bootstraps)", compiled.pbs_count()));
        }
    }
    eprintln!("{} circuits checked:\n{}", checked.len(), checked.join("\n"));
    // Every trained model: the MLP and the linear model under all three sets, the CNNs under the two
    // larger ones at least (at 3 weight bits, one of them is too noisy for 512 positions).
    for (name, sets) in [("mlp_wine", 3), ("logreg_cancer_torch", 3), ("cnn_digits", 2), ("cnn_digits_maxpool", 2)] {
        assert!(checked.iter().filter(|c| c.starts_with(&format!("{name} "))).count() >= sets, "{name}");
    }
    assert!(checked.len() > 150, "{} circuits", checked.len());
}
