//! Whole client-side round trips against `fhec serve`: `fhec predict --server` (encrypt, send,
//! decrypt, in requests of a few samples) and `fhec client loadtest` (many concurrent clients, every
//! answer checked against the local cleartext simulation).

use super::client::Remote;
use crate::ServeError;
use fhec::tfhe;
use fhec::{DriverError, Stacked};
use fhec_ir::Module;
use fhec_runtime::ClientArtifact;
use fhec_runtime::artifact::{self, Kind, Tagged};
use fhec_runtime::fhe::{OutputCiphertexts, SecretKey};
use ndarray::{ArrayD, Axis, Slice};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The client's side of a session, for a build of either scheme: its client artifact and secret
/// key, and the evaluation key the server gets.
pub struct Session {
    side: Side,
    /// `eval.key` as written by `fhec keygen`: what `PUT /v1/keys` takes.
    pub eval_key: Vec<u8>,
}

struct TfheSide {
    client: ClientArtifact,
    post: Module,
    secret: SecretKey,
    fingerprint: String,
}

enum Side {
    Tfhe(Box<TfheSide>),
    #[cfg(feature = "ckks")]
    Ckks(Box<fhec::ckks::deploy::ClientSide>),
}

impl Session {
    /// Loads the build directory's client artifact and the keys in `keys`.
    pub fn load(dir: &Path, keys: &Path, protection: &fhec::keyfile::Protection) -> Result<Session, DriverError> {
        let path = keys.join("eval.key");
        let read_eval = || std::fs::read(&path).map_err(|e| DriverError::Io(format!("{}: {e}", path.display())));
        if fhec::ckks::is_ckks(dir) {
            #[cfg(feature = "ckks")]
            {
                let side = fhec::ckks::deploy::ClientSide::load(dir, keys, protection)?;
                return Ok(Session { side: Side::Ckks(Box::new(side)), eval_key: read_eval()? });
            }
            #[cfg(not(feature = "ckks"))]
            return Err(DriverError::Usage(format!(
                "{} is a CKKS build, and this fhec was built without CKKS (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec-cli --features ckks`",
                dir.display()
            )));
        }
        let (client, post) = tfhe::load_client(dir)?;
        let (secret, fingerprint) = tfhe::load_secret(keys, protection)?;
        if secret.params() != client.params {
            return Err(DriverError::Mismatch(format!(
                "the keys in {} are for parameter set {}, the model in {} needs {}: run `fhec keygen` for it",
                keys.display(),
                secret.params(),
                dir.display(),
                client.params
            )));
        }
        let side = Side::Tfhe(Box::new(TfheSide { client, post, secret, fingerprint }));
        Ok(Session { side, eval_key: read_eval()? })
    }

    /// Samples per request unless told otherwise: 16 for TFHE (each sample is its own ciphertexts,
    /// and a request's latency grows with it); for CKKS what one batch-major batch holds (a request
    /// of fewer costs as much), four ciphertexts' worth feature-major.
    pub fn default_batch(&self) -> usize {
        match &self.side {
            Side::Tfhe(_) => 16,
            #[cfg(feature = "ckks")]
            Side::Ckks(c) => match c.artifact.layout.packing {
                fhec_ckks::Packing::BatchMajor => c.artifact.layout.samples_per_ciphertext,
                fhec_ckks::Packing::FeatureMajor => 4 * c.artifact.layout.samples_per_ciphertext,
            },
        }
    }

    /// Encrypts samples into the bytes of an inference request.
    pub fn encrypt(&self, x: &ArrayD<f32>) -> Result<Vec<u8>, DriverError> {
        let bytes = match &self.side {
            Side::Tfhe(t) => {
                let TfheSide { client, secret, fingerprint, .. } = &**t;
                artifact::to_bytes(Kind::Inputs, &tfhe::encrypt(client, secret, fingerprint, x)?)
            }
            #[cfg(feature = "ckks")]
            Side::Ckks(c) => artifact::to_bytes(Kind::CkksInputs, &c.encrypt(x)?),
        };
        bytes.map(|b| b.0).map_err(DriverError::Artifact)
    }

    /// Decrypts the bytes of an inference answer: the model's outputs, stacked over its samples.
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Vec<(String, Stacked)>, ServeError> {
        let answer = |e: String| ServeError::Remote(format!("the server's answer {e}"));
        match &self.side {
            Side::Tfhe(t) => {
                let TfheSide { client, post, secret, fingerprint } = &**t;
                let (out, _): (Tagged<OutputCiphertexts>, _) =
                    artifact::from_bytes(bytes, Kind::Outputs).map_err(answer)?;
                let per_sample = tfhe::decrypt_samples(client, post, secret, fingerprint, &out)?;
                Ok(fhec::stack_outputs(post, per_sample))
            }
            #[cfg(feature = "ckks")]
            Side::Ckks(c) => {
                let (out, _): (Tagged<Vec<u8>>, _) = artifact::from_bytes(bytes, Kind::CkksOutputs).map_err(answer)?;
                Ok(c.decrypt(&out)?)
            }
        }
    }

    /// The cleartext simulation of the build in `dir` (this session's) on `x`: what every decrypted
    /// answer must match. Needs the build's server artifact beside its client artifact.
    pub fn simulate(&self, dir: &Path, x: &ArrayD<f32>) -> Result<Vec<(String, Stacked)>, DriverError> {
        match &self.side {
            Side::Tfhe(t) => {
                let TfheSide { client, post, .. } = &**t;
                let (server, _) = tfhe::load_server(dir)?;
                tfhe::simulate(client, post, &server, x, None, fhec_lower::Engine::Auto, |_| ())
            }
            #[cfg(feature = "ckks")]
            Side::Ckks(_) => Ok(fhec::ckks::load(dir)?.simulate(x)?.0),
        }
    }
}

/// Samples `range` of `x` (along axis 0).
fn rows(x: &ArrayD<f32>, from: usize, to: usize) -> ArrayD<f32> {
    x.slice_axis(Axis(0), Slice::from(from..to)).to_owned()
}

/// What `predict` measured.
pub struct RemoteRun {
    pub outputs: Vec<(String, Stacked)>,
    pub requests: usize,
    /// Client time (encrypt + decrypt) and round-trip time (upload, server, download), summed.
    pub client: Duration,
    pub round_trips: Duration,
    pub key_id: String,
}

/// Registers the evaluation key (idempotent), then runs every sample of `x` on the server in requests
/// of `batch` samples; `progress` hears the samples done.
pub async fn predict(
    remote: &Remote,
    model: &str,
    session: &Session,
    x: &ArrayD<f32>,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<RemoteRun, ServeError> {
    let key = remote.register_key(session.eval_key.clone()).await?;
    let n = x.shape().first().copied().unwrap_or(0);
    let (mut client, mut round_trips, mut requests) = (Duration::ZERO, Duration::ZERO, 0);
    let mut parts = Vec::new();
    for from in (0..n).step_by(batch.max(1)) {
        let to = (from + batch.max(1)).min(n);
        let t = Instant::now();
        let body = session.encrypt(&rows(x, from, to))?;
        client += t.elapsed();
        let t = Instant::now();
        let (answer, _) = remote.infer(model, &key.id, body).await?;
        round_trips += t.elapsed();
        let t = Instant::now();
        parts.push(session.decrypt(&answer)?);
        client += t.elapsed();
        requests += 1;
        progress(to);
    }
    Ok(RemoteRun { outputs: fhec::concat_outputs(parts)?, requests, client, round_trips, key_id: key.id })
}

/// What a load test saw.
#[derive(Debug)]
pub struct LoadReport {
    pub clients: usize,
    pub requests: usize,
    pub samples_per_request: usize,
    /// Requests answered with results.
    pub completed: usize,
    /// 429/503 answers (each then retried).
    pub rejected: u64,
    /// Requests refused (429/503) on every attempt: clean rejections, the client gave up.
    pub gave_up: usize,
    /// Requests that ended in any other error: accepted requests lost, or answers that do not decrypt.
    pub failed: usize,
    /// Samples whose decrypted class differs from the cleartext simulation's.
    pub wrong: usize,
    pub wall: Duration,
    /// Per completed request, from first send to answer (retries included), sorted.
    pub latencies: Vec<Duration>,
    pub errors: Vec<String>,
}

impl LoadReport {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i]
    }

    pub fn text(&self) -> String {
        let secs = self.wall.as_secs_f64().max(1e-9);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{} clients, {} requests of {} samples in {:.1} s\n  completed {}, refused on every attempt {}, failed {}, wrong answers {} samples, 429/503 answers {} (retried)\n  \
             throughput {:.2} requests/s, {:.2} samples/s\n  latency per request: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n",
            self.clients,
            self.requests,
            self.samples_per_request,
            secs,
            self.completed,
            self.gave_up,
            self.failed,
            self.wrong,
            self.rejected,
            self.completed as f64 / secs,
            (self.completed * self.samples_per_request) as f64 / secs,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        )
    }
}

/// The shape of a load test.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests in all.
    pub requests: usize,
    /// Samples per request.
    pub samples: usize,
}

/// `load.clients` concurrent clients send `load.requests` requests in all, each of `load.samples`
/// samples of `x` (cycling), retrying when refused; every answer is decrypted and its classes
/// compared with `expected` (the cleartext simulation's class of each sample of `x`).
pub async fn loadtest(
    remote: &Remote,
    model: &str,
    session: Arc<Session>,
    x: &ArrayD<f32>,
    expected: &[i64],
    load: Load,
) -> Result<LoadReport, ServeError> {
    let Load { clients, requests, samples } = load;
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 || samples == 0 || clients == 0 {
        return Err(ServeError::Usage(
            "a load test needs samples, at least one client and one sample per request".into(),
        ));
    }
    let key = remote.register_key(session.eval_key.clone()).await?;
    // Requests are encrypted up front: the test measures the server, not the client's encryption.
    let mut bodies = Vec::with_capacity(requests);
    for r in 0..requests {
        let picks: Vec<usize> = (0..samples).map(|k| (r * samples + k) % n).collect();
        let batch = ndarray::stack(Axis(0), &picks.iter().map(|&i| x.index_axis(Axis(0), i)).collect::<Vec<_>>())
            .map_err(|e| ServeError::Usage(e.to_string()))?;
        bodies.push((picks, session.encrypt(&batch)?));
    }
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter().collect::<std::collections::VecDeque<_>>()));
    let expected: Arc<[i64]> = expected.into();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (queue, remote, session, expected, model, key) =
            (queue.clone(), remote.clone(), session.clone(), expected.clone(), model.to_string(), key.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = (Vec::new(), 0u64, 0usize, Vec::new(), 0usize); // latencies, rejected, wrong, errors, gave up
            loop {
                let Some((picks, body)) = queue.lock().expect("queue").pop_front() else { break };
                let t = Instant::now();
                match remote.infer(&model, &key, body).await {
                    Ok((answer, attempts)) => {
                        seen.1 += u64::from(attempts.rejected);
                        let checked =
                            session.decrypt(&answer).and_then(|outs| Ok(fhec::metrics::predicted_classes(&outs[0].1)?));
                        match checked {
                            Ok(classes) => {
                                seen.0.push(t.elapsed());
                                seen.2 += classes.iter().zip(&picks).filter(|(c, i)| **c != expected[**i]).count();
                            }
                            Err(e) => seen.3.push(e.to_string()),
                        }
                    }
                    Err(ServeError::Busy(_)) => {
                        seen.1 += u64::from(remote.retries) + 1;
                        seen.4 += 1;
                    }
                    Err(e) => seen.3.push(e.to_string()),
                }
            }
            seen
        }));
    }
    let mut report = LoadReport {
        clients,
        requests,
        samples_per_request: samples,
        completed: 0,
        gave_up: 0,
        rejected: 0,
        failed: 0,
        wrong: 0,
        wall: Duration::ZERO,
        latencies: Vec::new(),
        errors: Vec::new(),
    };
    for t in tasks {
        let (latencies, rejected, wrong, errors, gave_up) =
            t.await.map_err(|e| ServeError::Remote(format!("a client task failed: {e}")))?;
        report.completed += latencies.len();
        report.latencies.extend(latencies);
        report.rejected += rejected;
        report.wrong += wrong;
        report.failed += errors.len();
        report.gave_up += gave_up;
        report.errors.extend(errors);
    }
    report.wall = start.elapsed();
    report.latencies.sort();
    Ok(report)
}

/// What a training job through the service gave the data owner.
#[cfg(feature = "ckks")]
pub struct Trained {
    /// The job as it ended.
    pub job: crate::jobs::JobMeta,
    /// The decrypted weights (bias first, on the scaled features).
    pub weights: Vec<f64>,
    /// The trained model over raw features.
    pub onnx: Vec<u8>,
    /// Seconds spent on the data owner's side (encryption, refreshes, decryption).
    pub client_s: f64,
    /// Bytes sent and received (key excluded).
    pub uploaded: usize,
    pub downloaded: usize,
}

/// The data owner's whole training through `remote`: uploads the evaluation key, encrypts `ds`,
/// submits the job to the training plan served as `model`, and [`follow`]s it to the end.
#[cfg(feature = "ckks")]
pub async fn train(
    remote: &Remote,
    model: &str,
    owner: &fhec::train::deploy::Owner,
    eval_key: Vec<u8>,
    ds: &fhec::train::Dataset,
    poll: Duration,
    progress: impl FnMut(&crate::jobs::JobMeta),
) -> Result<Trained, ServeError> {
    let key = remote.register_key(eval_key).await?;
    let start = Instant::now();
    let (data, scaling) = owner.encrypt_set(ds)?;
    let encrypt_s = start.elapsed().as_secs_f64();
    let sent = data.len();
    let job = remote.submit_job(model, &key.id, data).await?;
    let mut trained = follow(remote, owner, &job.id, &scaling, poll, progress).await?;
    trained.client_s += encrypt_s;
    trained.uploaded += sent;
    Ok(trained)
}

/// Follows training job `id` to its end: polls it every `poll`, and each time a round ends,
/// fetches the state, refreshes it and puts it back; at the end, decrypts the weights (with the
/// feature scaling `scaling` that [`fhec::train::deploy::Owner::encrypt_set`] returned).
#[cfg(feature = "ckks")]
pub async fn follow(
    remote: &Remote,
    owner: &fhec::train::deploy::Owner,
    id: &str,
    scaling: &fhec::train::deploy::OwnerFile,
    poll: Duration,
    mut progress: impl FnMut(&crate::jobs::JobMeta),
) -> Result<Trained, ServeError> {
    use crate::jobs::Status;
    let (mut client_s, mut uploaded, mut downloaded) = (0.0, 0, 0);
    loop {
        let job = remote.job(id).await?;
        progress(&job);
        match job.status {
            Status::Queued | Status::Running => tokio::time::sleep(poll).await,
            Status::Waiting => {
                let state = remote.job_state(id).await?;
                downloaded += state.len();
                let start = Instant::now();
                let (fresh, _) = owner.refresh_bytes(&state, &format!("job {id}'s state"))?;
                client_s += start.elapsed().as_secs_f64();
                uploaded += fresh.len();
                remote.continue_job(id, fresh).await?;
            }
            Status::Done => {
                let state = remote.job_state(id).await?;
                downloaded += state.len();
                let start = Instant::now();
                let (weights, onnx) =
                    owner.decrypt_bytes(&state, &format!("job {id}'s state"), scaling, "the feature scaling")?;
                client_s += start.elapsed().as_secs_f64();
                return Ok(Trained { job, weights, onnx, client_s, uploaded, downloaded });
            }
            Status::Failed | Status::Cancelled => {
                return Err(ServeError::Remote(format!(
                    "training job {id} {}: {}",
                    if job.status == Status::Failed { "failed" } else { "was cancelled" },
                    job.message.unwrap_or_default()
                )));
            }
        }
    }
}
