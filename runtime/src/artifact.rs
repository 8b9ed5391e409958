//! On-disk formats: every file fhec writes (artifacts, keys, ciphertexts) is an envelope with a magic
//! tag, its kind, a format version and a SHA-256 checksum of the payload, so a file of the wrong kind,
//! from another version, or corrupted is a clear error instead of a wrong answer.
//!
//! Ciphertext files also carry the fingerprint of the evaluation key they were made for and the digest
//! of the circuit, so running them with another key or another model is refused.

use crate::RuntimeError;
use crate::circuit::Circuit;
use crate::params::ParamSet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 3;
const MAGIC: [u8; 8] = *b"FHECFILE";

/// The kinds of files; the envelope refuses to load one kind as another.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Client,
    Server,
    SecretKey,
    EvalKey,
    Inputs,
    Outputs,
    /// A secret key encrypted at rest (its envelope bytes sealed under a passphrase or a wrapped data key).
    SealedSecretKey,
    /// A CKKS build's client artifact (pre-processing, clamping, packing, post-processing; no weights).
    CkksClient,
    /// A CKKS build's server artifact (the plan).
    CkksServer,
    /// A CKKS secret key (the client's), its evaluation key's fingerprint and its build's digest.
    CkksSecretKey,
    /// A CKKS evaluation key (relinearization and rotations: the server's).
    CkksEvalKey,
    /// CKKS ciphertexts of samples (tagged), and of results.
    CkksInputs,
    CkksOutputs,
    /// A training plan (`fhec train plan`): the algorithm's choices and the data's shape, no data.
    TrainPlan,
    /// An encrypted training set and its starting weights (the data owner's upload).
    TrainData,
    /// Encrypted weights between rounds of training, or at its end.
    TrainState,
}

/// What a file of each kind is, in the user's terms (errors name the kind found and the one expected).
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Client => "a TFHE build's client artifact",
            Kind::Server => "a TFHE build's server artifact",
            Kind::SecretKey => "a TFHE secret key",
            Kind::EvalKey => "a TFHE evaluation key",
            Kind::Inputs => "TFHE input ciphertexts (`fhec encrypt`)",
            Kind::Outputs => "TFHE result ciphertexts (`fhec run`)",
            Kind::SealedSecretKey => "a sealed secret key",
            Kind::CkksClient => "a CKKS build's client artifact",
            Kind::CkksServer => "a CKKS build's server artifact",
            Kind::CkksSecretKey => "a CKKS secret key",
            Kind::CkksEvalKey => "a CKKS evaluation key",
            Kind::CkksInputs => "CKKS input ciphertexts (`fhec encrypt`)",
            Kind::CkksOutputs => "CKKS result ciphertexts (`fhec run`)",
            Kind::TrainPlan => "a training plan (`fhec train plan`)",
            Kind::TrainData => "an encrypted training set",
            Kind::TrainState => "encrypted training weights",
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    magic: [u8; 8],
    kind: Kind,
    version: u32,
    checksum: [u8; 32],
    payload: Vec<u8>,
}

/// How the client encodes input element `i`: `round((clamp(x, lo, hi) - mid) * scale)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputCode {
    pub lo: f64,
    pub hi: f64,
    pub mid: f64,
    pub scale: f64,
}

/// How the client decodes output accumulator `i`: `acc / scale + mid`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputCode {
    pub mid: f64,
    pub scale: f64,
}

/// What the data owner needs: pre-processing, encoding, decoding and post-processing. No layer weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientArtifact {
    pub model: String,
    /// The parameter set keys are generated for.
    pub params: ParamSet,
    /// Digest of the server's circuit: ciphertexts are tagged with it.
    pub circuit_digest: String,
    pub input_shape: Vec<usize>,
    /// An elementwise map of the input that runs before encoding (a pre-quantized model's input
    /// quantizer), as IR text: input the model's input, output `pre_0`. Empty: none.
    pub preprocess: String,
    pub inputs: Vec<InputCode>,
    pub outputs: Vec<OutputCode>,
    /// The final ops that run after decryption, as IR text: inputs `frontier_<k>`, the model's outputs.
    pub postprocess: String,
}

/// What the server needs: the circuit (weights and tables).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerArtifact {
    pub model: String,
    /// The circuit, with its parameter set.
    pub circuit: Circuit,
}

impl ServerArtifact {
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(bincode::serialize(&self.circuit).expect("circuits serialize")))
    }
}

/// BLAKE3 of a circuit with its input and output codes: equal digests mean equal compiled models
/// (the compiler's search uses it to score each distinct candidate once). The encoding streams into
/// the hash: a circuit's tables can be hundreds of megabytes.
pub fn compiled_digest(circuit: &Circuit, inputs: &[InputCode], outputs: &[OutputCode]) -> [u8; 32] {
    use std::io::Write;
    let mut hasher = blake3::Hasher::new();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut hasher);
    bincode::serialize_into(&mut w, &(circuit, inputs, outputs)).expect("circuits and codes serialize");
    w.flush().expect("hashing does not fail");
    drop(w);
    hasher.finalize().into()
}

/// A ciphertext file: the ciphertexts plus what they belong to.
#[derive(Serialize, Deserialize)]
pub struct Tagged<T> {
    pub key_fingerprint: String,
    pub circuit_digest: String,
    /// Number of samples; the ciphertexts hold `samples * per-sample` values, sample-major.
    pub samples: usize,
    pub data: T,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An evaluation key's envelope bytes and its fingerprint.
pub fn eval_key_bytes(key: &crate::fhe::CompressedEvalKey) -> (Vec<u8>, String) {
    let (bytes, payload) = to_bytes(Kind::EvalKey, key).expect("keys serialize");
    (bytes, fingerprint(&payload))
}

/// Fingerprint of an evaluation key's bytes (what ciphertexts are tagged with).
pub fn fingerprint(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))[..16].to_string()
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::File { path: path.display().to_string(), msg: e.to_string() }
}

/// Serializes `value` into an envelope of `kind` (returns the bytes written).
pub fn save<T: Serialize>(path: &Path, kind: Kind, value: &T) -> Result<Vec<u8>, RuntimeError> {
    let (bytes, payload) = to_bytes(kind, value).map_err(|e| io_err(path, e))?;
    std::fs::write(path, &bytes).map_err(|e| io_err(path, e))?;
    Ok(payload)
}

/// Loads an envelope of `kind`; returns the value and its payload bytes (for fingerprints).
pub fn load<T: DeserializeOwned>(path: &Path, kind: Kind) -> Result<(T, Vec<u8>), RuntimeError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    from_bytes(&bytes, kind).map_err(|e| io_err(path, e))
}

/// The envelope of `value` as bytes, and its payload (for fingerprints).
pub fn to_bytes<T: Serialize>(kind: Kind, value: &T) -> Result<(Vec<u8>, Vec<u8>), String> {
    let payload = bincode::serialize(value).map_err(|e| e.to_string())?;
    let env =
        Envelope { magic: MAGIC, kind, version: FORMAT_VERSION, checksum: Sha256::digest(&payload).into(), payload };
    let bytes = bincode::serialize(&env).map_err(|e| e.to_string())?;
    Ok((bytes, env.payload))
}

/// An envelope of `kind` around `payload` as given, with its checksum (for tests and fuzzing: it
/// reaches the payload decoders with bytes that no serializer wrote).
pub fn wrap_payload(kind: Kind, payload: Vec<u8>) -> Vec<u8> {
    let env =
        Envelope { magic: MAGIC, kind, version: FORMAT_VERSION, checksum: Sha256::digest(&payload).into(), payload };
    bincode::serialize(&env).expect("an envelope serializes")
}

/// The payload of an envelope of any kind, checksum verified (for tests and fuzzing).
pub fn payload_of(bytes: &[u8]) -> Result<Vec<u8>, String> {
    Ok(checked_envelope(bytes)?.payload)
}

/// The envelope in `bytes`, decoded under a limit of their length, with its magic and checksum verified.
fn checked_envelope(bytes: &[u8]) -> Result<Envelope, String> {
    let env: Envelope = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64 + 1024)
        .deserialize(bytes)
        .map_err(|_| "not an fhec file (or truncated)".to_string())?;
    if env.magic != MAGIC {
        return Err("not an fhec file".into());
    }
    if <[u8; 32]>::from(Sha256::digest(&env.payload)) != env.checksum {
        return Err("is corrupted (checksum mismatch)".into());
    }
    Ok(env)
}

/// The kind of an envelope, if `bytes` is one or starts like one (reads the head only: neither the
/// checksum nor the payload is looked at, so the first few dozen bytes of a file are enough).
pub fn peek_kind(bytes: &[u8]) -> Option<Kind> {
    #[derive(Deserialize)]
    struct Head {
        magic: [u8; 8],
        kind: Kind,
    }
    let head: Head = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(64)
        .deserialize(bytes)
        .ok()?;
    (head.magic == MAGIC).then_some(head.kind)
}

/// The kind of the envelope in the file at `path`, if it is one (reads its first bytes only).
pub fn peek_file(path: &Path) -> Option<Kind> {
    use std::io::Read;
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path).ok()?.take(64).read_to_end(&mut head).ok()?;
    peek_kind(&head)
}

/// Decodes an envelope of `kind` from bytes; the error says what is wrong (without a file name).
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8], kind: Kind) -> Result<(T, Vec<u8>), String> {
    let env = checked_envelope(bytes)?;
    if env.kind != kind {
        return Err(format!("holds {}; expected {kind}", env.kind));
    }
    if env.version != FORMAT_VERSION {
        return Err(format!(
            "was written in fhec file format {}, this fhec reads format {FORMAT_VERSION}: rebuild or regenerate it",
            env.version
        ));
    }
    // An envelope is the whole file: bytes after it were appended or concatenated, not written by fhec.
    let end = bincode::DefaultOptions::new().with_fixint_encoding().serialized_size(&env).unwrap_or(0);
    if (bytes.len() as u64) > end {
        return Err(format!("has {} bytes after its end (appended, or files concatenated)", bytes.len() as u64 - end));
    }
    let value = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(env.payload.len() as u64 + 1024)
        .deserialize(&env.payload)
        .map_err(|e| format!("cannot be decoded: {e}"))?;
    Ok((value, env.payload))
}

use bincode::Options as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_refused_with_bytes_after_it_truncated_or_corrupted() {
        let (mut bytes, _) = to_bytes(Kind::Inputs, &vec![1u64, 2, 3]).unwrap();
        let (v, _): (Vec<u64>, _) = from_bytes(&bytes, Kind::Inputs).unwrap();
        assert_eq!(v, [1, 2, 3]);
        assert!(
            from_bytes::<Vec<u64>>(&bytes, Kind::Outputs)
                .unwrap_err()
                .contains("holds TFHE input ciphertexts (`fhec encrypt`); expected TFHE result ciphertexts")
        );
        assert!(from_bytes::<Vec<u64>>(&bytes[..bytes.len() - 1], Kind::Inputs).unwrap_err().contains("truncated"));
        bytes.extend_from_slice(b"junk");
        assert_eq!(
            from_bytes::<Vec<u64>>(&bytes, Kind::Inputs).unwrap_err(),
            "has 4 bytes after its end (appended, or files concatenated)"
        );
        bytes.truncate(bytes.len() - 4);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(from_bytes::<Vec<u64>>(&bytes, Kind::Inputs).unwrap_err().contains("checksum"));
    }
}
