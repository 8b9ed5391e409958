//! The service's evaluation-key store: one directory, one subdirectory per tenant, two files per key.
//!
//! - `ROOT/t-<tenant digest>/<id>.key`: the evaluation key exactly as uploaded (an fhec envelope
//!   with its SHA-256 checksum); `<id>` is the hex SHA-256 of its payload, so a key's id is its
//!   content and uploading the same key twice stores it once.
//! - `ROOT/t-<tenant digest>/<id>.json`: [`KeyMeta`] (owner, parameter set, expiry), written after
//!   the key, so a key without metadata is an interrupted upload and is never served.
//!
//! Every file is written to a temporary file in the same directory, fsynced, renamed over its name and
//! the directory fsynced: a crash leaves the old state or the new one, never half a key. Loading
//! verifies the envelope checksum and that the payload hashes to the id. Several replicas can share
//! the directory (a network volume): writes are whole-file renames and ids are content addresses.

use fhec_runtime::artifact::{self, Kind};
use fhec_runtime::fhe::CompressedEvalKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the store knows of a key (the JSON the API returns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Hex SHA-256 of the key's payload.
    pub id: String,
    /// What ciphertexts made for this key are tagged with.
    pub fingerprint: String,
    pub tenant: String,
    /// What the key is for: a tfhe-rs parameter set, or a CKKS build's ring and rotations
    /// (`ckks-2^LOGN-Rrot-DIGEST`).
    pub params: String,
    pub bytes: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub expires: u64,
}

pub struct KeyStore {
    root: PathBuf,
    ttl: Duration,
    disk: Arc<dyn Disk>,
}

/// How the store writes a file: whole, or not at all ([`Fsync`] on a real disk). A write that fails
/// (a full disk) leaves no file of that name changed. Tests put failing disks here.
pub trait Disk: Send + Sync + std::fmt::Debug {
    fn write(&self, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()>;
}

/// The real disk: [`write_atomic`].
#[derive(Debug)]
pub struct Fsync;

impl Disk for Fsync {
    fn write(&self, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(dir, name, bytes)
    }
}

/// A tenant's directory name: a digest of the tenant, so no tenant name reaches a path.
pub(crate) fn tenant_dir(tenant: &str) -> String {
    format!("t-{}", &artifact::hex(&Sha256::digest(tenant.as_bytes()))[..24])
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A key id is 64 lowercase hex digits; anything else (a path, say) names no key.
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a stored key cannot be used.
#[derive(Debug)]
pub enum LoadError {
    /// Unknown, expired or deleted.
    Missing,
    /// On disk but unreadable or failing its checksum: the client should upload it again.
    Damaged(String),
}

/// An uploaded evaluation key, by scheme.
pub enum Uploaded {
    /// A TFHE server key (compressed); it names its parameter set.
    Tfhe(Box<CompressedEvalKey>),
    /// A CKKS evaluation key: poulpy's bytes, which only a served build's ring and rotations can read
    /// (the app checks them against its CKKS models).
    Ckks(Vec<u8>),
}

/// A validated upload: the decoded key, its id and fingerprint, and what it is for (a tfhe-rs
/// parameter set, or a CKKS build's ring and rotations: see `fhec::ckks::deploy::Deployed::key_params`).
pub struct Upload {
    pub key: Uploaded,
    pub id: String,
    pub fingerprint: String,
    /// Empty for a CKKS key until the app has matched it with a served build.
    pub params: String,
}

/// Decodes uploaded evaluation-key bytes (checksum verified); the error says what is wrong.
pub fn decode_upload(bytes: &[u8]) -> Result<Upload, String> {
    let is_ckks = artifact::peek_kind(bytes) == Some(Kind::CkksEvalKey);
    let (key, params, payload) = if is_ckks {
        let (raw, payload): (Vec<u8>, _) =
            artifact::from_bytes(bytes, Kind::CkksEvalKey).map_err(|e| format!("the evaluation key {e}"))?;
        (Uploaded::Ckks(raw), String::new(), payload)
    } else {
        let (key, payload): (CompressedEvalKey, _) =
            artifact::from_bytes(bytes, Kind::EvalKey).map_err(|e| format!("the evaluation key {e}"))?;
        key.check().map_err(|e| e.to_string())?;
        let params = key.params().name().to_string();
        (Uploaded::Tfhe(Box::new(key)), params, payload)
    };
    Ok(Upload {
        key,
        id: artifact::hex(&Sha256::digest(&payload)),
        fingerprint: artifact::fingerprint(&payload),
        params,
    })
}

/// Writes `dir/name` so that a crash leaves the old file or the new one: a temporary file in `dir`,
/// fsynced, renamed over `name`, and `dir` fsynced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

impl KeyStore {
    /// Opens (creating it if needed) the store at `root`; keys live `ttl` after their upload.
    pub fn open(root: &Path, ttl: Duration, disk: Arc<dyn Disk>) -> std::io::Result<KeyStore> {
        std::fs::create_dir_all(root)?;
        let store = KeyStore { root: root.to_path_buf(), ttl, disk };
        // Temporary files left by a crash mid-write.
        for dir in store.tenant_dirs() {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(store)
    }

    fn tenant_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("t-")))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn dir(&self, tenant: &str) -> PathBuf {
        self.root.join(tenant_dir(tenant))
    }

    /// Stores an uploaded key for `tenant` (or renews its expiry if it is stored already). Returns its
    /// metadata and whether it was new.
    pub fn put(&self, tenant: &str, upload: &Upload, bytes: &[u8]) -> std::io::Result<(KeyMeta, bool)> {
        let dir = self.dir(tenant);
        std::fs::create_dir_all(&dir)?;
        let existing = self.meta(tenant, &upload.id);
        let created = existing.as_ref().map_or_else(now, |m| m.created);
        let meta = KeyMeta {
            id: upload.id.clone(),
            fingerprint: upload.fingerprint.clone(),
            tenant: tenant.to_string(),
            params: upload.params.clone(),
            bytes: bytes.len() as u64,
            created,
            // Whole seconds, rounded up: a key lives at least `ttl` (up to a second more). Rounded
            // down, a key uploaded late in a second could expire within a millisecond of a 1 s ttl.
            expires: now() + self.ttl.as_secs() + 1,
        };
        // Rewritten even when present: an upload repairs a stored copy damaged on disk.
        self.disk.write(&dir, &format!("{}.key", upload.id), bytes)?;
        let json = serde_json::to_vec_pretty(&meta).expect("json");
        if let Err(e) = self.disk.write(&dir, &format!("{}.json", upload.id), &json) {
            // A new key without its metadata is never served; removed now rather than by the sweep.
            if existing.is_none() {
                let _ = std::fs::remove_file(dir.join(format!("{}.key", upload.id)));
            }
            return Err(e);
        }
        Ok((meta, existing.is_none()))
    }

    /// The metadata of `tenant`'s key `id`, if it exists, is complete and has not expired.
    pub fn meta(&self, tenant: &str, id: &str) -> Option<KeyMeta> {
        if !valid_id(id) {
            return None;
        }
        let dir = self.dir(tenant);
        let meta: KeyMeta = serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).ok()?).ok()?;
        (meta.expires > now() && meta.tenant == tenant && dir.join(format!("{id}.key")).is_file()).then_some(meta)
    }

    /// Reads and verifies `tenant`'s key `id`: the envelope's checksum, and that its payload hashes to
    /// the id.
    pub fn load(&self, tenant: &str, id: &str) -> Result<(KeyMeta, Upload), LoadError> {
        let meta = self.meta(tenant, id).ok_or(LoadError::Missing)?;
        let path = self.dir(tenant).join(format!("{id}.key"));
        let bytes = std::fs::read(&path).map_err(|e| LoadError::Damaged(e.to_string()))?;
        let mut upload = decode_upload(&bytes).map_err(LoadError::Damaged)?;
        if upload.id != id {
            return Err(LoadError::Damaged("its content does not hash to its id".into()));
        }
        upload.params = meta.params.clone();
        Ok((meta, upload))
    }

    /// Deletes `tenant`'s key `id`; false if there was none.
    pub fn delete(&self, tenant: &str, id: &str) -> std::io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        let dir = self.dir(tenant);
        let existed = dir.join(format!("{id}.json")).is_file();
        // Metadata first: a key without it is never served.
        for ext in ["json", "key"] {
            match std::fs::remove_file(dir.join(format!("{id}.{ext}"))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(existed)
    }

    /// `tenant`'s live keys, by id.
    pub fn list(&self, tenant: &str) -> Vec<KeyMeta> {
        let mut keys: Vec<KeyMeta> = std::fs::read_dir(self.dir(tenant))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
                    .filter_map(|id| self.meta(tenant, &id))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    /// Deletes every expired key (and every key file whose metadata is gone); returns the ids removed.
    pub fn sweep(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let now = now();
        for dir in self.tenant_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".key") else { continue };
                let meta: Option<KeyMeta> =
                    std::fs::read(dir.join(format!("{id}.json"))).ok().and_then(|b| serde_json::from_slice(&b).ok());
                // A key file younger than a minute without metadata may be an upload in progress.
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
                let expired = match &meta {
                    Some(m) => m.expires <= now,
                    None => !young,
                };
                if expired {
                    let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
                    let _ = std::fs::remove_file(entry.path());
                    removed.push(id.to_string());
                }
            }
        }
        removed
    }
}
