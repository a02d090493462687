"""Login throttling over HTTP, and how the `loader` CLI reports it (429, Retry-After)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from loader_cli_support import run_loader
from test_server_http import assert_error

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user
from azaion_loader.server.throttle import LoginLimits

EMAIL, PASSWORD = "throttled@example.test", "right-password"


@pytest.fixture
def throttled(tmp_path: Path) -> Iterator[str]:
    """A server allowing 3 failed logins per email, 5 per address, in a 2 s window."""
    limits = LoginLimits(failures_per_email=3, failures_per_address=5, window=2.0)
    app = create_app(
        ServerConfig(data_dir=tmp_path, jwt_secret=secrets.token_bytes(32), login_limits=limits)
    )
    for email in (EMAIL, "other@example.test"):
        register_user(
            server_state(app).store, email=email, password=PASSWORD, role="user", max_devices=1
        )
    with ServerThread(app) as server:
        yield server.url


def _login(url: str, email: str, password: str) -> requests.Response:
    return requests.post(f"{url}/login", json={"email": email, "password": password}, timeout=10)


def test_failed_logins_then_429_with_retry_after_then_a_login_after_the_window(
    throttled: str,
) -> None:
    for _ in range(3):
        assert_error(_login(throttled, EMAIL, "wrong"), 401, 10)
    refused = _login(throttled, EMAIL, PASSWORD)  # even the right password, for now
    message = assert_error(refused, 429, 14)
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert "too many failed logins" in message and PASSWORD not in refused.text
    assert _login(throttled, "other@example.test", PASSWORD).status_code == 200
    time.sleep(int(refused.headers["Retry-After"]) + 0.1)
    assert _login(throttled, EMAIL, PASSWORD).status_code == 200


def test_one_address_is_throttled_across_emails(throttled: str) -> None:
    for index in range(5):
        assert_error(_login(throttled, f"nobody{index}@example.test", "wrong"), 401, 10)
    assert_error(_login(throttled, "other@example.test", PASSWORD), 429, 14)


def test_the_cli_reports_a_throttled_login_once_without_looping(
    dev_env: Any, api_server: Any, tmp_path: Path
) -> None:
    env = dev_env.merged(LOADER_PASSWORD="wrong-password")
    limit = LoginLimits().failures_per_email
    for _ in range(limit):
        assert_error(_login(api_server.url, dev_env.credentials.email, "wrong"), 401, 10)
    before = api_server.count("POST", "/login")
    code, result, _, err = run_loader(
        env, "fetch", "--folder", "models", "--name", "m", "--out", str(tmp_path / "m")
    )
    assert code == 14, err  # ApiUnavailableError: not permanent, a later retry may pass
    assert result is not None and result["error"] == "ApiUnavailableError"
    assert "too many failed attempts (HTTP 429, retry after" in result["message"]
    assert "wrong-password" not in err and "wrong-password" not in str(result)
    assert api_server.count("POST", "/login") == before + 1  # asked once, no retry loop
