#!/bin/bash
# Tree ensembles (BENCHMARKS.md): decisions on the client (the default) beside --private-thresholds,
# one binary, one run. Needs the release CLI: cargo build --release -p fhec-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
for m in tree_cancer_skl forest_wine_skl gbr_diabetes_skl xgb_cancer xgbrf_wine lgbm_iris; do
  d=testsuite/models/$m
  for v in client private; do
    flag=""
    [ "$v" = private ] && flag="--private-thresholds"
    ./target/release/fhec build "$d/model.onnx" --calibration "$d/inputs.npy" -o "$out/$m-$v.fhec" --quiet $flag
    echo "== $m $v: $(grep -E '^parameter set' "$out/$m-$v.fhec/report.txt" | cut -d' ' -f3) $(grep -E '^bootstraps' "$out/$m-$v.fhec/report.txt")"
    ./target/release/fhec bench "$out/$m-$v.fhec" --input "$d/inputs.npy" --quiet --json "$out/$m-$v.json" | grep -i latency
  done
  ./target/release/fhec predict "$out/$m-client.fhec" --mode fhe --input "$d/inputs.npy" --labels "$d/labels.npy" | tail -1
done
