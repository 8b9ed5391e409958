//! Where a TFHE candidate's fidelity goes: one candidate (parameter set, weight bits, output weight
//! cap) of a corpus model compiled and simulated without noise, with the set's noise and with it
//! inflated 1.3x (as the search scores), against the float model's classes; the samples that flip
//! under noise, with the float model's margin between its two best classes. With a split, the
//! first samples calibrate and the rest are scored (held out).
//!
//! `cargo run --release -p fhec --example precision_probe -- testsuite/models/cnn_digits_nopad
//! V1_2_PARAM_MESSAGE_2_CARRY_1_KS_PBS_GAUSSIAN_2M128 3 32 [SPLIT]`; `BC=0` turns bias correction off.

use fhec_ir::Tensor;
use fhec_lower::tfhe::{Compiled, Options};
use fhec_lower::{Calibration, Prepared, optimize};
use fhec_runtime::{Noise, ParamSet};
use std::path::Path;

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0)
}

/// Class agreement with `float` over `reps` runs of the samples `xs`, noise inflated by `inflation` (none: noise-free).
fn agreement(c: &Compiled, xs: &[Tensor], float: &[usize], inflation: Option<f64>, reps: usize) -> (f64, Vec<usize>) {
    let mut rng = Noise::rng(7);
    let mut flips = vec![0; xs.len()];
    for _ in 0..reps {
        for (i, x) in xs.iter().enumerate() {
            let noise = match inflation {
                None => Noise::None,
                Some(m) => Noise::Inflated(&mut rng, m),
            };
            let out = c.simulate(x, noise).expect("simulation");
            flips[i] += usize::from(argmax(&out[0].to_f32_vec()) != float[i]);
        }
    }
    let n = (reps * xs.len()) as f64;
    (100.0 * (1.0 - flips.iter().sum::<usize>() as f64 / n), flips)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: precision_probe MODEL_DIR PARAMETER_SET WEIGHT_BITS OUTPUT_CAP [SPLIT]");
        std::process::exit(2);
    }
    let dir = Path::new(&a[1]);
    let params = ParamSet::from_name(&a[2]).expect("a parameter set name");
    let weight_bits: u32 = a[3].parse().expect("weight bits");
    let output_weight_max: f64 = a[4].parse().expect("output weight cap");
    let module = fhec::load_model(&dir.join("model.onnx")).expect("model.onnx");
    let x = fhec::npy::read_samples(&dir.join("inputs.npy")).expect("inputs.npy");
    let shape = module.node(module.inputs()[0]).ty.shape.clone();
    let all = fhec::samples(&x, &shape, "input").expect("samples");
    let split = a.get(5).map_or(all.len(), |s| s.parse::<usize>().expect("split").min(all.len()));
    let (cal, scored) = if split < all.len() { (&all[..split], &all[split..]) } else { (&all[..], &all[..]) };
    let calibration = Calibration::from_samples(cal.to_vec()).expect("calibration");
    let prepared = Prepared::new(&module, &calibration, &optimize::Config::default()).expect("lowering");
    let opts = Options {
        params,
        weight_bits,
        output_weight_max,
        bias_correction: std::env::var("BC").map_or(true, |v| v != "0"),
        ..Options::default()
    };
    let c = match prepared.tfhe(&opts) {
        Ok(c) => c,
        Err(e) => {
            println!("does not compile: {e}");
            return;
        }
    };
    let floats: Vec<Vec<f32>> = scored
        .iter()
        .map(|x| fhec_interp::run(&module, std::slice::from_ref(x)).expect("float model")[0].to_f32_vec())
        .collect();
    let float: Vec<usize> = floats.iter().map(|v| argmax(v)).collect();
    let values: Vec<f32> = floats.iter().flatten().copied().collect();
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / values.len() as f32).sqrt();
    println!("pbs {} held_out {:?}", c.pbs_count(), c.held_out);
    let (_, flips) = agreement(&c, scored, &float, Some(1.3), 10);
    for (i, &f) in flips.iter().enumerate().filter(|(_, f)| **f > 0) {
        let mut s = floats[i].clone();
        s.sort_by(|a, b| b.total_cmp(a));
        let margin = s[0] - s.get(1).copied().unwrap_or(s[0]);
        println!("  sample {i}: {f}/10 flips, float margin {margin:.3} ({:.2}% of logit std)", 100.0 * margin / std);
    }
    println!("noise-free: {:.2}%", agreement(&c, scored, &float, None, 1).0);
    println!("noise x1.0: {:.2}%", agreement(&c, scored, &float, Some(1.0), 10).0);
    println!("noise x1.3: {:.2}%", agreement(&c, scored, &float, Some(1.3), 10).0);
}
