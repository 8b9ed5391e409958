//! Training jobs on disk: what `POST /v1/models/{model}/jobs` accepts is kept here until the job
//! expires or its owner deletes it, so that a restart loses no accepted job.
//!
//! - `ROOT/t-<tenant digest>/<id>/data`: the encrypted training set as uploaded (an envelope with its
//!   checksum);
//! - `…/<id>/input`: the refreshed state the data owner put for the next round, if any;
//! - `…/<id>/output`: the state the last round ended with (what `GET …/state` returns);
//! - `…/<id>/job.json`: [`JobMeta`], written last: a job directory without it is an interrupted
//!   upload and is removed when the store opens.
//!
//! Every file is written atomically ([`keystore::write_atomic`](crate::keystore)): a crash leaves
//! the old file or the new one. A round's output is written before the metadata that says it is
//! there, so a state is never served half-written or before its round ended. Job ids are 128 random
//! bits; a tenant's jobs live under its own directory and another tenant's id is not found.
//!
//! This module knows nothing of CKKS: the app opens and checks the ciphertexts.

use crate::keystore::{now, tenant_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the training worker (also after a restart interrupted its round).
    Queued,
    /// A round is running.
    Running,
    /// A round ended before the last iteration: the data owner fetches the state, refreshes it
    /// (`fhec train refresh`) and puts it back, which queues the next round.
    Waiting,
    /// Every iteration has run: the state holds the trained weights.
    Done,
    /// The job stopped for the reason in `message`; its last good state (if any) can be fetched.
    Failed,
    /// Deleted while its round ran: removed once the round stops.
    Cancelled,
}

impl Status {
    /// Whether a state is ready to fetch.
    pub fn has_state(self) -> bool {
        matches!(self, Status::Waiting | Status::Done)
    }
}

/// What the service says of a job (the JSON of `GET /v1/jobs/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    /// 32 hex digits.
    pub id: String,
    pub tenant: String,
    pub model: String,
    /// The evaluation key the job trains with (its id on this server), and its fingerprint, which the
    /// job's ciphertexts carry.
    pub key: String,
    pub fingerprint: String,
    pub status: Status,
    /// Iterations done, counting those of a round in progress.
    pub done: usize,
    /// Iterations the last completed round's state holds (where an interrupted round starts again).
    pub state_done: usize,
    pub total: usize,
    /// Rounds completed.
    pub rounds: usize,
    /// Why the job failed, or what its owner does next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes of the encrypted training set.
    pub data_bytes: u64,
    /// Seconds each completed round took on the server.
    #[serde(default)]
    pub round_seconds: Vec<f64>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
    pub expires: u64,
}

/// The job directory store.
pub struct JobStore {
    root: PathBuf,
    ttl: Duration,
}

/// A job id is 32 lowercase hex digits; anything else (a path, say) names no job.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl JobStore {
    /// Opens (creating it if needed) the store at `root`; a job lives `ttl` after its last change.
    /// Interrupted uploads and temporary files are removed, as are jobs cancelled mid-round.
    pub fn open(root: &Path, ttl: Duration) -> std::io::Result<JobStore> {
        std::fs::create_dir_all(root)?;
        let store = JobStore { root: root.to_path_buf(), ttl };
        for dir in store.job_dirs() {
            match store.read_meta(&dir) {
                Some(m) if m.status != Status::Cancelled => {
                    for entry in std::fs::read_dir(&dir)?.flatten() {
                        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                            let _ = std::fs::remove_file(entry.path());
                        }
                    }
                }
                _ => std::fs::remove_dir_all(&dir)?,
            }
        }
        Ok(store)
    }

    fn job_dirs(&self) -> Vec<PathBuf> {
        let dirs = |p: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(p)
                .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
                .unwrap_or_default()
        };
        dirs(&self.root).iter().flat_map(|t| dirs(t)).collect()
    }

    fn dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.root.join(tenant_dir(tenant)).join(id)
    }

    fn read_meta(&self, dir: &Path) -> Option<JobMeta> {
        serde_json::from_slice(&std::fs::read(dir.join("job.json")).ok()?).ok()
    }

    /// Writes a job's metadata (its expiry renewed).
    pub fn save(&self, meta: &mut JobMeta) -> std::io::Result<()> {
        meta.updated = now();
        meta.expires = meta.updated + self.ttl.as_secs() + 1;
        let dir = self.dir(&meta.tenant, &meta.id);
        write_atomic(&dir, "job.json", &serde_json::to_vec_pretty(meta).expect("json"))
    }

    /// Stores a new job for `tenant`: its encrypted set, then its metadata (queued). `key` is the
    /// key's id and fingerprint.
    pub fn create(
        &self,
        tenant: &str,
        model: &str,
        key: (&str, &str),
        total: usize,
        data: &[u8],
    ) -> std::io::Result<JobMeta> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.dir(tenant, &id);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir, "data", data)?;
        let mut meta = JobMeta {
            id,
            tenant: tenant.to_string(),
            model: model.to_string(),
            key: key.0.to_string(),
            fingerprint: key.1.to_string(),
            status: Status::Queued,
            done: 0,
            state_done: 0,
            total,
            rounds: 0,
            message: None,
            data_bytes: data.len() as u64,
            round_seconds: Vec::new(),
            created: now(),
            updated: 0,
            expires: 0,
        };
        self.save(&mut meta)?;
        Ok(meta)
    }

    /// `tenant`'s job `id`, if it exists and has not expired.
    pub fn meta(&self, tenant: &str, id: &str) -> Option<JobMeta> {
        if !valid_id(id) {
            return None;
        }
        let meta = self.read_meta(&self.dir(tenant, id))?;
        (meta.tenant == tenant && meta.id == id && (meta.expires > now() || meta.status == Status::Running))
            .then_some(meta)
    }

    /// `tenant`'s live jobs, oldest first.
    pub fn list(&self, tenant: &str) -> Vec<JobMeta> {
        let Ok(entries) = std::fs::read_dir(self.root.join(tenant_dir(tenant))) else { return Vec::new() };
        let mut jobs: Vec<JobMeta> =
            entries.flatten().filter_map(|e| self.meta(tenant, &e.file_name().to_string_lossy())).collect();
        jobs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        jobs
    }

    /// Reads one of a job's files: `data`, `input` or `output`.
    pub fn read(&self, meta: &JobMeta, file: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir(&meta.tenant, &meta.id).join(file))
    }

    /// Writes one of a job's files atomically.
    pub fn write(&self, meta: &JobMeta, file: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir(&meta.tenant, &meta.id), file, bytes)
    }

    /// Deletes a job's directory; false if there was none.
    pub fn delete(&self, tenant: &str, id: &str) -> std::io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        let dir = self.dir(tenant, id);
        // Metadata first: a job without it is never listed or served.
        match std::fs::remove_file(dir.join("job.json")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(true)
    }

    /// The jobs to run when the service starts: those queued, and those whose round a stop
    /// interrupted (set back to queued: the round runs again from its input). Oldest first.
    pub fn recover(&self) -> std::io::Result<Vec<JobMeta>> {
        let mut queued = Vec::new();
        for dir in self.job_dirs() {
            let Some(mut m) = self.read_meta(&dir) else { continue };
            if m.status == Status::Running {
                m.status = Status::Queued;
                m.done = m.state_done;
                m.message = Some("its round was interrupted by a restart of the service, and runs again".into());
                self.save(&mut m)?;
            }
            if m.status == Status::Queued {
                queued.push(m);
            }
        }
        queued.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(queued)
    }

    /// Deletes expired jobs (not those running); returns how many.
    pub fn sweep(&self) -> usize {
        let now = now();
        let mut removed = 0;
        for dir in self.job_dirs() {
            match self.read_meta(&dir) {
                Some(m) if m.status == Status::Running || m.expires > now => {}
                Some(m) => {
                    if self.delete(&m.tenant, &m.id).unwrap_or(false) {
                        removed += 1;
                    }
                }
                None => {
                    // No metadata: an upload in progress (young) or interrupted (old).
                    let old = std::fs::metadata(&dir)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
                    if old && std::fs::remove_dir_all(&dir).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> JobStore {
        JobStore::open(root, Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_job_is_its_tenants_alone_and_survives_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let job = s.create("alice", "bc", (&"a".repeat(64), "f"), 8, b"data").unwrap();
        assert!(valid_id(&job.id));
        assert_eq!(s.meta("alice", &job.id).unwrap().status, Status::Queued);
        assert!(s.meta("bob", &job.id).is_none(), "another tenant's job is not found");
        assert!(s.list("bob").is_empty());
        assert_eq!(s.read(&job, "data").unwrap(), b"data");
        assert!(s.meta("alice", "../../etc").is_none());
        let s = store(tmp.path());
        assert_eq!(s.list("alice"), vec![job.clone()]);
        assert!(s.delete("alice", &job.id).unwrap());
        assert!(!s.delete("alice", &job.id).unwrap());
        assert!(s.list("alice").is_empty());
    }

    #[test]
    fn a_round_interrupted_runs_again_and_half_uploads_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let mut running = s.create("alice", "bc", (&"a".repeat(64), "f"), 8, b"data").unwrap();
        running.status = Status::Waiting;
        running.state_done = 4;
        running.rounds = 1;
        s.save(&mut running).unwrap();
        // The next round started and got to iteration 6 when the process died.
        running.status = Status::Running;
        running.done = 6;
        s.save(&mut running).unwrap();
        let mut cancelled = s.create("alice", "bc", (&"a".repeat(64), "f"), 8, b"data").unwrap();
        cancelled.status = Status::Cancelled;
        s.save(&mut cancelled).unwrap();
        // An upload that died before its metadata was written.
        let half = tmp.path().join(tenant_dir("alice")).join("0".repeat(32));
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join("data"), b"da").unwrap();
        std::fs::write(half.join(".tmp-123"), b"d").unwrap();

        let s = store(tmp.path());
        assert!(!half.exists() && s.meta("alice", &cancelled.id).is_none());
        let queued = s.recover().unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].status, queued[0].done, queued[0].state_done), (Status::Queued, 4, 4));
        assert!(queued[0].message.as_deref().unwrap().contains("interrupted by a restart"));
    }

    #[test]
    fn expired_jobs_are_swept_and_running_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let s = JobStore::open(tmp.path(), Duration::ZERO).unwrap();
        let old = s.create("alice", "bc", (&"a".repeat(64), "f"), 8, b"data").unwrap();
        let mut busy = s.create("alice", "bc", (&"a".repeat(64), "f"), 8, b"data").unwrap();
        busy.status = Status::Running;
        s.save(&mut busy).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(s.meta("alice", &old.id).is_none(), "expired");
        assert_eq!(s.sweep(), 1);
        assert!(s.meta("alice", &busy.id).is_some());
    }
}
