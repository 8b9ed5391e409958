"""Shared fixtures: the committed corpus, one compiled wine MLP per session, the fhec binary."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import fhec

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "testsuite" / "models"


def corpus(name: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """A corpus model: its ONNX file, its samples and their labels."""
    d = CORPUS / name
    return d / "model.onnx", np.load(d / "inputs.npy"), np.load(d / "labels.npy")


@pytest.fixture(scope="session")
def wine() -> tuple[fhec.Model, np.ndarray, np.ndarray]:
    onnx, x, y = corpus("mlp_wine")
    return fhec.compile(onnx, calibration=x, quiet=True), x, y


@pytest.fixture(scope="session")
def wine_keys(wine, tmp_path_factory) -> tuple[Path, Path]:
    """The wine build saved to a directory, and keys generated for it."""
    root = tmp_path_factory.mktemp("wine")
    model, _, _ = wine
    saved = fhec.load(model.dir).save(root / "wine.fhec")
    fhec.Client.keygen(saved, root / "keys")
    return saved, root / "keys"


def fhec_binary() -> Path | None:
    """The `fhec` CLI: $FHEC_BIN, else the workspace's build, else $PATH's."""
    if os.environ.get("FHEC_BIN"):
        return Path(os.environ["FHEC_BIN"])
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "fhec"
        if p.is_file():
            return p
    found = shutil.which("fhec")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def fhec_bin() -> Path:
    b = fhec_binary()
    if b is None:
        pytest.skip("no fhec binary (cargo build -p fhec-cli, or set FHEC_BIN)")
    return b
