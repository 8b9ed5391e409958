//! `fhec serve`: serve compiled models over HTTP(S).

use super::{runtime, served_name};
use crate::Global;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use clap::Args;
use clap::ValueEnum;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// Serve compiled models over HTTP: evaluation-key sessions and encrypted inference (see
/// deploy/README.md). Holds no secret key.
#[derive(Args)]
pub struct ServeArgs {
    /// Build directories (or `fhec train plan` directories, which take training jobs) to serve, as DIR
    /// (named after the directory, without .fhec) or NAME=DIR.
    #[arg(required = true)]
    pub models: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Where evaluation keys are kept (share it between replicas to let any replica serve any key).
    #[arg(long, default_value = "fhec-keys")]
    pub store: PathBuf,
    /// Bearer tokens: a file of `TENANT TOKEN` lines.
    #[arg(long, env = "FHEC_TOKENS_FILE")]
    pub tokens: Option<PathBuf>,
    /// No authentication: every caller is one tenant (local development only).
    #[arg(long, conflicts_with = "tokens")]
    pub allow_anonymous: bool,
    /// Requests evaluated at once (each uses every worker thread).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Requests that may wait for a worker; beyond them the server answers 429.
    #[arg(long, default_value_t = 8)]
    pub queue: usize,
    /// Hours an evaluation key is kept after its last upload.
    #[arg(long, default_value_t = 168.0)]
    pub key_ttl_hours: f64,
    #[arg(long, default_value_t = 64)]
    pub max_key_mb: usize,
    #[arg(long, default_value_t = 64)]
    pub max_request_mb: usize,
    /// Samples per inference request.
    #[arg(long, default_value_t = 256)]
    pub max_samples: usize,
    /// Samples per request on a CKKS build (a batch-major request holds at most the ring's slots).
    #[arg(long, default_value_t = 16384)]
    pub max_ckks_samples: usize,
    /// Seconds from a request's arrival to its answer, waiting included.
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Seconds a connection may take to send a request's headers before it is closed (slowloris).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a request body may take to arrive before it is refused with 408.
    #[arg(long, default_value_t = 120)]
    pub body_timeout: u64,
    /// Connections open at once; more wait in the kernel's backlog.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Decompressed evaluation keys kept in memory.
    #[arg(long, default_value_t = 4)]
    pub key_cache: usize,
    /// Seconds a training round may run before it is stopped and its job fails.
    #[arg(long, default_value_t = 3600)]
    pub train_timeout: u64,
    /// Training jobs one tenant may hold at once (finished ones count until deleted or expired).
    #[arg(long, default_value_t = 8)]
    pub max_jobs: usize,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); reloaded when the file changes.
    #[arg(long, env = "FHEC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "FHEC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

pub fn run(args: ServeArgs, g: &Global) -> Result<()> {
    let ServeArgs {
        models,
        listen,
        store,
        tokens,
        allow_anonymous,
        workers,
        queue,
        key_ttl_hours,
        max_key_mb,
        max_request_mb,
        max_samples,
        max_ckks_samples,
        request_timeout,
        header_timeout,
        body_timeout,
        max_connections,
        key_cache,
        train_timeout,
        max_jobs,
        log_format,
        tls_cert,
        tls_key,
    } = args;
    let threads = g.threads;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let auth = match (tokens, allow_anonymous) {
        (Some(path), _) => fhec_serve::Auth::from_file(&path).map_err(anyhow::Error::msg)?,
        (None, true) => fhec_serve::Auth::Anonymous,
        (None, false) => {
            bail!("give --tokens FILE (lines `TENANT TOKEN`) or, for local development, --allow-anonymous")
        }
    };
    if !(key_ttl_hours > 0.0 && key_ttl_hours <= 24.0 * 3650.0) {
        bail!("--key-ttl-hours must be more than 0 and at most ten years");
    }
    if [workers, max_samples, max_ckks_samples, key_cache, max_jobs, max_connections].contains(&0)
        || [request_timeout, train_timeout, header_timeout, body_timeout].contains(&0)
    {
        bail!(
            "--workers, --max-samples, --max-ckks-samples, --key-cache, --max-jobs, --max-connections, --request-timeout, --train-timeout, --header-timeout and --body-timeout must be at least 1"
        );
    }
    let models = models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((name, dir)) => (name.to_string(), PathBuf::from(dir)),
            None => (served_name(Path::new(m)), PathBuf::from(m)),
        })
        .collect();
    let mut config = fhec_serve::Config::new(models, store, auth);
    config.workers = workers;
    config.queue = queue;
    config.key_ttl = Duration::from_secs_f64(key_ttl_hours * 3600.0);
    config.max_key_bytes = max_key_mb.saturating_mul(1 << 20);
    config.max_request_bytes = max_request_mb.saturating_mul(1 << 20);
    config.max_samples = max_samples;
    config.max_ckks_samples = max_ckks_samples;
    config.request_timeout = Duration::from_secs(request_timeout);
    config.header_timeout = Duration::from_secs(header_timeout);
    config.body_timeout = Duration::from_secs(body_timeout);
    config.max_connections = max_connections;
    config.key_cache = key_cache;
    config.train_round_timeout = Duration::from_secs(train_timeout);
    config.max_jobs = max_jobs;
    let tls = match (&tls_cert, &tls_key) {
        (Some(cert), Some(key)) => Some(fhec_serve::tls::ServerTls::load(cert, key).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let app = fhec_serve::App::new(config).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async move {
        let (listener, addr) = fhec_serve::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let names: Vec<String> =
            app.model_infos().iter().map(|m| format!("{} ({} PBS/sample)", m.name, m.pbs_per_sample)).collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, threads, models = %names.join(", "), "serving");
        match tls {
            Some(tls) => {
                fhec_serve::serve(app, fhec_serve::tls::TlsListener::new(listener, tls)?, fhec_serve::shutdown_signal())
                    .await
            }
            None => fhec_serve::serve(app, listener, fhec_serve::shutdown_signal()).await,
        }
        .context("serving")
    })?;
    Ok(())
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
