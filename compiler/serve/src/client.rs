//! The client of `fhec serve`: registers evaluation keys, sends ciphertexts, retries when the server
//! says it is busy (429/503, honouring Retry-After) or cannot be reached, and returns the result bytes
//! for the caller to decrypt. Holds no key material itself: it carries bytes.

use super::ModelInfo;
use super::jobs::JobMeta;
use super::keystore::KeyMeta;
use crate::ServeError;
use reqwest::StatusCode;
use std::time::Duration;

/// A server, its bearer token, and the retry policy.
#[derive(Clone)]
pub struct Remote {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Attempts after the first, for busy answers and connection failures.
    pub retries: u32,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

/// How one inference went (what the load test counts).
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    /// Answers 429 or 503 before the request was accepted.
    pub rejected: u32,
    /// Connection failures before it was accepted.
    pub failed: u32,
}

fn err(msg: impl Into<String>) -> ServeError {
    ServeError::Remote(msg.into())
}

/// The server's error message from a JSON error body, or the body itself.
async fn message(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or(text);
    format!("the server answered {status}: {msg}")
}

/// A request's error with its causes, which reqwest keeps out of its own message (a certificate the
/// client does not trust, a refused connection).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

/// The rustls error behind a request's failure, if TLS refused the server (its certificate, or no
/// TLS at all).
fn rustls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An io::Error hides the error it wraps from `source()` (and may wrap another io::Error).
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

/// Whether the failure is TLS refusing the server: not worth a retry.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    rustls_error(e).is_some()
}

/// What to do about common connection failures, from the error's text.
fn hint(text: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 6] = [
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA this client trusts: pass --ca-cert with the CA that signed it",
        ),
        (
            "CaUsedAsEndEntity",
            "the server's certificate is a CA certificate, as `openssl req -x509` makes by default: issue one with basicConstraints CA:FALSE, see deploy/README.md",
        ),
        (
            "NotValidForName",
            "the server's certificate does not name this host: use a URL with a name or address it lists",
        ),
        ("Expired", "the server's certificate has expired"),
        ("invalid HTTP version parsed", "is the server serving HTTPS? then use an https:// URL"),
        ("InvalidContentType", "is the server serving plain HTTP? then use an http:// URL"),
    ];
    HINTS.iter().find(|(needle, _)| text.contains(needle)).map(|(_, h)| *h)
}

impl Remote {
    /// A client for the server at `url` (http:// or https://). For https, the server's certificate is
    /// checked against `ca_cert` (a PEM file of trusted certificates) when given, else against the
    /// system's trusted roots.
    pub fn new(url: &str, token: Option<String>, ca_cert: Option<&std::path::Path>) -> Result<Remote, ServeError> {
        let base = url.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !(https || base.starts_with("http://")) {
            return Err(err(format!("server URL {url:?}: expected http://HOST:PORT or https://HOST:PORT")));
        }
        super::tls::install_default_provider();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = ca_cert {
            if !https {
                return Err(err(format!("--ca-cert {} is for https:// servers; {url} is plain HTTP", path.display())));
            }
            let certs = super::tls::read_certificates(path, "CA certificate")
                .map_err(err)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("CA certificate {}: {e}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        if !https {
            // No certificate verifier for plain HTTP: the system's trust store may be absent.
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = builder.build().map_err(|e| {
            let text = describe(&e);
            let hint = if text.contains("CA certificates") {
                " (install the system's CA certificates, e.g. the ca-certificates package, or pass --ca-cert)"
            } else {
                ""
            };
            err(format!("HTTP client: {text}{hint}"))
        })?;
        Ok(Remote { base, token, http, retries: 8, max_backoff: Duration::from_secs(30) })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends the request `make` builds, again while the server is busy or unreachable, waiting as the
    /// server asks (Retry-After) or with exponential backoff.
    async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        attempts: &mut Attempts,
    ) -> Result<reqwest::Response, ServeError> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=self.retries {
            let last = attempt == self.retries;
            match make().send().await {
                Ok(r)
                    if matches!(r.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                        && !last =>
                {
                    attempts.rejected += 1;
                    let asked = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let wait = asked.map_or(backoff, Duration::from_secs).min(self.max_backoff);
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => return Ok(r),
                Err(e) if (e.is_connect() || e.is_timeout()) && !is_tls_failure(&e) && !last => {
                    attempts.failed += 1;
                    tokio::time::sleep(backoff.min(self.max_backoff)).await;
                }
                Err(e) => {
                    let text = describe(&e);
                    // The rustls error's variant names (NotValidForNameContext...) are in its Debug form only.
                    let detail = rustls_error(&e).map(|r| format!("{r:?}")).unwrap_or_default();
                    let hint = hint(&format!("{text} {detail}")).map(|h| format!(" ({h})")).unwrap_or_default();
                    return Err(err(format!("{}: {text}{hint}", self.base)));
                }
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
        unreachable!("the last attempt returns")
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, ServeError> {
        let r = self.send(|| self.request(reqwest::Method::GET, "/v1/models"), &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("GET /v1/models: {e}")))
    }

    /// Uploads an evaluation key (the bytes of `eval.key`); idempotent (the id is the content's hash).
    pub async fn register_key(&self, bytes: Vec<u8>) -> Result<KeyMeta, ServeError> {
        let body = bytes::Bytes::from(bytes);
        let r = self
            .send(|| self.request(reqwest::Method::PUT, "/v1/keys").body(body.clone()), &mut Attempts::default())
            .await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("PUT /v1/keys: {e}")))
    }

    pub async fn keys(&self) -> Result<Vec<KeyMeta>, ServeError> {
        let r = self.send(|| self.request(reqwest::Method::GET, "/v1/keys"), &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("GET /v1/keys: {e}")))
    }

    /// Whether the server holds key `id` for this tenant (false on any failure).
    pub async fn key_exists(&self, id: &str) -> bool {
        matches!(self.send(|| self.request(reqwest::Method::GET, &format!("/v1/keys/{id}")), &mut Attempts::default()).await, Ok(r) if r.status().is_success())
    }

    /// Deletes a key; false if the server had none of that id for this tenant.
    pub async fn delete_key(&self, id: &str) -> Result<bool, ServeError> {
        let r = self
            .send(|| self.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}")), &mut Attempts::default())
            .await?;
        match r.status() {
            StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(err(message(r).await)),
        }
    }

    /// Runs `model` on ciphertexts (an `Inputs` file's bytes) with key `key_id`; returns the results'
    /// bytes and how many attempts it took.
    pub async fn infer(
        &self,
        model: &str,
        key_id: &str,
        ciphertexts: Vec<u8>,
    ) -> Result<(Vec<u8>, Attempts), ServeError> {
        let body = bytes::Bytes::from(ciphertexts);
        let path = format!("/v1/models/{model}/infer?key={key_id}");
        let mut attempts = Attempts::default();
        let r = self
            .send(
                || {
                    self.request(reqwest::Method::POST, &path)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                },
                &mut attempts,
            )
            .await?;
        if matches!(r.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            return Err(ServeError::Busy(message(r).await));
        }
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        let bytes = r.bytes().await.map_err(|e| err(format!("reading the results: {e}")))?;
        Ok((bytes.to_vec(), attempts))
    }

    /// Sends a request whose answer is JSON, or an error with the server's message.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<bytes::Bytes>,
    ) -> Result<T, ServeError> {
        let make = || {
            let r = self.request(method.clone(), path);
            match &body {
                Some(b) => r.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(b.clone()),
                None => r,
            }
        };
        let r = self.send(make, &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("{method} {path}: {e}")))
    }

    /// Submits a training job: an encrypted training set (the bytes `fhec encrypt` writes for a
    /// training plan) for training model `model` with key `key_id`. The job is queued.
    pub async fn submit_job(&self, model: &str, key_id: &str, data: Vec<u8>) -> Result<JobMeta, ServeError> {
        let path = format!("/v1/models/{model}/jobs?key={key_id}");
        self.json(reqwest::Method::POST, &path, Some(data.into())).await
    }

    pub async fn job(&self, id: &str) -> Result<JobMeta, ServeError> {
        self.json(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await
    }

    /// This tenant's training jobs.
    pub async fn jobs(&self) -> Result<Vec<JobMeta>, ServeError> {
        self.json(reqwest::Method::GET, "/v1/jobs", None).await
    }

    /// The encrypted weights a job's last round ended with.
    pub async fn job_state(&self, id: &str) -> Result<Vec<u8>, ServeError> {
        let path = format!("/v1/jobs/{id}/state");
        let r = self.send(|| self.request(reqwest::Method::GET, &path), &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        Ok(r.bytes().await.map_err(|e| err(format!("reading job {id}'s state: {e}")))?.to_vec())
    }

    /// Puts back a job's state refreshed by the data owner, which queues its next round.
    pub async fn continue_job(&self, id: &str, state: Vec<u8>) -> Result<JobMeta, ServeError> {
        self.json(reqwest::Method::PUT, &format!("/v1/jobs/{id}/state"), Some(state.into())).await
    }

    /// Deletes a job (a round running stops first); false if the server had no such job.
    pub async fn delete_job(&self, id: &str) -> Result<bool, ServeError> {
        let path = format!("/v1/jobs/{id}");
        let r = self.send(|| self.request(reqwest::Method::DELETE, &path), &mut Attempts::default()).await?;
        match r.status() {
            StatusCode::NO_CONTENT | StatusCode::ACCEPTED => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(err(message(r).await)),
        }
    }
}
