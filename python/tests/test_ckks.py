"""CKKS encrypted from Python: runs where the package was built with the `ckks` feature (nightly:
see docs/python.md); CI builds the package with it."""

from __future__ import annotations

import numpy as np
import pytest

import fhec

from conftest import corpus

pytestmark = pytest.mark.skipif(not fhec.has_ckks(), reason="the package was built without the ckks feature")


def test_ckks_locally_and_split_equal_the_simulation(tmp_path):
    onnx, x, y = corpus("mlp_wine")
    model = fhec.compile(onnx, calibration=x, scheme="ckks", quiet=True)
    clear = model.predict(x)
    enc = model.predict(x, mode="fhe", quiet=True)
    np.testing.assert_array_equal(enc.argmax(1), clear.argmax(1))
    assert model.last_run["max_error"] < 1e-2
    build = model.save(tmp_path / "wine_ckks.fhec")
    client = fhec.Client.keygen(build, tmp_path / "keys")
    answer = fhec.Server(build, tmp_path / "keys" / "eval.key").run(client.encrypt(x))
    np.testing.assert_allclose(client.decrypt(answer), clear, atol=1e-2)


def test_training_under_encryption_tracks_float64():
    from conftest import REPO

    d = REPO / "testsuite" / "train" / "breast_cancer"
    trained = fhec.train(np.load(d / "train_x.npy"), np.load(d / "train_y.npy"), mode="fhe", quiet=True)
    assert trained.report["distance_from_float64"] < 1e-2
    assert trained.score(np.load(d / "test_x.npy"), np.load(d / "test_y.npy"))["disagreements"] <= 1
