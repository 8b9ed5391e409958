"""Extracts the Kubernetes JSON schemas the manifests in deploy/kubernetes (base/ and the tls/ overlay) need, for offline
validation in CI (testsuite/tests/deploy.rs, no Python there).

Source: the `kubernetes-validate` wheel from PyPI, which bundles the schemas generated from the
Kubernetes OpenAPI documents ("local-strict": unknown fields are errors). Writes k8s.json:
{"version", "kinds": {"apiVersion/kind": definition}, "$defs": {...}} holding only the
definitions reachable from the kinds used.

    pip download kubernetes-validate==1.37.0 --no-deps -d /tmp/kv
    python deploy/kubernetes/schema/extract.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""
import json
import sys
import zipfile
from pathlib import Path

VERSION = "v1.34.0"
KINDS = {
    "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
    "v1/Service": "io.k8s.api.core.v1.Service",
    "autoscaling/v2/HorizontalPodAutoscaler": "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
    "v1/PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
    "policy/v1/PodDisruptionBudget": "io.k8s.api.policy.v1.PodDisruptionBudget",
    "v1/Secret": "io.k8s.api.core.v1.Secret",
}


def refs(node, out):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/$defs/"):
            out.add(r[len("#/$defs/"):])
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def main(wheel):
    name = f"kubernetes_validate/kubernetes-json-schema/{VERSION}-local-strict/_definitions.json"
    with zipfile.ZipFile(wheel) as z:
        defs = json.loads(z.read(name))["$defs"]
    keep, todo = set(), list(KINDS.values())
    while todo:
        d = todo.pop()
        if d in keep:
            continue
        keep.add(d)
        found = set()
        refs(defs[d], found)
        todo.extend(found - keep)
    out = {"version": VERSION, "kinds": KINDS, "$defs": {k: defs[k] for k in sorted(keep)}}
    path = Path(__file__).with_name("k8s.json")
    path.write_text(json.dumps(out, separators=(",", ":"), sort_keys=True))
    print(f"{path}: {len(keep)} definitions, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
