//! The Kubernetes manifests in `deploy/kubernetes/base/` (and the TLS overlay beside it) validate, offline, against the Kubernetes JSON
//! schemas (strict: unknown fields are errors) vendored in `deploy/kubernetes/schema/k8s.json` (see
//! its `extract.py`), and agree with what `fhec serve` expects (probes, port, grace period). That its
//! command line parses is checked in `compiler/tests/cli.rs`, beside the binary.

use serde_json::{Value, json};
use std::path::PathBuf;

fn deploy() -> PathBuf {
    fhec_testsuite::root().join("../deploy")
}

/// Every object in every manifest, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(deploy().join("kubernetes/base")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for path in
        files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value =
                <Value as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !v.is_null() {
                out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

fn validate(schema: &Value, kind: &str, object: &Value) -> Vec<String> {
    let defs = &schema["$defs"];
    let def = schema["kinds"][kind].as_str().unwrap_or_else(|| panic!("no schema for {kind}: add it to extract.py"));
    let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": format!("#/$defs/{def}"), "$defs": defs});
    let validator = jsonschema::validator_for(&root).unwrap();
    validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn kind_of(v: &Value) -> String {
    format!("{}/{}", v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap())
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy().join("kubernetes/schema/k8s.json")).unwrap()).unwrap();
    let all = manifests();
    let kinds: Vec<String> = all.iter().map(|(_, v)| kind_of(v)).collect();
    for want in
        ["apps/v1/Deployment", "v1/Service", "autoscaling/v2/HorizontalPodAutoscaler", "v1/PersistentVolumeClaim"]
    {
        assert!(kinds.iter().any(|k| k == want), "no {want} in deploy/kubernetes/base");
    }
    for (file, v) in &all {
        let errors = validate(&schema, &kind_of(v), v);
        assert!(errors.is_empty(), "{file}: {}", errors.join("\n"));
    }
    // The validation is real: a misspelt field and a wrong type are caught.
    let (_, deployment) = all.iter().find(|(_, v)| v["kind"] == "Deployment").unwrap();
    let mut typo = deployment.clone();
    typo["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = json!({});
    assert!(!validate(&schema, "apps/v1/Deployment", &typo).is_empty());
    let mut wrong = deployment.clone();
    wrong["spec"]["replicas"] = json!("two");
    assert!(!validate(&schema, "apps/v1/Deployment", &wrong).is_empty());
}

/// The Deployment's probes use the server's health
/// routes, and the Service and HPA point at it.
#[test]
fn manifests_agree_with_fhec_serve() {
    let all = manifests();
    let get = |kind: &str| &all.iter().find(|(_, v)| v["kind"] == kind).unwrap().1;
    let d = get("Deployment");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "serve");
    let routes: Vec<&str> = fhec_serve::ROUTES.iter().map(|(_, p)| *p).collect();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(routes.contains(&path), "{probe} probes {path}, which fhec serve does not route");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let listen = args.iter().find_map(|a| a.strip_prefix("--listen=")).unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(c["ports"][0]["containerPort"], json!(port));
    let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 300, "the grace period ({grace} s) must exceed the default request timeout (300 s) to drain");
    let s = get("Service");
    assert_eq!(s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
    let h = get("HorizontalPodAutoscaler");
    assert_eq!(h["spec"]["scaleTargetRef"]["name"], d["metadata"]["name"]);
}

/// The TLS overlay (`deploy/kubernetes/tls`) is the base plus JSON patches. Applied here as kustomize
/// applies them, every object still validates; the server gets its certificate and key from the
/// mounted `kubernetes.io/tls` secret, the probes speak HTTPS, and the Service forwards to the port
/// the server listens on.
#[test]
fn the_tls_overlay_patches_the_base_into_valid_manifests() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy().join("kubernetes/schema/k8s.json")).unwrap()).unwrap();
    let overlay: Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy().join("kubernetes/tls/kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(overlay["resources"], json!(["../base"]));
    let mut all = manifests();
    for p in overlay["patches"].as_array().unwrap() {
        let target = &p["target"];
        let ops: Value = serde_yaml::from_str(p["patch"].as_str().unwrap()).unwrap();
        let patch: json_patch::Patch =
            serde_json::from_value(ops).unwrap_or_else(|e| panic!("patch for {target}: {e}"));
        let (_, object) = all
            .iter_mut()
            .find(|(_, v)| v["kind"] == target["kind"] && v["metadata"]["name"] == target["name"])
            .unwrap_or_else(|| panic!("the overlay patches {target}, which the base does not have"));
        json_patch::patch(object, &patch).unwrap_or_else(|e| panic!("patch for {target}: {e}"));
    }
    for (file, v) in &all {
        let errors = validate(&schema, &kind_of(v), v);
        assert!(errors.is_empty(), "{file} with the TLS overlay: {}", errors.join("\n"));
    }
    let get = |kind: &str| &all.iter().find(|(_, v)| v["kind"] == kind).unwrap().1;
    let pod = &get("Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for (flag, file) in [("--tls-cert=", "tls.crt"), ("--tls-key=", "tls.key")] {
        let path = args.iter().find_map(|a| a.strip_prefix(flag)).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        let (dir, name) = path.rsplit_once('/').unwrap();
        assert_eq!(name, file, "a kubernetes.io/tls secret holds {file}");
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
        assert_eq!(volume["secret"]["secretName"], "fhec-tls");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let port = &get("Service")["spec"]["ports"][0];
    assert_eq!((&port["port"], &port["appProtocol"]), (&json!(443), &json!("https")));
    assert_eq!(port["targetPort"], c["ports"][0]["name"]);
}
