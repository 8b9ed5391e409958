//! The TFHE scheme: build artifacts from a model, generate keys, encrypt, run, decrypt. Its peer is
//! [`crate::ckks`]; [`crate::scheme`] chooses between them.
//!
//! Versioned, checksummed envelopes (see `fhec_runtime::artifact`): `DIR/client.fhec` (encoding,
//! decoding, post-processing; no weights), `DIR/server.fhec` (the circuit), `KEYS/secret.key`,
//! `KEYS/eval.key`, and ciphertext files tagged with the evaluation key's fingerprint and the
//! circuit's digest. The reports `DIR/report.txt` and `DIR/report.json` are plain files.

mod report;

use crate::{DriverError, Stacked};
use fhec_ir::{Module, Tensor};
use fhec_lower::tfhe::{Choice, Progress, Search, TableRanges};
use fhec_lower::{Calibration, Origin};
use fhec_runtime::artifact::{self, Kind, Tagged};
use fhec_runtime::fhe::{self, CompressedEvalKey, EvalKey, InputCiphertexts, OutputCiphertexts, SecretKey};
use fhec_runtime::{ClientArtifact, ParamSet, ServerArtifact};
use indexmap::IndexMap;
use ndarray::ArrayD;
use report::report;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn client_path(dir: &Path) -> PathBuf {
    dir.join("client.fhec")
}

pub fn server_path(dir: &Path) -> PathBuf {
    dir.join("server.fhec")
}

/// Estimated single-sample latency: the bootstraps level by level, each level spread over `threads`,
/// at the parameter set's measured bootstrap time (alone, or per bootstrap in a batch).
pub fn estimated_latency_ms(c: &fhec_runtime::Circuit, threads: usize) -> f64 {
    // A thread with several bootstraps of a level runs them as a batch.
    let per_thread = |n: usize| if n > 1 { n as f64 * c.params.batched_pbs_ms() } else { n as f64 * c.params.pbs_ms() };
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
    c.levels().iter().map(|l| per_thread(l.len().div_ceil(threads.max(1)))).sum::<f64>() + 0.0
}

/// Estimated time for `batch` samples on `threads` workers: one sample's latency, or the whole
/// batch's bootstraps spread over the workers at the batched time per bootstrap, whichever is longer.
pub fn estimated_batch_ms(c: &fhec_runtime::Circuit, batch: usize, threads: usize) -> f64 {
    estimated_latency_ms(c, threads)
        .max(batch as f64 * c.pbs.len() as f64 * c.params.batched_pbs_ms() / threads.max(1) as f64)
}

/// A TFHE build in memory: the chosen compilation, its two artifacts and its reports, not yet
/// written (see [`Build::write`]).
pub struct Build {
    pub choice: Choice,
    pub client: ClientArtifact,
    pub server: ServerArtifact,
    text: String,
    json: serde_json::Value,
    /// The wall time of each stage so far: the frontend, the pipeline's stages, the search.
    stages: Vec<(&'static str, Duration)>,
}

/// Compiles `model` for TFHE, choosing the parameter set and precision by measured accuracy (see
/// `fhec_lower::tfhe::choose`). Without calibration samples, the model must quantize its input
/// itself (a pre-quantized model: see `fhec_lower::Calibration::from_input_quantizer`). `progress`
/// is called once per candidate tried.
pub fn compile(
    model_path: &Path,
    calibration: Option<&ArrayD<f32>>,
    search: &Search,
    progress: impl FnMut(Progress<'_>),
) -> Result<Build, DriverError> {
    let start = Instant::now();
    let module = crate::load_model(model_path)?;
    let frontend = start.elapsed();
    let input_shape = module.node(module.inputs()[0]).ty.shape.clone();
    let cal = match calibration {
        Some(x) => Calibration::from_samples(crate::samples(x, &input_shape, "calibration")?)?,
        None => Calibration::from_input_quantizer(&module, fhec_lower::SYNTHETIC_SAMPLES, fhec_lower::SYNTHETIC_SEED)?,
    };
    let searching = Instant::now();
    let choice = fhec_lower::tfhe::choose(&module, &cal, search, progress)?;
    let searched = searching.elapsed();
    let compiled = &choice.compiled;
    let name = module.name.clone();
    let server = ServerArtifact { model: name.clone(), circuit: compiled.circuit.clone() };
    let client = ClientArtifact {
        model: name.clone(),
        params: compiled.circuit.params,
        circuit_digest: server.digest(),
        input_shape,
        preprocess: compiled.preprocess.as_ref().map_or(String::new(), |m| m.to_text(fhec_ir::DataMode::Full)),
        inputs: compiled.inputs.clone(),
        outputs: compiled.outputs.clone(),
        postprocess: compiled.postprocess.to_string(),
    };
    let (mut text, mut json) = report(&name, &choice);
    let ensembles = fhec_onnx::tree_ensembles(model_path).unwrap_or_default();
    if !ensembles.is_empty() {
        let client_decisions = compiled.preprocess.as_ref().is_some_and(fhec_lower::ends_in_decisions);
        report::trees(&ensembles, client_decisions, &mut text, &mut json);
    }
    // Each stage's wall time: the frontend, the pipeline's stages, then the rest of the search
    // (the float reference, integerizing and simulating candidates).
    let mut stages: Vec<(&'static str, Duration)> = vec![("frontend", frontend)];
    stages.extend(choice.optimization.stage_times.iter().copied());
    let prepared: Duration = choice.optimization.stage_times.iter().map(|s| s.1).sum();
    stages.push(("search", searched.saturating_sub(prepared)));
    Ok(Build { choice, client, server, text, json, stages })
}

impl Build {
    /// Estimated time for `batch` samples on `threads` workers: one sample's latency, or for a
    /// batch, its bootstraps spread over the workers in batches (whichever is longer).
    pub fn estimated_ms(&self, batch: usize, threads: usize) -> f64 {
        estimated_batch_ms(&self.choice.compiled.circuit, batch, threads)
    }

    /// Writes the artifacts and the reports (`preface`, then the report with each stage's time)
    /// into `dir`, replacing an earlier CKKS build there; returns the text report.
    pub fn write(&self, dir: &Path, preface: &str) -> Result<String, DriverError> {
        let writing = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", dir.display())))?;
        crate::scheme::remove_stale(&crate::ckks::legacy_path(dir))?;
        artifact::save(&server_path(dir), Kind::Server, &self.server)?;
        artifact::save(&client_path(dir), Kind::Client, &self.client)?;
        let mut stages = self.stages.clone();
        stages.push(("write artifacts", writing.elapsed()));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let line: Vec<String> = stages.iter().map(|(n, d)| format!("{n} {:.0} ms", ms(*d))).collect();
        let text = format!("{preface}{}\nstage times: {}\n", self.text, line.join(", "));
        let mut json = self.json.clone();
        json["stage_ms"] = json!(stages.iter().map(|(n, d)| json!({"stage": n, "ms": ms(*d)})).collect::<Vec<_>>());
        crate::scheme::write_reports(dir, &text, &json)?;
        Ok(text)
    }
}

/// [`compile`], then [`Build::write`] into `dir`.
pub fn build(
    model_path: &Path,
    calibration: Option<&ArrayD<f32>>,
    dir: &Path,
    search: &Search,
    progress: impl FnMut(Progress<'_>),
) -> Result<(Choice, String), DriverError> {
    let b = compile(model_path, calibration, search, progress)?;
    let text = b.write(dir, "")?;
    Ok((b.choice, text))
}

pub fn load_client(dir: &Path) -> Result<(ClientArtifact, Module), DriverError> {
    let (client, _): (ClientArtifact, _) =
        artifact::load(&client_path(dir), Kind::Client).map_err(crate::ckks::wrong_scheme)?;
    let post = postprocess(&client, &client_path(dir).display().to_string())?;
    Ok((client, post))
}

/// The client's pre-processing module, parsed and verified, if it has one (`what` names the artifact
/// in errors).
pub fn preprocess(client: &ClientArtifact, what: &str) -> Result<Option<Module>, DriverError> {
    if client.preprocess.is_empty() {
        return Ok(None);
    }
    let pre: Module =
        client.preprocess.parse().map_err(|e| DriverError::Artifact(format!("{what}: pre-processing: {e}")))?;
    pre.verify().map_err(|e| DriverError::Artifact(format!("{what}: pre-processing: {e}")))?;
    Ok(Some(pre))
}

/// The client's post-processing module, parsed and verified (`what` names the artifact in errors).
pub fn postprocess(client: &ClientArtifact, what: &str) -> Result<Module, DriverError> {
    let post: Module =
        client.postprocess.parse().map_err(|e| DriverError::Artifact(format!("{what}: post-processing: {e}")))?;
    post.verify().map_err(|e| DriverError::Artifact(format!("{what}: post-processing: {e}")))?;
    Ok(post)
}

/// The server artifact and its circuit digest (computed once: ciphertexts are checked against it).
pub fn load_server(dir: &Path) -> Result<(ServerArtifact, String), DriverError> {
    let (server, _): (ServerArtifact, _) =
        artifact::load(&server_path(dir), Kind::Server).map_err(crate::ckks::wrong_scheme)?;
    server.circuit.validate()?;
    let digest = server.digest();
    Ok((server, digest))
}

/// Generates keys for `params` into `keys/secret.key` (sealed as `protection` says, mode 0600) and
/// `keys/eval.key`; returns the eval key's size in bytes and the key generation time.
pub fn keygen(
    keys: &Path,
    params: ParamSet,
    protection: &crate::keyfile::Protection,
) -> Result<(usize, Duration), DriverError> {
    std::fs::create_dir_all(keys).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", keys.display())))?;
    let start = Instant::now();
    let (sk, ek) = fhe::keygen(params);
    let took = start.elapsed();
    let plain = zeroize::Zeroizing::new(artifact::to_bytes(Kind::SecretKey, &sk).map_err(DriverError::Artifact)?.0);
    let sealed = crate::keyfile::seal(&plain, protection)?;
    let path = keys.join("secret.key");
    write_private(&path, &sealed)?;
    artifact::save(&keys.join("eval.key"), Kind::EvalKey, &ek)?;
    let size = std::fs::metadata(keys.join("eval.key")).map(|m| m.len() as usize).unwrap_or(0);
    Ok((size, took))
}

/// Writes a file readable by its owner only (created so: never briefly world-readable).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    use std::io::Write;
    let fail = |e: std::io::Error| DriverError::Io(format!("cannot write {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    restrict_permissions(path);
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// The secret key (unsealed with `protection` if it is sealed) and the fingerprint of the matching
/// evaluation key (ciphertexts are tagged with it).
pub fn load_secret(keys: &Path, protection: &crate::keyfile::Protection) -> Result<(SecretKey, String), DriverError> {
    let path = keys.join("secret.key");
    check_private(&path)?;
    let bytes = std::fs::read(&path).map_err(|e| DriverError::Io(format!("{}: {e}", path.display())))?;
    let plain = crate::keyfile::open(&bytes, protection, &path.display().to_string())?;
    let (sk, _): (SecretKey, _) = artifact::from_bytes(&plain, Kind::SecretKey)
        .map_err(|e| DriverError::Artifact(format!("{} {e}", path.display())))?;
    let (_, ek_bytes): (CompressedEvalKey, _) = artifact::load(&keys.join("eval.key"), Kind::EvalKey)?;
    Ok((sk, artifact::fingerprint(&ek_bytes)))
}

/// Refuses a secret key file that other users may read or write (as ssh does): whoever could read it
/// can decrypt every result. Unix only; elsewhere the file system's access control is the user's.
pub fn check_private(path: &Path) -> Result<(), DriverError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| DriverError::Io(format!("{}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(DriverError::Key(format!(
                "{} is accessible to other users (mode {:04o}): a secret key must be private to its owner; \
                 run `chmod 600 {}` if no one else has read it, else generate new keys",
                path.display(),
                mode & 0o7777,
                path.display()
            )));
        }
    }
    Ok(())
}

pub fn load_eval(path: &Path) -> Result<(EvalKey, String), DriverError> {
    let (ek, bytes): (CompressedEvalKey, _) = artifact::load(path, Kind::EvalKey)?;
    ek.check().map_err(|e| DriverError::Data(format!("{}: {e}", path.display())))?;
    Ok((ek.decompress(), artifact::fingerprint(&bytes)))
}

/// Encodes and encrypts every sample of `x`.
pub fn encrypt(
    client: &ClientArtifact,
    sk: &SecretKey,
    fingerprint: &str,
    x: &ArrayD<f32>,
) -> Result<Tagged<InputCiphertexts>, DriverError> {
    if sk.params() != client.params {
        return Err(DriverError::Mismatch(format!(
            "the secret key is for parameter set {}, this model was compiled for {}: generate its keys with `fhec keygen`",
            sk.params(),
            client.params
        )));
    }
    let xs = crate::samples(x, &client.input_shape, "input")?;
    let pre = preprocess(client, "the client artifact")?;
    let mut values = Vec::with_capacity(xs.len() * client.inputs.len());
    for s in &xs {
        values.extend(fhec_lower::encode(pre.as_ref(), &client.inputs, s)?);
    }
    Ok(Tagged {
        key_fingerprint: fingerprint.into(),
        circuit_digest: client.circuit_digest.clone(),
        samples: xs.len(),
        data: sk.encrypt(&values),
    })
}

/// Runs every sample on the server. Refuses ciphertexts made for another key or another model
/// (`digest` is the server artifact's, from `load_server`).
pub fn run(
    server: &ServerArtifact,
    digest: &str,
    ek: &EvalKey,
    fingerprint: &str,
    cts: &Tagged<InputCiphertexts>,
) -> Result<Tagged<OutputCiphertexts>, DriverError> {
    if cts.key_fingerprint != fingerprint {
        return Err(DriverError::Mismatch(format!(
            "the ciphertexts were encrypted for evaluation key {}, this evaluation key is {fingerprint}: use the key generated with the secret key that encrypted them",
            cts.key_fingerprint
        )));
    }
    if cts.circuit_digest != digest {
        return Err(DriverError::Mismatch(
            "the ciphertexts were encrypted for another model (or another build of it): encrypt with this model's client artifact".into(),
        ));
    }
    // `run_batch` refuses an evaluation key of another parameter set.
    let outs = fhe::run_batch(&server.circuit, ek, &cts.data, cts.samples)?;
    Ok(Tagged {
        key_fingerprint: fingerprint.into(),
        circuit_digest: cts.circuit_digest.clone(),
        samples: cts.samples,
        data: outs,
    })
}

/// Decrypts, decodes and post-processes every sample; returns the model's outputs stacked over samples.
pub fn decrypt(
    client: &ClientArtifact,
    post: &Module,
    sk: &SecretKey,
    fingerprint: &str,
    out: &Tagged<OutputCiphertexts>,
) -> Result<Vec<(String, Stacked)>, DriverError> {
    Ok(crate::stack_outputs(post, decrypt_samples(client, post, sk, fingerprint, out)?))
}

/// As [`decrypt`], one list of the model's outputs per sample.
pub fn decrypt_samples(
    client: &ClientArtifact,
    post: &Module,
    sk: &SecretKey,
    fingerprint: &str,
    out: &Tagged<OutputCiphertexts>,
) -> Result<Vec<Vec<Tensor>>, DriverError> {
    if out.key_fingerprint != fingerprint || out.circuit_digest != client.circuit_digest {
        return Err(DriverError::Mismatch("these results belong to another key or another model".into()));
    }
    let acc = sk.decrypt(&out.data);
    let per = client.outputs.len();
    if acc.len() != per * out.samples {
        return Err(DriverError::Shape(format!("{} results for {} samples of {per} values", acc.len(), out.samples)));
    }
    Ok(acc.chunks(per.max(1)).map(|a| fhec_lower::decode(&client.outputs, post, a)).collect::<Result<Vec<_>, _>>()?)
}

/// Cleartext simulation of the circuit on every sample: exact integer semantics, noise-free or with
/// the parameter set's noise model (drawn from `noise_seed`). `engine` picks the interpreter or the
/// JIT (`fhec-jit`; the same results); when the JIT is required and cannot take the circuit, the
/// interpreter runs it and `warn` hears why.
pub fn simulate(
    client: &ClientArtifact,
    post: &Module,
    server: &ServerArtifact,
    x: &ArrayD<f32>,
    noise_seed: Option<u64>,
    engine: fhec_lower::Engine,
    warn: impl FnOnce(&str),
) -> Result<Vec<(String, Stacked)>, DriverError> {
    let xs = crate::samples(x, &client.input_shape, "input")?;
    let (sim, fallback) = fhec_lower::Simulator::new(&server.circuit, engine, xs.len());
    if let Some(why) = fallback {
        warn(&why);
    }
    Ok(crate::stack_outputs(post, simulate_samples(client, post, &sim, &xs, noise_seed)?))
}

/// As [`simulate`], on samples already shaped like the model input, with a simulator of the server's
/// circuit; one list of outputs per sample.
pub fn simulate_samples(
    client: &ClientArtifact,
    post: &Module,
    sim: &fhec_lower::Simulator<'_>,
    xs: &[Tensor],
    noise_seed: Option<u64>,
) -> Result<Vec<Vec<Tensor>>, DriverError> {
    let mut rng = noise_seed.map(fhec_runtime::Noise::rng);
    let noise = match rng.as_mut() {
        Some(r) => fhec_runtime::Noise::Gaussian(r),
        None => fhec_runtime::Noise::None,
    };
    let pre = preprocess(client, "the client artifact")?;
    Ok(sim.predict(pre.as_ref(), &client.inputs, &client.outputs, post, xs, noise)?)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_key_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        std::fs::write(&path, b"key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&path).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }
}
