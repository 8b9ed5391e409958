//! `fhec bench`: latency and throughput of a compiled model, against the physical limit of the machine.
//!
//! The physical limit for one sample is the bound no schedule beats: the longer of the critical path
//! (the circuit's depth in bootstraps, one after another, at the time of one bootstrap) and the
//! bootstraps spread evenly over the worker threads (`ceil(PBS / threads)` in sequence, at the time
//! per bootstrap of a full batch, which reads the bootstrapping key once for several), with both times
//! measured here and now (one thread, the model's parameter set). The runtime's dataflow scheduler
//! reaches it on circuits whose levels do not divide evenly over the threads, where running level by
//! level cannot.

use crate::DriverError;
use fhec_runtime::fhe::{self, EvalKey, SecretKey};
use fhec_runtime::{Circuit, ParamSet};
use serde_json::json;
use std::time::Instant;

/// What `bench` measured.
pub struct Report {
    pub model: String,
    pub params: ParamSet,
    pub pbs: usize,
    pub levels: usize,
    pub threads: usize,
    /// Bootstraps in sequence on `threads` workers: the critical path in bootstraps.
    pub critical_pbs: usize,
    /// One bootstrap alone, and per bootstrap in a full batch (the same where the set has no batch form).
    pub pbs_ms: f64,
    pub batched_pbs_ms: f64,
    pub keygen_s: f64,
    /// Per sample (encrypt + run + decrypt), milliseconds: median, min, max over the runs.
    pub latency_ms: [f64; 3],
    pub server_ms: [f64; 3],
    pub limit_ms: f64,
    /// Samples per second with a batch, on 1 thread and on `threads`.
    pub throughput: [f64; 2],
    pub batch: usize,
    pub peak_memory_mb: Option<f64>,
}

/// Median, min and max.
pub(crate) fn stats(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, DriverError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| DriverError::Usage(format!("thread pool: {e}")))
}

/// Single-thread time per bootstrap of `params` when `batch` run at once, median over `n` runs.
pub fn measure_pbs_ms(sk: &SecretKey, ek: &EvalKey, batch: usize, n: usize) -> Result<f64, DriverError> {
    let c = Circuit::identity_bootstraps(sk.params(), batch.max(1));
    let cts = sk.encrypt(&[0]);
    let one = pool(1)?;
    let times = (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            one.install(|| fhe::run_batch(&c, ek, &cts, 1))?;
            Ok(t.elapsed().as_secs_f64() * 1e3 / batch.max(1) as f64)
        })
        .collect::<Result<Vec<_>, DriverError>>()?;
    Ok(stats(times)[0])
}

/// The peak resident memory of this process (Linux), in MB.
pub(crate) fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Benchmarks the build in `dir` on the first sample of `x` (latency, `runs` times) and on a batch of
/// `batch` samples (throughput, 1 thread and `threads`).
pub fn bench(
    dir: &std::path::Path,
    x: &ndarray::ArrayD<f32>,
    runs: usize,
    batch: usize,
    threads: usize,
) -> Result<Report, DriverError> {
    let (client, post) = crate::tfhe::load_client(dir)?;
    let (server, digest) = crate::tfhe::load_server(dir)?;
    let xs = crate::samples(x, &client.input_shape, "input")?;
    if xs.is_empty() {
        return Err(DriverError::Usage("no samples to benchmark".into()));
    }
    let start = Instant::now();
    let (sk, compressed) = fhe::keygen(client.params);
    let (_, fp) = fhec_runtime::artifact::eval_key_bytes(&compressed);
    let ek = compressed.decompress();
    let keygen_s = start.elapsed().as_secs_f64();
    let pbs_ms = measure_pbs_ms(&sk, &ek, 1, 9)?;
    let batched_pbs_ms = measure_pbs_ms(&sk, &ek, fhe::MAX_BATCH, 3)?;
    let workers = pool(threads)?;
    let first = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1)).to_owned();
    let (mut total, mut server_t) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let cts = crate::tfhe::encrypt(&client, &sk, &fp, &first)?;
        let s = Instant::now();
        let out = workers.install(|| crate::tfhe::run(&server, &digest, &ek, &fp, &cts))?;
        server_t.push(s.elapsed().as_secs_f64() * 1e3);
        crate::tfhe::decrypt(&client, &post, &sk, &fp, &out)?;
        total.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Throughput: a batch of samples (the first ones, repeated if needed) in one run.
    let rows: Vec<usize> = (0..batch.max(1)).map(|i| i % x.shape()[0]).collect();
    let batch_x = x.select(ndarray::Axis(0), &rows);
    let cts = crate::tfhe::encrypt(&client, &sk, &fp, &batch_x)?;
    let mut throughput = [0.0; 2];
    for (slot, n) in [(0, 1), (1, threads)] {
        let p = pool(n)?;
        let t = Instant::now();
        p.install(|| crate::tfhe::run(&server, &digest, &ek, &fp, &cts))?;
        throughput[slot] = rows.len() as f64 / t.elapsed().as_secs_f64().max(1e-9);
    }
    let levels = server.circuit.levels();
    // No schedule beats the depth, nor the work spread evenly over the threads.
    let spread = server.circuit.pbs.len().div_ceil(threads.max(1));
    let critical_pbs = levels.len().max(spread);
    let limit_ms = (levels.len() as f64 * pbs_ms).max(spread as f64 * batched_pbs_ms);
    Ok(Report {
        model: client.model.clone(),
        params: client.params,
        pbs: server.circuit.pbs.len(),
        levels: levels.len(),
        threads,
        critical_pbs,
        pbs_ms,
        batched_pbs_ms,
        keygen_s,
        latency_ms: stats(total),
        server_ms: stats(server_t),
        limit_ms,
        throughput,
        batch: rows.len(),
        peak_memory_mb: peak_memory_mb(),
    })
}

impl Report {
    pub fn text(&self, name: &str) -> String {
        let ratio = if self.limit_ms > 0.0 {
            format!("{:.2}x the limit", self.server_ms[0] / self.limit_ms)
        } else {
            "no bootstraps".into()
        };
        format!(
            "{name}: {} PBS in {} levels, {} ({:.1} ms per PBS here, {:.1} in batches of {})\n  \
             latency per sample: median {:.1} ms (min {:.1}, max {:.1}); server {:.1} ms\n  \
             physical limit on {} threads: {} PBS in sequence = {:.1} ms; server time is {ratio}\n  \
             throughput, batch of {}: {:.2} samples/s on 1 thread, {:.2} on {} ({:.2}x)\n  \
             key generation {:.2} s; peak memory {}\n",
            self.pbs,
            self.levels,
            self.params,
            self.pbs_ms,
            self.batched_pbs_ms,
            fhe::MAX_BATCH,
            self.latency_ms[0],
            self.latency_ms[1],
            self.latency_ms[2],
            self.server_ms[0],
            self.threads,
            self.critical_pbs,
            self.limit_ms,
            self.batch,
            self.throughput[0],
            self.throughput[1],
            self.threads,
            self.throughput[1] / self.throughput[0].max(1e-9),
            self.keygen_s,
            self.peak_memory_mb.map_or("unknown".into(), |m| format!("{m:.0} MB")),
        )
    }

    pub fn json(&self, name: &str) -> serde_json::Value {
        json!({
            "name": name, "model": self.model, "parameter_set": self.params.name(), "pbs_count": self.pbs,
            "levels": self.levels, "threads": self.threads, "critical_path_pbs": self.critical_pbs, "pbs_ms": self.pbs_ms,
            "batched_pbs_ms": self.batched_pbs_ms,
            "latency_ms": {"median": self.latency_ms[0], "min": self.latency_ms[1], "max": self.latency_ms[2]},
            "server_ms": {"median": self.server_ms[0], "min": self.server_ms[1], "max": self.server_ms[2]},
            "physical_limit_ms": self.limit_ms,
            "ratio_to_limit": if self.limit_ms > 0.0 { json!(self.server_ms[0] / self.limit_ms) } else { json!(null) },
            "batch": self.batch, "throughput_1_thread": self.throughput[0], "throughput_threads": self.throughput[1],
            "keygen_s": self.keygen_s, "peak_memory_mb": self.peak_memory_mb,
        })
    }
}
