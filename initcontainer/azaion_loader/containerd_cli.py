"""containerd, through the ``ctr`` CLI (subprocess; the runner is injectable).

Images go into one containerd namespace, by default ``k8s.io``: the one the
kubelet's CRI plugin reads, so Pods on the node can use them with
``imagePullPolicy: Never``.  ``ctr images import -`` reads the decrypted
``docker save`` stream on its standard input and unpacks it for the default
snapshotter, so no plaintext touches a disk.

Errors, all from :mod:`azaion_loader.errors`:

    ImageLoadError                  ``ctr`` failed for another reason
    +-- ContainerdUnavailableError  no ``ctr`` CLI, no socket, or containerd does not answer
    +-- NotADockerArchiveError      ``ctr images import`` rejected the stream
    +-- ImageMissingError           (raised by callers after :meth:`ContainerdCli.missing_images`)

``pin=True`` labels each loaded image ``io.cri-containerd.pinned=pinned``,
which containerd's CRI (1.7 and later) reports to the kubelet as pinned, so
its image garbage collection keeps it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from collections.abc import Iterable

from azaion_loader.cli_process import Popen, Runner, StdinProcess, first_line, start_fed
from azaion_loader.engine import (
    CONTAINERD,
    DEFAULT_CONTAINERD_NAMESPACE,
    DEFAULT_SOCKETS,
    normalize_reference,
)
from azaion_loader.errors import ContainerdUnavailableError, ImageLoadError, NotADockerArchiveError

__all__ = ["PIN_LABEL", "ContainerdCli", "ContainerdPendingLoad"]

log = logging.getLogger(__name__)

PIN_LABEL = "io.cri-containerd.pinned=pinned"
CONNECT_TIMEOUT = "5s"
"""How long ``ctr`` tries to reach the socket (its own default is 10 s)."""

_UNREACHABLE = (
    "failed to dial",
    "connection refused",
    "connection error",
    "permission denied",
    "no such file or directory",
)
# ctr reports what it unpacked as "unpacking NAME (sha256:...)...done".
_UNPACKED = re.compile(r"^unpacking (\S+) \(sha256:[0-9a-f]+\)")


def _unreachable(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _UNREACHABLE)


class ContainerdCli:
    """A thin wrapper over ``ctr version``, ``images import``, ``images ls``, ``label``, ``rm``."""

    name = CONTAINERD

    def __init__(
        self,
        ctr: str = "ctr",
        *,
        socket: str | None = None,
        namespace: str = DEFAULT_CONTAINERD_NAMESPACE,
        pin: bool = False,
        runner: Runner = subprocess.run,
        popen: Popen = subprocess.Popen,
        timeout: float = 60.0,
    ) -> None:
        self.ctr = ctr
        self.socket = socket or DEFAULT_SOCKETS[CONTAINERD]
        self.namespace = namespace
        self.pin = pin
        self._run = runner
        self._popen = popen
        self.timeout = timeout

    @property
    def address(self) -> str:
        """The socket path."""
        return self.socket

    def _argv(self, *args: str) -> list[str]:
        return [
            self.ctr,
            "--address",
            self.socket,
            "--namespace",
            self.namespace,
            "--connect-timeout",
            CONNECT_TIMEOUT,
            *args,
        ]

    def _unavailable(self, detail: str) -> ContainerdUnavailableError:
        return ContainerdUnavailableError(f"containerd at {self.socket} does not answer: {detail}")

    def _check_socket(self) -> None:
        """Fail at once, with the reason, when the socket is missing or not a socket."""
        try:
            mode = os.stat(self.socket).st_mode
        except OSError as exc:
            raise self._unavailable(f"cannot reach the socket: {exc.strerror}") from exc
        if not stat.S_ISSOCK(mode):
            raise self._unavailable("the path is not a socket")

    def _call(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return self._run(
                self._argv(*args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ContainerdUnavailableError(
                f"the ctr CLI ({self.ctr}) is not installed here"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise self._unavailable(f"`ctr {args[0]}` took over {self.timeout:.0f} s") from exc

    def _failed(self, command: str, proc: subprocess.CompletedProcess[bytes]) -> ImageLoadError:
        detail = first_line(proc.stderr) or f"exit status {proc.returncode}"
        if _unreachable(detail):
            return self._unavailable(detail)
        return ImageLoadError(f"`ctr {command}` failed: {detail}")

    def ping(self) -> str:
        """containerd's version; :class:`ContainerdUnavailableError` if it does not answer."""
        self._check_socket()
        proc = self._call("version")
        if proc.returncode != 0:
            raise self._failed("version", proc)
        # "Server:\n  Version: 1.6.20..." (the client's block comes first).
        text = proc.stdout.decode("utf-8", "replace")
        server = text.split("Server:", 1)[-1]
        for line in server.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "Version" and value.strip():
                return value.strip()
        raise self._unavailable("`ctr version` reported no server version")

    def list_images(self) -> set[str]:
        """The names of every image in the namespace."""
        proc = self._call("images", "ls", "--quiet")
        if proc.returncode != 0:
            raise self._failed("images ls", proc)
        return {line.strip() for line in proc.stdout.decode("utf-8", "replace").splitlines()}

    def missing_images(self, refs: Iterable[str]) -> list[str]:
        """The references among ``refs`` (normalised as the kubelet does) not in the namespace."""
        wanted = list(refs)
        if not wanted:
            return []
        present = self.list_images()
        return [ref for ref in wanted if normalize_reference(ref) not in present]

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        """``ctr images rm REF``; false if the namespace had no such image."""
        del force  # ctr removes the name; the content goes at containerd's next GC
        name = normalize_reference(ref)
        if name not in self.list_images():
            return False
        proc = self._call("images", "rm", name)
        if proc.returncode != 0:
            raise self._failed("images rm", proc)
        return True

    def pin_images(self, refs: Iterable[str]) -> None:
        """Label ``refs`` so that the kubelet's image garbage collection keeps them."""
        for ref in refs:
            proc = self._call("images", "label", normalize_reference(ref), PIN_LABEL)
            if proc.returncode != 0:
                raise self._failed("images label", proc)

    def start_load(self) -> ContainerdPendingLoad:
        """Start ``ctr images import -`` with nothing on its standard input yet.

        It connects to containerd while the caller checks the archive; a
        missing socket fails here, at once, rather than after ctr's timeout.
        """
        self._check_socket()
        try:
            process = start_fed(self._argv("images", "import", "-"), self._popen)
        except FileNotFoundError as exc:
            raise ContainerdUnavailableError(
                f"the ctr CLI ({self.ctr}) is not installed here"
            ) from exc
        return ContainerdPendingLoad(self, process)


class ContainerdPendingLoad:
    """A started ``ctr images import`` waiting for its archive."""

    def __init__(self, engine: ContainerdCli, process: StdinProcess) -> None:
        self._engine = engine
        self._process = process

    def check_running(self) -> None:
        """Raise what ctr reported if it has already ended (e.g. containerd unreachable)."""
        if self._process.exited():
            code, stdout, stderr = self._process.finish()
            raise self._error(code, stdout, stderr)

    def load(self, chunks: Iterable[bytes | memoryview]) -> list[str]:
        """Stream ``chunks`` into ctr; the images it unpacked.  (ctr is killed if they raise)"""
        code, stdout, stderr = self._process.feed(chunks)
        if code != 0:
            raise self._error(code, stdout, stderr)
        loaded = []
        for line in stdout.decode("utf-8", "replace").splitlines():
            match = _UNPACKED.match(line.strip())
            if match:
                loaded.append(match.group(1))
        if self._engine.pin and loaded:
            self._engine.pin_images(loaded)
        log.info(
            "ctr images import into %s: %s",
            self._engine.namespace,
            ", ".join(loaded) or "nothing reported",
        )
        return loaded

    def cancel(self) -> None:
        """Kill ctr; an import without its data leaves no image behind."""
        self._process.kill()

    def _error(self, code: int, stdout: bytes, stderr: bytes) -> ImageLoadError:
        detail = first_line(stderr) or first_line(stdout) or f"exit status {code}"
        if _unreachable(detail):
            return self._engine._unavailable(detail)
        if code == 0:
            return ImageLoadError("`ctr images import` ended before it was given the archive")
        return NotADockerArchiveError(
            f"`ctr images import` rejected the decrypted archive: {detail}"
        )
