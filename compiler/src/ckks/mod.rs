//! The CKKS scheme (`fhec build --scheme ckks`), the peer of [`crate::tfhe`]: a model lowered to a
//! plan of affine maps and polynomials (`fhec_lower::ckks::choose`), packed batch-major (throughput) or
//! feature-major (latency; `--packing`); cleartext simulation on stable Rust, and, in an fhec built
//! with the `ckks` feature (nightly), encrypted runs with poulpy (`fhec_ckks::backend`).
//!
//! Artifacts are the same versioned, checksummed envelopes as TFHE's, under the same names and
//! their own kinds: `DIR/client.fhec` ([`ClientArtifact`]: pre-processing, input box, packing,
//! post-processing; no weights) and `DIR/server.fhec` ([`ServerArtifact`]: the plan). Neither holds a
//! key; `DIR/report.txt` and `DIR/report.json` say what was chosen.

#[cfg(feature = "ckks")]
pub mod deploy;
mod local;

pub use local::{BenchReport, FheRun};
#[cfg(feature = "ckks")]
pub use local::{bench, fhe};

use crate::{DriverError, Stacked};
use fhec_ckks::{ClientLayout, Packing, Plan, Reads, Ring};
use fhec_ir::{Module, Tensor};
use fhec_lower::Calibration;
use fhec_lower::ckks::{Choice, Search};
use fhec_runtime::artifact::{self, Kind};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `DIR/ckks.json`: a CKKS build of an fhec before the artifacts became envelopes.
pub(crate) fn legacy_path(dir: &Path) -> PathBuf {
    dir.join("ckks.json")
}

/// Whether `dir` holds a CKKS build: its client artifact or its server artifact (a server holds only
/// the latter) says so; an older build's `ckks.json` counts, so that loading it explains that it
/// needs a rebuild.
pub fn is_ckks(dir: &Path) -> bool {
    let kind = |path: PathBuf| artifact::peek_file(&path);
    kind(crate::tfhe::client_path(dir)) == Some(Kind::CkksClient)
        || kind(crate::tfhe::server_path(dir)) == Some(Kind::CkksServer)
        || legacy_path(dir).is_file()
}

/// What the data owner holds for a CKKS build (`DIR/client.fhec`): how to pre-process, clamp and
/// pack samples, and how to read the outputs back. No weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientArtifact {
    pub model: String,
    pub input_shape: Vec<usize>,
    /// The ring, packing, slot layout and input box the client encrypts with.
    pub layout: ClientLayout,
    /// Digest of the server's artifact: ciphertexts are tagged with it.
    pub plan_digest: String,
    /// IR text of the client's pre-processing (empty: none) and post-processing.
    pub preprocess: String,
    pub postprocess: String,
}

/// What the server holds for a CKKS build (`DIR/server.fhec`): the plan (weights and polynomials).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerArtifact {
    pub model: String,
    pub packing: Packing,
    /// Each activation layer's polynomial degree.
    pub degrees: Vec<(String, usize)>,
    pub plan: Plan,
}

impl ServerArtifact {
    /// Checks the plan (a file may hold anything) and returns its ring and the client's layout of it
    /// (`what` names the artifact in errors).
    pub fn layout(&self, what: &str) -> Result<(Ring, ClientLayout), DriverError> {
        let bad = |e: fhec_ckks::CkksError| DriverError::Artifact(format!("{what}: {e}"));
        self.plan.validate().map_err(bad)?;
        let ring = self.plan.ring().map_err(bad)?;
        Ok((ring, self.plan.client_layout(ring, self.packing).map_err(bad)?))
    }

    /// SHA-256 of the artifact's payload: what the client artifact and ciphertexts name.
    pub fn digest(&self) -> String {
        let (_, payload) = artifact::to_bytes(Kind::CkksServer, self).expect("plans serialize");
        artifact::hex(&Sha256::digest(payload))
    }
}

/// A CKKS build, loaded and checked: the plan with the client's modules parsed.
pub struct Loaded {
    pub input_shape: Vec<usize>,
    pub ring: Ring,
    pub packing: Packing,
    compiled: fhec_lower::ckks::Compiled,
}

/// A CKKS build in memory: the chosen lowering, its artifact and its reports, not yet written (see
/// [`Build::write`]).
pub struct Build {
    pub choice: Choice,
    pub ring: Ring,
    pub client: ClientArtifact,
    pub server: ServerArtifact,
    text: String,
    json: serde_json::Value,
}

/// Lowers `model` for CKKS under each of `packings`, choosing each activation layer's polynomial
/// by estimated cost and simulated accuracy; keeps the packing with the lower estimated time for
/// `batch` samples on `threads` workers (one within the accuracy budget if any is).
pub fn compile(
    model_path: &Path,
    calibration: &ArrayD<f32>,
    search: &Search,
    packings: &[Packing],
    batch: usize,
    threads: usize,
) -> Result<Build, DriverError> {
    let module = crate::load_model(model_path)?;
    let input_shape = module.node(module.inputs()[0]).ty.shape.clone();
    let cal = Calibration::from_samples(crate::samples(calibration, &input_shape, "calibration")?)?;
    let mut options = Vec::new();
    let mut refused = Vec::new();
    for &packing in packings {
        match fhec_lower::ckks::choose(&module, &cal, &Search { packing, ..search.clone() }) {
            Ok(choice) => {
                let ring = choice.compiled.plan.ring().map_err(ckks_error)?;
                let ms = choice.compiled.plan.estimated_ms(ring, packing, batch, threads);
                options.push((choice, ring, ms));
            }
            // With one packing asked for, its error is the build's; with several, the others may do.
            Err(e) if packings.len() > 1 => refused.push(format!("{}: {e}", packing.name())),
            Err(e) => return Err(e.into()),
        }
    }
    let comparison = (packings.len() > 1).then(|| {
        let estimates: Vec<String> = options
            .iter()
            .map(|(c, _, ms)| {
                format!(
                    "{} {ms:.0} ms{}",
                    c.packing.name(),
                    if c.within_budget { "" } else { " (misses the accuracy budget)" }
                )
            })
            .chain(refused.iter().cloned())
            .collect();
        estimates.join(", ")
    });
    let best = options
        .iter()
        .enumerate()
        .min_by(|a, b| (!a.1.0.within_budget).cmp(&!b.1.0.within_budget).then(a.1.2.total_cmp(&b.1.2)))
        .map(|(i, _)| i)
        .ok_or_else(|| DriverError::Ckks(format!("no packing applies: {}", refused.join("; "))))?;
    let (choice, ring, _) = options.swap_remove(best);
    let c = &choice.compiled;
    let server = ServerArtifact {
        model: module.name.clone(),
        packing: choice.packing,
        degrees: choice.layers.iter().cloned().zip(choice.degrees()).collect(),
        plan: c.plan.clone(),
    };
    let client = ClientArtifact {
        model: module.name.clone(),
        input_shape,
        layout: c.plan.client_layout(ring, choice.packing).map_err(ckks_error)?,
        plan_digest: server.digest(),
        preprocess: c.preprocess.as_ref().map_or(String::new(), |m| m.to_text(fhec_ir::DataMode::Full)),
        postprocess: c.postprocess.to_string(),
    };
    let (mut text, mut report) = report(&server, &choice, ring);
    if let Some(line) = comparison {
        text = format!(
            "packing (--packing auto, batch of {batch} on {threads} threads): {} — estimated {line}\n{text}",
            choice.packing.name()
        );
        report["packing_estimates"] = json!(line);
    }
    Ok(Build { choice, ring, client, server, text, json: report })
}

impl Build {
    /// Estimated time for `batch` samples on `threads` workers under the chosen packing.
    pub fn estimated_ms(&self, batch: usize, threads: usize) -> f64 {
        self.choice.compiled.plan.estimated_ms(self.ring, self.choice.packing, batch, threads)
    }

    /// Writes the two artifacts and the reports (`preface`, then the report) into `dir`, replacing
    /// an earlier build there; returns the text report.
    pub fn write(&self, dir: &Path, preface: &str) -> Result<String, DriverError> {
        std::fs::create_dir_all(dir).map_err(|e| DriverError::Io(format!("cannot create {}: {e}", dir.display())))?;
        crate::scheme::remove_stale(&legacy_path(dir))?;
        artifact::save(&crate::tfhe::server_path(dir), Kind::CkksServer, &self.server)?;
        artifact::save(&crate::tfhe::client_path(dir), Kind::CkksClient, &self.client)?;
        let text = format!("{preface}{}", self.text);
        crate::scheme::write_reports(dir, &text, &self.json)?;
        Ok(text)
    }
}

/// [`compile`], then [`Build::write`] into `dir`.
pub fn build(
    model_path: &Path,
    calibration: &ArrayD<f32>,
    dir: &Path,
    search: &Search,
    packings: &[Packing],
    batch: usize,
    threads: usize,
) -> Result<(Choice, Ring, String), DriverError> {
    let b = compile(model_path, calibration, search, packings, batch, threads)?;
    let text = b.write(dir, "")?;
    Ok((b.choice, b.ring, text))
}

pub(crate) fn ckks_error(e: fhec_ckks::CkksError) -> DriverError {
    DriverError::Ckks(e.to_string())
}

fn report(a: &ServerArtifact, choice: &Choice, ring: Ring) -> (String, serde_json::Value) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = &a.plan;
    let cost = plan.cost();
    let (bits, deepest) = plan.bits_needed();
    let batch_ms = plan.estimated_batch_ms(ring, threads);
    let count = |layer: &str| plan.nodes.iter().filter(|n| n.layer == layer).count();
    // Feature-major: a ciphertext per `per` samples, its estimate on one thread.
    let feature = match a.packing {
        Packing::FeatureMajor => plan
            .layers()
            .ok()
            .and_then(|l| Some((l.samples_per_ciphertext(ring).ok()?, plan.estimated_feature_ms(&l, ring), l))),
        Packing::BatchMajor => None,
    };
    let (packing_line, time_line) = match &feature {
        None => (
            format!("batch-major: one sample per slot, {} samples per ciphertext", ring.slots()),
            format!(
                "estimated time per batch on {threads} threads: {batch_ms:.0} ms, i.e. {:.3} ms per sample at full batch; a single sample costs the whole batch",
                batch_ms / ring.slots() as f64
            ),
        ),
        Some((per, ct_ms, l)) => (
            format!(
                "feature-major: one sample per block of {} slots, {per} samples per ciphertext; each layer one matrix-vector product by diagonals ({} in all) and one polynomial",
                l.block,
                l.stages.iter().map(|s| s.diagonals().len()).sum::<usize>()
            ),
            format!(
                "estimated time per ciphertext on one thread: {ct_ms:.0} ms (latency at batch 1); {:.0} samples/s with full ciphertexts on {threads} threads",
                (per * threads) as f64 / (ct_ms / 1e3)
            ),
        ),
    };
    let mut text = format!(
        "model: {}\nscheme: CKKS (poulpy), {packing_line}\n\
         ring: 2^{}, {}-bit modulus (128-bit security); deepest path {} bits + scale {} + headroom {} (ends at {deepest})\n\
         activations: {} polynomials (Chebyshev basis) on calibrated windows, fit and degree per layer below\n\
         fidelity to the float model on {} calibration samples (cleartext simulation): {:.2}% (budget: {:.2}%){}\n\
         polynomial reads outside their window on the calibration samples: {} of {}\n\
         per sample: {} weights, {} activations, depth {}\n\
         {time_line}\n\nlayers:\n",
        a.model,
        ring.log_n,
        ring.k,
        bits,
        fhec_ckks::LOG_DELTA,
        fhec_ckks::HEADROOM,
        plan.nodes.len(),
        choice.calibration.1,
        choice.fidelity,
        choice.required,
        if choice.within_budget { "" } else { "  NOT WITHIN BUDGET: kept the most faithful degrees" },
        choice.reads.outside,
        choice.reads.total,
        cost.scalar_ops,
        cost.polynomials,
        cost.depth,
    );
    for (l, p) in choice.layers.iter().zip(&choice.approx) {
        text.push_str(&format!("  {l:40} {:6} polynomials: {p}\n", count(l)));
    }
    let fired: Vec<String> = choice.rules_fired.iter().map(|(r, n)| format!("{r} x{n}")).collect();
    text.push_str(&format!("\npolynomials offered (per offer, the layers it was made to): {}\ncandidates no other dominates (root mean square distance from the function on the calibration inputs):\n", fired.join(", ")));
    for (l, c) in choice.layers.iter().zip(&choice.candidates) {
        let c: Vec<String> = c.iter().map(|(p, e)| format!("{p} ({e:.2e})")).collect();
        text.push_str(&format!("  {l:40} {}\n", c.join(", ")));
    }
    let simulated: Vec<&fhec_lower::ckks::Trial> = choice.trials.iter().filter(|t| t.fidelity.is_some()).collect();
    text.push_str(&format!(
        "\npolynomials per layer, cheapest first ({} assignments; {} simulated, the rest cost more or fit no ring; estimates per ciphertext on one thread):\n",
        choice.trials.len(),
        simulated.len()
    ));
    for t in simulated {
        let ring = t.log_n.map_or("no ring".to_string(), |n| format!("2^{n}"));
        let p: Vec<String> = t.approx.iter().map(|a| a.to_string()).collect();
        text.push_str(&format!(
            "  [{}] ring {ring}, {:.0} ms: {:.2}%\n",
            p.join(", "),
            t.estimated_ms,
            t.fidelity.unwrap_or(0.0)
        ));
    }
    let json = json!({
        "model": a.model,
        "scheme": "ckks",
        "ring": { "log_n": ring.log_n, "modulus_bits": ring.k, "slots": ring.slots() },
        "bits_needed": bits,
        "trials": choice.trials.iter().map(|t| json!({"degrees": t.degrees(), "polynomials": t.approx.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "log_n": t.log_n, "estimated_ms_one_thread": t.estimated_ms, "fidelity": t.fidelity})).collect::<Vec<_>>(),
        "fidelity": choice.fidelity,
        "required": choice.required,
        "within_budget": choice.within_budget,
        "reads_outside_window": choice.reads.outside,
        "reads": choice.reads.total,
        "scalar_ops": cost.scalar_ops,
        "polynomials": cost.polynomials,
        "depth": cost.depth,
        "packing": a.packing.name(),
        "samples_per_ciphertext": feature.as_ref().map_or(ring.slots(), |f| f.0),
        "estimated_batch_ms": batch_ms,
        "estimated_feature_major_ciphertext_ms_one_thread": feature.as_ref().map(|f| f.1),
        "threads": threads,
        "layers": choice.layers.iter().zip(&choice.approx).map(|(l, p)| json!({"name": l, "polynomials": count(l), "degree": p.degree, "fit": p.fit.name()})).collect::<Vec<_>>(),
        "rules_fired": choice.rules_fired.iter().map(|(r, n)| json!({"rule": r, "layers": n})).collect::<Vec<_>>(),
    });
    (text, json)
}

/// Reads and checks a CKKS build: its client artifact, and its server artifact (the plan), which
/// must be the one the client artifact names.
pub fn load(dir: &Path) -> Result<Loaded, DriverError> {
    if legacy_path(dir).is_file() && !crate::tfhe::client_path(dir).is_file() {
        return Err(DriverError::Artifact(format!(
            "{}: a CKKS build of an older fhec (ckks.json): rebuild the model",
            dir.display()
        )));
    }
    let client = load_client(dir)?;
    let server = load_server(dir)?;
    let (client_what, server_what) = (crate::tfhe::client_path(dir), crate::tfhe::server_path(dir));
    Loaded::new(client, server, &client_what.display().to_string(), &server_what.display().to_string())
}

impl Loaded {
    /// A build from its two artifacts, checked: the plan must be the one the client artifact names
    /// (`client_what` and `what` name them in errors).
    pub fn new(
        client: ClientArtifact,
        server: ServerArtifact,
        client_what: &str,
        what: &str,
    ) -> Result<Loaded, DriverError> {
        if server.digest() != client.plan_digest {
            return Err(DriverError::Mismatch(format!(
                "{what} is not the plan {client_what} was built with (another build's server artifact): rebuild, or copy both from one build"
            )));
        }
        let (ring, layout) = server.layout(what)?;
        if layout != client.layout {
            return Err(DriverError::Artifact(format!("{what}: the plan's layout differs from the client artifact's")));
        }
        let parse = |src: &str, part: &str| -> Result<Module, DriverError> {
            let m: Module = src.parse().map_err(|e| DriverError::Artifact(format!("{client_what}: {part}: {e}")))?;
            m.verify().map_err(|e| DriverError::Artifact(format!("{client_what}: {part}: {e}")))?;
            Ok(m)
        };
        let preprocess =
            if client.preprocess.is_empty() { None } else { Some(parse(&client.preprocess, "pre-processing")?) };
        let postprocess = parse(&client.postprocess, "post-processing")?;
        let compiled = fhec_lower::ckks::Compiled { plan: server.plan, preprocess, postprocess };
        Ok(Loaded { input_shape: client.input_shape, ring, packing: server.packing, compiled })
    }
}

/// Reads `DIR/server.fhec` of a CKKS build (the plan; not checked against a client artifact).
pub fn load_server(dir: &Path) -> Result<ServerArtifact, DriverError> {
    let path = crate::tfhe::server_path(dir);
    Ok(artifact::load(&path, Kind::CkksServer).map_err(wrong_scheme)?.0)
}

/// Reads `DIR/client.fhec` of a CKKS build.
pub fn load_client(dir: &Path) -> Result<ClientArtifact, DriverError> {
    let path = crate::tfhe::client_path(dir);
    let (client, _): (ClientArtifact, _) = artifact::load(&path, Kind::CkksClient).map_err(wrong_scheme)?;
    client.layout.validate().map_err(|e| DriverError::Artifact(format!("{}: {e}", path.display())))?;
    Ok(client)
}

/// A runtime error loading an artifact, said in the user's terms when it is the other scheme's.
pub(crate) fn wrong_scheme(e: fhec_runtime::RuntimeError) -> DriverError {
    let text = e.to_string();
    for (found, is) in
        [(Kind::CkksClient, "CKKS"), (Kind::CkksServer, "CKKS"), (Kind::Client, "TFHE"), (Kind::Server, "TFHE")]
    {
        if text.contains(&format!("holds {found};")) {
            return DriverError::Artifact(format!(
                "{text}: this is a {is} build, and this command expects the other scheme's"
            ));
        }
    }
    e.into()
}

impl Loaded {
    pub fn plan(&self) -> &Plan {
        &self.compiled.plan
    }

    /// The plan's inputs for every sample (the client's pre-processing, flattened).
    pub fn encode(&self, x: &ArrayD<f32>) -> Result<Vec<Vec<f64>>, DriverError> {
        Ok(crate::samples(x, &self.input_shape, "input")?
            .iter()
            .map(|t| self.compiled.encode(t))
            .collect::<Result<_, _>>()?)
    }

    /// The model's outputs from the plan's outputs, per sample.
    pub fn decode(&self, values: &[Vec<f64>]) -> Result<Vec<(String, Stacked)>, DriverError> {
        let per: Vec<Vec<Tensor>> = values.iter().map(|v| self.compiled.decode(v)).collect::<Result<_, _>>()?;
        Ok(crate::stack_outputs(&self.compiled.postprocess, per))
    }

    /// Cleartext simulation of every sample: exactly the polynomials the encrypted run evaluates,
    /// without CKKS's approximation error (about 1e-4 of the outputs' scale, see `fhec_ckks`).
    pub fn simulate(&self, x: &ArrayD<f32>) -> Result<(Vec<(String, Stacked)>, Reads), DriverError> {
        let mut reads = Reads::default();
        let values = self
            .encode(x)?
            .iter()
            .map(|v| self.plan().eval(v, &mut reads))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ckks_error)?;
        Ok((self.decode(&values)?, reads))
    }
}
