"""`loader unlock-load --runtime containerd` against a real containerd (``ctr``, ns k8s.io)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import published_and_fetched, run_loader
from private_containerd import PrivateContainerd

from azaion_loader.archives import unlock_load
from azaion_loader.containerd_cli import PIN_LABEL, ContainerdCli
from azaion_loader.engine import normalize_reference
from azaion_loader.errors import IntegrityError
from azaion_loader.segmented import SEGMENT_SIZE, TAG_SIZE
from azaion_loader.workdir import ArchiveCheck


def _bare() -> dict[str, str]:
    """The load step's environment: no LOADER_* settings, so no credentials at all."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}


def _load(socket: str, work: Path, *extra: str) -> Any:
    """``loader unlock-load --runtime containerd`` with no LOADER_* settings at all."""
    return run_loader(
        _bare(),
        "unlock-load",
        "--workdir",
        str(work),
        "--runtime",
        "containerd",
        "--socket",
        socket,
        *extra,
    )


def test_load_lands_in_the_kubelets_namespace(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    name = normalize_reference(ref)
    assert name not in containerd_engine.images()
    code, result, _, err = _load(containerd_engine.socket, work)
    assert code == 0, err
    assert result["images"] == [ref] and result["runtime"] == "containerd"
    images = containerd_engine.images()
    assert name in images and images[name] == "-"  # no pin label unless asked
    assert ContainerdCli(socket=containerd_engine.socket).missing_images([ref]) == []
    containerd_engine.ctr("images", "rm", name)


def test_pin_labels_the_images(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    code, _, _, err = _load(containerd_engine.socket, work, "--pin")
    assert code == 0, err
    assert containerd_engine.images()[normalize_reference(ref)] == PIN_LABEL
    containerd_engine.ctr("images", "rm", normalize_reference(ref))


def test_digest_mismatch_loads_nothing(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    archive = work / "archive.enc"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    before = containerd_engine.images()
    code, result, _, err = _load(containerd_engine.socket, work)
    assert code == 30, err
    assert result["error"] == "IntegrityError"
    assert err.count("\n") == 1 and "Traceback" not in err
    assert containerd_engine.images() == before
    assert normalize_reference(ref) not in before


def test_unreachable_socket(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path], tmp_path: Path
) -> None:
    _, work = fetched_archive
    started = time.monotonic()
    code, result, _, err = _load(str(tmp_path / "no-containerd.sock"), work)
    assert code == 44, err
    assert result["error"] == "ContainerdUnavailableError"
    assert err.startswith("loader: error: containerd at ") and "does not answer" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert time.monotonic() - started < 4  # at once, not after ctr's 5 s dial timeout


def test_another_namespace_is_not_the_kubelets(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    namespace = f"azl-test-{secrets.token_hex(3)}"
    code, _, _, err = _load(containerd_engine.socket, work, "--namespace", namespace)
    assert code == 0, err
    assert normalize_reference(ref) in containerd_engine.images(namespace)
    assert normalize_reference(ref) not in containerd_engine.images()
    kubelets = ContainerdCli(socket=containerd_engine.socket)
    assert kubelets.missing_images([ref]) == [ref]
    containerd_engine.ctr("images", "rm", normalize_reference(ref), namespace=namespace)


def test_bad_namespace_name_is_a_usage_error(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    _, work = fetched_archive
    code, result, _, err = _load(containerd_engine.socket, work, "--namespace", "no spaces")
    assert code == 3, err
    assert result["error"] == "ConfigError" and "containerd namespace" in result["message"]


def test_missing_image_name_is_reported(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    missing = f"azaion-test/not-in-archive-{secrets.token_hex(4)}:9"
    code, result, _, err = _load(containerd_engine.socket, work, "--images", ref, missing)
    assert code == 43, err
    assert result["error"] == "ImageMissingError"
    assert missing in result["message"] and "containerd" in result["message"]
    assert ref not in result["message"].split("lacks")[1]
    containerd_engine.ctr("images", "rm", normalize_reference(ref))


def test_engine_remove_and_ping(
    containerd_engine: PrivateContainerd, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    code, _, _, err = _load(containerd_engine.socket, work)
    assert code == 0, err
    cli = ContainerdCli(socket=containerd_engine.socket)
    assert cli.ping().startswith("1.")
    assert cli.remove_image(ref) is True
    assert cli.remove_image(ref) is False
    assert normalize_reference(ref) not in containerd_engine.images()


def test_a_segment_changed_after_the_check_kills_the_import(
    containerd_engine: PrivateContainerd,
    dev_env: Any,
    big_image_archive: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """Format 2: the last segment changes after the check; ctr, fed all but it, is killed."""
    ref, archive = big_image_archive
    work = published_and_fetched(dev_env, archive, tmp_path / "work", "--format=2")
    check = ArchiveCheck.start(work)
    check.wait()
    enc = work / "archive.enc"
    data = bytearray(enc.read_bytes())
    last = (len(data) - 1) // (SEGMENT_SIZE + TAG_SIZE)
    assert last >= 2
    data[-TAG_SIZE - 10] ^= 0x01
    enc.write_bytes(bytes(data))
    before = containerd_engine.images()
    with pytest.raises(IntegrityError, match=f"segment {last} of "):
        unlock_load(ContainerdCli(socket=containerd_engine.socket), workdir=work, check=check)
    assert containerd_engine.images() == before
    assert normalize_reference(ref) not in before
