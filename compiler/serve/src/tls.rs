//! TLS for `fhec serve` and its client, with rustls and the ring provider.
//!
//! The server's certificate chain and private key come from PEM files. They are checked to match
//! when the server starts, and reloaded when the files change on disk (a renewed certificate, for
//! instance cert-manager updating a mounted Kubernetes secret) without a restart; a pair that fails
//! to load is reported and the one in use kept. Handshakes run off the accept loop, concurrently and
//! each under a deadline, so a slow or silent client cannot hold up the others.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// How often the certificate files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider, which the HTTP client uses. Idempotent.
pub fn install_default_provider() {
    // Err only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates in a PEM file, in order (leaf first for a chain).
pub fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no CERTIFICATE block in the file", path.display()));
    }
    Ok(certs)
}

/// What identifies one version of the certificate and key files: modification time, length, and on
/// Unix the inode and change time (a rewrite that keeps the mtime, as `cp -p` does, still changes them).
type Stamp = [(Option<SystemTime>, u64, u64, i64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|p| match std::fs::metadata(p) {
        Ok(m) => {
            #[cfg(unix)]
            let (ino, ctime) = {
                use std::os::unix::fs::MetadataExt;
                (m.ino(), m.ctime_nsec() + m.ctime() * 1_000_000_000)
            };
            #[cfg(not(unix))]
            let (ino, ctime) = (0, 0);
            (m.modified().ok(), m.len(), ino, ctime)
        }
        Err(_) => (None, 0, 0, 0),
    })
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_certificates(cert, "TLS certificate")?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("TLS private key {}: no PRIVATE KEY block in the file", key.display())
        }
        e => format!("TLS private key {}: {e}", key.display()),
    })?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| format!("TLS certificate {} with key {}: {e}", cert.display(), key.display()))
}

/// The certificate in use, swapped when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone())
    }
}

impl Reloading {
    fn refresh(&self) -> Result<bool, String> {
        let now = stamp(&self.cert, &self.key);
        if now == self.current.read().unwrap_or_else(|p| p.into_inner()).1 {
            return Ok(false);
        }
        let pair = load_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(pair), now);
        Ok(true)
    }
}

/// The server side: its rustls configuration, with a certificate that follows its files.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    certs: Arc<Reloading>,
}

impl ServerTls {
    /// Loads the certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or SEC1),
    /// refusing a key that does not belong to the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let provider = provider();
        let before = stamp(cert, key);
        let pair = load_pair(cert, key, &provider)?;
        let certs = Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: provider.clone(),
            current: RwLock::new((Arc::new(pair), before)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { config: Arc::new(config), certs })
    }

    /// Reloads the certificate and key if their files changed since the last load; `Ok(true)` when
    /// new ones are in use. On an error the previous pair stays in use.
    pub fn reload(&self) -> Result<bool, String> {
        self.certs.refresh()
    }
}

/// A listener for [`super::serve`] that hands out connections once their TLS handshake is done.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` (call from within the tokio runtime) and watching the certificate files.
    pub fn new(tcp: TcpListener, tls: ServerTls) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, incoming) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(tls.config.clone());
        let accepting = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        let reloading = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let tls = tls.clone();
                match tokio::task::spawn_blocking(move || tls.reload()).await {
                    Ok(Ok(true)) => tracing::info!("TLS certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the previous one")
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(TlsListener { incoming, local, tasks: [accepting, reloading] })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(conn) => conn,
            // The accepting task ended, which only happens when the listener is being dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
