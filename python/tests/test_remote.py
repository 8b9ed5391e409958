"""A model compiled and keyed in Python, served by `fhec serve`, queried through fhec.Remote."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import fhec


@pytest.fixture
def served(wine_keys, fhec_bin, tmp_path):
    build, _ = wine_keys
    proc = subprocess.Popen(
        [fhec_bin, "serve", build, "--allow-anonymous", "--store", tmp_path / "store", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addr = None
        for line in proc.stderr:
            if "serving" in line and "addr=" in line:
                addr = line.split("addr=")[1].split()[0]
                break
        assert addr, "fhec serve logs its address"
        yield f"http://{addr}"
    finally:
        proc.kill()
        proc.wait()


def test_remote_predictions_equal_the_local_circuit(wine, wine_keys, served):
    model, x, y = wine
    build, keys = wine_keys
    remote = fhec.Remote(served)
    client = fhec.Client(build, keys)
    got = remote.predict(client, x[:3], batch=2, quiet=True)
    np.testing.assert_array_equal(got.argmax(1), model.predict(x[:3]).argmax(1))
    assert remote.last_run["requests"] == 2
    with pytest.raises(fhec.RemoteError, match="nosuchmodel"):
        remote.predict(client, x[:1], model="nosuchmodel", quiet=True)


def test_an_unreachable_server_is_a_remote_error(wine_keys):
    build, keys = wine_keys
    with pytest.raises(fhec.RemoteError):
        fhec.Remote("http://127.0.0.1:9", retries=0).predict(fhec.Client(build, keys), np.zeros((1, 13)), quiet=True)
