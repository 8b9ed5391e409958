"""Compiling from Python: ONNX paths, bytes and protos; reports; estimates; the three modes."""

from __future__ import annotations

import numpy as np
import pytest

import fhec

from conftest import corpus


def test_the_wine_mlp_compiles_and_keeps_the_float_accuracy(wine):
    model, x, y = wine
    assert model.scheme == "tfhe"
    report = model.report
    assert report["within_budget"] and report["pbs_count"] > 0
    assert [layer["pbs"] for layer in report["layers"]] == [32, 16]
    assert "parameter set:" in model.report_text
    reference = fhec.reference(corpus("mlp_wine")[0], x)
    np.testing.assert_array_equal(model.reference(x), reference)
    float_acc = (reference.argmax(1) == y).mean()
    assert (model.predict(x).argmax(1) == y).mean() >= float_acc - 0.002
    noisy = model.predict(x, mode="simulate", noise_seed=7)
    assert (noisy.argmax(1) == y).mean() >= float_acc - 0.03


def test_bytes_and_a_path_compile_to_the_same_build(wine):
    model, x, _ = wine
    onnx = corpus("mlp_wine")[0]
    again = fhec.compile(onnx.read_bytes(), calibration=x, quiet=True)
    assert (again.dir / "server.fhec").read_bytes() == (model.dir / "server.fhec").read_bytes()


def test_the_estimate_comes_before_any_key(wine):
    model, _, _ = wine
    est = model.estimate()
    assert est["bootstraps_per_sample"] == model.report["pbs_count"]
    assert est["latency_ms_per_sample"] == pytest.approx(model.report["estimated_latency_ms"])
    assert est["eval_key_bytes"] > 1_000_000
    assert model.estimate(batch=100)["batch_ms"] > est["batch_ms"]


def test_encrypted_predictions_equal_the_cleartext_circuit(wine):
    model, x, _ = wine
    clear = model.predict(x[:3], all_outputs=True)
    enc = model.predict(x[:3], mode="fhe", all_outputs=True, quiet=True)
    assert list(enc) == list(clear)
    # The circuit's outputs are exact integers decoded: equal classes, values within a table step.
    np.testing.assert_array_equal(enc["output"].argmax(1), clear["output"].argmax(1))
    assert model.last_run["ms_per_sample"] > 0 and model.last_run["keygen_s"] > 0


def test_a_saved_build_loads_as_it_was(wine, tmp_path):
    model, x, _ = wine
    loaded = fhec.load(fhec.load(model.dir).save(tmp_path / "w.fhec"))
    assert sorted(p.name for p in (tmp_path / "w.fhec").iterdir()) == sorted(fhec.BUILD_FILES)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_pre_quantized_model_needs_no_calibration():
    onnx, x, y = corpus("mlp_wine_qdq")
    # Scored on samples drawn from the quantizer's range, the search warns; real data keeps its accuracy.
    with pytest.warns(UserWarning, match="accuracy budget"):
        model = fhec.compile(onnx, quiet=True)
    assert (model.predict(x).argmax(1) == y).mean() > 0.9


def test_ckks_builds_compile_and_simulate_without_the_feature():
    onnx, x, y = corpus("mlp_wine")
    model = fhec.compile(onnx, calibration=x, scheme="ckks", quiet=True)
    assert model.scheme == "ckks"
    assert (model.predict(x).argmax(1) == y).mean() > 0.95
    est = model.estimate()
    per = est["samples_per_ciphertext"]
    assert per >= 1024
    # Batch-major: the plan's time per batch of ciphertexts, for the batch asked (the report's
    # estimate is for the build's own batch): a full ciphertext costs as much as one sample, one
    # more sample another batch.
    assert model.estimate(batch=per)["batch_ms"] == pytest.approx(est["batch_ms"])
    assert model.estimate(batch=per + 1)["batch_ms"] == pytest.approx(2 * est["batch_ms"])
    if not fhec.has_ckks():
        with pytest.raises(fhec.UsageError, match="without CKKS"):
            model.predict(x[:2], mode="fhe", quiet=True)
