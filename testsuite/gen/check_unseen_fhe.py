"""Encrypted-inference check on models the corpus never saw: trains them, compiles each with `fhec build`
on a calibration set drawn from the training split (never the test split), and compares on the test
split: the float model, the compiled circuit in noisy simulation, and real encryption on a few samples.

    python testsuite/gen/check_unseen_fhe.py path/to/fhec [--scheme ckks] [--accuracy-budget POINTS] [--polynomial-fit FIT]

With `--scheme ckks` (an fhec built with `cargo +nightly build --release -p fhec-cli --features ckks`) the
models are compiled for CKKS instead and the whole test split runs encrypted, in one batch. Needs the generator's environment (requirements.txt). Prints one line per model and exits non-zero if a
model fails to build or loses more accuracy than issue 3 allows (1 point; 1.5 for the CNN).
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skl2onnx import to_onnx
from sklearn import datasets, neural_network, pipeline, preprocessing
from sklearn.model_selection import train_test_split

torch.manual_seed(3)
torch.set_num_threads(2)
ARGS = argparse.ArgumentParser()
ARGS.add_argument("fhec", nargs="?", default="target/debug/fhec")
ARGS.add_argument("--scheme", choices=["tfhe", "ckks"], default="tfhe")
ARGS.add_argument("--accuracy-budget", help="passed to fhec build")
ARGS.add_argument("--polynomial-fit", choices=["chebyshev", "least-squares", "auto"], help="passed to fhec build (CKKS)")
ARGS = ARGS.parse_args()
FHEC = ARGS.fhec
OUT = Path(tempfile.mkdtemp(prefix="fhec-unseen-fhe-"))


def split(x, y):
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=0.3, random_state=5, stratify=y)
    return xtr, xte, ytr, yte


def train_torch(model, xtr, ytr, epochs=300, lr=0.01):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xs, ys = torch.from_numpy(xtr), torch.from_numpy(ytr)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
    model.eval()
    return model


def export_torch(name, model, xtr):
    path = OUT / f"{name}.onnx"
    torch.onnx.export(model, (torch.from_numpy(xtr[:1]),), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"])
    return path


def run(*args):
    r = subprocess.run([FHEC, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout + r.stderr


def accuracy(text):
    return float(re.search(r"accuracy ([0-9.]+)%", text).group(1))


def case(name, path, xtr, xte, yte, fhe_samples, budget):
    if ARGS.scheme == "ckks":
        return case_ckks(name, path, xtr, xte, yte, budget)
    cal, xt, yt = OUT / f"{name}_cal.npy", OUT / f"{name}_x.npy", OUT / f"{name}_y.npy"
    np.save(cal, xtr[:300])
    np.save(xt, xte)
    np.save(yt, yte)
    np.save(OUT / f"{name}_xf.npy", xte[:fhe_samples])
    np.save(OUT / f"{name}_yf.npy", yte[:fhe_samples])
    d = OUT / f"{name}.fhec"
    start = time.time()
    run("build", path, "--calibration", cal, "-o", d, "--quiet")
    build_s = time.time() - start
    report = (d / "report.txt").read_text()
    pbs = int(re.search(r"bootstraps \(PBS\) per sample: (\d+)", report).group(1))
    params = re.search(r"parameter set: (\S+)", report).group(1)
    fidelity = re.search(r"noisy simulation\): ([0-9.]+)%", report).group(1)
    flt = accuracy(run("predict", path, "--input", xt, "--labels", yt))
    sim = accuracy(run("predict", d, "--mode", "simulate", "--noise-seed", "1", "--input", xt, "--labels", yt))
    fhe_out = run("predict", d, "--mode", "fhe", "--input", OUT / f"{name}_xf.npy", "--labels", OUT / f"{name}_yf.npy", "--quiet")
    fhe_sim = accuracy(run("predict", d, "--mode", "simulate", "--input", OUT / f"{name}_xf.npy", "--labels", OUT / f"{name}_yf.npy"))
    ms = float(re.search(r"([0-9.]+) ms/sample encrypted", fhe_out).group(1))
    ok = flt - sim <= budget + 1e-9
    print(f"{name:22} pbs {pbs:4}  {params:52} fidelity {fidelity:>6}%  float {flt:6.2f}%  sim+noise {sim:6.2f}%  "
          f"fhe {accuracy(fhe_out):6.2f}% (sim {fhe_sim:6.2f}%, {fhe_samples} samples)  {ms:8.1f} ms/sample  build {build_s:.1f} s  "
          f"{'ok' if ok else 'OVER BUDGET'}", flush=True)
    return ok


def case_ckks(name, path, xtr, xte, yte, budget):
    cal, xt, yt = OUT / f"{name}_cal.npy", OUT / f"{name}_x.npy", OUT / f"{name}_y.npy"
    np.save(cal, xtr[:300])
    np.save(xt, xte)
    np.save(yt, yte)
    d = OUT / f"{name}.ckks"
    extra = ["--accuracy-budget", ARGS.accuracy_budget] if ARGS.accuracy_budget else []
    extra += ["--polynomial-fit", ARGS.polynomial_fit] if ARGS.polynomial_fit else []
    start = time.time()
    run("build", path, "--calibration", cal, "-o", d, "--quiet", "--scheme", "ckks", *extra)
    build_s = time.time() - start
    report = (d / "report.txt").read_text()
    ring = re.search(r"ring: (2\^\d+)", report).group(1)
    degrees = [f"{'ls' if f == 'least-squares' else 'cheb'}{d}" for f, d in re.findall(r"polynomials: (\S+) (\d+)", report)]
    flt = accuracy(run("predict", path, "--input", xt, "--labels", yt))
    sim = accuracy(run("predict", d, "--mode", "simulate", "--input", xt, "--labels", yt))
    fhe_out = run("predict", d, "--mode", "fhe", "--input", xt, "--labels", yt, "--quiet")
    server = float(re.search(r"server ([0-9.]+) s", fhe_out).group(1))
    dist = re.search(r"simulation ([0-9.e+-]+)", fhe_out).group(1)
    fhe = accuracy(fhe_out)
    ok = flt - fhe <= budget + 1e-9
    print(f"{name:22} ring {ring} polynomials {','.join(degrees) or '-':12} float {flt:6.2f}%  ckks-sim {sim:6.2f}%  "
          f"fhe {fhe:6.2f}% ({len(yte)} samples, one batch: server {server:.1f} s; distance from simulation {dist})  "
          f"build {build_s:.1f} s  {'ok' if ok else 'OVER BUDGET'}", flush=True)
    return ok


def main():
    results = []
    # 1. scikit-learn MLP on breast cancer (30 features), scaler in the pipeline.
    x, y = datasets.load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = split(x, y)
    skl = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 neural_network.MLPClassifier(hidden_layer_sizes=(20,), max_iter=800, random_state=0))
    skl.fit(xtr, ytr)
    path = OUT / "mlp_cancer_skl.onnx"
    path.write_bytes(to_onnx(skl, xtr[:1], options={id(skl): {"zipmap": False}}).SerializeToString())
    results.append(case("mlp_cancer_skl", path, xtr, xte, yte, 30, 1.0))

    # 2. torch MLP 64-32-10 on 8x8 digits.
    x, y = datasets.load_digits(return_X_y=True)
    x = x / 16.0
    xtr, xte, ytr, yte = split(x, y)
    mlp = train_torch(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)), xtr, ytr)
    results.append(case("mlp_digits_torch", export_torch("mlp_digits_torch", mlp, xtr), xtr, xte, yte, 20, 1.0))

    # 3. torch logistic regression (softmax) on wine.
    x, y = datasets.load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    xtr, xte, ytr, yte = split(x, y)
    lr = train_torch(torch.nn.Sequential(torch.nn.Linear(13, 3), torch.nn.Softmax(dim=1)), xtr, ytr, epochs=200)
    results.append(case("logreg_wine_torch", export_torch("logreg_wine_torch", lr, xtr), xtr, xte, yte, 54, 1.0))

    # 4. CNN without padding (conv-bn-relu-avgpool-conv-relu-fc, 352 neurons) on 8x8 digits.
    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = split(x, y)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(8, 16, 2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cnn = train_torch(cnn, xtr, ytr, epochs=200)
    results.append(case("cnn_digits_nopad", export_torch("cnn_digits_nopad", cnn, xtr), xtr, xte, yte, 6, 1.5))
    print(f"artifacts in {OUT}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
