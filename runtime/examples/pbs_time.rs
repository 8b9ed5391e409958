//! Measures keyswitch + bootstrap, single thread, for every parameter set fhec may choose, as the
//! server runs them: one alone, and per bootstrap in a batch of `fhe::MAX_BATCH` (one thread runs
//! them as one batch where the set has a batch form). Medians of 15 runs: the numbers behind
//! `ParamSet::pbs_ms` and `ParamSet::batched_pbs_ms`. Run with
//! `cargo run -p fhec-runtime --example pbs_time`.

use fhec_runtime::fhe::{self, MAX_BATCH};
use fhec_runtime::{Circuit, ParamSet};
use std::time::Instant;

fn main() {
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread pool");
    for set in ParamSet::ALL {
        let start = Instant::now();
        let (sk, compressed) = fhe::keygen(set);
        let keygen = start.elapsed();
        let ek = compressed.decompress();
        let cts = sk.encrypt(&[0]);
        let per_pbs = |n: usize| {
            let c = Circuit::identity_bootstraps(set, n);
            let mut times: Vec<f64> = (0..15)
                .map(|_| {
                    let t = Instant::now();
                    one.install(|| fhe::run_batch(&c, &ek, &cts, 1)).expect("the circuit runs");
                    t.elapsed().as_secs_f64() * 1e3 / n as f64
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let (single, batched) = (per_pbs(1), per_pbs(MAX_BATCH));
        println!(
            "{:52} {:5} positions  alone {single:6.2} ms (table {:5.1}), in batches of {MAX_BATCH} {batched:6.2} ms (table {:5.1}), {:.2}x; keygen {:5.2} s",
            set.name(),
            set.positions(),
            set.pbs_ms(),
            set.batched_pbs_ms(),
            single / batched,
            keygen.as_secs_f64()
        );
    }
}
