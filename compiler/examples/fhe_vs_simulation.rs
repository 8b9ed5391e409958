//! Whether a parameter set's encrypted runs err as its noisy simulation says, end to end on a corpus
//! model: one candidate (set, weight bits, output weight cap) compiled, every sample run encrypted
//! under several fresh keys, and each output's error against the noise-free simulation compared with
//! the noisy simulation's (per key: mean and std of the error in output positions, class agreement
//! with the noise-free circuit). A set whose keys add an offset or extra noise shows it here.
//!
//! `cargo run --release -p fhec --example fhe_vs_simulation -- testsuite/models/mlp_wine
//! V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40 2 8 KEYS`

use fhec_lower::tfhe::Options;
use fhec_lower::{Calibration, Prepared, optimize};
use fhec_runtime::{Noise, ParamSet, fhe, simulate};
use std::path::Path;
use std::time::Instant;

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0)
}

/// Mean and standard deviation.
fn moments(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: fhe_vs_simulation MODEL_DIR PARAMETER_SET WEIGHT_BITS OUTPUT_CAP KEYS");
        std::process::exit(2);
    }
    let dir = Path::new(&a[1]);
    let params = ParamSet::from_name(&a[2]).expect("a parameter set name");
    let weight_bits: u32 = a[3].parse().expect("weight bits");
    let output_weight_max: f64 = a[4].parse().expect("output weight cap");
    let keys: usize = a[5].parse().expect("keys");
    let module = fhec::load_model(&dir.join("model.onnx")).expect("model.onnx");
    let x = fhec::npy::read_samples(&dir.join("inputs.npy")).expect("inputs.npy");
    let shape = module.node(module.inputs()[0]).ty.shape.clone();
    let samples = fhec::samples(&x, &shape, "input").expect("samples");
    let calibration = Calibration::from_samples(samples.clone()).expect("calibration");
    let prepared = Prepared::new(&module, &calibration, &optimize::Config::default()).expect("lowering");
    let opts = Options { params, weight_bits, output_weight_max, ..Options::default() };
    let c = prepared.tfhe(&opts).expect("compiles");
    let circuit = &c.circuit;
    let inputs: Vec<Vec<i64>> = samples.iter().map(|x| c.encode(x).expect("encode")).collect();
    let n_out = circuit.outputs.len();
    let unit = (1u64 << params.position_shift()) as f64;
    let class = |acc: &[i64]| argmax(&c.decode(acc).expect("decode")[0].to_f32_vec());
    let clean: Vec<Vec<i64>> = inputs.iter().map(|i| simulate(circuit, i, Noise::None).expect("simulate")).collect();
    let clean_class: Vec<usize> = clean.iter().map(|o| class(o)).collect();
    // Errors in output positions and class agreement with the noise-free circuit.
    let score = |outs: &[Vec<i64>]| {
        let errors: Vec<f64> = outs
            .iter()
            .zip(clean.iter().cycle())
            .flat_map(|(o, w)| o.iter().zip(w).map(|(&g, &w)| g.wrapping_sub(w) as f64 / unit))
            .collect();
        let agree = outs.iter().zip(clean_class.iter().cycle()).filter(|(o, k)| class(o) == **k).count();
        let (mean, std) = moments(&errors);
        (mean, std, 100.0 * agree as f64 / outs.len() as f64)
    };
    println!(
        "{}: {} bootstraps, {} outputs, {} samples, weight bits {weight_bits}, output cap {output_weight_max}",
        params.name(),
        c.pbs_count(),
        n_out,
        samples.len()
    );
    let mut rng = Noise::rng(11);
    let reps = 20;
    for inflation in [1.0, 1.3] {
        let noisy: Vec<Vec<i64>> = (0..reps)
            .flat_map(|_| {
                inputs
                    .iter()
                    .map(|i| simulate(circuit, i, Noise::Inflated(&mut rng, inflation)).expect("simulate"))
                    .collect::<Vec<_>>()
            })
            .collect();
        let (mean, std, agree) = score(&noisy);
        println!(
            "simulated, noise x{inflation} ({reps} draws): output error mean {mean:+.3} std {std:.3} positions; classes {agree:.2}%"
        );
    }
    for k in 0..keys {
        let t = Instant::now();
        let (sk, ek) = fhe::keygen(params);
        let ek = ek.decompress();
        let flat: Vec<i64> = inputs.iter().flatten().copied().collect();
        let out = sk.decrypt(&fhe::run_batch(circuit, &ek, &sk.encrypt(&flat), inputs.len()).expect("run"));
        let outs: Vec<Vec<i64>> = out.chunks(n_out).map(<[i64]>::to_vec).collect();
        let (mean, std, agree) = score(&outs);
        println!(
            "key {k}: output error mean {mean:+.3} std {std:.3} positions; classes {agree:.2}% ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
    }
}
