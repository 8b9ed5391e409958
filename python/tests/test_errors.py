"""Every error is an fhec.errors exception with the CLI's text; no panic crosses into Python."""

from __future__ import annotations

import numpy as np
import pytest

import fhec

from conftest import REPO, corpus

INVALID = REPO / "testsuite" / "invalid"


def test_an_unsupported_op_names_its_node_and_op():
    with pytest.raises(fhec.UnsupportedOp) as e:
        fhec.compile(INVALID / "unsupported_op.onnx", calibration=np.load(INVALID / "unsupported_op.inputs.npy"))
    assert e.value.node and e.value.op and (e.value.node, e.value.op) in e.value.nodes
    assert isinstance(e.value, fhec.ModelError) and isinstance(e.value, fhec.Error)


@pytest.mark.parametrize("name", ["not_onnx.onnx", "truncated.onnx"])
def test_a_malformed_model_is_a_model_error(name):
    with pytest.raises(fhec.ModelError, match=name.split(".")[0]):
        fhec.compile(INVALID / name, calibration=np.zeros((2, 4), dtype=np.float32))


def test_garbage_bytes_are_a_model_error():
    with pytest.raises(fhec.ModelError):
        fhec.compile(b"not a model", calibration=np.zeros((2, 4), dtype=np.float32))


def test_samples_of_the_wrong_shape(wine):
    model, x, _ = wine
    with pytest.raises(fhec.ShapeError, match=r"shape \[45, 5\].*\[N, 13\]") as e:
        model.predict(x[:, :5])
    assert isinstance(e.value, ValueError)
    with pytest.raises(fhec.ShapeError, match="calibration"):
        fhec.compile(corpus("mlp_wine")[0], calibration=x[:, :5])


def test_samples_that_cannot_be_encrypted(wine):
    model, x, _ = wine
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(fhec.DataError, match="sample 1 element 3 is NaN"):
        model.predict(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scheme": "paillier"}, "scheme"),
        ({"accuracy_budget": 150.0}, "--accuracy-budget"),
        ({"weight_bits": 40}, "--weight-bits"),
        ({"packing": "feature-major"}, "--packing is for CKKS"),
        ({"params": "NO_SUCH_SET"}, "NO_SUCH_SET"),
        ({"batch": 0}, "--batch"),
    ],
)
def test_settings_out_of_range_are_usage_errors(wine, kwargs, match):
    _, x, _ = wine
    with pytest.raises(fhec.Error, match=match):
        fhec.compile(corpus("mlp_wine")[0], calibration=x, quiet=True, **kwargs)


def test_a_set_too_noisy_for_every_candidate_is_a_precision_error(wine):
    _, x, _ = wine
    with pytest.raises(fhec.PrecisionError) as e:
        fhec.compile(
            corpus("mlp_wine")[0],
            calibration=x,
            params="V1_2_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M40",
            weight_bits=7,
            quiet=True,
        )
    assert e.value.layer


def test_an_unknown_mode_and_a_model_of_no_kind(wine):
    model, x, _ = wine
    with pytest.raises(fhec.UsageError, match="mode"):
        model.predict(x, mode="decrypt-for-me")
    with pytest.raises(fhec.UsageError, match="cannot compile a builtins.dict"):
        fhec.compile({"not": "a model"})


def test_a_missing_build_directory_names_it(tmp_path):
    with pytest.raises(fhec.FileError, match="nowhere"):
        fhec.load(tmp_path / "nowhere")


def test_a_rust_panic_becomes_an_internal_error():
    with pytest.raises(fhec.InternalError, match="a bug.*boom"):
        fhec._fhec._panic_for_test("boom")


def test_an_estimator_skl2onnx_cannot_convert_is_a_model_error():
    pytest.importorskip("skl2onnx")
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Homemade(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            return self

        def predict(self, x):
            return np.zeros(len(x))

    with pytest.raises(fhec.ModelError, match="skl2onnx cannot convert Homemade"):
        fhec.compile(Homemade().fit(None, None), calibration=np.zeros((2, 4), dtype=np.float32))
