"""Extracts the ONNX conformance node tests for the ops fhec claims into testsuite/conformance/node/.

The node tests ship inside the `onnx` wheel (onnx/backend/test/data/node/<test>/: model.onnx and
test_data_set_*/{input,output}_*.pb). This script downloads the pinned wheel from PyPI into a cache
outside git (~/.cache/fhec-onnx), keeps every test whose graph uses only ops registered in
frontends/onnx/src/ops/mod.rs, and copies it into the repo, so that `cargo test` (and CI) run them
without Python or network: `python testsuite/gen/conformance.py` after adding an op.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ONNX_VERSION = "1.19.0"  # the last wheels that ship the backend test data
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "testsuite" / "conformance" / "node"
CACHE = Path(os.environ.get("FHEC_ONNX_CACHE", Path.home() / ".cache" / "fhec-onnx"))


def claimed_ops():
    """(domain, op type) pairs: the default domain as "", `ML` as "ai.onnx.ml"."""
    text = (ROOT / "frontends" / "onnx" / "src" / "ops" / "mod.rs").read_text()
    ops = {("", op) for domain, op in re.findall(r'\(\s*"([^"]*)",\s*"([A-Za-z0-9]+)"', text) if domain == ""}
    return ops | {("ai.onnx.ml", op) for op in re.findall(r'\(\s*ML,\s*"([A-Za-z0-9]+)"', text)}


def wheel():
    CACHE.mkdir(parents=True, exist_ok=True)
    found = list(CACHE.glob(f"onnx-{ONNX_VERSION}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"onnx=={ONNX_VERSION}", "--no-deps", "--only-binary=:all:", "-d", str(CACHE)],
            check=True,
        )
        found = list(CACHE.glob(f"onnx-{ONNX_VERSION}-*.whl"))
    return found[0]


def main():
    import onnx  # any onnx version reads the models

    ops = claimed_ops()
    extracted = CACHE / f"node-{ONNX_VERSION}"
    if not extracted.exists():
        with zipfile.ZipFile(wheel()) as z:
            members = [m for m in z.namelist() if m.startswith("onnx/backend/test/data/node/")]
            z.extractall(CACHE / "tmp", members)
        shutil.move(str(CACHE / "tmp" / "onnx" / "backend" / "test" / "data" / "node"), extracted)
        shutil.rmtree(CACHE / "tmp")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    kept = 0
    for test in sorted(os.listdir(extracted)):
        model = onnx.load(str(extracted / test / "model.onnx"))
        types = {("" if n.domain == "ai.onnx" else n.domain, n.op_type) for n in model.graph.node}
        if not types or not types <= ops:
            continue
        shutil.copytree(extracted / test, OUT / test)
        kept += 1
    (OUT.parent / "VERSION").write_text(f"onnx {ONNX_VERSION}: {kept} node tests over {len(ops)} claimed ops\n")
    print(f"kept {kept} node tests for {len(ops)} claimed ops into {OUT}")


if __name__ == "__main__":
    main()
