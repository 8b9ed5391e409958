"""A model given to ``fhec.compile`` as an ONNX file: a path as it is, bytes written out, a
``torch.nn.Module`` through torch's ONNX exporter, a fitted scikit-learn estimator or pipeline
through skl2onnx. torch, skl2onnx and onnx are imported only when such a model is given."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import ModelError, UsageError

# The opsets fhec's corpus is exported with (see testsuite/gen/generate.py).
ONNX_OPSET = 17
ONNX_ML_OPSET = 3


def _missing(what: str, extra: str, err: ImportError) -> UsageError:
    return UsageError(f"compiling a {what} needs the {extra!r} extra: pip install 'fhec[{extra}]' ({err})")


def to_onnx_file(model: Any, calibration: Optional[np.ndarray], workdir: Path) -> Path:
    """The ONNX file for ``model`` (written into ``workdir`` unless it is a path already)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise UsageError(f"{path}: no such ONNX file")
        return path
    out = workdir / "model.onnx"
    if isinstance(model, (bytes, bytearray, memoryview)):
        out.write_bytes(bytes(model))
        return out
    module = type(model).__module__
    if _is_torch(model):
        out.write_bytes(_torch_to_onnx(model, calibration))
        return out
    if module.startswith("sklearn") or hasattr(model, "fit") and hasattr(model, "get_params"):
        out.write_bytes(_sklearn_to_onnx(model, calibration))
        return out
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        out.write_bytes(model.SerializeToString())
        return out
    raise UsageError(
        f"cannot compile a {type(model).__module__}.{type(model).__name__}: give an ONNX path or bytes, an "
        "onnx.ModelProto, a torch.nn.Module or a fitted scikit-learn estimator"
    )


def _is_torch(model: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(model).__mro__)


def _sample(calibration: Optional[np.ndarray], what: str) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise UsageError(f"compiling a {what} needs calibration samples (calibration=X): they give the input's shape")
    return np.ascontiguousarray(calibration[:1], dtype=np.float32)


def _torch_to_onnx(model: Any, calibration: Optional[np.ndarray]) -> bytes:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is optional
        raise _missing("torch model", "torch", e) from e
    sample = torch.from_numpy(_sample(calibration, "torch model"))
    was_training = model.training
    model.eval()
    f = io.BytesIO()
    try:
        kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"], "opset_version": ONNX_OPSET}
        import inspect

        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, fixed shapes
        with torch.no_grad():
            torch.onnx.export(model, (sample,), f, **kwargs)
    except Exception as e:
        raise ModelError(
            f"torch's ONNX exporter failed on {type(model).__name__} with an input of shape {tuple(sample.shape)}: {e}"
        ) from e
    finally:
        model.train(was_training)
    return f.getvalue()


def _sklearn_to_onnx(model: Any, calibration: Optional[np.ndarray]) -> bytes:
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as e:
        raise _missing("scikit-learn model", "sklearn", e) from e
    sample = _sample(calibration, "scikit-learn model")
    if sample.ndim != 2:
        raise UsageError(f"a scikit-learn model takes samples of features: calibration has shape {calibration.shape}")
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    # Probabilities as a tensor, not a list of dicts (ZipMap), which fhec does not take.
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    try:
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([1, sample.shape[1]]))],
            options=options,
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        )
    except Exception as e:
        # XGBoost and LightGBM estimators need their converters registered (onnxmltools).
        raise ModelError(f"skl2onnx cannot convert {type(model).__name__}: {e}") from e
    return onnx_model.SerializeToString()
