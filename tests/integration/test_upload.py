"""`loader upload` failures: roles, version conflicts, unreadable files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def loader(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "azaion_loader", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_plain_user_may_not_upload(dev_env: Any, tmp_path: Path) -> None:
    user = dev_env.api.create_user(role="user")
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100)
    code, result, err = loader(
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
        loader(env, "upload", "--folder", "models", "--name", "f", "--version", "1", str(a))[0] == 0
    )
    code, result, err = loader(
        env, "upload", "--folder", "models", "--name", "f", "--version", "1", str(b)
    )
    assert code == 13, err
    assert result["error"] == "ConflictError" and "ErrorCode 31" in result["message"]


def test_missing_file(dev_env: Any, tmp_path: Path) -> None:
    code, result, _ = loader(
        dev_env.merged(), "upload", "--folder", "models", "--name", "f", str(tmp_path / "none")
    )
    assert code == 1 and "cannot read" in result["message"]


def test_upload_creates_a_missing_bucket(dev_env: Any, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    code, _, err = loader(
        dev_env.merged(), "upload", "--folder", "newfolder", "--name", "f", str(src)
    )
    assert code == 0, err
    out = tmp_path / "o"
    code, _, err = loader(
        dev_env.merged(LOADER_CACHE_DIR=""),
        "fetch",
        "--folder",
        "newfolder",
        "--name",
        "f",
        "--out",
        str(out),
    )
    assert code == 0, err and out.read_bytes() == b"hello"
