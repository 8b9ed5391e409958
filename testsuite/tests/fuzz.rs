//! The fuzz targets (`fhec_testsuite::fuzz`) on their committed seed corpora (`fuzz/corpus/<target>/`)
//! and on deterministic mutations of every seed: flipped bits, truncations, bytes set to boundary
//! values, spliced duplicates. What the coverage-guided fuzzer (`fuzz/`, nightly) explores for hours,
//! this replays in seconds on every `cargo test`, so a crash it once found stays fixed.
//!
//! `cargo test -p fhec-testsuite --test fuzz -- --ignored` rewrites the seed corpora from the test
//! corpus (small files only).

use fhec_testsuite::fuzz::TARGETS;
use fhec_testsuite::root;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    root().parent().unwrap().join("fuzz/corpus").join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => v.truncate(rng.below(len)),
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0x00, 0xff, 0x7f, 0x80, 0x01, b'9'][rng.below(6)];
            }
            3 if len > 8 => {
                // A run of 0xff: varints and lengths at their maximum.
                let i = rng.below(len - 8);
                v[i..i + 8].fill(0xff);
            }
            4 if len > 0 => {
                let (from, to) = (rng.below(len), rng.below(len));
                let chunk = v[from..(from + 1 + rng.below(16)).min(len)].to_vec();
                v.splice(to..to, chunk);
            }
            _ => v.push(rng.below(256) as u8),
        }
    }
    v
}

/// Mutations per seed, by target (the router and the ONNX import cost the most per input).
fn mutations(target: &str) -> usize {
    match target {
        "http" => 40,
        "onnx" => 60,
        _ => 300,
    }
}

#[test]
fn every_target_survives_its_seed_corpus_and_mutations_of_it() {
    let mut failures = Vec::new();
    for &(name, target) in TARGETS {
        let seeds = files(&corpus_dir(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} holds no seeds");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let mut runs = 0;
        for seed in &seeds {
            let bytes = std::fs::read(seed).unwrap();
            let cases = std::iter::once(bytes.clone()).chain((0..mutations(name)).map(|_| mutate(&bytes, &mut rng)));
            for case in cases {
                runs += 1;
                if std::panic::catch_unwind(|| target(&case)).is_err() {
                    let out = std::env::temp_dir().join(format!("fhec-fuzz-{name}-{runs}"));
                    std::fs::write(&out, &case).unwrap();
                    failures.push(format!("{name}: from {} (input saved to {})", seed.display(), out.display()));
                }
            }
        }
        eprintln!("{name}: {} seeds, {runs} inputs", seeds.len());
    }
    assert!(failures.is_empty(), "fuzz targets panicked:\n{}", failures.join("\n"));
}

/// Writes the seed corpora (run by hand; see the module doc).
#[test]
#[ignore]
fn write_seed_corpora() {
    use fhec_runtime::artifact::Kind;
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let small = |p: &Path| std::fs::metadata(p).map(|m| m.len() < 4096).unwrap_or(false);
    // ONNX: the small corpus models and every invalid file.
    for case in fhec_testsuite::cases() {
        let model = case.join("model.onnx");
        if small(&model) {
            write("onnx", &format!("{}.onnx", fhec_testsuite::case_name(&case)), &std::fs::read(&model).unwrap());
        }
        let inputs = case.join("inputs.npy");
        if small(&inputs) {
            write("npy", &format!("{}.npy", fhec_testsuite::case_name(&case)), &std::fs::read(&inputs).unwrap());
        }
    }
    for f in files(&root().join("invalid")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let target = if name.ends_with(".npy") { "npy" } else { "onnx" };
        write(target, &name, &std::fs::read(&f).unwrap());
    }
    // IR text: the valid and invalid IR files and the optimizer's file tests.
    for dir in ["ir", "ir/invalid", "filetests/optimize"] {
        for f in files(&root().join(dir)).into_iter().filter(|f| small(f)) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            write("ir_text", &name, &std::fs::read(&f).unwrap());
        }
    }
    // Neuron text: two small models' neuron graphs, and the scalarize file tests.
    for model in ["logreg_cancer_torch", "op_relu", "mlp_iris_skl"] {
        let dir = root().join("models").join(model);
        let cal = fhec::npy::read_samples(&dir.join("inputs.npy")).unwrap();
        let text = fhec::inspect::stage_text(
            &dir.join("model.onnx"),
            Some(&cal),
            fhec::inspect::Stage::Neurons,
            true,
            &Default::default(),
        )
        .unwrap();
        write("neuron_text", &format!("{model}.neurons"), text.as_bytes());
    }
    // Envelopes: a built model's client and server artifacts, ciphertexts in and out, a sealed key;
    // each as a whole file (head 0x80 | kind) and as a payload (head = kind).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m.fhec");
    let src = root().join("models/logreg_cancer_torch");
    let x = fhec::npy::read_samples(&src.join("inputs.npy")).unwrap();
    fhec::tfhe::build(&src.join("model.onnx"), Some(&x), &dir, &Default::default(), |_| ()).unwrap();
    let (client, _) = fhec::tfhe::load_client(&dir).unwrap();
    let keys = tmp.path().join("keys");
    let pass = fhec::keyfile::Protection::Passphrase(zeroize::Zeroizing::new("fuzz".into()));
    fhec::tfhe::keygen(&keys, client.params, &pass).unwrap();
    let (sk, fp) = fhec::tfhe::load_secret(&keys, &pass).unwrap();
    let one = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1)).to_owned();
    let cts = fhec::tfhe::encrypt(&client, &sk, &fp, &one).unwrap();
    let (inputs, _) = fhec_runtime::artifact::to_bytes(Kind::Inputs, &cts).unwrap();
    let files: Vec<(Kind, &str, Vec<u8>)> = vec![
        (Kind::Client, "client", std::fs::read(fhec::tfhe::client_path(&dir)).unwrap()),
        (Kind::Server, "server", std::fs::read(fhec::tfhe::server_path(&dir)).unwrap()),
        (Kind::Inputs, "inputs", inputs),
        (Kind::SealedSecretKey, "sealed", std::fs::read(keys.join("secret.key")).unwrap()),
    ];
    const KINDS: [Kind; 7] = [
        Kind::Client,
        Kind::Server,
        Kind::EvalKey,
        Kind::SecretKey,
        Kind::Inputs,
        Kind::Outputs,
        Kind::SealedSecretKey,
    ];
    for (kind, name, bytes) in files {
        let k = KINDS.iter().position(|&c| c == kind).unwrap() as u8;
        write("envelope", &format!("{name}.file"), &[&[0x80 | k][..], &bytes].concat());
        let payload = fhec_runtime::artifact::payload_of(&bytes).unwrap();
        write("envelope", &format!("{name}.payload"), &[&[k][..], &payload].concat());
    }
    // HTTP: the routes with and without a token, and small bodies.
    let token = 0x40u8;
    for (name, head, line, body) in [
        ("infer", 2 | token, "", &b"FHECFILE"[..]),
        ("put_key", 1 | (1 << 3) | token, "", &b"not a key"[..]),
        ("get_key", (2 << 3) | token, "", &b""[..]),
        ("delete_key", 3 | (2 << 3) | token, "", &b""[..]),
        ("jobs", 2 | (3 << 3) | token, "", &b"{}"[..]),
        ("models", 4 << 3, "v1/models", &b""[..]),
        ("metrics", 4 << 3, "metrics", &b""[..]),
        ("job_state", 1 | (4 << 3) | token, "v1/jobs/0123/state", &b"x"[..]),
        ("no_token", 2, "", &b""[..]),
    ] {
        write("http", name, &[&[head][..], line.as_bytes(), b"\n", body].concat());
    }
}
