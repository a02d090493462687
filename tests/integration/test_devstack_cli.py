"""`loader dev-stack` as a user runs it: a subprocess, an env file to source, SIGINT to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from loader_cli_support import docker, run_loader

from azaion_loader.server.devstack import SAMPLE_IMAGE, SAMPLE_IMAGE_LINE

READY_TIMEOUT = 120


class DevStack:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.env_file = tmp_path / "loader.env"
        self.log = (tmp_path / "dev-stack.err").open("w+")
        self.out = (tmp_path / "dev-stack.out").open("w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "azaion_loader",
                "dev-stack",
                "--api-port",
                "0",
                "--s3-port",
                "0",
                "--env-file",
                str(self.env_file),
                *extra,
            ],
            stdout=self.out,
            stderr=self.log,
            env=env,
        )

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def wait_ready(self) -> dict[str, str]:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.env_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"dev-stack exited {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"dev-stack not ready after {READY_TIMEOUT}s:\n{self.stderr()}")
            time.sleep(0.2)
        return sourced(self.env_file)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        self.out.close()


def sourced(env_file: Path) -> dict[str, str]:
    """The LOADER_* variables a shell has after `source env_file`."""
    script = f"set -e; source {env_file}; env -0"
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, check=True, env={"PATH": os.environ["PATH"]}
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("LOADER_")}


def port_is_free(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname or "", parts.port or 0)) != 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    running = DevStack(tmp_path, "--no-archive")
    try:
        yield running
    finally:
        running.close()


def test_dev_stack_serves_the_sample_until_sigint(stack: DevStack, tmp_path: Path) -> None:
    settings = stack.wait_ready()
    assert set(settings) == {
        "LOADER_API_URL",
        "LOADER_EMAIL",
        "LOADER_PASSWORD",
        "LOADER_DEV_S3_URL",
    }
    assert oct(stack.env_file.stat().st_mode & 0o777) == "0o600"
    api, s3 = settings["LOADER_API_URL"], settings["LOADER_DEV_S3_URL"]
    assert urlsplit(api).hostname == urlsplit(s3).hostname == "127.0.0.1"
    # The same lines went to stdout.
    assert f"export LOADER_API_URL={api}" in stack.stdout()

    assert requests.get(f"{api}/healthz", timeout=10).json() == {"ok": True}
    login = requests.post(
        f"{api}/login",
        json={"email": settings["LOADER_EMAIL"], "password": settings["LOADER_PASSWORD"]},
        timeout=10,
    )
    assert login.status_code == 200
    listing = requests.get(
        f"{api}/resources",
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        timeout=10,
    ).json()["resources"]
    assert [(e["folder"], e["name"], e["latest"]) for e in listing] == [("demo", "sample.bin", "1")]
    assert "skipped: --no-archive" in stack.stdout()

    # The README flow: another shell sources the file and fetches the sample.
    out = tmp_path / "sample.bin"
    fetched = subprocess.run(
        [
            "bash",
            "-c",
            f"source {stack.env_file} && exec {sys.executable} -m azaion_loader "
            f"fetch --folder demo --name sample.bin --out {out} --json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert out.read_bytes().startswith(b"azaion-loader dev-stack sample resource, line 00000\n")

    # The password is printed for the user to source, but never logged.
    assert settings["LOADER_PASSWORD"] not in stack.stderr()

    assert stack.interrupt() == 0
    assert port_is_free(api) and port_is_free(s3)
    assert not stack.env_file.exists()
    assert "dev-stack: stopped" in stack.stderr()


def test_dev_stack_stops_on_sigterm_too(stack: DevStack) -> None:
    settings = stack.wait_ready()
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(timeout=30) == 0
    assert port_is_free(settings["LOADER_API_URL"])
    assert port_is_free(settings["LOADER_DEV_S3_URL"])


def test_busy_port_is_a_one_line_config_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "azaion_loader",
                "dev-stack",
                "--api-port",
                str(port),
                "--s3-port",
                "0",
                "--no-archive",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("loader: error:")]
    assert len(errors) == 1
    assert f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in done.stderr


def test_dev_stack_publishes_the_sample_archive_with_docker(
    docker_engine: str, tmp_path: Path
) -> None:
    running = DevStack(tmp_path)
    try:
        settings = running.wait_ready()
        token = requests.post(
            f"{settings['LOADER_API_URL']}/login",
            json={"email": settings["LOADER_EMAIL"], "password": settings["LOADER_PASSWORD"]},
            timeout=10,
        ).json()["token"]
        archives = requests.get(
            f"{settings['LOADER_API_URL']}/archives",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["archives"]
        assert [(a["folder"], a["name"]) for a in archives] == [("demo", "hello-image")]
        # The encrypted archive is on the CDN, under the key the protocol names.
        head = requests.head(f"{settings['LOADER_DEV_S3_URL']}/demo/hello-image.enc", timeout=10)
        assert head.status_code in (200, 403), head.status_code
        # The sample image is a real one: unlocked, it runs and prints its line.
        env = {**os.environ, **settings}
        code, result, _, err = run_loader(
            env, "unlock", "--archive-folder", "demo", "--archive-name", "hello-image"
        )
        assert code == 0, err
        assert result["images"] == [SAMPLE_IMAGE]
        ran = docker("run", "--rm", SAMPLE_IMAGE)
        docker("rmi", "-f", SAMPLE_IMAGE)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.decode() == SAMPLE_IMAGE_LINE + "\n"
        assert running.interrupt() == 0
    finally:
        running.close()


def test_wildcard_host_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    done = subprocess.run(
        [sys.executable, "-m", "azaion_loader", "dev-stack", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 3
    assert "wildcard" in done.stderr and "Traceback" not in done.stderr
