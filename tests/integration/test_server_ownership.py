"""Per-folder ownership over HTTP: only the first publisher of folder/name or an admin
may register further versions (docs/protocol.md §5, §6); refusals are 403/13."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_server_http import PAIR, WPAIR, Session, _b64, assert_error, resource_body

from azaion_loader.server import ServerConfig, ServerThread, create_app


def _archive_body(version: str = "1") -> dict[str, Any]:
    return {"version": version, "fragment": _b64(os.urandom(32)), "sha256": "c" * 64, "size": 48}


def _session(api_server: Any, role: str) -> Session:
    creds = api_server.create_user(role=role)
    return Session(api_server.url, creds.email, creds.password)


@pytest.fixture
def publishers(api_server: Any) -> tuple[Session, Session, Session]:
    """Two uploaders and an admin."""
    api_server.set_cdn_config(
        {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "read": PAIR, "write": WPAIR}
    )
    return (
        _session(api_server, "uploader"),
        _session(api_server, "uploader"),
        _session(api_server, "admin"),
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [("/resources/models/m.bin", resource_body), ("/archives/images/app", _archive_body)],
)
def test_another_uploader_may_not_replace_403_code_13(
    publishers: tuple[Session, Session, Session], path: str, body: Any
) -> None:
    owner, other, _ = publishers
    first = body(version="1")
    assert owner.call("PUT", path, json=first).status_code == 201
    message = assert_error(other.call("PUT", path, json=body(version="2")), 403, 13)
    assert "owned by " + owner.email in message and "only its owner or an admin" in message
    assert "\n" not in message
    # an identical retry by the other uploader is refused too: it would claim nothing,
    # but a publisher learns the rule at once
    assert_error(other.call("PUT", path, json=first), 403, 13)
    assert owner.call("PUT", path, json=body(version="2")).status_code == 201


def test_an_admin_may_publish_over_any_owner_and_ownership_stays(
    publishers: tuple[Session, Session, Session],
) -> None:
    owner, other, admin = publishers
    path = "/resources/models/m.bin"
    assert owner.call("PUT", path, json=resource_body(version="1")).status_code == 201
    assert admin.call("PUT", path, json=resource_body(version="2")).status_code == 201
    assert owner.call("PUT", path, json=resource_body(version="3")).status_code == 201
    assert_error(other.call("PUT", path, json=resource_body(version="4")), 403, 13)


def test_names_are_owned_one_by_one(publishers: tuple[Session, Session, Session]) -> None:
    owner, other, _ = publishers
    assert owner.call("PUT", "/resources/models/a", json=resource_body()).status_code == 201
    assert other.call("PUT", "/resources/models/b", json=resource_body()).status_code == 201
    assert other.call("PUT", "/archives/models/a", json=_archive_body()).status_code == 201


def test_the_listing_shows_owners_to_publishers_only(
    api_server: Any, publishers: tuple[Session, Session, Session]
) -> None:
    owner, _, _ = publishers
    owner.call("PUT", "/resources/models/m.bin", json=resource_body())
    [item] = owner.call("GET", "/resources?folder=models").json()["resources"]
    assert item["owner"] == owner.email
    reader = _session(api_server, "user")
    [item] = reader.call("GET", "/resources?folder=models").json()["resources"]
    assert "owner" not in item


def test_ownership_survives_a_restart(
    api_server: Any, publishers: tuple[Session, Session, Session]
) -> None:
    owner, other, _ = publishers
    assert owner.call("PUT", "/archives/images/app", json=_archive_body()).status_code == 201
    api_server.stop()
    app = create_app(ServerConfig(data_dir=api_server.data_dir, jwt_secret=b"k" * 32))
    with ServerThread(app) as restarted:
        again = Session(restarted.url, other.email, other.password)
        assert_error(again.call("PUT", "/archives/images/app", json=_archive_body("2")), 403, 13)
        owner_again = Session(restarted.url, owner.email, owner.password)
        assert (
            owner_again.call("PUT", "/archives/images/app", json=_archive_body("2")).status_code
            == 201
        )


def test_entries_from_before_owners_are_admin_only(
    api_server: Any, publishers: tuple[Session, Session, Session]
) -> None:
    owner, _, admin = publishers
    owner.call("PUT", "/resources/models/old", json=resource_body(version="1"))
    # as an older server wrote it: no owner recorded
    state = Path(api_server.data_dir) / "resources.json"
    state.write_text(state.read_text().replace(f'"owner": "{owner.email}"', '"owner": null'))
    message = assert_error(
        owner.call("PUT", "/resources/models/old", json=resource_body(version="2")), 403, 13
    )
    assert "before owners were recorded" in message
    assert (
        admin.call("PUT", "/resources/models/old", json=resource_body(version="2")).status_code
        == 201
    )
