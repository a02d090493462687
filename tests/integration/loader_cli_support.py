"""Running the `loader` CLI as a child process, the way the Jobs and publishers do.

    code, result, stdout, stderr = run_loader(dev_env.merged(), "fetch", "--folder", ...)

``fetch_model`` and ``upload_model`` run ``loader fetch`` / ``loader upload``
of the tests' resource (folder ``models``, default name ``model.bin``).

``run_loader`` appends ``--json`` (unless ``json=False``), ``--no-progress`` to
the commands that report progress (unless ``progress=True``) and
``--result-file`` when given.  It returns the exit code, the parsed JSON
result line (``None`` if there is none), stdout and stderr, and fails the test
if stderr holds a traceback: expected failures end in one line, never a
traceback.
"""

from __future__ import annotations

import io
import json as jsonlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "PROGRESS_COMMANDS",
    "LoaderRun",
    "docker_save_like",
    "fetch_model",
    "run_loader",
    "upload_model",
]

PROGRESS_COMMANDS = frozenset(
    {"fetch", "upload", "upload-archive", "unlock", "unlock-fetch", "unlock-load"}
)
"""The commands that take ``--no-progress``."""


class LoaderRun(NamedTuple):
    """What one `loader` process did."""

    code: int
    result: dict[str, Any] | None
    stdout: str
    stderr: str


def run_loader(
    env: dict[str, str] | None,
    *args: str,
    timeout: float = 300,
    json: bool = True,
    progress: bool = False,
    result_file: str | None = None,
) -> LoaderRun:
    """Run ``python -m azaion_loader ARGS [--json] [--no-progress] [--result-file F]``."""
    extra = ["--json"] if json else []
    if not progress and args and args[0] in PROGRESS_COMMANDS:
        extra.append("--no-progress")
    if result_file is not None:
        extra += ["--result-file", result_file]
    proc = subprocess.run(
        [sys.executable, "-m", "azaion_loader", *args, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = jsonlib.loads(lines[-1]) if lines else None
    return LoaderRun(proc.returncode, result, proc.stdout, proc.stderr)


def fetch_model(
    env: dict[str, str] | None, out: Any, *extra: str, name: str = "model.bin", **kwargs: Any
) -> LoaderRun:
    """``loader fetch --folder models --name NAME --out OUT EXTRA...``."""
    return run_loader(
        env, "fetch", "--folder", "models", "--name", name, "--out", str(out), *extra, **kwargs
    )


def upload_model(
    env: dict[str, str] | None, path: Any, *extra: str, name: str = "model.bin", **kwargs: Any
) -> LoaderRun:
    """``loader upload --folder models --name NAME PATH EXTRA...``."""
    return run_loader(
        env, "upload", "--folder", "models", "--name", name, str(path), *extra, **kwargs
    )


def rootfs_tar(size: int = 64 * 1024) -> bytes:
    """A root filesystem tar of one random file of ``size`` bytes (a unique layer per call)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save_like(path: Path, tag: str) -> None:
    """A tar with a `docker save` manifest.json (enough to publish; nothing is loaded)."""
    manifest = jsonlib.dumps([{"Config": "c.json", "RepoTags": [tag], "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        for member, data in (("manifest.json", manifest), ("filler", os.urandom(100_000))):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The ``docker`` CLI, output captured."""
    return subprocess.run(["docker", *args], input=input, capture_output=True, timeout=120)


def publish_archive(dev_env: Any, archive: Path, name: str = "app", *extra: str) -> dict[str, Any]:
    """``loader upload-archive`` of ``archive`` as images/NAME; its result (must succeed)."""
    code, result, _, err = run_loader(
        dev_env.merged(),
        "upload-archive",
        "--folder",
        "images",
        "--name",
        name,
        *extra,
        str(archive),
    )
    assert code == 0, err
    assert result is not None
    return result


def unlock_fetch(dev_env: Any, work: Path) -> LoaderRun:
    """``loader unlock-fetch`` of images/app into ``work``: exit code, result, stdout, stderr."""
    return run_loader(
        dev_env.merged(),
        "unlock-fetch",
        "--archive-folder",
        "images",
        "--archive-name",
        "app",
        "--workdir",
        str(work),
    )


def published_and_fetched(dev_env: Any, archive: Path, work: Path, *publish: str) -> Path:
    """``archive`` published as images/app (``publish``: extra upload-archive
    arguments) and fetched into ``work`` with ``loader unlock-fetch``; ``work``."""
    publish_archive(dev_env, archive, "app", *publish)
    code, _, _, err = unlock_fetch(dev_env, work)
    assert code == 0, err
    return work
