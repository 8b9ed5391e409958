#!/usr/bin/env python3
"""Checks that builds which follow a test build reuse its compilation units.

1. `cargo build -p fhec-cli` needs no unit that `cargo test` does not build (a user's `cargo run`).
2. CI's Python extension build (maturin: `-p fhec-python --features ckks`, dev profile, nightly) needs
   no unit that CI's test command does not build, but its own and PyO3's.

The unit graphs come from the nightly toolchain (`--unit-graph` is unstable) and nothing is built.
A unit is compared with its features, profile settings (not the profile's name) and dependencies,
recursively. When a dependency change makes them differ, the second build recompiles part of the
dependency tree (tract, tfhe: minutes): give the missing features to the unused dependencies in
compiler/Cargo.toml (all builds) or python/Cargo.toml (the extension's).
"""
import json
import subprocess
import sys


def units(args):
    out = subprocess.run(["cargo", "+nightly", *args, "--unit-graph", "-Z", "unstable-options"],
                         check=True, capture_output=True, text=True).stdout
    us = json.loads(out)["units"]
    memo = {}

    def key(i):
        u = us[i]
        profile = {k: v for k, v in u["profile"].items() if k != "name"}
        return (u["pkg_id"], u["target"]["name"], u["mode"], tuple(sorted(u["features"])), json.dumps(profile, sort_keys=True))

    def full(i):
        if i not in memo:
            memo[i] = hash((key(i), tuple(sorted(full(d["index"]) for d in us[i]["dependencies"]))))
        return memo[i]

    return {full(i): key(i) for i in range(len(us))}


# Packages only the Python extension builds.
PYTHON_ONLY = ("fhec-python@", "pyo3", "numpy@")
# CI's test command (.ci/run, the README).
CI_TEST = ["test", "--no-run", "--features", "fhec-cli/ckks,wine-service/ckks"]


def check(name, build, test, allowed=()):
    later, first = units(build), units(test)
    missing = sorted({v[:4] for k, v in later.items() if k not in first})
    missing = [m for m in missing if not m[0].split("#")[-1].startswith(allowed)]
    for pkg, target, mode, features in missing:
        print(f"only in {name}: {pkg.split('#')[-1]} {target} ({mode}) features {list(features)}")
    print(f"{name}: {len(later)} units, {len(missing)} not shared with `cargo {' '.join(test)}`")
    return not missing


ok = check("`cargo build -p fhec-cli`", ["build", "-p", "fhec-cli"], ["test", "--no-run"])
py = ["rustc", "-p", "fhec-python", "--features", "ckks", "--lib", "--profile", "dev"]
ok &= check("the Python extension (CI)", py, CI_TEST, PYTHON_ONLY)
sys.exit(0 if ok else 1)
