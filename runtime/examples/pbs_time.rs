//! Measures one keyswitch + bootstrap (single thread, median of 40) for every parameter set fhec may
//! choose: the numbers behind `ParamSet::pbs_ms`. Run with `cargo run -p fhec-runtime --example pbs_time`.

use fhec_runtime::ParamSet;
use std::time::Instant;
use tfhe::shortint::{ClientKey, ServerKey};

fn main() {
    for set in ParamSet::ALL {
        let ck = ClientKey::new(set.tfhe());
        let start = Instant::now();
        let sk = ServerKey::new(&ck);
        let keygen = start.elapsed();
        let ct = ck.encrypt(1);
        let lut = sk.generate_lookup_table(|x| x);
        let mut times: Vec<f64> = (0..40)
            .map(|_| {
                let t = Instant::now();
                let _ = std::hint::black_box(sk.apply_lookup_table(&ct, &lut));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{:52} {:5} positions  PBS median {:6.2} ms (min {:6.2}; table: {:5.1})  server key {:5.2} s",
            set.name(),
            set.positions(),
            times[20],
            times[0],
            set.pbs_ms(),
            keygen.as_secs_f64()
        );
    }
}
