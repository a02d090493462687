"""The Docker engine, through the ``docker`` CLI (subprocess; the runner is injectable).

Errors, all from :mod:`azaion_loader.errors`:

    ImageLoadError              ``docker load`` failed for another reason
    +-- DockerUnavailableError  no ``docker`` CLI, or the daemon does not answer
    +-- NotADockerArchiveError  ``docker load`` rejected the stream
    +-- ImageMissingError       (raised by callers after :meth:`DockerCli.missing_images`)

``load()`` feeds ``docker load`` through its standard input, so the caller can
stream a decryption into it without a plaintext file; ``start_load()`` starts
the CLI first and leaves the feeding (or cancelling) for later, so its start-up
overlaps the caller's checks; ``import_image()`` feeds
``docker import`` the same way, ``save_image()`` lets the engine write
``docker save`` straight to a file, ``remove_image()`` removes an image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from azaion_loader.errors import (
    DockerUnavailableError,
    ImageLoadError,
    NotADockerArchiveError,
)

__all__ = ["DockerCli", "PendingLoad", "Runner", "StdinProcess"]

log = logging.getLogger(__name__)

Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]
Popen = Callable[..., "subprocess.Popen[bytes]"]

INPUT_BUFFER = 4 << 20
"""Send buffer asked for the socket into ``docker load`` / ``docker import``
(the kernel caps it at ``net.core.wmem_max``)."""

_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "permission denied while trying to connect",
    "connect: no such file or directory",
    "connect: connection refused",
)


def _first_line(data: bytes) -> str:
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return " ".join(line.split())[:300]
    return ""


def _unreachable(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _UNREACHABLE)


class DockerCli:
    """A thin wrapper over ``docker version``, ``load``, ``import``, ``save`` and ``image``."""

    def __init__(
        self,
        docker: str = "docker",
        *,
        runner: Runner = subprocess.run,
        popen: Popen = subprocess.Popen,
        timeout: float = 60.0,
    ) -> None:
        self.docker = docker
        self._run = runner
        self._popen = popen
        self.timeout = timeout

    def _call(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        timeout = timeout or self.timeout
        try:
            return self._run(
                [self.docker, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise DockerUnavailableError(
                f"the docker CLI ({self.docker}) is not installed here"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerUnavailableError(
                f"`docker {args[0]}` did not answer within {timeout:.0f} s"
            ) from exc

    def ping(self) -> str:
        """The daemon's version; :class:`DockerUnavailableError` if it does not answer."""
        proc = self._call("version", "--format", "{{.Server.Version}}")
        version = proc.stdout.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not version:
            detail = _first_line(proc.stderr) or f"exit status {proc.returncode}"
            raise DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
        return version

    def image_exists(self, ref: str) -> bool:
        """Whether ``docker image inspect ref`` finds the image."""
        proc = self._call("image", "inspect", "--format", "{{.Id}}", ref)
        if proc.returncode == 0:
            return True
        err = proc.stderr.decode("utf-8", "replace")
        if _unreachable(err):
            raise DockerUnavailableError(
                f"the Docker daemon does not answer: {_first_line(proc.stderr)}"
            )
        return False

    def missing_images(self, refs: Iterable[str]) -> list[str]:
        """The references among ``refs`` that the engine does not have.

        One ``docker image inspect`` for all of them; only when it fails is
        each asked on its own, to tell which are missing.
        """
        wanted = list(refs)
        if not wanted:
            return []
        proc = self._call("image", "inspect", "--format", "{{.Id}}", *wanted)
        if proc.returncode == 0:
            return []
        if _unreachable(proc.stderr.decode("utf-8", "replace")):
            raise DockerUnavailableError(
                f"the Docker daemon does not answer: {_first_line(proc.stderr)}"
            )
        return [ref for ref in wanted if not self.image_exists(ref)]

    def _start(self, args: Sequence[str]) -> StdinProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, INPUT_BUFFER)
        try:
            proc = self._popen(
                [self.docker, *args],
                stdin=theirs,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            ours.close()
            raise DockerUnavailableError(
                f"the docker CLI ({self.docker}) is not installed here"
            ) from exc
        finally:
            theirs.close()
        return StdinProcess(proc, ours)

    def start_load(self) -> PendingLoad:
        """Start ``docker load`` with nothing on its standard input yet.

        The CLI starts and connects to the engine while the caller checks the
        archive; :meth:`PendingLoad.load` then streams it, or
        :meth:`PendingLoad.cancel` kills the CLI before it got a byte.
        """
        return PendingLoad(self._start(["load"]))

    def load(self, chunks: Iterable[bytes | memoryview]) -> list[str]:
        """Stream ``chunks`` (a ``docker save`` tar) into ``docker load``; returns what it loaded.

        If ``chunks`` raises, ``docker load`` is stopped and the error re-raised.
        """
        return self.start_load().load(chunks)

    def import_image(self, ref: str, chunks: Iterable[bytes | memoryview]) -> str:
        """``docker import - REF`` of a root filesystem tar streamed as ``chunks``; the image id."""
        code, stdout, stderr = self._start(["import", "-", ref]).feed(chunks)
        if code != 0:
            raise self._failed("import", stderr, code)
        image_id = _first_line(stdout)
        log.info("docker import: %s as %s", image_id, ref)
        return image_id

    def save_image(
        self, refs: Sequence[str], path: str | os.PathLike[str], *, timeout: float = 3600
    ) -> None:
        """``docker save -o PATH REFS``: the engine streams the archive into ``path``."""
        proc = self._call("save", "-o", os.fspath(path), *refs, timeout=timeout)
        if proc.returncode != 0:
            raise self._failed("save", proc.stderr, proc.returncode)

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        """``docker image rm [--force] REF``; false if the engine had no such image."""
        proc = self._call("image", "rm", *(["--force"] if force else []), ref)
        if proc.returncode == 0:
            return True
        if b"no such image" in proc.stderr.lower():
            return False
        raise self._failed("image rm", proc.stderr, proc.returncode)

    @staticmethod
    def _failed(command: str, stderr: bytes, code: int) -> ImageLoadError:
        detail = _first_line(stderr) or f"exit status {code}"
        if _unreachable(detail):
            return DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
        return ImageLoadError(f"`docker {command}` failed: {detail}")


class StdinProcess:
    """A ``docker`` process fed by the caller on its standard input; its output is drained.

    The input is one end of a local stream socket, not a pipe: the CLI reads
    32 KiB at a time, and a full pipe wakes its writer at every such read,
    while a socket's writer sleeps until a quarter of its buffer is left.
    Fed 256 MiB through a pipe, ``docker load`` took 0.1 s more CPU (and the
    writer 0.06 s more) than through a socket, whose wall time matched
    ``docker load -i`` of the same file.
    """

    def __init__(self, proc: subprocess.Popen[bytes], stdin: socket.socket) -> None:
        self.proc = proc
        self._input = stdin
        self._out: dict[str, bytes] = {}
        self._readers = [
            threading.Thread(target=_drain, args=(stream, self._out, name), daemon=True)
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for t in self._readers:
            t.start()

    def exited(self) -> bool:
        """Whether the process has already ended (it stops reading when it fails early)."""
        return self.proc.poll() is not None

    def feed(self, chunks: Iterable[bytes | memoryview]) -> tuple[int, bytes, bytes]:
        """Write ``chunks``, close the input, wait; exit code, stdout, stderr.

        Each chunk is written before the next is asked for, so a producer may
        reuse the buffer behind a chunk once it hands out a later one.

        If ``chunks`` raises, the process is killed and the error re-raised.
        A process that stops reading early does not stop the iteration, so
        the caller's checks (digests, padding) still run to the end.
        """
        broken = False
        try:
            for chunk in chunks:
                if broken:
                    continue  # keep consuming so the caller's checks still run
                try:
                    self._input.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    broken = True
        except BaseException:
            self.kill()
            raise
        return self.finish()

    def finish(self) -> tuple[int, bytes, bytes]:
        """Close the input (end of stream), wait; exit code, stdout, stderr."""
        with contextlib.suppress(OSError):
            self._input.shutdown(socket.SHUT_WR)
        self._input.close()
        code = self.proc.wait()
        for t in self._readers:
            t.join(timeout=10)
        return code, self._out.get("stdout", b""), self._out.get("stderr", b"")

    def kill(self) -> None:
        """Stop the process before it has read everything (what it read is discarded)."""
        self.proc.kill()
        self._input.close()
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=10)


class PendingLoad:
    """A started ``docker load`` waiting for its archive (see :meth:`DockerCli.start_load`)."""

    def __init__(self, process: StdinProcess) -> None:
        self._process = process

    def check_running(self) -> None:
        """Raise what the CLI reported if it has already ended (e.g. the engine is unreachable)."""
        if self._process.exited():
            code, stdout, stderr = self._process.finish()
            raise _load_error(code, stdout, stderr)

    def load(self, chunks: Iterable[bytes | memoryview]) -> list[str]:
        """Stream ``chunks`` into the CLI; what it loaded.  If ``chunks`` raises, it is killed."""
        code, stdout, stderr = self._process.feed(chunks)
        if code != 0:
            raise _load_error(code, stdout, stderr)
        loaded = []
        for line in stdout.decode("utf-8", "replace").splitlines():
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if line.startswith(prefix):
                    loaded.append(line[len(prefix) :].strip())
        log.info("docker load: %s", ", ".join(loaded) or "nothing reported")
        return loaded

    def cancel(self) -> None:
        """Kill the CLI; the engine discards the request, so nothing is loaded."""
        self._process.kill()


def _load_error(code: int, stdout: bytes, stderr: bytes) -> ImageLoadError:
    detail = _first_line(stderr) or _first_line(stdout) or f"exit status {code}"
    if _unreachable(detail):
        return DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
    if code == 0:
        return ImageLoadError("`docker load` ended before it was given the archive")
    return NotADockerArchiveError(f"`docker load` rejected the decrypted archive: {detail}")


def _drain(stream: IO[bytes] | None, out: dict[str, bytes], name: str) -> None:
    if stream is None:
        return
    data = stream.read()
    out[name] = data
    stream.close()
