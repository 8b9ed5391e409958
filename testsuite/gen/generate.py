#!/usr/bin/env python3
"""Generate the fhec model corpus (testsuite/models) and invalid inputs (testsuite/invalid).

Deterministic: every seed is fixed, torch runs on CPU with 2 threads and
deterministic algorithms, onnxruntime runs single-threaded with graph
optimisations disabled.  See README.md next to this file.

Conventions (per case directory testsuite/models/<name>/):
  model.onnx        exactly one graph input; everything else is initializers/constants
  inputs.npy        float32 [N, *sample_shape]  (sample_shape = input shape without batch dim)
  labels.npy        int64 [N] (classification) / float32 [N] (regression) / absent for op cases
  expected_<k>.npy  exporter's reference output k, per-sample outputs concatenated along axis 0
                    (per-sample output [1,3] -> [N,3]; [1] -> [N])
  meta.json         see write_case()
"""
import argparse
import inspect
import io
import json
import os
import random
import shutil
import warnings
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODELS = os.path.join(ROOT, "models")
INVALID = os.path.join(ROOT, "invalid")

TORCH_OPSET = 17
OP_N = 16

warnings.filterwarnings("ignore")
CASES = []  # (name, meta) for the README
# Cases written by the other scripts here, which a full run keeps: name -> script.
OTHER_GENERATORS = {
    "mlp_wine_qdq": "qdq.py",
    "cnn_digits_qop": "qdq.py",
    "mlp_cancer_keras": "keras_models.py",
    "cnn_digits_keras": "keras_models.py",
    **{c: "trees.py" for c in ["tree_cancer_skl", "forest_wine_skl", "gbr_diabetes_skl", "xgb_cancer", "xgbrf_wine",
                               "lgbm_iris"]},
}


# ----------------------------------------------------------------------------- helpers

def seed_all(seed=0):
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def dims_of(vi):
    out = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def pin_dim(model, param, value):
    """Replace the symbolic dim `param` by `value` in graph inputs, outputs and value_info."""
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == param:
                d.Clear()
                d.dim_value = value
    return model


def strip_metadata(model, key):
    """Remove metadata_props entries named `key` from nodes, value_infos, initializers, graph."""
    count = 0

    def clean(props):
        nonlocal count
        keep = [p for p in props if p.key != key]
        count += len(props) - len(keep)
        del props[:]
        props.extend(keep)

    g = model.graph
    clean(model.metadata_props)
    clean(g.metadata_props)
    for coll in (g.node, g.value_info, g.input, g.output, g.initializer):
        for item in coll:
            clean(item.metadata_props)
    return count


def graph_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def op_list(model):
    ops = set()

    def walk(g):
        for n in g.node:
            dom = n.domain
            ops.add(n.op_type if dom in ("", "ai.onnx") else f"{dom}.{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    walk(model.graph)
    return sorted(ops)


def opset_imports(model):
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def ort_session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_run_per_sample(model, inputs):
    """Run the model on every sample (batch 1) and concatenate each output along axis 0."""
    sess = ort_session(model)
    iname = sess.get_inputs()[0].name
    per_out = None
    for i in range(inputs.shape[0]):
        outs = sess.run(None, {iname: inputs[i:i + 1]})
        if per_out is None:
            per_out = [[] for _ in outs]
        for k, o in enumerate(outs):
            o = np.asarray(o)
            assert o.ndim >= 1 and o.shape[0] == 1, f"output {k} has no leading batch dim 1: {o.shape}"
            per_out[k].append(o)
    return [np.concatenate(p, axis=0) for p in per_out]


def npy_save(path, arr):
    # np.save writes a deterministic header; no pickles allowed
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def write_case(name, model, inputs, expected, *, exporter, exporter_version, dataset, task,
               labels=None, float_accuracy=None, description="", extra=None, check_ort=True,
               ort_tol=1e-4):
    d = os.path.join(MODELS, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    onnx.checker.check_model(model, full_check=True)
    gins = graph_inputs(model)
    assert len(gins) == 1, f"{name}: {len(gins)} graph inputs"
    gin = gins[0]
    in_shape = dims_of(gin)
    assert list(inputs.shape[1:]) == in_shape[1:], (name, inputs.shape, in_shape)
    assert inputs.dtype == np.float32
    outs = model.graph.output
    assert len(outs) == len(expected), (name, len(outs), len(expected))

    meta_outputs = []
    for k, (o, e) in enumerate(zip(outs, expected)):
        assert e.shape[0] == inputs.shape[0], (name, k, e.shape)
        assert e.dtype in (np.float32, np.int64), (name, k, e.dtype)
        meta_outputs.append({"name": o.name, "file": f"expected_{k}.npy", "shape": dims_of(o),
                             "dtype": str(e.dtype), "file_shape": list(e.shape)})

    ort_diffs = None
    if check_ort:
        got = ort_run_per_sample(model, inputs)
        ort_diffs = []
        for k, (g, e) in enumerate(zip(got, expected)):
            g = np.asarray(g).reshape(e.shape)
            if e.dtype == np.int64:
                diff = float(np.max(np.abs(g.astype(np.int64) - e))) if e.size else 0.0
            else:
                diff = float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))) if e.size else 0.0
            ort_diffs.append(diff)
            assert diff <= ort_tol * max(1.0, float(np.max(np.abs(e)))), (name, k, diff)

    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    npy_save(os.path.join(d, "inputs.npy"), inputs)
    if labels is not None:
        npy_save(os.path.join(d, "labels.npy"), labels)
    for k, e in enumerate(expected):
        npy_save(os.path.join(d, f"expected_{k}.npy"), e)

    imports = opset_imports(model)
    meta = {
        "name": name,
        "exporter": exporter,
        "exporter_version": exporter_version,
        "opset": imports.get("ai.onnx"),
        "opset_imports": imports,
        # verbatim opset_import list (skl2onnx 1.20 emits the default domain twice)
        "opset_import_raw": [[o.domain, int(o.version)] for o in model.opset_import],
        "dataset": dataset,
        "task": task,
        "input": {"name": gin.name, "shape": in_shape},
        "outputs": meta_outputs,
        "num_samples": int(inputs.shape[0]),
        "float_accuracy": None if float_accuracy is None else round(float(float_accuracy), 6),
        "ops": op_list(model),
        "description": description,
        "ort_max_abs_diff": ort_diffs,
    }
    if extra:
        meta.update(extra)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")
    CASES.append((name, meta))
    print(f"  {name:32s} ops={meta['ops']} acc={meta['float_accuracy']}", flush=True)
    return meta


# ----------------------------------------------------------------------------- datasets

def split(X, y, test_size, random_state=0, stratify=False):
    from sklearn.model_selection import train_test_split
    return train_test_split(X, y, test_size=test_size, random_state=random_state,
                            stratify=y if stratify else None)


def load(name):
    from sklearn import datasets
    return {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
        "digits": datasets.load_digits,
    }[name](return_X_y=True)


# ----------------------------------------------------------------------------- torch

def torch_setup():
    import logging
    import torch
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    return torch


def torch_models():
    torch = torch_setup()
    import torch.nn as nn

    class Normalize(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    def norm_from(Xtr):
        mean = Xtr.mean(axis=0).astype(np.float32)
        std = Xtr.std(axis=0).astype(np.float32)
        std[std == 0] = 1.0
        return Normalize(mean, std)

    def train(model, Xtr, ytr, loss_fn, epochs, lr, batch_size=None, seed=0, wd=0.0):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        X = torch.from_numpy(Xtr)
        y = torch.from_numpy(ytr)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        n = X.shape[0]
        for _ in range(epochs):
            model.train()
            if batch_size is None:
                batches = [torch.arange(n)]
            else:
                batches = torch.randperm(n, generator=g).split(batch_size)
            for idx in batches:
                opt.zero_grad()
                loss = loss_fn(model(X[idx]), y[idx])
                loss.backward()
                opt.step()
        model.eval()
        return model

    def torch_outputs(model, Xte):
        model.eval()
        with torch.no_grad():
            outs = [model(torch.from_numpy(Xte[i:i + 1])).numpy() for i in range(Xte.shape[0])]
        return np.concatenate(outs, axis=0).astype(np.float32)

    export_params = inspect.signature(torch.onnx.export).parameters

    def export_classic(model, sample_shape, dynamic=False, **kw):
        model.eval()
        f = io.BytesIO()
        args = dict(input_names=["input"], output_names=["output"], opset_version=TORCH_OPSET,
                    do_constant_folding=True)
        if "dynamo" in export_params:
            args["dynamo"] = False
        if dynamic:
            args["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
        args.update(kw)
        with torch.no_grad():
            torch.onnx.export(model, (torch.zeros(*sample_shape),), f, **args)
        return onnx.load_from_string(f.getvalue())

    tv = torch.__version__

    def acc_logits(out, y):
        return float((out.argmax(axis=1) == y).mean())

    # 1. logreg_cancer_torch -------------------------------------------------------
    seed_all(0)
    X, y = load("breast_cancer")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    model = nn.Sequential(norm_from(Xtr), nn.Linear(30, 1), nn.Sigmoid())
    train(model, Xtr, ytr.astype(np.float32)[:, None], nn.BCELoss(), epochs=500, lr=0.01)
    out = torch_outputs(model, Xte)
    m = export_classic(model, (1, 30))
    write_case("logreg_cancer_torch", m, Xte, [out], exporter="torch", exporter_version=tv,
               dataset="sklearn.datasets.load_breast_cancer (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64),
               float_accuracy=((out[:, 0] > 0.5).astype(np.int64) == yte).mean(),
               description="Logistic regression: (x-mean)/std (Sub, Div by constants), Linear(30,1), "
                           "Sigmoid. Output = P(class 1 = benign); predicted label = output > 0.5.")

    # 3. mlp_wine ------------------------------------------------------------------
    seed_all(0)
    X, y = load("wine")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    ytr64 = ytr.astype(np.int64)

    def wine_ref():
        return nn.Sequential(norm_from(Xtr), nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 16),
                             nn.Sigmoid(), nn.Linear(16, 3))

    model = wine_ref()
    train(model, Xtr, ytr64, nn.CrossEntropyLoss(), epochs=300, lr=0.01)
    out = torch_outputs(model, Xte)
    m = export_classic(model, (1, 13))
    write_case("mlp_wine", m, Xte, [out], exporter="torch", exporter_version=tv,
               dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64), float_accuracy=acc_logits(out, yte),
               description="Reference model. MLP 13-32-16-3: normalization inside, Linear-ReLU-Linear-"
                           "Sigmoid-Linear; output = logits [1,3], prediction = argmax.")
    wine_model = model

    # 10. mlp_wine_dynamo ------------------------------------------------------------
    dynamo_note = None
    try:
        with torch.no_grad():
            prog = torch.onnx.export(wine_model, (torch.zeros(1, 13),), dynamo=True,
                                     input_names=["input"], output_names=["output"],
                                     opset_version=18, verbose=False)
        m = onnx.load_from_string(prog.model_proto.SerializeToString())
        # The dynamo exporter stores per-node metadata_props; "pkg.torch.onnx.stack_trace" holds
        # absolute file paths and line numbers of this script, which would make the file depend on
        # where/how it was generated.  Drop only that key; the other metadata_props stay.
        stripped = strip_metadata(m, "pkg.torch.onnx.stack_trace")
        write_case("mlp_wine_dynamo", m, Xte, [out], exporter="torch", exporter_version=tv,
                   dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
                   task="classification", labels=yte.astype(np.int64),
                   float_accuracy=acc_logits(out, yte),
                   description="Same trained weights as mlp_wine, exported with "
                               "torch.onnx.export(dynamo=True, opset_version=18).",
                   extra={"export_notes": {
                       "ir_version": int(m.ir_version),
                       "stripped_metadata": f"removed {stripped} 'pkg.torch.onnx.stack_trace' "
                                            "metadata_props (absolute paths, line numbers)",
                       "metadata_props_kept": "node/value_info/graph metadata_props (namespace, "
                                              "pkg.torch.onnx.*, pkg.torch.export.*)"}})
    except Exception as e:  # noqa: BLE001
        dynamo_note = f"dynamo export failed: {type(e).__name__}: {e}"
        print("  mlp_wine_dynamo SKIPPED:", dynamo_note, flush=True)

    # 4. mlp_wine_tanh ---------------------------------------------------------------
    seed_all(1)
    model = nn.Sequential(norm_from(Xtr), nn.Linear(13, 16), nn.Tanh(), nn.Linear(16, 3))
    train(model, Xtr, ytr64, nn.CrossEntropyLoss(), epochs=200, lr=0.01, seed=1)
    out = torch_outputs(model, Xte)
    m = export_classic(model, (1, 13))
    write_case("mlp_wine_tanh", m, Xte, [out], exporter="torch", exporter_version=tv,
               dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64), float_accuracy=acc_logits(out, yte),
               description="MLP 13-16-3 with Tanh, normalization inside; output = logits [1,3].")

    # 11. mlp_wine_silu / mlp_wine_gelu ------------------------------------------------
    # Activations that exporters decompose into products of two encrypted values: SiLU as
    # x * Sigmoid(x), GELU (opset < 20) as 0.5 * x * (1 + Erf(x / sqrt(2))). Only the optimizer's
    # table fusion makes them lowerable (one table per hidden unit).
    for seed, name, act, desc in [
        (2, "mlp_wine_silu", nn.SiLU(), "SiLU, exported as Sigmoid and Mul (x * sigmoid(x))"),
        (3, "mlp_wine_gelu", nn.GELU(), "GELU, exported as Div, Erf, Add, Mul, Mul"),
    ]:
        seed_all(seed)
        model = nn.Sequential(norm_from(Xtr), nn.Linear(13, 16), act, nn.Linear(16, 3))
        train(model, Xtr, ytr64, nn.CrossEntropyLoss(), epochs=200, lr=0.01, seed=seed)
        out = torch_outputs(model, Xte)
        m = export_classic(model, (1, 13))
        write_case(name, m, Xte, [out], exporter="torch", exporter_version=tv,
                   dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
                   task="classification", labels=yte.astype(np.int64), float_accuracy=acc_logits(out, yte),
                   description=f"MLP 13-16-3 with {desc}, normalization inside; output = logits [1,3].")

    # 7. mlp_diabetes_dynamic -------------------------------------------------------
    seed_all(0)
    X, y = load("diabetes")
    X = X.astype(np.float32)
    y = y.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)

    class Denorm(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.tensor([mean], dtype=torch.float32))
            self.register_buffer("std", torch.tensor([std], dtype=torch.float32))

        def forward(self, x):
            return x * self.std + self.mean

    ym, ys = float(ytr.mean()), float(ytr.std())
    model = nn.Sequential(norm_from(Xtr), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1))
    # short training: this split overfits quickly (sklearn LinearRegression reaches R^2 0.36)
    train(model, Xtr, ((ytr - ym) / ys)[:, None].astype(np.float32), nn.MSELoss(), epochs=50,
          lr=0.01, wd=1e-2)
    model = nn.Sequential(*model, Denorm(ym, ys)).eval()
    out = torch_outputs(model, Xte)
    m = export_classic(model, (1, 10), dynamic=True)
    from sklearn.metrics import r2_score
    write_case("mlp_diabetes_dynamic", m, Xte, [out], exporter="torch", exporter_version=tv,
               dataset="sklearn.datasets.load_diabetes (test_size=0.25, random_state=0)",
               task="regression", labels=yte.astype(np.float32),
               float_accuracy=r2_score(yte, out[:, 0]),
               description="Regression MLP 10-8-1 (ReLU), normalization inside, output de-normalized "
                           "inside (Mul, Add). Exported with dynamic batch axis: input ['batch', 10]. "
                           "float_accuracy is R^2.")

    # 8./9. CNNs on digits ------------------------------------------------------------
    X, y = load("digits")
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    Xtr, Xte, ytr, yte = split(X, y, 0.2)
    ytr64 = ytr.astype(np.int64)

    class ViewFlatten(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)

    def cnn(maxpool, pad):
        if not pad:
            # The shape of targets.md's reference CNN (Concrete ML's digits CNN): without padding,
            # 6x6x8 + 2x2x16 = 352 activations instead of 8x8x8 + 4x4x16 = 768.
            return nn.Sequential(
                nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                nn.Conv2d(8, 16, 2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 2 * 2, 10))
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2) if maxpool else nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            ViewFlatten() if maxpool else nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10))

    DIGITS_KEEP = 200  # keep the case directory small: store the first 200 of the 360 test samples
    for name, maxpool, pad in (("cnn_digits", False, True), ("cnn_digits_maxpool", True, True),
                               ("cnn_digits_nopad", False, False)):
        seed_all(0)
        model = cnn(maxpool, pad)
        train(model, Xtr, ytr64, nn.CrossEntropyLoss(), epochs=30, lr=0.005, batch_size=64)
        full_acc = acc_logits(torch_outputs(model, Xte), yte)
        out = torch_outputs(model, Xte[:DIGITS_KEEP])
        # The default export (do_constant_folding=True, training=EVAL) fuses BatchNorm into the
        # preceding Conv; do_constant_folding=False keeps BatchNormalization as a node.
        kw = dict(do_constant_folding=False)
        notes = {"default_export_ops": op_list(export_classic(model, (1, 1, 8, 8)))}
        if maxpool:
            # A static [1,1,8,8] export folds Shape->Gather into a Constant (the exporter's shape
            # inference knows the batch size), leaving Constant->Unsqueeze->Concat->Reshape.  To get
            # the real Shape->Gather->Unsqueeze->Concat->Reshape pattern, export with a dynamic batch
            # axis and pin the symbolic 'batch' dim to 1 afterwards.
            notes["static_export_ops"] = op_list(export_classic(model, (1, 1, 8, 8), **kw))
            m = pin_dim(export_classic(model, (1, 1, 8, 8), dynamic=True, **kw), "batch", 1)
            notes["batch_dim"] = "exported with dynamic_axes batch, then dim_param 'batch' pinned to 1"
        else:
            m = export_classic(model, (1, 1, 8, 8), **kw)
        ops = op_list(m)
        notes["has_BatchNormalization"] = "BatchNormalization" in ops
        notes["full_test_set_size"] = int(len(yte))
        notes["full_test_set_accuracy"] = round(full_acc, 6)
        if maxpool:
            notes["has_shape_pattern"] = all(o in ops for o in
                                              ("Shape", "Gather", "Unsqueeze", "Concat", "Reshape"))
        write_case(name, m, Xte[:DIGITS_KEEP], [out], exporter="torch", exporter_version=tv,
                   dataset="sklearn.datasets.load_digits, pixels/16 (test_size=0.2, random_state=0; "
                           f"first {DIGITS_KEEP} of {len(yte)} test samples stored)",
                   task="classification", labels=yte[:DIGITS_KEEP].astype(np.int64),
                   float_accuracy=acc_logits(out, yte[:DIGITS_KEEP]),
                   description=(("CNN: Conv2d(1,8,3)-BatchNorm2d-ReLU-AvgPool2d(2)-Conv2d(8,16,2)-ReLU-"
                                 "Flatten-Linear(64,10), no padding: the shape of the reference CNN in "
                                 "targets.md (352 activations). Exported" if not pad else
                                 "CNN: Conv2d(1,8,3,p=1)-BatchNorm2d-ReLU-" +
                                 ("MaxPool2d(2)" if maxpool else "AvgPool2d(2)") +
                                 "-Conv2d(8,16,3,p=1)-ReLU-" +
                                 ("x.view(x.size(0),-1)" if maxpool else "Flatten") +
                                 "-Linear(256,10). Exported") + " in eval mode with do_constant_folding=False so "
                                "BatchNormalization stays a node." +
                                (" Exported with a dynamic batch axis, then the batch dim pinned to 1, so "
                                 "the Shape->Gather->Unsqueeze->Concat->Reshape pattern survives."
                                 if maxpool else "")),
                   extra={"export_notes": notes})
    return dynamo_note


# ----------------------------------------------------------------------------- sklearn

def sklearn_models():
    import skl2onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    sv = skl2onnx.__version__

    def convert(est, clf, nfeat):
        opts = {id(clf): {"zipmap": False}} if clf is not None else None
        return to_onnx(est, initial_types=[("input", FloatTensorType([1, nfeat]))],
                       options=opts, target_opset={"": 17, "ai.onnx.ml": 3})

    def expected_for(m, est, Xte):
        res = []
        for o in m.graph.output:
            if o.name == "label":
                res.append(est.predict(Xte).astype(np.int64))
            elif o.name == "probabilities":
                res.append(est.predict_proba(Xte).astype(np.float32))
            elif o.name == "variable":
                p = est.predict(Xte).astype(np.float32)
                res.append(p.reshape(Xte.shape[0], -1))
            else:
                raise ValueError(o.name)
        return res

    # 2. logreg_cancer_skl
    seed_all(0)
    X, y = load("breast_cancer")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    clf = LogisticRegression(max_iter=5000, random_state=0)
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", clf)]).fit(Xtr, ytr)
    m = convert(pipe, clf, 30)
    exp = expected_for(m, pipe, Xte)
    write_case("logreg_cancer_skl", m, Xte, exp, exporter="skl2onnx", exporter_version=sv,
               dataset="sklearn.datasets.load_breast_cancer (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64),
               float_accuracy=(exp[0] == yte).mean(),
               description="Pipeline(StandardScaler, LogisticRegression), zipmap off. Outputs: label "
                           "int64 [1], probabilities float [1,2].")

    # 5. mlp_iris_skl
    seed_all(0)
    X, y = load("iris")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    clf = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", max_iter=3000, random_state=0)
    clf.fit(Xtr, ytr)
    m = convert(clf, clf, 4)
    exp = expected_for(m, clf, Xte)
    write_case("mlp_iris_skl", m, Xte, exp, exporter="skl2onnx", exporter_version=sv,
               dataset="sklearn.datasets.load_iris (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64),
               float_accuracy=(exp[0] == yte).mean(),
               description="MLPClassifier(hidden_layer_sizes=(16,), relu), zipmap off. Outputs: label "
                           "int64 [1], probabilities float [1,3].")

    # 5b. logreg_iris_multiclass_skl: one-vs-rest scores normalized by ai.onnx.ml.Normalizer
    seed_all(0)
    X, y = load("iris")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    clf = LogisticRegression(max_iter=5000, random_state=0)
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", clf)]).fit(Xtr, ytr)
    m = convert(pipe, clf, 4)
    exp = expected_for(m, pipe, Xte)
    write_case("logreg_iris_multiclass_skl", m, Xte, exp, exporter="skl2onnx", exporter_version=sv,
               dataset="sklearn.datasets.load_iris (test_size=0.25, random_state=0)",
               task="classification", labels=yte.astype(np.int64),
               float_accuracy=(exp[0] == yte).mean(),
               description="Pipeline(StandardScaler, LogisticRegression) on 3 classes, zipmap off. Outputs: "
                           "label int64 [1], probabilities float [1,3].")

    # 6. linreg_diabetes_skl
    seed_all(0)
    X, y = load("diabetes")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = split(X, y, 0.25)
    reg = LinearRegression().fit(Xtr, ytr)
    m = convert(reg, None, 10)
    exp = expected_for(m, reg, Xte)
    write_case("linreg_diabetes_skl", m, Xte, exp, exporter="skl2onnx", exporter_version=sv,
               dataset="sklearn.datasets.load_diabetes (test_size=0.25, random_state=0)",
               task="regression", labels=yte.astype(np.float32),
               float_accuracy=r2_score(yte, exp[0][:, 0]),
               description="LinearRegression; output variable float [1,1]. float_accuracy is R^2.",
               ort_tol=1e-5)


# ----------------------------------------------------------------------------- op models

def T(name, arr, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def I64(name, vals):
    return numpy_helper.from_array(np.asarray(vals, dtype=np.int64), name)


def op_case(name, in_shape, nodes, inits=(), *, opset=17, low=-2.0, high=2.0, outputs=("y",),
            out_types=None, description="", n=OP_N):
    """Build a one-input op model, run ORT per sample and write the case."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    assert in_shape[0] == 1
    out_types = out_types or [TensorProto.FLOAT] * len(outputs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))

    def build(out_shapes):
        outs = [helper.make_tensor_value_info(o, t, s)
                for o, t, s in zip(outputs, out_types, out_shapes)]
        g = helper.make_graph(nodes, f"op_{name}", [x], outs, initializer=list(inits))
        mdl = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                                producer_name="fhec-testsuite-gen")
        mdl.ir_version = 8
        return mdl

    mdl = build([None] * len(outputs))
    inputs = rng.uniform(low, high, size=(n,) + tuple(in_shape[1:])).astype(np.float32)
    got = ort_run_per_sample(mdl, inputs)
    out_shapes = [[1] + list(g.shape[1:]) for g in got]
    mdl = build(out_shapes)
    onnx.shape_inference.infer_shapes(mdl, check_type=True, strict_mode=True)
    exp = [g.astype(np.int64) if g.dtype == np.int64 else g.astype(np.float32) for g in got]
    write_case("op_" + name, mdl, inputs, exp, exporter="onnx.helper", exporter_version=onnx.__version__,
               dataset=f"random uniform [{low}, {high}), numpy default_rng(crc32(name))",
               task="op", float_accuracy=None, description=description, check_ort=False)


def N(op, inputs, outputs, name=None, **attrs):
    return helper.make_node(op, inputs, outputs, name=name or f"{op.lower()}_{outputs[0]}", **attrs)


def op_models():
    rng = np.random.default_rng(1234)

    def w(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # ---- Gemm
    op_case("gemm", [1, 8], [N("Gemm", ["x", "B", "C"], ["y"])], [T("B", w(8, 4)), T("C", w(4))],
            description="Gemm A=x[1,8], B[8,4], C[4] (C broadcast as [N]).")
    op_case("gemm_transB_alpha_beta", [1, 8],
            [N("Gemm", ["x", "B", "C"], ["y"], alpha=0.5, beta=2.0, transB=1)],
            [T("B", w(4, 8)), T("C", w(1, 4))],
            description="Gemm transB=1 (B stored [4,8]), alpha=0.5, beta=2.0, C [1,4].")
    op_case("gemm_transA_scalarC", [1, 8],
            [N("Transpose", ["x"], ["xt"], perm=[1, 0]),
             N("Gemm", ["xt", "B", "C"], ["y"], transA=1, alpha=1.5, beta=0.5)],
            [T("B", w(8, 4)), T("C", np.float32(0.75))],
            description="Transpose x to [8,1], Gemm transA=1, alpha=1.5, beta=0.5, scalar C (shape []).")
    op_case("gemm_transA_transB_noC", [1, 6],
            [N("Transpose", ["x"], ["xt"], perm=[1, 0]),
             N("Gemm", ["xt", "B"], ["y"], transA=1, transB=1, alpha=2.0)],
            [T("B", w(5, 6))],
            description="Gemm transA=1 transB=1 alpha=2, no C.")
    op_case("gemm_noC", [1, 8], [N("Gemm", ["x", "B"], ["y"])], [T("B", w(8, 3))],
            description="Gemm without C.")
    op_case("gemm_C_1x1", [1, 8], [N("Gemm", ["x", "B", "C"], ["y"], beta=-1.0)],
            [T("B", w(8, 3)), T("C", [[0.25]])], description="Gemm with C [1,1], beta=-1.")

    # ---- MatMul
    op_case("matmul_2d", [1, 8], [N("MatMul", ["x", "W"], ["y"])], [T("W", w(8, 5))],
            description="MatMul x[1,8] @ W[8,5].")
    op_case("matmul_3d", [1, 3, 4], [N("MatMul", ["x", "W"], ["y"])], [T("W", w(4, 5))],
            description="MatMul x[1,3,4] @ W[4,5] (W broadcast over leading dims).")
    op_case("matmul_batched", [1, 2, 3, 4], [N("MatMul", ["x", "W"], ["y"])], [T("W", w(2, 4, 5))],
            description="Batched MatMul x[1,2,3,4] @ W[2,4,5] -> [1,2,3,5].")
    op_case("matmul_const_left", [1, 4, 3], [N("MatMul", ["W", "x"], ["y"])], [T("W", w(1, 2, 4))],
            description="MatMul W[1,2,4] @ x[1,4,3] (encrypted right operand).")

    # ---- elementwise binary
    op_case("add_bcast", [1, 3, 4], [N("Add", ["x", "c"], ["y"])], [T("c", w(4))],
            description="Add x[1,3,4] + c[4].")
    op_case("sub_bcast", [1, 3, 4], [N("Sub", ["x", "c"], ["y"])], [T("c", w(3, 1))],
            description="Sub x[1,3,4] - c[3,1].")
    op_case("sub_const_left", [1, 3, 4], [N("Sub", ["c", "x"], ["y"])], [T("c", w(1, 1, 4))],
            description="Sub c[1,1,4] - x (constant on the left).")
    op_case("mul_bcast", [1, 3, 4], [N("Mul", ["x", "c"], ["y"])], [T("c", w(1, 3, 4))],
            description="Mul x * c[1,3,4].")
    op_case("div_const", [1, 3, 4], [N("Div", ["x", "c"], ["y"])], [T("c", [[1.5], [-2.0], [4.0]])],
            description="Div x / c[3,1].")
    op_case("div_const_left", [1, 6], [N("Div", ["c", "x"], ["y"])], [T("c", [2.0])],
            low=0.5, high=2.0, description="Div c[1] / x (reciprocal), x in [0.5, 2).")
    op_case("div_encrypted", [1, 6],
            [N("Abs", ["x"], ["ax"]), N("Add", ["ax", "one"], ["den"]), N("Div", ["x", "den"], ["y"])],
            [T("one", 1.0)], low=-3.0, high=3.0,
            description="Div(x, Add(Abs(x), 1.0)) (softsign): both Div operands depend on the input.")
    op_case("mul_add_sub_encrypted", [1, 6],
            [N("Mul", ["x", "x"], ["xx"]), N("Add", ["xx", "x"], ["a"]), N("Sub", ["a", "xx"], ["b"]),
             N("Mul", ["b", "xx"], ["y"])],
            description="Mul(x,x), Add, Sub, Mul between tensors derived from the single input.")
    op_case("add_encrypted_bcast", [1, 3, 4],
            [N("ReduceSum", ["x", "ax"], ["s"], keepdims=1), N("Add", ["x", "s"], ["y"])], [I64("ax", [2])],
            opset=13, description="Add x[1,3,4] + ReduceSum(x, axis 2, keepdims)[1,3,1]: encrypted broadcast.")
    op_case("neg", [1, 5], [N("Neg", ["x"], ["y"])], description="Neg.")

    # ---- Conv
    op_case("conv2d_pads", [1, 2, 6, 6], [N("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])],
            [T("W", w(4, 2, 3, 3)), T("B", w(4))], description="Conv2d 2->4, k3, pads 1, bias.")
    op_case("conv2d_asym_pads", [1, 2, 5, 5],
            [N("Conv", ["x", "W", "B"], ["y"], kernel_shape=[3, 3], pads=[0, 1, 2, 1])],
            [T("W", w(3, 2, 3, 3)), T("B", w(3))],
            description="Conv2d explicit asymmetric pads [top=0,left=1,bottom=2,right=1].")
    op_case("conv2d_nobias", [1, 3, 5, 5], [N("Conv", ["x", "W"], ["y"])], [T("W", w(2, 3, 3, 3))],
            description="Conv2d without bias, no padding.")
    op_case("conv2d_same_upper", [1, 2, 5, 5], [N("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_UPPER")],
            [T("W", w(3, 2, 2, 2)), T("B", w(3))],
            description="Conv2d k2 auto_pad=SAME_UPPER (odd total pad: extra pad at the end).")
    op_case("conv2d_same_lower", [1, 2, 5, 5], [N("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_LOWER")],
            [T("W", w(3, 2, 2, 2)), T("B", w(3))],
            description="Conv2d k2 auto_pad=SAME_LOWER (odd total pad: extra pad at the start).")
    op_case("conv2d_same_upper_stride2", [1, 2, 6, 6],
            [N("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
            [T("W", w(2, 2, 3, 3))], description="Conv2d k3 stride 2 auto_pad=SAME_UPPER on 6x6.")
    op_case("conv2d_valid", [1, 2, 6, 6], [N("Conv", ["x", "W", "B"], ["y"], auto_pad="VALID")],
            [T("W", w(3, 2, 3, 3)), T("B", w(3))], description="Conv2d auto_pad=VALID.")
    op_case("conv2d_stride2", [1, 2, 7, 7],
            [N("Conv", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
            [T("W", w(4, 2, 3, 3)), T("B", w(4))], description="Conv2d stride 2, pads 1.")
    op_case("conv2d_dilation2", [1, 2, 7, 7],
            [N("Conv", ["x", "W", "B"], ["y"], dilations=[2, 2], pads=[2, 2, 2, 2])],
            [T("W", w(3, 2, 3, 3)), T("B", w(3))], description="Conv2d dilations 2, pads 2.")
    op_case("conv2d_rect_kernel", [1, 2, 6, 7],
            [N("Conv", ["x", "W", "B"], ["y"], kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 1])],
            [T("W", w(3, 2, 2, 3)), T("B", w(3))],
            description="Conv2d non-square kernel 2x3, strides [1,2], pads [0,1,1,1], non-square input.")
    op_case("conv2d_group2", [1, 4, 5, 5], [N("Conv", ["x", "W", "B"], ["y"], group=2, pads=[1, 1, 1, 1])],
            [T("W", w(6, 2, 3, 3)), T("B", w(6))], description="Conv2d group=2, 4->6 channels.")
    op_case("conv2d_depthwise", [1, 3, 5, 5], [N("Conv", ["x", "W", "B"], ["y"], group=3, pads=[1, 1, 1, 1])],
            [T("W", w(3, 1, 3, 3)), T("B", w(3))], description="Depthwise Conv2d group=C=3.")
    op_case("conv2d_depthwise_mult2", [1, 3, 5, 5], [N("Conv", ["x", "W"], ["y"], group=3)],
            [T("W", w(6, 1, 3, 3))], description="Depthwise Conv2d group=3, channel multiplier 2, no bias.")
    op_case("conv1d", [1, 2, 10], [N("Conv", ["x", "W", "B"], ["y"], pads=[1, 1])],
            [T("W", w(3, 2, 3)), T("B", w(3))], description="Conv1d 2->3, k3, pads 1, bias.")
    op_case("conv1d_stride2_dilation2", [1, 2, 12],
            [N("Conv", ["x", "W"], ["y"], strides=[2], dilations=[2], pads=[2, 1])],
            [T("W", w(4, 2, 3))], description="Conv1d stride 2, dilation 2, pads [2,1], no bias.")
    op_case("conv1d_same_upper", [1, 2, 9], [N("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_UPPER")],
            [T("W", w(2, 2, 4)), T("B", w(2))], description="Conv1d k4 auto_pad=SAME_UPPER.")

    # ---- normalization / activations
    op_case("batchnorm", [1, 3, 4, 4],
            [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
            [T("s", w(3) + 1), T("b", w(3)), T("m", w(3)), T("v", np.abs(w(3)) + 0.5)],
            description="BatchNormalization (inference), epsilon=1e-3.")
    op_case("relu", [1, 6], [N("Relu", ["x"], ["y"])], description="Relu.")
    op_case("leakyrelu", [1, 6], [N("LeakyRelu", ["x"], ["y"], alpha=0.1)], description="LeakyRelu alpha=0.1.")
    op_case("prelu", [1, 3, 2, 2], [N("PRelu", ["x", "slope"], ["y"])], [T("slope", [[[0.1]], [[0.25]], [[-0.5]]])],
            description="PRelu per-channel slope [3,1,1].")
    op_case("sigmoid", [1, 6], [N("Sigmoid", ["x"], ["y"])], low=-6, high=6, description="Sigmoid.")
    op_case("hardsigmoid", [1, 6], [N("HardSigmoid", ["x"], ["y"], alpha=0.25, beta=0.4)], low=-4, high=4,
            description="HardSigmoid alpha=0.25 beta=0.4.")
    op_case("tanh", [1, 6], [N("Tanh", ["x"], ["y"])], low=-3, high=3, description="Tanh.")
    op_case("softplus", [1, 6], [N("Softplus", ["x"], ["y"])], low=-4, high=4, description="Softplus.")
    op_case("elu", [1, 6], [N("Elu", ["x"], ["y"], alpha=0.7)], low=-3, high=3, description="Elu alpha=0.7.")
    op_case("selu", [1, 6], [N("Selu", ["x"], ["y"])], low=-3, high=3, description="Selu (default alpha/gamma).")
    op_case("erf", [1, 6], [N("Erf", ["x"], ["y"])], low=-3, high=3, description="Erf.")
    op_case("gelu_erf", [1, 8],
            [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]),
             N("Mul", ["x", "a"], ["m"]), N("Mul", ["m", "half"], ["y"])],
            [T("sqrt2", np.sqrt(2.0)), T("one", 1.0), T("half", 0.5)], low=-4, high=4,
            description="GELU subgraph as torch exports it: x * (1 + Erf(x / sqrt(2))) * 0.5.")
    op_case("clip_min_max", [1, 6], [N("Clip", ["x", "lo", "hi"], ["y"])], [T("lo", -0.5), T("hi", 1.0)],
            description="Clip (opset 11+ form) with min=-0.5, max=1.0 as inputs.")
    op_case("clip_min_only", [1, 6], [N("Clip", ["x", "lo"], ["y"])], [T("lo", 0.0)],
            description="Clip with only min=0 (max input omitted).")
    op_case("clip_max_only", [1, 6], [N("Clip", ["x", "", "hi"], ["y"])], [T("hi", 6.0)], low=-8, high=8,
            description="Clip with only max=6 (min input given as empty name).")
    op_case("abs", [1, 6], [N("Abs", ["x"], ["y"])], description="Abs.")
    op_case("exp", [1, 6], [N("Exp", ["x"], ["y"])], description="Exp, x in [-2,2).")
    op_case("log", [1, 6], [N("Log", ["x"], ["y"])], low=0.1, high=5.0, description="Log, x in [0.1,5).")
    op_case("sqrt", [1, 6], [N("Sqrt", ["x"], ["y"])], low=0.05, high=4.0, description="Sqrt, x in [0.05,4).")
    op_case("pow2", [1, 6], [N("Pow", ["x", "e"], ["y"])], [T("e", 2.0)], description="Pow(x, 2.0).")
    op_case("pow_half", [1, 6], [N("Pow", ["x", "e"], ["y"])], [T("e", 0.5)], low=0.05, high=4.0,
            description="Pow(x, 0.5), x positive.")

    # ---- pooling
    op_case("averagepool", [1, 2, 6, 6], [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
            description="AveragePool k2 s2.")
    op_case("averagepool_pads_exclude", [1, 2, 5, 5],
            [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=0)], description="AveragePool k3 s2 pads 1, count_include_pad=0.")
    op_case("averagepool_pads_include", [1, 2, 5, 5],
            [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=1)], description="AveragePool k3 s2 pads 1, count_include_pad=1.")
    op_case("averagepool_1d", [1, 2, 9], [N("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2])],
            description="AveragePool 1-D k3 s2.")
    op_case("maxpool", [1, 2, 6, 6], [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
            description="MaxPool k2 s2.")
    op_case("maxpool_pads_strides", [1, 2, 5, 5],
            [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
            description="MaxPool k3 s2 pads 1 (padding never selected).")
    op_case("globalaveragepool", [1, 3, 4, 4], [N("GlobalAveragePool", ["x"], ["y"])],
            description="GlobalAveragePool [1,3,4,4] -> [1,3,1,1].")

    # ---- reductions
    op_case("reducesum_keepdims1", [1, 3, 4], [N("ReduceSum", ["x", "ax"], ["y"], keepdims=1)], [I64("ax", [2])],
            opset=13, description="ReduceSum opset 13, axes input [2], keepdims=1.")
    op_case("reducesum_keepdims0", [1, 3, 4], [N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [I64("ax", [-2])],
            opset=13, description="ReduceSum opset 13, axes input [-2], keepdims=0.")
    op_case("reducemean_attr", [1, 3, 4], [N("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=1)], opset=17,
            description="ReduceMean opset 17, axes attribute [1,2], keepdims=1.")
    op_case("reducemean_input", [1, 3, 4], [N("ReduceMean", ["x", "ax"], ["y"], keepdims=0)], [I64("ax", [-1])],
            opset=18, description="ReduceMean opset 18, axes input [-1], keepdims=0.")

    # ---- shape ops
    op_case("flatten_axis1", [1, 2, 3, 4], [N("Flatten", ["x"], ["y"], axis=1)], description="Flatten axis=1.")
    op_case("flatten_axis2", [1, 1, 3, 4], [N("Flatten", ["x"], ["y"], axis=2)],
            description="Flatten axis=2 on [1,1,3,4] -> [1,12] (leading dim stays the batch dim).")
    op_case("reshape", [1, 2, 3, 4], [N("Reshape", ["x", "s"], ["y"])], [I64("s", [0, -1, 4])],
            description="Reshape with shape [0,-1,4] (0 copies the batch dim) -> [1,6,4].")
    op_case("transpose", [1, 2, 3, 4], [N("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])],
            description="Transpose perm [0,3,1,2].")
    op_case("squeeze_unsqueeze", [1, 3, 1, 4],
            [N("Squeeze", ["x", "sq"], ["s"]), N("Unsqueeze", ["s", "uq"], ["y"])],
            [I64("sq", [2]), I64("uq", [1, -1])], opset=13,
            description="Squeeze axes input [2] -> [1,3,4]; Unsqueeze axes input [1,-1] -> [1,1,3,4,1].")
    op_case("squeeze_unsqueeze_opset11", [1, 3, 1, 4],
            [N("Squeeze", ["x"], ["s"], axes=[2]), N("Unsqueeze", ["s"], ["y"], axes=[3])], opset=11,
            description="Opset 11 Squeeze/Unsqueeze with axes attributes.")
    op_case("concat", [1, 3, 4],
            [N("Relu", ["x"], ["r"]), N("Concat", ["x", "r"], ["y"], axis=1)],
            description="Concat(x, Relu(x)) along axis 1: two encrypted tensors.")
    op_case("concat_const", [1, 3, 4], [N("Concat", ["c", "x"], ["y"], axis=-1)], [T("c", w(1, 3, 2))],
            description="Concat(const[1,3,2], x) along axis -1.")
    op_case("slice", [1, 10, 8], [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
            [I64("st", [-9, 1]), I64("en", [-1, 100]), I64("ax", [1, -1]), I64("sp", [2, 3])],
            description="Slice starts [-9,1], ends [-1,100(clamped)], axes [1,-1], steps [2,3].")
    op_case("slice_reverse", [1, 6, 4], [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
            [I64("st", [-1]), I64("en", [-100]), I64("ax", [1]), I64("sp", [-2])],
            description="Slice with negative step -2 along axis 1 (reverse, every other row).")
    op_case("slice_noaxes", [1, 5, 6], [N("Slice", ["x", "st", "en"], ["y"])],
            [I64("st", [0, 1, 2]), I64("en", [1, 4, -1])], description="Slice without axes/steps inputs.")
    op_case("gather_axis1", [1, 5, 4], [N("Gather", ["x", "i"], ["y"], axis=1)], [I64("i", [4, 0, 2, -1])],
            description="Gather axis=1 with constant indices [4,0,2,-1] (negative index).")
    op_case("gather_axis1_scalar", [1, 5, 4], [N("Gather", ["x", "i"], ["y"], axis=1)], [I64("i", 2)],
            description="Gather axis=1 with scalar index 2 (removes the axis) -> [1,4].")
    op_case("gather_axis2_2d_indices", [1, 3, 6], [N("Gather", ["x", "i"], ["y"], axis=2)],
            [I64("i", [[0, 5], [1, 1]])], description="Gather axis=2 with 2-D indices -> [1,3,2,2].")
    op_case("gather_axis0", [1, 4, 3],
            [N("Reshape", ["x", "s"], ["r"]), N("Gather", ["r", "i"], ["g"], axis=0),
             N("Unsqueeze", ["g", "ua"], ["y"])],
            [I64("s", [4, 3]), I64("i", [3, 0, 2]), I64("ua", [0])], opset=13,
            description="Reshape x to [4,3], Gather axis=0 indices [3,0,2], Unsqueeze back to [1,3,3].")
    op_case("pad_constant", [1, 2, 3, 3], [N("Pad", ["x", "p", "v"], ["y"], mode="constant")],
            [I64("p", [0, 0, 1, 2, 0, 0, 2, 1]), T("v", 0.5)], opset=13,
            description="Pad constant mode, pads input [0,0,1,2,0,0,2,1], value 0.5.")
    op_case("pad_zero_default", [1, 2, 4], [N("Pad", ["x", "p"], ["y"])], [I64("p", [0, 0, 1, 0, 0, 3])], opset=13,
            description="Pad without value input (defaults to 0), default mode.")
    op_case("identity", [1, 5], [N("Identity", ["x"], ["y"])], description="Identity.")
    op_case("dropout", [1, 5], [N("Dropout", ["x"], ["y"])], description="Dropout (inference: identity).")
    op_case("dropout_ratio", [1, 5], [N("Dropout", ["x", "r"], ["y"])], [T("r", 0.3)],
            description="Dropout with ratio input 0.3, training_mode absent (identity).")
    op_case("constant_add", [1, 4],
            [N("Constant", [], ["c"], value=T("cv", [1.0, -2.0, 3.0, 0.5])), N("Add", ["x", "c"], ["y"])],
            description="Constant node (value tensor) feeding Add.")
    op_case("constant_value_float", [1, 4],
            [N("Constant", [], ["c"], value_float=2.5), N("Mul", ["x", "c"], ["y"])],
            description="Constant node with value_float attribute feeding Mul.")
    op_case("shape_gather_reshape", [1, 2, 3, 4],
            [N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "i0"], ["b"], axis=0),
             N("Unsqueeze", ["b", "ua"], ["bu"]), N("Concat", ["bu", "m1"], ["ns"], axis=0),
             N("Reshape", ["x", "ns"], ["y"])],
            [I64("i0", 0), I64("ua", [0]), I64("m1", [-1])], opset=13,
            description="torch-style flatten: Shape->Gather(0)->Unsqueeze->Concat([b,-1])->Reshape -> [1,24].")
    op_case("shape_slice_concat", [1, 2, 3, 4],
            [N("Shape", ["x"], ["sh"]), N("Slice", ["sh", "st", "en"], ["hd"]),
             N("Concat", ["hd", "tl"], ["ns"], axis=0), N("Reshape", ["x", "ns"], ["y"])],
            [I64("st", [0]), I64("en", [2]), I64("tl", [12])],
            description="Shape->Slice[0:2]->Concat([..,12])->Reshape -> [1,2,12].")
    op_case("softmax", [1, 6], [N("Softmax", ["x"], ["y"], axis=-1)], opset=13, low=-4, high=4,
            description="Softmax axis=-1 (opset 13).")
    op_case("softmax_axis1_3d", [1, 3, 4], [N("Softmax", ["x"], ["y"], axis=1)], opset=13, low=-4, high=4,
            description="Softmax axis=1 on [1,3,4] (opset 13: single-axis semantics).")
    op_case("logsoftmax", [1, 6], [N("LogSoftmax", ["x"], ["y"], axis=-1)], opset=13, low=-4, high=4,
            description="LogSoftmax axis=-1.")
    op_case("argmax_keepdims1", [1, 6], [N("ArgMax", ["x"], ["y"], axis=1, keepdims=1)],
            out_types=[TensorProto.INT64], description="ArgMax axis=1 keepdims=1 -> int64 [1,1].")
    op_case("argmax_keepdims0", [1, 6], [N("ArgMax", ["x"], ["y"], axis=-1, keepdims=0)],
            out_types=[TensorProto.INT64], description="ArgMax axis=-1 keepdims=0 -> int64 [1].")
    op_case("two_outputs", [1, 4], [N("Relu", ["x"], ["y0"]), N("Sigmoid", ["x"], ["y1"])], outputs=("y0", "y1"),
            description="Two graph outputs (Relu(x), Sigmoid(x)) -> expected_0, expected_1.")

    # ---- Einsum (appended last: the weights above come from the same generator)
    op_case("einsum_ellipsis_linear", [1, 3, 4], [N("Einsum", ["x", "W"], ["y"], equation="...ij,jk->...ik")],
            [T("W", w(4, 5))], opset=12, description="Einsum `...ij,jk->...ik`: a linear layer over the last axis.")
    op_case("einsum_implicit_contract", [1, 2, 3], [N("Einsum", ["x", "W"], ["y"], equation="bij,kj")],
            [T("W", w(4, 3))], opset=12,
            description="Einsum `bij,kj` in implicit mode (output `bik`: labels used once, alphabetically).")
    op_case("einsum_transpose", [1, 3, 4], [N("Einsum", ["x"], ["y"], equation="bij->bji")], opset=12,
            description="Einsum `bij->bji`: a transpose.")
    op_case("einsum_sum", [1, 3, 4], [N("Einsum", ["x"], ["y"], equation="bij->bj")], opset=12,
            description="Einsum `bij->bj`: a sum over i.")

    # ---- comparisons, boolean logic, Where on encrypted values (appended last, as above)
    op_case("where_greater", [1, 6],
            [N("Greater", ["x", "t"], ["c"]), N("Where", ["c", "A", "B"], ["s"]), N("MatMul", ["s", "W"], ["y"])],
            [T("t", np.float32(0.25)), T("A", w(1, 6)), T("B", w(1, 6)), T("W", w(6, 3))],
            description="Where(x > 0.25, A, B) @ W: a step table per element, then leveled ops.")
    op_case("logic_and_or_not", [1, 6],
            [N("Greater", ["x", "zero"], ["a"]), N("Less", ["x", "one"], ["b"]), N("And", ["a", "b"], ["ab"]),
             N("Not", ["b"], ["nb"]), N("Or", ["a", "nb"], ["o"]), N("Xor", ["ab", "o"], ["xo"]),
             N("Cast", ["xo"], ["f"], to=TensorProto.FLOAT), N("MatMul", ["f", "W"], ["y"])],
            [T("zero", np.float32(0.0)), T("one", np.float32(1.0)), T("W", w(6, 2))],
            description="And, Or, Xor of comparisons of x, Not; cast to float; @ W.")
    op_case("less_two_encrypted", [1, 6],
            [N("Slice", ["x", "s0", "e0", "ax"], ["p"]), N("Slice", ["x", "s1", "e1", "ax"], ["q"]),
             N("LessOrEqual", ["p", "q"], ["c"]), N("Cast", ["c"], ["f"], to=TensorProto.FLOAT),
             N("MatMul", ["f", "W"], ["y"])],
            [I64("s0", [0]), I64("e0", [3]), I64("s1", [3]), I64("e1", [6]), I64("ax", [1]), T("W", w(3, 2))],
            description="x[:, :3] <= x[:, 3:] (two encrypted operands: a step of their difference), cast, @ W.")
    op_case("xor_two_encrypted", [1, 6],
            [N("Slice", ["x", "s0", "e0", "ax"], ["p"]), N("Slice", ["x", "s1", "e1", "ax"], ["q"]),
             N("Greater", ["p", "zero"], ["a"]), N("Less", ["q", "zero"], ["b"]), N("Xor", ["a", "b"], ["c"]),
             N("Cast", ["c"], ["f"], to=TensorProto.FLOAT), N("MatMul", ["f", "W"], ["y"])],
            [I64("s0", [0]), I64("e0", [3]), I64("s1", [3]), I64("e1", [6]), I64("ax", [1]), T("zero", np.float32(0.0)),
             T("W", w(3, 2))],
            description="Xor of booleans from different elements (one table of their sum, not fused), cast, @ W.")


# ----------------------------------------------------------------------------- invalid

def invalid_files():
    if os.path.isdir(INVALID):
        shutil.rmtree(INVALID)
    os.makedirs(INVALID)
    src = open(os.path.join(MODELS, "logreg_cancer_torch", "model.onnx"), "rb").read()
    with open(os.path.join(INVALID, "truncated.onnx"), "wb") as f:
        f.write(src[: int(len(src) * 0.6)])
    with open(os.path.join(INVALID, "not_onnx.onnx"), "wb") as f:
        f.write(b"This is not an ONNX model.\nJust some text bytes.\n")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])
    vals = helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 3])
    idx = helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 3])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="my_relu"),
         helper.make_node("TopK", ["r", "k"], ["values", "indices"], name="my_topk", axis=-1)],
        "unsupported_topk", [x], [vals, idx], initializer=[I64("k", [3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="fhec-testsuite-gen")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    with open(os.path.join(INVALID, "unsupported_op.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    x4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y4 = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    g = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="my_resize", mode="linear",
                          coordinate_transformation_mode="tf_crop_and_resize")],
        "resize_crop_without_roi", [x4], [y4],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], producer_name="fhec-testsuite-gen")
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    with open(os.path.join(INVALID, "resize_crop_without_roi.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    rng = np.random.default_rng(7)
    npy_save(os.path.join(INVALID, "unsupported_op.inputs.npy"), rng.standard_normal((4, 10)).astype(np.float32))
    npy_save(os.path.join(INVALID, "wrong_shape.npy"), rng.standard_normal((4, 29)).astype(np.float32))
    with open(os.path.join(INVALID, "README.md"), "w") as f:
        f.write(
            "# Deliberately invalid inputs\n\n"
            "Generated by `testsuite/gen/generate.py`.\n\n"
            "- `truncated.onnx`: the first 60% of the bytes of `models/logreg_cancer_torch/model.onnx`.\n"
            "- `not_onnx.onnx`: plain text bytes.\n"
            "- `unsupported_op.onnx`: valid ONNX (opset 17), one input `x` [1,10] -> Relu (`my_relu`) -> "
            "TopK (`my_topk`, K=3 initializer) with outputs `values` [1,3] float, `indices` [1,3] int64.\n"
            "- `unsupported_op.inputs.npy`: float32 [4,10] inputs for it.\n"
            "- `resize_crop_without_roi.onnx`: valid ONNX (opset 19), a linear Resize (`my_resize`) in "
            "`tf_crop_and_resize` mode without the roi that mode reads.\n"
            "- `wrong_shape.npy`: float32 [4,29]; does not match `logreg_cancer_torch`'s input [1,30].\n")


# ----------------------------------------------------------------------------- README

def write_readme(versions, dynamo_note):
    lines = ["# fhec model corpus", "",
             "Generated by `testsuite/gen/generate.py` (see `testsuite/gen/README.md`); do not edit by hand.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
             "Each directory holds `model.onnx` (exactly one graph input), `inputs.npy` (float32 "
             "[N, *input shape without batch dim]), `labels.npy` (dataset cases), `expected_<k>.npy` "
             "(reference output k; per-sample outputs concatenated along axis 0, so [1,3] -> [N,3]) "
             "and `meta.json`. References: torch eval-mode output (torch), sklearn predict/predict_proba "
             "(skl2onnx), onnxruntime (onnx.helper op cases).", "",
             "float_accuracy: classification accuracy of the reference outputs on the test labels; R^2 "
             "for regression; null for op cases.", ""]
    if dynamo_note:
        lines += [f"Note: mlp_wine_dynamo was skipped: {dynamo_note}", ""]
    lines += ["| case | exporter | opset | input | N | float_accuracy | ops |",
              "|---|---|---|---|---|---|---|"]
    for name, m in sorted(CASES, key=lambda c: (c[1]["task"] == "op", c[0])):
        acc = "" if m["float_accuracy"] is None else f"{m['float_accuracy']:.4f}"
        imports = ", ".join(f"{k}:{v}" for k, v in m["opset_imports"].items())
        lines.append(f"| {name} | {m['exporter']} | {imports} | {m['input']['shape']} | {m['num_samples']} "
                     f"| {acc} | {', '.join(m['ops'])} |")
    with open(os.path.join(MODELS, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["torch", "skl", "ops"], default=None)
    args = ap.parse_args()
    import sklearn
    import skl2onnx
    versions = {"numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                "scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__}
    os.makedirs(MODELS, exist_ok=True)
    dynamo_note = None
    if args.only in (None, "torch"):
        import torch
        versions["torch"] = torch.__version__
        try:
            import onnxscript
            versions["onnxscript"] = onnxscript.__version__
        except ImportError:
            pass
        print("torch models:", flush=True)
        dynamo_note = torch_models()
    if args.only in (None, "skl"):
        print("sklearn models:", flush=True)
        sklearn_models()
    if args.only in (None, "ops"):
        print("op models:", flush=True)
        op_models()
    if args.only is None:
        invalid_files()
        # remove stale case directories that this run did not produce (nor another script)
        made = {n for n, _ in CASES} | set(OTHER_GENERATORS)
        for d in sorted(os.listdir(MODELS)):
            if os.path.isdir(os.path.join(MODELS, d)) and d not in made:
                shutil.rmtree(os.path.join(MODELS, d))
        write_readme(versions, dynamo_note)
    print(f"{len(CASES)} cases written", flush=True)


if __name__ == "__main__":
    main()
