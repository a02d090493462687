"""manifest.json read straight from the encrypted archive, and which tags may be loaded."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from test_tar_scanner import MANIFEST, make_tar

from azaion_loader.crypto import encrypt_bytes, new_key
from azaion_loader.tar_manifest import disallowed_tags, sealed_repo_tags


def _sealed(tmp_path: Path, plain: bytes) -> tuple[Path, bytes]:
    key = new_key()
    path = tmp_path / "archive.enc"
    path.write_bytes(encrypt_bytes(key, plain))
    return path, key


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_the_manifest_of_the_encrypted_tar(tmp_path: Path, fmt: int) -> None:
    long_dir = "d" * 150  # a GNU long name / pax path before the manifest
    members = {
        f"{long_dir}/layer.tar": os.urandom(70_001),
        "c.json": b"{}",
        "manifest.json": MANIFEST,
    }
    path, key = _sealed(tmp_path, make_tar(members, fmt))
    assert sealed_repo_tags(path, key) == ["demo/app:1.0", "demo/app:latest"]


def test_no_manifest_or_not_a_tar_is_none(tmp_path: Path) -> None:
    path, key = _sealed(tmp_path, make_tar({"hello.txt": b"hello"}))
    assert sealed_repo_tags(path, key) is None
    (tmp_path / "junk").mkdir()
    junk, junk_key = _sealed(tmp_path / "junk", os.urandom(50_000))
    assert sealed_repo_tags(junk, junk_key) is None


def test_a_wrong_key_reads_no_tags(tmp_path: Path) -> None:
    path, _ = _sealed(tmp_path, make_tar({"manifest.json": MANIFEST}))
    assert sealed_repo_tags(path, new_key()) is None


def test_reads_only_headers_and_the_manifest(tmp_path: Path, monkeypatch) -> None:
    big = os.urandom(8 << 20)
    path, key = _sealed(tmp_path, make_tar({"layer.tar": big, "manifest.json": MANIFEST}))
    read: list[int] = []
    real_pread = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        read.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    assert sealed_repo_tags(path, key) == ["demo/app:1.0", "demo/app:latest"]
    assert sum(read) < 4096, read  # not the 8 MiB layer


def test_disallowed_tags() -> None:
    tags = ["demo/app:1.0", "registry.local/tool:2"]
    assert disallowed_tags(tags) == []
    assert (
        disallowed_tags(tags, requested=["docker.io/demo/app:1.0", "registry.local/tool:2"]) == []
    )
    assert disallowed_tags(tags, requested=["demo/app:1.0"]) == [
        "registry.local/tool:2 (not in the expected images)"
    ]
    assert disallowed_tags(tags, registered=["registry.local/tool:2"]) == [
        "demo/app:1.0 (not registered with the API)"
    ]
    assert disallowed_tags(["azaion-loader:dev"], forbidden_repositories=["azaion-loader"]) == [
        "azaion-loader:dev (the Jobs' own image repository)"
    ]
    # the repository, not a prefix: azaion-loader-extra is another image
    assert (
        disallowed_tags(["azaion-loader-extra:1"], forbidden_repositories=["azaion-loader"]) == []
    )
    assert disallowed_tags(
        ["registry.local:5000/ops/azaion-loader:0.1"],
        forbidden_repositories=["registry.local:5000/ops/azaion-loader"],
    ) == ["registry.local:5000/ops/azaion-loader:0.1 (the Jobs' own image repository)"]
