//! `fhec bench PLAN --input X.npy --labels y.npy`: a training plan's encrypted training, timed.
//! Keys are generated once; each run then encrypts the set, runs every round on the server's side
//! (refreshing between rounds on the data owner's), and decrypts the weights, through the same
//! bytes a deployment exchanges. Times are medians with min and max; every run's weights are
//! compared with the float64 run of the same algorithm.

use super::deploy::{Owner, Trainable, keygen};
use super::{Dataset, Scaling};
use crate::DriverError;
use crate::bench::stats;
use crate::keyfile::Protection;
use std::path::Path;
use std::time::Instant;

/// What `fhec bench` measured on a training plan.
#[derive(Clone, Debug)]
pub struct TrainBench {
    pub samples: usize,
    pub features: usize,
    pub iterations: usize,
    pub rounds: usize,
    pub ring_log_n: usize,
    pub runs: usize,
    pub keygen_s: f64,
    pub eval_key_bytes: usize,
    /// Median, min and max over the runs.
    pub encrypt_s: [f64; 3],
    pub server_s: [f64; 3],
    pub refresh_s: [f64; 3],
    pub decrypt_s: [f64; 3],
    /// Largest distance of any run's weights from the float64 run of the same algorithm.
    pub max_distance: f64,
    pub peak_memory_mb: Option<f64>,
}

/// Benchmarks the plan in `dir` on `ds` over `runs` runs; `progress` gets the runs done.
pub fn bench(
    dir: &Path,
    ds: &Dataset,
    runs: usize,
    mut progress: impl FnMut(usize),
) -> Result<TrainBench, DriverError> {
    let runs = runs.max(1);
    let keys = tempfile::tempdir().map_err(|e| DriverError::Io(format!("temporary key directory: {e}")))?;
    let (eval_key_bytes, _, keygen_took) = keygen(dir, keys.path(), &Protection::None)?;
    let owner = Owner::load(dir, keys.path(), &Protection::None)?;
    let served = Trainable::load(dir)?;
    let eval = std::fs::read(keys.path().join("eval.key"))
        .map_err(|e| DriverError::Io(format!("reading the evaluation key: {e}")))?;
    let (key, fingerprint) = served.read_eval_key(&eval, "the evaluation key")?;
    drop(eval);
    let plan = served.plan().clone();
    let scaling = Scaling::fit(ds, plan.hyper.task, owner.plan.clip);
    let reference = fhec_ckks::train::reference(&plan, &scaling.features(&ds.x), &scaling.targets(&ds.y), false);

    let (mut encrypt, mut server, mut refresh, mut decrypt) = (vec![], vec![], vec![], vec![]);
    let (mut max_distance, mut rounds) = (0.0f64, 0);
    for run in 0..runs {
        let t = Instant::now();
        let (data, owner_file) = owner.encrypt_set(ds)?;
        encrypt.push(t.elapsed().as_secs_f64());
        let (mut server_s, mut refresh_s, mut state) = (0.0, 0.0, None::<Vec<u8>>);
        rounds = 0;
        loop {
            let t = Instant::now();
            let input = state.as_deref().map(|s| (s, "the refreshed state"));
            let (out, end, total) =
                served.round(&key, &fingerprint, (&data, "the training set"), input, None, |_| ())?;
            server_s += t.elapsed().as_secs_f64();
            rounds += 1;
            if end >= total {
                state = Some(out);
                break;
            }
            let t = Instant::now();
            state = Some(owner.refresh_bytes(&out, "the state")?.0);
            refresh_s += t.elapsed().as_secs_f64();
        }
        server.push(server_s);
        refresh.push(refresh_s);
        let t = Instant::now();
        let state = state.expect("one round at least");
        let (w, _) = owner.decrypt_bytes(&state, "the state", &owner_file, "the feature scaling")?;
        decrypt.push(t.elapsed().as_secs_f64());
        let gap = w.iter().zip(&reference).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        max_distance = max_distance.max(gap);
        progress(run + 1);
    }
    Ok(TrainBench {
        samples: plan.samples,
        features: plan.columns - 1,
        iterations: plan.hyper.iterations,
        rounds,
        ring_log_n: plan.ring.log_n,
        runs,
        keygen_s: keygen_took.as_secs_f64(),
        eval_key_bytes,
        encrypt_s: stats(encrypt),
        server_s: stats(server),
        refresh_s: stats(refresh),
        decrypt_s: stats(decrypt),
        max_distance,
        peak_memory_mb: crate::bench::peak_memory_mb(),
    })
}

impl TrainBench {
    pub fn text(&self, name: &str) -> String {
        let s = |[m, lo, hi]: [f64; 3]| format!("{m:.2} s (min {lo:.2}, max {hi:.2})");
        let mut t = format!(
            "{name}: encrypted training, {} samples x {} features, {} iterations in {} round{}, ring 2^{}, {} runs\n",
            self.samples,
            self.features,
            self.iterations,
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.ring_log_n,
            self.runs
        );
        t += &format!(
            "  key generation   {:.2} s (evaluation key {:.1} MB)\n",
            self.keygen_s,
            self.eval_key_bytes as f64 / 1e6
        );
        t += &format!("  encrypt (owner)  {}\n", s(self.encrypt_s));
        t += &format!(
            "  server           {} = {:.2} s per iteration\n",
            s(self.server_s),
            self.server_s[0] / self.iterations as f64
        );
        t += &format!("  refresh (owner)  {}\n", s(self.refresh_s));
        t += &format!("  decrypt (owner)  {}\n", s(self.decrypt_s));
        t += &format!("  weights: at most {:.1e} from the float64 run of the same algorithm\n", self.max_distance);
        if let Some(mb) = self.peak_memory_mb {
            t += &format!("  peak memory {:.2} GB\n", mb / 1024.0);
        }
        t
    }

    pub fn json(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "model": name, "kind": "training", "samples": self.samples, "features": self.features,
            "iterations": self.iterations, "rounds": self.rounds, "ring_log_n": self.ring_log_n, "runs": self.runs,
            "keygen_s": self.keygen_s, "eval_key_bytes": self.eval_key_bytes,
            "encrypt_s": self.encrypt_s, "server_s": self.server_s, "refresh_s": self.refresh_s,
            "decrypt_s": self.decrypt_s, "server_s_per_iteration": self.server_s[0] / self.iterations as f64,
            "max_distance_from_float64": self.max_distance, "peak_memory_mb": self.peak_memory_mb,
        })
    }
}
