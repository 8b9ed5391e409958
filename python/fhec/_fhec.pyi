"""Type stubs of the Rust extension behind the `fhec` package (python/src/)."""

from os import PathLike
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

__version__: str

Outputs = list[tuple[str, npt.NDArray[Any]]]

def has_ckks() -> bool: ...
def reference(path: str | PathLike[str], x: npt.NDArray[np.float32]) -> Outputs: ...
def compile(
    model: str | PathLike[str],
    calibration: Optional[npt.NDArray[np.float32]],
    dir: str | PathLike[str],
    settings: dict[str, Any],
    progress: Optional[Callable[[str], None]] = None,
) -> tuple[str, list[str]]: ...
def keygen(
    dir: str | PathLike[str],
    keys: str | PathLike[str],
    passphrase: Optional[str] = None,
    kms_wrap: Optional[str] = None,
    kms_unwrap: Optional[str] = None,
) -> dict[str, Any]: ...
def _panic_for_test(message: str) -> None: ...

class Build:
    def __init__(self, dir: str | PathLike[str]) -> None: ...
    @property
    def scheme(self) -> str: ...
    @property
    def dir(self) -> str: ...
    def simulate(self, x: npt.NDArray[np.float32], noise_seed: Optional[int] = None) -> Outputs: ...
    def fhe(
        self, x: npt.NDArray[np.float32], progress: Optional[Callable[[int, int], None]] = None
    ) -> tuple[Outputs, dict[str, float]]: ...
    def estimate(self, batch: int = 1, threads: int = 2) -> dict[str, Any]: ...

class Client:
    def __init__(
        self,
        dir: str | PathLike[str],
        keys: str | PathLike[str],
        passphrase: Optional[str] = None,
        kms_wrap: Optional[str] = None,
        kms_unwrap: Optional[str] = None,
    ) -> None: ...
    def encrypt(self, x: npt.NDArray[np.float32]) -> bytes: ...
    def decrypt(self, answer: bytes) -> Outputs: ...
    @property
    def eval_key(self) -> bytes: ...
    @property
    def default_batch(self) -> int: ...

class Server:
    def __init__(self, dir: str | PathLike[str], eval_key: str | PathLike[str]) -> None: ...
    def run(self, ciphertexts: bytes) -> bytes: ...

class Remote:
    def __init__(
        self, url: str, token: Optional[str] = None, ca_cert: Optional[str] = None, retries: Optional[int] = None
    ) -> None: ...
    def predict(
        self,
        client: Client,
        model: str,
        x: npt.NDArray[np.float32],
        batch: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> tuple[Outputs, dict[str, Any]]: ...

def train(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    task: str,
    mode: str,
    iterations: Optional[int] = None,
    step: Optional[float] = None,
    l2: float = 0.0,
    degree: Optional[int] = None,
    interval: Optional[float] = None,
    clip: float = 3.0,
    ring: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Trained: ...

class Trained:
    @property
    def onnx(self) -> bytes: ...
    @property
    def report_json(self) -> str: ...
    def predict(self, x: npt.NDArray[np.float64], reference: bool = False) -> npt.NDArray[np.float64]: ...
    def score(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> dict[str, Any]: ...
    def save(self, path: str | PathLike[str]) -> None: ...
