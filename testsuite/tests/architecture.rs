//! ARCHITECTURE.md's dependency invariants, checked against the resolved dependency graph
//! (`cargo metadata --offline`: the build has already fetched every package).
//!
//! - Only `fhec-onnx` depends on tract (and the harnesses: tests and benchmarks write ONNX), only `fhec-runtime` on tfhe, only `fhec-jit` on cranelift,
//!   only `fhec-ckks` on poulpy, only `fhec-passes` on egg.
//! - `fhec-ir` reaches none of them, even transitively.
//! - The `fhec` library reaches no HTTP or async stack (axum, tokio, hyper, rustls, reqwest): a
//!   build script that compiles a model does not build a web server. Only `fhec-serve`, its clients
//!   (`fhec-cli`, the Python package's `fhec-python`) and the test suite use them.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The dependency graph: per package, its normal (not dev, not build) dependencies' names as
/// resolved with default features; per workspace package, the normal dependencies it declares
/// (optional ones included: poulpy is behind a feature).
struct Graph {
    resolved: BTreeMap<String, BTreeSet<String>>,
    declared: BTreeMap<String, BTreeSet<String>>,
}

/// This machine's target triple (the platform-specific packages of others are not downloaded).
fn host() -> String {
    let out = Command::new("rustc").arg("-vV").output().expect("running rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names the host").to_string()
}

fn graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform", &host()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut deps = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].to_string();
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| names[d["pkg"].as_str().unwrap()].to_string());
        deps.entry(name).or_insert_with(BTreeSet::new).extend(normal);
    }
    let declared = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| {
            let ds = p["dependencies"].as_array().unwrap().iter().filter(|d| d["kind"].is_null());
            (p["name"].as_str().unwrap().to_string(), ds.map(|d| d["name"].as_str().unwrap().to_string()).collect())
        })
        .collect();
    Graph { resolved: deps, declared }
}

/// Every package `root` reaches through normal dependencies (itself excluded).
fn reaches(deps: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        for d in deps.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// The workspace packages that declare a dependency on a package whose name starts with `prefix`.
fn direct_users(g: &Graph, prefix: &str) -> BTreeSet<String> {
    g.declared.iter().filter(|(_, ds)| ds.iter().any(|d| d.starts_with(prefix))).map(|(p, _)| p.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_heavy_dependency_has_one_owner() {
    let g = graph();
    // The test suite and the benchmarks also read and write ONNX protobuf through tract's types.
    assert_eq!(direct_users(&g, "tract-"), set(&["fhec-onnx", "fhec-testsuite", "fhec-benches"]), "tract");
    assert_eq!(direct_users(&g, "tfhe"), set(&["fhec-runtime"]), "tfhe");
    assert_eq!(direct_users(&g, "cranelift"), set(&["fhec-jit"]), "cranelift");
    assert_eq!(direct_users(&g, "poulpy"), set(&["fhec-ckks"]), "poulpy");
    assert_eq!(direct_users(&g, "egg"), set(&["fhec-passes"]), "egg");
}

#[test]
fn the_ir_reaches_no_backend_frontend_or_optimizer() {
    let g = graph();
    let reached = reaches(&g.resolved, "fhec-ir");
    for heavy in ["tract-onnx", "tfhe", "egg", "cranelift-codegen", "poulpy-hal"] {
        assert!(!reached.contains(heavy), "fhec-ir reaches {heavy}");
    }
}

#[test]
fn the_library_has_no_http_or_async_stack() {
    let g = graph();
    let deps = &g.resolved;
    let stack = ["axum", "tokio", "hyper", "rustls", "reqwest"];
    let reached = reaches(deps, "fhec");
    assert!(reached.contains("fhec-lower"), "the library compiles models");
    for p in stack {
        assert!(!reached.contains(p), "the fhec library reaches {p}");
    }
    assert!(reaches(deps, "fhec-serve").contains("axum"), "fhec-serve is where the service lives");
    assert!(!reaches(deps, "wine-service").contains("tokio"), "examples/wine-service builds on the library alone");
    for p in stack {
        let users = direct_users(&g, p);
        let allowed = set(&["fhec-serve", "fhec-cli", "fhec-python", "fhec-testsuite"]);
        assert!(users.is_subset(&allowed), "{p} is used by {users:?}");
    }
}
