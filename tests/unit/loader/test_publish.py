"""Atomic publish: the target is the old file or the whole new one, never partial."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from azaion_loader.errors import TargetError
from azaion_loader.publish import AtomicWriter, atomic_writer, publish_bytes


def test_commit_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    publish_bytes(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["f"]


def test_error_inside_leaves_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_abort_without_target(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path / "f")
    w.write(b"x")
    w.abort()
    assert os.listdir(tmp_path) == []


def test_missing_directory_is_a_target_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no-dir"):
        AtomicWriter(tmp_path / "no-dir" / "f")


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetError):
        AtomicWriter(tmp_path / "file" / "f")


def test_target_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(TargetError, match="directory"):
        AtomicWriter(tmp_path / "d")
    assert os.listdir(tmp_path) == ["d"]


def test_rename_failure_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "d"
    w = AtomicWriter(target)
    w.write(b"data")
    target.mkdir()  # now the rename onto a non-empty... directory fails
    (target / "x").write_text("x")
    with pytest.raises(TargetError):
        w.commit()
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_write_failure_is_a_target_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not available")
    w = AtomicWriter(tmp_path / "f")
    w._file.close()
    w._file = open("/dev/full", "wb", buffering=0)
    with pytest.raises(TargetError):
        w.write(b"x" * 10)
    w.abort()
    assert os.listdir(tmp_path) == []
