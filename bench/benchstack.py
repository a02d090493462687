"""What the toolkit benchmarks share: moto's S3 server and the API server on loopback, timing.

`Stack` starts moto's S3 server (`moto_server`, its own process, as a CDN
would be) and the reference API server (a thread of the benchmark process) on
127.0.0.1, registers an uploader and the CDN settings, and gives the
``LOADER_*`` environment for child processes.  `timed` runs one command under
``/usr/bin/time -v``: wall time and peak RSS.  Scratch files live under
/var/cache/azaion-loader/bench and are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user

SCRATCH = Path("/var/cache/azaion-loader/bench")
READ = {"access_key_id": "bench-read", "secret_access_key": "bench-read-secret"}
WRITE = {"access_key_id": "bench-write", "secret_access_key": "bench-write-secret"}

RAW_S3_CLIENT = r"""
import os, sys, boto3
from botocore.config import Config
# argv[1] is the endpoint; the keys come from AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY (Stack.raw_env), like any boto3 program's.
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                  response_checksum_validation="when_required", read_timeout=300))
"""
"""The start of a raw baseline script (``python -c``): a plain boto3 client named ``s3``."""
EMAIL = "bench@example.test"
LOADER = [sys.executable, "-m", "azaion_loader"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uptime() -> str:
    """The output of ``uptime`` (the load the figures were measured under)."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def command_line() -> str:
    """How this benchmark was started, for the report."""
    return shlex.join([".venv/bin/python", *sys.argv])


@dataclass(frozen=True)
class Run:
    """One measured process."""

    wall: float
    rss_mib: float
    stdout: str
    cpu: float = 0.0
    """User plus system CPU seconds of the process (independent of the machine's load)."""
    stderr: str = ""


def timed(cmd: list[str], env: dict[str, str], *, stdin: Any = None) -> Run:
    """Wall seconds and peak RSS (MiB) of ``cmd``, which must succeed."""
    start = time.monotonic()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd],
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd[:6])} ... failed: {proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(
        float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    )
    return Run(wall, int(m.group(1)) / 1024 if m else float("nan"), proc.stdout, cpu, proc.stderr)


def summary(runs: list[Run]) -> tuple[float, float]:
    """Median wall time and the highest peak RSS of ``runs``."""
    return statistics.median(r.wall for r in runs), max(r.rss_mib for r in runs)


def median_cpu(runs: list[Run]) -> float:
    """Median CPU seconds (user + system) of ``runs``."""
    return statistics.median(r.cpu for r in runs)


def add_format_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--format`` and ``--compare-format``: the format(s) (of resources or archives)
    the loader ``verb``s."""
    parser.add_argument(
        "--format",
        type=int,
        choices=(1, 2),
        default=2,
        help=f"format to {verb} (default 2, which `loader upload` and `upload-archive` write)",
    )
    parser.add_argument(
        "--compare-format",
        type=int,
        choices=(1, 2),
        help=f"also {verb} in this format, in the same rounds",
    )


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def make_file(path: Path, mib: int) -> None:
    """``mib`` MiB of incompressible data (a random MiB, rotated per MiB)."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[i % 997 :] + chunk[: i % 997])


class Stack:
    """moto's S3 server and the reference API server on 127.0.0.1, with an uploader."""

    def __init__(self) -> None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(dir=SCRATCH))
        self.s3_url = ""
        self.api_url = ""
        self.env: dict[str, str] = {}
        self._moto: subprocess.Popen[bytes] | None = None
        self._api: ServerThread | None = None

    def __enter__(self) -> Stack:
        port = free_port()
        moto = Path(sys.executable).with_name("moto_server")
        self._moto = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.s3_url = f"http://127.0.0.1:{port}"
        app = create_app(
            ServerConfig(data_dir=self.work / "api", jwt_secret=secrets.token_bytes(32))
        )
        self._api = ServerThread(app, "127.0.0.1", 0).start()
        self.api_url = self._api.url
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.1)
        password = secrets.token_urlsafe(16)
        state = server_state(app)
        register_user(state.store, email=EMAIL, password=password, role="uploader", max_devices=2)
        state.store.set_cdn_config(
            {"endpoint_url": self.s3_url, "region": "us-east-1", "read": READ, "write": WRITE}
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOADER_")},
            "LOADER_API_URL": self.api_url,
            "LOADER_EMAIL": EMAIL,
            "LOADER_PASSWORD": password,
            "LOADER_HW_MACHINE_ID": "be" * 16,
            "LOADER_HW_ARCH": "amd64",
            "LOADER_LOG_LEVEL": "WARNING",
            "LOADER_TIMEOUT": "300",
        }
        return self

    def raw_env(self, keys: dict[str, str]) -> dict[str, str]:
        """The environment of a raw baseline script (:data:`RAW_S3_CLIENT`) using ``keys``."""
        return {
            **self.env,
            "AWS_ACCESS_KEY_ID": keys["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": keys["secret_access_key"],
        }

    def s3_client(self, keys: dict[str, str] = WRITE) -> Any:
        """A boto3 client on the S3 server (no checksums, path style, long timeouts)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id=keys["access_key_id"],
            aws_secret_access_key=keys["secret_access_key"],
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                read_timeout=900,
                retries={"max_attempts": 1},
            ),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._api is not None:
            self._api.stop()
        if self._moto is not None:
            self._moto.terminate()
            self._moto.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)
