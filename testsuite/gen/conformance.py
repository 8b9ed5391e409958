"""Extracts the ONNX conformance node tests for the ops fhec claims into testsuite/conformance/node/,
the exported torch `nn` modules (`pytorch-converted`, `pytorch-operator`) whose ops it claims into
testsuite/conformance/pytorch/, and the light model zoo into testsuite/conformance/light/.

The node tests ship inside the `onnx` wheel (onnx/backend/test/data/node/<test>/: model.onnx and
test_data_set_*/{input,output}_*.pb). This script downloads the pinned wheel from PyPI into a cache
outside git (~/.cache/fhec-onnx), keeps every test whose graph uses only ops registered in
frontends/onnx/src/ops/mod.rs, and copies it into the repo, so that `cargo test` (and CI) run them
without Python or network: `python testsuite/gen/conformance.py` after adding an op.

The light models (AlexNet ... ZFNet-512 with every weight a `ConstantOfShape`) ship one expected
output, which ONNX's runner computed on the input `arange(n) / n`; it is a softmax of equal logits
(0.001 everywhere), so this script also writes `light_<name>_logits.onnx`, the same model ending
before its softmax (DenseNet-121 has none: the whole model), and `light_<name>_logits.npy`, onnxruntime's output of it on that input (needs
onnxruntime; the committed files were made with 1.23).
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
PYTORCH = ROOT / "testsuite" / "conformance" / "pytorch"
LIGHT = ROOT / "testsuite" / "conformance" / "light"
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
    extracted = data("node")
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
    pytorch(ops)
    light()


def data(folder):
    """onnx/backend/test/data/<folder> of the pinned wheel, extracted once into the cache."""
    extracted = CACHE / f"{folder}-{ONNX_VERSION}"
    if not extracted.exists():
        with zipfile.ZipFile(wheel()) as z:
            members = [m for m in z.namelist() if m.startswith(f"onnx/backend/test/data/{folder}/")]
            z.extractall(CACHE / "tmp", members)
        shutil.move(str(CACHE / "tmp" / "onnx" / "backend" / "test" / "data" / folder), extracted)
        shutil.rmtree(CACHE / "tmp")
    return extracted


def pytorch(ops):
    """The torch module exports whose ops fhec claims, as <folder>/<test>/ (node-test layout)."""
    import onnx

    if PYTORCH.exists():
        shutil.rmtree(PYTORCH)
    kept = 0
    for folder in ["pytorch-converted", "pytorch-operator"]:
        src = data(folder)
        for test in sorted(os.listdir(src)):
            model = onnx.load(str(src / test / "model.onnx"))
            types = {("" if n.domain == "ai.onnx" else n.domain, n.op_type) for n in model.graph.node}
            if types <= ops:
                shutil.copytree(src / test, PYTORCH / folder / test)
                kept += 1
    print(f"kept {kept} torch module exports into {PYTORCH}")


def light():
    """The light model zoo, with onnxruntime's logits on ONNX's input (see the module docs)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    src = data("light")
    if LIGHT.exists():
        shutil.rmtree(LIGHT)
    LIGHT.mkdir(parents=True)
    for path in sorted(src.glob("light_*.onnx")):
        shutil.copy(path, LIGHT / path.name)
        shutil.copy(src / f"{path.stem}_output_0.pb", LIGHT / f"{path.stem}_output_0.pb")
        model = onnx.load(str(path))
        out = model.graph.output[0]
        last = next(i for i, n in enumerate(model.graph.node) if out.name in n.output)
        if model.graph.node[last].op_type == "Softmax":
            logits = model.graph.node[last].input[0]
            del model.graph.node[last]
            del model.graph.output[:]
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(logits))
        cut = LIGHT / f"{path.stem}_logits.onnx"
        onnx.save(model, str(cut))
        inits = {i.name for i in model.graph.initializer}
        x = next(i for i in model.graph.input if i.name not in inits)
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feed = (np.arange(n).reshape(shape) / n).astype(np.float32)
        (y,) = ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"]).run(None, {x.name: feed})
        np.save(LIGHT / f"{path.stem}_logits.npy", y.astype(np.float32))
        print(f"{path.stem}: {model.graph.output[0].name} {y.shape}, from {y.min():.6g} to {y.max():.6g}")


if __name__ == "__main__":
    main()
