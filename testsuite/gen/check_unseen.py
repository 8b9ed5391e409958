"""Exports models the corpus never saw (new architectures, exporters, op mixes) into a temporary
directory, runs `fhec predict` on each, and compares with the exporter's own outputs.

    python testsuite/gen/check_unseen.py path/to/fhec

Needs the generator's environment (requirements.txt). Prints one line per model and exits non-zero if any
model fails to load or differs by more than 1e-4 of its output scale.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from skl2onnx import to_onnx
from sklearn import datasets, linear_model, neural_network, pipeline, preprocessing

torch.manual_seed(1)
torch.set_num_threads(2)
rng = np.random.default_rng(7)
FHEC = sys.argv[1] if len(sys.argv) > 1 else "target/debug/fhec"
TOL = 1e-4


def torch_case(name, model, x, dynamo=False, opset=13):
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    sample = torch.from_numpy(x[:1])
    path = OUT / f"{name}.onnx"
    if dynamo:
        torch.onnx.export(model, (sample,), str(path), dynamo=True, input_names=["x"], output_names=["y"])
    else:
        torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path, x, [want]


def skl_case(name, est, x):
    x = x.astype(np.float32)
    onx = to_onnx(est, x[:1], options={id(est): {"zipmap": False}} if hasattr(est, "predict_proba") else None)
    path = OUT / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    if hasattr(est, "predict_proba"):
        return path, x, [est.predict(x).astype(np.int64), est.predict_proba(x).astype(np.float32)]
    return path, x, [est.predict(x).astype(np.float32).reshape(len(x), -1)]


def cases():
    cancer = datasets.load_breast_cancer()
    xc = cancer.data.astype(np.float32)
    iris = datasets.load_iris()
    xi = iris.data.astype(np.float32)
    diab = datasets.load_diabetes()
    xd = diab.data.astype(np.float32)
    digits = datasets.load_digits()
    xg = (digits.images[:40] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)

    mean, std = torch.tensor(xc.mean(0)), torch.tensor(xc.std(0))

    class Norm(torch.nn.Module):
        def forward(self, x):
            return (x - mean) / std

    yield torch_case("torch_mlp_bn_leaky_softmax", torch.nn.Sequential(
        Norm(), torch.nn.Linear(30, 20), torch.nn.BatchNorm1d(20), torch.nn.LeakyReLU(0.05), torch.nn.Dropout(0.3),
        torch.nn.Linear(20, 2), torch.nn.Softmax(dim=1)), xc[:50])

    seq = rng.normal(size=(20, 3, 16)).astype(np.float32)
    yield torch_case("torch_conv1d_gelu_gap", torch.nn.Sequential(
        torch.nn.Conv1d(3, 6, 5, padding=2), torch.nn.GELU(), torch.nn.Conv1d(6, 6, 3, stride=2, groups=3),
        torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.LogSoftmax(dim=1)), seq)

    yield torch_case("torch_cnn_elu_dynamo", torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding="same"), torch.nn.ELU(), torch.nn.MaxPool2d(3, stride=2, padding=1),
        torch.nn.Conv2d(4, 8, 3, groups=2, dilation=1, padding=1), torch.nn.Hardsigmoid(),
        torch.nn.AvgPool2d(2, ceil_mode=False), torch.nn.Flatten(), torch.nn.Linear(32, 10)), xg, dynamo=True)

    yield torch_case("torch_prelu_softplus_tanh", torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.PReLU(8), torch.nn.Softplus(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
        torch.nn.SELU(), torch.nn.Linear(8, 3)), xi, opset=11)

    yield skl_case("skl_logreg_multiclass_iris", pipeline.make_pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=500)).fit(xi, iris.target), xi)
    yield skl_case("skl_mlp_regressor_diabetes", neural_network.MLPRegressor(
        hidden_layer_sizes=(12,), max_iter=300, random_state=0).fit(xd, diab.target), xd[:60])
    yield skl_case("skl_ridge_diabetes", linear_model.Ridge(alpha=0.5).fit(xd, diab.target), xd[:60])
    yield skl_case("skl_mlp_tanh_cancer", pipeline.make_pipeline(preprocessing.MinMaxScaler(), neural_network.MLPClassifier(
        hidden_layer_sizes=(10, 6), activation="tanh", max_iter=400, random_state=0)).fit(xc, cancer.target), xc[:80])


def max_rel(got, want):
    got, want = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


failures = 0
with tempfile.TemporaryDirectory() as tmp:
    OUT = Path(tmp)
    for path, x, wants in cases():
        xin = OUT / "x.npy"
        np.save(xin, x)
        y = OUT / "y.npy"
        r = subprocess.run([FHEC, "predict", str(path), "--input", str(xin), "--output", str(y)], capture_output=True, text=True)
        if r.returncode != 0:
            failures += 1
            print(f"FAIL {path.stem}: {r.stderr.strip()}")
            continue
        outs = [y] + sorted(p for p in OUT.glob("y.*.npy"))
        errs = [max_rel(np.load(o), w) for o, w in zip(outs, wants)]
        ok = len(outs) >= len(wants) and all(e <= TOL for e in errs)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.stem}: max error {max(errs):.2e} of output scale over {len(x)} samples")
        for o in outs:
            o.unlink()
sys.exit(1 if failures else 0)
