"""The deployed split from Python: keys, client, server; the same files as the CLI's."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import fhec


def test_client_and_server_split_round_trip(wine, wine_keys):
    model, x, _ = wine
    build, keys = wine_keys
    client = fhec.Client(build, keys)
    server = fhec.Server(build, keys / "eval.key")
    answer = server.run(client.encrypt(x[:2]))
    got = client.decrypt(answer)
    np.testing.assert_array_equal(got.argmax(1), model.predict(x[:2]).argmax(1))
    assert client.eval_key == (keys / "eval.key").read_bytes()
    assert oct((keys / "secret.key").stat().st_mode & 0o777) == "0o600"


def test_a_sealed_secret_key_needs_its_passphrase(wine, tmp_path):
    model, x, _ = wine
    client = model.keygen(tmp_path / "keys", passphrase="correct horse")
    assert client.decrypt(fhec.Server(model.dir, tmp_path / "keys" / "eval.key").run(client.encrypt(x[:1]))).shape == (
        1,
        3,
    )
    with pytest.raises(fhec.KeyProtectionError, match="passphrase"):
        fhec.Client(model.dir, tmp_path / "keys", passphrase="wrong")
    with pytest.raises(fhec.KeyProtectionError):
        fhec.Client(model.dir, tmp_path / "keys")


def test_ciphertexts_of_another_key_and_corrupted_ones_are_refused(wine, wine_keys, tmp_path):
    _, x, _ = wine
    build, keys = wine_keys
    other = fhec.Client.keygen(build, tmp_path / "other")
    server = fhec.Server(build, keys / "eval.key")
    with pytest.raises(fhec.KeyMismatch, match="evaluation key"):
        server.run(other.encrypt(x[:1]))
    cts = bytearray(fhec.Client(build, keys).encrypt(x[:1]))
    cts[len(cts) // 2] ^= 0xFF
    with pytest.raises(fhec.ArtifactError, match="ciphertexts"):
        server.run(bytes(cts))
    with pytest.raises(fhec.ArtifactError):
        server.run(b"")
    with pytest.raises(fhec.Error):
        fhec.Client(build, keys).decrypt(b"garbage")


def test_cli_keys_and_files_work_from_python(wine, fhec_bin, tmp_path):
    model, x, _ = wine
    build = fhec.load(model.dir).save(tmp_path / "wine.fhec")
    keys = tmp_path / "keys"
    subprocess.run([fhec_bin, "--quiet", "keygen", build, "--keys", keys], check=True, capture_output=True)
    client = fhec.Client(build, keys)
    (tmp_path / "in.ct").write_bytes(client.encrypt(x[:2]))
    subprocess.run(
        [fhec_bin, "--quiet", "run", build, "--eval-key", keys / "eval.key", "--input", tmp_path / "in.ct", "--output",
         tmp_path / "out.ct"],
        check=True,
        capture_output=True,
    )
    got = client.decrypt((tmp_path / "out.ct").read_bytes())
    np.testing.assert_array_equal(got.argmax(1), model.predict(x[:2]).argmax(1))
