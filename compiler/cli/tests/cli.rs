//! The `fhec` binary as a user runs it: exit codes, files written, and the messages of the error paths.

use std::path::PathBuf;
use std::process::{Command, Output};

fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testsuite").join(rel)
}

fn fhec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhec")).args(args).output().expect("fhec runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_prints_the_ir() {
    let o = fhec(&["inspect", corpus("models/mlp_wine/model.onnx").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("module \"model\"\n"), "{out}");
    assert!(out.contains("= input \"") && out.contains(": enc<f32>[1,13]"), "{out}");
    assert!(out.contains("elided>"), "constants are elided by default");
}

#[test]
fn inspect_full_parses_back() {
    let o = fhec(&["inspect", "--full", corpus("models/cnn_digits/model.onnx").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: fhec_ir::Module = String::from_utf8(o.stdout).unwrap().parse().unwrap();
    m.verify().unwrap();
}

#[test]
fn predict_writes_the_reference_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("y.npy");
    let o = fhec(&[
        "predict",
        corpus("models/logreg_cancer_skl/model.onnx").to_str().unwrap(),
        "--input",
        corpus("models/logreg_cancer_skl/inputs.npy").to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // First output to y.npy, the second beside it, named after the output.
    let files: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let got: ndarray::ArrayD<i64> = ndarray_npy::read_npy(&y).unwrap();
    let want: ndarray::ArrayD<i64> = ndarray_npy::read_npy(corpus("models/logreg_cancer_skl/expected_0.npy")).unwrap();
    assert_eq!(got, want);
}

#[test]
fn unsupported_op_names_node_op_and_supported_list() {
    let o = fhec(&["inspect", corpus("invalid/unsupported_op.onnx").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("my_topk") && e.contains("TopK") && e.contains("supported ops:") && e.contains("Conv"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn broken_files_are_clear_errors() {
    for (file, needle) in [
        ("invalid/truncated.onnx", "not a valid ONNX protobuf"),
        ("invalid/not_onnx.onnx", "ONNX"),
        ("invalid/does_not_exist.onnx", "cannot read"),
    ] {
        let o = fhec(&["inspect", corpus(file).to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{file}: {e}");
        assert!(e.contains(needle) && !e.contains("panicked"), "{file}: {e}");
    }
}

/// A few bytes that declare 10^10 to 10^12 elements are refused before anything that size is
/// allocated (each used to abort the process on a failed allocation); the flags move the bounds.
#[test]
fn huge_declared_tensors_are_refused_before_they_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.fhec");
    for (file, needle) in [
        ("huge_initializer", "initializer \"W\""),
        ("huge_input", "input \"x\""),
        ("huge_constant_of_shape", "(ConstantOfShape)"),
        ("huge_tile", "(Tile)"),
        ("huge_range", "(Range)"),
    ] {
        let model = corpus(&format!("invalid/{file}.onnx"));
        let o = fhec(&["build", model.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{file}: {e}");
        assert!(e.contains(needle) && e.contains("--max-tensor-elements") && !e.contains("panicked"), "{file}: {e}");
    }
    // Lower bounds refuse what the defaults allow: a corpus model's 30 inputs, its 3 nodes, its circuit.
    let model = corpus("models/logreg_cancer_torch/model.onnx");
    let cal = corpus("models/logreg_cancer_torch/inputs.npy");
    for (flag, needle) in [
        ("--max-tensor-elements=16", "elements per tensor"),
        ("--max-graph-nodes=1", "nodes per graph"),
        ("--max-encrypted-values=8", "encrypted values"),
    ] {
        let args = [flag, "build", model.to_str().unwrap(), "--calibration", cal.to_str().unwrap(), "-o"];
        let o = fhec(&[&args[..], &[out.to_str().unwrap()]].concat());
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{flag}: {e}");
        assert!(e.contains(needle) && e.contains(flag.split('=').next().unwrap()), "{flag}: {e}");
    }
}

#[test]
fn wrong_input_shape_names_the_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let o = fhec(&[
        "predict",
        corpus("models/logreg_cancer_torch/model.onnx").to_str().unwrap(),
        "--input",
        corpus("invalid/wrong_shape.npy").to_str().unwrap(),
        "--output",
        dir.path().join("y.npy").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("[4, 29]") && e.contains("[N, 30]"), "{e}");
}

#[test]
fn build_reports_its_choice_and_refuses_bad_parameter_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wine.fhec");
    let model = corpus("models/mlp_wine/model.onnx");
    let cal = corpus("models/mlp_wine/inputs.npy");
    let (model, cal, out_s) = (model.to_str().unwrap(), cal.to_str().unwrap(), out.to_str().unwrap());
    let o = fhec(&["--quiet", "build", model, "--calibration", cal, "-o", out_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["pbs_count", "parameter_set", "estimated_latency_ms", "layers", "fidelity_percent", "within_budget"] {
        assert!(report.get(key).is_some(), "report.json lacks {key}: {report}");
    }
    assert_eq!(report["pbs_count"], 48);
    // Where each layer's input bits go; the wine MLP lands on the cheapest set, so no cheaper set is listed.
    assert_eq!(report["bias_correction"], true);
    assert_eq!(report["parameter_set"], "V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40", "{report}");
    for l in report["layers"].as_array().unwrap() {
        let (margin, window) = (l["noise_margin_bits"].as_f64().unwrap(), l["window_bits"].as_f64().unwrap());
        assert!(margin > 0.0 && margin < 1.0 && window >= 0.0, "{l}");
    }
    assert_eq!(report["cheaper_sets"].as_array().unwrap().len(), 0, "{report}");
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("noise margin") && !text.contains("cheaper sets:"), "{text}");
    // The iris MLP needs the 1024-position set: the report says what the two 512-position sets reached.
    let iris = dir.path().join("iris.fhec");
    let o = fhec(&[
        "--quiet",
        "build",
        corpus("models/mlp_iris_skl/model.onnx").to_str().unwrap(),
        "--calibration",
        corpus("models/mlp_iris_skl/inputs.npy").to_str().unwrap(),
        "-o",
        iris.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(iris.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["parameter_set"], "V1_2_PARAM_MESSAGE_2_CARRY_1_KS_PBS_GAUSSIAN_2M128", "{report}");
    let cheaper = report["cheaper_sets"].as_array().unwrap();
    assert_eq!(cheaper.len(), 2, "{report}");
    assert!(
        cheaper.iter().all(|c| c["positions"] == 512 && c["outcome"].as_str().unwrap().starts_with("best ")),
        "{report}"
    );
    let text = std::fs::read_to_string(iris.join("report.txt")).unwrap();
    assert!(text.contains("cheaper sets: 512 positions"), "{text}");
    let o = fhec(&["build", model, "--calibration", cal, "-o", out_s, "--params", "PARAM_NONE"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("unknown parameter set \"PARAM_NONE\"; known: V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40"),
        "{}",
        stderr(&o)
    );
    let o = fhec(&["build", model, "--calibration", cal, "-o", out_s, "--failure-log2", "5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--failure-log2 must be between"), "{}", stderr(&o));
    // A float model needs calibration samples; a pre-quantized one takes its input ranges from its
    // own input quantizer.
    let o = fhec(&["build", model, "-o", out_s]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no calibration samples, and the model does not quantize its input itself"),
        "{}",
        stderr(&o)
    );
    let qdq = corpus("models/mlp_wine_qdq/model.onnx");
    let o = fhec(&["--quiet", "build", qdq.to_str().unwrap(), "-o", out_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["calibration"]["source"], "input_quantizer", "{report}");
    assert!(report["quantized_output_steps"]["within_one_percent"].is_number(), "{report}");
}

#[test]
fn bench_reports_latency_throughput_and_the_physical_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.fhec");
    let json = dir.path().join("bench.json");
    let model = corpus("models/logreg_cancer_torch/model.onnx");
    let x = corpus("models/logreg_cancer_torch/inputs.npy");
    let o = fhec(&[
        "--quiet",
        "build",
        model.to_str().unwrap(),
        "--calibration",
        x.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fhec(&[
        "--quiet",
        "--threads",
        "2",
        "bench",
        out.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--runs",
        "3",
        "--batch",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("latency per sample: median") && text.contains("physical limit on 2 threads"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["pbs_count"], 0);
    assert_eq!(report["batch"], 8);
    assert!(report["latency_ms"]["min"].as_f64().unwrap() <= report["latency_ms"]["median"].as_f64().unwrap());
    assert!(report["pbs_ms"].as_f64().unwrap() > 0.0);
}

/// Builds logistic regression (fast: no bootstrap) into `dir`.
fn build_logreg(dir: &std::path::Path) {
    let o = fhec(&[
        "--quiet",
        "build",
        corpus("models/logreg_cancer_torch/model.onnx").to_str().unwrap(),
        "--calibration",
        corpus("models/logreg_cancer_torch/inputs.npy").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn fhec_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fhec"));
    c.args(args).env_remove("FHEC_PASSPHRASE").env_remove("FHEC_SERVER").env_remove("FHEC_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("fhec runs")
}

#[test]
fn secret_keys_can_be_sealed_with_a_passphrase_or_a_key_management_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logreg.fhec");
    build_logreg(&dir);
    let (d, x) = (dir.to_str().unwrap(), corpus("models/logreg_cancer_torch/inputs.npy"));
    let keys = tmp.path().join("keys");
    let k = keys.to_str().unwrap();
    let o = fhec_env(&["keygen", d, "--keys", k], &[("FHEC_PASSPHRASE", "correct horse battery staple")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(keys.join("secret.key")).unwrap();
    assert_eq!(fhec_runtime::artifact::peek_kind(&bytes), Some(fhec_runtime::artifact::Kind::SealedSecretKey));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(keys.join("secret.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let ct = tmp.path().join("ct");
    let encrypt = ["encrypt", d, "--keys", k, "--input", x.to_str().unwrap(), "--output", ct.to_str().unwrap()];
    let o = fhec_env(&encrypt, &[]);
    assert!(
        !o.status.success() && stderr(&o).contains("encrypted with a passphrase: set FHEC_PASSPHRASE"),
        "{}",
        stderr(&o)
    );
    let o = fhec_env(&encrypt, &[("FHEC_PASSPHRASE", "wrong")]);
    assert!(!o.status.success() && stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    let o = fhec_env(&encrypt, &[("FHEC_PASSPHRASE", "correct horse battery staple")]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A key-management command wraps the data key (base64 stands in for a KMS here).
    let keys2 = tmp.path().join("keys2");
    let wrap = ["--key-wrap-command", "base64", "--key-unwrap-command", "base64 -d"];
    let o = fhec_env(&[&["keygen", d, "--keys", keys2.to_str().unwrap()][..], &wrap[..]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let encrypt2 = [
        "encrypt",
        d,
        "--keys",
        keys2.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        ct.to_str().unwrap(),
    ];
    let o = fhec_env(&[&encrypt2[..], &wrap[..]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fhec_env(&[&encrypt2[..], &["--key-unwrap-command", "false"][..]].concat(), &[]);
    assert!(!o.status.success() && stderr(&o).contains("key-unwrap command \"false\" failed"), "{}", stderr(&o));
    let o = fhec_env(&encrypt2, &[]);
    assert!(!o.status.success() && stderr(&o).contains("--key-unwrap-command"), "{}", stderr(&o));
}

/// The command line of `deploy/kubernetes/base/deployment.yaml`, with and without the TLS overlay's
/// flags, parses: running it here fails on the missing tokens file, not on a flag.
#[test]
fn the_kubernetes_command_line_parses() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/base/deployment.yaml"),
    )
    .unwrap();
    let args: Vec<String> = text
        .lines()
        .skip_while(|l| l.trim() != "args:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").to_string())
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    // The TLS overlay appends flags: they parse too.
    let overlay = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/tls/kustomization.yaml"),
    )
    .unwrap();
    let added: Vec<String> = overlay
        .lines()
        .filter(|l| l.contains("/containers/0/args/-"))
        .filter_map(|l| l.split("value: ").nth(1).map(|v| v.trim_end_matches(" }").trim().to_string()))
        .collect();
    assert_eq!(added.len(), 2, "{added:?}");
    for extra in [vec![], added] {
        let all: Vec<&str> = args.iter().chain(&extra).map(String::as_str).collect();
        let o = fhec(&all);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("/etc/fhec/tokens"), "{}", stderr(&o));
    }
}

type Lines = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// A server process, killed if the test ends (or fails) before it stops.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fhec serve ARGS --listen 127.0.0.1:0` in its own process: the process, its log lines, and the
/// address it bound (from its "serving" line).
fn serve(args: &[&str]) -> (Serving, Lines, String) {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_fhec"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.contains("serving")
                .then(|| l.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string())
        })
        .expect("the server logs its address");
    (Serving(server), lines, addr)
}

/// A user's whole path: `fhec serve` in one process, `fhec client` and `fhec predict --server` in
/// others, then SIGTERM: the server drains and exits cleanly.
#[test]
fn serve_and_predict_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logreg.fhec");
    build_logreg(&dir);
    let keys = tmp.path().join("keys");
    let o = fhec(&["--quiet", "keygen", dir.to_str().unwrap(), "--keys", keys.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A self-signed certificate for 127.0.0.1, which the client trusts through --ca-cert.
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let ca = cert.to_str().unwrap();
    let store = tmp.path().join("store");
    let (mut server, lines, addr) = serve(&[
        dir.to_str().unwrap(),
        "--allow-anonymous",
        "--tls-cert",
        ca,
        "--tls-key",
        key.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    let url = format!("https://{addr}");
    let o = fhec(&["client", "--server", &url, "models"]);
    assert!(!o.status.success() && stderr(&o).contains("UnknownIssuer"), "{}", stderr(&o));
    let o = fhec(&["client", "--server", &url, "--ca-cert", ca, "models"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("logreg: TFHE, 30 inputs"),
        "{}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let o = fhec(&[
        "predict",
        dir.to_str().unwrap(),
        "--server",
        &url,
        "--ca-cert",
        ca,
        "--keys",
        keys.to_str().unwrap(),
        "--input",
        corpus("models/logreg_cancer_torch/inputs.npy").to_str().unwrap(),
        "--labels",
        corpus("models/logreg_cancer_torch/labels.npy").to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && out.contains("accuracy"), "{}{out}", stderr(&o));
    let o = fhec(&["client", "--server", &url, "--ca-cert", ca, "keys"]);
    let id = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(id.len(), 64);
    let o = fhec(&["client", "--server", &url, "--ca-cert", ca, "delete", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fhec(&["client", "--server", &url, "--ca-cert", ca, "delete", &id]);
    assert!(!o.status.success() && stderr(&o).contains("no key"), "{}", stderr(&o));
    // SIGTERM: graceful shutdown, exit status 0.
    Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(server.0.wait().unwrap().success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("draining")), "{rest:?}");
}

#[test]
fn ckks_builds_simulate_and_auto_picks_the_scheme_for_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (model, x, labels) = (
        corpus("models/mlp_wine/model.onnx"),
        corpus("models/mlp_wine/inputs.npy"),
        corpus("models/mlp_wine/labels.npy"),
    );
    let (model, x, labels) = (model.to_str().unwrap(), x.to_str().unwrap(), labels.to_str().unwrap());
    let out = dir.path().join("wine-ckks");
    let o = fhec(&["--quiet", "build", model, "--calibration", x, "--scheme", "ckks", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The same envelopes as TFHE's, of CKKS kinds: the client's holds no weights, the server's the plan.
    assert!(fhec::ckks::is_ckks(&out) && out.join("server.fhec").is_file() && !out.join("ckks.json").exists());
    let client = fhec::ckks::load_client(&out).unwrap();
    assert_eq!(
        (client.layout.samples_per_ciphertext, client.layout.n_inputs(), client.layout.n_outputs),
        (8192, 13, 3)
    );
    let (server, _): (fhec::ckks::ServerArtifact, _) =
        fhec_runtime::artifact::load(&out.join("server.fhec"), fhec_runtime::artifact::Kind::CkksServer).unwrap();
    assert_eq!(client.plan_digest, server.digest());
    assert!(std::fs::metadata(out.join("client.fhec")).unwrap().len() < 4096);
    // Without the `ckks` feature, the deployment commands say how to get an fhec that has it.
    if !cfg!(feature = "ckks") {
        let o = fhec(&["keygen", out.to_str().unwrap(), "--keys", dir.path().join("k").to_str().unwrap()]);
        assert!(!o.status.success() && stderr(&o).contains("--features ckks"), "{}", stderr(&o));
    }
    // The TFHE service given a CKKS build says which scheme it has.
    let e = fhec::tfhe::load_server(&out).err().unwrap().to_string();
    assert!(e.contains("this is a CKKS build"), "{e}");
    // An older fhec's CKKS build (ckks.json) asks for a rebuild.
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("ckks.json"), "{}").unwrap();
    let o = fhec(&["predict", old.to_str().unwrap(), "--input", x]);
    assert!(!o.status.success() && stderr(&o).contains("rebuild the model"), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scheme"], "ckks");
    assert_eq!(report["ring"]["log_n"], 14);
    assert_eq!(report["polynomials"], 48);
    let o = fhec(&["predict", out.to_str().unwrap(), "--input", x, "--labels", labels]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("accuracy 100.00% (45/45)") && text.contains("simulated CKKS"), "{text}");
    // Without the `ckks` feature an encrypted run says how to get one.
    if !cfg!(feature = "ckks") {
        let o = fhec(&["predict", out.to_str().unwrap(), "--mode", "fhe", "--input", x]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--features ckks"), "{}", stderr(&o));
        let o = fhec(&["bench", out.to_str().unwrap(), "--input", x]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--features ckks"), "{}", stderr(&o));
    }
    // The polynomial of each activation layer is reported, with the e-graph's rules that offered it.
    assert_eq!(report["layers"].as_array().unwrap().len(), 2);
    assert!(
        report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["degree"].as_u64().is_some_and(|d| d >= 7) && l["fit"].is_string()),
        "{report}"
    );
    assert_eq!(report["rules_fired"].as_array().unwrap().len(), 8, "{report}");
    // --polynomial-fit narrows the rules: interpolation alone.
    let cheb = dir.path().join("wine-cheb");
    let o = fhec(&[
        "--quiet",
        "build",
        model,
        "--calibration",
        x,
        "--scheme",
        "ckks",
        "--polynomial-fit",
        "chebyshev",
        "-o",
        cheb.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cheb.join("report.json")).unwrap()).unwrap();
    assert!(json["layers"].as_array().unwrap().iter().all(|l| l["fit"] == "chebyshev"), "{json}");
    assert!(
        json["rules_fired"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["rule"].as_str().unwrap().starts_with("activation-to-chebyshev-")),
        "{json}"
    );
    let o = fhec(&["build", model, "--polynomial-fit", "least-squares", "-o", dir.path().join("z").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("--polynomial-fit is for CKKS"), "{}", stderr(&o));
    // CKKS needs real samples for its windows.
    let o = fhec(&["build", model, "--scheme", "ckks", "-o", dir.path().join("x").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("needs calibration samples"), "{}", stderr(&o));
    // Feature-major packing: the report says so; the simulation is unchanged in accuracy; --packing
    // auto keeps feature-major for a few samples and batch-major for thousands.
    for (packing, batch, kept) in
        [("feature-major", "1", "feature-major"), ("auto", "8", "feature-major"), ("auto", "8192", "batch-major")]
    {
        let out = dir.path().join(format!("wine-{packing}-{batch}"));
        let o = fhec(&[
            "--quiet",
            "build",
            model,
            "--calibration",
            x,
            "--scheme",
            "ckks",
            "--packing",
            packing,
            "--batch",
            batch,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["packing"], kept, "--packing {packing} --batch {batch}");
        let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
        assert_eq!(text.starts_with("packing (--packing auto"), packing == "auto", "{text}");
        if kept == "feature-major" {
            assert!(text.contains("one sample per block of 32 slots, 256 samples per ciphertext"), "{text}");
            let o = fhec(&["predict", out.to_str().unwrap(), "--input", x, "--labels", labels]);
            assert!(String::from_utf8_lossy(&o.stdout).contains("accuracy 100.00% (45/45)"), "{}", stderr(&o));
        }
    }
    // Another build's server artifact beside this client artifact is refused by name.
    let (batch_major, feature_major) = (dir.path().join("wine-auto-8192"), dir.path().join("wine-auto-8"));
    std::fs::copy(batch_major.join("server.fhec"), feature_major.join("server.fhec")).unwrap();
    let o = fhec(&["predict", feature_major.to_str().unwrap(), "--input", x]);
    assert!(!o.status.success() && stderr(&o).contains("is not the plan"), "{}", stderr(&o));
    let o = fhec(&["build", model, "--packing", "feature-major", "-o", dir.path().join("y").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("--packing is for CKKS"), "{}", stderr(&o));
    // One sample: TFHE's latency wins; 4096: one CKKS batch wins.
    for (batch, ckks) in [("1", false), ("4096", true)] {
        let out = dir.path().join(format!("auto{batch}"));
        let o = fhec(&[
            "--quiet",
            "build",
            model,
            "--calibration",
            x,
            "--scheme",
            "auto",
            "--batch",
            batch,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(fhec::ckks::is_ckks(&out), ckks, "batch {batch}");
        let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
        assert!(
            report.starts_with(&format!("scheme (--scheme auto, batch of {batch}"))
                && report.contains("estimated TFHE")
                && report.contains("CKKS"),
            "{report}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["scheme"], if ckks { "ckks" } else { "tfhe" }, "report.json belongs to the kept scheme");
    }
    // A directory holds one build: a TFHE build over the CKKS one replaces it.
    let out = dir.path().join("auto4096");
    let o = fhec(&["--quiet", "build", model, "--calibration", x, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!fhec::ckks::is_ckks(&out));
}

/// A CKKS build deployed from the CLI alone (an fhec with the `ckks` feature, nightly): keygen,
/// encrypt 1,000 samples, run with the evaluation key only, decrypt; the classes are the cleartext
/// simulation's. Then the files of another key, another build or another scheme, and damaged files,
/// are refused by name.
#[cfg(feature = "ckks")]
#[test]
fn ckks_builds_deploy_through_key_and_ciphertext_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (model, x) = (corpus("models/mlp_wine/model.onnx"), corpus("models/mlp_wine/inputs.npy"));
    let (model, x) = (model.to_str().unwrap(), x.to_str().unwrap());
    let build = p("wine");
    let o = fhec(&["--quiet", "build", model, "--calibration", x, "--scheme", "ckks", "-o", &build]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 1,000 samples: the 45 test samples over and over.
    let base: ndarray::Array2<f32> = ndarray_npy::read_npy(x).unwrap();
    let rows: Vec<_> = (0..1000).map(|i| base.row(i % base.nrows()).to_owned()).collect();
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let many = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    ndarray_npy::write_npy(p("many.npy"), &many).unwrap();
    let run = |args: &[&str]| {
        let o = fhec(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run(&["keygen", &build, "--keys", &p("keys")]);
    assert!(text.contains("relinearization and 0 rotation keys"), "{text}");
    let text = run(&["encrypt", &build, "--keys", &p("keys"), "--input", &p("many.npy"), "--output", &p("in.ct")]);
    assert!(text.contains("encrypted 1000 samples") && text.contains("8192 samples per ciphertext"), "{text}");
    let text =
        run(&["run", &build, "--eval-key", &p("keys/eval.key"), "--input", &p("in.ct"), "--output", &p("out.ct")]);
    assert!(text.contains("ran 1000 samples"), "{text}");
    run(&["decrypt", &build, "--keys", &p("keys"), "--input", &p("out.ct"), "--output", &p("y.npy")]);
    run(&["predict", &build, "--input", &p("many.npy"), "--output", &p("sim.npy")]);
    let (got, want): (ndarray::Array2<f32>, ndarray::Array2<f32>) =
        (ndarray_npy::read_npy(p("y.npy")).unwrap(), ndarray_npy::read_npy(p("sim.npy")).unwrap());
    assert_eq!(got.shape(), [1000, 3]);
    let argmax = |r: ndarray::ArrayView1<f32>| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let same = got.rows().into_iter().zip(want.rows()).filter(|(g, w)| argmax(*g) == argmax(*w)).count();
    assert_eq!(same, 1000, "encrypted classes are the simulation's");
    // The backend's error model: about 2^-LOG_DELTA relative per operation (fhec-ckks's tests).
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(worst < 1e-3 * scale, "encrypted vs simulated: {worst} of {scale}");
    // Another key's ciphertexts, results or evaluation key are refused.
    run(&["keygen", &build, "--keys", &p("other")]);
    let fails = |args: &[&str], says: &str| {
        let o = fhec(args);
        assert!(!o.status.success() && stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    };
    fails(
        &["run", &build, "--eval-key", &p("other/eval.key"), "--input", &p("in.ct"), "--output", &p("x.ct")],
        "were encrypted for evaluation key",
    );
    fails(&["decrypt", &build, "--keys", &p("other"), "--input", &p("out.ct"), "--output", &p("x.npy")], "another key");
    // Damaged and swapped files.
    let bytes = std::fs::read(p("in.ct")).unwrap();
    std::fs::write(p("short.ct"), &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &["run", &build, "--eval-key", &p("keys/eval.key"), "--input", &p("short.ct"), "--output", &p("x.ct")],
        "truncated",
    );
    fails(
        &["run", &build, "--eval-key", &p("keys/eval.key"), "--input", &p("out.ct"), "--output", &p("x.ct")],
        "holds CKKS result ciphertexts",
    );
    fails(
        &["run", &build, "--eval-key", &p("keys/secret.key"), "--input", &p("in.ct"), "--output", &p("x.ct")],
        "eval.key",
    );
    // A TFHE build's keys on this one, and this one's keys on another build of the model.
    let tfhe = p("wine-tfhe");
    run(&["--quiet", "build", model, "--calibration", x, "-o", &tfhe]);
    run(&["keygen", &tfhe, "--keys", &p("tfhe-keys")]);
    fails(
        &["encrypt", &build, "--keys", &p("tfhe-keys"), "--input", x, "--output", &p("x.ct")],
        "CKKS build takes keys",
    );
    let other_build = p("wine-fm");
    run(&[
        "--quiet",
        "build",
        model,
        "--calibration",
        x,
        "--scheme",
        "ckks",
        "--packing",
        "feature-major",
        "-o",
        &other_build,
    ]);
    fails(&["encrypt", &other_build, "--keys", &p("keys"), "--input", x, "--output", &p("x.ct")], "another build");
    // Ciphertexts and keys of one scheme given to a build of the other.
    run(&["encrypt", &tfhe, "--keys", &p("tfhe-keys"), "--input", x, "--output", &p("tfhe.ct")]);
    fails(
        &["run", &build, "--eval-key", &p("keys/eval.key"), "--input", &p("tfhe.ct"), "--output", &p("x.ct")],
        "holds TFHE input ciphertexts (`fhec encrypt`); expected CKKS input ciphertexts",
    );
    fails(
        &["run", &tfhe, "--eval-key", &p("tfhe-keys/eval.key"), "--input", &p("in.ct"), "--output", &p("x.ct")],
        "holds CKKS input ciphertexts (`fhec encrypt`); expected TFHE input ciphertexts",
    );
    fails(
        &["run", &tfhe, "--eval-key", &p("keys/eval.key"), "--input", &p("tfhe.ct"), "--output", &p("x.ct")],
        "holds a CKKS evaluation key; expected a TFHE evaluation key",
    );
    fails(
        &["decrypt", &tfhe, "--keys", &p("keys"), "--input", &p("out.ct"), "--output", &p("x.npy")],
        "CKKS secret key",
    );
    // One flipped byte in the middle of an evaluation key or a ciphertext file.
    for (file, damaged) in [("keys/eval.key", "bad.key"), ("in.ct", "bad.ct")] {
        let mut bytes = std::fs::read(p(file)).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(p(damaged), bytes).unwrap();
    }
    for (key, input, damaged) in [("bad.key", "in.ct", "bad.key"), ("keys/eval.key", "bad.ct", "bad.ct")] {
        let o = fhec(&["run", &build, "--eval-key", &p(key), "--input", &p(input), "--output", &p("x.ct")]);
        let e = stderr(&o);
        assert!(!o.status.success() && e.contains("corrupted") && e.contains(&p(damaged)), "{e}");
    }
}

fn train_set(name: &str, file: &str) -> String {
    corpus(&format!("train/{name}/{file}.npy")).to_str().unwrap().to_string()
}

/// `fhec train` in the cleartext simulation of the encrypted program (CI has no CKKS feature):
/// breast cancer to at least 94% test accuracy, equal to the float64 run of the same algorithm;
/// the ONNX model it writes predicts the same from raw features and compiles for TFHE; diabetes to
/// the least-squares R² within 0.02.
#[test]
fn training_writes_a_model_that_predicts_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cancer.onnx");
    let (x, y, tx, ty) = (
        train_set("breast_cancer", "train_x"),
        train_set("breast_cancer", "train_y"),
        train_set("breast_cancer", "test_x"),
        train_set("breast_cancer", "test_y"),
    );
    let o = fhec(&[
        "--quiet",
        "train",
        "--input",
        &x,
        "--labels",
        &y,
        "--test-input",
        &tx,
        "--test-labels",
        &ty,
        "--mode",
        "simulate",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    let accuracy = report["test"]["value"].as_f64().unwrap();
    assert!(accuracy >= 0.94, "{report}");
    assert_eq!(report["test"]["disagreements"], 0, "{report}");
    assert!(report["distance_from_float64"].as_f64().unwrap() < 1e-9, "{report}");
    assert_eq!((report["ring_log_n"].as_u64(), report["refreshes"].as_u64()), (Some(15), Some(1)), "{report}");
    assert!(report["sigmoid_reach"].as_f64().unwrap() < 1.0, "{report}");
    // The ONNX model over raw features: the float reference scores what training reported.
    let o = fhec(&["predict", model.to_str().unwrap(), "--input", &tx, "--labels", &ty]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(&format!("accuracy {:.2}%", 100.0 * accuracy)), "{out} vs {accuracy}");
    // It compiles for encrypted inference, and its simulation keeps the accuracy.
    let build = dir.path().join("cancer.fhec");
    let o = fhec(&["--quiet", "build", model.to_str().unwrap(), "--calibration", &x, "-o", build.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fhec(&["predict", build.to_str().unwrap(), "--mode", "simulate", "--input", &tx, "--labels", &ty]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(&format!("accuracy {:.2}%", 100.0 * accuracy)), "{out} vs {accuracy}");

    // Three classes: one model per class (one-vs-rest), one output column each.
    let model = dir.path().join("wine.onnx");
    let (x, y, tx, ty) = (
        train_set("wine", "train_x"),
        train_set("wine", "train_y"),
        train_set("wine", "test_x"),
        train_set("wine", "test_y"),
    );
    let args = ["--input", &x, "--labels", &y, "--test-input", &tx, "--test-labels", &ty, "--mode", "simulate"];
    let o = fhec(&[&["--quiet", "train"][..], &args, &["-o", model.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(report["classes"], 3, "{report}");
    assert_eq!(report["weights"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["test"]["value"].as_f64().unwrap() >= 0.95, "{report}");
    let o = fhec(&["predict", model.to_str().unwrap(), "--input", &tx, "--labels", &ty]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("accuracy 100.00%") || out.contains("accuracy 98.15%"), "{out}");

    let model = dir.path().join("diabetes.onnx");
    let o = fhec(&[
        "--quiet",
        "train",
        "--task",
        "linear",
        "--input",
        &train_set("diabetes", "train_x"),
        "--labels",
        &train_set("diabetes", "train_y"),
        "--test-input",
        &train_set("diabetes", "test_x"),
        "--test-labels",
        &train_set("diabetes", "test_y"),
        "--mode",
        "simulate",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus("train/reference.json")).unwrap()).unwrap();
    let (r2, lstsq) = (
        report["test"]["value"].as_f64().unwrap(),
        reference["diabetes"]["sklearn_least_squares_r2"].as_f64().unwrap(),
    );
    assert!((r2 - lstsq).abs() <= 0.02, "R² {r2} vs least squares {lstsq}");
}

/// Labels that are not 0/1, features that are not numbers, counts that disagree, and options out
/// of range: each refused before training, naming what is wrong.
#[test]
fn training_refuses_bad_data_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let x = ndarray::Array2::<f64>::from_shape_fn((20, 3), |(i, j)| (i * 3 + j) as f64);
    ndarray_npy::write_npy(p("x.npy"), &x).unwrap();
    let mut nan = x.clone();
    nan[[4, 2]] = f64::NAN;
    ndarray_npy::write_npy(p("nan.npy"), &nan).unwrap();
    ndarray_npy::write_npy(p("y.npy"), &ndarray::Array1::<i64>::from_shape_fn(20, |i| (i % 2) as i64)).unwrap();
    ndarray_npy::write_npy(p("yf.npy"), &ndarray::Array1::<f64>::from_shape_fn(20, |i| i as f64 / 3.0)).unwrap();
    ndarray_npy::write_npy(p("short.npy"), &ndarray::Array1::<i64>::zeros(19)).unwrap();
    let out = p("m.onnx");
    let train = |x: &str, y: &str, extra: &[&str]| {
        let mut args = vec!["--quiet", "train", "--input", x, "--labels", y, "--mode", "simulate", "-o", &out];
        args.extend_from_slice(extra);
        fhec(&args)
    };
    for (x, y, extra, want) in [
        (p("x.npy"), p("short.npy"), &["--task", "linear", "--iterations", "0"][..], "[19] labels for 20 samples"),
        (p("x.npy"), p("yf.npy"), &[], "label 1 is 0.333"),
        (p("nan.npy"), p("y.npy"), &[], "sample 4, feature 2: NaN"),
        (p("x.npy"), p("short.npy"), &[], "[19] labels for 20 samples"),
        (p("x.npy"), p("y.npy"), &["--degree", "4"], "sigmoid degree 4: odd"),
        (p("x.npy"), p("y.npy"), &["--ring", "16"], "ring 2^16"),
        (p("x.npy"), p("y.npy"), &["--iterations", "0"], "0 iterations"),
    ] {
        let o = train(&x, &y, extra);
        assert!(!o.status.success(), "{want}: accepted");
        assert!(stderr(&o).contains(want), "want {want:?} in: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    assert!(!std::path::Path::new(&out).exists(), "nothing written on refusal");
    #[cfg(not(feature = "ckks"))]
    {
        let o = fhec(&["--quiet", "train", "--input", &p("x.npy"), "--labels", &p("y.npy"), "-o", &out]);
        assert!(!o.status.success() && stderr(&o).contains("--features ckks"), "{}", stderr(&o));
        // The split deployment: the plan needs no feature, its keys do.
        let plan = p("plan");
        let o = fhec(&["--quiet", "train", "plan", "--input", &p("x.npy"), "-o", &plan]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = fhec(&["--quiet", "keygen", &plan, "--keys", &p("keys")]);
        assert!(!o.status.success() && stderr(&o).contains("--features ckks"), "{}", stderr(&o));
        let o = fhec(&["--quiet", "bench", &plan, "--input", &p("x.npy"), "--labels", &p("y.npy")]);
        assert!(!o.status.success() && stderr(&o).contains("--features ckks"), "{}", stderr(&o));
    }
    // `fhec bench` on a plan needs the labels; on a build, labels make no sense.
    let plan = p("plan2");
    assert!(fhec(&["--quiet", "train", "plan", "--input", &p("x.npy"), "-o", &plan]).status.success());
    let o = fhec(&["--quiet", "bench", &plan, "--input", &p("x.npy")]);
    assert!(!o.status.success() && stderr(&o).contains("give its --labels"), "{}", stderr(&o));
}

/// Training under encryption from the CLI (an fhec with the `ckks` feature, nightly): diabetes at
/// ring 2^14, where four iterations need a refresh; the decrypted weights are the float64 run's
/// within CKKS' error.
#[cfg(feature = "ckks")]
#[test]
fn training_under_encryption_matches_the_float64_run() {
    let dir = tempfile::tempdir().unwrap();
    // Three classes: one model per class (one-vs-rest), one output column each.
    let model = dir.path().join("wine.onnx");
    let (x, y, tx, ty) = (
        train_set("wine", "train_x"),
        train_set("wine", "train_y"),
        train_set("wine", "test_x"),
        train_set("wine", "test_y"),
    );
    let args = ["--input", &x, "--labels", &y, "--test-input", &tx, "--test-labels", &ty, "--mode", "simulate"];
    let o = fhec(&[&["--quiet", "train"][..], &args, &["-o", model.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(report["classes"], 3, "{report}");
    assert_eq!(report["weights"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["test"]["value"].as_f64().unwrap() >= 0.95, "{report}");
    let o = fhec(&["predict", model.to_str().unwrap(), "--input", &tx, "--labels", &ty]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("accuracy 100.00%") || out.contains("accuracy 98.15%"), "{out}");

    let model = dir.path().join("diabetes.onnx");
    let o = fhec(&[
        "--quiet",
        "train",
        "--task",
        "linear",
        "--input",
        &train_set("diabetes", "train_x"),
        "--labels",
        &train_set("diabetes", "train_y"),
        "--ring",
        "14",
        "--iterations",
        "4",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(report["refreshes"], 1, "{report}");
    assert!(report["distance_from_float64"].as_f64().unwrap() < 1e-3, "{report}");
    assert!(report["eval_key_bytes"].as_u64().unwrap() > 0, "{report}");
}

/// Training split between the data owner and the server through files (an fhec with the `ckks`
/// feature, nightly): plan, keygen, encrypt, run, refresh, run, decrypt to an ONNX model that
/// predicts what the in-process run's does. A state not yet refreshed, a finished one run again,
/// another plan's key and a wrong scaling file are refused by name.
#[cfg(feature = "ckks")]
#[test]
fn training_deploys_through_plan_key_and_ciphertext_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (x, y) = (train_set("diabetes", "train_x"), train_set("diabetes", "train_y"));
    let ok = |args: &[&str]| {
        let o = fhec(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let refused = |args: &[&str], want: &str| {
        let o = fhec(args);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(want), "want {want:?}: {}", stderr(&o));
    };
    let shape = ["--task", "linear", "--ring", "14", "--iterations", "4"];
    let mut plan_args = vec!["--quiet", "train", "plan", "--input", &x, "-o"];
    let plan = p("plan");
    plan_args.push(&plan);
    plan_args.extend(shape);
    let out = ok(&plan_args);
    assert!(out.contains("4 iterations in 2 rounds"), "{out}");
    let keys = p("keys");
    ok(&["--quiet", "keygen", &plan, "--keys", &keys]);
    let data = p("data.ct");
    ok(&["--quiet", "encrypt", &plan, "--keys", &keys, "--input", &x, "--labels", &y, "--output", &data]);
    let eval = format!("{keys}/eval.key");
    let (s1, s1r, s2) = (p("s1.ct"), p("s1r.ct"), p("s2.ct"));
    ok(&["--quiet", "run", &plan, "--eval-key", &eval, "--input", &data, "--output", &s1]);
    let owner = format!("{data}.owner.json");
    let model = p("model.onnx");
    refused(
        &["--quiet", "decrypt", &plan, "--keys", &keys, "--input", &s1, "--owner", &owner, "--output", &model],
        "3 of 4 iterations done",
    );
    refused(
        &["--quiet", "run", &plan, "--eval-key", &eval, "--input", &data, "--state", &s1, "--output", &s2],
        "the data owner refreshes a state",
    );
    ok(&["--quiet", "train", "refresh", &plan, "--keys", &keys, "--input", &s1, "--output", &s1r]);
    ok(&["--quiet", "run", &plan, "--eval-key", &eval, "--input", &data, "--state", &s1r, "--output", &s2]);
    ok(&["--quiet", "decrypt", &plan, "--keys", &keys, "--input", &s2, "--owner", &owner, "--output", &model]);
    // The in-process run of the same plan, in float64: the same test predictions within CKKS' error.
    let reference = p("reference.onnx");
    let mut args = vec!["--quiet", "train", "--mode", "clear", "--input", &x, "--labels", &y, "-o", &reference];
    args.extend(shape);
    ok(&args);
    let tx = train_set("diabetes", "test_x");
    let predict = |m: &str| -> ndarray::ArrayD<f32> {
        let out = format!("{m}.npy");
        ok(&["predict", m, "--input", &tx, "--output", &out]);
        ndarray_npy::read_npy(&out).unwrap()
    };
    let (got, want) = (predict(&model), predict(&reference));
    let gap = got.iter().zip(want.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap < 0.1, "predictions (targets of ~150) differ by {gap}");
    // Another plan's keys, and the scaling of another plan.
    let other = p("other");
    ok(&["--quiet", "train", "plan", "--samples", "309", "--features", "10", "--task", "linear", "-o", &other]);
    refused(
        &["--quiet", "run", &other, "--eval-key", &eval, "--input", &data, "--output", &s2],
        "not this training plan's evaluation key",
    );
    refused(
        &["--quiet", "encrypt", &other, "--keys", &keys, "--input", &x, "--labels", &y, "--output", &p("o.ct")],
        "generated for another build or plan",
    );
    std::fs::write(&owner, "{}").unwrap();
    refused(
        &["--quiet", "decrypt", &plan, "--keys", &keys, "--input", &s2, "--owner", &owner, "--output", &model],
        "not the scaling",
    );
    // The plan benchmarked: keys once, a whole training per run, weights checked against float64.
    let json = p("bench.json");
    ok(&["--quiet", "bench", &plan, "--input", &x, "--labels", &y, "--runs", "1", "--json", &json]);
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((b["rounds"].as_u64(), b["ring_log_n"].as_u64()), (Some(2), Some(14)), "{b}");
    assert!(b["max_distance_from_float64"].as_f64().unwrap() < 1e-2, "{b}");
}

/// Training through `fhec serve` from the CLI alone (feature `ckks`, nightly): a plan served, the
/// data owner's `fhec client train`, the job listed, followed again with `--job` after the fact
/// (the same model), then cancelled.
#[cfg(feature = "ckks")]
#[test]
fn training_through_fhec_serve_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (x, y) = (corpus("train/diabetes/train_x.npy"), corpus("train/diabetes/train_y.npy"));
    let (x, y) = (x.to_str().unwrap(), y.to_str().unwrap());
    let ok = |args: &[&str]| {
        let o = fhec(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o))
    };
    let (plan, keys) = (p("diabetes.fhec"), p("keys"));
    let shape = ["--task", "linear", "--ring", "14", "--iterations", "4"];
    ok(&[&["--quiet", "train", "plan", "--input", x, "-o", &plan][..], &shape[..]].concat());
    ok(&["--quiet", "keygen", &plan, "--keys", &keys]);
    let (mut server, _lines, addr) = serve(&[&plan, "--allow-anonymous", "--store", &p("store")]);
    let url = format!("http://{addr}");
    let client = |args: &[&str]| ok(&[&["--quiet", "client", "--server", &url][..], args].concat());
    assert!(client(&["models"]).0.contains("diabetes: training plan (CKKS), 309 samples x 10 features"));
    let (out, err) = client(&["train", &plan, "--keys", &keys, "--input", x, "--labels", y, "-o", &p("m.onnx")]);
    assert!(out.contains("trained diabetes on the server (2 rounds") && err.contains("--job"), "{out}{err}");
    let jobs = client(&["jobs"]).0;
    let id = jobs.split_whitespace().next().unwrap().to_string();
    assert!(jobs.contains("Done") && jobs.contains("4/4 iterations"), "{jobs}");
    client(&["train", &plan, "--keys", &keys, "--input", x, "--labels", y, "-o", &p("again.onnx"), "--job", &id]);
    assert_eq!(std::fs::read(p("m.onnx")).unwrap(), std::fs::read(p("again.onnx")).unwrap());
    // The model predicts (targets of ~150).
    let (out, _) = ok(&["predict", &p("m.onnx"), "--input", x, "--output", &p("pred.npy")]);
    assert!(out.contains("309 samples"), "{out}");
    client(&["cancel", &id]);
    let o = fhec(&["client", "--server", &url, "cancel", &id]);
    assert!(!o.status.success() && stderr(&o).contains("no training job"), "{}", stderr(&o));
    Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    assert!(server.0.wait().unwrap().success());
}

/// One HTTP/1.1 request over a fresh connection: status and body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    (status, answer[at..].to_vec())
}

/// `fhec serve` killed with SIGKILL while one key uploads and a batch of ciphertexts is evaluated,
/// then restarted on the same store, three times over: every upload it answered is listed and
/// works, every listed key loads, the interrupted upload is either whole or absent (uploading it
/// again repairs nothing: it answers 200 or 201), no temporary file is left, and the batch runs
/// after the restart and decrypts to the cleartext simulation.
#[test]
fn a_killed_server_keeps_every_completed_upload_and_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).to_str().unwrap().to_string();
    build_logreg(&tmp.path().join("logreg.fhec"));
    let model = p("logreg.fhec");
    for k in 0..4 {
        let o = fhec(&["--quiet", "keygen", &model, "--keys", &p(&format!("k{k}"))]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let x = corpus("models/logreg_cancer_torch/inputs.npy");
    let o = fhec(&["encrypt", &model, "--keys", &p("k0"), "--input", x.to_str().unwrap(), "--output", &p("in.ct")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fhec(&["predict", &model, "--input", x.to_str().unwrap(), "--output", &p("sim.npy")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = p("store");
    let key = |k: usize| std::fs::read(tmp.path().join(format!("k{k}/eval.key"))).unwrap();
    let args = [model.as_str(), "--allow-anonymous", "--store", store.as_str(), "--workers", "1"];
    let (server, _lines, mut addr) = serve(&args);
    let (status, body) = http(&addr, "PUT", "/v1/keys", &key(0));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let id0 = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
    let mut completed = vec![id0.clone()];
    let mut server = Some(server);
    let ciphertexts = std::fs::read(p("in.ct")).unwrap();
    for round in 1..4 {
        // In flight when the kill comes: an upload of key `round`, and the whole test set's batch.
        let upload = {
            let (addr, bytes) = (addr.clone(), key(round));
            std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(|| http(&addr, "PUT", "/v1/keys", &bytes));
            })
        };
        let batch = {
            let (addr, bytes, path) = (addr.clone(), ciphertexts.clone(), format!("/v1/models/logreg/infer?key={id0}"));
            std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(|| http(&addr, "POST", &path, &bytes));
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(40 * round as u64));
        drop(server.take()); // SIGKILL
        let _ = (upload.join(), batch.join());
        let (restarted, _lines, new_addr) = serve(&args);
        server = Some(restarted);
        addr = new_addr;
        let (status, body) = http(&addr, "GET", "/v1/keys", b"");
        assert_eq!(status, 200);
        let listed: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect();
        for id in &completed {
            assert!(listed.contains(id), "round {round}: completed upload {id} is not listed: {listed:?}");
        }
        for id in &listed {
            let (status, _) = http(&addr, "GET", &format!("/v1/keys/{id}"), b"");
            assert_eq!(status, 200, "round {round}: listed key {id}");
        }
        let (status, body) = http(&addr, "PUT", "/v1/keys", &key(round));
        assert!(status == 200 || status == 201, "round {round}: {status} {}", String::from_utf8_lossy(&body));
        completed.push(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().into());
        let leftovers: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .flatten()
            .filter(|d| d.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: temporary files left: {leftovers:?}");
        // The batch, again, on the restarted server: it decrypts to the simulation.
        let (status, out) = http(&addr, "POST", &format!("/v1/models/logreg/infer?key={id0}"), &ciphertexts);
        assert_eq!(status, 200, "round {round}: {}", String::from_utf8_lossy(&out));
        std::fs::write(p("out.ct"), &out).unwrap();
        let o = fhec(&["decrypt", &model, "--keys", &p("k0"), "--input", &p("out.ct"), "--output", &p("y.npy")]);
        assert!(o.status.success(), "{}", stderr(&o));
        let (got, want): (ndarray::Array2<f32>, ndarray::Array2<f32>) =
            (ndarray_npy::read_npy(p("y.npy")).unwrap(), ndarray_npy::read_npy(p("sim.npy")).unwrap());
        let class = |v: f32| v > 0.5;
        let same = got.iter().zip(&want).filter(|(g, w)| class(**g) == class(**w)).count();
        assert_eq!(same, want.len(), "round {round}: decrypted classes differ from the simulation");
    }
}

/// A `.npy` of f32 `values` shaped `shape`.
fn write_npy(path: &std::path::Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_model_too_large_for_the_machine_is_refused_in_one_line_with_its_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let (cal, out) = (dir.path().join("x.npy"), dir.path().join("b"));
    let n = 3 * 224 * 224;
    write_npy(&cal, &[1, 3, 224, 224], &(0..n).map(|i| i as f32 / n as f32).collect::<Vec<_>>());
    let model = corpus("conformance/light/light_resnet50.onnx");
    let build = |flags: &[&str]| {
        let args =
            ["build", model.to_str().unwrap(), "--calibration", cal.to_str().unwrap(), "-o", out.to_str().unwrap()];
        fhec(&[flags, &args[..]].concat())
    };
    let o = build(&[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    for needle in [
        "too large to run encrypted",
        "10,612,224 bootstraps per sample",
        "affine terms",
        "MB to compile",
        "evaluation key of 21 MB",
        "--max-bootstraps",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // Past the bootstrap bound, the memory bound refuses it.
    let o = build(&["--max-bootstraps=100000000"]);
    let e = stderr(&o);
    assert!(o.status.code() == Some(1) && e.contains("--max-compile-memory-mb"), "{e}");
    assert!(!out.exists(), "nothing written");
    // A corpus model under a lowered bound.
    let m = corpus("models/mlp_wine/model.onnx");
    let x = corpus("models/mlp_wine/inputs.npy");
    let o = fhec(&[
        "--max-bootstraps=8",
        "build",
        m.to_str().unwrap(),
        "--calibration",
        x.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(o.status.code() == Some(1) && e.contains("about 48 bootstraps") && e.contains("--max-bootstraps"), "{e}");
}

/// A tree ensemble's decisions run on the client unless `--private-thresholds` keeps them on the
/// server; the report says which and counts the bootstraps either way.
#[test]
fn tree_thresholds_stay_on_the_server_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus("models/tree_cancer_skl/model.onnx");
    let x = corpus("models/tree_cancer_skl/inputs.npy");
    let build = |out: &str, flags: &[&str]| {
        let out = dir.path().join(out);
        let args = ["build", m.to_str().unwrap(), "--calibration", x.to_str().unwrap(), "-o", out.to_str().unwrap()];
        let o = fhec(&[&args[..], flags].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(out.join("report.txt")).unwrap()
    };
    let (client, server) = (build("client", &[]), build("server", &["--private-thresholds"]));
    assert!(
        client.contains("11 decisions computed by the client") && client.contains("client pre-processing"),
        "{client}"
    );
    assert!(client.contains("bootstraps (PBS) per sample: 4\n"), "{client}");
    assert!(
        server.contains("11 decisions shared by the trees") && !server.contains("client pre-processing"),
        "{server}"
    );
    assert!(server.contains("bootstraps (PBS) per sample: 15\n"), "{server}");
}
