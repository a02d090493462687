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

import logging
import os
import subprocess
from collections.abc import Iterable, Sequence

from azaion_loader.cli_process import Popen, Runner, StdinProcess, first_line, start_fed
from azaion_loader.engine import DEFAULT_SOCKETS, DOCKER
from azaion_loader.errors import (
    DockerUnavailableError,
    ImageLoadError,
    NotADockerArchiveError,
)

__all__ = ["DockerCli", "DockerPendingLoad", "Runner"]

log = logging.getLogger(__name__)

_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "permission denied while trying to connect",
    "connect: no such file or directory",
    "connect: connection refused",
)


def _unreachable(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _UNREACHABLE)


class DockerCli:
    """A thin wrapper over ``docker version``, ``load``, ``import``, ``save`` and ``image``.

    ``socket``: the engine's socket path; ``None`` leaves the CLI to its own
    default (``DOCKER_HOST``, else ``/var/run/docker.sock``).
    """

    name = DOCKER

    def __init__(
        self,
        docker: str = "docker",
        *,
        socket: str | None = None,
        runner: Runner = subprocess.run,
        popen: Popen = subprocess.Popen,
        timeout: float = 60.0,
    ) -> None:
        self.docker = docker
        self.socket = socket
        self._run = runner
        self._popen = popen
        self.timeout = timeout

    @property
    def address(self) -> str:
        """The engine's address, as the CLI will use it."""
        if self.socket:
            return f"unix://{self.socket}"
        return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKETS[DOCKER]}"

    def _argv(self, *args: str) -> list[str]:
        host = ["--host", f"unix://{self.socket}"] if self.socket else []
        return [self.docker, *host, *args]

    def _call(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        timeout = timeout or self.timeout
        try:
            return self._run(
                self._argv(*args),
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
            detail = first_line(proc.stderr) or f"exit status {proc.returncode}"
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
                f"the Docker daemon does not answer: {first_line(proc.stderr)}"
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
                f"the Docker daemon does not answer: {first_line(proc.stderr)}"
            )
        return [ref for ref in wanted if not self.image_exists(ref)]

    def _start(self, args: Sequence[str]) -> StdinProcess:
        try:
            return start_fed(self._argv(*args), self._popen)
        except FileNotFoundError as exc:
            raise DockerUnavailableError(
                f"the docker CLI ({self.docker}) is not installed here"
            ) from exc

    def start_load(self) -> DockerPendingLoad:
        """Start ``docker load`` with nothing on its standard input yet.

        The CLI starts and connects to the engine while the caller checks the
        archive; :meth:`DockerPendingLoad.load` then streams it, or
        :meth:`DockerPendingLoad.cancel` kills the CLI before it got a byte.
        """
        return DockerPendingLoad(self._start(["load"]))

    def load(self, chunks: Iterable[bytes | memoryview]) -> list[str]:
        """Stream ``chunks`` (a ``docker save`` tar) into ``docker load``; returns what it loaded.

        If ``chunks`` raises, ``docker load`` is stopped and the error re-raised.
        """
        return self.start_load().load(chunks)

    def import_image(
        self, ref: str, chunks: Iterable[bytes | memoryview], *, changes: Sequence[str] = ()
    ) -> str:
        """``docker import - REF`` of a root filesystem tar streamed as ``chunks``; the image id.

        ``changes``: Dockerfile instructions for the image's config (``CMD [...]``).
        """
        options = [arg for change in changes for arg in ("--change", change)]
        code, stdout, stderr = self._start(["import", *options, "-", ref]).feed(chunks)
        if code != 0:
            raise self._failed("import", stderr, code)
        image_id = first_line(stdout)
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
        detail = first_line(stderr) or f"exit status {code}"
        if _unreachable(detail):
            return DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
        return ImageLoadError(f"`docker {command}` failed: {detail}")


class DockerPendingLoad:
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
    detail = first_line(stderr) or first_line(stdout) or f"exit status {code}"
    if _unreachable(detail):
        return DockerUnavailableError(f"the Docker daemon does not answer: {detail}")
    if code == 0:
        return ImageLoadError("`docker load` ended before it was given the archive")
    return NotADockerArchiveError(f"`docker load` rejected the decrypted archive: {detail}")
