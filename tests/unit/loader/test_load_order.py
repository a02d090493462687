"""The load step's order: `docker load` starts early, is fed only after the digest matches.

The `docker` here is a small script (a real process on a real pipe) that
records how many bytes reached its standard input; the engine itself is in
tests/integration/test_unlock.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azaion_loader.archives import unlock_load
from azaion_loader.crypto import EncryptingReader, encrypt_bytes
from azaion_loader.docker_cli import DockerCli
from azaion_loader.envelope import derive_archive_key
from azaion_loader.errors import (
    ConfigError,
    DockerUnavailableError,
    IntegrityError,
    NotADockerArchiveError,
)
from azaion_loader.models import KeyFragment
from azaion_loader.segmented import ARCHIVE_AAD, SEGMENT_SIZE, TAG_SIZE
from azaion_loader.workdir import ARCHIVE_FILE, FRAGMENT_FILE, ArchiveCheck

REF = "azaion-test/order:1.0"

RECORDING_DOCKER = """#!{python}
import os, sys
record = os.environ["RECORD"]
received = 0
if sys.argv[1:] == ["load"]:
    with open(record, "w") as f:
        f.write("0")
    while chunk := sys.stdin.buffer.read(65536):
        received += len(chunk)
        with open(record, "w") as f:
            f.write(str(received))
    print("Loaded image: {ref}")
else:  # image inspect
    print("sha256:0")
"""

UNREACHABLE_DOCKER = """#!/bin/sh
echo "Cannot connect to the Docker daemon at unix:///no.sock. Is the docker daemon running?" >&2
exit 1
"""


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _docker_save_tar(filler: int = 0) -> bytes:
    """A tar with a ``manifest.json`` first, then ``filler`` random bytes in a member."""
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [REF], "Layers": []}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("manifest.json", manifest), ("layer.tar", os.urandom(filler))):
            if name == "layer.tar" and not filler:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _workdir(tmp_path: Path, fmt: int = 1, tar: bytes | None = None) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    fragment = os.urandom(32)
    plain = _docker_save_tar() if tar is None else tar
    key = derive_archive_key(fragment)
    if fmt == 2:
        reader = EncryptingReader(io.BytesIO(plain), key, segmented=True, aad=ARCHIVE_AAD)
        encrypted = reader.read()
        sha256 = reader.digest.hexdigest()
    else:
        encrypted = encrypt_bytes(key, plain)
        sha256 = hashlib.sha256(encrypted).hexdigest()
    (work / ARCHIVE_FILE).write_bytes(encrypted)
    frag = KeyFragment(
        folder="images",
        name="order",
        version="1",
        fragment=fragment,
        sha256=sha256,
        size=len(encrypted),
        format=fmt,
    )
    (work / FRAGMENT_FILE).write_text(json.dumps(frag.to_dict()))
    return work


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DockerCli, Path]:
    record = tmp_path / "received"
    monkeypatch.setenv("RECORD", str(record))
    text = RECORDING_DOCKER.format(python=sys.executable, ref=REF)
    return DockerCli(_script(tmp_path / "docker", text)), record


@pytest.mark.parametrize("fmt", [1, 2])
def test_matching_archive_is_fed_whole(
    tmp_path: Path, recording: tuple[DockerCli, Path], fmt: int
) -> None:
    docker, record = recording
    work = _workdir(tmp_path, fmt)
    result = unlock_load(docker, workdir=work)
    assert result.images == (REF,)
    assert result.images_source == "manifest"
    assert int(record.read_text()) == len(_docker_save_tar())


@pytest.mark.parametrize(("fmt", "where"), [(1, 20), (2, 20), (2, -1)])
def test_tampered_archive_kills_docker_load_before_a_byte(
    tmp_path: Path, recording: tuple[DockerCli, Path], fmt: int, where: int
) -> None:
    docker, record = recording
    work = _workdir(tmp_path, fmt, _docker_save_tar(filler=3 * SEGMENT_SIZE))
    data = bytearray((work / ARCHIVE_FILE).read_bytes())
    data[where] ^= 0x01
    (work / ARCHIVE_FILE).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the digest from the API"):
        unlock_load(docker, workdir=work)
    # Killed: the script never reached the end of its input (no "Loaded"), and
    # if it started at all it recorded nothing received.
    time.sleep(0.2)
    assert not record.exists() or record.read_text() == "0"


@pytest.mark.parametrize("segment", [1, 3])
def test_a_format_2_segment_changed_after_the_check_kills_the_load(
    tmp_path: Path, recording: tuple[DockerCli, Path], segment: int
) -> None:
    """The load pass checks each segment again: one that changed since the check
    raises before the stream ends, and the engine's load is killed (never sees its end)."""
    docker, record = recording
    tar = _docker_save_tar(filler=3 * SEGMENT_SIZE)
    work = _workdir(tmp_path, 2, tar)
    check = ArchiveCheck.start(work)
    check.wait()
    assert check.tags == [REF]  # read by the check's own pass
    enc = work / ARCHIVE_FILE
    data = bytearray(enc.read_bytes())
    data[segment * (SEGMENT_SIZE + TAG_SIZE) + 5] ^= 0x01
    enc.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"segment {segment} of .* failed authentication"):
        unlock_load(docker, workdir=work, check=check)
    # Killed (unlock_load waits for it): at most the segments before the changed one
    # reached it, never the end of the stream ("Loaded image" is printed only there).
    received = int(record.read_text()) if record.exists() else 0
    assert received <= segment * SEGMENT_SIZE < len(tar)


def test_a_format_2_archive_without_a_manifest_loads_nothing(
    tmp_path: Path, recording: tuple[DockerCli, Path]
) -> None:
    docker, record = recording
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    work = _workdir(tmp_path, 2, buf.getvalue())
    with pytest.raises(NotADockerArchiveError, match=r"no manifest\.json"):
        unlock_load(docker, workdir=work)
    time.sleep(0.2)
    assert not record.exists() or record.read_text() == "0"


def test_unreachable_engine_is_reported_before_decryption(tmp_path: Path) -> None:
    docker = DockerCli(_script(tmp_path / "docker", UNREACHABLE_DOCKER))
    pending = docker.start_load()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pending._process.proc.poll() is None:
        time.sleep(0.01)
    with pytest.raises(DockerUnavailableError, match="does not answer: Cannot connect"):
        pending.check_running()


def test_unreachable_engine_fails_the_load(tmp_path: Path) -> None:
    docker = DockerCli(_script(tmp_path / "docker", UNREACHABLE_DOCKER))
    with pytest.raises(DockerUnavailableError, match="does not answer"):
        unlock_load(docker, workdir=_workdir(tmp_path))


def test_stdout_and_stderr_are_kept_apart() -> None:
    process = DockerCli("sh")._start(["-c", "wc -c; echo oops >&2"])
    code, out, err = process.feed([b"abc", memoryview(b"defg")])
    assert (code, out.split(), err) == (0, [b"7"], b"oops\n")


def test_a_large_stream_arrives_whole_and_in_order() -> None:
    block = os.urandom(1 << 20)
    chunks = [block[i:] + block[:i] for i in range(12)]
    process = DockerCli("sh")._start(["-c", "sha256sum"])
    code, out, _ = process.feed(chunks)
    assert code == 0
    assert out.split()[0].decode() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_reader_that_stops_early_does_not_stop_the_feed() -> None:
    fed = []

    def chunks() -> Iterator[bytes]:
        for i in range(64):
            fed.append(i)
            yield bytes(1 << 20)

    process = DockerCli("sh")._start(["-c", "head -c 10 >/dev/null; exit 3"])
    code, _, _ = process.feed(chunks())
    assert code == 3
    assert len(fed) == 64


def test_archive_check_reports_a_missing_archive_as_config(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    check = ArchiveCheck.start(work)
    assert check.wait().name == "order"
    (work / ARCHIVE_FILE).unlink()
    with pytest.raises(ConfigError, match=r"archive\.enc is missing"):
        ArchiveCheck.start(work)
