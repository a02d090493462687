"""Each class of mismatch schemathesis found between openapi.yaml and the server, pinned."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import requests
from test_server_http import Session, assert_error, resource_body


@pytest.fixture
def admin(api_server: Any) -> Session:
    creds = api_server.create_user(role="admin")
    return Session(api_server.url, creds.email, creds.password)


@pytest.mark.parametrize(
    "query",
    ["/resources?folder=", "/archives?folder=", "/resources?folder=a..b"],
)
def test_an_empty_or_malformed_folder_filter_is_400(admin: Session, query: str) -> None:
    assert_error(admin.call("GET", query), 400, 40)


def test_an_empty_version_is_400(admin: Session) -> None:
    assert_error(admin.call("GET", "/resources/models/m?version=", fp="a" * 64), 400, 40)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/healthz", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/resources/models/m", {"GET", "HEAD", "OPTIONS", "PUT"}),
        ("GET", "/users/a@b.c/password", {"OPTIONS", "PUT"}),
    ],
)
def test_405_names_the_allowed_methods(
    api_server: Any, method: str, path: str, allowed: set[str]
) -> None:
    resp = requests.request(method, f"{api_server.url}{path}", timeout=10)
    assert_error(resp, 405, 40)
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


def test_a_key_that_is_not_32_bytes_is_400(admin: Session) -> None:
    body = resource_body()
    body["key"] = base64.b64encode(os.urandom(31)).decode()
    message = assert_error(admin.call("PUT", "/resources/models/m", json=body), 400, 40)
    assert "key must be 32 bytes" in message


@pytest.mark.parametrize("region", ["", 5, None])
def test_a_region_must_be_a_non_empty_string_when_given(admin: Session, region: Any) -> None:
    pair = {"access_key_id": "AK", "secret_access_key": "SK"}
    body = {"endpoint_url": "http://s3.test", "region": region, "read": pair}
    assert_error(admin.call("PUT", "/cdn-config", json=body), 400, 40)
    del body["region"]
    assert admin.call("PUT", "/cdn-config", json=body).status_code == 200


@pytest.mark.parametrize("version", [None, "v1"])
def test_a_null_version_takes_the_default(admin: Session, version: Any) -> None:
    body = resource_body(version=None)
    body["version"] = version
    resp = admin.call("PUT", "/resources/models/m", json=body)
    assert resp.status_code == 201
    assert resp.json()["version"] == (version or body["sha256"][:16])
