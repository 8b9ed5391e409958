#!/usr/bin/env bash
# Load test of `fhec serve` on this machine (loopback): compiles the bundled wine MLP, starts a
# server, and runs `fhec client loadtest` twice:
#   1. steady: CLIENTS concurrent clients within the server's capacity;
#   2. overload: 3x the server's capacity (workers + queue) in concurrent clients: the server must
#      answer the excess with 429 + Retry-After, and every request must still complete (the client
#      retries) and decrypt to the cleartext simulation's class.
# Prints throughput, p50/p99 latency, failed (lost) requests, wrong answers and 429s for each.
# Usage: deploy/loadtest.sh [OUT_DIR]   (FHEC=path/to/fhec to skip the cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/loadtest}
mkdir -p "$out"
if [[ -z "${FHEC:-}" ]]; then
    cargo build --release --locked -q -p fhec-cli
    FHEC=target/release/fhec
fi
model=testsuite/models/mlp_wine
workers=2 queue=2 requests=${REQUESTS:-24}
"$FHEC" --quiet build "$model/model.onnx" --calibration "$model/inputs.npy" -o "$out/mlp_wine.fhec" > /dev/null
"$FHEC" --quiet keygen "$out/mlp_wine.fhec" --keys "$out/keys" 2> /dev/null
token=loadtest-token-$RANDOM$RANDOM$RANDOM
echo "loadtest $token" > "$out/tokens"
rm -rf "$out/store"
"$FHEC" serve "$out/mlp_wine.fhec" --listen 127.0.0.1:0 --store "$out/store" --tokens "$out/tokens" \
    --workers $workers --queue $queue 2> "$out/server.log" &
server=$!
trap 'kill $server 2> /dev/null || true' EXIT
for _ in $(seq 100); do
    addr=$(grep -o 'addr=[0-9.:]*' "$out/server.log" | head -1 | cut -d= -f2 || true)
    [[ -n "$addr" ]] && break
    sleep 0.1
done
export FHEC_SERVER=http://$addr FHEC_TOKEN=$token
echo "== steady: 2 clients (capacity $((workers + queue))), $requests requests of 1 sample"
"$FHEC" --quiet client loadtest "$out/mlp_wine.fhec" --keys "$out/keys" --input "$model/inputs.npy" \
    --clients 2 --requests "$requests" --json "$out/steady.json"
clients=$((3 * (workers + queue)))
echo "== overload: $clients clients (3x capacity), $requests requests of 1 sample"
"$FHEC" --quiet client loadtest "$out/mlp_wine.fhec" --keys "$out/keys" --input "$model/inputs.npy" \
    --clients $clients --requests "$requests" --json "$out/overload.json"
echo "== server: 429s sent, requests by status"
curl -s "$FHEC_SERVER/metrics" | grep -E '^fhec_(rejected_overload_total|requests_total\{method="POST")' || true
kill -TERM $server
wait $server
echo "server drained and exited cleanly"
