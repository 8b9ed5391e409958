//! Run-time support for models compiled into a crate by [`crate::build`]: the generated module wraps
//! these types with the model's shapes. Artifacts are embedded in the binary (`include_bytes!`).
//!
//! The server side ([`Server`], [`EvalKey`]) holds no secret material: an `EvalKey` is made only from
//! the bytes of a compressed evaluation key. CKKS builds have their own types in [`ckks`].

pub mod ckks;

use crate::DriverError;
use fhec_ir::{Module, Tensor};
use fhec_runtime::artifact::{self, Kind, Tagged};
use fhec_runtime::fhe::{self, CompressedEvalKey, InputCiphertexts, OutputCiphertexts, SecretKey};
use fhec_runtime::{ClientArtifact, ServerArtifact};

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], kind: Kind, what: &str) -> Result<(T, Vec<u8>), DriverError> {
    artifact::from_bytes(bytes, kind).map_err(|e| DriverError::Artifact(format!("{what} {e}")))
}

/// The embedded client artifact and its post-processing module.
fn client(bytes: &[u8]) -> Result<(ClientArtifact, Module), DriverError> {
    let what = "the embedded client artifact";
    let (artifact, _): (ClientArtifact, _) = decode(bytes, Kind::Client, what)?;
    let post = crate::tfhe::postprocess(&artifact, what)?;
    Ok((artifact, post))
}

fn encode<T: serde::Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    artifact::to_bytes(kind, value).expect("in-memory values serialize").0
}

/// Samples given one after another as an array of samples along axis 0, each shaped like the model
/// input (`input_shape`, whose leading 1 is the batch dimension).
fn samples(values: &[f32], input_shape: &[usize]) -> Result<ndarray::ArrayD<f32>, DriverError> {
    let len: usize = input_shape.iter().product();
    if len == 0 || !values.len().is_multiple_of(len) {
        return Err(DriverError::Shape(format!("{} values do not make whole samples of {len}", values.len())));
    }
    let mut shape = vec![values.len() / len];
    shape.extend(input_shape.iter().skip(usize::from(input_shape.first() == Some(&1))));
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), values.to_vec())
        .map_err(|e| DriverError::Shape(e.to_string()))
}

/// One model output of one sample, flattened.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn of(t: &Tensor) -> Values {
        match t.dtype() {
            fhec_ir::DType::F32 => Values::F32(t.to_f32_vec()),
            fhec_ir::DType::I64 => Values::I64(t.to_i64_vec()),
        }
    }

    /// The values as a fixed-size array (generated code knows the sizes from the same artifact).
    pub fn f32_array<const N: usize>(&self) -> [f32; N] {
        match self {
            Values::F32(v) => v.as_slice().try_into().expect("output size fixed at build time"),
            Values::I64(v) => std::array::from_fn(|i| v[i] as f32),
        }
    }

    pub fn i64_array<const N: usize>(&self) -> [i64; N] {
        match self {
            Values::I64(v) => v.as_slice().try_into().expect("output size fixed at build time"),
            Values::F32(v) => std::array::from_fn(|i| v[i] as i64),
        }
    }
}

/// The client: encodes, encrypts, decrypts and post-processes. Holds the secret key.
pub struct Client {
    artifact: ClientArtifact,
    post: Module,
    key: SecretKey,
    fingerprint: String,
}

/// The evaluation key, as the server receives it.
pub struct EvalKey {
    key: fhe::EvalKey,
    fingerprint: String,
    bytes: Vec<u8>,
}

/// Encrypted inputs of one or more samples, tagged with their key and model.
pub struct Ciphertexts(Tagged<InputCiphertexts>);

/// Encrypted results, tagged with their key and model.
pub struct Results(Tagged<OutputCiphertexts>);

/// The server: evaluates the circuit on ciphertexts with an evaluation key.
pub struct Server {
    artifact: ServerArtifact,
    digest: String,
}

impl Client {
    /// Loads the embedded client artifact and generates a fresh key pair: the client keeps the secret
    /// key, the evaluation key goes to the server.
    pub fn generate(client_artifact: &[u8]) -> Result<(Client, EvalKey), DriverError> {
        let (artifact, post) = client(client_artifact)?;
        let (key, compressed) = fhe::keygen(artifact.params);
        let (bytes, fingerprint) = artifact::eval_key_bytes(&compressed);
        let eval = EvalKey { key: compressed.decompress(), fingerprint: fingerprint.clone(), bytes };
        Ok((Client { artifact, post, key, fingerprint }, eval))
    }

    /// Values per sample.
    pub fn input_len(&self) -> usize {
        self.artifact.inputs.len()
    }

    /// Encrypts samples given one after another (`input_len()` values each).
    pub fn encrypt(&self, values: &[f32]) -> Result<Ciphertexts, DriverError> {
        let x = samples(values, &self.artifact.input_shape)?;
        Ok(Ciphertexts(crate::tfhe::encrypt(&self.artifact, &self.key, &self.fingerprint, &x)?))
    }

    /// Restores a client from its secret key and the matching evaluation key (the files `fhec keygen`
    /// and [`Client::secret_bytes`] / [`EvalKey::to_bytes`] write).
    pub fn load(client_artifact: &[u8], secret: &[u8], eval_key: &[u8]) -> Result<Client, DriverError> {
        let (artifact, post) = client(client_artifact)?;
        let (key, _): (SecretKey, _) = decode(secret, Kind::SecretKey, "the secret key")?;
        let (_, payload): (CompressedEvalKey, _) = decode(eval_key, Kind::EvalKey, "the evaluation key")?;
        if key.params() != artifact.params {
            return Err(DriverError::Mismatch(format!(
                "the secret key is for parameter set {}, this model needs {}",
                key.params(),
                artifact.params
            )));
        }
        Ok(Client { artifact, post, key, fingerprint: artifact::fingerprint(&payload) })
    }

    /// The secret key's bytes, to keep on the client only.
    pub fn secret_bytes(&self) -> Vec<u8> {
        encode(Kind::SecretKey, &self.key)
    }

    /// Decrypts and post-processes results: per sample, the model's outputs in order.
    pub fn decrypt(&self, results: &Results) -> Result<Vec<Vec<Values>>, DriverError> {
        let outs = crate::tfhe::decrypt_samples(&self.artifact, &self.post, &self.key, &self.fingerprint, &results.0)?;
        Ok(outs.iter().map(|o| o.iter().map(Values::of).collect()).collect())
    }
}

impl EvalKey {
    /// The bytes to send to the server.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as the server receives it (decompresses it: about a second).
    pub fn from_bytes(bytes: &[u8]) -> Result<EvalKey, DriverError> {
        let (compressed, payload): (CompressedEvalKey, _) = decode(bytes, Kind::EvalKey, "the evaluation key")?;
        Ok(EvalKey {
            key: compressed.decompress(),
            fingerprint: artifact::fingerprint(&payload),
            bytes: bytes.to_vec(),
        })
    }
}

impl Ciphertexts {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::Inputs, &self.0)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Ciphertexts, DriverError> {
        Ok(Ciphertexts(decode(bytes, Kind::Inputs, "the ciphertexts")?.0))
    }

    pub fn samples(&self) -> usize {
        self.0.samples
    }
}

impl Results {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(Kind::Outputs, &self.0)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Results, DriverError> {
        Ok(Results(decode(bytes, Kind::Outputs, "the results")?.0))
    }
}

impl Server {
    /// Loads the embedded server artifact (the circuit).
    pub fn load(server_artifact: &[u8]) -> Result<Server, DriverError> {
        let (artifact, _): (ServerArtifact, _) = decode(server_artifact, Kind::Server, "the embedded server artifact")?;
        artifact.circuit.validate()?;
        let digest = artifact.digest();
        Ok(Server { artifact, digest })
    }

    /// Evaluates the model on encrypted samples. Refuses ciphertexts of another key or model.
    pub fn run(&self, key: &EvalKey, inputs: &Ciphertexts) -> Result<Results, DriverError> {
        Ok(Results(crate::tfhe::run(&self.artifact, &self.digest, &key.key, &key.fingerprint, &inputs.0)?))
    }

    /// The same computation in the clear (the circuit's integer semantics, no noise): what `run` then
    /// `decrypt` give, up to the noise model. For tests.
    pub fn simulate(&self, client_artifact: &[u8], values: &[f32]) -> Result<Vec<Vec<Values>>, DriverError> {
        let (artifact, post) = client(client_artifact)?;
        let len = artifact.inputs.len().max(1);
        let xs = values
            .chunks(len)
            .map(|x| {
                Tensor::from_f32(artifact.input_shape.clone(), x.to_vec())
                    .ok_or_else(|| DriverError::Shape(format!("{} values for a sample of {len}", x.len())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (sim, _) = fhec_lower::Simulator::new(&self.artifact.circuit, fhec_lower::Engine::Auto, xs.len());
        let outs = crate::tfhe::simulate_samples(&artifact, &post, &sim, &xs, None)?;
        Ok(outs.iter().map(|o| o.iter().map(Values::of).collect()).collect())
    }
}
