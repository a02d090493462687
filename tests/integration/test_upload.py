"""`loader upload` failures: roles, version conflicts, unreadable files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loader_cli_support import docker_save_like, run_loader


def test_plain_user_may_not_upload(dev_env: Any, tmp_path: Path) -> None:
    user = dev_env.api.create_user(role="user")
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100)
    code, result, _, err = run_loader(
        dev_env.merged(LOADER_EMAIL=user.email, LOADER_PASSWORD=user.password),
        "upload",
        "--folder",
        "models",
        "--name",
        "f",
        str(src),
    )
    assert code == 23, err  # no write keys for this role
    assert result["error"] == "CdnAccessError" and "write keys" in result["message"]


def test_same_version_other_content_conflicts(dev_env: Any, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(1000))
    b.write_bytes(os.urandom(1000))
    env = dev_env.merged()
    assert (
        run_loader(env, "upload", "--folder", "models", "--name", "f", "--version", "1", str(a))[0]
        == 0
    )
    code, result, _, err = run_loader(
        env, "upload", "--folder", "models", "--name", "f", "--version", "1", str(b)
    )
    assert code == 13, err
    assert result["error"] == "ConflictError" and "ErrorCode 31" in result["message"]


def test_missing_file(dev_env: Any, tmp_path: Path) -> None:
    code, result, _, _ = run_loader(
        dev_env.merged(), "upload", "--folder", "models", "--name", "f", str(tmp_path / "none")
    )
    assert code == 1 and "cannot read" in result["message"]


def test_upload_creates_a_missing_bucket(dev_env: Any, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    code, _, _, err = run_loader(
        dev_env.merged(), "upload", "--folder", "newfolder", "--name", "f", str(src)
    )
    assert code == 0, err
    out = tmp_path / "o"
    code, _, _, err = run_loader(
        dev_env.merged(LOADER_CACHE_DIR=""),
        "fetch",
        "--folder",
        "newfolder",
        "--name",
        "f",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert out.read_bytes() == b"hello"


def _cdn_object(dev_env: Any, bucket: str, key: str) -> tuple[str, bytes]:
    obj = dev_env.s3.client().get_object(Bucket=bucket, Key=key)
    return str(obj["ETag"]), obj["Body"].read()


def test_refused_version_leaves_the_cdn_object_unchanged(dev_env: Any, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(300_000))
    b.write_bytes(os.urandom(200_000))
    env = dev_env.merged(LOADER_CACHE_DIR="")
    code, _, _, err = run_loader(
        env, "upload", "--folder", "models", "--name", "f", "--version", "v1", str(a)
    )
    assert code == 0, err
    before = _cdn_object(dev_env, "models", "f.big")

    code, result, _, err = run_loader(
        env, "upload", "--folder", "models", "--name", "f", "--version", "v1", str(b)
    )
    assert code == 13, err
    assert result is not None and result["error"] == "ConflictError"
    assert "ErrorCode 31" in result["message"] and "nothing was uploaded" in result["message"]
    # checked before the CDN was touched: the registered version still downloads
    assert _cdn_object(dev_env, "models", "f.big") == before
    assert dev_env.api.count("PUT", "/resources/models/f") == 1
    out = tmp_path / "out"
    code, fetched, _, err = run_loader(
        env, "fetch", "--folder", "models", "--name", "f", "--version", "v1", "--out", str(out)
    )
    assert code == 0, err
    assert out.read_bytes() == a.read_bytes() and fetched is not None


def test_refused_archive_version_leaves_the_cdn_object_unchanged(
    dev_env: Any, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    docker_save_like(a, "demo/a:1")
    docker_save_like(b, "demo/b:1")
    env = dev_env.merged()
    args = ("upload-archive", "--folder", "images", "--name", "app", "--version", "v1")
    code, _, _, err = run_loader(env, *args, str(a))
    assert code == 0, err
    before = _cdn_object(dev_env, "images", "app.enc")

    code, result, _, err = run_loader(env, *args, str(b))
    assert code == 13, err
    assert result is not None and result["error"] == "ConflictError"
    assert "ErrorCode 31" in result["message"]
    assert _cdn_object(dev_env, "images", "app.enc") == before
    assert dev_env.api.count("PUT", "/archives/images/app") == 1


def test_another_uploader_may_not_replace_and_the_cdn_object_stays(
    dev_env: Any, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(300_000))
    b.write_bytes(os.urandom(200_000))
    code, _, _, err = run_loader(
        dev_env.merged(LOADER_CACHE_DIR=""), "upload", "--folder", "models", "--name", "f", str(a)
    )
    assert code == 0, err
    before = _cdn_object(dev_env, "models", "f.big")
    other = dev_env.api.create_user(role="uploader")
    other_env = dev_env.merged(
        LOADER_EMAIL=other.email, LOADER_PASSWORD=other.password, LOADER_CACHE_DIR=""
    )

    code, result, _, err = run_loader(
        other_env, "upload", "--folder", "models", "--name", "f", str(b)
    )
    assert code == 11, err  # AuthError
    assert result is not None and result["error"] == "AuthError"
    assert "only its owner or an admin may publish" in result["message"]
    assert "nothing was uploaded" in result["message"]
    assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
    # refused before the CDN was touched
    assert _cdn_object(dev_env, "models", "f.big") == before
    assert dev_env.api.count("PUT", "/resources/models/f") == 1

    args = ("upload-archive", "--folder", "images", "--name", "app")
    docker_save_like(a, "demo/a:1")
    assert run_loader(dev_env.merged(), *args, str(a))[0] == 0
    code, result, _, err = run_loader(other_env, *args, str(a))
    assert code == 11, err
    assert result is not None and "only its owner or an admin" in result["message"]
