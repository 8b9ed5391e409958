"""A PyTorch CNN on 8x8 digits, compiled and run encrypted.

The network is the corpus's `cnn_digits` (conv-bn-relu-avgpool-conv-relu-fc) with its trained
weights, loaded from the committed ONNX file into the torch module; fhec exports it again through
torch's ONNX exporter, compiles it and runs it. Usage: python torch_cnn.py [ENCRYPTED_SAMPLES]
"""

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

import fhec

CORPUS = Path(__file__).resolve().parents[2] / "testsuite" / "models" / "cnn_digits"
n = int(sys.argv[1]) if len(sys.argv) > 1 else 5

net = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
)
weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(CORPUS / "model.onnx").graph.initializer}
net.load_state_dict(weights, strict=False)
net.eval()

x, y = np.load(CORPUS / "inputs.npy"), np.load(CORPUS / "labels.npy")
model = fhec.compile(net, calibration=x[:100])
print(model.report_text.split("\n\nlayers:")[0])
print("estimate:", model.estimate())

with torch.no_grad():
    torch_acc = (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
clear_acc = (model.predict(x).argmax(1) == y).mean()
start = time.time()
enc = model.predict(x[:n], mode="fhe")
print(f"torch {torch_acc:.2%}, compiled (clear) {clear_acc:.2%} on {len(x)} samples")
print(f"encrypted: {(enc.argmax(1) == y[:n]).mean():.2%} on {n} samples, {model.last_run['ms_per_sample']:.0f} ms/sample, "
      f"keygen {model.last_run['keygen_s']:.1f} s, total {time.time() - start:.1f} s")
