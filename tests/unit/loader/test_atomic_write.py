"""Atomic write: the target is the old file or the whole new one, never partial."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from azaion_loader.atomic_write import (
    AtomicWriter,
    atomic_writer,
    publish_bytes,
    scratch_dir,
    sweep_stale,
    temp_prefix,
)
from azaion_loader.errors import TargetError


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


# -- what a killed writer leaves, names, special targets --------------------------


def _stale_temp(directory: Path, name: str) -> Path:
    """A temporary as a writer killed by SIGKILL leaves it: named, unlocked, plaintext."""
    stale = directory / f".{name}.abc123_x.tmp"
    stale.write_bytes(b"plaintext of a killed fetch")
    return stale


def test_writer_is_nameless_while_writing(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path / "f")
    w.write(b"secret plaintext")
    # Nothing a later reader (or a SIGKILL) could find: the file has no name yet.
    assert os.listdir(tmp_path) == []
    w.commit()
    assert os.listdir(tmp_path) == ["f"]
    assert (tmp_path / "f").read_bytes() == b"secret plaintext"


def test_new_writer_sweeps_stale_temporaries_of_its_own_target_only(tmp_path: Path) -> None:
    stale = _stale_temp(tmp_path, "model.bin")
    others = [
        tmp_path / ".other.bin.abc123_x.tmp",  # another target's temporary
        tmp_path / ".model.bin.notours.tmp",  # not the writer's pattern
        tmp_path / ".model.bin.abc123_x.tmp.keep",
        tmp_path / "model.bin.abc123_x.tmp",
    ]
    for path in others:
        path.write_bytes(b"keep")
    publish_bytes(tmp_path / "model.bin", b"new")
    assert not stale.exists()
    assert all(path.read_bytes() == b"keep" for path in others)
    assert (tmp_path / "model.bin").read_bytes() == b"new"


def test_sweep_skips_a_temporary_a_live_writer_holds(tmp_path: Path) -> None:
    stale = _stale_temp(tmp_path, "f")
    with open(stale, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert sweep_stale(tmp_path / "f") == []
        assert stale.exists()
    assert sweep_stale(tmp_path / "f") == [stale]
    assert not stale.exists()


def test_sweep_ignores_directories_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / ".f.abc123_x.tmp").mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".f.zzz999_y.tmp").symlink_to(victim)
    assert sweep_stale(tmp_path / "f") == []
    assert victim.read_bytes() == b"keep"


def test_long_names_fit_name_max(tmp_path: Path) -> None:
    name = "n" * 250  # a valid file name; `.NAME.XXXXXXXX.tmp` would not be
    target = tmp_path / name
    w = AtomicWriter(target)
    w.write(b"data")
    w.commit()
    assert target.read_bytes() == b"data"
    prefix = temp_prefix(name)
    assert len(os.fsencode(prefix + "abcd1234.tmp")) < 150
    assert prefix != temp_prefix("n" * 249)  # still one target's own pattern


def test_long_name_stale_temporary_is_swept(tmp_path: Path) -> None:
    name = "é" * 120  # 240 bytes in UTF-8
    stale = tmp_path / f"{temp_prefix(name)}abc123_x.tmp"
    stale.write_bytes(b"old plaintext")
    publish_bytes(tmp_path / name, b"new")
    assert sorted(os.listdir(tmp_path)) == [name]


def test_named_fallback_without_o_tmpfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE")
    w = AtomicWriter(tmp_path / "f")
    w.write(b"x")
    (temp,) = os.listdir(tmp_path)
    assert temp.startswith(".f.") and temp.endswith(".tmp")
    assert sweep_stale(tmp_path / "f") == []  # locked by the live writer
    w.abort()
    assert os.listdir(tmp_path) == []


def test_device_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not a regular file"):
        AtomicWriter("/dev/null")
    link = tmp_path / "out"
    link.symlink_to("/dev/null")
    with pytest.raises(TargetError, match="not a regular file"):
        AtomicWriter(link)
    assert link.is_symlink()


def test_fifo_target_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TargetError, match="not a regular file"):
        AtomicWriter(fifo)
    assert os.listdir(tmp_path) == ["fifo"]


def test_scratch_dir_is_private_and_removed(tmp_path: Path) -> None:
    with scratch_dir("loader-unlock-", tmp_path) as work:
        assert work.parent == tmp_path and work.stat().st_mode & 0o777 == 0o700
        (work / "fragment.json").write_text("{}")
    assert os.listdir(tmp_path) == []


def test_scratch_dir_sweeps_what_a_killed_run_left(tmp_path: Path) -> None:
    left = tmp_path / "loader-unlock-abcd_123"  # as SIGKILL leaves it: no lock held
    left.mkdir()
    (left / "fragment.json").write_text('{"fragment": "..."}')
    held = tmp_path / "loader-unlock-live_123"
    held.mkdir()
    unrelated = tmp_path / "loader-unlock-other-name"
    unrelated.mkdir()
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with scratch_dir("loader-unlock-", tmp_path) as work:
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                [work.name, held.name, unrelated.name]
            )
    finally:
        os.close(fd)
