//! Training split between the data owner and a server, through files, as a real deployment runs
//! it. `fhec train plan` writes `DIR/train.fhec` (the algorithm's choices and the data's shape, no
//! data); then, with the same commands as inference:
//!
//! - `fhec keygen DIR --keys KEYS` (data owner): `KEYS/secret.key` (sealed as every secret key is)
//!   and `KEYS/eval.key` (relinearization and the plan's rotations, for the server);
//! - `fhec encrypt DIR --keys KEYS --input X.npy --labels y.npy --output DATA` (data owner): the
//!   encrypted set and starting weights in `DATA`, and the feature scaling in `DATA.owner.json`,
//!   which stays with the data owner;
//! - `fhec run DIR --eval-key KEYS/eval.key --input DATA [--state STATE] --output STATE` (server):
//!   one round of iterations;
//! - `fhec train refresh DIR --keys KEYS --input STATE --output STATE` (data owner), between rounds;
//! - `fhec decrypt DIR --keys KEYS --input STATE --owner DATA.owner.json --output MODEL.onnx`.
//!
//! Every file is an fhec envelope of its own kind; ciphertext files carry the evaluation key's
//! fingerprint and the plan's digest and are refused with another key or plan. State files say how
//! many iterations they hold, so that a round is never run twice or skipped.

use super::TrainPlan;
use crate::DriverError;
use fhec_runtime::artifact::{self, Kind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `DIR/train.fhec`: the plan and the data owner's clipping (public choices, no data).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub plan: TrainPlan,
    pub clip: f64,
}

fn plan_path(dir: &Path) -> PathBuf {
    dir.join("train.fhec")
}

/// Whether `dir` holds a training plan.
pub fn is_training(dir: &Path) -> bool {
    artifact::peek_file(&plan_path(dir)) == Some(Kind::TrainPlan)
}

/// Writes the plan into `dir`; returns its digest.
pub fn write_plan(dir: &Path, file: &PlanFile) -> Result<String, DriverError> {
    std::fs::create_dir_all(dir).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let payload = artifact::save(&plan_path(dir), Kind::TrainPlan, file)?;
    Ok(artifact::fingerprint(&payload))
}

/// The plan in `dir` and its digest.
pub fn load_plan(dir: &Path) -> Result<(PlanFile, String), DriverError> {
    let (file, payload): (PlanFile, _) = artifact::load(&plan_path(dir), Kind::TrainPlan)?;
    let check = |e: fhec_ckks::CkksError| DriverError::Artifact(format!("{}: {e}", plan_path(dir).display()));
    // A plan read back must be one this fhec would make for its shape and choices.
    let again =
        TrainPlan::at(file.plan.hyper.clone(), file.plan.samples, file.plan.columns - 1, Some(file.plan.ring.log_n))
            .map_err(check)?;
    if again != file.plan {
        return Err(DriverError::Artifact(format!(
            "{}: a plan this fhec would not make for its own shape and choices (written by another version?)",
            plan_path(dir).display()
        )));
    }
    Ok((file, artifact::fingerprint(&payload)))
}

/// The feature scaling beside an encrypted training set (`DATA.owner.json`): the data owner's.
pub fn owner_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".owner.json");
    PathBuf::from(name)
}

#[cfg(feature = "ckks")]
pub use with_ckks::*;

#[cfg(feature = "ckks")]
mod with_ckks {
    use super::*;
    use crate::ckks::ckks_error;
    use crate::keyfile::Protection;
    use crate::train::{Dataset, Scaling, Task};
    use fhec_ckks::backend::train::{Trainer, train_galois_elements};
    use fhec_ckks::backend::{ClientKey, Context, EvalKey};
    use std::time::{Duration, Instant};

    #[derive(Serialize, Deserialize)]
    struct OwnerFile {
        plan_digest: String,
        scaling: Scaling,
    }

    /// An encrypted training set (`Kind::TrainData`) or encrypted weights (`Kind::TrainState`).
    #[derive(Serialize, Deserialize)]
    pub struct TrainCts {
        pub key_fingerprint: String,
        pub plan_digest: String,
        /// Iterations the weights have had.
        pub done: usize,
        pub data: Vec<u8>,
    }

    impl TrainCts {
        fn check(&self, fingerprint: &str, digest: &str, what: &str) -> Result<(), DriverError> {
            if self.plan_digest != digest {
                return Err(DriverError::Mismatch(format!("{what} belongs to another training plan")));
            }
            if self.key_fingerprint != fingerprint {
                return Err(DriverError::Mismatch(format!("{what} was encrypted under another key")));
            }
            Ok(())
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
        move |e| DriverError::Io(format!("{}: {e}", path.display()))
    }

    /// Generates the keys for the plan in `dir` into `keys`: the evaluation key's size, its rotation
    /// keys, and the time taken.
    pub fn keygen(dir: &Path, keys: &Path, protection: &Protection) -> Result<(usize, usize, Duration), DriverError> {
        let (file, digest) = load_plan(dir)?;
        std::fs::create_dir_all(keys).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", keys.display())))?;
        let start = Instant::now();
        let ctx = Context::new(file.plan.ring).map_err(ckks_error)?;
        let galois = train_galois_elements(&ctx, &file.plan);
        let mut raw = Vec::new();
        let key = ctx.keygen_to(&galois, &mut raw).map_err(ckks_error)?;
        let (eval_key, payload) = artifact::to_bytes(Kind::CkksEvalKey, &raw).map_err(DriverError::Artifact)?;
        let fingerprint = artifact::fingerprint(&payload);
        let took = start.elapsed();
        let eval_path = keys.join("eval.key");
        std::fs::write(&eval_path, &eval_key).map_err(io(&eval_path))?;
        let secret = crate::ckks::deploy::secret_file(key.to_bytes(&ctx), fingerprint, digest);
        let plain = zeroize::Zeroizing::new(secret);
        crate::tfhe::write_private(&keys.join("secret.key"), &crate::keyfile::seal(&plain, protection)?)?;
        Ok((eval_key.len(), galois.len(), took))
    }

    /// The data owner's side: the plan, its ring, the secret key.
    pub struct Owner {
        pub plan: PlanFile,
        digest: String,
        ctx: Context,
        key: ClientKey,
        fingerprint: String,
    }

    impl Owner {
        pub fn load(dir: &Path, keys: &Path, protection: &Protection) -> Result<Owner, DriverError> {
            let (plan, digest) = load_plan(dir)?;
            let path = keys.join("secret.key");
            let what = path.display().to_string();
            crate::tfhe::check_private(&path)?;
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let plain = crate::keyfile::open(&bytes, protection, &what)?;
            let (secret, fingerprint) =
                crate::ckks::deploy::open_secret_file(&plain, &digest).map_err(|e| match e {
                    DriverError::Mismatch(_) => DriverError::Mismatch(format!(
                        "{what} was generated for another build or plan: run `fhec keygen {}` for this one",
                        dir.display()
                    )),
                    DriverError::Key(m) => DriverError::Key(format!("{what} {m}")),
                    other => other,
                })?;
            let ctx = Context::new(plan.plan.ring).map_err(ckks_error)?;
            let key = ctx.client_key(&secret).map_err(|e| DriverError::Key(format!("{what}: {e}")))?;
            Ok(Owner { plan, digest, ctx, key, fingerprint })
        }

        /// Scales `ds` (its own statistics), encrypts it with zero starting weights, and writes the
        /// ciphertexts to `out` and the scaling to [`owner_path`]`(out)`.
        pub fn encrypt(&self, ds: &Dataset, out: &Path) -> Result<usize, DriverError> {
            let plan = &self.plan.plan;
            ds.check()?;
            if ds.x.len() != plan.samples || ds.features() + 1 != plan.columns {
                return Err(DriverError::Shape(format!(
                    "{} samples of {} features for a plan of {} samples of {}",
                    ds.x.len(),
                    ds.features(),
                    plan.samples,
                    plan.columns - 1
                )));
            }
            if plan.hyper.task == Task::Logistic
                && let Some(i) = ds.y.iter().position(|&v| v != 0.0 && v != 1.0)
            {
                return Err(DriverError::Data(format!(
                    "label {i} is {}; a training plan trains one binary model (labels 0 and 1): for several classes, \
                     encrypt one relabeled set per class (that class 1, the others 0), or let `fhec train` train \
                     one-vs-rest in one process",
                    ds.y[i]
                )));
            }
            let scaling = Scaling::fit(ds, plan.hyper.task, self.plan.clip);
            let (x, y) = (scaling.features(&ds.x), scaling.targets(&ds.y));
            let (data, state) = self.ctx.encrypt_training(&self.key, plan, &x, &y).map_err(ckks_error)?;
            let mut bytes = Vec::new();
            self.ctx.write_training(&data, &state, &mut bytes).map_err(ckks_error)?;
            let file = TrainCts {
                key_fingerprint: self.fingerprint.clone(),
                plan_digest: self.digest.clone(),
                done: 0,
                data: bytes,
            };
            artifact::save(out, Kind::TrainData, &file)?;
            let owner = OwnerFile { plan_digest: self.digest.clone(), scaling };
            let text = serde_json::to_string_pretty(&owner).map_err(|e| DriverError::Io(e.to_string()))?;
            crate::tfhe::write_private(&owner_path(out), text.as_bytes())?;
            Ok(std::fs::metadata(out).map(|m| m.len() as usize).unwrap_or(0))
        }

        fn state(
            &self,
            path: &Path,
        ) -> Result<(TrainCts, fhec_ckks::train::State<fhec_ckks::backend::train::Cipher>), DriverError> {
            let (file, _): (TrainCts, _) = artifact::load(path, Kind::TrainState)?;
            file.check(&self.fingerprint, &self.digest, &path.display().to_string())?;
            let state = self
                .ctx
                .read_state(&self.plan.plan, &mut file.data.as_slice(), false)
                .map_err(|e| DriverError::Artifact(format!("{}: {e}", path.display())))?;
            Ok((file, state))
        }

        /// Between rounds: the weights decrypted and encrypted again at full budget.
        pub fn refresh(&self, input: &Path, out: &Path) -> Result<usize, DriverError> {
            let (file, state) = self.state(input)?;
            if file.done >= self.plan.plan.hyper.iterations {
                return Err(DriverError::Usage(format!(
                    "{}: training is complete ({} iterations); decrypt it",
                    input.display(),
                    file.done
                )));
            }
            let fresh = self.ctx.refresh(&self.key, &self.plan.plan, &state).map_err(ckks_error)?;
            let mut bytes = Vec::new();
            self.ctx.write_state(&fresh, &mut bytes).map_err(ckks_error)?;
            artifact::save(out, Kind::TrainState, &TrainCts { data: bytes, ..file })?;
            Ok(self.plan.plan.hyper.iterations - file.done)
        }

        /// The trained weights, written as an ONNX model over raw features with the scaling of
        /// `owner` (from [`Owner::encrypt`]).
        pub fn decrypt(&self, input: &Path, owner: &Path, out: &Path) -> Result<Vec<f64>, DriverError> {
            let (file, state) = self.state(input)?;
            let total = self.plan.plan.hyper.iterations;
            if file.done < total {
                return Err(DriverError::Usage(format!(
                    "{}: {} of {total} iterations done: refresh it (`fhec train refresh`) and run the next round",
                    input.display(),
                    file.done
                )));
            }
            let text = std::fs::read_to_string(owner).map_err(io(owner))?;
            let o: OwnerFile = serde_json::from_str(&text).map_err(|e| {
                DriverError::Artifact(format!("{}: not the scaling `fhec encrypt` wrote ({e})", owner.display()))
            })?;
            if o.plan_digest != self.digest || o.scaling.mean.len() + 1 != self.plan.plan.columns {
                return Err(DriverError::Mismatch(format!("{} belongs to another training plan", owner.display())));
            }
            let w = self.ctx.decrypt_weights(&self.key, &self.plan.plan, &state).map_err(ckks_error)?;
            let model = o.scaling.model(
                std::slice::from_ref(&w),
                format!(
                    "fhec train: {} regression, {total} iterations, trained on encrypted data",
                    self.plan.plan.hyper.task.name()
                ),
            );
            std::fs::write(out, model.to_onnx()).map_err(io(out))?;
            Ok(w)
        }
    }

    /// The server's side: the plan and the evaluation key, nothing secret.
    pub struct Server {
        plan: PlanFile,
        digest: String,
        ctx: Context,
        key: EvalKey,
        fingerprint: String,
    }

    impl Server {
        pub fn load(dir: &Path, eval_key: &Path) -> Result<Server, DriverError> {
            let (plan, digest) = load_plan(dir)?;
            let ctx = Context::new(plan.plan.ring).map_err(ckks_error)?;
            let bytes = std::fs::read(eval_key).map_err(io(eval_key))?;
            let what = eval_key.display().to_string();
            let (raw, payload): (Vec<u8>, _) = artifact::from_bytes(&bytes, Kind::CkksEvalKey).map_err(|e| {
                DriverError::Key(format!("{what}: {e} (training takes the eval.key of `fhec keygen` on the plan)"))
            })?;
            let galois = train_galois_elements(&ctx, &plan.plan);
            let key = ctx
                .read_eval_key(&mut raw.as_slice(), &galois)
                .map_err(|e| DriverError::Mismatch(format!("{what} is not this plan's evaluation key: {e}")))?;
            Ok(Server { plan, digest, ctx, key, fingerprint: artifact::fingerprint(&payload) })
        }

        /// One round: the data (and the state, after a refresh; else the data's starting weights)
        /// through the next iterations, as far as one encryption carries them. Returns the new
        /// state's envelope bytes, the iterations done and the total.
        pub fn round(
            &self,
            data: &Path,
            state: Option<&Path>,
            progress: impl FnMut(usize),
        ) -> Result<(Vec<u8>, usize, usize), DriverError> {
            let plan = &self.plan.plan;
            let (file, _): (TrainCts, _) = artifact::load(data, Kind::TrainData)?;
            file.check(&self.fingerprint, &self.digest, &data.display().to_string())?;
            let (cts, mut st) = self
                .ctx
                .read_training(plan, &mut file.data.as_slice())
                .map_err(|e| DriverError::Artifact(format!("{}: {e}", data.display())))?;
            let mut done = 0;
            if let Some(path) = state {
                let (s, _): (TrainCts, _) = artifact::load(path, Kind::TrainState)?;
                s.check(&self.fingerprint, &self.digest, &path.display().to_string())?;
                st = self.ctx.read_state(plan, &mut s.data.as_slice(), true).map_err(|e| {
                    DriverError::Artifact(format!(
                        "{} (the data owner refreshes a state before the next round): {e}",
                        path.display()
                    ))
                })?;
                done = s.done;
            }
            let total = plan.hyper.iterations;
            if done >= total {
                return Err(DriverError::Usage(format!("training is complete ({done} iterations): nothing to run")));
            }
            let end = (done + plan.per_round).min(total);
            let trainer = Trainer::new(&self.ctx, &self.key, plan).map_err(ckks_error)?;
            let st = trainer.round(&cts, st, done..end, progress).map_err(ckks_error)?;
            let mut bytes = Vec::new();
            self.ctx.write_state(&st, &mut bytes).map_err(ckks_error)?;
            let out = TrainCts {
                key_fingerprint: self.fingerprint.clone(),
                plan_digest: self.digest.clone(),
                done: end,
                data: bytes,
            };
            let (env, _) = artifact::to_bytes(Kind::TrainState, &out).map_err(DriverError::Artifact)?;
            Ok((env, end, total))
        }
    }
}
