"""Every bad input to `loader fetch`: its message, its exit code, and nothing published."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import fetch_model, upload_model

from azaion_loader.api_client import ApiClient
from azaion_loader.fingerprint import compute_fingerprint
from azaion_loader.settings import Credentials, HttpSettings


def _publish(dev_env: Any, tmp_path: Path, fmt: int = 2) -> bytes:
    data = os.urandom(2 * 1024 * 1024 + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    code, _result, _, err = upload_model(
        dev_env.merged(LOADER_CACHE_DIR=""), src, "--format", str(fmt)
    )
    assert code == 0, err
    return data


@pytest.fixture
def published(dev_env: Any, tmp_path: Path) -> bytes:
    return _publish(dev_env, tmp_path)


@pytest.fixture(params=[1, 2], ids=["format1", "format2"])
def fmt(dev_env: Any, tmp_path: Path, request: pytest.FixtureRequest) -> int:
    """The resource format a tampering test published in (each test runs for both)."""
    _publish(dev_env, tmp_path, request.param)
    return int(request.param)


# What each format's check says about altered bytes.
ALTERED = {1: "SHA-256", 2: "failed authentication"}


def fetch_fails(
    dev_env: Any,
    tmp_path: Path,
    error: str,
    exit_code: int,
    *,
    name: str = "model.bin",
    out: Path | None = None,
    **env: str,
) -> str:
    """Run a fetch that must fail; check the class, code, one-line message, nothing published."""
    target_dir = tmp_path / "target"
    target_dir.mkdir(exist_ok=True)
    out = out or target_dir / "model.bin"
    env.setdefault("LOADER_CACHE_DIR", "")
    code, result, _, err = fetch_model(dev_env.merged(**env), out, name=name)
    assert code == exit_code, err
    assert result is not None and result["ok"] is False
    assert result["error"] == error and result["exit_code"] == exit_code
    lines = [line for line in err.splitlines() if line.startswith("loader: error: ")]
    assert len(lines) == 1, err
    assert "\n" not in result["message"]
    assert not out.exists()
    assert list(target_dir.iterdir()) == []  # no temporary left behind
    return lines[0]


def test_wrong_password(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    msg = fetch_fails(dev_env, tmp_path, "AuthError", 11, LOADER_PASSWORD="not-the-password")
    assert "wrong email or password" in msg


def test_missing_credentials(dev_env: Any, tmp_path: Path) -> None:
    msg = fetch_fails(dev_env, tmp_path, "CredentialsMissingError", 4, LOADER_PASSWORD="")
    assert "LOADER_PASSWORD" in msg


def test_unknown_resource(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    msg = fetch_fails(dev_env, tmp_path, "NotFoundError", 12, name="nope.bin")
    assert "not found" in msg


def _big(dev_env: Any) -> bytes:
    obj = dev_env.s3.client().get_object(Bucket="models", Key="model.bin.big")
    return bytes(obj["Body"].read())


def _put_big(dev_env: Any, data: bytes) -> None:
    dev_env.s3.client().put_object(Bucket="models", Key="model.bin.big", Body=data)


def test_flipped_byte_in_big_part(dev_env: Any, fmt: int, tmp_path: Path) -> None:
    data = bytearray(_big(dev_env))
    data[len(data) // 3] ^= 0x80
    _put_big(dev_env, bytes(data))
    msg = fetch_fails(dev_env, tmp_path, "IntegrityError", 30)
    assert ALTERED[fmt] in msg and "nothing was published" in msg


def test_flipped_byte_never_reaches_cache(dev_env: Any, fmt: int, tmp_path: Path) -> None:
    data = bytearray(_big(dev_env))
    data[-1] ^= 0x01
    _put_big(dev_env, bytes(data))
    cache = tmp_path / "cache"
    fetch_fails(dev_env, tmp_path, "IntegrityError", 30, LOADER_CACHE_DIR=str(cache))
    assert not (cache / "models" / "model.bin.big").exists()
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_truncated_big_part(dev_env: Any, fmt: int, tmp_path: Path) -> None:
    _put_big(dev_env, _big(dev_env)[:-100])
    msg = fetch_fails(dev_env, tmp_path, "IntegrityError", 30)
    assert "bytes" in msg and "expected" in msg


def test_tampered_small_part(dev_env: Any, fmt: int, tmp_path: Path) -> None:
    # The API (or its database) hands out a small part that is not the original.
    client = ApiClient(
        dev_env["LOADER_API_URL"],
        Credentials(dev_env["LOADER_EMAIL"], dev_env.password),
        fingerprint=compute_fingerprint(dev_env["LOADER_HW_MACHINE_ID"], dev_env["LOADER_HW_ARCH"]),
        http=HttpSettings(retries=0),
    )
    rec = client.get_resource("models", "model.bin")
    small = bytearray(rec.small)
    small[100] ^= 0x04
    import base64

    client.put_resource(
        "models",
        "model.bin",
        {
            "version": "tampered",
            "small": base64.b64encode(bytes(small)).decode(),
            "key": base64.b64encode(rec.key).decode(),
            "sha256": rec.sha256,
            "size": rec.size,
            "plain_size": rec.plain_size,
            "format": rec.format,
        },
    )
    msg = fetch_fails(dev_env, tmp_path, "IntegrityError", 30)
    assert rec.format == fmt
    assert ALTERED[fmt] in msg


def test_api_down(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    dev_env.api.stop()
    msg = fetch_fails(dev_env, tmp_path, "ApiUnavailableError", 14, LOADER_RETRIES="1")
    assert "unreachable" in msg and dev_env["LOADER_API_URL"] in msg


def test_api_500_forever(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    dev_env.api.fail_next(10, 503, path_prefix="/resources/")
    msg = fetch_fails(dev_env, tmp_path, "ApiUnavailableError", 14, LOADER_RETRIES="2")
    assert "503" in msg


def test_s3_down(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    dev_env.s3.stop()
    msg = fetch_fails(
        dev_env, tmp_path, "CdnUnavailableError", 21, LOADER_RETRIES="1", LOADER_TIMEOUT="3"
    )
    assert dev_env.s3.url in msg


def test_missing_bucket(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    s3 = dev_env.s3.client()
    s3.delete_object(Bucket="models", Key="model.bin.big")
    s3.delete_bucket(Bucket="models")
    msg = fetch_fails(dev_env, tmp_path, "CdnNotFoundError", 22)
    assert "bucket" in msg


def test_missing_big_part(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    dev_env.s3.client().delete_object(Bucket="models", Key="model.bin.big")
    msg = fetch_fails(dev_env, tmp_path, "CdnNotFoundError", 22)
    assert "model.bin.big" in msg


def test_target_directory_missing(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    out = tmp_path / "target" / "no-such-dir" / "model.bin"
    msg = fetch_fails(dev_env, tmp_path, "TargetError", 50, out=out)
    assert "no-such-dir" in msg
    # it failed before any download
    assert dev_env.api.count("GET", "/resources/models/model.bin") == 0


def test_target_not_writable(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "model.bin"  # parent is a file: ENOTDIR even for root
    code, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out)
    assert code == 50, err
    assert result is not None and result["error"] == "TargetError"
    assert blocker.read_text() == "x"


def test_target_keeps_old_content_on_failure(
    dev_env: Any, published: bytes, tmp_path: Path
) -> None:
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    out = target_dir / "model.bin"
    out.write_bytes(b"old content")
    _put_big(dev_env, _big(dev_env)[:-16])
    code, _result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out)
    assert code == 30, err
    assert out.read_bytes() == b"old content"
    assert [p.name for p in target_dir.iterdir()] == ["model.bin"]


def test_other_hardware_is_a_conflict(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    # dev_env's user may bind 2 devices: the upload used one, a second binds, a third conflicts
    out = tmp_path / "ok.bin"
    code, _, _, err = fetch_model(
        dev_env.merged(LOADER_CACHE_DIR="", LOADER_HW_MACHINE_ID="aa" * 16), out
    )
    assert code == 0, err
    msg = fetch_fails(dev_env, tmp_path, "ConflictError", 13, LOADER_HW_MACHINE_ID="bb" * 16)
    assert "ErrorCode 30" in msg and "other hardware" in msg


def test_result_file(dev_env: Any, published: bytes, tmp_path: Path) -> None:
    result_file = tmp_path / "termination-log"
    code, result, _, _err = fetch_model(
        dev_env.merged(LOADER_CACHE_DIR="", LOADER_PASSWORD="wrong"),
        tmp_path / "x",
        "--result-file",
        str(result_file),
    )
    assert code == 11
    assert json.loads(result_file.read_text()) == result
