#!/usr/bin/env python3
"""Pre-quantized corpus models, made by onnxruntime's static quantization (uint8 activations, int8
weights), with onnxruntime's own outputs on the test set as the expected outputs:

- mlp_wine_qdq: the wine MLP (testsuite/models/mlp_wine) in QDQ format (QuantizeLinear /
  DequantizeLinear around every op, per-tensor), calibrated on the training split;
- cnn_digits_qop: the digits CNN (testsuite/models/cnn_digits) in QOperator format (its convolutions
  become QLinearConv, per-channel weights), calibrated on the first 100 test inputs. Only Conv and
  MatMul are quantized: onnxruntime's QOperator forms of the others (QGemm, QLinearAdd...) are
  com.microsoft contrib ops, outside the ONNX standard.

Run after generate.py: `python testsuite/gen/qdq.py`.
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
    def __init__(self, xs, name="input"):
        self.it = iter([{name: x[None]} for x in xs])

    def get_next(self):
        return next(self.it, None)


def quantized_case(name, src, calibration, x, labels, *, dataset, description, **quantize):
    """Quantizes the model at `src` with onnxruntime (uint8 activations, int8 weights), calibrated on
    `calibration`, and writes it as corpus case `name` with onnxruntime's outputs on `x` as expected."""
    input_name = onnx.load(src).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "quantized.onnx")
        quantize_static(src, out, Reader(calibration, input_name), activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, **quantize)
        m = onnx.load(out)
    expected = np.concatenate(g.ort_run_per_sample(m, x)[0], axis=0).reshape(len(x), -1).astype(np.float32)
    acc = float((expected.argmax(1) == labels).mean())
    g.write_case(name, m, x, [expected], exporter="onnxruntime.quantization.quantize_static",
                 exporter_version=ort.__version__, dataset=dataset, task="classification",
                 labels=labels.astype(np.int64), float_accuracy=acc, description=description)


def main():
    X, y = g.load("wine")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = g.split(X, y, 0.25)
    quantized_case("mlp_wine_qdq", os.path.join(g.MODELS, "mlp_wine", "model.onnx"), Xtr, Xte, yte,
                   dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0); calibrated on the training split",
                   description="mlp_wine quantized by onnxruntime (QDQ format, uint8 activations, int8 weights, "
                               "per-tensor). Expected outputs are onnxruntime's on the quantized model.",
                   quant_format=QuantFormat.QDQ, per_channel=False)
    cnn = os.path.join(g.MODELS, "cnn_digits")
    x = np.load(os.path.join(cnn, "inputs.npy"))
    quantized_case("cnn_digits_qop", os.path.join(cnn, "model.onnx"), x[:100], x, np.load(os.path.join(cnn, "labels.npy")),
                   dataset="sklearn.datasets.load_digits, the test split of cnn_digits; calibrated on its first 100 inputs",
                   description="cnn_digits quantized by onnxruntime (QOperator format: QLinearConv with per-channel int8 "
                               "weights, uint8 activations; Gemm left in float). Expected outputs are onnxruntime's on the "
                               "quantized model.",
                   quant_format=QuantFormat.QOperator, per_channel=True, op_types_to_quantize=["Conv", "MatMul"])


if __name__ == "__main__":
    main()
