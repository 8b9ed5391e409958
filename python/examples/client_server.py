"""The deployed split, in files: the model owner compiles and saves a build; the data owner
generates keys (the secret key sealed with a passphrase) and encrypts; the server, which holds the
evaluation key only, runs; the data owner decrypts. Every file is the CLI's (`fhec run` and
`fhec serve` read them). Usage: python client_server.py [WORKDIR]"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import fhec

CORPUS = Path(__file__).resolve().parents[2] / "testsuite" / "models" / "mlp_wine"
work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
x, y = np.load(CORPUS / "inputs.npy"), np.load(CORPUS / "labels.npy")

# The model owner: compile, save the build (client.fhec goes to the data owner, server.fhec to the server).
build = fhec.compile(CORPUS / "model.onnx", calibration=x, quiet=True).save(work / "wine.fhec")

# The data owner: keys, then ciphertexts.
client = fhec.Client.keygen(build, work / "keys", passphrase="correct horse battery staple")
(work / "request.ct").write_bytes(client.encrypt(x[:4]))

# The server: the build and the evaluation key; no secret key, nothing to decrypt with.
server = fhec.Server(build, work / "keys" / "eval.key")
(work / "answer.ct").write_bytes(server.run((work / "request.ct").read_bytes()))

# The data owner again.
scores = client.decrypt((work / "answer.ct").read_bytes())
print(f"predicted {scores.argmax(1).tolist()}, labels {y[:4].tolist()}; files in {work}")
