"""The exceptions fhec raises. Each carries the text the CLI prints (what went wrong, and where:
the file, the node, the layer, the key) and, where it has them, fields to act on.

    Error                      every fhec error
    ├── ModelError             an ONNX model fhec cannot read (malformed, bad node)
    │   └── UnsupportedOp      an op fhec does not translate: .node, .op, .nodes
    ├── CompileError           the compiler refused the model
    │   └── PrecisionError     a layer no parameter set keeps within the noise bound: .layer
    ├── ShapeError             samples whose shape does not fit the model (also a ValueError)
    ├── DataError              samples that cannot be encrypted (NaN, infinity)
    ├── UsageError             an option out of range or a wrong combination (also a ValueError)
    ├── FileError              a file or directory that cannot be read or written (also an OSError)
    ├── ArtifactError          a build, key or ciphertext file that is corrupted or of another kind
    ├── KeyMismatch            keys or ciphertexts of another model or another key
    ├── KeyProtectionError     a sealed secret key: wrong passphrase, failing KMS command
    ├── CkksError              the CKKS backend refused the plan or its data
    ├── EvaluationError        the encrypted evaluation failed
    ├── RemoteError            fhec serve (or the connection to it) failed or refused
    │   └── ServerBusy         fhec serve was busy on every attempt
    └── InternalError          a bug in fhec (a Rust panic, caught): please report it
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Error",
    "ModelError",
    "UnsupportedOp",
    "CompileError",
    "PrecisionError",
    "ShapeError",
    "DataError",
    "UsageError",
    "FileError",
    "ArtifactError",
    "KeyMismatch",
    "KeyProtectionError",
    "CkksError",
    "EvaluationError",
    "RemoteError",
    "ServerBusy",
    "InternalError",
]


class Error(Exception):
    """Every fhec error. ``str(e)`` is the message the CLI prints."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for k, v in fields.items():
            setattr(self, k, v)


class ModelError(Error):
    """An ONNX model fhec cannot read: malformed, or a node it cannot translate as given.
    ``node`` and ``op`` name the node where fhec knows it."""

    node: str | None = None
    op: str | None = None


class UnsupportedOp(ModelError):
    """An op fhec does not translate (or cannot run under encryption). ``node`` and ``op`` name the
    first; ``nodes`` lists every ``(node, op)`` found."""

    nodes: list[tuple[str, str]] = []


class CompileError(Error):
    """The compiler refused the model."""


class PrecisionError(CompileError):
    """A layer whose inputs no parameter set keeps apart under the noise: ``layer`` names it."""

    layer: str | None = None


class ShapeError(Error, ValueError):
    """Samples, labels or results whose shape or count does not fit the model."""


class DataError(Error, ValueError):
    """Samples that cannot be encrypted (NaN, infinity) or a data file that cannot be read."""


class UsageError(Error, ValueError):
    """An option out of range, an unknown option, or options that do not go together."""


class FileError(Error, OSError):
    """A file or directory that cannot be read, written or created; the message names it."""


class ArtifactError(Error):
    """A build, key or ciphertext file that is not what it claims to be (truncated, corrupted,
    another kind of file, written by another version)."""


class KeyMismatch(Error):
    """Keys, ciphertexts or results that belong to another model or another key."""


class KeyProtectionError(Error):
    """A sealed secret key that cannot be opened (wrong passphrase, failing KMS command), or a
    secret key file others may read."""


class CkksError(Error):
    """The CKKS backend refused the plan or its data."""


class EvaluationError(Error):
    """The encrypted evaluation failed (for instance, an evaluation key of another parameter set)."""


class RemoteError(Error):
    """``fhec serve``, or the connection to it, failed or answered with a refusal."""


class ServerBusy(RemoteError):
    """``fhec serve`` refused the request as busy on every attempt."""


class InternalError(Error):
    """A bug in fhec: a Rust panic, caught at the boundary. The message says where."""
