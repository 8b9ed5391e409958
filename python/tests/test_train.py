"""Training from Python: the committed training sets, weights against float64, the trained model
compiled and run encrypted, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fhec

from conftest import REPO

TRAIN = REPO / "testsuite" / "train"


def data(name: str):
    d = TRAIN / name
    return (np.load(d / "train_x.npy"), np.load(d / "train_y.npy"), np.load(d / "test_x.npy"), np.load(d / "test_y.npy"))


def test_simulated_training_tracks_float64_and_the_model_compiles(tmp_path):
    x, y, tx, ty = data("breast_cancer")
    trained = fhec.train(x, y, mode="simulate", quiet=True)
    report = trained.report
    assert report["task"] == "logistic" and report["mode"] == "simulate"
    assert report["distance_from_float64"] < 1e-3
    score = trained.score(tx, ty)
    sklearn = json.loads((TRAIN / "reference.json").read_text())["breast_cancer"]["sklearn_logistic_standardized_accuracy"]
    assert score["value"] >= sklearn - 0.03 and score["disagreements"] == 0
    assert trained.predict_proba(tx).shape == (len(tx), 1)
    # The ONNX model predicts what the trained weights do, compiled and encrypted.
    model = trained.compile(tx.astype(np.float32), quiet=True)
    enc = model.predict(tx[:6], mode="fhe", quiet=True)[:, 0]
    proba = trained.predict_proba(tx[:6])[:, 0]
    np.testing.assert_allclose(enc, proba, atol=0.1)
    sure = np.abs(proba - 0.5) > 0.1
    assert np.array_equal((enc > 0.5)[sure], (proba > 0.5)[sure])
    path = trained.save(tmp_path / "logreg.onnx")
    assert path.read_bytes() == trained.onnx and json.loads(path.with_suffix(".json").read_text())["weights"]


def test_linear_regression_in_the_clear():
    x, y, tx, ty = data("diabetes")
    trained = fhec.train(x, y, task="linear", mode="clear", quiet=True)
    assert trained.score(tx, ty)["metric"] == "R²"
    assert trained.weights.shape == (1, x.shape[1] + 1)


def test_training_errors():
    x, y, _, _ = data("breast_cancer")
    with pytest.raises(fhec.ShapeError, match="one per sample"):
        fhec.train(x, y[:-1], mode="clear", quiet=True)
    with pytest.raises(fhec.UsageError, match="task"):
        fhec.train(x, y, task="svm", quiet=True)
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(fhec.DataError, match="sample 3, feature 2"):
        fhec.train(bad, y, mode="clear", quiet=True)
    if not fhec.has_ckks():
        with pytest.raises(fhec.Error, match="ckks"):
            fhec.train(x, y, mode="fhe", quiet=True)
