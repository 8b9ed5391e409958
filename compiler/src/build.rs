//! Compiling a model at build time, from a crate's `build.rs`, into artifacts in `OUT_DIR` and a typed
//! Rust module (as prost-build does for `.proto` files).
//!
//! ```toml
//! [dependencies]
//! fhec = { path = "../fhec/compiler" }
//! [build-dependencies]
//! fhec = { path = "../fhec/compiler" }
//! ```
//!
//! ```no_run
//! // build.rs: `fn main() {` this line `}`
//! fhec::build::Model::new("models/cancer.onnx").calibration("data/calib.npy").compile_or_exit();
//! ```
//!
//! ```ignore
//! // src/main.rs: the module is named after the model file (`cancer`), or set with `.name(..)`.
//! mod cancer { fhec::include_model!("cancer"); }
//!
//! let (client, eval_key) = cancer::Client::new()?;            // the data owner
//! let server = cancer::Server::new()?;                         // the cloud: never sees a secret key
//! let ct = client.encrypt(&[0.0; cancer::INPUT_LEN])?;        // input shape checked by the type
//! let result = server.run(&eval_key, &ct)?;
//! let prediction: cancer::Prediction = client.decrypt(&result)?.remove(0);
//! ```
//!
//! The generated module holds `INPUT_LEN`, `INPUT_SHAPE`, `Input = [f32; INPUT_LEN]`, `SCHEME`, a
//! `Prediction` struct with one typed field per model output, `Client` (key generation, `encrypt`,
//! `encrypt_batch`, `decrypt`, `load`/`secret_bytes` to keep keys) and `Server` (`run`, `simulate`),
//! over [`crate::embed`].
//!
//! `.scheme(Scheme::Ckks)` (or `Auto`, which picks by estimated time for `.batch(n)` samples) makes
//! a CKKS build: the same module, over [`crate::embed::ckks`], with `SAMPLES_PER_CIPHERTEXT`; a
//! batch of samples in (`encrypt_batch`, packed into as few ciphertexts as the layout allows), a
//! batch of predictions out, and `simulate_batch`. Its encrypted half needs fhec's `ckks` feature
//! (nightly) in the crate's `[dependencies]`; the build script itself needs no feature.
//!
//! Cargo integration: `rerun-if-changed` on the model and calibration files; the compiled artifacts are
//! cached under `OUT_DIR` keyed by the SHA-256 of the inputs and options, so a rerun with unchanged
//! contents does not recompile (`OUT_DIR/<name>.fhec/report.txt` has the compiler's report); failures
//! print the file, the node and the error, without a backtrace.

use crate::DriverError;
use crate::scheme::{Built as SchemeBuilt, Options, Scheme};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bumped whenever the generated code or the artifacts change shape: part of the cache key.
const CODEGEN_VERSION: u32 = 4;

/// A model to compile at build time.
pub struct Model {
    model: PathBuf,
    calibration: Option<PathBuf>,
    name: Option<String>,
    out_dir: Option<PathBuf>,
    options: Options,
}

/// What [`Model::compile`] produced.
#[derive(Debug)]
pub struct Built {
    /// The generated Rust module (`OUT_DIR/<name>.rs`).
    pub module: PathBuf,
    /// The artifact directory (`OUT_DIR/<name>.fhec`: client and server artifacts, reports).
    pub artifacts: PathBuf,
    /// False when the cache was up to date (nothing recompiled).
    pub recompiled: bool,
}

impl Model {
    pub fn new(model: impl AsRef<Path>) -> Model {
        Model {
            model: model.as_ref().to_path_buf(),
            calibration: None,
            name: None,
            out_dir: None,
            options: Options::default(),
        }
    }

    /// Calibration samples (`.npy`, samples along axis 0, each shaped like the model input). A
    /// pre-quantized model (ONNX QDQ or QOperator) compiles without: its input quantizer sets the
    /// input ranges.
    pub fn calibration(mut self, path: impl AsRef<Path>) -> Model {
        self.calibration = Some(path.as_ref().to_path_buf());
        self
    }

    /// The generated module's file name (`<name>.rs`); default: the model file's stem, or its
    /// directory's name when the stem is `model`.
    pub fn name(mut self, name: &str) -> Model {
        self.name = Some(name.to_string());
        self
    }

    /// Where to write (default: cargo's `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Model {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Points of agreement with the float model the compiled model may lose (see `fhec build`).
    pub fn accuracy_budget(mut self, points: f64) -> Model {
        self.options.tfhe.budget_points = points;
        self.options.ckks.budget_points = points;
        self
    }

    /// Tree ensembles: keep the thresholds on the server (`fhec build --private-thresholds`): one
    /// bootstrap per decision instead of the client computing them before encrypting.
    pub fn private_thresholds(mut self) -> Model {
        self.options.tfhe.optimize.client_decisions = false;
        self.options.ckks.optimize.client_decisions = false;
        self
    }

    /// The scheme (default TFHE; CKKS and Auto need calibration samples). See the module docs.
    pub fn scheme(mut self, scheme: Scheme) -> Model {
        self.options.scheme = scheme;
        self
    }

    /// Samples per request the crate will send (what `Scheme::Auto` optimizes for; default 1).
    pub fn batch(mut self, samples: usize) -> Model {
        self.options.batch = samples;
        self
    }

    fn module_name(&self) -> Result<String, DriverError> {
        let raw = match &self.name {
            Some(n) => n.clone(),
            None => {
                let stem = self.model.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
                match (stem, self.model.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str())) {
                    ("model", Some(dir)) => dir.to_string(),
                    _ => stem.to_string(),
                }
            }
        };
        let ident = identifier(&raw);
        if ident.is_empty() {
            return Err(DriverError::Usage(format!("cannot name a module after {raw:?}: use .name(..)")));
        }
        Ok(ident)
    }

    /// Compiles the model (unless the cache is up to date) and generates the module.
    pub fn compile(self) -> Result<Built, DriverError> {
        let in_build_script = std::env::var_os("OUT_DIR").is_some();
        let out_dir = match (&self.out_dir, std::env::var_os("OUT_DIR")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => {
                return Err(DriverError::Usage(
                    "OUT_DIR is not set: call compile() from a build script, or set .out_dir(..)".into(),
                ));
            }
        };
        // Without calibration samples, a pre-quantized model's input quantizer sets the input ranges.
        let calibration = self.calibration.clone();
        if in_build_script {
            println!("cargo:rerun-if-changed={}", self.model.display());
            if let Some(c) = &calibration {
                println!("cargo:rerun-if-changed={}", c.display());
            }
        }
        let name = self.module_name()?;
        let read = |p: &Path| std::fs::read(p).map_err(|e| DriverError::Io(format!("{}: {e}", p.display())));
        let model_bytes = read(&self.model)?;
        let cal_bytes = calibration.as_deref().map(read).transpose()?.unwrap_or_default();
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION"));
        h.update(CODEGEN_VERSION.to_le_bytes());
        h.update((model_bytes.len() as u64).to_le_bytes());
        h.update(&model_bytes);
        h.update(&cal_bytes);
        h.update(format!("{:?}", self.options));
        let key = fhec_runtime::artifact::hex(&h.finalize());
        let artifacts = out_dir.join(format!("{name}.fhec"));
        let module = out_dir.join(format!("{name}.rs"));
        let stamp = artifacts.join("build.sha256");
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == key) && module.is_file() {
            return Ok(Built { module, artifacts, recompiled: false });
        }
        let x = calibration.as_deref().map(crate::npy::read_samples).transpose()?;
        let outcome = crate::scheme::build(&self.model, x.as_ref(), &artifacts, &self.options, |_| ())?;
        let head = Head { name: &name, model: &self.model, key: &key, artifacts: &artifacts };
        let code = match &outcome.built {
            SchemeBuilt::Tfhe(_) => {
                let (client, post) = crate::tfhe::load_client(&artifacts)?;
                let (server, _) = crate::tfhe::load_server(&artifacts)?;
                generate_tfhe(&head, &client, &post, &server.circuit)
            }
            SchemeBuilt::Ckks(b) => {
                let post: fhec_ir::Module = b.client.postprocess.parse().map_err(|e: fhec_ir::IrError| {
                    DriverError::Artifact(format!("the build's post-processing: {e}"))
                })?;
                generate_ckks(&head, &b.client, &post)
            }
        };
        std::fs::write(&module, code).map_err(|e| DriverError::Io(format!("{}: {e}", module.display())))?;
        std::fs::write(&stamp, &key).map_err(|e| DriverError::Io(format!("{}: {e}", stamp.display())))?;
        Ok(Built { module, artifacts, recompiled: true })
    }

    /// For build scripts: compiles, or prints the error (file, node, what to change) and exits with
    /// status 1 so that cargo reports a failed build without a backtrace.
    pub fn compile_or_exit(self) -> Built {
        let model = self.model.clone();
        match self.compile() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: fhec could not compile {}: {e}", model.display());
                std::process::exit(1);
            }
        }
    }
}

/// `name` as a Rust identifier (snake case; a leading digit or a keyword gets a prefix).
fn identifier(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit())
        || ["type", "fn", "mod", "self", "super", "crate", "match", "ref", "move", "use"].contains(&s.as_str())
    {
        s.insert_str(0, "m_");
    }
    s.trim_matches('_').to_string()
}

/// What every generated module starts with: where it came from, and the artifacts it embeds.
struct Head<'a> {
    name: &'a str,
    model: &'a Path,
    key: &'a str,
    artifacts: &'a Path,
}

/// The module's common part: provenance, the input constants and type, the embedded artifacts, the
/// re-exported types of `runtime` (`::fhec::embed` or `::fhec::embed::ckks`), and `Prediction`.
fn common(c: &mut String, head: &Head, summary: &str, input_shape: &[usize], runtime: &str, post: &fhec_ir::Module) {
    let len: usize = input_shape.iter().product();
    let _ = writeln!(
        c,
        "// @generated by fhec::build from {} (inputs sha256 {}). Do not edit.",
        head.model.display(),
        head.key
    );
    let _ = writeln!(c, "// Module `{}`: {summary}.\n", head.name);
    // Everything lives in an inner module re-exported whole, so that the parts a crate does not use
    // raise no dead-code warnings there.
    let _ = writeln!(c, "pub use self::fhec_generated::*;\n\n#[allow(dead_code)]\nmod fhec_generated {{");
    let _ = writeln!(c, "/// Input values per sample (flattened; the model's input shape is [`INPUT_SHAPE`]).");
    let _ = writeln!(c, "pub const INPUT_LEN: usize = {len};");
    let _ = writeln!(c, "/// The model's input shape (with its batch dimension of 1).");
    let _ = writeln!(c, "pub const INPUT_SHAPE: &[usize] = &{input_shape:?};");
    let _ = writeln!(c, "/// One sample.\npub type Input = [f32; INPUT_LEN];");
    for file in ["client", "server"] {
        let _ = writeln!(
            c,
            "static {}_ARTIFACT: &[u8] = include_bytes!({:?});",
            file.to_uppercase(),
            head.artifacts.join(format!("{file}.fhec")).display().to_string()
        );
    }
    let _ =
        writeln!(c, "\npub use {runtime}::{{Ciphertexts, EvalKey, Results}};\npub use ::fhec::DriverError as Error;\n");
    // One field per model output.
    let mut fields = Vec::new();
    for (out_name, v) in post.outputs() {
        let ty = &post.node(*v).ty;
        let n: usize = ty.shape.iter().skip(usize::from(ty.shape.first() == Some(&1))).product();
        let (scalar, array) = match ty.dtype {
            fhec_ir::DType::F32 => ("f32", "f32_array"),
            fhec_ir::DType::I64 => ("i64", "i64_array"),
        };
        let mut field = identifier(out_name);
        if field.is_empty() || fields.iter().any(|(f, ..): &(String, String, String, String)| *f == field) {
            field = format!("output_{}", fields.len());
        }
        let (rust_ty, expr) = if n == 1 {
            (scalar.to_string(), format!("it.next().expect(\"output {out_name}\").{array}::<1>()[0]"))
        } else {
            (format!("[{scalar}; {n}]"), format!("it.next().expect(\"output {out_name}\").{array}::<{n}>()"))
        };
        fields.push((field, rust_ty, expr, out_name.clone()));
    }
    let _ = writeln!(
        c,
        "/// The model's outputs for one sample.\n#[derive(Clone, Debug, PartialEq)]\npub struct Prediction {{"
    );
    for (f, t, _, o) in &fields {
        let _ = writeln!(c, "    /// Model output {o:?}.\n    pub {f}: {t},");
    }
    let _ = writeln!(
        c,
        "}}\n\nfn prediction(outputs: Vec<::fhec::embed::Values>) -> Prediction {{\n    let mut it = outputs.into_iter();"
    );
    let _ = writeln!(c, "    Prediction {{");
    for (f, _, e, _) in &fields {
        let _ = writeln!(c, "        {f}: {e},");
    }
    let _ = writeln!(c, "    }}\n}}\n");
}

fn generate_tfhe(
    head: &Head,
    client: &fhec_runtime::ClientArtifact,
    post: &fhec_ir::Module,
    circuit: &fhec_runtime::Circuit,
) -> String {
    let mut c = String::new();
    let summary = format!("TFHE, {} PBS per sample under {}", circuit.pbs.len(), circuit.params);
    common(&mut c, head, &summary, &client.input_shape, "::fhec::embed", post);
    let _ = writeln!(c, "/// The scheme the model was compiled for.\npub const SCHEME: &str = \"tfhe\";");
    let _ = writeln!(
        c,
        "/// The tfhe-rs parameter set the model was compiled for.\npub const PARAMETER_SET: &str = {:?};",
        circuit.params.name()
    );
    let _ = writeln!(c, "/// Bootstraps per sample.\npub const PBS_COUNT: usize = {};\n", circuit.pbs.len());
    c.push_str(
        r#"/// The data owner's side: holds the secret key.
pub struct Client(::fhec::embed::Client);

impl Client {
    /// Generates a fresh key pair: keep the client, send the evaluation key to the server.
    pub fn new() -> Result<(Client, EvalKey), Error> {
        let (client, key) = ::fhec::embed::Client::generate(CLIENT_ARTIFACT)?;
        Ok((Client(client), key))
    }

    /// Restores a client from the bytes of [`Client::secret_bytes`] and [`EvalKey::to_bytes`].
    pub fn load(secret: &[u8], eval_key: &[u8]) -> Result<Client, Error> {
        Ok(Client(::fhec::embed::Client::load(CLIENT_ARTIFACT, secret, eval_key)?))
    }

    /// The secret key, to store on the client only.
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.0.secret_bytes()
    }

    pub fn encrypt(&self, x: &Input) -> Result<Ciphertexts, Error> {
        self.0.encrypt(x)
    }

    pub fn encrypt_batch(&self, xs: &[Input]) -> Result<Ciphertexts, Error> {
        self.0.encrypt(xs.as_flattened())
    }

    /// One prediction per encrypted sample.
    pub fn decrypt(&self, results: &Results) -> Result<Vec<Prediction>, Error> {
        Ok(self.0.decrypt(results)?.into_iter().map(prediction).collect())
    }
}

/// The server's side: evaluates on ciphertexts with the client's evaluation key.
pub struct Server(::fhec::embed::Server);

impl Server {
    pub fn new() -> Result<Server, Error> {
        Ok(Server(::fhec::embed::Server::load(SERVER_ARTIFACT)?))
    }

    pub fn run(&self, key: &EvalKey, inputs: &Ciphertexts) -> Result<Results, Error> {
        self.0.run(key, inputs)
    }

    /// The compiled circuit in the clear, without noise: what `run` computes, for tests.
    pub fn simulate(&self, x: &Input) -> Result<Prediction, Error> {
        Ok(prediction(self.0.simulate(CLIENT_ARTIFACT, x)?.remove(0)))
    }
}
}
"#,
    );
    c
}

fn generate_ckks(head: &Head, client: &crate::ckks::ClientArtifact, post: &fhec_ir::Module) -> String {
    let mut c = String::new();
    let layout = &client.layout;
    let summary = format!(
        "CKKS, ring 2^{}, {}, {} samples per ciphertext",
        layout.ring.log_n,
        layout.packing.name(),
        layout.samples_per_ciphertext
    );
    common(&mut c, head, &summary, &client.input_shape, "::fhec::embed::ckks", post);
    let _ = writeln!(c, "/// The scheme the model was compiled for.\npub const SCHEME: &str = \"ckks\";");
    let _ = writeln!(
        c,
        "/// Samples one ciphertext holds: a batch of up to this many costs as much as one sample.\npub const SAMPLES_PER_CIPHERTEXT: usize = {};\n",
        layout.samples_per_ciphertext
    );
    c.push_str(
        r#"/// The data owner's side: holds the secret key. Encrypting and decrypting need fhec's `ckks`
/// feature (nightly); without it [`Client::new`] says so.
pub struct Client(::fhec::embed::ckks::Client);

impl Client {
    /// Generates a fresh key pair: keep the client, send the evaluation key to the server.
    pub fn new() -> Result<(Client, EvalKey), Error> {
        let (client, key) = ::fhec::embed::ckks::Client::generate(CLIENT_ARTIFACT, SERVER_ARTIFACT)?;
        Ok((Client(client), key))
    }

    /// Restores a client from the bytes of [`Client::secret_bytes`] and [`EvalKey::to_bytes`].
    pub fn load(secret: &[u8], eval_key: &[u8]) -> Result<Client, Error> {
        Ok(Client(::fhec::embed::ckks::Client::load(CLIENT_ARTIFACT, secret, eval_key)?))
    }

    /// The secret key, to store on the client only.
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.0.secret_bytes()
    }

    /// Encrypts a batch of samples, packed into as few ciphertexts as the layout allows.
    pub fn encrypt_batch(&self, xs: &[Input]) -> Result<Ciphertexts, Error> {
        self.0.encrypt(xs.as_flattened())
    }

    /// One prediction per encrypted sample, in order.
    pub fn decrypt(&self, results: &Results) -> Result<Vec<Prediction>, Error> {
        Ok(self.0.decrypt(results)?.into_iter().map(prediction).collect())
    }
}

/// The server's side: runs the plan on ciphertexts with the client's evaluation key.
pub struct Server(::fhec::embed::ckks::Server);

impl Server {
    pub fn new() -> Result<Server, Error> {
        Ok(Server(::fhec::embed::ckks::Server::load(SERVER_ARTIFACT)?))
    }

    pub fn run(&self, key: &EvalKey, inputs: &Ciphertexts) -> Result<Results, Error> {
        self.0.run(key, inputs)
    }

    /// The plan in the clear, without encryption noise: what `run` computes within the build's
    /// stated error, for tests (any toolchain).
    pub fn simulate_batch(&self, xs: &[Input]) -> Result<Vec<Prediction>, Error> {
        Ok(self.0.simulate(CLIENT_ARTIFACT, xs.as_flattened())?.into_iter().map(prediction).collect())
    }
}
}
"#,
    );
    c
}

/// Includes the module generated for `name` by [`Model::compile`] (from `OUT_DIR`).
#[macro_export]
macro_rules! include_model {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $name, ".rs"));
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_rust_names() {
        assert_eq!(identifier("mlp-wine"), "mlp_wine");
        assert_eq!(identifier("Probabilities"), "probabilities");
        assert_eq!(identifier("2nd"), "m_2nd");
        assert_eq!(identifier("type"), "m_type");
    }
}

#[cfg(test)]
mod build_tests {
    use super::Model;
    use std::path::PathBuf;

    fn corpus(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testsuite").join(rel)
    }

    #[test]
    fn compiles_once_then_hits_the_cache_and_generates_a_typed_module() {
        let out = tempfile::tempdir().unwrap();
        let model = || {
            Model::new(corpus("models/logreg_cancer_torch/model.onnx"))
                .calibration(corpus("models/logreg_cancer_torch/inputs.npy"))
                .out_dir(out.path())
        };
        let first = model().compile().unwrap();
        assert!(first.recompiled);
        let code = std::fs::read_to_string(&first.module).unwrap();
        assert!(first.module.ends_with("logreg_cancer_torch.rs"), "{:?}", first.module);
        assert!(
            code.contains("pub const INPUT_LEN: usize = 30;") && code.contains("pub struct Prediction {"),
            "{code}"
        );
        assert!(!model().compile().unwrap().recompiled, "unchanged inputs hit the cache");
        assert!(model().accuracy_budget(0.5).compile().unwrap().recompiled, "other options recompile");
        assert!(model().private_thresholds().compile().unwrap().recompiled, "so does the thresholds' side");
    }

    #[test]
    fn a_ckks_build_generates_the_batch_api() {
        let out = tempfile::tempdir().unwrap();
        let model = || {
            Model::new(corpus("models/mlp_wine/model.onnx"))
                .calibration(corpus("models/mlp_wine/inputs.npy"))
                .out_dir(out.path())
        };
        let tfhe = std::fs::read_to_string(model().compile().unwrap().module).unwrap();
        assert!(tfhe.contains("pub const SCHEME: &str = \"tfhe\";") && tfhe.contains("::fhec::embed::Client"));
        let built = model().scheme(crate::scheme::Scheme::Ckks).compile().unwrap();
        assert!(built.recompiled, "another scheme recompiles");
        let code = std::fs::read_to_string(&built.module).unwrap();
        for part in [
            "pub const SCHEME: &str = \"ckks\";",
            "pub const SAMPLES_PER_CIPHERTEXT: usize = 8192;",
            "pub fn encrypt_batch(&self, xs: &[Input])",
            "pub fn simulate_batch(&self, xs: &[Input]) -> Result<Vec<Prediction>, Error>",
            "::fhec::embed::ckks::Server::load(SERVER_ARTIFACT)",
        ] {
            assert!(code.contains(part), "{part} missing from:\n{code}");
        }
        assert!(crate::ckks::is_ckks(&built.artifacts));
    }

    #[test]
    fn a_broken_model_names_the_file_and_the_node() {
        let out = tempfile::tempdir().unwrap();
        let err = Model::new(corpus("invalid/unsupported_op.onnx"))
            .calibration(corpus("invalid/unsupported_op.inputs.npy"))
            .out_dir(out.path())
            .compile()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported_op.onnx") && err.contains("node"), "{err}");
        let err =
            Model::new(corpus("models/mlp_wine/model.onnx")).out_dir(out.path()).compile().unwrap_err().to_string();
        assert!(err.contains("no calibration samples") && err.contains("does not quantize its input"), "{err}");
    }
}
