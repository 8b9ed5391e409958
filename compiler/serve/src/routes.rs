//! The HTTP handlers and their error type: tenants from bearer tokens, keys, models, inference,
//! health, readiness and metrics; and the middleware that counts and logs every request.

use super::*;

/// An API error: a status and a message for the caller (JSON `{"error": ..., "message": ...}`).
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
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

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The caller's tenant, from the `Authorization: Bearer` header.
pub struct Tenant(pub(crate) String);

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

/// Counts and times every request, and logs it (method, route, status, time: never bodies).
pub(crate) async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
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

pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

pub(crate) async fn models(State(app): State<Arc<App>>, _tenant: Tenant) -> Json<Vec<ModelInfo>> {
    Json(app.model_infos())
}

/// Reads a request body of at most `limit` bytes (413 beyond), after admission: a refused request's
/// body is never buffered.
/// Reads a whole body of at most `limit` bytes within `time` (408 after it: a client that sends
/// slowly cannot hold its admission longer).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    time: Duration,
    what: &str,
) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("{what} larger than this server's limit of {limit} bytes"))
    };
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(time, axum::body::to_bytes(body, limit)).await.map_err(|_| {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("{what} did not arrive within {} s", time.as_secs()))
    })?;
    read.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading {what}: {e}"))
        }
    })
}

/// What a key's `params` names, in words: a tfhe-rs parameter set, or a CKKS build's ring and rotations.
pub(crate) fn key_kind(params: &str) -> String {
    if params.starts_with("ckks-") {
        format!("the CKKS ring and rotations {params}")
    } else {
        format!("parameter set {params}")
    }
}

/// Reads and drops what is left of a request body (up to `limit` bytes, for at most `time`), so that
/// a client refused before its body was read gets the answer rather than a reset connection.
pub(crate) async fn discard(mut body: Body, limit: usize, time: Duration) {
    use http_body_util::BodyExt;
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

/// What a request carries once `check` (what can be refused before its body is read) has passed and
/// the request is admitted: the check's value, the admission, and the body (at most
/// `max_request_bytes`; `what` names it in errors). A refused request's body is read and dropped
/// first: a client still sending a large body would see a broken pipe instead of the answer.
pub(crate) async fn admit_body<T>(
    app: &Arc<App>,
    tenant: &str,
    check: ApiResult<T>,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> ApiResult<(T, Admission, Bytes)> {
    let value = match check {
        Ok(v) => v,
        Err(e) => {
            discard(body, app.config.max_request_bytes, app.config.request_timeout).await;
            return Err(e);
        }
    };
    let admission = app.admit(tenant)?;
    let body = read_body(headers, body, app.config.max_request_bytes, app.config.body_timeout, what).await?;
    Ok((value, admission, body))
}

pub(crate) async fn put_key(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let admission = app.admit(&tenant)?;
    let body =
        read_body(&headers, body, app.config.max_key_bytes, app.config.body_timeout, "the evaluation key").await?;
    let job_app = app.clone();
    let result = app
        .run_job(admission, move || -> ApiResult<(KeyMeta, bool)> {
            let mut upload = keystore::decode_upload(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            // Decoding checks the key against the models and warms the cache for the first request.
            let (key, params) = job_app.decode_key(&upload.key, "")?;
            upload.params = params;
            let stored =
                job_app.store.put(&tenant, &upload, &body).map_err(|e| storage_error("storing the key", &e))?;
            job_app.cache_put((tenant, upload.id), key);
            Ok(stored)
        })
        .await??;
    let (meta, new) = result;
    tracing::info!(key = %&meta.id[..16], tenant = %meta.tenant, new, "key stored");
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(meta)).into_response())
}

/// A failed write to the store: 507 when the disk is full (nothing was stored; the client may retry
/// later), 500 otherwise; the message says which.
pub(crate) fn storage_error(what: &str, e: &std::io::Error) -> ApiError {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge) {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{what}: the server's store is full ({e}); nothing was stored"),
        )
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

pub(crate) async fn list_keys(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Json<Vec<KeyMeta>> {
    Json(app.store.list(&tenant))
}

pub(crate) fn no_key(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no key {id} for this tenant (unknown, expired or deleted): upload it with PUT /v1/keys"),
    )
}

pub(crate) async fn get_key(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<KeyMeta>> {
    app.store.meta(&tenant, &id).map(Json).ok_or_else(|| no_key(&id))
}

pub(crate) async fn delete_key(
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
pub(crate) struct InferQuery {
    pub(crate) key: Option<String>,
}

/// The key named by `?key=` (or `X-Fhec-Key`), checked against `model`.
pub(crate) fn key_for(
    app: &App,
    tenant: &str,
    q: &InferQuery,
    headers: &HeaderMap,
    name: &str,
    model: &Model,
) -> ApiResult<KeyMeta> {
    let id = q.key.clone().or_else(|| headers.get("x-fhec-key").and_then(|v| v.to_str().ok()).map(str::to_string));
    let id = id.ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "name the evaluation key: ?key=ID (the id PUT /v1/keys returned)")
    })?;
    let meta = app.store.meta(tenant, &id).ok_or_else(|| no_key(&id))?;
    let wanted = model.key_params();
    if meta.params != wanted {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "key {} is for {}, model {name} needs {}: generate keys for this model",
                &id[..16],
                key_kind(&meta.params),
                key_kind(&wanted)
            ),
        ));
    }
    Ok(meta)
}

pub(crate) async fn infer(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<InferQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bad = |status, msg: String| ApiError::new(status, msg);
    // What can be refused before the body is read: the model, the key, and whether they go together.
    let early = || -> ApiResult<(String, KeyMeta)> {
        let model = app.models.get(&name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no model {name}; served: {}", app.models.keys().cloned().collect::<Vec<_>>().join(", ")),
            )
        })?;
        if app.is_training(model) {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("model {name} is a training plan: submit training jobs to /v1/models/{name}/jobs"),
            ));
        }
        let meta = key_for(&app, &tenant, &q, &headers, &name, model)?;
        Ok((meta.id.clone(), meta))
    };
    let ((id, meta), admission, body) = admit_body(&app, &tenant, early(), &headers, body, "the ciphertexts").await?;
    let (job_app, job_name) = (app.clone(), name.clone());
    let out = app
        .run_job(admission, move || -> ApiResult<(Vec<u8>, usize)> {
            let model = &job_app.models[&job_name];
            // The tags every ciphertext file carries: sample count, key and build.
            let check = |samples: usize, fingerprint: &str, digest: &str, most: usize| {
                if samples == 0 || samples > most {
                    return Err(bad(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("{samples} samples in one request; this server takes 1 to {most} for {job_name}"),
                    ));
                }
                if fingerprint != meta.fingerprint {
                    return Err(bad(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "the ciphertexts were encrypted for key fingerprint {fingerprint}, key {} has fingerprint {}",
                            &meta.id[..16],
                            meta.fingerprint
                        ),
                    ));
                }
                if digest != model.digest() {
                    return Err(bad(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "the ciphertexts were encrypted for another model (or another build of it), not {job_name}"
                        ),
                    ));
                }
                Ok(())
            };
            let key = || job_app.eval_key(&meta.tenant, &meta.id);
            let wrong_key = || bad(StatusCode::UNPROCESSABLE_ENTITY, format!("key {} is not for {job_name}", &meta.id[..16]));
            let (bytes, samples) = match model {
                Model::Tfhe { artifact: served, .. } => {
                    let (cts, _): (Tagged<InputCiphertexts>, _) = artifact::from_bytes(&body, Kind::Inputs)
                        .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("the request body {e}")))?;
                    check(cts.samples, &cts.key_fingerprint, &cts.circuit_digest, job_app.config.max_samples)?;
                    #[allow(irrefutable_let_patterns)]
                    let ServedKey::Tfhe(key) = key()? else { return Err(wrong_key()) };
                    let out = fhe::run_batch(&served.circuit, &key, &cts.data, cts.samples)
                        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
                    job_app.metrics.pbs.inc_by((cts.samples * served.circuit.pbs.len()) as u64);
                    let tagged = Tagged {
                        key_fingerprint: cts.key_fingerprint,
                        circuit_digest: cts.circuit_digest,
                        samples: cts.samples,
                        data: out,
                    };
                    (artifact::to_bytes(Kind::Outputs, &tagged), cts.samples)
                }
                #[cfg(feature = "ckks")]
                Model::Ckks(d) => {
                    let (cts, _): (Tagged<Vec<u8>>, _) = artifact::from_bytes(&body, Kind::CkksInputs)
                        .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("the request body {e}")))?;
                    let most = d.max_samples(job_app.config.max_ckks_samples);
                    check(cts.samples, &cts.key_fingerprint, &cts.circuit_digest, most)?;
                    let ServedKey::Ckks(key) = key()? else { return Err(wrong_key()) };
                    let out = d.run(&key, &meta.fingerprint, &cts).map_err(|e| match e {
                        fhec::DriverError::Mismatch(m) => bad(StatusCode::UNPROCESSABLE_ENTITY, m),
                        other => bad(StatusCode::BAD_REQUEST, other.to_string()),
                    })?;
                    (artifact::to_bytes(Kind::CkksOutputs, &out), out.samples)
                }
                #[cfg(feature = "ckks")]
                Model::Train(_) => return Err(bad(StatusCode::UNPROCESSABLE_ENTITY, format!("{job_name} is a training plan"))),
            };
            job_app.metrics.samples.inc_by(samples as u64);
            Ok((bytes.map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e))?.0, samples))
        })
        .await??;
    let (bytes, samples) = out;
    tracing::info!(model = %name, key = %&id[..16], samples, "inference");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (HeaderName::from_static("x-fhec-samples"), HeaderValue::from(samples)),
        ],
        bytes,
    )
        .into_response())
}
