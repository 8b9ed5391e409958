//! Fuzz targets: every parser and decoder fhec runs on bytes from outside, as functions of arbitrary
//! bytes. `fuzz/` (cargo-fuzz, libFuzzer, nightly) drives them coverage-guided; `tests/fuzz.rs` replays
//! their committed seed corpora and deterministic mutations of them in `cargo test`.
//!
//! A target fails by panicking (or by aborting on an allocation: the fuzzer runs with an RSS bound).
//! Errors are the expected outcome; where a decoder accepts, the target checks a property of what it
//! accepted (the IR text parses back to itself, an accepted circuit validates, an accepted evaluation
//! key conforms to its parameter set).

use fhec_runtime::artifact::{self, ClientArtifact, Kind, ServerArtifact, Tagged};
use fhec_runtime::fhe::{CompressedEvalKey, InputCiphertexts, OutputCiphertexts, SecretKey};
use std::sync::Once;

/// A fuzz target: arbitrary bytes in; it returns, or panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and of `fuzz/corpus/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("onnx", onnx),
    ("ir_text", ir_text),
    ("neuron_text", neuron_text),
    ("npy", npy),
    ("envelope", envelope),
    ("http", http),
];

/// Bounds small enough that one input cannot take the fuzzer's memory (the defaults allow 1 GiB tensors).
fn small_limits() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        fhec_ir::limits::set_limits(fhec_ir::Limits {
            max_tensor_elements: 1 << 16,
            max_graph_nodes: 4096,
            max_encrypted_values: 1 << 16,
            ..fhec_ir::Limits::default()
        })
    });
}

/// ONNX bytes -> IR or an error; an imported module verifies, and its float reference runs (or
/// refuses) on a zero input.
pub fn onnx(data: &[u8]) {
    small_limits();
    let Ok(m) = fhec_onnx::load_bytes(data, "fuzz", None) else { return };
    m.verify().expect("an imported module verifies");
    let inputs: Vec<fhec_ir::Tensor> = m
        .inputs()
        .iter()
        .map(|&v| {
            let shape = m.node(v).ty.shape.clone();
            let n = fhec_ir::numel(&shape);
            fhec_ir::Tensor::from_f32(shape, vec![0.0; n]).expect("sized")
        })
        .collect();
    let _ = fhec_interp::run(&m, &inputs);
}

/// IR text -> module or an error; an accepted module that verifies prints (in full) to text that
/// parses back to the same text.
pub fn ir_text(data: &[u8]) {
    small_limits();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(m) = text.parse::<fhec_ir::Module>() else { return };
    if m.verify().is_err() {
        return;
    }
    let printed = m.to_text(fhec_ir::DataMode::Full);
    let again: fhec_ir::Module =
        printed.parse().unwrap_or_else(|e| panic!("printed IR does not parse: {e}\n{printed}"));
    assert_eq!(again.to_text(fhec_ir::DataMode::Full), printed, "IR text does not round-trip");
}

/// Neuron-graph text -> graph or an error; an accepted graph verifies or says why not.
pub fn neuron_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(n) = text.parse::<fhec_lower::neurons::Neurons>() {
        let _ = n.verify();
    }
}

/// `.npy` bytes -> samples or an error.
pub fn npy(data: &[u8]) {
    let _ = fhec::npy::samples_from_bytes(data);
}

/// The kinds of TFHE envelope the CLI and the service read, with what each is decoded as.
const KINDS: [Kind; 7] =
    [Kind::Client, Kind::Server, Kind::EvalKey, Kind::SecretKey, Kind::Inputs, Kind::Outputs, Kind::SealedSecretKey];

/// Envelopes: the first byte picks a kind and whether the rest is a whole file (checksum and all,
/// as an attacker sends it) or a payload that this target wraps with its checksum (so that the
/// fuzzer reaches the payload decoders). Whatever decodes is checked as the CLI and the service check it.
pub fn envelope(data: &[u8]) {
    small_limits();
    let Some((&head, rest)) = data.split_first() else { return };
    let kind = KINDS[usize::from(head & 0x7f) % KINDS.len()];
    let bytes = if head & 0x80 != 0 { rest.to_vec() } else { artifact::wrap_payload(kind, rest.to_vec()) };
    match kind {
        Kind::Client => {
            if let Ok((client, _)) = artifact::from_bytes::<ClientArtifact>(&bytes, kind) {
                let _ = fhec::tfhe::preprocess(&client, "fuzz");
                let _ = fhec::tfhe::postprocess(&client, "fuzz");
            }
        }
        Kind::Server => {
            if let Ok((server, _)) = artifact::from_bytes::<ServerArtifact>(&bytes, kind)
                && server.circuit.validate().is_ok()
            {
                let _ = server.circuit.levels();
                let _ = fhec::tfhe::estimated_latency_ms(&server.circuit, 2);
            }
        }
        Kind::EvalKey => {
            // What the service does with an upload: decode, check conformance. Only a conforming key
            // is ever decompressed, and fhec's own keys are the only ones that conform here.
            if let Ok(up) = fhec_serve::keystore::decode_upload(&bytes)
                && let fhec_serve::keystore::Uploaded::Tfhe(key) = up.key
            {
                assert!(key.check().is_ok(), "decode_upload accepted a key that does not conform");
            }
            let _ = artifact::from_bytes::<CompressedEvalKey>(&bytes, kind);
        }
        Kind::SecretKey => {
            let _ = artifact::from_bytes::<SecretKey>(&bytes, kind);
        }
        Kind::Inputs => {
            if let Ok((cts, _)) = artifact::from_bytes::<Tagged<InputCiphertexts>>(&bytes, kind)
                && cts.data.len() <= 1 << 12
            {
                // The LWE size of the fixture's parameter set (what `run_batch` checks against).
                if cts.data.check(f_lwe_size()).is_ok() {
                    let _ = cts.data.expand();
                }
            }
        }
        Kind::Outputs => {
            if let Ok((cts, _)) = artifact::from_bytes::<Tagged<OutputCiphertexts>>(&bytes, kind) {
                let _ = cts.data.len();
            }
        }
        _ => {
            let pass = fhec::keyfile::Protection::Passphrase(zeroize::Zeroizing::new("fuzz".into()));
            let _ = fhec::keyfile::open(&bytes, &pass, "secret.key");
            let _ = fhec::keyfile::open(&bytes, &fhec::keyfile::Protection::None, "secret.key");
        }
    }
}

/// The LWE size a 2048-position key's ciphertexts have (the sets fhec uses most).
fn f_lwe_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let (sk, _) = fhec_runtime::fhe::keygen(fhec_runtime::ParamSet::P2048B);
        let cts = sk.encrypt(&[0]);
        cts.expand().expect("fresh ciphertexts expand")[0].lwe_size().0
    })
}

/// HTTP requests driven through the service's router in-process (a served model and a stored key
/// from a fixture made once): the first bytes pick the method, route and headers, the rest is the
/// body. Every answer must be a status the API documents, never a 500.
pub fn http(data: &[u8]) {
    let f = http_fixture();
    let Some((&head, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (line, body) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let line = String::from_utf8_lossy(line);
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    let method = methods[usize::from(head & 7) % methods.len()];
    let path = match head >> 3 & 7 {
        0 => format!("/v1/models/iris/infer?key={}", f.key_id),
        1 => "/v1/keys".to_string(),
        2 => format!("/v1/keys/{}", f.key_id),
        3 => "/v1/models/iris/jobs".to_string(),
        _ => format!("/{}", line.trim_start_matches('/')),
    };
    let mut request = axum::http::Request::builder().method(method).uri(path.as_str());
    if head & 0x40 != 0 {
        request = request.header("authorization", format!("Bearer {TOKEN}"));
    }
    if head & 0x80 != 0 {
        request = request.header("content-length", body.len().to_string());
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else { return };
    let status = f.runtime.block_on(async {
        use tower::ServiceExt as _;
        let response = f.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 24).await;
        status
    });
    assert!(status.as_u16() != 500, "{method} {path}: answered 500");
}

const TOKEN: &str = "fuzz-token-0123456789";

struct HttpFixture {
    _tmp: tempfile::TempDir,
    router: axum::Router,
    runtime: tokio::runtime::Runtime,
    key_id: String,
}

fn http_fixture() -> &'static HttpFixture {
    static F: std::sync::OnceLock<HttpFixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path();
        let model = crate::root().join("models/mlp_iris_skl");
        let cal = fhec::npy::read_samples(&model.join("inputs.npy")).expect("iris samples");
        let dir = root.join("iris.fhec");
        fhec::tfhe::build(&model.join("model.onnx"), Some(&cal), &dir, &Default::default(), |_| ())
            .expect("iris builds");
        let (client, _) = fhec::tfhe::load_client(&dir).expect("iris client");
        let keys = root.join("keys");
        fhec::tfhe::keygen(&keys, client.params, &fhec::keyfile::Protection::None).expect("keygen");
        std::fs::write(root.join("tokens"), format!("fuzz {TOKEN}\n")).expect("tokens");
        let auth = fhec_serve::Auth::from_file(&root.join("tokens")).expect("tokens file");
        let config = fhec_serve::Config::new(vec![("iris".into(), dir)], root.join("store"), auth);
        let app = fhec_serve::App::new(config).expect("the app starts");
        let upload = std::fs::read(keys.join("eval.key")).expect("eval.key");
        let up = fhec_serve::keystore::decode_upload(&upload).expect("a valid key");
        let key_id = up.id.clone();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let router = app.router();
        let put = axum::http::Request::builder()
            .method("PUT")
            .uri("/v1/keys")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(axum::body::Body::from(upload))
            .expect("a request");
        let status = runtime.block_on(async {
            use tower::ServiceExt as _;
            router.clone().oneshot(put).await.expect("infallible").status()
        });
        assert!(status.is_success(), "the fixture key upload answered {status}");
        HttpFixture { _tmp: tmp, router, runtime, key_id }
    })
}
