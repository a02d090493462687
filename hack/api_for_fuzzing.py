"""Serve the reference API on 127.0.0.1 for a schema fuzzer (schemathesis).

Prints ``<url> <admin token>`` on one line, then serves until SIGINT or
SIGTERM: a fresh data directory, an admin user and CDN settings.  Test use
only: the admin's password is random and never printed; the token is.

    python hack/api_for_fuzzing.py /tmp/fuzz-data &
    schemathesis run <url>/openapi.yaml -H "Authorization: Bearer <token>"
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user
from azaion_loader.server.serving import wait_for_stop_signal


def admin_app(data_dir: Path) -> tuple[Any, str]:
    """The reference API (a Flask app) with an admin and CDN settings, and an admin token."""
    app = create_app(ServerConfig(data_dir=data_dir, jwt_secret=secrets.token_bytes(32)))
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
    return app, state.tokens.issue(admin)


def main() -> int:
    app, token = admin_app(Path(sys.argv[1]))
    with ServerThread(app, "127.0.0.1", 0) as server:
        print(server.url, token, flush=True)
        wait_for_stop_signal()
    return 0
