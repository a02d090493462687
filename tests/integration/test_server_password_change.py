"""A password change voids every earlier token of that user (401/11), over HTTP."""

from __future__ import annotations

from typing import Any

import requests
from test_server_http import Session, assert_error


def _admin(api_server: Any) -> Session:
    creds = api_server.create_user(role="admin")
    return Session(api_server.url, creds.email, creds.password)


def test_an_admin_password_change_voids_earlier_tokens(api_server: Any) -> None:
    creds = api_server.create_user(role="uploader")
    before = Session(api_server.url, creds.email, creds.password)
    bystander = _admin(api_server)
    assert before.call("GET", "/me").status_code == 200

    resp = bystander.call("PUT", f"/users/{creds.email.upper()}/password", json={"password": "n3w"})
    assert (resp.status_code, resp.json()) == (200, {"email": creds.email})
    assert "n3w" not in resp.text

    message = assert_error(before.call("GET", "/me"), 401, 11)
    assert "password change" in message and "log in again" in message
    assert bystander.call("GET", "/me").status_code == 200  # other users keep their tokens
    old = requests.post(
        f"{api_server.url}/login",
        json={"email": creds.email, "password": creds.password},
        timeout=10,
    )
    assert_error(old, 401, 10)
    after = Session(api_server.url, creds.email, "n3w")
    assert after.call("GET", "/me").json()["email"] == creds.email


def test_re_registering_with_another_password_voids_tokens_the_same_one_keeps_them(
    api_server: Any,
) -> None:
    creds = api_server.create_user(role="user")
    session = Session(api_server.url, creds.email, creds.password)
    admin = _admin(api_server)
    same = {"email": creds.email, "password": creds.password, "role": "user"}
    assert admin.call("POST", "/users", json=same).status_code == 200
    assert session.call("GET", "/me").status_code == 200  # e.g. serve-api re-reading its users file
    other = {**same, "password": "other-password"}
    assert admin.call("POST", "/users", json=other).status_code == 200
    assert_error(session.call("GET", "/me"), 401, 11)


def test_password_change_needs_an_admin_and_a_known_user(api_server: Any) -> None:
    creds = api_server.create_user(role="uploader")
    uploader = Session(api_server.url, creds.email, creds.password)
    assert_error(
        uploader.call("PUT", f"/users/{creds.email}/password", json={"password": "x"}), 403, 12
    )
    admin = _admin(api_server)
    assert_error(
        admin.call("PUT", "/users/nobody@example.test/password", json={"password": "x"}), 404, 20
    )
    assert_error(admin.call("PUT", f"/users/{creds.email}/password", json={}), 400, 40)
    assert_error(
        admin.call("PUT", f"/users/{creds.email}/password", json={"password": ""}), 400, 40
    )
