//! Deploying a CKKS build (feature `ckks`): the same files and commands as TFHE's. The data owner
//! generates keys (`KEYS/secret.key`: the secret, sealed as TFHE's is, mode 0600; `KEYS/eval.key`:
//! relinearization and exactly the rotations the plan uses), encrypts samples packed into as few
//! ciphertexts as the layout allows, and decrypts results; the server runs the plan with the
//! evaluation key only. Every file is an fhec envelope of its own kind; ciphertext files are tagged
//! with the evaluation key's fingerprint and the build's plan digest, and refused with another key
//! or another build.

use super::{ClientArtifact, ServerArtifact, ckks_error, load_client, load_server};
use crate::DriverError;
use crate::keyfile::Protection;
pub use fhec_ckks::backend::EvalKey;
use fhec_ckks::backend::{ClientKey, Context, Role, Server};
use fhec_ckks::{ClientLayout, Packing};
use fhec_runtime::artifact::{self, Kind, Tagged};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// The envelope bytes of a secret key file (before sealing): the secret and what it belongs to
/// (the evaluation key's fingerprint, the build's or training plan's digest).
pub(crate) fn secret_file(secret: Vec<u8>, eval_fingerprint: String, plan_digest: String) -> Vec<u8> {
    artifact::to_bytes(Kind::CkksSecretKey, &SecretFile { secret, eval_fingerprint, plan_digest })
        .expect("secret keys serialize")
        .0
}

/// The secret and its evaluation key's fingerprint from [`secret_file`]'s bytes, if they belong to
/// `plan_digest`.
pub(crate) fn open_secret_file(bytes: &[u8], plan_digest: &str) -> Result<(Vec<u8>, String), DriverError> {
    let (file, _): (SecretFile, _) = artifact::from_bytes(bytes, Kind::CkksSecretKey).map_err(|e| {
        DriverError::Key(format!("{e} (a CKKS build takes keys from `fhec keygen` on it, and so does a training plan)"))
    })?;
    if file.plan_digest != plan_digest {
        return Err(DriverError::Mismatch("the secret key was generated for another build".into()));
    }
    Ok((file.secret, file.eval_fingerprint))
}

/// The rotations the server's evaluation of this build uses: none batch-major; feature-major, the
/// ones its matrices need, which only the plan knows (the build's server artifact, public).
fn galois_elements(
    ctx: &Context,
    layout: &ClientLayout,
    plan: impl FnOnce() -> Result<ServerArtifact, DriverError>,
) -> Result<Vec<i64>, DriverError> {
    if layout.packing == Packing::BatchMajor {
        return Ok(Vec::new());
    }
    let server = plan()?;
    Ok(Server::new(ctx, &server.plan, server.packing).map_err(ckks_error)?.galois_elements())
}

/// Keys made in memory: the client's side (secret key included), the evaluation key's envelope
/// bytes (what `KEYS/eval.key` holds and the server takes), and how many rotation keys it has.
pub struct Keys {
    pub client: ClientSide,
    pub eval_key: Vec<u8>,
    pub rotations: usize,
}

/// Generates a secret key and the evaluation key for the build `client` belongs to (`server`, its
/// server artifact, is read only when the packing needs rotations).
pub fn generate(
    client: ClientArtifact,
    server: impl FnOnce() -> Result<ServerArtifact, DriverError>,
) -> Result<Keys, DriverError> {
    let ctx = Context::new(client.layout.ring).map_err(ckks_error)?;
    let galois = galois_elements(&ctx, &client.layout, server)?;
    let mut raw = Vec::new();
    let key = ctx.keygen_to(&galois, &mut raw).map_err(ckks_error)?;
    let (eval_key, payload) = artifact::to_bytes(Kind::CkksEvalKey, &raw).map_err(DriverError::Artifact)?;
    let fingerprint = artifact::fingerprint(&payload);
    Ok(Keys { client: ClientSide { artifact: client, ctx, key, fingerprint }, eval_key, rotations: galois.len() })
}

/// Generates keys for the CKKS build in `dir` into `keys`; returns the evaluation key's size in
/// bytes, how many rotation keys it holds, and the time key generation took.
pub fn keygen(dir: &Path, keys: &Path, protection: &Protection) -> Result<(usize, usize, Duration), DriverError> {
    let client = load_client(dir)?;
    std::fs::create_dir_all(keys).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", keys.display())))?;
    let start = Instant::now();
    let made = generate(client, || load_server(dir))?;
    let took = start.elapsed();
    let eval_path = keys.join("eval.key");
    std::fs::write(&eval_path, &made.eval_key).map_err(|e| DriverError::Io(format!("{}: {e}", eval_path.display())))?;
    let plain = zeroize::Zeroizing::new(made.client.secret_bytes());
    crate::tfhe::write_private(&keys.join("secret.key"), &crate::keyfile::seal(&plain, protection)?)?;
    Ok((made.eval_key.len(), made.rotations, took))
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
        ClientSide::from_secret(artifact, &plain).map_err(|e| match e {
            DriverError::Key(m) => DriverError::Key(format!("{what} {m}")),
            DriverError::Mismatch(_) => DriverError::Mismatch(format!(
                "{what} was generated for another build: run `fhec keygen {}` for this one",
                dir.display()
            )),
            other => other,
        })
    }

    /// The client of `artifact` with the secret key of [`ClientSide::secret_bytes`] (unsealed).
    pub fn from_secret(artifact: ClientArtifact, secret: &[u8]) -> Result<ClientSide, DriverError> {
        let (secret, fingerprint) = open_secret_file(secret, &artifact.plan_digest)?;
        let ctx = Context::new(artifact.layout.ring).map_err(ckks_error)?;
        let key = ctx.client_key(&secret).map_err(|e| DriverError::Key(e.to_string()))?;
        Ok(ClientSide { artifact, ctx, key, fingerprint })
    }

    /// The secret key, unsealed, with what it belongs to (what `KEYS/secret.key` holds once
    /// sealed): keep it on the client only.
    pub fn secret_bytes(&self) -> Vec<u8> {
        secret_file(self.key.to_bytes(&self.ctx), self.fingerprint.clone(), self.artifact.plan_digest.clone())
    }

    /// The fingerprint of the evaluation key that goes with this secret key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
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

/// A CKKS build as a server holds it: the plan (`DIR/server.fhec`), the context of its ring, and
/// the rotations its evaluation uses. No key: [`Deployed::run`] takes an [`EvalKey`], read by
/// [`Deployed::read_eval_key`], and `fhec serve` keeps many of those per model.
pub struct Deployed {
    artifact: ServerArtifact,
    digest: String,
    ctx: Context,
    layout: ClientLayout,
    galois: Vec<i64>,
}

impl Deployed {
    /// Reads `DIR/server.fhec`; the client artifact is not needed.
    pub fn load(dir: &Path) -> Result<Deployed, DriverError> {
        let path = crate::tfhe::server_path(dir);
        Deployed::new(load_server(dir)?, &path.display().to_string())
    }

    /// The build of a server artifact (`what` names it in errors).
    pub fn new(artifact: ServerArtifact, what: &str) -> Result<Deployed, DriverError> {
        let (ring, layout) = artifact.layout(what)?;
        let ctx = Context::new(ring).map_err(ckks_error)?;
        let galois = Server::new(&ctx, &artifact.plan, artifact.packing).map_err(ckks_error)?.galois_elements();
        let digest = artifact.digest();
        Ok(Deployed { artifact, digest, ctx, layout, galois })
    }

    /// The digest ciphertexts for this build are tagged with.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// What the client encrypts with: ring, packing, samples per ciphertext.
    pub fn layout(&self) -> &ClientLayout {
        &self.layout
    }

    /// Samples one ciphertext holds: the ring's slots batch-major, `slots / block` feature-major.
    pub fn samples_per_ciphertext(&self) -> usize {
        self.layout.samples_per_ciphertext
    }

    /// Samples one encrypted batch may hold under a limit of `limit`: batch-major, the ring's slots at
    /// most (a batch is one ciphertext per input value); feature-major, any number, in as many
    /// ciphertexts as they need.
    pub fn max_samples(&self, limit: usize) -> usize {
        match self.layout.packing {
            fhec_ckks::Packing::BatchMajor => limit.min(self.layout.samples_per_ciphertext),
            fhec_ckks::Packing::FeatureMajor => limit,
        }
    }

    /// The size of an `eval.key` for this build, as a bound (envelope included).
    pub fn eval_key_bytes(&self) -> usize {
        self.ctx.eval_key_bytes(self.galois.len()) + 1024
    }

    /// What an evaluation key for this build must be made for: the ring and exactly the rotations the
    /// plan uses. Two builds with the same name here take the same keys.
    pub fn key_params(&self) -> String {
        let rotations: Vec<String> = self.galois.iter().map(i64::to_string).collect();
        let digest = artifact::hex(&Sha256::digest(rotations.join(",").as_bytes()));
        format!("ckks-2^{}-{}rot-{}", self.ctx.params.log_n, self.galois.len(), &digest[..8])
    }

    /// Reads an evaluation key's envelope bytes (`KEYS/eval.key`) for this build: refused when it was
    /// generated for another ring or another set of rotations. Returns the key and its fingerprint.
    pub fn read_eval_key(&self, bytes: &[u8]) -> Result<(EvalKey, String), DriverError> {
        let (raw, payload): (Vec<u8>, _) = artifact::from_bytes(bytes, Kind::CkksEvalKey).map_err(|e| {
            DriverError::Key(format!(
                "the evaluation key {e} (a CKKS build takes the eval.key that `fhec keygen` made for it)"
            ))
        })?;
        Ok((self.eval_key_from(&raw)?, artifact::fingerprint(&payload)))
    }

    /// Reads an evaluation key from poulpy's bytes (an `eval.key` envelope's payload, checked).
    pub fn eval_key_from(&self, raw: &[u8]) -> Result<EvalKey, DriverError> {
        self.ctx.read_eval_key(&mut &raw[..], &self.galois).map_err(|e| {
            DriverError::Key(format!("the evaluation key is not one for this build ({e}): run `fhec keygen` for it"))
        })
    }

    /// Runs the plan on a file's ciphertexts with `key` (whose fingerprint is `fingerprint`);
    /// refuses ciphertexts made for another key or build.
    pub fn run(&self, key: &EvalKey, fingerprint: &str, cts: &Tagged<Vec<u8>>) -> Result<Tagged<Vec<u8>>, DriverError> {
        if cts.key_fingerprint != fingerprint {
            return Err(DriverError::Mismatch(format!(
                "the ciphertexts were encrypted for evaluation key {}, this evaluation key is {fingerprint}: use the key generated with the secret key that encrypted them",
                cts.key_fingerprint
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
        let out = server.evaluate(key, &inputs).map_err(ckks_error)?;
        let mut data = Vec::new();
        self.ctx.write_batch(&out, &mut data).map_err(ckks_error)?;
        Ok(Tagged {
            key_fingerprint: fingerprint.to_string(),
            circuit_digest: self.digest.clone(),
            samples: out.samples,
            data,
        })
    }
}

/// The server's side of `fhec run`: the build and one evaluation key.
pub struct ServerSide {
    deployed: Deployed,
    key: EvalKey,
    fingerprint: String,
}

impl ServerSide {
    /// Reads `DIR/server.fhec` and the evaluation key at `eval_key`; the client artifact is not needed.
    pub fn load(dir: &Path, eval_key: &Path) -> Result<ServerSide, DriverError> {
        let deployed = Deployed::load(dir)?;
        let bytes = std::fs::read(eval_key).map_err(|e| DriverError::Io(format!("{}: {e}", eval_key.display())))?;
        let (key, fingerprint) = deployed.read_eval_key(&bytes).map_err(|e| match e {
            DriverError::Key(m) => DriverError::Key(format!("{}: {m}", eval_key.display())),
            other => other,
        })?;
        Ok(ServerSide { deployed, key, fingerprint })
    }

    /// Runs the plan on a file's ciphertexts; refuses ciphertexts made for another key or build.
    pub fn run(&self, cts: &Tagged<Vec<u8>>) -> Result<Tagged<Vec<u8>>, DriverError> {
        self.deployed.run(&self.key, &self.fingerprint, cts)
    }
}
