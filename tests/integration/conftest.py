"""Real servers on loopback for the integration tests.

Fixtures:

- ``api_server``: the reference API server (``azaion_loader.server``) on a
  threaded werkzeug server at 127.0.0.1:<free port>, fresh data directory per
  test.  The handle creates users, sets CDN settings, injects faults (``fail_next``:
  the next N requests get a 5xx, then the real server answers; ``delay_next``;
  ``rotate_secret_on``: the server rotates its JWT key when a matching request
  arrives, so the token that request carries is really refused with 401/11),
  records every request (``requests``), and can ``stop``/``start`` the server
  on the same port for "API down" tests.
- ``s3_server``: moto's S3 server (in-process, threaded) at 127.0.0.1:<free port>,
  state reset per test; ``stop``/``start`` for "S3 down" tests.
- ``dev_env``: the ``LOADER_*`` environment of an uploader bound to those two
  servers: CDN settings installed, buckets ``models`` and ``images`` created,
  fixed fingerprint inputs, a fresh cache dir, short retries.  Its ``password``
  is a canary value worth grepping for in outputs.
- ``docker_engine``: a Docker engine that answers (``scripts/dockerd start`` if
  ``docker info`` fails); skips with the reason when none can be had.
- ``image_archive``: a ``docker save`` archive of a tiny image made with
  ``docker import`` (unique per test), removed from the engine afterwards.
- ``fetched_archive``: that archive published and fetched into a work directory.
- ``containerd_engine``: a containerd of the test session's own (Debian's
  ``containerd``, its own root, state and socket, the CRI plugin off), for
  ``ctr`` loads into namespace ``k8s.io``; stopped at the end of the session.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from loader_cli_support import docker, published_and_fetched, rootfs_tar
from private_containerd import ContainerdStartError, PrivateContainerd, missing_tools

from azaion_loader.segmented import SEGMENT_SIZE
from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user

ROOT = Path(__file__).resolve().parents[2]


ENGINE_FIXTURES = frozenset({"docker_engine", "containerd_engine"})
"""Fixtures that touch the host's Docker engine or a containerd of the session."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the ``integration`` marker,
    ``engine`` when it uses a container engine and ``server`` when it tests the
    reference API server itself (``test_server_*``).  scripts/test runs the unit,
    engine and server tests in one lane and the rest beside them (about equal
    halves), so no two processes share the engine's images."""
    here = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if here in path.parents:
            item.add_marker(pytest.mark.integration)
            if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.engine)
            if path.name.startswith("test_server_"):
                item.add_marker(pytest.mark.server)


# -- fault injection -------------------------------------------------------------


@dataclass
class _Fault:
    kind: str  # "status", "delay" or "rotate"
    remaining: int
    path_prefix: str
    method: str | None
    status: int = 500
    seconds: float = 0.0


class FaultInjector:
    """WSGI middleware in front of the real application: records requests, injects faults.

    The application itself is never changed; a fault answers instead of it
    (``status``), delays it (``delay``) or rotates its JWT key first (``rotate``).
    """

    def __init__(self, app: Any, on_rotate: Callable[[], None]) -> None:
        self.app = app
        self._on_rotate = on_rotate
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str]] = []

    def add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, method: str, path: str) -> list[_Fault]:
        taken = []
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.remaining <= 0 or not path.startswith(fault.path_prefix):
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                fault.remaining -= 1
                taken.append(fault)
            self._faults = [f for f in self._faults if f.remaining > 0]
        return taken

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        for fault in self._take(method, path):
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "rotate":
                self._on_rotate()
            elif fault.kind == "status":
                body = json.dumps({"ErrorCode": 50, "Message": "injected failure"}).encode()
                start_response(
                    f"{fault.status} Injected",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


# -- the API server --------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str = field(repr=False)
    role: str


class ApiServer:
    """A running reference API server and an admin handle on its state."""

    def __init__(self, data_dir: Path, token_ttl: int = 3600) -> None:
        self.data_dir = data_dir
        self.app = create_app(
            ServerConfig(data_dir=data_dir, jwt_secret=secrets.token_bytes(32), token_ttl=token_ttl)
        )
        self.state = server_state(self.app)
        self.faults = FaultInjector(self.app, self.state.tokens.rotate)
        self._thread: ServerThread | None = ServerThread(self.faults, "127.0.0.1", 0).start()
        self.port = self._thread.port
        self.url = self._thread.url

    # admin
    def create_user(
        self,
        email: str | None = None,
        password: str | None = None,
        *,
        role: str = "user",
        max_devices: int = 1,
    ) -> Credentials:
        """Register a user (random email/password unless given)."""
        email = email or f"user-{secrets.token_hex(4)}@example.test"
        password = password or f"pw-{secrets.token_urlsafe(12)}"
        register_user(
            self.state.store, email=email, password=password, role=role, max_devices=max_devices
        )
        return Credentials(email.lower(), password, role)

    def set_cdn_config(self, config: dict[str, Any]) -> None:
        self.state.store.set_cdn_config(config)

    def reset_devices(self, email: str) -> None:
        self.state.store.reset_devices(email)

    def issue_token(self, email: str, *, age: float = 0.0) -> str:
        """A token signed by this server for ``email``, issued ``age`` seconds ago."""
        user = self.state.store.user_by_email(email)
        assert user is not None, email
        return self.state.tokens.issue(user, now=time.time() - age)

    def rotate_jwt_secret(self) -> None:
        """Every token issued so far is refused from now on (401, ErrorCode 11)."""
        self.state.tokens.rotate()

    # faults
    def fail_next(
        self, n: int, status: int = 500, *, path_prefix: str = "/", method: str | None = None
    ) -> None:
        """The next ``n`` matching requests get ``status`` (error body); then the real server."""
        self.faults.add(_Fault("status", n, path_prefix, method, status=status))

    def delay_next(self, n: int, seconds: float, *, path_prefix: str = "/") -> None:
        """The next ``n`` matching requests are held ``seconds`` before the server answers."""
        self.faults.add(_Fault("delay", n, path_prefix, None, seconds=seconds))

    def rotate_secret_on(
        self, path_prefix: str, *, times: int = 1, method: str | None = None
    ) -> None:
        """Rotate the JWT key when the next matching request arrives (its token is then stale)."""
        self.faults.add(_Fault("rotate", times, path_prefix, method))

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every ``(method, path)`` the server received, in order."""
        return list(self.faults.requests)

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))

    # lifecycle
    def stop(self) -> None:
        """Stop serving and free the port: clients get "connection refused"."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def start(self) -> None:
        """Serve again on the same port, with the same state."""
        if self._thread is None:
            self._thread = ServerThread(self.faults, "127.0.0.1", self.port).start()


@pytest.fixture
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The reference API server on 127.0.0.1:<free port>, fresh state."""
    server = ApiServer(tmp_path_factory.mktemp("api-data"))
    try:
        yield server
    finally:
        server.stop()


# -- the S3 server ---------------------------------------------------------------


class S3Server:
    """moto's S3 server, in-process and threaded."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )

        self._app = DomainDispatcherApplication(create_backend_app)
        self._thread: ServerThread | None = self._serve(0)
        self.port = self._thread.port
        self.url = self._thread.url
        # moto's backends are process-global: start every test from an empty S3.
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def _serve(self, port: int) -> ServerThread:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler

        return ServerThread(
            self._app, "127.0.0.1", port, name="s3", request_handler=MotoRequestHandler
        ).start()

    def client(self, access_key: str = "test-read", secret_key: str = "test-read-secret") -> Any:
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = self._serve(self.port)


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1:<free port>, empty."""
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


# -- the environment of a loader user ---------------------------------------------

READ_KEYS = {"access_key_id": "test-read", "secret_access_key": "test-read-secret"}
WRITE_KEYS = {"access_key_id": "test-write", "secret_access_key": "test-write-secret"}
TEST_MACHINE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TEST_ARCH = "amd64"


class DevEnv(dict[str, str]):
    """``LOADER_*`` settings (a dict) plus the servers and credentials behind them."""

    api: ApiServer
    s3: S3Server
    credentials: Credentials

    @property
    def password(self) -> str:
        return self.credentials.password

    def merged(self, **extra: str) -> dict[str, str]:
        """``os.environ`` without any outer ``LOADER_*``, plus these settings and ``extra``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
        return {**base, **self, **extra}


@pytest.fixture
def dev_env(api_server: ApiServer, s3_server: S3Server, tmp_path: Path) -> DevEnv:
    """An uploader's LOADER_* env for ``api_server`` and ``s3_server`` (buckets models, images)."""
    credentials = api_server.create_user(role="uploader", max_devices=2)
    api_server.set_cdn_config(
        {
            "endpoint_url": s3_server.url,
            "region": "us-east-1",
            "read": READ_KEYS,
            "write": WRITE_KEYS,
        }
    )
    for bucket in ("models", "images"):
        s3_server.create_bucket(bucket)
    cache = tmp_path / "cache"
    cache.mkdir()
    env = DevEnv(
        LOADER_API_URL=api_server.url,
        LOADER_EMAIL=credentials.email,
        LOADER_PASSWORD=credentials.password,
        LOADER_CACHE_DIR=str(cache),
        LOADER_HW_MACHINE_ID=TEST_MACHINE_ID,
        LOADER_HW_ARCH=TEST_ARCH,
        LOADER_TIMEOUT="10",
        LOADER_RETRIES="3",
    )
    env.api, env.s3, env.credentials = api_server, s3_server, credentials
    return env


# -- Docker ----------------------------------------------------------------------


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers; returns the ``docker`` CLI path."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed (run ./scripts/install)")
    if not _docker_answers():
        script = ROOT / "scripts" / "dockerd"
        if not script.exists():
            pytest.skip("no Docker engine answers and scripts/dockerd does not exist yet")
        started = subprocess.run(
            [str(script), "start"], capture_output=True, text=True, timeout=180, check=False
        )
        if started.returncode != 0 or not _docker_answers():
            reason = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["?"]
            pytest.skip(f"no Docker engine: scripts/dockerd start failed: {reason[0]}")
    docker = shutil.which("docker")
    assert docker is not None
    return docker


def _saved_image(tmp_path: Path, prefix: str, rootfs: bytes) -> Iterator[tuple[str, Path]]:
    """A `docker save` archive of ``rootfs`` imported as a fresh image, which is removed
    from the engine before the test (and again afterwards): (image ref, archive)."""
    ref = f"azaion-test/{prefix}-{secrets.token_hex(4)}:1.0"
    made = docker("import", "-", ref, input=rootfs)
    assert made.returncode == 0, made.stderr
    archive = tmp_path / "image.tar"
    saved = docker("save", "-o", str(archive), ref)
    assert saved.returncode == 0, saved.stderr
    docker("rmi", "-f", ref)
    try:
        yield ref, archive
    finally:
        docker("rmi", "-f", ref)


@pytest.fixture
def image_archive(docker_engine: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `docker save` archive of a tiny imported image, removed from the engine afterwards."""
    yield from _saved_image(tmp_path, "unlock", rootfs_tar())


@pytest.fixture
def big_image_archive(docker_engine: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `docker save` archive of several format-2 segments (a 3 MiB layer)."""
    yield from _saved_image(tmp_path, "unlock-big", rootfs_tar(3 * SEGMENT_SIZE))


@pytest.fixture(params=[1, 2], ids=["format1", "format2"])
def archive_format(request: pytest.FixtureRequest) -> int:
    """The archive format to publish with (docs/protocol.md §6): each test runs with both."""
    return int(request.param)


@pytest.fixture
def fetched_archive(
    dev_env: DevEnv, image_archive: tuple[str, Path], tmp_path: Path, archive_format: int
) -> tuple[str, Path]:
    """``image_archive`` published as images/app (in ``archive_format``) and fetched:
    (image ref, work directory)."""
    ref, archive = image_archive
    work = published_and_fetched(dev_env, archive, tmp_path / "work", f"--format={archive_format}")
    return ref, work


# -- containerd ------------------------------------------------------------------


@pytest.fixture(scope="session")
def containerd_engine() -> Iterator[PrivateContainerd]:
    """A containerd of this session's own; skips with the reason when none can be had."""
    why_not = missing_tools()
    if why_not:
        pytest.skip(why_not)
    try:
        engine = PrivateContainerd().start()
    except ContainerdStartError as exc:
        pytest.fail(f"the test containerd did not start: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


# -- a TCP proxy that breaks streams ------------------------------------------------


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[int], Any]]:
    """``make(upstream_port)``: a loopback :class:`fault_proxy.FaultProxy`, closed after.

    The proxy is ``hack/fault_proxy.py`` (the e2e cluster-fault tests use it too).
    """
    from fault_proxy import FaultProxy

    made: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port)
        made.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()
