//! `fhec serve`: encrypted inference over HTTP (axum on tokio), for one or more compiled models.
//!
//! The server holds circuits and evaluation keys, never secret material: an uploaded key is decoded
//! as a `CompressedEvalKey`, which has no way to decrypt (see `fhec_runtime::fhe`). The API (see
//! `deploy/openapi.json`, tested against this router):
//!
//! - `PUT /v1/keys`: upload an evaluation key (the bytes `fhec keygen` writes to `eval.key`); its id
//!   is the SHA-256 of its content; it is stored durably for the tenant ([`keystore`]) and expires
//!   after the configured time. `GET /v1/keys`, `GET`/`DELETE /v1/keys/{id}`.
//! - `POST /v1/models/{model}/infer?key={id}`: ciphertexts in (an `fhec encrypt` file), ciphertexts
//!   out (an `fhec run` file). Refused with a 4xx when they were made for another key or model.
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
pub mod keystore;
pub mod roundtrip;
pub mod tls;

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
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
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
    /// Samples per inference request.
    pub max_samples: usize,
    /// From arrival to answer, queueing included.
    pub request_timeout: Duration,
    /// Decompressed evaluation keys kept in memory (each takes tens to hundreds of MB).
    pub key_cache: usize,
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
            request_timeout: Duration::from_secs(300),
            key_cache: 4,
        }
    }
}

/// One served model.
struct Model {
    artifact: ServerArtifact,
    digest: String,
}

/// What `GET /v1/models` lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub params: String,
    pub circuit_digest: String,
    pub inputs: usize,
    pub outputs: usize,
    pub pbs_per_sample: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    rejected: Counter,
    queue_depth: Gauge,
    running: Gauge,
    samples: Counter,
    pbs: Counter,
    keys_cached: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fhec");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
        });
        let (rejected, queue_depth, running, samples, pbs, keys_cached) = (
            Counter::default(),
            Gauge::default(),
            Gauge::default(),
            Counter::default(),
            Counter::default(),
            Gauge::default(),
        );
        registry.register("requests", "HTTP requests by route and status", requests.clone());
        registry.register("request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register(
            "rejected_overload",
            "requests refused with 429 because the queue was full",
            rejected.clone(),
        );
        registry.register("queue_depth", "admitted requests waiting for a worker", queue_depth.clone());
        registry.register("jobs_running", "requests being evaluated", running.clone());
        registry.register("samples", "samples evaluated", samples.clone());
        registry.register("pbs", "programmable bootstraps evaluated (rate() gives PBS/s)", pbs.clone());
        registry.register("keys_cached", "decompressed evaluation keys in memory", keys_cached.clone());
        Metrics { registry, requests, latency, rejected, queue_depth, running, samples, pbs, keys_cached }
    }
}

/// The service's shared state.
pub struct App {
    config: Config,
    models: BTreeMap<String, Model>,
    store: KeyStore,
    /// Decompressed keys by (tenant, id).
    cache: Mutex<lru::LruCache<(String, String), Arc<EvalKey>>>,
    slots: Arc<Semaphore>,
    /// Requests admitted and not yet answered (running or waiting).
    admitted: AtomicUsize,
    /// Moving average of a job's run time, in microseconds (for Retry-After).
    job_us: AtomicU64,
    ready: AtomicBool,
    metrics: Metrics,
}

/// An API error: a status and a message for the caller (JSON `{"error": ..., "message": ...}`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": self.status.canonical_reason().unwrap_or("error"),
            "message": self.message,
        }));
        let mut response = (self.status, body).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller's tenant, from the `Authorization: Bearer` header.
pub struct Tenant(String);

impl FromRequestParts<Arc<App>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        match &app.config.auth {
            Auth::Anonymous => Ok(Tenant("anonymous".into())),
            Auth::Tokens(tokens) => {
                let token = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN` header")
                    })?;
                let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                tokens
                    .get(&digest)
                    .map(|t| Tenant(t.clone()))
                    .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"))
            }
        }
    }
}

/// Holds an admission (running or queued); released on drop, whatever happens to the request.
struct Admission(Arc<App>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
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
            let (artifact, digest) =
                fhec::fhe::load_server(dir).map_err(|e| format!("model {name} ({}): {e}", dir.display()))?;
            if models.insert(name.clone(), Model { artifact, digest }).is_some() {
                return Err(format!("two models are named {name}: name them with NAME=DIR"));
            }
        }
        if models.is_empty() {
            return Err("no model to serve".into());
        }
        let store = KeyStore::open(&config.store, config.key_ttl)
            .map_err(|e| format!("key store {}: {e}", config.store.display()))?;
        let cache = lru::LruCache::new(NonZeroUsize::new(config.key_cache.max(1)).expect("positive"));
        Ok(Arc::new(App {
            slots: Arc::new(Semaphore::new(config.workers)),
            config,
            models,
            store,
            cache: Mutex::new(cache),
            admitted: AtomicUsize::new(0),
            job_us: AtomicU64::new(1_000_000),
            ready: AtomicBool::new(true),
            metrics: Metrics::new(),
        }))
    }

    /// The router: the API above (every route is in [`ROUTES`]), with per-route body limits and request metrics., with per-route body limits and request metrics.
    pub fn router(self: &Arc<App>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/models", get(models))
            .route("/v1/keys", put(put_key).get(list_keys))
            .route("/v1/keys/{id}", get(get_key).delete(delete_key))
            .route("/v1/models/{model}/infer", post(infer))
            // Bodies are read after admission, each route under its own limit (see `read_body`).
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(self.clone(), observe))
            .with_state(self.clone())
    }

    /// Admits a request, or refuses it with 429 and a Retry-After when `workers + queue` are taken.
    fn admit(self: &Arc<App>) -> ApiResult<Admission> {
        let capacity = self.config.workers + self.config.queue;
        let mut now = self.admitted.load(Ordering::Acquire);
        loop {
            if now >= capacity {
                self.metrics.rejected.inc();
                // Room opens when the next admitted request ends: every job time / workers on average.
                let seconds =
                    (self.job_us.load(Ordering::Relaxed) / self.config.workers as u64).div_ceil(1_000_000).max(1);
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("the server is at capacity ({capacity} requests admitted): retry later"),
                );
                e.retry_after = Some(seconds);
                return Err(e);
            }
            match self.admitted.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Admission(self.clone())),
                Err(seen) => now = seen,
            }
        }
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

    /// The decompressed key `id` of `tenant`: from the cache, or loaded (checksum verified) and
    /// decompressed. Blocking: call from a job.
    fn eval_key(&self, tenant: &str, id: &str) -> ApiResult<Arc<EvalKey>> {
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
        let key = Arc::new(upload.key.decompress());
        self.cache_put(slot, key.clone());
        Ok(key)
    }

    fn cache_put(&self, slot: (String, String), key: Arc<EvalKey>) {
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
            .map(|(name, m)| ModelInfo {
                name: name.clone(),
                params: m.artifact.circuit.params.name().to_string(),
                circuit_digest: m.digest.clone(),
                inputs: m.artifact.circuit.n_inputs,
                outputs: m.artifact.circuit.outputs.len(),
                pbs_per_sample: m.artifact.circuit.pbs.len(),
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
];

/// Counts and times every request, and logs it (method, route, status, time: never bodies).
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let took = start.elapsed();
    let status = response.status().as_u16();
    app.metrics.requests.get_or_create(&RouteLabels { method: method.clone(), route: route.clone(), status }).inc();
    app.metrics.latency.get_or_create(&RouteLabel { route: route.clone() }).observe(took.as_secs_f64());
    tracing::info!(%method, %route, status, ms = took.as_secs_f64() * 1e3, "request");
    response
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn models(State(app): State<Arc<App>>, _tenant: Tenant) -> Json<Vec<ModelInfo>> {
    Json(app.model_infos())
}

/// Reads a request body of at most `limit` bytes (413 beyond), after admission: a refused request's
/// body is never buffered.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("{what} larger than this server's limit of {limit} bytes"))
    };
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading {what}: {e}"))
        }
    })
}

async fn put_key(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let admission = app.admit()?;
    let body = read_body(&headers, body, app.config.max_key_bytes, "the evaluation key").await?;
    let served: Vec<_> = app.models.values().map(|m| m.artifact.circuit.params).collect();
    let job_app = app.clone();
    let result = app
        .run_job(admission, move || -> ApiResult<(KeyMeta, bool)> {
            let upload = keystore::decode_upload(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            let params = upload.key.params();
            if !served.contains(&params) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the key is for parameter set {params}; the models served here use {}: generate keys with `fhec keygen` for the model",
                        served.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            // Decompressing checks the key's structure and warms the cache for the first request.
            let key = Arc::new(upload.key.decompress());
            let stored = job_app
                .store
                .put(&tenant, &upload, &body)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the key: {e}")))?;
            job_app.cache_put((tenant, upload.id), key);
            Ok(stored)
        })
        .await??;
    let (meta, new) = result;
    tracing::info!(key = %&meta.id[..16], tenant = %meta.tenant, new, "key stored");
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(meta)).into_response())
}

async fn list_keys(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Json<Vec<KeyMeta>> {
    Json(app.store.list(&tenant))
}

fn no_key(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no key {id} for this tenant (unknown, expired or deleted): upload it with PUT /v1/keys"),
    )
}

async fn get_key(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<KeyMeta>> {
    app.store.meta(&tenant, &id).map(Json).ok_or_else(|| no_key(&id))
}

async fn delete_key(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    app.evict(&tenant, &id);
    match app.store.delete(&tenant, &id) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(no_key(&id)),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("deleting key {id}: {e}"))),
    }
}

#[derive(Deserialize)]
struct InferQuery {
    key: Option<String>,
}

async fn infer(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<InferQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let model = app.models.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model {name}; served: {}", app.models.keys().cloned().collect::<Vec<_>>().join(", ")),
        )
    })?;
    let id = q.key.or_else(|| headers.get("x-fhec-key").and_then(|v| v.to_str().ok()).map(str::to_string));
    let id = id.ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "name the evaluation key: ?key=ID (the id PUT /v1/keys returned)")
    })?;
    let meta = app.store.meta(&tenant, &id).ok_or_else(|| no_key(&id))?;
    let bad = |status, msg: String| ApiError::new(status, msg);
    let circuit = &model.artifact.circuit;
    if meta.params != circuit.params.name() {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "key {} is for parameter set {}, model {name} needs {}: generate keys for this model",
                &id[..16],
                meta.params,
                circuit.params
            ),
        ));
    }
    let admission = app.admit()?;
    let body = read_body(&headers, body, app.config.max_request_bytes, "the ciphertexts").await?;
    let (job_app, digest, max_samples, job_name) =
        (app.clone(), model.digest.clone(), app.config.max_samples, name.clone());
    let out = app
        .run_job(admission, move || -> ApiResult<(Vec<u8>, usize)> {
            let (cts, _): (Tagged<InputCiphertexts>, _) = artifact::from_bytes(&body, Kind::Inputs)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("the request body {e}")))?;
            if cts.samples == 0 || cts.samples > max_samples {
                return Err(bad(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("{} samples in one request; this server takes 1 to {max_samples}", cts.samples),
                ));
            }
            if cts.key_fingerprint != meta.fingerprint {
                return Err(bad(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the ciphertexts were encrypted for key fingerprint {}, key {} has fingerprint {}",
                        cts.key_fingerprint,
                        &meta.id[..16],
                        meta.fingerprint
                    ),
                ));
            }
            if cts.circuit_digest != digest {
                return Err(bad(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the ciphertexts were encrypted for another model (or another build of it), not {job_name}"
                    ),
                ));
            }
            let model = &job_app.models[&job_name];
            let key = job_app.eval_key(&meta.tenant, &meta.id)?;
            let out = fhe::run_batch(&model.artifact.circuit, &key, &cts.data, cts.samples)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
            let tagged = Tagged {
                key_fingerprint: cts.key_fingerprint,
                circuit_digest: cts.circuit_digest,
                samples: cts.samples,
                data: out,
            };
            job_app.metrics.samples.inc_by(cts.samples as u64);
            job_app.metrics.pbs.inc_by((cts.samples * model.artifact.circuit.pbs.len()) as u64);
            let bytes =
                artifact::to_bytes(Kind::Outputs, &tagged).map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e))?.0;
            Ok((bytes, cts.samples))
        })
        .await??;
    let (bytes, samples) = out;
    tracing::info!(model = %name, key = %&id[..16], samples, "inference");
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Serves `app` on `listener` (a `TcpListener`, or a [`tls::TlsListener`]) until `shutdown` resolves, then stops accepting, reports not ready, and
/// returns once the requests in flight are answered. Expired keys are swept every minute.
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
                let removed = tokio::task::spawn_blocking(move || app.sweep()).await.unwrap_or(0);
                if removed > 0 {
                    tracing::info!(removed, "expired keys deleted");
                }
            }
        })
    };
    let router = app.router();
    let draining = app.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.ready.store(false, Ordering::Release);
            tracing::info!("shutting down: draining requests in flight");
        })
        .await;
    sweeper.abort();
    result
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
