"""The plaintext digest registered at upload (docs/protocol.md §5, §7).

Fetch reports it instead of hashing the plaintext; the ciphertext digest still
gates publishing, and `loader verify` checks the published file against it.
Records registered without it (older uploads) fetch as before.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import fetch_model, run_loader, upload_model

from azaion_loader.api_client import ApiClient
from azaion_loader.fingerprint import compute_fingerprint
from azaion_loader.models import ResourceRecord
from azaion_loader.settings import Credentials, HttpSettings


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "model.src"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 11))
    return path


def _client(dev_env: Any) -> ApiClient:
    return ApiClient(
        dev_env["LOADER_API_URL"],
        Credentials(dev_env["LOADER_EMAIL"], dev_env.password),
        fingerprint=compute_fingerprint(dev_env["LOADER_HW_MACHINE_ID"], dev_env["LOADER_HW_ARCH"]),
        http=HttpSettings(retries=0),
    )


def _upload(dev_env: Any, path: Path) -> dict[str, Any]:
    code, result, _, err = upload_model(dev_env.merged(), path)
    assert code == 0, err
    assert result is not None
    return result


def _fetch(dev_env: Any, out: Path, *extra: str, **env: str) -> dict[str, Any]:
    code, result, _, err = fetch_model(dev_env.merged(**env), out, *extra)
    assert code == 0, err
    assert result is not None
    return result


def _verify(dev_env: Any, path: Path, digest: str) -> tuple[int, dict[str, Any] | None, str]:
    code, result, _, err = run_loader(
        dev_env.merged(), "verify", "--file", str(path), "--sha256", digest
    )
    return code, result, err


def _reregister(dev_env: Any, rec: ResourceRecord, version: str, **fields: Any) -> None:
    """Put ``rec``'s parts again as ``version`` through the API (the big part stays)."""
    body = {
        "version": version,
        "small": base64.b64encode(rec.small).decode(),
        "key": base64.b64encode(rec.key).decode(),
        "sha256": rec.sha256,
        "size": rec.size,
        "plain_size": rec.plain_size,
        "format": rec.format,
        **fields,
    }
    _client(dev_env).put_resource("models", "model.bin", body)


def test_upload_registers_the_plain_digest_and_fetch_reports_it(
    dev_env: Any, payload: Path, tmp_path: Path
) -> None:
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    up = _upload(dev_env, payload)
    assert up["plain_sha256"] == expected
    assert up["sha256"] != expected  # that one is the ciphertext's
    rec = _client(dev_env).get_resource("models", "model.bin")
    assert rec.plain_sha256 == expected
    out = tmp_path / "model.bin"
    cache = str(tmp_path / "fresh-cache")  # not the upload's cache
    for state in ("miss", "hit"):
        result = _fetch(dev_env, out, LOADER_CACHE_DIR=cache)
        assert (result["cache"], result["sha256"]) == (state, expected)
        assert out.read_bytes() == payload.read_bytes()
        code, verified, err = _verify(dev_env, out, result["sha256"])
        assert code == 0, err
        assert verified is not None and verified["sha256"] == expected


def test_a_record_without_the_plain_digest_fetches_with_the_computed_one(
    dev_env: Any, payload: Path, tmp_path: Path
) -> None:
    _upload(dev_env, payload)
    rec = _client(dev_env).get_resource("models", "model.bin")
    _reregister(dev_env, rec, "old")  # as an older client registers it
    assert _client(dev_env).get_resource("models", "model.bin").plain_sha256 is None
    out = tmp_path / "model.bin"
    cache = str(tmp_path / "fresh-cache")  # not the upload's cache
    for state in ("miss", "hit"):
        result = _fetch(dev_env, out, LOADER_CACHE_DIR=cache)
        assert (result["cache"], result["version"]) == (state, "old")
        assert result["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
        assert out.read_bytes() == payload.read_bytes()
        assert _verify(dev_env, out, result["sha256"])[0] == 0


def test_a_wrong_plain_digest_is_caught_by_verify(
    dev_env: Any, payload: Path, tmp_path: Path
) -> None:
    _upload(dev_env, payload)
    rec = _client(dev_env).get_resource("models", "model.bin")
    wrong = "0" * 64
    _reregister(dev_env, rec, "wrong", plain_sha256=wrong)
    out = tmp_path / "model.bin"
    # The ciphertext digest is right, so fetch publishes; it reports the registered digest.
    result = _fetch(dev_env, out, LOADER_CACHE_DIR="")
    assert (result["version"], result["sha256"]) == ("wrong", wrong)
    assert out.read_bytes() == payload.read_bytes()
    # The end-to-end check of the published file fails: IntegrityError, exit 30, one line.
    code, verified, err = _verify(dev_env, out, result["sha256"])
    assert code == 30, err
    assert verified is not None and verified["ok"] is False
    assert verified["error"] == "IntegrityError" and verified["exit_code"] == 30
    assert str(out) in verified["message"] and wrong in verified["message"]
    assert "\n" not in verified["message"]
    assert len([line for line in err.splitlines() if line.startswith("loader: error: ")]) == 1
