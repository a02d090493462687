"""The OpenAPI document and the reference server agree: schemathesis on loopback.

Bounded (a fixed seed, few examples per operation, a time limit) so that it
runs in well under a minute; skipped when schemathesis is not installed (it is
in the `dev` extra).  Settings that the schema cannot state are in
``schemathesis.toml`` beside this file, each with its reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_for_fuzzing import admin_app

from azaion_loader.server import ServerThread

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return found


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The server with an admin and CDN settings; yields its URL and an admin token."""
    app, token = admin_app(tmp_path / "api")
    with ServerThread(app) as server:
        yield server.url, token


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
