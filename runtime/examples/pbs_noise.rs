//! Measures, for every parameter set, the mean read error per key and the noise of bootstrap outputs
//! (a table of varied values) against the noise formulas: `cargo run -p fhec-runtime --example
//! pbs_noise` (about 4 minutes on 2 cores).
use fhec_runtime::fhe;
use fhec_runtime::{Affine, Circuit, ParamSet, Pbs, Table};

fn main() {
    // The mean read error of one key's bootstraps (1000 reads at position centres, identity table in
    // half positions): its spread over keys is the key-dependent offset.
    for params in ParamSet::ALL {
        let means: Vec<f64> = (0..3)
            .map(|_| {
                let (sk, ek) = fhe::keygen(params);
                let ek = ek.decompress();
                let (shift, half) = (params.position_shift(), params.positions() as i64 / 2);
                let n = 1000;
                let c = Circuit {
                    params,
                    n_inputs: n,
                    pbs: (0..n)
                        .map(|i| Pbs {
                            input: Affine { terms: vec![(i as u32, 1)], bias: 0 },
                            table: 0,
                            noise_std: 0.0,
                            layer: 0,
                        })
                        .collect(),
                    tables: vec![Table {
                        values: (0..params.positions() as i64).map(|q| (q - half) << (shift - 1)).collect(),
                    }],
                    outputs: (0..n).map(|i| Affine { terms: vec![((n + i) as u32, 1)], bias: 0 }).collect(),
                    layers: vec!["identity".into()],
                };
                let pos: Vec<i64> = (0..n as i64).map(|i| (i % (half - 100)) - (half - 100) / 2).collect();
                let phases: Vec<i64> = pos.iter().map(|p| (p << shift) + (1 << (shift - 1))).collect();
                let got = sk.decrypt(&fhe::run_batch(&c, &ek, &sk.encrypt(&phases), 1).unwrap());
                got.iter().zip(&pos).map(|(&g, &p)| g as f64 / (1u64 << (shift - 1)) as f64 - p as f64).sum::<f64>()
                    / n as f64
            })
            .collect();
        println!(
            "{:52} mean read error per key: {:?} positions",
            params.name(),
            means.iter().map(|m| (m * 100.0).round() / 100.0).collect::<Vec<_>>()
        );
    }
    for params in ParamSet::ALL {
        let (sk, ek) = fhe::keygen(params);
        let ek = ek.decompress();
        let n = 400;
        let c = Circuit {
            params,
            n_inputs: n,
            pbs: (0..n)
                .map(|i| Pbs {
                    input: Affine { terms: vec![(i as u32, 1)], bias: 0 },
                    table: 0,
                    noise_std: 0.0,
                    layer: 0,
                })
                .collect(),
            tables: vec![Table {
                values: (0..params.positions() as i64)
                    .map(|q| (q.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) >> 2) & !((1i64 << 58) - 1))
                    .collect(),
            }],
            outputs: (0..n).map(|i| Affine { terms: vec![((n + i) as u32, 1)], bias: 0 }).collect(),
            layers: vec!["zero".into()],
        };
        let phases: Vec<i64> = (0..n as i64).map(|i| (i - 200) << params.position_shift()).collect();
        let got = sk.decrypt(&fhe::run_batch(&c, &ek, &sk.encrypt(&phases), 1).unwrap());
        let unit = (1u64 << params.position_shift()) as f64;
        // Table values are multiples of 2^58, far above the noise: the remainder is the noise.
        let vals: Vec<f64> = got
            .iter()
            .map(|&g| ((g.wrapping_add(1 << 57)) & ((1i64 << 58) - 1)) as f64 - (1u64 << 57) as f64)
            .map(|v| v / unit)
            .collect();
        let mean = vals.iter().sum::<f64>() / n as f64;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        println!(
            "{:52} pbs output noise: measured std {std:.3} (mean {mean:.3}) predicted {:.3} positions",
            params.name(),
            params.noise().pbs_var.sqrt()
        );
    }
}
