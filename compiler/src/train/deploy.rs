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

    /// What the data owner keeps beside an encrypted set (`DATA.owner.json`): the plan it was made
    /// for and the feature scaling, which the ONNX model needs and the server never sees.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct OwnerFile {
        pub plan_digest: String,
        pub scaling: Scaling,
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

        /// Scales `ds` (its own statistics) and encrypts it with zero starting weights: the
        /// encrypted set's envelope bytes (`Kind::TrainData`, for the server) and the scaling (the
        /// data owner's, needed to decrypt).
        pub fn encrypt_set(&self, ds: &Dataset) -> Result<(Vec<u8>, OwnerFile), DriverError> {
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
            let owner = self.scaling(ds);
            let (x, y) = (owner.scaling.features(&ds.x), owner.scaling.targets(&ds.y));
            let (data, state) = self.ctx.encrypt_training(&self.key, plan, &x, &y).map_err(ckks_error)?;
            let mut bytes = Vec::new();
            self.ctx.write_training(&data, &state, &mut bytes).map_err(ckks_error)?;
            let file = TrainCts {
                key_fingerprint: self.fingerprint.clone(),
                plan_digest: self.digest.clone(),
                done: 0,
                data: bytes,
            };
            let (env, _) = artifact::to_bytes(Kind::TrainData, &file).map_err(DriverError::Artifact)?;
            Ok((env, owner))
        }

        /// The feature scaling [`Owner::encrypt_set`] uses for `ds` (its own statistics, so the same
        /// set gives the same scaling: a data owner who lost it makes it again from the set).
        pub fn scaling(&self, ds: &Dataset) -> OwnerFile {
            let scaling = Scaling::fit(ds, self.plan.plan.hyper.task, self.plan.clip);
            OwnerFile { plan_digest: self.digest.clone(), scaling }
        }

        /// [`Owner::encrypt_set`] into files: the ciphertexts to `out`, the scaling to
        /// [`owner_path`]`(out)` (mode 0600). Returns the size of `out`.
        pub fn encrypt(&self, ds: &Dataset, out: &Path) -> Result<usize, DriverError> {
            let (env, owner) = self.encrypt_set(ds)?;
            std::fs::write(out, &env).map_err(io(out))?;
            let text = serde_json::to_string_pretty(&owner).map_err(|e| DriverError::Io(e.to_string()))?;
            crate::tfhe::write_private(&owner_path(out), text.as_bytes())?;
            Ok(env.len())
        }

        fn state(
            &self,
            bytes: &[u8],
            what: &str,
        ) -> Result<(TrainCts, fhec_ckks::train::State<fhec_ckks::backend::train::Cipher>), DriverError> {
            let (file, _): (TrainCts, _) = artifact::from_bytes(bytes, Kind::TrainState)
                .map_err(|e| DriverError::Artifact(format!("{what} {e}")))?;
            file.check(&self.fingerprint, &self.digest, what)?;
            let state = self
                .ctx
                .read_state(&self.plan.plan, &mut file.data.as_slice(), false)
                .map_err(|e| DriverError::Artifact(format!("{what}: {e}")))?;
            Ok((file, state))
        }

        /// Between rounds: the weights of a state (`Kind::TrainState` bytes; `what` names them in
        /// errors) decrypted and encrypted again at full budget. Returns the new state's bytes and
        /// the iterations still to run.
        pub fn refresh_bytes(&self, bytes: &[u8], what: &str) -> Result<(Vec<u8>, usize), DriverError> {
            let (file, state) = self.state(bytes, what)?;
            if file.done >= self.plan.plan.hyper.iterations {
                return Err(DriverError::Usage(format!(
                    "{what}: training is complete ({} iterations); decrypt it",
                    file.done
                )));
            }
            let fresh = self.ctx.refresh(&self.key, &self.plan.plan, &state).map_err(ckks_error)?;
            let mut data = Vec::new();
            self.ctx.write_state(&fresh, &mut data).map_err(ckks_error)?;
            let (env, _) =
                artifact::to_bytes(Kind::TrainState, &TrainCts { data, ..file }).map_err(DriverError::Artifact)?;
            Ok((env, self.plan.plan.hyper.iterations - file.done))
        }

        /// [`Owner::refresh_bytes`] from file `input` to file `out`.
        pub fn refresh(&self, input: &Path, out: &Path) -> Result<usize, DriverError> {
            let bytes = std::fs::read(input).map_err(io(input))?;
            let (env, left) = self.refresh_bytes(&bytes, &input.display().to_string())?;
            std::fs::write(out, env).map_err(io(out))?;
            Ok(left)
        }

        /// The trained weights of a finished state (`Kind::TrainState` bytes, `what` in errors), and
        /// the ONNX model (over raw features, with the scaling `owner`, called `owner_what`) they make.
        pub fn decrypt_bytes(
            &self,
            bytes: &[u8],
            what: &str,
            owner: &OwnerFile,
            owner_what: &str,
        ) -> Result<(Vec<f64>, Vec<u8>), DriverError> {
            let (file, state) = self.state(bytes, what)?;
            let total = self.plan.plan.hyper.iterations;
            if file.done < total {
                return Err(DriverError::Usage(format!(
                    "{what}: {} of {total} iterations done: refresh it (`fhec train refresh`) and run the next round",
                    file.done
                )));
            }
            if owner.plan_digest != self.digest || owner.scaling.mean.len() + 1 != self.plan.plan.columns {
                return Err(DriverError::Mismatch(format!("{owner_what} belongs to another training plan")));
            }
            let w = self.ctx.decrypt_weights(&self.key, &self.plan.plan, &state).map_err(ckks_error)?;
            let model = owner.scaling.model(
                std::slice::from_ref(&w),
                format!(
                    "fhec train: {} regression, {total} iterations, trained on encrypted data",
                    self.plan.plan.hyper.task.name()
                ),
            );
            Ok((w, model.to_onnx()))
        }

        /// [`Owner::decrypt_bytes`] from files: the state `input`, the scaling `owner` (from
        /// [`Owner::encrypt`]); the model is written to `out`.
        pub fn decrypt(&self, input: &Path, owner: &Path, out: &Path) -> Result<Vec<f64>, DriverError> {
            let bytes = std::fs::read(input).map_err(io(input))?;
            let text = std::fs::read_to_string(owner).map_err(io(owner))?;
            let o: OwnerFile = serde_json::from_str(&text).map_err(|e| {
                DriverError::Artifact(format!("{}: not the scaling `fhec encrypt` wrote ({e})", owner.display()))
            })?;
            let (w, onnx) =
                self.decrypt_bytes(&bytes, &input.display().to_string(), &o, &owner.display().to_string())?;
            std::fs::write(out, onnx).map_err(io(out))?;
            Ok(w)
        }
    }

    /// A training plan as a server holds it: the plan, its ring and the rotations its evaluation key
    /// must have. No key: `fhec serve` keeps the tenants' keys apart and passes one to each round.
    pub struct Trainable {
        plan: PlanFile,
        digest: String,
        ctx: Context,
        galois: Vec<i64>,
    }

    impl Trainable {
        pub fn load(dir: &Path) -> Result<Trainable, DriverError> {
            let (plan, digest) = load_plan(dir)?;
            let ctx = Context::new(plan.plan.ring).map_err(ckks_error)?;
            let galois = train_galois_elements(&ctx, &plan.plan);
            Ok(Trainable { plan, digest, ctx, galois })
        }

        pub fn plan(&self) -> &TrainPlan {
            &self.plan.plan
        }

        /// The plan file's digest, which every ciphertext file of this plan carries.
        pub fn digest(&self) -> &str {
            &self.digest
        }

        /// What an evaluation key for this plan must be made for (see
        /// `crate::ckks::deploy::Deployed::key_params`): its ring and rotations, and that it trains.
        pub fn key_params(&self) -> String {
            format!("ckks-train-2^{}-{}rot-{}", self.ctx.params.log_n, self.galois.len(), &self.digest[..8])
        }

        /// The size of this plan's evaluation key file (an upper bound).
        pub fn eval_key_bytes(&self) -> usize {
            self.ctx.eval_key_bytes(self.galois.len()) + 1024
        }

        /// Reads poulpy's key bytes (an `eval.key` envelope's payload): refused unless made for this
        /// plan's ring and rotations.
        pub fn eval_key_from(&self, raw: &[u8]) -> Result<EvalKey, DriverError> {
            self.ctx
                .read_eval_key(&mut &raw[..], &self.galois)
                .map_err(|e| DriverError::Mismatch(format!("not this training plan's evaluation key: {e}")))
        }

        /// Reads an `eval.key` file's bytes; returns the key and its fingerprint.
        pub fn read_eval_key(&self, bytes: &[u8], what: &str) -> Result<(EvalKey, String), DriverError> {
            let (raw, payload): (Vec<u8>, _) = artifact::from_bytes(bytes, Kind::CkksEvalKey).map_err(|e| {
                DriverError::Key(format!("{what}: {e} (training takes the eval.key of `fhec keygen` on the plan)"))
            })?;
            let key = self.eval_key_from(&raw).map_err(|e| DriverError::Mismatch(format!("{what} is {e}")))?;
            Ok((key, artifact::fingerprint(&payload)))
        }

        /// Opens an envelope of `kind` (an encrypted set or a state) and checks that it was made for
        /// this plan and the key of `fingerprint`; `what` names it in errors.
        pub fn open(&self, bytes: &[u8], kind: Kind, fingerprint: &str, what: &str) -> Result<TrainCts, DriverError> {
            let (file, _): (TrainCts, _) =
                artifact::from_bytes(bytes, kind).map_err(|e| DriverError::Artifact(format!("{what} {e}")))?;
            file.check(fingerprint, &self.digest, what)?;
            Ok(file)
        }

        /// Checks an upload before it is accepted: an encrypted set (`Kind::TrainData`, no iteration
        /// done) or a refreshed state (`Kind::TrainState`, at full budget) of this plan and the key of
        /// `fingerprint`, whose ciphertexts read back. Returns the iterations it holds.
        pub fn check_upload(
            &self,
            bytes: &[u8],
            kind: Kind,
            fingerprint: &str,
            what: &str,
        ) -> Result<usize, DriverError> {
            let file = self.open(bytes, kind, fingerprint, what)?;
            let plan = &self.plan.plan;
            let read = if kind == Kind::TrainData {
                if file.done != 0 {
                    return Err(DriverError::Artifact(format!("{what} is an encrypted set with iterations done")));
                }
                self.ctx.read_training(plan, &mut file.data.as_slice()).map(drop)
            } else {
                self.ctx.read_state(plan, &mut file.data.as_slice(), true).map(drop)
            };
            read.map_err(|e| {
                DriverError::Artifact(format!(
                    "{what}: {e}{}",
                    if kind == Kind::TrainState {
                        " (the data owner refreshes a state before the next round)"
                    } else {
                        ""
                    }
                ))
            })?;
            if file.done >= plan.hyper.iterations {
                return Err(DriverError::Usage(format!("{what}: training is complete ({} iterations)", file.done)));
            }
            Ok(file.done)
        }

        /// One round: the encrypted set `data` (and `state`, a refreshed state, for every round
        /// after the first; else the set's starting weights) through the next iterations, as far as
        /// one encryption carries them, under `key` (of `fingerprint`). Each input comes with what to
        /// call it in errors (a file's path, or a job's). Stops early, with
        /// [`fhec_ckks::CkksError::Stopped`] as the error, once `stop` is set. Returns the new state's
        /// envelope bytes, the iterations done and the total.
        #[allow(clippy::too_many_arguments)]
        pub fn round(
            &self,
            key: &EvalKey,
            fingerprint: &str,
            data: (&[u8], &str),
            state: Option<(&[u8], &str)>,
            stop: Option<&std::sync::atomic::AtomicBool>,
            progress: impl FnMut(usize),
        ) -> Result<(Vec<u8>, usize, usize), DriverError> {
            let plan = &self.plan.plan;
            let file = self.open(data.0, Kind::TrainData, fingerprint, data.1)?;
            let (cts, mut st) = self
                .ctx
                .read_training(plan, &mut file.data.as_slice())
                .map_err(|e| DriverError::Artifact(format!("{}: {e}", data.1)))?;
            let mut done = 0;
            if let Some((bytes, what)) = state {
                let s = self.open(bytes, Kind::TrainState, fingerprint, what)?;
                st = self.ctx.read_state(plan, &mut s.data.as_slice(), true).map_err(|e| {
                    DriverError::Artifact(format!(
                        "{what} (the data owner refreshes a state before the next round): {e}"
                    ))
                })?;
                done = s.done;
            }
            let total = plan.hyper.iterations;
            if done >= total {
                return Err(DriverError::Usage(format!("training is complete ({done} iterations): nothing to run")));
            }
            let end = (done + plan.per_round).min(total);
            let mut trainer = Trainer::new(&self.ctx, key, plan).map_err(ckks_error)?;
            if let Some(flag) = stop {
                trainer = trainer.stop_on(flag);
            }
            let st = trainer.round(&cts, st, done..end, progress).map_err(ckks_error)?;
            let mut bytes = Vec::new();
            self.ctx.write_state(&st, &mut bytes).map_err(ckks_error)?;
            let out = TrainCts {
                key_fingerprint: fingerprint.to_string(),
                plan_digest: self.digest.clone(),
                done: end,
                data: bytes,
            };
            let (env, _) = artifact::to_bytes(Kind::TrainState, &out).map_err(DriverError::Artifact)?;
            Ok((env, end, total))
        }
    }

    /// The server's side through files (`fhec run`): the plan and the evaluation key, nothing secret.
    pub struct Server {
        plan: Trainable,
        key: EvalKey,
        fingerprint: String,
    }

    impl Server {
        pub fn load(dir: &Path, eval_key: &Path) -> Result<Server, DriverError> {
            let plan = Trainable::load(dir)?;
            let bytes = std::fs::read(eval_key).map_err(io(eval_key))?;
            let (key, fingerprint) = plan.read_eval_key(&bytes, &eval_key.display().to_string())?;
            Ok(Server { plan, key, fingerprint })
        }

        /// One round (see [`Trainable::round`]) on the files `data` and `state`.
        pub fn round(
            &self,
            data: &Path,
            state: Option<&Path>,
            progress: impl FnMut(usize),
        ) -> Result<(Vec<u8>, usize, usize), DriverError> {
            let data_bytes = std::fs::read(data).map_err(io(data))?;
            let state_bytes = state.map(|p| std::fs::read(p).map(|b| (b, p.display().to_string())).map_err(io(p)));
            let state_bytes = state_bytes.transpose()?;
            let data_name = data.display().to_string();
            let state = state_bytes.as_ref().map(|(b, name)| (b.as_slice(), name.as_str()));
            self.plan.round(&self.key, &self.fingerprint, (&data_bytes, &data_name), state, None, progress)
        }
    }
}
