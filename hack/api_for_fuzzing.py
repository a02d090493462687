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

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user
from azaion_loader.server.serving import wait_for_stop_signal


def main() -> int:
    data_dir = Path(sys.argv[1])
    app = create_app(ServerConfig(data_dir=data_dir, jwt_secret=secrets.token_bytes(32)))
    state = server_state(app)
    admin = register_user(
        state.store,
        email="fuzz-admin@example.test",
        password=secrets.token_urlsafe(16),
        role="admin",
        max_devices=1000000,
    )
    pair = {"access_key_id": "AK", "secret_access_key": "SK"}
    state.store.set_cdn_config(
        {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "read": pair, "write": pair}
    )
    with ServerThread(app, "127.0.0.1", 0) as server:
        print(server.url, state.tokens.issue(admin), flush=True)
        wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
