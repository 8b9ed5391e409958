//! `fhec serve`: encrypted inference over HTTP (axum on tokio), for one or more compiled models.
//!
//! Builds of both schemes are served side by side: TFHE circuits, and (feature `ckks`, nightly) CKKS
//! plans. The server holds circuits, plans and evaluation keys, never secret material: an uploaded
//! key is decoded as a `CompressedEvalKey` (TFHE) or a CKKS `EvalKey` (relinearization and
//! rotations), neither of which can decrypt. The API (see `deploy/openapi.json`, tested against this
//! router):
//!
//! - `PUT /v1/keys`: upload an evaluation key (the bytes `fhec keygen` writes to `eval.key`), checked
//!   against the served models (a tfhe-rs parameter set, or a CKKS build's ring and rotations); its
//!   id is the SHA-256 of its content; it is stored durably for the tenant ([`keystore`]) and
//!   expires after the configured time. `GET /v1/keys`, `GET`/`DELETE /v1/keys/{id}`.
//! - `POST /v1/models/{model}/infer?key={id}`: ciphertexts in (an `fhec encrypt` file; for a CKKS
//!   build, its samples packed into ciphertexts), ciphertexts out (an `fhec run` file), and the
//!   samples evaluated in `X-Fhec-Samples`. Refused with a 4xx when they were made for another key,
//!   model or scheme.
//! - Training (feature `ckks`; a served directory that holds an `fhec train plan`):
//!   `POST /v1/models/{model}/jobs?key={id}` takes an encrypted training set (`fhec encrypt` on the
//!   plan) and answers 202 with a job; `GET /v1/jobs`, `GET`/`DELETE /v1/jobs/{id}`;
//!   `GET /v1/jobs/{id}/state` returns the encrypted weights once a round has ended, and
//!   `PUT /v1/jobs/{id}/state` takes them back refreshed by the data owner and queues the next
//!   round. Jobs are kept on disk ([`jobs`]) and run one round at a time on one training worker.
//! - `GET /v1/models`; `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus; no auth).
//!
//! Load: at most `workers` requests run at once (each spreads its bootstraps over the whole rayon
//! pool, so concurrent requests interleave on it), at most `queue` more wait; beyond that the answer
//! is 429 with a Retry-After estimated from recent run times. Bodies have size limits, requests a
//! timeout; shutdown stops accepting and drains what is in flight.
//!
//! Tenants: a bearer token maps to a tenant; keys belong to the tenant that uploaded them, and another
//! tenant's key id is answered exactly like an unknown one (404).

#![forbid(unsafe_code)]

pub mod client;
pub mod jobs;
pub mod keystore;
pub mod roundtrip;
pub mod tls;

mod metrics;
mod routes;
mod training;

use metrics::{Metrics, RouteLabel, RouteLabels};
use routes::*;
pub use routes::{ApiError, Tenant};

/// Errors of the service's client side ([`client`], [`roundtrip`]).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The library refused something local: a key file, an artifact, samples that do not fit.
    #[error(transparent)]
    Driver(#[from] fhec::DriverError),
    /// The server refused the request as busy (429/503) on every attempt.
    #[error("{0}")]
    Busy(String),
    /// The server, or the connection to it, failed or answered something other than what was asked.
    #[error("{0}")]
    Remote(String),
    /// The request cannot be made as asked (a load test without samples or clients).
    #[error("{0}")]
    Usage(String),
}

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use fhec_runtime::ServerArtifact;
use fhec_runtime::artifact::{self, Kind, Tagged};
use fhec_runtime::fhe::{self, EvalKey, InputCiphertexts};
use keystore::{KeyMeta, KeyStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Whether this build serves CKKS builds and training plans (feature `ckks`, nightly); without it,
/// such a directory is refused when the server starts, by name and with how to get the feature.
pub const SERVES_CKKS: bool = cfg!(feature = "ckks");

/// Who may call the API.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Bearer tokens, by SHA-256 of the token, to tenants.
    Tokens(HashMap<[u8; 32], String>),
    /// No authentication: every caller is the tenant `anonymous` (development only).
    Anonymous,
}

impl Auth {
    /// Reads a tokens file: one `TENANT TOKEN` pair per line; `#` starts a comment.
    pub fn from_file(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(tenant), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("{}:{}: expected `TENANT TOKEN`", path.display(), n + 1));
            };
            if token.len() < 16 {
                return Err(format!(
                    "{}:{}: the token of tenant {tenant} is shorter than 16 characters",
                    path.display(),
                    n + 1
                ));
            }
            if tokens.insert(Sha256::digest(token.as_bytes()).into(), tenant.to_string()).is_some() {
                return Err(format!("{}:{}: this token is given twice", path.display(), n + 1));
            }
        }
        if tokens.is_empty() {
            return Err(format!("{}: no tokens", path.display()));
        }
        Ok(Auth::Tokens(tokens))
    }
}

/// Service settings (the `fhec serve` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Models to serve: name and build directory.
    pub models: Vec<(String, PathBuf)>,
    pub store: PathBuf,
    pub auth: Auth,
    /// Requests evaluated at once.
    pub workers: usize,
    /// Requests waiting beyond those; more are refused with 429.
    pub queue: usize,
    pub key_ttl: Duration,
    pub max_key_bytes: usize,
    pub max_request_bytes: usize,
    /// Samples per inference request on a TFHE build.
    pub max_samples: usize,
    /// Samples per inference request on a CKKS build (packed into its ciphertexts; a batch-major
    /// request holds at most the ring's slots whatever this says).
    pub max_ckks_samples: usize,
    /// From arrival to answer, queueing included.
    pub request_timeout: Duration,
    /// A connection that has not sent a request's headers within this long is closed (slow-header
    /// clients, slowloris).
    pub header_timeout: Duration,
    /// A request body that has not arrived within this long is refused with 408 (slow-body clients
    /// cannot hold an admission longer than this).
    pub body_timeout: Duration,
    /// Connections open at once; beyond them the server stops accepting until one closes.
    pub max_connections: usize,
    /// Where the key store writes (the disk; tests inject failures here).
    pub disk: Arc<dyn keystore::Disk>,
    /// Decompressed evaluation keys kept in memory (each takes tens to hundreds of MB).
    pub key_cache: usize,
    /// A training round stopped (and its job failed) after this long.
    pub train_round_timeout: Duration,
    /// Training jobs a tenant may hold at once (any status); more are refused with 429.
    pub max_jobs: usize,
}

impl Config {
    pub fn new(models: Vec<(String, PathBuf)>, store: PathBuf, auth: Auth) -> Config {
        Config {
            models,
            store,
            auth,
            workers: 2,
            queue: 8,
            key_ttl: Duration::from_secs(7 * 24 * 3600),
            max_key_bytes: 64 << 20,
            max_request_bytes: 64 << 20,
            max_samples: 256,
            max_ckks_samples: 16384,
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(120),
            max_connections: 4096,
            disk: Arc::new(keystore::Fsync),
            key_cache: 4,
            train_round_timeout: Duration::from_secs(3600),
            max_jobs: 8,
        }
    }
}

/// One served model, by scheme.
enum Model {
    Tfhe {
        artifact: ServerArtifact,
        digest: String,
    },
    /// The plan, its ring and rotations (no key: keys are the tenants').
    #[cfg(feature = "ckks")]
    Ckks(Box<fhec::ckks::deploy::Deployed>),
    /// A training plan: it takes training jobs, not inference requests.
    #[cfg(feature = "ckks")]
    Train(Box<fhec::train::deploy::Trainable>),
}

impl Model {
    /// Loads the build in `dir`, of either scheme.
    fn load(name: &str, dir: &Path) -> Result<Model, String> {
        let context = |e: fhec::DriverError| format!("model {name} ({}): {e}", dir.display());
        if fhec::train::deploy::is_training(dir) {
            #[cfg(feature = "ckks")]
            return fhec::train::deploy::Trainable::load(dir).map(|t| Model::Train(Box::new(t))).map_err(context);
            #[cfg(not(feature = "ckks"))]
            return Err(format!(
                "model {name} ({}) is a training plan, and training runs on CKKS, which this fhec was built without (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec-cli --features ckks`, or use the Docker image, which has it",
                dir.display()
            ));
        }
        if fhec::ckks::is_ckks(dir) {
            #[cfg(feature = "ckks")]
            return fhec::ckks::deploy::Deployed::load(dir).map(|d| Model::Ckks(Box::new(d))).map_err(context);
            #[cfg(not(feature = "ckks"))]
            return Err(format!(
                "model {name} ({}) is a CKKS build, and this fhec was built without CKKS (poulpy needs a nightly compiler): build it with `cargo +nightly build --release -p fhec-cli --features ckks`, or use the Docker image, which has it",
                dir.display()
            ));
        }
        let (artifact, digest) = fhec::tfhe::load_server(dir).map_err(context)?;
        Ok(Model::Tfhe { artifact, digest })
    }

    /// What an evaluation key must be for to run this model: a tfhe-rs parameter set, or a CKKS
    /// build's ring and rotations.
    fn key_params(&self) -> String {
        match self {
            Model::Tfhe { artifact, .. } => artifact.circuit.params.name().to_string(),
            #[cfg(feature = "ckks")]
            Model::Ckks(d) => d.key_params(),
            #[cfg(feature = "ckks")]
            Model::Train(t) => t.key_params(),
        }
    }

    fn digest(&self) -> &str {
        match self {
            Model::Tfhe { digest, .. } => digest,
            #[cfg(feature = "ckks")]
            Model::Ckks(d) => d.digest(),
            #[cfg(feature = "ckks")]
            Model::Train(t) => t.digest(),
        }
    }

    /// The size of an evaluation key for this model, where it may exceed the configured limit.
    #[cfg(feature = "ckks")]
    fn eval_key_bytes(&self) -> usize {
        match self {
            Model::Tfhe { .. } => 0,
            Model::Ckks(d) => d.eval_key_bytes(),
            Model::Train(t) => t.eval_key_bytes(),
        }
    }

    /// Reads a CKKS evaluation key's bytes for this model, if it is a CKKS one.
    #[cfg(feature = "ckks")]
    fn ckks_key(&self, raw: &[u8]) -> Option<Result<fhec::ckks::deploy::EvalKey, fhec::DriverError>> {
        match self {
            Model::Tfhe { .. } => None,
            Model::Ckks(d) => Some(d.eval_key_from(raw)),
            Model::Train(t) => Some(t.eval_key_from(raw)),
        }
    }
}

/// A decoded evaluation key, ready to evaluate with.
#[derive(Clone)]
enum ServedKey {
    Tfhe(Arc<EvalKey>),
    #[cfg(feature = "ckks")]
    Ckks(Arc<fhec::ckks::deploy::EvalKey>),
}

/// What `GET /v1/models` lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// `tfhe` or `ckks`.
    #[serde(default)]
    pub scheme: String,
    /// What an evaluation key must be for (see [`keystore::KeyMeta::params`]).
    pub params: String,
    pub circuit_digest: String,
    pub inputs: usize,
    pub outputs: usize,
    /// Programmable bootstraps per sample (TFHE; 0 for CKKS).
    pub pbs_per_sample: usize,
    /// CKKS: samples one ciphertext holds (what a request's samples fill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_ciphertext: Option<usize>,
    /// Samples one request may hold (a training plan: the samples of its set).
    #[serde(default)]
    pub max_samples: usize,
    /// A training plan: it takes jobs at `/v1/models/{name}/jobs`, not inference requests.
    #[serde(default)]
    pub training: bool,
}

/// The service's shared state.
pub struct App {
    config: Config,
    models: BTreeMap<String, Model>,
    store: KeyStore,
    /// Decoded keys by (tenant, id).
    cache: Mutex<lru::LruCache<(String, String), ServedKey>>,
    slots: Arc<Semaphore>,
    /// Requests admitted and not yet answered (running or waiting).
    admitted: AtomicUsize,
    /// Admissions by tenant, and the tenants refused lately (for fair shares under overload).
    tenancy: Mutex<Tenancy>,
    /// Moving average of a job's run time, in microseconds (for Retry-After).
    job_us: AtomicU64,
    ready: AtomicBool,
    metrics: Metrics,
    jobs: jobs::JobStore,
    training: training::Queue,
}

/// Who holds admissions, and who asked for one lately and was refused: both contend for the capacity.
#[derive(Default)]
struct Tenancy {
    held: HashMap<String, usize>,
    refused: HashMap<String, Instant>,
}

/// How long a refused tenant counts as contending for a share (clients retry within this).
const CONTENDING: Duration = Duration::from_secs(10);

/// Holds an admission (running or queued) of a tenant; released on drop, whatever happens to the
/// request.
struct Admission(Arc<App>, String);

impl Drop for Admission {
    fn drop(&mut self) {
        let mut tenancy = self.0.tenancy.lock().unwrap_or_else(|e| e.into_inner());
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = tenancy.held.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                tenancy.held.remove(&self.1);
            }
        }
    }
}

impl App {
    /// Loads every model and opens the key store.
    pub fn new(config: Config) -> Result<Arc<App>, String> {
        if config.workers == 0 {
            return Err("at least one worker is needed".into());
        }
        let mut models = BTreeMap::new();
        for (name, dir) in &config.models {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.is_empty() {
                return Err(format!("model name {name:?}: use letters, digits, '-', '_' and '.'"));
            }
            if models.insert(name.clone(), Model::load(name, dir)?).is_some() {
                return Err(format!("two models are named {name}: name them with NAME=DIR"));
            }
        }
        if models.is_empty() {
            return Err("no model to serve".into());
        }
        // A CKKS build's evaluation key is as large as its ring and rotations make it (tens to
        // hundreds of MB): the key limit is raised to the largest one a served build needs.
        #[cfg(feature = "ckks")]
        let config = {
            let mut config = config;
            for (name, m) in &models {
                if m.eval_key_bytes() > config.max_key_bytes {
                    tracing::info!(model = %name, bytes = m.eval_key_bytes(), "key limit raised to this model's evaluation key");
                    config.max_key_bytes = m.eval_key_bytes();
                }
            }
            config
        };
        let store = KeyStore::open(&config.store, config.key_ttl, config.disk.clone())
            .map_err(|e| format!("key store {}: {e}", config.store.display()))?;
        let cache = lru::LruCache::new(NonZeroUsize::new(config.key_cache.max(1)).expect("positive"));
        let jobs_root = config.store.join("jobs");
        let jobs = jobs::JobStore::open(&jobs_root, config.key_ttl)
            .map_err(|e| format!("job store {}: {e}", jobs_root.display()))?;
        let training = training::Queue::default();
        for job in jobs.recover().map_err(|e| format!("job store {}: {e}", jobs_root.display()))? {
            tracing::info!(job = %job.id, model = %job.model, "training job queued again after a restart");
            training.push(job.tenant, job.id);
        }
        Ok(Arc::new(App {
            slots: Arc::new(Semaphore::new(config.workers)),
            config,
            models,
            store,
            cache: Mutex::new(cache),
            admitted: AtomicUsize::new(0),
            tenancy: Mutex::new(Tenancy::default()),
            job_us: AtomicU64::new(1_000_000),
            ready: AtomicBool::new(true),
            metrics: Metrics::new(),
            jobs,
            training,
        }))
    }

    /// The router: the API above (every route is in [`ROUTES`]), with per-route body limits and request metrics.
    pub fn router(self: &Arc<App>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/models", get(models))
            .route("/v1/keys", put(put_key).get(list_keys))
            .route("/v1/keys/{id}", get(get_key).delete(delete_key))
            .route("/v1/models/{model}/infer", post(infer))
            .route("/v1/models/{model}/jobs", post(training::submit))
            .route("/v1/jobs", get(training::list))
            .route("/v1/jobs/{id}", get(training::get).delete(training::delete))
            .route("/v1/jobs/{id}/state", get(training::get_state).put(training::put_state))
            // Bodies are read after admission, each route under its own limit (see `read_body`).
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(self.clone(), observe))
            .with_state(self.clone())
    }

    /// Admits a request of `tenant`, or refuses it with 429 and a Retry-After when `workers + queue`
    /// are taken, or when the server is at least half full and the tenant holds its fair share.
    fn admit(self: &Arc<App>, tenant: &str) -> ApiResult<Admission> {
        let capacity = self.config.workers + self.config.queue;
        let mut tenancy = self.tenancy.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.admitted.load(Ordering::Acquire);
        let mine = tenancy.held.get(tenant).copied().unwrap_or(0);
        // A tenant's fair share: the capacity split evenly between the tenants that contend for it
        // (holding admissions, or refused within `CONTENDING`; this one included), at least one. A
        // tenant over its share is refused only while the server is at least half full, so one
        // tenant alone can still use all of it, and a freed slot goes to a tenant under its share.
        tenancy.refused.retain(|_, at| at.elapsed() < CONTENDING);
        let tenants = {
            let Tenancy { held, refused } = &*tenancy;
            let others = refused.keys().filter(|t| !held.contains_key(*t) && *t != tenant).count();
            held.len() + others + usize::from(mine == 0)
        };
        let share = (capacity / tenants).max(1);
        let over_share = mine >= share && now >= capacity / 2;
        if now >= capacity || over_share {
            self.metrics.rejected.inc();
            // Room opens when the next admitted request ends: every job time / workers on average.
            let seconds = (self.job_us.load(Ordering::Relaxed) / self.config.workers as u64).div_ceil(1_000_000).max(1);
            let why = if now >= capacity {
                format!("the server is at capacity ({capacity} requests admitted): retry later")
            } else {
                format!("this tenant holds its share of the server ({mine} of {capacity} requests): retry later")
            };
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, why);
            e.retry_after = Some(seconds);
            tenancy.refused.insert(tenant.to_string(), Instant::now());
            return Err(e);
        }
        self.admitted.fetch_add(1, Ordering::AcqRel);
        *tenancy.held.entry(tenant.to_string()).or_insert(0) += 1;
        Ok(Admission(self.clone(), tenant.to_string()))
    }

    /// Runs `job` on a blocking thread once a worker slot is free; the slot and the admission are
    /// held until the job ends, even if the caller stops waiting (a timed-out request's job finishes,
    /// and keeps its slot meanwhile, so the pool is never oversubscribed).
    async fn run_job<T: Send + 'static>(
        self: &Arc<App>,
        admission: Admission,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let limit = self.config.request_timeout;
        let work = async move {
            self.metrics.queue_depth.inc();
            let permit = self.slots.clone().acquire_owned().await;
            self.metrics.queue_depth.dec();
            let permit = permit.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
            let app = self.clone();
            tokio::task::spawn_blocking(move || {
                let _held = (permit, admission);
                app.metrics.running.inc();
                let start = Instant::now();
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                let us = start.elapsed().as_micros() as u64;
                let old = app.job_us.load(Ordering::Relaxed);
                app.job_us.store((old * 3 + us) / 4, Ordering::Relaxed);
                app.metrics.running.dec();
                out
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the job failed: {e}")))?
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "the input could not be evaluated (malformed data inside a valid envelope)",
                )
            })
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, format!("not done within {} s", limit.as_secs()))),
        }
    }

    /// The decoded key `id` of `tenant`: from the cache, or loaded (checksum verified) and decoded.
    /// Blocking: call from a job.
    fn eval_key(&self, tenant: &str, id: &str) -> ApiResult<ServedKey> {
        let slot = (tenant.to_string(), id.to_string());
        if let Some(k) = self.cache.lock().expect("cache").get(&slot) {
            return Ok(k.clone());
        }
        let (_, upload) = self.store.load(tenant, id).map_err(|e| match e {
            keystore::LoadError::Missing => no_key(id),
            keystore::LoadError::Damaged(why) => {
                tracing::error!(key = %&id[..16], %why, "stored key damaged");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the stored copy of key {id} is damaged ({why}): upload it again"),
                )
            }
        })?;
        let (key, _) = self.decode_key(&upload.key, &upload.params)?;
        self.cache_put(slot, key.clone());
        Ok(key)
    }

    /// Decodes an uploaded key for the models served here; returns it and what it is for (see
    /// [`keystore::KeyMeta::params`]). `params` is what the store recorded, empty for a new upload.
    /// A key no served model can use is refused (422) with what the models need.
    fn decode_key(&self, key: &keystore::Uploaded, params: &str) -> ApiResult<(ServedKey, String)> {
        let unusable = |what: String| {
            let served: Vec<String> = self.models.values().map(Model::key_params).collect();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{what}; the models served here take keys for {}: generate keys with `fhec keygen` on the model's build",
                    served.join(", ")
                ),
            )
        };
        match key {
            keystore::Uploaded::Tfhe(k) => {
                let params = k.params();
                if !self
                    .models
                    .values()
                    .any(|m| matches!(m, Model::Tfhe { artifact, .. } if artifact.circuit.params == params))
                {
                    return Err(unusable(format!("the key is for parameter set {params}")));
                }
                // Decompressing checks the key's structure.
                Ok((ServedKey::Tfhe(Arc::new(k.decompress())), params.name().to_string()))
            }
            #[cfg(feature = "ckks")]
            keystore::Uploaded::Ckks(raw) => {
                let mut tried = Vec::new();
                for m in self.models.values() {
                    let wanted = m.key_params();
                    if (!params.is_empty() && params != wanted) || tried.contains(&wanted) {
                        continue;
                    }
                    let Some(read) = m.ckks_key(raw) else { continue };
                    if let Ok(key) = read {
                        return Ok((ServedKey::Ckks(Arc::new(key)), wanted));
                    }
                    tried.push(wanted);
                }
                Err(unusable("the key is a CKKS evaluation key for none of the CKKS builds served here".into()))
            }
            #[cfg(not(feature = "ckks"))]
            keystore::Uploaded::Ckks(_) => {
                let _ = params;
                Err(unusable("the key is a CKKS evaluation key, and this fhec was built without CKKS".into()))
            }
        }
    }

    fn cache_put(&self, slot: (String, String), key: ServedKey) {
        let mut cache = self.cache.lock().expect("cache");
        cache.put(slot, key);
        self.metrics.keys_cached.set(cache.len() as i64);
    }

    fn evict(&self, tenant: &str, id: &str) {
        let mut cache = self.cache.lock().expect("cache");
        cache.pop(&(tenant.to_string(), id.to_string()));
        self.metrics.keys_cached.set(cache.len() as i64);
    }

    /// Deletes expired keys from the store and the cache.
    pub fn sweep(&self) -> usize {
        let removed = self.store.sweep();
        let mut cache = self.cache.lock().expect("cache");
        let stale: Vec<_> = cache.iter().filter(|((_, id), _)| removed.contains(id)).map(|(k, _)| k.clone()).collect();
        for k in stale {
            cache.pop(&k);
        }
        self.metrics.keys_cached.set(cache.len() as i64);
        removed.len()
    }

    pub fn model_infos(&self) -> Vec<ModelInfo> {
        self.models
            .iter()
            .map(|(name, m)| match m {
                Model::Tfhe { artifact, digest } => ModelInfo {
                    name: name.clone(),
                    scheme: "tfhe".into(),
                    params: artifact.circuit.params.name().to_string(),
                    circuit_digest: digest.clone(),
                    inputs: artifact.circuit.n_inputs,
                    outputs: artifact.circuit.outputs.len(),
                    pbs_per_sample: artifact.circuit.pbs.len(),
                    samples_per_ciphertext: None,
                    max_samples: self.config.max_samples,
                    training: false,
                },
                #[cfg(feature = "ckks")]
                Model::Ckks(d) => ModelInfo {
                    name: name.clone(),
                    scheme: "ckks".into(),
                    params: d.key_params(),
                    circuit_digest: d.digest().to_string(),
                    inputs: d.layout().n_inputs(),
                    outputs: d.layout().n_outputs,
                    pbs_per_sample: 0,
                    samples_per_ciphertext: Some(d.samples_per_ciphertext()),
                    max_samples: d.max_samples(self.config.max_ckks_samples),
                    training: false,
                },
                #[cfg(feature = "ckks")]
                Model::Train(t) => ModelInfo {
                    name: name.clone(),
                    scheme: "ckks".into(),
                    params: t.key_params(),
                    circuit_digest: t.digest().to_string(),
                    inputs: t.plan().columns - 1,
                    outputs: 1,
                    pbs_per_sample: 0,
                    samples_per_ciphertext: Some(t.plan().samples),
                    max_samples: t.plan().samples,
                    training: true,
                },
            })
            .collect()
    }
}

/// Every route of [`App::router`], as `(METHOD, path)`: what `deploy/openapi.json` must document
/// (a test checks both against the running router).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("PUT", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/keys/{id}"),
    ("DELETE", "/v1/keys/{id}"),
    ("POST", "/v1/models/{model}/infer"),
    ("POST", "/v1/models/{model}/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/state"),
    ("PUT", "/v1/jobs/{id}/state"),
];

/// Serves `app` on `listener` (a `TcpListener`, or a [`tls::TlsListener`]) until `shutdown`
/// resolves, then stops accepting, reports not ready, and returns once the requests in flight are
/// answered and a training round in progress has stopped (its job runs again at the next start).
/// Expired keys and jobs are swept every minute.
pub async fn serve<L>(
    app: Arc<App>,
    listener: L,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let sweeper = {
        let app = app.clone();
        let every = Duration::from_secs(60).min(app.config.key_ttl / 4).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let app = app.clone();
                let (removed, jobs) =
                    tokio::task::spawn_blocking(move || (app.sweep(), app.jobs.sweep())).await.unwrap_or((0, 0));
                if removed > 0 {
                    tracing::info!(removed, "expired keys deleted");
                }
                if jobs > 0 {
                    tracing::info!(jobs, "expired training jobs deleted");
                }
            }
        })
    };
    let trainer = tokio::spawn(training::worker(app.clone()));
    let result = accept_loop(&app, listener, shutdown).await;
    sweeper.abort();
    app.training.stop();
    let _ = trainer.await;
    result
}

/// Accepts connections until `shutdown`, at most `max_connections` open at once (beyond that the
/// kernel's backlog holds new ones), each closed when a request's headers take longer than
/// `header_timeout`; then stops accepting, reports not ready, and waits for the connections to end
/// their requests in flight.
async fn accept_loop<L>(
    app: &Arc<App>,
    mut listener: L,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let router = app.router();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(app.config.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(app.config.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(?peer, error = %e, "connection ended");
            }
        });
    }
    app.ready.store(false, Ordering::Release);
    tracing::info!("shutting down: draining requests in flight");
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The address actually bound (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
