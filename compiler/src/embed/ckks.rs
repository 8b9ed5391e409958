//! Run-time support for CKKS builds compiled into a crate by [`crate::build`]
//! (`.scheme(Scheme::Ckks)`): a batch of samples in, packed into as few ciphertexts as the layout
//! allows, and a batch of predictions out.
//!
//! Encryption, evaluation and decryption need fhec's `ckks` feature (poulpy, nightly). Without it a
//! [`Client`] cannot be made ([`Client::generate`] and [`Client::load`] say what to enable) and
//! [`Server::run`] refuses; [`Server::simulate`] (the plan in the clear) works on any toolchain.
//!
//! The server side ([`Server`], [`EvalKey`]) holds no secret material: an `EvalKey` is the evaluation
//! key's bytes, which the server decodes for its build on first use.

use super::{Values, decode, encode, samples};
use crate::ckks::{ClientArtifact, Loaded, ServerArtifact};
use crate::{DriverError, Stacked};
use fhec_runtime::artifact::{self, Kind, Tagged};
use ndarray::Axis;

#[cfg(feature = "ckks")]
use crate::ckks::deploy;

fn client_artifact(bytes: &[u8]) -> Result<ClientArtifact, DriverError> {
    let what = "the embedded client artifact";
    let (a, _): (ClientArtifact, _) = decode(bytes, Kind::CkksClient, what)?;
    a.layout.validate().map_err(|e| DriverError::Artifact(format!("{what}: {e}")))?;
    Ok(a)
}

fn server_artifact(bytes: &[u8]) -> Result<ServerArtifact, DriverError> {
    Ok(decode(bytes, Kind::CkksServer, "the embedded server artifact")?.0)
}

/// Per sample, each output's values (outputs stacked over samples, split again).
fn per_sample(outputs: &[(String, Stacked)]) -> Vec<Vec<Values>> {
    let n = outputs.first().map_or(0, |(_, s)| match s {
        Stacked::F32(a) => a.len_of(Axis(0)),
        Stacked::I64(a) => a.len_of(Axis(0)),
    });
    (0..n)
        .map(|i| {
            outputs
                .iter()
                .map(|(_, s)| match s {
                    Stacked::F32(a) => Values::F32(a.index_axis(Axis(0), i).iter().copied().collect()),
                    Stacked::I64(a) => Values::I64(a.index_axis(Axis(0), i).iter().copied().collect()),
                })
                .collect()
        })
        .collect()
}

#[cfg(not(feature = "ckks"))]
fn no_feature<T>() -> Result<T, DriverError> {
    Err(DriverError::Ckks(
        "encrypted CKKS runs need fhec's `ckks` feature (poulpy, which builds with a nightly compiler): depend on fhec with `features = [\"ckks\"]` and build with `cargo +nightly` (`Server::simulate` works without it)".into(),
    ))
}

/// The data owner's side: packs, encrypts, decrypts and post-processes. Holds the secret key.
pub struct Client {
    #[cfg(feature = "ckks")]
    side: deploy::ClientSide,
    /// Without the `ckks` feature no client exists.
    #[cfg(not(feature = "ckks"))]
    never: std::convert::Infallible,
}

/// The evaluation key as the server receives it: relinearization and the plan's rotations.
pub struct EvalKey {
    bytes: Vec<u8>,
    /// What ciphertexts made for this key are tagged with.
    #[cfg_attr(not(feature = "ckks"), allow(dead_code))]
    fingerprint: String,
    /// Decoded by the first server that uses it, with that server's plan digest.
    #[cfg(feature = "ckks")]
    decoded: std::sync::OnceLock<(String, deploy::EvalKey)>,
}

/// Encrypted samples (packed), tagged with their key and build.
pub struct Ciphertexts(Tagged<Vec<u8>>);

/// Encrypted results, tagged with their key and build.
pub struct Results(Tagged<Vec<u8>>);

/// The server: runs the plan on ciphertexts with an evaluation key.
pub struct Server {
    artifact: ServerArtifact,
    #[cfg(feature = "ckks")]
    deployed: deploy::Deployed,
}

impl Client {
    /// Generates a fresh key pair for the embedded build: the client keeps the secret key, the
    /// evaluation key goes to the server. The server artifact (public) says which rotations the
    /// evaluation key needs.
    pub fn generate(
        client_artifact_bytes: &[u8],
        server_artifact_bytes: &[u8],
    ) -> Result<(Client, EvalKey), DriverError> {
        let client = client_artifact(client_artifact_bytes)?;
        #[cfg(feature = "ckks")]
        {
            let keys = deploy::generate(client, || server_artifact(server_artifact_bytes))?;
            let fingerprint = keys.client.fingerprint().to_string();
            let eval = EvalKey { bytes: keys.eval_key, fingerprint, decoded: std::sync::OnceLock::new() };
            Ok((Client { side: keys.client }, eval))
        }
        #[cfg(not(feature = "ckks"))]
        {
            let _ = (client, server_artifact_bytes);
            no_feature()
        }
    }

    /// Restores a client from the bytes of [`Client::secret_bytes`] and [`EvalKey::to_bytes`].
    pub fn load(client_artifact_bytes: &[u8], secret: &[u8], eval_key: &[u8]) -> Result<Client, DriverError> {
        let client = client_artifact(client_artifact_bytes)?;
        let eval_key = EvalKey::from_bytes(eval_key)?;
        #[cfg(feature = "ckks")]
        {
            let side = deploy::ClientSide::from_secret(client, secret)?;
            if side.fingerprint() != eval_key.fingerprint {
                return Err(DriverError::Mismatch("the evaluation key does not go with this secret key".into()));
            }
            Ok(Client { side })
        }
        #[cfg(not(feature = "ckks"))]
        {
            let _ = (client, secret, eval_key);
            no_feature()
        }
    }

    /// The secret key's bytes, to keep on the client only.
    pub fn secret_bytes(&self) -> Vec<u8> {
        #[cfg(feature = "ckks")]
        return self.side.secret_bytes();
        #[cfg(not(feature = "ckks"))]
        match self.never {}
    }

    /// Encrypts samples given one after another (the model's input values each), packed as the
    /// build's layout says: batch-major, up to the ring's slots samples in one batch.
    pub fn encrypt(&self, values: &[f32]) -> Result<Ciphertexts, DriverError> {
        #[cfg(feature = "ckks")]
        return Ok(Ciphertexts(self.side.encrypt(&samples(values, &self.side.artifact.input_shape)?)?));
        #[cfg(not(feature = "ckks"))]
        match (self.never, values) {}
    }

    /// Decrypts and post-processes results: per sample, the model's outputs in order.
    pub fn decrypt(&self, results: &Results) -> Result<Vec<Vec<Values>>, DriverError> {
        #[cfg(feature = "ckks")]
        return Ok(per_sample(&self.side.decrypt(&results.0)?));
        #[cfg(not(feature = "ckks"))]
        match (self.never, results) {}
    }
}

impl EvalKey {
    /// The bytes to send to the server (what `fhec keygen` writes to `eval.key`).
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as the server receives it (the envelope's checksum verified; decoded on first use).
    pub fn from_bytes(bytes: &[u8]) -> Result<EvalKey, DriverError> {
        let (_, payload): (Vec<u8>, _) = decode(bytes, Kind::CkksEvalKey, "the evaluation key")?;
        Ok(EvalKey {
            bytes: bytes.to_vec(),
            fingerprint: artifact::fingerprint(&payload),
            #[cfg(feature = "ckks")]
            decoded: std::sync::OnceLock::new(),
        })
    }
}

impl Ciphertexts {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::CkksInputs, &self.0)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Ciphertexts, DriverError> {
        Ok(Ciphertexts(decode(bytes, Kind::CkksInputs, "the ciphertexts")?.0))
    }

    pub fn samples(&self) -> usize {
        self.0.samples
    }
}

impl Results {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::CkksOutputs, &self.0)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Results, DriverError> {
        Ok(Results(decode(bytes, Kind::CkksOutputs, "the results")?.0))
    }

    pub fn samples(&self) -> usize {
        self.0.samples
    }
}

impl Server {
    /// Loads the embedded server artifact (the plan).
    pub fn load(server_artifact_bytes: &[u8]) -> Result<Server, DriverError> {
        let artifact = server_artifact(server_artifact_bytes)?;
        #[cfg(feature = "ckks")]
        let deployed = deploy::Deployed::new(artifact.clone(), "the embedded server artifact")?;
        Ok(Server {
            artifact,
            #[cfg(feature = "ckks")]
            deployed,
        })
    }

    /// Evaluates the plan on encrypted samples. Refuses ciphertexts of another key or build.
    pub fn run(&self, key: &EvalKey, inputs: &Ciphertexts) -> Result<Results, DriverError> {
        #[cfg(feature = "ckks")]
        {
            let digest = self.deployed.digest();
            if key.decoded.get().is_none() {
                let (k, _) = self.deployed.read_eval_key(&key.bytes)?;
                let _ = key.decoded.set((digest.to_string(), k));
            }
            let (used_with, k) = key.decoded.get().expect("decoded above");
            if used_with != digest {
                return Err(DriverError::Mismatch(
                    "this evaluation key was decoded for another build: make one EvalKey per build".into(),
                ));
            }
            Ok(Results(self.deployed.run(k, &key.fingerprint, &inputs.0)?))
        }
        #[cfg(not(feature = "ckks"))]
        {
            let _ = (key, inputs);
            no_feature()
        }
    }

    /// The same computation in the clear (the plan in floating point, no encryption noise): what
    /// `run` then `decrypt` give, within the build's stated error. For tests; any toolchain.
    pub fn simulate(&self, client_artifact_bytes: &[u8], values: &[f32]) -> Result<Vec<Vec<Values>>, DriverError> {
        let client = client_artifact(client_artifact_bytes)?;
        let x = samples(values, &client.input_shape)?;
        let loaded =
            Loaded::new(client, self.artifact.clone(), "the embedded client artifact", "the embedded server artifact")?;
        Ok(per_sample(&loaded.simulate(&x)?.0))
    }
}
