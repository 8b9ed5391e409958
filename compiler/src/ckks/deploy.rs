//! Deploying a CKKS build (feature `ckks`): the same files and commands as TFHE's. The data owner
//! generates keys (`KEYS/secret.key`: the secret, sealed as TFHE's is, mode 0600; `KEYS/eval.key`:
//! relinearization and exactly the rotations the plan uses), encrypts samples packed into as few
//! ciphertexts as the layout allows, and decrypts results; the server runs the plan with the
//! evaluation key only. Every file is an fhec envelope of its own kind; ciphertext files are tagged
//! with the evaluation key's fingerprint and the build's plan digest, and refused with another key
//! or another build.

use super::{ClientArtifact, ServerArtifact, ckks_error, load, load_client, wrong_scheme};
use crate::DriverError;
use crate::keyfile::Protection;
use fhec_ckks::backend::{ClientKey, Context, EvalKey, Role, Server};
use fhec_ckks::{ClientLayout, Packing};
use fhec_runtime::artifact::{self, Kind, Tagged};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// What `KEYS/secret.key` holds (sealed): the secret, and what it belongs to.
#[derive(Serialize, Deserialize)]
struct SecretFile {
    /// [`ClientKey::to_bytes`]: the ring and the secret's seed.
    secret: Vec<u8>,
    eval_fingerprint: String,
    plan_digest: String,
}

/// The rotations the server's evaluation of this build uses: none batch-major; feature-major, the
/// ones its matrices need, which only the plan knows (the build directory's `server.fhec`).
fn galois_elements(dir: &Path, ctx: &Context, layout: &ClientLayout) -> Result<Vec<i64>, DriverError> {
    if layout.packing == Packing::BatchMajor {
        return Ok(Vec::new());
    }
    let loaded = load(dir)?;
    Ok(Server::new(ctx, loaded.plan(), loaded.packing).map_err(ckks_error)?.galois_elements())
}

/// Generates keys for the CKKS build in `dir` into `keys`; returns the evaluation key's size in
/// bytes, how many rotation keys it holds, and the time key generation took.
pub fn keygen(dir: &Path, keys: &Path, protection: &Protection) -> Result<(usize, usize, Duration), DriverError> {
    let client = load_client(dir)?;
    let ctx = Context::new(client.layout.ring).map_err(ckks_error)?;
    let galois = galois_elements(dir, &ctx, &client.layout)?;
    std::fs::create_dir_all(keys).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", keys.display())))?;
    let start = Instant::now();
    let mut eval = Vec::new();
    let secret = ctx.keygen_to(&galois, &mut eval).map_err(ckks_error)?;
    let took = start.elapsed();
    let eval_path = keys.join("eval.key");
    let payload = artifact::save(&eval_path, Kind::CkksEvalKey, &eval)?;
    let file = SecretFile {
        secret: secret.to_bytes(&ctx),
        eval_fingerprint: artifact::fingerprint(&payload),
        plan_digest: client.plan_digest.clone(),
    };
    let plain =
        zeroize::Zeroizing::new(artifact::to_bytes(Kind::CkksSecretKey, &file).map_err(DriverError::Artifact)?.0);
    crate::tfhe::write_private(&keys.join("secret.key"), &crate::keyfile::seal(&plain, protection)?)?;
    Ok((eval.len(), galois.len(), took))
}

/// The client's side: its artifact, the context of its ring and its secret key (unsealed with
/// `protection`), with the fingerprint of the matching evaluation key.
pub struct ClientSide {
    pub artifact: ClientArtifact,
    ctx: Context,
    key: ClientKey,
    fingerprint: String,
}

impl ClientSide {
    pub fn load(dir: &Path, keys: &Path, protection: &Protection) -> Result<ClientSide, DriverError> {
        let artifact = load_client(dir)?;
        let path = keys.join("secret.key");
        let what = path.display().to_string();
        crate::tfhe::check_private(&path)?;
        let bytes = std::fs::read(&path).map_err(|e| DriverError::Io(format!("{what}: {e}")))?;
        let plain = crate::keyfile::open(&bytes, protection, &what)?;
        let (file, _): (SecretFile, _) = artifact::from_bytes(&plain, Kind::CkksSecretKey)
            .map_err(|e| DriverError::Key(format!("{what} {e} (a CKKS build takes keys from `fhec keygen` on it)")))?;
        if file.plan_digest != artifact.plan_digest {
            return Err(DriverError::Mismatch(format!(
                "{what} was generated for another build: run `fhec keygen {}` for this one",
                dir.display()
            )));
        }
        let ctx = Context::new(artifact.layout.ring).map_err(ckks_error)?;
        let key = ctx.client_key(&file.secret).map_err(|e| DriverError::Key(format!("{what}: {e}")))?;
        Ok(ClientSide { artifact, ctx, key, fingerprint: file.eval_fingerprint })
    }

    /// Encrypts every sample of `x` (shaped like the model input, samples along axis 0), packed as
    /// the layout says, into one tagged file's worth of ciphertexts.
    pub fn encrypt(&self, x: &ArrayD<f32>) -> Result<Tagged<Vec<u8>>, DriverError> {
        let a = &self.artifact;
        let pre = parse(&a.preprocess, "pre-processing")?;
        let samples: Vec<Vec<f64>> = crate::samples(x, &a.input_shape, "input")?
            .iter()
            .map(|t| fhec_lower::ckks::encode(pre.as_ref(), t))
            .collect::<Result<_, _>>()?;
        let batch = self.ctx.encrypt(&self.key, &a.layout, &samples).map_err(ckks_error)?;
        let mut data = Vec::new();
        self.ctx.write_batch(&batch, &mut data).map_err(ckks_error)?;
        Ok(Tagged {
            key_fingerprint: self.fingerprint.clone(),
            circuit_digest: a.plan_digest.clone(),
            samples: samples.len(),
            data,
        })
    }

    /// Decrypts results and runs the client's post-processing: the model's outputs, stacked over samples.
    pub fn decrypt(&self, out: &Tagged<Vec<u8>>) -> Result<Vec<(String, crate::Stacked)>, DriverError> {
        let a = &self.artifact;
        if out.key_fingerprint != self.fingerprint || out.circuit_digest != a.plan_digest {
            return Err(DriverError::Mismatch("these results belong to another key or another build".into()));
        }
        let batch = self
            .ctx
            .read_batch(&mut out.data.as_slice(), &a.layout, Role::Outputs)
            .map_err(|e| DriverError::Artifact(format!("the results: {e}")))?;
        if batch.samples != out.samples {
            return Err(DriverError::Shape(format!("{} samples in results tagged for {}", batch.samples, out.samples)));
        }
        let values = self.ctx.decrypt(&self.key, &batch).map_err(ckks_error)?;
        let post = parse(&a.postprocess, "post-processing")?.expect("a build has post-processing");
        let per_sample = values.iter().map(|v| fhec_lower::ckks::decode(&post, v)).collect::<Result<Vec<_>, _>>()?;
        Ok(crate::stack_outputs(&post, per_sample))
    }
}

/// The client artifact's module `src` (`None` when empty), parsed and verified.
fn parse(src: &str, part: &str) -> Result<Option<fhec_ir::Module>, DriverError> {
    if src.is_empty() {
        return Ok(None);
    }
    let bad = |e: String| DriverError::Artifact(format!("the client artifact: {part}: {e}"));
    let m: fhec_ir::Module = src.parse().map_err(|e: fhec_ir::IrError| bad(e.to_string()))?;
    m.verify().map_err(|e| bad(e.to_string()))?;
    Ok(Some(m))
}

/// The server's side: its artifact (the plan), the context of its ring and the evaluation key.
pub struct ServerSide {
    artifact: ServerArtifact,
    digest: String,
    ctx: Context,
    layout: ClientLayout,
    key: EvalKey,
    fingerprint: String,
}

impl ServerSide {
    /// Reads `DIR/server.fhec` and the evaluation key at `eval_key`; the client artifact is not needed.
    pub fn load(dir: &Path, eval_key: &Path) -> Result<ServerSide, DriverError> {
        let path = crate::tfhe::server_path(dir);
        let what = path.display().to_string();
        let (artifact, _): (ServerArtifact, _) = artifact::load(&path, Kind::CkksServer).map_err(wrong_scheme)?;
        artifact.plan.validate().map_err(|e| DriverError::Artifact(format!("{what}: {e}")))?;
        let ring = artifact.plan.ring().map_err(|e| DriverError::Artifact(format!("{what}: {e}")))?;
        let layout = artifact
            .plan
            .client_layout(ring, artifact.packing)
            .map_err(|e| DriverError::Artifact(format!("{what}: {e}")))?;
        let ctx = Context::new(ring).map_err(ckks_error)?;
        let galois = Server::new(&ctx, &artifact.plan, artifact.packing).map_err(ckks_error)?.galois_elements();
        let (bytes, payload): (Vec<u8>, _) = artifact::load(eval_key, Kind::CkksEvalKey).map_err(|e| {
            DriverError::Key(format!("{e} (a CKKS build takes the eval.key that `fhec keygen` made for it)"))
        })?;
        let key = ctx
            .read_eval_key(&mut bytes.as_slice(), &galois)
            .map_err(|e| DriverError::Key(format!("{}: {e}", eval_key.display())))?;
        let digest = artifact.digest();
        Ok(ServerSide { artifact, digest, ctx, layout, key, fingerprint: artifact::fingerprint(&payload) })
    }

    /// Runs the plan on a file's ciphertexts; refuses ciphertexts made for another key or build.
    pub fn run(&self, cts: &Tagged<Vec<u8>>) -> Result<Tagged<Vec<u8>>, DriverError> {
        if cts.key_fingerprint != self.fingerprint {
            return Err(DriverError::Mismatch(format!(
                "the ciphertexts were encrypted for evaluation key {}, this evaluation key is {}: use the key generated with the secret key that encrypted them",
                cts.key_fingerprint, self.fingerprint
            )));
        }
        if cts.circuit_digest != self.digest {
            return Err(DriverError::Mismatch(
                "the ciphertexts were encrypted for another build: encrypt with this build's client artifact".into(),
            ));
        }
        let inputs = self
            .ctx
            .read_batch(&mut cts.data.as_slice(), &self.layout, Role::Inputs)
            .map_err(|e| DriverError::Artifact(format!("the ciphertexts: {e}")))?;
        if inputs.samples != cts.samples {
            return Err(DriverError::Shape(format!(
                "{} samples in ciphertexts tagged for {}",
                inputs.samples, cts.samples
            )));
        }
        let server = Server::new(&self.ctx, &self.artifact.plan, self.artifact.packing).map_err(ckks_error)?;
        let out = server.evaluate(&self.key, &inputs).map_err(ckks_error)?;
        let mut data = Vec::new();
        self.ctx.write_batch(&out, &mut data).map_err(ckks_error)?;
        Ok(Tagged {
            key_fingerprint: self.fingerprint.clone(),
            circuit_digest: self.digest.clone(),
            samples: out.samples,
            data,
        })
    }
}
