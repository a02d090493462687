"""The streaming tar scanner finds manifest.json RepoTags, chunk boundaries anywhere."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from azaion_loader.archives import TarManifestScanner


def make_tar(members: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MANIFEST = json.dumps(
    [
        {
            "Config": "c.json",
            "RepoTags": ["demo/app:1.0", "demo/app:latest"],
            "Layers": ["l/layer.tar"],
        }
    ]
).encode()


@pytest.mark.parametrize("step", [1, 7, 511, 512, 513, 100_000])
def test_finds_repo_tags(step: int) -> None:
    data = make_tar({"l/layer.tar": os.urandom(5000), "c.json": b"{}", "manifest.json": MANIFEST})
    s = TarManifestScanner()
    for i in range(0, len(data), step):
        s.feed(data[i : i + step])
    assert s.valid and s.members == 3
    assert s.repo_tags == ["demo/app:1.0", "demo/app:latest"]


def test_long_names_gnu_and_pax() -> None:
    long = "x" * 150 + "/layer.tar"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = make_tar({long: b"abc", "manifest.json": MANIFEST}, fmt)
        s = TarManifestScanner()
        s.feed(data)
        assert s.repo_tags[0] == "demo/app:1.0", fmt


def test_not_a_tar() -> None:
    s = TarManifestScanner()
    s.feed(os.urandom(4096))
    assert not s.valid and s.repo_tags == []


def test_tar_without_manifest() -> None:
    s = TarManifestScanner()
    s.feed(make_tar({"a": b"1"}))
    assert s.valid and s.manifest is None and s.repo_tags == []
