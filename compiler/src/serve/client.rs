//! The client of `fhec serve`: registers evaluation keys, sends ciphertexts, retries when the server
//! says it is busy (429/503, honouring Retry-After) or cannot be reached, and returns the result bytes
//! for the caller to decrypt. Holds no key material itself: it carries bytes.

use super::ModelInfo;
use super::keystore::KeyMeta;
use crate::DriverError;
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

fn err(msg: impl Into<String>) -> DriverError {
    DriverError::Input(msg.into())
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

impl Remote {
    pub fn new(url: &str, token: Option<String>) -> Result<Remote, DriverError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(err(format!("server URL {url:?}: expected http://HOST:PORT")));
        }
        if base.starts_with("https://") {
            return Err(err("this fhec client speaks plain HTTP: reach TLS servers through a local proxy or an ingress that terminates TLS"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| err(format!("HTTP client: {e}")))?;
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
    async fn send(&self, make: impl Fn() -> reqwest::RequestBuilder, attempts: &mut Attempts) -> Result<reqwest::Response, DriverError> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=self.retries {
            let last = attempt == self.retries;
            match make().send().await {
                Ok(r) if matches!(r.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) && !last => {
                    attempts.rejected += 1;
                    let asked = r.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                    let wait = asked.map_or(backoff, Duration::from_secs).min(self.max_backoff);
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => return Ok(r),
                Err(e) if (e.is_connect() || e.is_timeout()) && !last => {
                    attempts.failed += 1;
                    tokio::time::sleep(backoff.min(self.max_backoff)).await;
                }
                Err(e) => return Err(err(format!("{}: {e}", self.base))),
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
        unreachable!("the last attempt returns")
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, DriverError> {
        let r = self.send(|| self.request(reqwest::Method::GET, "/v1/models"), &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("GET /v1/models: {e}")))
    }

    /// Uploads an evaluation key (the bytes of `eval.key`); idempotent (the id is the content's hash).
    pub async fn register_key(&self, bytes: Vec<u8>) -> Result<KeyMeta, DriverError> {
        let body = bytes::Bytes::from(bytes);
        let r = self.send(|| self.request(reqwest::Method::PUT, "/v1/keys").body(body.clone()), &mut Attempts::default()).await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(|e| err(format!("PUT /v1/keys: {e}")))
    }

    pub async fn keys(&self) -> Result<Vec<KeyMeta>, DriverError> {
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
    pub async fn delete_key(&self, id: &str) -> Result<bool, DriverError> {
        let r = self.send(|| self.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}")), &mut Attempts::default()).await?;
        match r.status() {
            StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(err(message(r).await)),
        }
    }

    /// Runs `model` on ciphertexts (an `Inputs` file's bytes) with key `key_id`; returns the results'
    /// bytes and how many attempts it took.
    pub async fn infer(&self, model: &str, key_id: &str, ciphertexts: Vec<u8>) -> Result<(Vec<u8>, Attempts), DriverError> {
        let body = bytes::Bytes::from(ciphertexts);
        let path = format!("/v1/models/{model}/infer?key={key_id}");
        let mut attempts = Attempts::default();
        let r = self
            .send(|| self.request(reqwest::Method::POST, &path).header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(body.clone()), &mut attempts)
            .await?;
        if matches!(r.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            return Err(DriverError::Busy(message(r).await));
        }
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        let bytes = r.bytes().await.map_err(|e| err(format!("reading the results: {e}")))?;
        Ok((bytes.to_vec(), attempts))
    }
}
