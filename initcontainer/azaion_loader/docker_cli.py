"""The Docker engine, through the ``docker`` CLI (subprocess; the runner is injectable).

Errors, all from :mod:`azaion_loader.errors`:

    ImageLoadError              ``docker load`` failed for another reason
    +-- DockerUnavailableError  no ``docker`` CLI, or the daemon does not answer
    +-- NotADockerArchiveError  ``docker load`` rejected the stream
    +-- ImageMissingError       (raised by callers after :meth:`DockerCli.missing_images`)

``load()`` feeds ``docker load`` through its standard input, so the caller can
stream a decryption into it without a plaintext file.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any

from azaion_loader.errors import (
    DockerUnavailableError,
    NotADockerArchiveError,
)

__all__ = ["DockerCli", "Runner"]

log = logging.getLogger(__name__)

Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]
Popen = Callable[..., "subprocess.Popen[bytes]"]

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
    """A thin wrapper over ``docker version``, ``docker load`` and ``docker image inspect``."""

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

    def _call(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return self._run(
                [self.docker, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise DockerUnavailableError(
                f"the docker CLI ({self.docker}) is not installed here"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerUnavailableError(
                f"`docker {args[0]}` did not answer within {self.timeout:.0f} s"
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
        """The references among ``refs`` that the engine does not have."""
        return [ref for ref in refs if not self.image_exists(ref)]

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        """Stream ``chunks`` (a ``docker save`` tar) into ``docker load``; returns what it loaded.

        If ``chunks`` raises, ``docker load`` is stopped and the error re-raised.
        """
        try:
            proc = self._popen(
                [self.docker, "load"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise DockerUnavailableError(
                f"the docker CLI ({self.docker}) is not installed here"
            ) from exc
        out: dict[str, bytes] = {}
        readers = [
            threading.Thread(target=_drain, args=(proc.stdout, out, "stdout"), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, out, "stderr"), daemon=True),
        ]
        for t in readers:
            t.start()
        stdin: IO[bytes] | Any = proc.stdin
        broken = False
        try:
            for chunk in chunks:
                if broken:
                    continue  # keep consuming so the caller's checks still run
                try:
                    stdin.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    broken = True
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                stdin.close()
            except OSError:
                pass
        code = proc.wait()
        for t in readers:
            t.join(timeout=10)
        stdout, stderr = out.get("stdout", b""), out.get("stderr", b"")
        if code != 0:
            detail = _first_line(stderr) or _first_line(stdout) or f"exit status {code}"
            if _unreachable(detail):
                raise DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
            raise NotADockerArchiveError(f"`docker load` rejected the decrypted archive: {detail}")
        loaded = []
        for line in stdout.decode("utf-8", "replace").splitlines():
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if line.startswith(prefix):
                    loaded.append(line[len(prefix) :].strip())
        log.info("docker load: %s", ", ".join(loaded) or "nothing reported")
        return loaded


def _drain(stream: IO[bytes] | None, out: dict[str, bytes], name: str) -> None:
    if stream is None:
        return
    data = stream.read()
    out[name] = data
    stream.close()
