"""Role checks and error bodies of the application, through Flask's test client (no network)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from flask.testing import FlaskClient

from azaion_loader.server import ServerConfig, create_app, server_state
from azaion_loader.server.app import register_user

BODY = {
    "version": "1",
    "small": base64.b64encode(os.urandom(9)).decode(),
    "key": base64.b64encode(os.urandom(32)).decode(),
    "sha256": "f" * 64,
    "size": 32,
    "plain_size": 0,
}
ARCHIVE = {"fragment": BODY["key"], "sha256": "f" * 64, "size": 48, "images": []}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    app = create_app(ServerConfig(data_dir=tmp_path_factory.mktemp("api"), jwt_secret=b"j" * 32))
    store = server_state(app).store
    for role in ("user", "uploader", "admin"):
        register_user(store, email=f"{role}@example.test", password=f"{role}-pw", role=role)
    return app.test_client()


_TOKENS: dict[tuple[int, str], str] = {}


def _auth(client: FlaskClient, role: str) -> dict[str, str]:
    key = (id(client), role)
    if key not in _TOKENS:
        resp = client.post(
            "/login", json={"email": f"{role}@example.test", "password": f"{role}-pw"}
        )
        _TOKENS[key] = resp.get_json()["token"]
    return {"Authorization": f"Bearer {_TOKENS[key]}"}


CASES: list[tuple[str, str, Any]] = [
    ("PUT", "/resources/models/m.bin", BODY),
    ("PUT", "/archives/images/app", ARCHIVE),
    ("POST", "/users", {"email": "n@example.test", "password": "p"}),
    (
        "PUT",
        "/cdn-config",
        {"endpoint_url": "http://x", "read": {"access_key_id": "a", "secret_access_key": "b"}},
    ),
]
ALLOWED = {
    "/resources/models/m.bin": {"uploader", "admin"},
    "/archives/images/app": {"uploader", "admin"},
    "/users": {"admin"},
    "/cdn-config": {"admin"},
}


@pytest.mark.parametrize("role", ["user", "uploader", "admin"])
@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_role_matrix(client: FlaskClient, role: str, method: str, path: str, body: Any) -> None:
    resp = client.open(path, method=method, json=body, headers=_auth(client, role))
    if role in ALLOWED[path]:
        assert resp.status_code in (200, 201), resp.get_json()
    else:
        assert resp.status_code == 403
        assert resp.get_json()["ErrorCode"] == 12


def test_method_not_allowed_has_an_error_body(client: FlaskClient) -> None:
    resp = client.delete("/login")
    assert resp.status_code == 405
    assert resp.get_json() == {"ErrorCode": 40, "Message": "method not allowed"}


def test_unexpected_errors_are_500_code_50_without_details(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server_state(client.application).store

    def broken(*_: object) -> None:
        raise RuntimeError("secret-detail")

    monkeypatch.setattr(store, "list_entries", broken)
    resp = client.get("/resources", headers=_auth(client, "user"))
    assert resp.status_code == 500
    assert resp.get_json() == {"ErrorCode": 50, "Message": "internal server error"}
