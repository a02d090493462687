"""The OpenAPI document and the reference server agree: schemathesis on loopback.

Bounded (a fixed seed, few examples per operation, a time limit) so that it
runs in well under a minute; skipped when schemathesis is not installed (it is
in the `dev` extra).  Settings that the schema cannot state are in
``schemathesis.toml`` beside this file, each with its reason.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return found


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The server with an admin and CDN settings; yields its URL and an admin token."""
    app = create_app(ServerConfig(data_dir=tmp_path / "api", jwt_secret=secrets.token_bytes(32)))
    state = server_state(app)
    admin = register_user(
        state.store,
        email="fuzz-admin@example.test",
        password=secrets.token_urlsafe(16),
        role="admin",
        max_devices=1_000_000,
    )
    pair = {"access_key_id": "AK", "secret_access_key": "SK"}
    state.store.set_cdn_config(
        {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "read": pair, "write": pair}
    )
    with ServerThread(app) as server:
        yield server.url, state.tokens.issue(admin)


def test_schemathesis_finds_no_mismatch(admin_server: tuple[str, str], tmp_path: Path) -> None:
    url, token = admin_server
    proc = subprocess.run(
        [
            _schemathesis(),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.yaml",
            "--header",
            f"Authorization: Bearer {token}",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "8",
            "--max-time",
            "35",
            "--seed",
            "1",
            "--workers",
            "1",
            "--continue-on-failure",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # its cache directory, .schemathesis/
    )
    tail = "\n".join(proc.stdout.splitlines()[-60:])
    assert proc.returncode == 0, tail
