"""Pure helpers of `loader dev-stack`: the export lines and the tiny root filesystem."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from azaion_loader.server import devstack


def test_export_lines_survive_a_shell_round_trip(tmp_path: Path) -> None:
    settings = {"LOADER_API_URL": "http://127.0.0.1:8080", "LOADER_PASSWORD": "a'b $c \"d`e"}
    text = devstack._export_lines(settings, ["a note; with $things"])
    env_file = tmp_path / "env"
    env_file.write_text(text)
    out = subprocess.run(
        ["bash", "-c", f"source {env_file}; printf '%s' \"$LOADER_PASSWORD\""],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    assert out == settings["LOADER_PASSWORD"]
    assert text.splitlines()[1] == "# a note; with $things"


def test_write_private_is_atomic_and_0600(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "loader.env"
    devstack._write_private(target, "export A=1\n")
    assert target.read_text() == "export A=1\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["loader.env"]


def test_busybox_rootfs_holds_busybox_and_sh(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF static busybox stand-in")
    monkeypatch.setattr(devstack, "BUSYBOX", fake)
    with tarfile.open(fileobj=io.BytesIO(devstack.busybox_rootfs())) as tar:
        assert tar.getnames() == ["bin", "tmp", "bin/busybox", "bin/sh"]
        assert tar.extractfile("bin/busybox").read() == fake.read_bytes()  # type: ignore[union-attr]
        assert tar.getmember("bin/busybox").mode == 0o755
        assert tar.getmember("bin/sh").linkname == "busybox"
        assert tar.getmember("tmp").mode == 0o1777


def test_a_dynamic_busybox_is_refused(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF.../lib64/ld-linux-x86-64.so.2...")
    monkeypatch.setattr(devstack, "BUSYBOX", fake)
    assert "not statically linked" in (devstack._busybox_problem() or "")
    monkeypatch.setattr(devstack, "BUSYBOX", tmp_path / "absent")
    assert "busybox-static" in (devstack._busybox_problem() or "")
