//! Encrypted CKKS runs on this machine (feature `ckks`): key generation, then batches encrypted,
//! evaluated with the evaluation keys only and decrypted, for `fhec predict --mode fhe` and
//! `fhec bench`; and what they report.

#[allow(unused_imports)] // the encrypted half is behind the feature
use super::*;

/// How an encrypted CKKS run went.
#[derive(Clone, Debug)]
pub struct FheRun {
    pub outputs: Vec<(String, Stacked)>,
    pub keygen: std::time::Duration,
    pub client: std::time::Duration,
    pub server: std::time::Duration,
    pub batches: usize,
    /// Samples per batch at most.
    pub batch_size: usize,
    /// Largest distance between an encrypted output and the simulation's.
    pub max_error: f64,
}

/// The client's and the server's side of encrypted runs on this machine.
#[cfg(feature = "ckks")]
struct Session<'a> {
    ctx: &'a fhec_ckks::backend::Context,
    client: fhec_ckks::backend::ClientKey,
    eval: fhec_ckks::backend::EvalKey,
    server: fhec_ckks::backend::Server<'a>,
    plan: &'a Plan,
    packing: Packing,
    /// What the client encrypts with (no weights).
    layout: fhec_ckks::ClientLayout,
}

/// One batch through a [`Session`].
#[cfg(feature = "ckks")]
struct BatchRun {
    outputs: Vec<Vec<f64>>,
    client: std::time::Duration,
    server: std::time::Duration,
    /// Largest distance between an encrypted output and the simulation's.
    max_error: f64,
    input_bytes: usize,
}

#[cfg(feature = "ckks")]
impl<'a> Session<'a> {
    /// The server's preparation of the plan (polynomials, matrices), then key generation (timed):
    /// relinearization and the rotations the server's evaluation uses.
    fn new(
        ctx: &'a fhec_ckks::backend::Context,
        plan: &'a Plan,
        packing: Packing,
    ) -> Result<(Session<'a>, std::time::Duration), DriverError> {
        let server = fhec_ckks::backend::Server::new(ctx, plan, packing).map_err(ckks_error)?;
        let t = std::time::Instant::now();
        let (client, eval) = ctx.keygen(&server.galois_elements()).map_err(ckks_error)?;
        let keygen = t.elapsed();
        let layout = plan.client_layout(ctx.params, packing).map_err(ckks_error)?;
        Ok((Session { ctx, client, eval, server, plan, packing, layout }, keygen))
    }

    /// Samples one [`Session::run`] takes at most: one batch-major batch, or one feature-major
    /// ciphertext per worker.
    fn chunk(&self) -> Result<usize, DriverError> {
        let per = self.plan.samples_per_ciphertext(self.ctx.params, self.packing).map_err(ckks_error)?;
        Ok(match self.packing {
            Packing::BatchMajor => per,
            Packing::FeatureMajor => per * rayon::current_num_threads(),
        })
    }

    /// Encrypts `samples` (the plan's inputs, at most one batch), evaluates, decrypts, and compares
    /// with the simulation.
    fn run(&self, samples: &[Vec<f64>]) -> Result<BatchRun, DriverError> {
        use std::time::Instant;
        let t = Instant::now();
        let cts = self.ctx.encrypt(&self.client, &self.layout, samples).map_err(ckks_error)?;
        let mut client = t.elapsed();
        let t = Instant::now();
        let out = self.server.evaluate(&self.eval, &cts).map_err(ckks_error)?;
        let server = t.elapsed();
        let t = Instant::now();
        let outputs = self.ctx.decrypt(&self.client, &out).map_err(ckks_error)?;
        client += t.elapsed();
        let mut max_error = 0f64;
        for (x, g) in samples.iter().zip(&outputs) {
            let want = self.plan.eval(x, &mut Reads::default()).map_err(ckks_error)?;
            max_error = want.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(max_error, f64::max);
        }
        Ok(BatchRun { outputs, client, server, max_error, input_bytes: cts.bytes() })
    }
}

/// Encrypted run of every sample, all on this machine: key generation, then batches (batch-major:
/// up to [`Ring::slots`] samples; feature-major: a full ciphertext per worker) encrypted, evaluated
/// (server side: the evaluation keys only) and decrypted.
#[cfg(feature = "ckks")]
pub fn fhe(loaded: &Loaded, x: &ArrayD<f32>, mut progress: impl FnMut(usize)) -> Result<FheRun, DriverError> {
    let ctx = fhec_ckks::backend::Context::new(loaded.ring).map_err(ckks_error)?;
    let (session, keygen) = Session::new(&ctx, loaded.plan(), loaded.packing)?;
    let inputs = loaded.encode(x)?;
    let (mut client, mut server) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut values = Vec::with_capacity(inputs.len());
    let mut max_error = 0f64;
    let mut batches = 0;
    let batch_size = session.chunk()?;
    for chunk in inputs.chunks(batch_size) {
        let run = session.run(chunk)?;
        client += run.client;
        server += run.server;
        max_error = max_error.max(run.max_error);
        values.extend(run.outputs);
        batches += 1;
        progress(values.len());
    }
    Ok(FheRun { outputs: loaded.decode(&values)?, keygen, client, server, batches, batch_size, max_error })
}

/// What `fhec bench` measured on a CKKS build.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub ring: Ring,
    pub packing: Packing,
    /// Samples in a full batch: the ring's slots batch-major; a full ciphertext per worker
    /// feature-major.
    pub full: usize,
    /// Feature-major: one sample (one ciphertext), encrypt + evaluate + decrypt: median, min, max.
    pub single_s: Option<[f64; 3]>,
    pub rotation_keys: usize,
    pub threads: usize,
    pub polynomials: usize,
    pub scalar_ops: usize,
    pub keygen_s: f64,
    /// One full batch (encrypt, evaluate, decrypt), and its server part, in seconds: median, min, max.
    pub batch_s: [f64; 3],
    pub server_s: [f64; 3],
    pub estimated_s: f64,
    pub max_error: f64,
    pub input_mb: f64,
}

/// `runs` full batches: the samples of `x` repeated to fill every slot. Under batch-major packing
/// a batch is the latency of one sample as much as the throughput of many; under feature-major
/// packing a full batch is one ciphertext per worker, and `runs` single samples give the latency.
#[cfg(feature = "ckks")]
pub fn bench(
    loaded: &Loaded,
    x: &ArrayD<f32>,
    runs: usize,
    mut progress: impl FnMut(usize),
) -> Result<BenchReport, DriverError> {
    let inputs = loaded.encode(x)?;
    if inputs.is_empty() {
        return Err(DriverError::Usage("no samples to benchmark".into()));
    }
    let ctx = fhec_ckks::backend::Context::new(loaded.ring).map_err(ckks_error)?;
    let (session, keygen) = Session::new(&ctx, loaded.plan(), loaded.packing)?;
    let full: Vec<Vec<f64>> = inputs.iter().cycle().take(session.chunk()?).cloned().collect();
    let (mut batch, mut server, mut max_error, mut input_bytes) = (Vec::new(), Vec::new(), 0f64, 0);
    let mut single = Vec::new();
    for run in 0..runs.max(1) {
        if loaded.packing == Packing::FeatureMajor {
            let r = session.run(&full[..1])?;
            single.push((r.client + r.server).as_secs_f64());
            max_error = max_error.max(r.max_error);
        }
        let r = session.run(&full)?;
        batch.push((r.client + r.server).as_secs_f64());
        server.push(r.server.as_secs_f64());
        max_error = max_error.max(r.max_error);
        input_bytes = r.input_bytes;
        progress(run + 1);
    }
    let threads = rayon::current_num_threads();
    let cost = loaded.plan().cost();
    let estimated_s = loaded.plan().estimated_ms(loaded.ring, loaded.packing, full.len(), threads) / 1e3;
    Ok(BenchReport {
        ring: loaded.ring,
        packing: loaded.packing,
        full: full.len(),
        single_s: (!single.is_empty()).then(|| crate::bench::stats(single)),
        rotation_keys: session.server.galois_elements().len(),
        threads,
        polynomials: cost.polynomials,
        scalar_ops: cost.scalar_ops,
        keygen_s: keygen.as_secs_f64(),
        batch_s: crate::bench::stats(batch),
        server_s: crate::bench::stats(server),
        estimated_s,
        max_error,
        input_mb: input_bytes as f64 / 1e6,
    })
}

impl BenchReport {
    /// Latency at batch 1: one ciphertext feature-major, the whole batch batch-major.
    fn latency_s(&self) -> f64 {
        self.single_s.map_or(self.batch_s[0], |s| s[0])
    }

    pub fn text(&self, name: &str) -> String {
        let full = self.full;
        let [median, min, max] = self.batch_s;
        let (packing, keys, latency) = match self.single_s {
            None => (
                format!("batch-major: {full} samples per batch"),
                "relinearization only".to_string(),
                format!("{median:.2} s (one sample costs the whole batch)"),
            ),
            Some([m, lo, hi]) => (
                format!(
                    "feature-major: {} samples per ciphertext, a full batch is one per thread",
                    full / self.threads.max(1)
                ),
                format!("relinearization and {} rotation keys", self.rotation_keys),
                format!("median {m:.3} s (min {lo:.3}, max {hi:.3}), one sample in one ciphertext"),
            ),
        };
        format!(
            "{name}: CKKS, ring 2^{} ({}-bit modulus), {packing}; {} polynomials, {} weights per sample; {} threads\n\
             key generation: {:.2} s (evaluation keys: {keys})\n\
             full batch of {full} samples (encrypt + evaluate + decrypt): median {median:.2} s (min {min:.2}, max {max:.2}); server {:.2} s\n\
             latency at batch 1: {latency}\n\
             throughput at full batch: {:.0} samples/s ({:.3} ms per sample)\n\
             the build's estimate: {:.2} s per full batch (measured server / estimated: {:.2})\n\
             largest distance from the cleartext simulation: {:.1e}\n\
             input ciphertexts: {:.1} MB per full batch\n",
            self.ring.log_n,
            self.ring.k,
            self.polynomials,
            self.scalar_ops,
            self.threads,
            self.keygen_s,
            self.server_s[0],
            full as f64 / median,
            median * 1e3 / full as f64,
            self.estimated_s,
            self.server_s[0] / self.estimated_s,
            self.max_error,
            self.input_mb,
        )
    }

    pub fn json(&self, name: &str) -> serde_json::Value {
        json!({
            "model": name,
            "scheme": "ckks",
            "packing": self.packing.name(),
            "ring": { "log_n": self.ring.log_n, "modulus_bits": self.ring.k, "slots": self.ring.slots() },
            "threads": self.threads,
            "polynomials": self.polynomials,
            "scalar_ops": self.scalar_ops,
            "rotation_keys": self.rotation_keys,
            "keygen_s": self.keygen_s,
            "full_batch_samples": self.full,
            "batch_s": { "median": self.batch_s[0], "min": self.batch_s[1], "max": self.batch_s[2] },
            "server_s": { "median": self.server_s[0], "min": self.server_s[1], "max": self.server_s[2] },
            "latency_batch_1_s": self.latency_s(),
            "throughput_samples_per_s": self.full as f64 / self.batch_s[0],
            "estimated_batch_s": self.estimated_s,
            "max_error": self.max_error,
            "input_mb": self.input_mb,
        })
    }
}
