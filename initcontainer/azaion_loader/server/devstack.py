"""``loader dev-stack``: a local resource API and S3 endpoint with demo data, until interrupted.

It starts, on ``--host`` (127.0.0.1 by default):

- the reference API server (``azaion_loader.server``) on ``--api-port``;
- moto's S3 server on ``--s3-port``.  moto accepts any key pair and enforces no
  policy, so the read-only and write key pairs it hands out are separate only
  in name here; a real CDN enforces them;

then registers a demo user (role ``uploader``, generated password), installs the
CDN settings, creates the bucket ``demo``, and publishes with the real CLI
(``python -m azaion_loader upload`` / ``upload-archive``, as a publisher would):

- the resource ``demo/sample.bin`` (version 1);
- the image archive ``demo/hello-image`` (version 1, image ``azaion-demo/hello:1.0``),
  built with ``docker import`` of a root filesystem holding Debian's static
  busybox (``busybox-static``; 2 MB) and ``docker save``, when a Docker engine
  answers; otherwise it is skipped and the reason printed.  The image runs:
  its command prints :data:`SAMPLE_IMAGE_LINE`.

Then it prints the settings as shell ``export`` lines (and with ``--env-file``
writes them there, mode 0600, with ``LOADER_DEV_S3_URL``) and serves until
SIGINT or SIGTERM.  The env file appears only once everything is published, so
its presence means "ready".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azaion_loader.atomic_write import publish_bytes
from azaion_loader.docker_cli import DockerCli
from azaion_loader.errors import ConfigError, LoaderError
from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.accounts import register_user
from azaion_loader.server.serving import StopSignals

__all__ = [
    "EPILOG",
    "SAMPLE_ARCHIVE",
    "SAMPLE_FOLDER",
    "SAMPLE_IMAGE",
    "SAMPLE_IMAGE_LINE",
    "SAMPLE_RESOURCE",
    "add_arguments",
    "busybox_rootfs",
    "run",
]

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@example.com"
SAMPLE_FOLDER = "demo"
SAMPLE_RESOURCE = "sample.bin"
SAMPLE_ARCHIVE = "hello-image"
SAMPLE_IMAGE = "azaion-demo/hello:1.0"
SAMPLE_IMAGE_LINE = "hello from the azaion-loader demo image"
"""What a container of :data:`SAMPLE_IMAGE` prints."""
BUSYBOX = Path("/bin/busybox")
SAMPLE_VERSION = "1"
_PUBLISH_TIMEOUT = 300

EPILOG = f"""\
examples:
  loader dev-stack --env-file /tmp/loader.env      # terminal 1, runs until Ctrl-C
  source /tmp/loader.env                           # terminal 2
  loader fetch --folder {SAMPLE_FOLDER} --name {SAMPLE_RESOURCE} --out ./sample.bin
  loader unlock --archive-folder {SAMPLE_FOLDER} --archive-name {SAMPLE_ARCHIVE}

The S3 endpoint is moto's server: it accepts any key pair, so the read-only and
write pairs are not enforced there.  Use --host with an address of the project's
own bridge to let pods reach the stack.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``loader dev-stack`` to ``parser``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address both servers bind (default %(default)s)"
    )
    parser.add_argument(
        "--api-port", type=int, default=8080, help="API port (default %(default)s; 0: any free)"
    )
    parser.add_argument(
        "--s3-port", type=int, default=9000, help="S3 port (default %(default)s; 0: any free)"
    )
    parser.add_argument(
        "--env-file", type=Path, help="also write the export lines here (mode 0600)"
    )
    parser.add_argument(
        "--max-devices",
        type=int,
        default=10,
        help="devices the demo user may bind (default %(default)s)",
    )
    parser.add_argument(
        "--no-archive", action="store_true", help="do not build and publish the sample archive"
    )


@dataclass
class _Stack:
    api: ServerThread | None = None
    s3: ServerThread | None = None

    def stop(self) -> None:
        for server in (self.api, self.s3):
            if server is not None:
                server.stop()


def _moto_app() -> Any:
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
    except ImportError as exc:
        raise ConfigError(
            "moto's S3 server is not installed",
            hint="pip install 'azaion-loader[server]'",
        ) from exc
    return DomainDispatcherApplication(create_backend_app)


def _listen(app: Any, host: str, port: int, name: str, **kw: Any) -> ServerThread:
    try:
        return ServerThread(app, host, port, name=name, **kw).start()
    except OSError as exc:
        raise ConfigError(
            f"dev-stack: cannot listen on {host}:{port} for the {name} server: {exc.strerror}",
            hint=f"pick another --{name}-port (0: any free port) or stop what uses it",
        ) from exc


def _s3_client(endpoint: str, keys: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys["access_key_id"],
        aws_secret_access_key=keys["secret_access_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def _sample_bytes() -> bytes:
    lines = [f"azaion-loader dev-stack sample resource, line {i:05d}\n" for i in range(4096)]
    return "".join(lines).encode()


def _run_cli(command: str, argv: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run ``python -m azaion_loader ARGV --json``; the result line, or LoaderError."""
    cmd = [sys.executable, "-m", "azaion_loader", command, *argv, "--json"]
    log.info("publishing %s: loader %s %s", what, command, " ".join(argv))
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=_PUBLISH_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoaderError(f"dev-stack: publishing {what} took over {_PUBLISH_TIMEOUT}s") from exc
    result: dict[str, Any] = {}
    for line in reversed(done.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                result = parsed
                break
    if done.returncode != 0:
        reason = result.get("message") or next(
            (ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output"
        )
        raise LoaderError(
            f"dev-stack: publishing {what} failed (exit {done.returncode}): {reason}",
            hint="run the same `loader` command by hand with the printed settings to see more",
        )
    return result


def _docker_answers() -> str | None:
    """None if a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (timeout)"
    if probe.returncode != 0:
        line = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"the Docker engine does not answer: {line}"
    return None


def _busybox_problem() -> str | None:
    """Why the host's busybox cannot be the demo image's only program, or ``None``."""
    try:
        head = BUSYBOX.read_bytes()[:8192]
    except OSError as exc:
        return f"{BUSYBOX}: {exc.strerror} (install Debian's busybox-static)"
    if b"ld-linux" in head:  # an ELF interpreter: it needs a libc the image lacks
        return f"{BUSYBOX} is not statically linked (install Debian's busybox-static)"
    return None


def busybox_rootfs() -> bytes:
    """A root filesystem tar: ``/bin/busybox`` and ``/bin/sh`` linked to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = BUSYBOX.read_bytes()
        for name, kind in (("bin", tarfile.DIRTYPE), ("tmp", tarfile.DIRTYPE)):
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode = kind, 0o755 if name == "bin" else 0o1777
            tar.addfile(folder)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buffer.getvalue()


def _build_sample_archive(workdir: Path) -> Path:
    """``docker import`` the busybox rootfs as SAMPLE_IMAGE, ``docker save`` it, remove it."""
    archive = workdir / "hello-image.tar"
    docker = DockerCli(timeout=120)
    command = json.dumps(["/bin/busybox", "echo", SAMPLE_IMAGE_LINE])
    docker.import_image(SAMPLE_IMAGE, [busybox_rootfs()], changes=[f"CMD {command}"])
    try:
        docker.save_image([SAMPLE_IMAGE], archive)
    finally:
        # Removed so that `loader unlock` really has to load it.
        docker.remove_image(SAMPLE_IMAGE)
    return archive


def _export_lines(settings: dict[str, str], notes: list[str]) -> str:
    lines = ["# azaion-loader dev-stack settings: `source` this file"]
    lines += [f"# {note}" for note in notes]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """The settings (a password among them), atomically and readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    publish_bytes(path, text.encode("utf-8"), mode=0o600)


@contextlib.contextmanager
def _temporary_dir() -> Iterator[Path]:
    """The stack's state: temporary, like moto's in-memory S3 it goes with the process."""
    temp = Path(tempfile.mkdtemp(prefix="azaion-dev-stack-"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _say(message: str) -> None:
    print(f"dev-stack: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Start the stack, publish the samples, print the settings, serve until a signal."""
    _check_args(args)
    stack = _Stack()
    with StopSignals() as stop, _temporary_dir() as data_dir:
        env_written = False
        try:
            settings, s3_url = _start(stack, args, data_dir)
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
            child_env.update(settings)
            try:
                notes = _publish_samples(
                    data_dir, child_env, skip_archive=args.no_archive, stop=stop
                )
            except LoaderError:
                if not stop.stopped:
                    raise
                _say("interrupted while publishing the samples")
                return 130

            settings["LOADER_DEV_S3_URL"] = s3_url
            env_written = _announce(_export_lines(settings, notes), args.env_file)
            _say("ready; Ctrl-C stops")
            if not stop.stopped:
                stop.wait()
            _say("stopping")
        finally:
            stack.stop()
            if env_written:
                # The demo credentials die with the stack.
                with contextlib.suppress(FileNotFoundError):
                    args.env_file.unlink()
    _say("stopped")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.max_devices < 1:
        raise ConfigError("--max-devices must be at least 1")
    if args.host in ("0.0.0.0", "::", ""):
        raise ConfigError(
            f"dev-stack: --host {args.host!r} is a wildcard, but the URLs handed to clients "
            "carry the bound address",
            hint="bind one concrete address, e.g. 127.0.0.1 or the cluster bridge's gateway",
        )


def _start(stack: _Stack, args: argparse.Namespace, data_dir: Path) -> tuple[dict[str, str], str]:
    """Start moto's S3 and the API in ``stack``, register the demo uploader and the CDN
    settings, make the sample bucket; returns the demo's ``LOADER_*`` settings and S3's URL."""
    from moto.moto_server.threaded_moto_server import MotoRequestHandler

    stack.s3 = _listen(
        _moto_app(), args.host, args.s3_port, "s3", request_handler=MotoRequestHandler
    )
    app = create_app(ServerConfig(data_dir=data_dir / "api", jwt_secret=os.urandom(32)))
    stack.api = _listen(app, args.host, args.api_port, "api")
    _say(f"API on {stack.api.url}, S3 (moto) on {stack.s3.url}")

    password = secrets.token_urlsafe(18)
    store = server_state(app).store
    register_user(
        store, email=DEMO_EMAIL, password=password, role="uploader", max_devices=args.max_devices
    )
    read = {"access_key_id": "dev-read", "secret_access_key": secrets.token_hex(16)}
    write = {"access_key_id": "dev-write", "secret_access_key": secrets.token_hex(16)}
    store.set_cdn_config(
        {"endpoint_url": stack.s3.url, "region": "us-east-1", "read": read, "write": write}
    )
    _s3_client(stack.s3.url, write).create_bucket(Bucket=SAMPLE_FOLDER)
    settings = {
        "LOADER_API_URL": stack.api.url,
        "LOADER_EMAIL": DEMO_EMAIL,
        "LOADER_PASSWORD": password,
    }
    return settings, stack.s3.url


def _announce(text: str, env_file: Path | None) -> bool:
    """Print the settings, and write them to ``env_file`` if given; whether it was written."""
    sys.stdout.write(text)
    sys.stdout.flush()
    if env_file is None:
        return False
    _write_private(env_file, text)
    _say(f"settings written to {env_file}")
    return True


def _publish_samples(
    data_dir: Path, env: dict[str, str], *, skip_archive: bool, stop: StopSignals
) -> list[str]:
    """Publish the sample resource and archive with the real CLI; notes for the user."""
    samples = data_dir / "samples"
    samples.mkdir(exist_ok=True)
    sample = samples / SAMPLE_RESOURCE
    sample.write_bytes(_sample_bytes())
    common = ["--folder", SAMPLE_FOLDER, "--version", SAMPLE_VERSION]
    result = _run_cli(
        "upload",
        [*common, "--name", SAMPLE_RESOURCE, str(sample)],
        env,
        "the sample resource",
    )
    notes = [
        f"sample resource: loader fetch --folder {SAMPLE_FOLDER} --name {SAMPLE_RESOURCE} "
        f"--out ./{SAMPLE_RESOURCE}   (sha256 {result.get('sha256', '?')})"
    ]
    _say(f"published resource {SAMPLE_FOLDER}/{SAMPLE_RESOURCE} version {SAMPLE_VERSION}")
    if stop.stopped:
        return notes
    why_not = "--no-archive" if skip_archive else (_busybox_problem() or _docker_answers())
    if why_not is not None:
        _say(f"sample image archive skipped: {why_not}")
        notes.append(f"sample image archive skipped: {why_not}")
        return notes
    archive = _build_sample_archive(samples)
    try:
        _run_cli(
            "upload-archive",
            [*common, "--name", SAMPLE_ARCHIVE, str(archive), "--images", SAMPLE_IMAGE],
            env,
            "the sample image archive",
        )
    finally:
        archive.unlink(missing_ok=True)
    _say(f"published archive {SAMPLE_FOLDER}/{SAMPLE_ARCHIVE} (image {SAMPLE_IMAGE})")
    notes.append(
        f"sample archive: loader unlock --archive-folder {SAMPLE_FOLDER} "
        f"--archive-name {SAMPLE_ARCHIVE}   (loads {SAMPLE_IMAGE}, which prints "
        f"{SAMPLE_IMAGE_LINE!r})"
    )
    return notes
