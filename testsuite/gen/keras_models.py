#!/usr/bin/env python3
"""Corpus models exported from Keras by tf2onnx, the TensorFlow path into ONNX:

- mlp_cancer_keras: a tabular MLP on breast cancer with Keras' own Normalization layer inside, a
  softmax head, and tf2onnx's dynamic batch axis (`unk__N`);
- cnn_digits_keras: a small channels-last (NHWC, Keras' default) CNN on digits. tf2onnx wraps each
  convolution in Transposes to NCHW and flattens in NHWC order, so the model exercises the layout
  ops a torch export never emits.

Expected outputs are Keras' own (`model(x)` in inference mode), checked against onnxruntime.

TensorFlow 2.15 needs numpy < 2, so this runs in its own environment (see README.md next to this
file): `/work/venv-tf/bin/python testsuite/gen/keras_models.py` from the repository root.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as g  # noqa: E402

OPSET = 17


def setup(seed=0):
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(2)


def export(model, sample_shape):
    spec = (tf.TensorSpec((None, *sample_shape), tf.float32, name="input"),)
    m, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return m


def outputs(model, x):
    return np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(len(x))]).astype(np.float32)


def case(name, model, x, labels, *, dataset, description):
    sample = x.shape[1:]
    out = outputs(model, x)
    acc = float((out.argmax(1) == labels).mean())
    g.write_case(name, export(model, sample), x, [out], exporter="tf2onnx (Keras)",
                 exporter_version=f"tf2onnx {tf2onnx.__version__}, tensorflow {tf.__version__}",
                 dataset=dataset, task="classification", labels=labels.astype(np.int64), float_accuracy=acc,
                 description=description)
    print(f"{name}: accuracy {acc:.4f}", flush=True)


def main():
    keras = tf.keras

    setup()
    X, y = g.load("breast_cancer")
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = g.split(X, y, 0.25)
    norm = keras.layers.Normalization()
    norm.adapt(Xtr)
    model = keras.Sequential([keras.Input((30,)), norm, keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(Xtr, ytr, epochs=60, batch_size=32, verbose=0, shuffle=True)
    case("mlp_cancer_keras", model, Xte, yte,
         dataset="sklearn.datasets.load_breast_cancer (test_size=0.25, random_state=0)",
         description="Keras MLP 30-16-2: Normalization layer inside, Dense-ReLU, Dense-softmax; exported by "
                     "tf2onnx with a dynamic batch axis. Output = class probabilities.")

    setup()
    X, y = g.load("digits")
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    Xtr, Xte, ytr, yte = g.split(X, y, 0.2)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu"),
                              keras.layers.AveragePooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(Xtr, ytr, epochs=30, batch_size=64, verbose=0, shuffle=True)
    keep = 200  # as the torch CNNs: the first 200 of the 360 test samples
    case("cnn_digits_keras", model, Xte[:keep], yte[:keep],
         dataset=f"sklearn.datasets.load_digits / 16 (test_size=0.2, random_state=0; first {keep} test samples "
                 "stored), channels last",
         description="Keras CNN, channels last: Conv2D(6, 3x3, ReLU)-AveragePooling2D(2)-Flatten-Dense(10); "
                     "exported by tf2onnx (Transposes around the convolution, NHWC flatten). Output = logits.")


if __name__ == "__main__":
    main()
