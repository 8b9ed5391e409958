"""Ctrl-C stops a long encrypted run between two samples."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CORPUS

SCRIPT = f"""
import sys, numpy as np, fhec
x = np.load({str(CORPUS / "mlp_wine" / "inputs.npy")!r})
model = fhec.compile({str(CORPUS / "mlp_wine" / "model.onnx")!r}, calibration=x, quiet=True)
done = [0]
def progress(d, total):
    done[0] = d
    print("progress", d, flush=True)
try:
    model._build.fhe(np.ascontiguousarray(np.tile(x, (10, 1)), dtype=np.float32), progress)
except KeyboardInterrupt:
    print("interrupted after", done[0], "of", 10 * len(x), flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_ctrl_c_stops_an_encrypted_run():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("progress"):
            break
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    rest = proc.stdout.read()
    assert proc.wait() == 130, rest
    done = int(rest.split("interrupted after")[1].split()[0])
    assert done < 450, rest
    assert time.monotonic() - start < 60  # one sample is well under a second


def test_a_ctrl_c_landing_in_the_progress_callback_stops_the_run(wine):
    # The signal can arrive while Python runs the progress callback: the KeyboardInterrupt is raised
    # there, and must stop the run as it does between two samples.
    model, x, _ = wine
    calls = []

    def progress(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model._build.fhe(np.ascontiguousarray(x[:3], dtype=np.float32), progress)
    assert calls == [1]
