#!/usr/bin/env python3
"""A pre-quantized (QDQ) corpus model: the wine MLP (testsuite/models/mlp_wine) quantized by
onnxruntime's static quantization (QuantFormat.QDQ: QuantizeLinear/DequantizeLinear around every op,
uint8 activations, int8 weights, per-tensor), calibrated on the training split.

Run after generate.py: `python testsuite/gen/qdq.py`. Writes testsuite/models/mlp_wine_qdq/ with
onnxruntime's own outputs on the test set as the expected outputs.
"""
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as g  # noqa: E402


class Reader(CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"input": x[None, :]} for x in xs])

    def get_next(self):
        return next(self.it, None)


def main():
    X, y = g.load("wine")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = g.split(X, y, 0.25)
    src = os.path.join(g.MODELS, "mlp_wine", "model.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "qdq.onnx")
        quantize_static(src, out, Reader(Xtr), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=False)
        m = onnx.load(out)
    expected = np.concatenate(g.ort_run_per_sample(m, Xte)[0], axis=0).reshape(len(Xte), -1).astype(np.float32)
    acc = float((expected.argmax(1) == yte).mean())
    g.write_case("mlp_wine_qdq", m, Xte, [expected], exporter="onnxruntime.quantization.quantize_static",
                 exporter_version=ort.__version__,
                 dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0); calibrated on the training split",
                 task="classification", labels=yte.astype(np.int64), float_accuracy=acc,
                 description="mlp_wine quantized by onnxruntime (QDQ format, uint8 activations, int8 weights, "
                             "per-tensor). Expected outputs are onnxruntime's on the quantized model.")


if __name__ == "__main__":
    main()
