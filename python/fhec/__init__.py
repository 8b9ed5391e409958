"""fhec: compile ONNX, PyTorch and scikit-learn models to run on encrypted data.

    >>> import fhec
    >>> model = fhec.compile(torch_model_or_pipeline_or_onnx, calibration=X_train)
    >>> print(model.report_text)                  # what was chosen, and why
    >>> model.estimate()                          # latency and key size, before any key exists
    >>> y = model.predict(X_test, mode="fhe")     # keygen, encrypt, run, decrypt, here
    >>> model.save("wine.fhec")                   # the files of `fhec build`: `fhec serve` serves them

Deployed, the data owner and the server are separate: :class:`Client` (secret key: encrypt,
decrypt), :class:`Server` (evaluation key only: run), :class:`Remote` (a client of ``fhec serve``).
Every object reads and writes the CLI's files. :func:`train` trains a logistic or linear
regression on encrypted data (CKKS). Errors are :mod:`fhec.errors` exceptions.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import warnings as _warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from . import _convert, _progress, errors
from ._fhec import __version__, has_ckks
from . import _fhec
from .errors import *  # noqa: F403 (the exception classes, listed in errors.__all__)
from .errors import DataError, FileError, ShapeError, UsageError

__all__ = [
    "compile",
    "load",
    "reference",
    "has_ckks",
    "Model",
    "Client",
    "Server",
    "Remote",
    "train",
    "TrainedModel",
    "errors",
    "__version__",
    *errors.__all__,
]

PathLike = Union[str, "os.PathLike[str]"]
# The files of a build directory (`fhec build -o DIR`).
BUILD_FILES = ("client.fhec", "server.fhec", "report.txt", "report.json")
MODES = ("clear", "simulate", "fhe")


def _samples(x: Any, what: str = "input") -> np.ndarray:
    """Samples as a C-contiguous float32 array (samples along axis 0)."""
    try:
        return np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"the {what} samples cannot be read as an array of numbers: {e}") from e


def _outputs(pairs: list[tuple[str, np.ndarray]], all_outputs: bool) -> Any:
    if all_outputs:
        return dict(pairs)
    return pairs[0][1] if pairs else np.empty((0,), dtype=np.float32)


def compile(
    model: Any,
    calibration: Any = None,
    *,
    scheme: str = "tfhe",
    batch: int = 1,
    threads: int = 2,
    accuracy_budget: float = 0.2,
    error_budget: float = 5.0,
    private_thresholds: bool = False,
    table_ranges: str = "calibrated",
    packing: str = "batch-major",
    polynomial_fit: str = "auto",
    params: Optional[str] = None,
    weight_bits: Optional[int] = None,
    failure_log2: float = -40.0,
    opt_level: int = 1,
    quiet: bool = False,
) -> "Model":
    """Compiles ``model`` for encrypted inference and returns the :class:`Model`.

    ``model`` is an ONNX file (a path, its bytes, or an ``onnx.ModelProto``), a ``torch.nn.Module``
    (exported with the shape of ``calibration``'s samples), or a fitted scikit-learn estimator or
    pipeline (through skl2onnx). ``calibration`` holds samples along axis 0, like the data the model
    will see: they set the input ranges and score the candidates (a pre-quantized ONNX model needs
    none). The keywords are ``fhec build``'s flags (``accuracy_budget`` is ``--accuracy-budget``):
    ``scheme`` is ``"tfhe"``, ``"ckks"`` or ``"auto"`` (the cheaper for ``batch`` samples per
    request on ``threads`` workers). The work runs without the GIL; ``quiet`` hides the progress.
    """
    x = None if calibration is None else _samples(calibration, "calibration")
    work = tempfile.TemporaryDirectory(prefix="fhec-")
    try:
        onnx = _convert.to_onnx_file(model, x, Path(work.name))
        settings = dict(
            scheme=scheme,
            batch=batch,
            threads=threads,
            accuracy_budget=accuracy_budget,
            error_budget=error_budget,
            private_thresholds=private_thresholds,
            table_ranges=table_ranges,
            packing=packing,
            polynomial_fit=polynomial_fit,
            params=params,
            weight_bits=weight_bits,
            failure_log2=failure_log2,
            opt_level=opt_level,
        )
        out = Path(work.name) / "build"
        try:
            _, warnings = _fhec.compile(str(onnx), x, str(out), settings, _progress.messages(quiet))
        finally:
            _progress.clear(quiet)
        for w in warnings:
            _warnings.warn(w, stacklevel=2)
        source = onnx.read_bytes()
    except BaseException:
        work.cleanup()
        raise
    return Model(out, _workdir=work, _onnx=source)


def load(dir: PathLike) -> "Model":
    """The build in ``dir``: one written by :meth:`Model.save` or by ``fhec build``."""
    return Model(Path(dir))


def reference(model: PathLike, x: Any, *, all_outputs: bool = False) -> Any:
    """The float model's predictions (fhec's interpreter on the ONNX file): what the compiled model
    is scored against."""
    return _outputs(_fhec.reference(str(model), _samples(x)), all_outputs)


class Model:
    """A compiled model: the files of ``fhec build`` (client artifact, server artifact, reports).

    ``report`` is ``report.json`` as Python objects (per layer: bootstraps, noise, resolution);
    ``report_text`` the readable report. :meth:`predict` runs it in cleartext, with the noise
    model, or encrypted on this machine; :meth:`save` writes the build where ``fhec serve`` and the
    CLI read it.
    """

    def __init__(self, dir: Path, *, _workdir: Any = None, _onnx: Optional[bytes] = None) -> None:
        self._workdir = _workdir  # a compiled model's temporary directory, removed with it
        self._onnx = _onnx
        self._build = _fhec.Build(str(dir))
        self.dir = Path(dir)
        #: What the last encrypted run measured (milliseconds per sample, key generation, ...).
        self.last_run: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<fhec.Model {self.report.get('model', '?')!r} ({self.scheme}) at {str(self.dir)!r}>"

    @property
    def scheme(self) -> str:
        """``"tfhe"`` or ``"ckks"``."""
        return str(self._build.scheme)

    @property
    def report(self) -> dict[str, Any]:
        """``report.json``: the parameters chosen, the fidelity, per-layer costs, each stage's time."""
        return json.loads((self.dir / "report.json").read_text())

    @property
    def report_text(self) -> str:
        """``report.txt``: the same, to read."""
        return (self.dir / "report.txt").read_text()

    def estimate(self, batch: int = 1, threads: int = 2) -> dict[str, Any]:
        """What running the model costs, before any key exists: latency per sample and for ``batch``
        samples on ``threads`` workers, the evaluation key's size, the memory to compile; from the
        parameter set's measured bootstrap time (TFHE) or the plan's estimate (CKKS)."""
        if batch < 1 or threads < 1:
            raise UsageError("estimate() needs a batch and threads of at least 1")
        est: dict[str, Any] = dict(self._build.estimate(batch, threads))
        r = self.report
        if self.scheme == "tfhe":
            est["compile_memory_mb"] = r.get("estimate", {}).get("compile_memory_mb")
            est["fidelity_percent"] = r.get("fidelity_percent")
        else:
            est["samples_per_ciphertext"] = r.get("samples_per_ciphertext")
            est["fidelity_percent"] = r.get("fidelity")
        return est

    def predict(
        self,
        x: Any,
        mode: str = "clear",
        *,
        noise_seed: Optional[int] = None,
        all_outputs: bool = False,
        quiet: bool = False,
    ) -> Any:
        """Predictions for the samples in ``x`` (along axis 0): the first output, or a dict of every
        output with ``all_outputs=True``.

        ``mode``: ``"clear"`` runs the compiled model in cleartext (exact integer circuit, or CKKS
        polynomials); ``"simulate"`` adds the parameter set's noise, what an encrypted run sees
        (TFHE; seeded by ``noise_seed``); ``"fhe"`` generates keys, encrypts, runs and decrypts on
        this machine (a progress bar unless ``quiet``; Ctrl-C stops it between two samples;
        :attr:`last_run` holds its timings). For the float model, see :func:`reference`.
        """
        if mode not in MODES:
            raise UsageError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
        x = _samples(x)
        if mode == "clear":
            return _outputs(self._build.simulate(x, None), all_outputs)
        if mode == "simulate":
            if self.scheme == "ckks":
                return _outputs(self._build.simulate(x, None), all_outputs)
            seed = secrets.randbits(63) if noise_seed is None else noise_seed
            return _outputs(self._build.simulate(x, seed), all_outputs)
        with _progress.Progress(len(x), "encrypted inference", quiet) as bar:
            outs, stats = self._build.fhe(x, bar)
        self.last_run = dict(stats)
        return _outputs(outs, all_outputs)

    def reference(self, x: Any, *, all_outputs: bool = False) -> Any:
        """The float model's predictions, for a model compiled in this process (a loaded build
        directory holds no float model: use :func:`fhec.reference` on its ONNX file)."""
        if self._onnx is None:
            raise UsageError("this model was loaded from a build directory: call fhec.reference(onnx_path, x)")
        with tempfile.TemporaryDirectory(prefix="fhec-") as d:
            path = Path(d) / "model.onnx"
            path.write_bytes(self._onnx)
            return reference(path, x, all_outputs=all_outputs)

    def save(self, dir: PathLike) -> Path:
        """Writes the build into ``dir`` (the files of ``fhec build -o DIR``) and uses it from now on."""
        dest = Path(dir)
        if dest.resolve() == self.dir.resolve():
            return dest
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for name in BUILD_FILES:
                shutil.copyfile(self.dir / name, dest / name)
        except OSError as e:
            raise FileError(f"cannot write the build into {dest}: {e}") from e
        self._build = _fhec.Build(str(dest))
        self.dir = dest
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return dest

    def keygen(
        self,
        keys: PathLike,
        *,
        passphrase: Optional[str] = None,
        kms_wrap: Optional[str] = None,
        kms_unwrap: Optional[str] = None,
    ) -> "Client":
        """Generates this build's keys into ``keys`` and returns the :class:`Client` holding them."""
        return Client.keygen(self.dir, keys, passphrase=passphrase, kms_wrap=kms_wrap, kms_unwrap=kms_unwrap)


class Client:
    """The data owner's side of a build: its client artifact (encoding, decoding,
    post-processing; no weights) and the secret key. Reads the keys of ``fhec keygen``.

    ``passphrase`` opens a sealed secret key; ``kms_wrap``/``kms_unwrap`` are the commands of a
    key-management service, as the CLI's ``--kms-wrap``/``--kms-unwrap``.
    """

    def __init__(
        self,
        dir: PathLike,
        keys: PathLike,
        *,
        passphrase: Optional[str] = None,
        kms_wrap: Optional[str] = None,
        kms_unwrap: Optional[str] = None,
    ) -> None:
        self.dir, self.keys = Path(dir), Path(keys)
        self._client = _fhec.Client(str(dir), str(keys), passphrase, kms_wrap, kms_unwrap)

    @classmethod
    def keygen(
        cls,
        dir: PathLike,
        keys: PathLike,
        *,
        passphrase: Optional[str] = None,
        kms_wrap: Optional[str] = None,
        kms_unwrap: Optional[str] = None,
        quiet: bool = True,
    ) -> "Client":
        """Generates keys for the build in ``dir``: ``keys/secret.key`` (this side only, mode 0600,
        sealed when asked) and ``keys/eval.key`` (for the server); returns the client."""
        if not quiet:
            _progress.messages(False)("generating keys")  # type: ignore[misc]
        try:
            _fhec.keygen(str(dir), str(keys), passphrase, kms_wrap, kms_unwrap)
        finally:
            _progress.clear(quiet)
        return cls(dir, keys, passphrase=passphrase, kms_wrap=kms_wrap, kms_unwrap=kms_unwrap)

    @property
    def eval_key(self) -> bytes:
        """The evaluation key (``eval.key``'s bytes): the server's key, which cannot decrypt."""
        return bytes(self._client.eval_key)

    def encrypt(self, x: Any) -> bytes:
        """Encrypts the samples of ``x``: the bytes of a ``fhec encrypt`` file."""
        return bytes(self._client.encrypt(_samples(x)))

    def decrypt(self, answer: bytes, *, all_outputs: bool = False) -> Any:
        """Decrypts a server's answer (the bytes of a ``fhec run`` file): the first output, or a dict
        of every output."""
        return _outputs(self._client.decrypt(bytes(answer)), all_outputs)


class Server:
    """The server's side of a build: its server artifact and one evaluation key (``eval.key``). It
    holds no secret key and cannot decrypt."""

    def __init__(self, dir: PathLike, eval_key: PathLike) -> None:
        self._server = _fhec.Server(str(dir), str(eval_key))

    def run(self, ciphertexts: bytes) -> bytes:
        """Runs the model on a client's ciphertexts; returns the encrypted answer."""
        return bytes(self._server.run(bytes(ciphertexts)))


class Remote:
    """A client of ``fhec serve`` at ``url`` (``http://`` or ``https://``; ``ca_cert`` trusts a
    private certificate authority, ``token`` is the bearer token). A busy answer or a failed
    connection is retried ``retries`` times with a growing wait (default: the CLI's, about a minute
    in all before an unreachable server is an error)."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        ca_cert: Optional[PathLike] = None,
        retries: Optional[int] = None,
    ) -> None:
        self.url = url
        self._remote = _fhec.Remote(url, token, None if ca_cert is None else str(ca_cert), retries)
        #: What the last :meth:`predict` measured.
        self.last_run: dict[str, Any] = {}

    def predict(
        self,
        client: Client,
        x: Any,
        *,
        model: Optional[str] = None,
        batch: Optional[int] = None,
        all_outputs: bool = False,
        quiet: bool = False,
    ) -> Any:
        """Encrypts ``x`` with ``client``, runs it on the server's ``model`` (default: the build
        directory's name without ``.fhec``, as ``fhec serve`` names it) in requests of ``batch``
        samples, and decrypts the answers. The evaluation key is registered first (once)."""
        name = model or client.dir.name.removesuffix(".fhec")
        x = _samples(x)
        with _progress.Progress(len(x), f"encrypted inference on {self.url}", quiet) as bar:
            outs, stats = self._remote.predict(client._client, name, x, batch, bar)
        self.last_run = dict(stats)
        return _outputs(outs, all_outputs)


def train(
    x: Any,
    y: Any,
    *,
    task: str = "logistic",
    mode: str = "fhe",
    iterations: Optional[int] = None,
    step: Optional[float] = None,
    l2: float = 0.0,
    degree: Optional[int] = None,
    interval: Optional[float] = None,
    clip: float = 3.0,
    ring: Optional[int] = None,
    quiet: bool = False,
) -> "TrainedModel":
    """Trains a logistic regression (labels 0/1, or classes 0..K one-vs-rest) or a linear
    regression (``task="linear"``) on encrypted data, as ``fhec train`` does: the data owner's
    side standardizes and encrypts the set, the server's side runs Nesterov-accelerated gradient
    descent on the ciphertexts with the evaluation key only, refreshing the weights with the data
    owner between rounds; both sides run here.

    ``mode``: ``"fhe"`` (under CKKS; needs the package built with the ``ckks`` feature),
    ``"simulate"`` (the encrypted program's slot operations in the clear: the same weights up to
    CKKS's error) or ``"clear"`` (float64). Unset hyperparameters take ``fhec train``'s defaults
    (see docs/training.md). Returns the :class:`TrainedModel`.
    """
    xs = np.ascontiguousarray(np.asarray(x), dtype=np.float64)
    ys = np.ascontiguousarray(np.asarray(y), dtype=np.float64)
    if xs.ndim != 2:
        raise ShapeError(f"training samples of shape {xs.shape}; training takes [samples, features]")
    if ys.ndim == 2 and ys.shape[1] == 1:
        ys = ys[:, 0].copy()
    if ys.ndim != 1:
        raise ShapeError(f"labels of shape {ys.shape}: one per sample")
    total = iterations or 1
    with _progress.Progress(total, "training", quiet or mode == "clear") as bar:
        trained = _fhec.train(xs, ys, task, mode, iterations, step, l2, degree, interval, clip, ring, bar)
    return TrainedModel(trained)


class TrainedModel:
    """A linear model trained by :func:`train`: ``onnx`` (bytes, the scaling folded in: compile
    it with :func:`compile` to predict on encrypted data), ``report`` (what ``fhec train`` writes
    beside the model: weights, times, sizes, the distance from the same algorithm in float64)."""

    def __init__(self, trained: Any) -> None:
        self._trained = trained
        self.report: dict[str, Any] = json.loads(trained.report_json)

    @property
    def onnx(self) -> bytes:
        return bytes(self._trained.onnx)

    @property
    def weights(self) -> np.ndarray:
        """Weights on the standardized features, bias first: one row per model."""
        return np.asarray(self.report["weights"])

    def predict_proba(self, x: Any, *, reference: bool = False) -> np.ndarray:
        """Float64 predictions from raw features, ``[samples, models]``: a probability per model
        (logistic) or the target (linear); ``reference=True`` gives the float64 run's."""
        return self._trained.predict(np.ascontiguousarray(np.asarray(x), dtype=np.float64), reference)

    def score(self, x: Any, y: Any) -> dict[str, Any]:
        """Accuracy (logistic) or R² (linear) on a test set, beside the float64 reference's."""
        xs = np.ascontiguousarray(np.asarray(x), dtype=np.float64)
        ys = np.ascontiguousarray(np.asarray(y), dtype=np.float64).reshape(-1)
        return dict(self._trained.score(xs, ys))

    def save(self, path: PathLike) -> Path:
        """Writes the ONNX model to ``path`` and the report to ``path`` with ``.json``."""
        self._trained.save(str(path))
        return Path(path)

    def compile(self, calibration: Any, **settings: Any) -> Model:
        """The trained model compiled for encrypted inference (:func:`compile`'s keywords)."""
        return compile(self.onnx, calibration, **settings)
