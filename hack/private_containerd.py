"""A containerd of one's own (Debian's ``containerd``): own root, state and socket, CRI off.

For the integration tests (``containerd_engine`` fixture) and the unlock
benchmark: ``ctr`` loads into its namespace ``k8s.io`` exactly as into a
node's, without touching the host's or the local cluster's containerd.
Standard library only; needs root (overlay mounts when unpacking).

    with PrivateContainerd() as ctd:
        ctd.ctr("images", "ls")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["ContainerdStartError", "PrivateContainerd"]

_CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


class ContainerdStartError(RuntimeError):
    """The private containerd did not answer; the message has its log's tail."""


class PrivateContainerd:
    """Start with ``start()`` (or ``with``), stop with ``stop()``; ``socket`` is its address."""

    def __init__(self, parent: str = "/tmp") -> None:
        # Short path: a unix socket's path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="azl-ctd-", dir=parent))
        self.socket = str(self.root / "containerd.sock")
        self._process: subprocess.Popen[bytes] | None = None

    def ctr(self, *args: str, namespace: str = "k8s.io") -> subprocess.CompletedProcess[str]:
        """``ctr`` against this containerd, output captured as text."""
        return subprocess.run(
            ["ctr", "--address", self.socket, "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def images(self, namespace: str = "k8s.io") -> dict[str, str]:
        """``{name: labels}`` of the namespace's images."""
        listed = self.ctr("images", "ls", namespace=namespace)
        if listed.returncode != 0:
            raise ContainerdStartError(f"ctr images ls failed: {listed.stderr.strip()}")
        rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
        return {row[0]: row[-1] for row in rows}

    def start(self, timeout: float = 30) -> PrivateContainerd:
        config = self.root / "config.toml"
        config.write_text(_CONFIG.format(root=self.root), encoding="utf-8")
        with open(self.root / "containerd.log", "wb") as log:
            self._process = subprocess.Popen(
                ["containerd", "--config", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while self.ctr("version").returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "containerd.log").read_text(errors="replace")[-500:]
                self.stop()
                raise ContainerdStartError(f"containerd did not start: {tail}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        subprocess.run(["umount", "-R", str(self.root / "root")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateContainerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def missing_tools() -> str | None:
    """Why a private containerd cannot run here, or ``None``."""
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian's containerd; run ./scripts/install)"
    if os.geteuid() != 0:
        return "a private containerd needs root (overlay mounts)"
    return None
