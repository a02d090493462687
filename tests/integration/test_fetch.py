"""`loader upload` then `loader fetch` through the CLI, against the reference API and moto S3."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import fetch_model, run_loader, upload_model

from azaion_loader.crypto import ciphertext_size, split_point
from azaion_loader.segmented import segmented_size


def upload(dev_env: Any, path: Path, name: str = "model.bin", *extra: str) -> dict[str, Any]:
    code, result, _, err = upload_model(dev_env.merged(), path, *extra, name=name)
    assert code == 0, err
    assert result is not None and result["ok"]
    return result


def fetch(dev_env: Any, out: Path, name: str = "model.bin", **env: str) -> tuple[int, Any, str]:
    code, result, _, err = fetch_model(dev_env.merged(**env), out, name=name)
    return code, result, err


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "model.src"
    path.write_bytes(os.urandom(5 * 1024 * 1024 + 7))
    return path


@pytest.mark.parametrize(("fmt", "cipher_size"), [(1, ciphertext_size), (2, segmented_size)])
def test_upload_then_fetch_miss_then_hit(
    dev_env: Any, payload: Path, tmp_path: Path, fmt: int, cipher_size: Any
) -> None:
    import hashlib

    up = upload(dev_env, payload, "model.bin", "--format", str(fmt))
    n = payload.stat().st_size
    assert up["plain_size"] == n
    assert up["size"] == cipher_size(n)
    # the big part on the CDN is exactly C[s:]
    obj = dev_env.s3.client().head_object(Bucket="models", Key="model.bin.big")
    assert obj["ContentLength"] == up["size"] - split_point(up["size"])

    # a fresh cache: miss, then hit
    cache = tmp_path / "fresh-cache"
    out = tmp_path / "out" / "model.bin"
    out.parent.mkdir()
    code, result, err = fetch(dev_env, out, LOADER_CACHE_DIR=str(cache))
    assert code == 0, err
    assert result["cache"] == "miss"
    assert out.read_bytes() == payload.read_bytes()
    assert result["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert result["version"] == up["version"]
    assert (cache / "models" / "model.bin.big").stat().st_size == obj["ContentLength"]
    side = json.loads((cache / "models" / "model.bin.big.json").read_text())
    assert side["version"] == up["version"] and side["sha256"] == up["sha256"]

    out.unlink()
    gets_before = dev_env.api.count("GET", "/cdn-config")
    code, result, err = fetch(dev_env, out, LOADER_CACHE_DIR=str(cache))
    assert code == 0, err
    assert result["cache"] == "hit"
    assert out.read_bytes() == payload.read_bytes()
    # a cache hit needs no CDN settings
    assert dev_env.api.count("GET", "/cdn-config") == gets_before
    assert [p.name for p in out.parent.iterdir()] == ["model.bin"]


def test_upload_keeps_a_cache_copy(dev_env: Any, payload: Path, tmp_path: Path) -> None:
    upload(dev_env, payload)  # LOADER_CACHE_DIR of dev_env
    out = tmp_path / "model.bin"
    code, result, err = fetch(dev_env, out)
    assert code == 0, err
    assert result["cache"] == "hit"
    assert out.read_bytes() == payload.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 3 * 1024, 10 * 1024 + 3])
def test_small_sizes_round_trip(dev_env: Any, tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(size))
    upload(dev_env, src, name=f"s{size}")
    out = tmp_path / "out"
    code, result, err = fetch(dev_env, out, name=f"s{size}", LOADER_CACHE_DIR="")
    assert code == 0, err
    assert result["cache"] == "off"
    assert out.read_bytes() == src.read_bytes()


def test_stale_cache_version_change_is_refreshed_and_reported(dev_env: Any, tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.write_bytes(os.urandom(200_000))
    v2 = tmp_path / "v2"
    v2.write_bytes(os.urandom(300_000))
    upload(dev_env, v1, "model.bin", "--version", "1")
    out = tmp_path / "model.bin"
    assert fetch(dev_env, out)[1]["cache"] == "hit"
    # a second publisher (no cache) uploads version 2
    code, _, _, err = upload_model(dev_env.merged(LOADER_CACHE_DIR=""), v2, "--version", "2")
    assert code == 0, err
    code, result, err = fetch(dev_env, out)
    assert code == 0, err
    assert result["cache"] == "stale-refreshed"
    assert result["version"] == "2"
    assert "stale cache" in err
    assert out.read_bytes() == v2.read_bytes()
    code, result, err = fetch(dev_env, out)
    assert result["cache"] == "hit"


def test_stale_cache_damaged_is_refreshed_and_reported(
    dev_env: Any, payload: Path, tmp_path: Path
) -> None:
    upload(dev_env, payload)
    big = Path(dev_env["LOADER_CACHE_DIR"]) / "models" / "model.bin.big"
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0x01
    big.write_bytes(bytes(data))
    out = tmp_path / "model.bin"
    code, result, err = fetch(dev_env, out)
    assert code == 0, err
    assert result["cache"] == "stale-refreshed"
    assert "stale cache" in err and "failed verification" in err
    assert out.read_bytes() == payload.read_bytes()
    # the cache was rewritten from the CDN
    assert fetch(dev_env, out)[1]["cache"] == "hit"


def test_fetch_a_specific_version(dev_env: Any, tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.write_bytes(b"one" * 1000)
    upload(dev_env, v1, "model.bin", "--version", "1")
    v2 = tmp_path / "v2"
    v2.write_bytes(b"two" * 1000)
    upload(dev_env, v2, "model.bin", "--version", "2")
    out = tmp_path / "model.bin"
    code, _result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out, "--version", "2")
    assert code == 0, err
    assert out.read_bytes() == v2.read_bytes()


def test_relogin_on_expired_token(dev_env: Any, payload: Path, tmp_path: Path) -> None:
    upload(dev_env, payload)
    # the server rotates its key when the resource is requested: that request's
    # token is refused (401) and the client must log in again and retry once.
    dev_env.api.rotate_secret_on("/resources/models/model.bin", method="GET")
    logins = dev_env.api.count("POST", "/login")
    out = tmp_path / "model.bin"
    code, _result, err = fetch(dev_env, out, LOADER_CACHE_DIR="")
    assert code == 0, err
    assert out.read_bytes() == payload.read_bytes()
    assert dev_env.api.count("POST", "/login") == logins + 2
    assert dev_env.api.count("GET", "/resources/models/model.bin") == 2


def test_api_500_then_success(dev_env: Any, payload: Path, tmp_path: Path) -> None:
    upload(dev_env, payload)
    dev_env.api.fail_next(2, 500, path_prefix="/resources/")
    out = tmp_path / "model.bin"
    code, _result, err = fetch(dev_env, out, LOADER_CACHE_DIR="")
    assert code == 0, err
    assert out.read_bytes() == payload.read_bytes()
    assert "retrying" in err
    assert dev_env.api.count("GET", "/resources/models/model.bin") == 3


def test_verify_result_carries_size_sha256_and_path(
    dev_env: Any, payload: Path, tmp_path: Path
) -> None:
    """The operator builds status.result from verify's line: size, sha256 and path."""
    upload(dev_env, payload)
    out = tmp_path / "verified.bin"
    code, fetched, err = fetch(dev_env, out, LOADER_CACHE_DIR="")
    assert code == 0, err
    assert fetched is not None
    code, result, _, err = run_loader(
        dev_env.merged(), "verify", "--file", str(out), "--sha256", fetched["sha256"].upper()
    )
    assert code == 0, err
    assert result == {
        "ok": True,
        "command": "verify",
        "size": payload.stat().st_size,
        "sha256": fetched["sha256"],
        "path": str(out),
    }
    # a wrong digest: IntegrityError, exit 30, the file is named
    code, result, _, err = run_loader(
        dev_env.merged(), "verify", "--file", str(out), "--sha256", "0" * 64
    )
    assert code == 30, err
    assert result is not None and result["error"] == "IntegrityError"
    assert str(out) in result["message"]
