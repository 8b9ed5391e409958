"""Fifteen lines: a torch MLP (the corpus wine model's weights) and a fitted scikit-learn pipeline,
compiled, reported and run encrypted. Usage: python quickstart.py [ENCRYPTED_SAMPLES]"""

import sys
from pathlib import Path

import numpy as np, onnx, torch
from onnx import numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fhec

CORPUS, n = Path(__file__).resolve().parents[2] / "testsuite" / "models", int(sys.argv[1]) if len(sys.argv) > 1 else 45


class Normalize(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(13)), self.register_buffer("std", torch.ones(13))

    def forward(self, x):
        return (x - self.mean) / self.std


# 1. torch: the wine MLP.
mlp = torch.nn.Sequential(Normalize(), torch.nn.Linear(13, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 3))
mlp.load_state_dict({t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(CORPUS / "mlp_wine" / "model.onnx").graph.initializer})
x, y = np.load(CORPUS / "mlp_wine" / "inputs.npy"), np.load(CORPUS / "mlp_wine" / "labels.npy")
wine = fhec.compile(mlp, calibration=x)
print(wine.report_text.split("\n\nlayers:")[0])
print(f"wine MLP encrypted: {(wine.predict(x[:n], mode='fhe').argmax(1) == y[:n]).mean():.2%}, {wine.last_run['ms_per_sample']:.0f} ms/sample")

# 2. scikit-learn: scaling and logistic regression on breast-cancer records.
xc, yc = np.load(CORPUS / "logreg_cancer_skl" / "inputs.npy"), np.load(CORPUS / "logreg_cancer_skl" / "labels.npy")
pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xc, yc)
cancer = fhec.compile(pipe, calibration=xc)
print(cancer.report_text.split("\n\nlayers:")[0])
print(f"pipeline encrypted: {(cancer.predict(xc[:n], mode='fhe') == yc[:n]).mean():.2%} (scikit-learn {(pipe.predict(xc[:n]) == yc[:n]).mean():.2%}), {cancer.last_run['ms_per_sample']:.0f} ms/sample")
