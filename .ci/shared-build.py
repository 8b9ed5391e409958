#!/usr/bin/env python3
"""Checks that `cargo build -p fhec-cli` needs no compilation unit that `cargo test` does not build.

Both unit graphs come from the nightly toolchain (`--unit-graph` is unstable) and nothing is built.
A unit is compared with its features, profile settings (not the profile's name) and dependencies,
recursively. When a dependency change makes them differ, `cargo run -p fhec-cli` after `cargo test`
recompiles part of the dependency tree: add the missing features to compiler/Cargo.toml.
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


run = units(["build", "-p", "fhec-cli"])
test = units(["test", "--no-run"])
missing = sorted({v[:4] for k, v in run.items() if k not in test})
for pkg, target, mode, features in missing:
    print(f"only in `cargo build -p fhec-cli`: {pkg.split('#')[-1]} {target} ({mode}) features {list(features)}")
print(f"{len(run)} units, {len(missing)} not shared with `cargo test`")
sys.exit(1 if missing else 0)
