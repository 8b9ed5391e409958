//! Training jobs over HTTP: the handlers of `/v1/models/{model}/jobs` and `/v1/jobs`, and the
//! training worker that runs their rounds.
//!
//! The protocol is the split of `fhec train plan` (see `fhec::train::deploy`) with the server's
//! files kept by the service: the data owner uploads the evaluation key (`PUT /v1/keys`) and the
//! encrypted set, the worker runs a round (as many iterations as one encryption carries), the data
//! owner fetches the state, refreshes it and puts it back, until the state holds every iteration;
//! then the data owner decrypts it to the ONNX model. The server never sees data, labels or weights.
//!
//! Bounds: one round runs at a time (a round at ring 2^15 peaks near 2.3 GB), and it takes one of
//! the service's worker slots; a round is stopped after `train_round_timeout`, and the job fails;
//! a tenant holds at most `max_jobs` jobs; uploads obey `max_request_bytes`. A job whose round a
//! shutdown or a crash interrupts runs that round again from its stored input when the service
//! starts (its earlier rounds are kept); a job is lost only with its directory or its key (expired
//! or deleted: it then fails, saying so).

use super::*;
use jobs::{JobMeta, Status};
use std::collections::VecDeque;

/// Jobs waiting for the worker, and the stop flags of the round running.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: Mutex<VecDeque<(String, String)>>,
    wake: tokio::sync::Notify,
    /// Set on shutdown: the round running stops, and no other starts.
    stopping: AtomicBool,
    /// The job whose round runs, and its stop flag.
    running: Mutex<Option<(String, Arc<AtomicBool>)>>,
}

impl Queue {
    pub(crate) fn push(&self, tenant: String, id: String) {
        self.waiting.lock().expect("queue").push_back((tenant, id));
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some((_, flag)) = &*self.running.lock().expect("running") {
            flag.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Stops job `id`'s round if it is the one running; whether it was.
    fn cancel(&self, id: &str) -> bool {
        match &*self.running.lock().expect("running") {
            Some((running, flag)) if running == id => {
                flag.store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }
}

/// The training worker: runs queued jobs' rounds one at a time, each on a worker slot, until
/// the queue is stopped.
pub(crate) async fn worker(app: Arc<App>) {
    loop {
        if app.training.stopping.load(Ordering::Acquire) {
            return;
        }
        let next = app.training.waiting.lock().expect("queue").pop_front();
        let Some((tenant, id)) = next else {
            app.training.wake.notified().await;
            continue;
        };
        let Ok(permit) = app.slots.clone().acquire_owned().await else { return };
        let flag = Arc::new(AtomicBool::new(false));
        *app.training.running.lock().expect("running") = Some((id.clone(), flag.clone()));
        if app.training.stopping.load(Ordering::Acquire) {
            flag.store(true, Ordering::Release);
        }
        // The time limit: the flag is set when it passes, and the round stops at its next product.
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (flag, timed_out, limit) = (flag.clone(), timed_out.clone(), app.config.train_round_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                timed_out.store(true, Ordering::Release);
                flag.store(true, Ordering::Release);
            })
        };
        let job_app = app.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job_app.metrics.running.inc();
            run_round(&job_app, &tenant, &id, &flag, &timed_out);
            job_app.metrics.running.dec();
        })
        .await;
        watchdog.abort();
        *app.training.running.lock().expect("running") = None;
        if let Err(e) = ran {
            tracing::error!(error = %e, "training worker failed");
        }
    }
}

/// How a round ended, for its job.
enum Ended {
    /// The new state's envelope, the iterations it holds, and the plan's total.
    #[cfg_attr(not(feature = "ckks"), allow(dead_code))]
    Round(Vec<u8>, usize, usize),
    Failed(String),
}

/// Runs the next round of `tenant`'s job `id`, if it is still queued, and records how it ended.
fn run_round(app: &App, tenant: &str, id: &str, flag: &AtomicBool, timed_out: &AtomicBool) {
    let Some(mut meta) = app.jobs.meta(tenant, id) else { return };
    if meta.status != Status::Queued {
        return;
    }
    meta.status = Status::Running;
    meta.message = None;
    if let Err(e) = app.jobs.save(&mut meta) {
        tracing::error!(job = %id, error = %e, "cannot record a training job");
        return;
    }
    tracing::info!(job = %id, model = %meta.model, from = meta.done, "training round");
    let start = Instant::now();
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(app, &meta, flag)))
        .unwrap_or_else(|_| Ended::Failed("the round failed inside the CKKS backend (malformed ciphertexts?)".into()));
    let seconds = start.elapsed().as_secs_f64();
    let stopping = app.training.stopping.load(Ordering::Acquire);
    let (stopped, timed_out) = (flag.load(Ordering::Acquire), timed_out.load(Ordering::Acquire));
    // The job as it is now: its owner may have cancelled it meanwhile.
    let Some(mut now) = app.jobs.meta(tenant, id) else { return };
    let cancelled = matches!(ended, Ended::Failed(_)) && stopped && !timed_out && !stopping;
    if now.status == Status::Cancelled || cancelled {
        let _ = app.jobs.delete(tenant, id);
        tracing::info!(job = %id, "training job cancelled");
        return;
    }
    match ended {
        Ended::Round(state, end, total) => {
            // The state before the metadata that says it is there.
            if let Err(e) = app.jobs.write(&now, "output", &state) {
                now.status = Status::Failed;
                now.message = Some(format!("the round ran, and its state could not be stored: {e}"));
            } else {
                now.status = if end >= total { Status::Done } else { Status::Waiting };
                now.done = end;
                now.state_done = end;
                now.rounds += 1;
                now.round_seconds.push(seconds);
                now.message = Some(if end >= total {
                    format!("trained: {end} iterations; fetch the state and decrypt it")
                } else {
                    format!(
                        "round {} done ({end} of {total} iterations): fetch the state, refresh it (`fhec train refresh`) and put it back",
                        now.rounds
                    )
                });
            }
            tracing::info!(job = %id, done = end, total, seconds, "training round done");
        }
        Ended::Failed(_) if stopping && !timed_out => {
            now.status = Status::Queued;
            now.done = now.state_done;
            now.message = Some("its round was interrupted by a shutdown of the service, and runs again".into());
            tracing::info!(job = %id, "training round interrupted by the shutdown");
        }
        Ended::Failed(why) => {
            now.status = Status::Failed;
            now.done = now.state_done;
            now.message = Some(if timed_out {
                format!(
                    "the round was stopped after {} s, this server's limit for a round",
                    app.config.train_round_timeout.as_secs()
                )
            } else {
                why
            });
            tracing::warn!(job = %id, message = now.message.as_deref().unwrap_or(""), "training job failed");
        }
    }
    if let Err(e) = app.jobs.save(&mut now) {
        tracing::error!(job = %id, error = %e, "cannot record a training job");
    }
}

/// The round itself: the key, the stored set and state, the plan.
#[cfg(feature = "ckks")]
fn train(app: &App, meta: &JobMeta, flag: &AtomicBool) -> Ended {
    let Some(Model::Train(plan)) = app.models.get(&meta.model) else {
        return Ended::Failed(format!("model {} is not served as a training plan any more", meta.model));
    };
    let key = match app.eval_key(&meta.tenant, &meta.key) {
        Ok(ServedKey::Ckks(k)) => k,
        Ok(_) => return Ended::Failed(format!("key {} is not a CKKS key", &meta.key[..16])),
        Err(e) => return Ended::Failed(format!("{}: upload the key again and submit the job again", e.message)),
    };
    let read =
        |file: &str| app.jobs.read(meta, file).map_err(|e| format!("the job's stored {file} cannot be read: {e}"));
    let data = match read("data") {
        Ok(d) => d,
        Err(e) => return Ended::Failed(e),
    };
    let input = if meta.state_done > 0 {
        match read("input") {
            Ok(d) => Some(d),
            Err(e) => return Ended::Failed(e),
        }
    } else {
        None
    };
    let progress = |k: usize| {
        // The iteration count on disk, for pollers; a failure to record it does not stop the round.
        if let Some(mut m) = app.jobs.meta(&meta.tenant, &meta.id)
            && m.status == Status::Running
        {
            m.done = k + 1;
            let _ = app.jobs.save(&mut m);
        }
    };
    let state = input.as_deref().map(|b| (b, "the job's refreshed state"));
    match plan.round(&key, &meta.fingerprint, (&data, "the job's training set"), state, Some(flag), progress) {
        Ok((state, end, total)) => {
            app.metrics.samples.inc_by(plan.plan().samples as u64 * (end - meta.state_done) as u64);
            Ended::Round(state, end, total)
        }
        Err(e) => Ended::Failed(e.to_string()),
    }
}

#[cfg(not(feature = "ckks"))]
fn train(_: &App, meta: &JobMeta, _: &AtomicBool) -> Ended {
    Ended::Failed(format!(
        "model {}: training runs on CKKS, which this fhec was built without (poulpy needs a nightly compiler)",
        meta.model
    ))
}

fn no_job(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no training job {id} for this tenant (unknown, expired or deleted)"))
}

fn stored(e: std::io::Error) -> ApiError {
    storage_error("storing the job", &e)
}

/// `POST /v1/models/{model}/jobs?key=ID`: an encrypted training set in, a queued job out (202).
pub(crate) async fn submit(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<InferQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let early = || -> ApiResult<KeyMeta> {
        let model = app.models.get(&name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no model {name}; served: {}", app.models.keys().cloned().collect::<Vec<_>>().join(", ")),
            )
        })?;
        if !app.is_training(model) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "model {name} is not a training plan (it serves inference at /v1/models/{name}/infer): serve the directory `fhec train plan` wrote"
                ),
            ));
        }
        let meta = key_for(&app, &tenant, &q, &headers, &name, model)?;
        let live = app.jobs.list(&tenant).len();
        if live >= app.config.max_jobs {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this tenant holds {live} training jobs, the most this server keeps: delete finished ones"),
            ));
        }
        Ok(meta)
    };
    let (key, admission, body) =
        admit_body(&app, &tenant, early(), &headers, body, "the encrypted training set").await?;
    let job_app = app.clone();
    let meta = app
        .run_job(admission, move || -> ApiResult<JobMeta> {
            let total = job_app.check_upload(&name, &body, artifact::Kind::TrainData, &key.fingerprint)?.1;
            job_app.jobs.create(&tenant, &name, (&key.id, &key.fingerprint), total, &body).map_err(stored)
        })
        .await??;
    tracing::info!(job = %meta.id, model = %meta.model, tenant = %meta.tenant, "training job queued");
    app.training.push(meta.tenant.clone(), meta.id.clone());
    Ok((StatusCode::ACCEPTED, Json(meta)).into_response())
}

impl App {
    pub(crate) fn is_training(&self, model: &Model) -> bool {
        #[cfg(feature = "ckks")]
        return matches!(model, Model::Train(_));
        #[cfg(not(feature = "ckks"))]
        {
            let _ = model;
            false
        }
    }

    /// Checks an uploaded set or state for training model `name` and a key of `fingerprint`:
    /// returns the iterations it holds and the plan's total. Blocking: call from a job.
    fn check_upload(&self, name: &str, body: &[u8], kind: Kind, fingerprint: &str) -> ApiResult<(usize, usize)> {
        #[cfg(feature = "ckks")]
        if let Some(Model::Train(plan)) = self.models.get(name) {
            let what = if kind == Kind::TrainData { "the encrypted training set" } else { "the state" };
            let done = plan.check_upload(body, kind, fingerprint, what).map_err(|e| match e {
                fhec::DriverError::Mismatch(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
                other => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
            })?;
            return Ok((done, plan.plan().hyper.iterations));
        }
        let _ = (body, kind, fingerprint);
        Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("model {name} is not served as a training plan")))
    }
}

pub(crate) async fn list(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Json<Vec<JobMeta>> {
    Json(app.jobs.list(&tenant))
}

pub(crate) async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<JobMeta>> {
    app.jobs.meta(&tenant, &id).map(Json).ok_or_else(|| no_job(&id))
}

/// `DELETE /v1/jobs/{id}`: 204, or 202 when its round is running (it stops, then the job is removed).
pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let mut meta = app.jobs.meta(&tenant, &id).ok_or_else(|| no_job(&id))?;
    if meta.status == Status::Running {
        meta.status = Status::Cancelled;
        app.jobs.save(&mut meta).map_err(stored)?;
        app.training.cancel(&id);
        return Ok(StatusCode::ACCEPTED);
    }
    match app.jobs.delete(&tenant, &id) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(no_job(&id)),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("deleting job {id}: {e}"))),
    }
}

/// `GET /v1/jobs/{id}/state`: the encrypted weights the last round ended with.
pub(crate) async fn get_state(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let meta = app.jobs.meta(&tenant, &id).ok_or_else(|| no_job(&id))?;
    if !meta.status.has_state() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} is {:?}: no state to fetch until its round ends", meta.status).to_lowercase(),
        ));
    }
    let bytes = app
        .jobs
        .read(&meta, "output")
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading job {id}'s state: {e}")))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], bytes).into_response())
}

/// `PUT /v1/jobs/{id}/state`: the state refreshed by the data owner; queues the next round (202).
pub(crate) async fn put_state(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let early = || -> ApiResult<JobMeta> {
        let meta = app.jobs.meta(&tenant, &id).ok_or_else(|| no_job(&id))?;
        if meta.status != Status::Waiting {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("job {id} is {:?}: it takes a state only between rounds", meta.status).to_lowercase(),
            ));
        }
        Ok(meta)
    };
    let (meta, admission, body) = admit_body(&app, &tenant, early(), &headers, body, "the state").await?;
    let job_app = app.clone();
    let meta = app
        .run_job(admission, move || -> ApiResult<JobMeta> {
            let (done, _) = job_app.check_upload(&meta.model, &body, Kind::TrainState, &meta.fingerprint)?;
            if done != meta.state_done {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "the state holds {done} iterations and job {} is at {}: put back the state fetched from this job",
                        meta.id, meta.state_done
                    ),
                ));
            }
            job_app.jobs.write(&meta, "input", &body).map_err(stored)?;
            let mut meta = meta;
            meta.status = Status::Queued;
            meta.message = None;
            job_app.jobs.save(&mut meta).map_err(stored)?;
            Ok(meta)
        })
        .await??;
    app.training.push(meta.tenant.clone(), meta.id.clone());
    Ok((StatusCode::ACCEPTED, Json(meta)).into_response())
}
