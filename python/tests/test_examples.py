"""The examples run as a user runs them (small arguments); the torch one needs torch installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, EXAMPLES / script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_client_server_split(tmp_path):
    out = run("client_server.py", str(tmp_path))
    assert "predicted [0, 2, 1, 0], labels [0, 2, 1, 0]" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"wine.fhec", "keys", "request.ct", "answer.ct"}


def test_sklearn_pipeline():
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    out = run("sklearn_pipeline.py", "4")
    labels = out.split("encrypted: labels ")[1]
    got, expected = labels.split(" (scikit-learn ")
    assert got == expected.split(", true")[0], out


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed (pip install 'fhec[torch]')")
def test_torch_cnn():
    out = run("torch_cnn.py", "2")
    torch_acc = float(out.split("torch ")[1].split("%")[0])
    clear_acc = float(out.split("compiled (clear) ")[1].split("%")[0])
    assert clear_acc >= torch_acc - 1.5, out


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed (pip install 'fhec[torch]')")
def test_quickstart():
    out = run("quickstart.py", "3")
    assert "wine MLP encrypted: 100.00%" in out, out
    got = out.split("pipeline encrypted: ")[1].split("%")[0]
    expected = out.split("(scikit-learn ")[1].split("%")[0]
    assert got == expected, out
