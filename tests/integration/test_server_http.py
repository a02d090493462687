"""The reference API server over HTTP on loopback: every status and ErrorCode of the protocol."""

from __future__ import annotations

import base64
import os
import re
import socket
from typing import Any

import jwt
import pytest
import requests
import yaml

from azaion_loader import envelope
from azaion_loader.errors import AuthError
from azaion_loader.server.validation import resource_size, small_part_size

FP1, FP2 = "a" * 64, "b" * 64
PAIR = {"access_key_id": "AKREAD", "secret_access_key": "read-secret"}
WPAIR = {"access_key_id": "AKWRITE", "secret_access_key": "write-secret"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def resource_body(plain_size: int = 100, version: str | None = "1", fmt: int = 1) -> dict[str, Any]:
    """A consistent registration body; ``format`` only for format 2, as clients send it."""
    size = resource_size(plain_size, fmt)
    body: dict[str, Any] = {
        "small": _b64(os.urandom(small_part_size(size))),
        "key": _b64(os.urandom(32)),
        "sha256": os.urandom(32).hex(),
        "size": size,
        "plain_size": plain_size,
    }
    if version is not None:
        body["version"] = version
    if fmt != 1:
        body["format"] = fmt
    return body


class Session:
    """A logged-in caller."""

    def __init__(self, url: str, email: str, password: str) -> None:
        self.url, self.email, self.password = url, email, password
        resp = requests.post(
            f"{url}/login", json={"email": email, "password": password}, timeout=10
        )
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["token"]

    def call(self, method: str, path: str, fp: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if fp is not None:
            headers["X-Hardware-Fingerprint"] = fp
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kw)

    def open(self, resp: requests.Response, purpose: str, fp: str) -> Any:
        assert resp.status_code == 200, resp.text
        assert set(resp.json()) == {"envelope"}
        key = envelope.derive_envelope_key(envelope.derive_user_key(self.email, self.password), fp)
        return envelope.open_envelope(key, purpose, resp.json()["envelope"])


def assert_error(resp: requests.Response, status: int, code: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"ErrorCode", "Message"}
    assert body["ErrorCode"] == code
    assert isinstance(body["Message"], str) and body["Message"]
    message: str = body["Message"]
    return message


@pytest.fixture
def uploader(api_server: Any) -> Session:
    creds = api_server.create_user(role="uploader", max_devices=1)
    api_server.set_cdn_config(
        {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "read": PAIR, "write": WPAIR}
    )
    return Session(api_server.url, creds.email, creds.password)


def test_healthz_needs_no_auth(api_server: Any) -> None:
    resp = requests.get(f"{api_server.url}/healthz", timeout=10)
    assert (resp.status_code, resp.json()) == (200, {"ok": True})


def test_openapi_document_is_yaml_and_describes_every_route(api_server: Any) -> None:
    resp = requests.get(f"{api_server.url}/openapi.yaml", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/yaml")
    doc = yaml.safe_load(resp.text)
    assert doc["openapi"].startswith("3.1")
    routes: dict[str, set[str]] = {}
    for rule in api_server.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        routes.setdefault(path, set()).update(methods)
    documented = {
        path: {m for m in item if m in {"get", "put", "post", "delete", "patch"}}
        for path, item in doc["paths"].items()
    }
    assert documented == routes
    for item in doc["paths"].values():
        for method in ("get", "put", "post", "delete"):
            if method in item:
                assert item[method]["responses"], (method, item)


def test_login_issues_an_hs256_token_with_role_and_expiry(api_server: Any) -> None:
    creds = api_server.create_user("Mixed@Example.Test", role="uploader")
    resp = requests.post(
        f"{api_server.url}/login",
        json={"email": "mixed@example.test", "password": creds.password},
        timeout=10,
    )
    assert resp.status_code == 200
    token = resp.json()["token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["email"] == "mixed@example.test"
    assert claims["role"] == "uploader"
    assert 3500 <= claims["exp"] - claims["iat"] <= 3600
    assert set(claims) >= {"sub", "email", "role", "iat", "exp"}


def test_wrong_password_and_unknown_email_are_401_code_10(api_server: Any) -> None:
    creds = api_server.create_user()
    for email, password in (
        (creds.email, "canary-wrong-pw"),
        ("nobody@example.test", creds.password),
    ):
        resp = requests.post(
            f"{api_server.url}/login", json={"email": email, "password": password}, timeout=10
        )
        message = assert_error(resp, 401, 10)
        assert password not in message


def test_malformed_requests_are_400_code_40(api_server: Any, uploader: Session) -> None:
    assert_error(requests.post(f"{api_server.url}/login", data="x", timeout=10), 400, 40)
    assert_error(requests.post(f"{api_server.url}/login", json=[1], timeout=10), 400, 40)
    body = resource_body()
    body["key"] = _b64(b"short")
    assert "key" in assert_error(
        uploader.call("PUT", "/resources/models/m.bin", json=body), 400, 40
    )
    assert_error(uploader.call("GET", "/cdn-config"), 400, 40)  # no fingerprint header
    assert_error(uploader.call("GET", "/cdn-config", fp="XYZ"), 400, 40)
    assert_error(uploader.call("PUT", "/resources/Bad_Folder/m.bin", json=resource_body()), 400, 40)


def test_missing_invalid_and_expired_tokens_are_401_code_11(api_server: Any) -> None:
    creds = api_server.create_user()
    assert_error(requests.get(f"{api_server.url}/me", timeout=10), 401, 11)
    for token in ("garbage", api_server.issue_token(creds.email, age=7200)):
        resp = requests.get(
            f"{api_server.url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert_error(resp, 401, 11)
    fresh = api_server.issue_token(creds.email)
    resp = requests.get(
        f"{api_server.url}/me", headers={"Authorization": f"Bearer {fresh}"}, timeout=10
    )
    assert resp.json() == {"email": creds.email, "role": "user", "devices": 0, "max_devices": 1}


def test_a_rotated_server_key_refuses_old_tokens(api_server: Any, uploader: Session) -> None:
    assert uploader.call("GET", "/me").status_code == 200
    api_server.rotate_jwt_secret()
    assert_error(uploader.call("GET", "/me"), 401, 11)


def test_forged_role_claims_are_refused(api_server: Any) -> None:
    creds = api_server.create_user(role="user")
    session = Session(api_server.url, creds.email, creds.password)
    claims = jwt.decode(session.token, options={"verify_signature": False})
    session.token = jwt.encode({**claims, "role": "admin"}, b"k" * 32, algorithm="HS256")
    assert_error(session.call("GET", "/me"), 401, 11)


def test_roles_are_checked_403_code_12(api_server: Any) -> None:
    creds = api_server.create_user(role="user")
    user = Session(api_server.url, creds.email, creds.password)
    assert_error(user.call("PUT", "/resources/models/m.bin", json=resource_body()), 403, 12)
    archive = {"fragment": _b64(os.urandom(32)), "sha256": "c" * 64, "size": 48, "images": []}
    assert_error(user.call("PUT", "/archives/images/app", json=archive), 403, 12)
    new_user = {"email": "x@example.test", "password": "p"}
    assert_error(user.call("POST", "/users", json=new_user), 403, 12)
    assert_error(user.call("PUT", "/cdn-config", json={}), 403, 12)
    assert_error(user.call("DELETE", f"/users/{creds.email}/devices"), 403, 12)


def test_unknown_resource_version_archive_and_route_are_404_code_20(uploader: Session) -> None:
    assert_error(uploader.call("GET", "/resources/models/none.bin", fp=FP1), 404, 20)
    assert uploader.call("PUT", "/resources/models/m.bin", json=resource_body()).status_code == 201
    assert_error(uploader.call("GET", "/resources/models/m.bin?version=9", fp=FP1), 404, 20)
    assert_error(uploader.call("GET", "/archives/images/none/key-fragment", fp=FP1), 404, 20)
    assert_error(uploader.call("GET", "/no/such/endpoint"), 404, 20)


def test_upload_then_download_through_an_envelope(uploader: Session) -> None:
    body = resource_body(5000, version=None)
    resp = uploader.call("PUT", "/resources/models/model.bin", json=body)
    assert resp.status_code == 201
    version = resp.json()["version"]
    assert version == body["sha256"][:16]
    plain = uploader.open(
        uploader.call("GET", "/resources/models/model.bin", fp=FP1), "resource", FP1
    )
    assert plain == {
        "folder": "models",
        "name": "model.bin",
        "version": version,
        "small": body["small"],
        "key": body["key"],
        "sha256": body["sha256"],
        "size": body["size"],
        "plain_size": 5000,
        "big_key": "model.bin.big",
    }


def test_the_plain_digest_is_delivered_when_registered(uploader: Session) -> None:
    # Registered: in the envelope.  Not registered (older clients): absent, as before.
    body = {**resource_body(version="1"), "plain_sha256": "5e" * 32}
    assert uploader.call("PUT", "/resources/models/m.bin", json=body).status_code == 201
    assert uploader.call("PUT", "/resources/models/m.bin", json=body).status_code == 200
    assert uploader.call("PUT", "/resources/models/m.bin", json=resource_body(version="2")).ok
    got = uploader.open(
        uploader.call("GET", "/resources/models/m.bin?version=1", fp=FP1), "resource", FP1
    )
    assert got["plain_sha256"] == "5e" * 32
    got = uploader.open(uploader.call("GET", "/resources/models/m.bin", fp=FP1), "resource", FP1)
    assert "plain_sha256" not in got


def test_a_malformed_or_conflicting_plain_digest_is_refused(uploader: Session) -> None:
    body = resource_body(version="1")
    for bad in ("5E" * 32, "5e" * 31, "not hex" * 8, 7):
        resp = uploader.call("PUT", "/resources/models/m.bin", json={**body, "plain_sha256": bad})
        assert "plain_sha256" in assert_error(resp, 400, 40)
    good = {**body, "plain_sha256": "5e" * 32}
    assert uploader.call("PUT", "/resources/models/m.bin", json=good).status_code == 201
    other = {**body, "plain_sha256": "6f" * 32}
    assert_error(uploader.call("PUT", "/resources/models/m.bin", json=other), 409, 31)


def test_latest_and_explicit_versions(uploader: Session) -> None:
    first, second = resource_body(version="1"), resource_body(version="2")
    assert uploader.call("PUT", "/resources/models/m.bin", json=first).status_code == 201
    assert uploader.call("PUT", "/resources/models/m.bin", json=second).status_code == 201
    latest = uploader.open(uploader.call("GET", "/resources/models/m.bin", fp=FP1), "resource", FP1)
    assert (latest["version"], latest["sha256"]) == ("2", second["sha256"])
    resp = uploader.call("GET", "/resources/models/m.bin?version=1", fp=FP1)
    assert uploader.open(resp, "resource", FP1)["sha256"] == first["sha256"]
    listing = uploader.call("GET", "/resources?folder=models").json()["resources"]
    assert [(e["name"], e["latest"], [v["version"] for v in e["versions"]]) for e in listing] == [
        ("m.bin", "2", ["1", "2"])
    ]
    assert "key" not in listing[0]["versions"][0]


def test_version_conflict_is_409_code_31_and_identical_retry_is_200(uploader: Session) -> None:
    body = resource_body(version="7")
    assert uploader.call("PUT", "/resources/models/m.bin", json=body).status_code == 201
    retry = uploader.call("PUT", "/resources/models/m.bin", json=body)
    assert (retry.status_code, retry.json()) == (200, {"version": "7"})
    other = resource_body(version="7")
    assert_error(uploader.call("PUT", "/resources/models/m.bin", json=other), 409, 31)
    got = uploader.open(uploader.call("GET", "/resources/models/m.bin", fp=FP1), "resource", FP1)
    assert got["sha256"] == body["sha256"]


def test_a_format_2_version_is_registered_and_delivered_with_its_format(
    uploader: Session,
) -> None:
    plain_size = 3 * 1048576 + 5  # four segments: three full, one of 5 bytes
    body = resource_body(plain_size, version="1", fmt=2)
    assert body["size"] == plain_size + 4 * 16
    assert uploader.call("PUT", "/resources/models/m.bin", json=body).status_code == 201
    assert uploader.call("PUT", "/resources/models/m.bin", json=resource_body(version="2")).ok
    got = uploader.open(
        uploader.call("GET", "/resources/models/m.bin?version=1", fp=FP1), "resource", FP1
    )
    assert got == {
        "folder": "models",
        "name": "m.bin",
        "version": "1",
        "small": body["small"],
        "key": body["key"],
        "sha256": body["sha256"],
        "size": body["size"],
        "plain_size": plain_size,
        "big_key": "m.bin.big",
        "format": 2,
    }
    # A format-1 envelope carries no format, as before format 2.
    got = uploader.open(uploader.call("GET", "/resources/models/m.bin", fp=FP1), "resource", FP1)
    assert (got["version"], "format" in got) == ("2", False)
    listing = uploader.call("GET", "/resources?folder=models").json()["resources"]
    assert [v.get("format") for v in listing[0]["versions"]] == [2, None]


def test_a_format_2_size_off_the_rule_or_an_unknown_format_is_400(uploader: Session) -> None:
    body = resource_body(3 * 1048576 + 5, version="1", fmt=2)
    for size in (body["size"] - 16, body["size"] + 16, 16 + 16 * (body["plain_size"] // 16 + 1)):
        bad = {**body, "size": size, "small": _b64(os.urandom(small_part_size(size)))}
        message = assert_error(uploader.call("PUT", "/resources/models/m.bin", json=bad), 400, 40)
        assert message.startswith("size does not match plain_size for format 2"), message
    for fmt in (0, 3, "2", 2.5, True):
        resp = uploader.call("PUT", "/resources/models/m.bin", json={**body, "format": fmt})
        assert "format" in assert_error(resp, 400, 40)
    assert uploader.call("PUT", "/resources/models/m.bin", json=body).status_code == 201


def test_the_format_is_part_of_the_content(uploader: Session) -> None:
    # For plain_size = 1 MiB + 16 both formats give size = plain_size + 32, so
    # the two bodies differ in their format only.
    plain_size = 1048576 + 16
    assert resource_size(plain_size, 1) == resource_size(plain_size, 2) == plain_size + 32
    one = resource_body(plain_size, version="1")
    two = {**one, "format": 2}
    assert uploader.call("PUT", "/resources/models/m.bin", json=one).status_code == 201
    assert_error(uploader.call("PUT", "/resources/models/m.bin", json=two), 409, 31)
    for same in ({**one, "format": None}, {**one, "format": 1}):
        retry = uploader.call("PUT", "/resources/models/m.bin", json=same)
        assert (retry.status_code, retry.json()) == (200, {"version": "1"})
    two = {**two, "version": "2"}
    assert uploader.call("PUT", "/resources/models/m.bin", json=two).status_code == 201
    assert uploader.call("PUT", "/resources/models/m.bin", json=two).status_code == 200
    assert_error(
        uploader.call("PUT", "/resources/models/m.bin", json={**one, "version": "2"}), 409, 31
    )


def test_hardware_binding_409_code_30_until_an_admin_resets_it(
    api_server: Any, uploader: Session
) -> None:
    assert uploader.call("GET", "/cdn-config", fp=FP1).status_code == 200
    assert uploader.call("GET", "/cdn-config", fp=FP1).status_code == 200
    message = assert_error(uploader.call("GET", "/cdn-config", fp=FP2), 409, 30)
    assert "max_devices=1" in message
    assert uploader.call("GET", "/me").json()["devices"] == 1
    admin_creds = api_server.create_user(role="admin")
    admin = Session(api_server.url, admin_creds.email, admin_creds.password)
    assert admin.call("DELETE", f"/users/{uploader.email}/devices").status_code == 200
    assert uploader.call("GET", "/cdn-config", fp=FP2).status_code == 200


def test_envelopes_open_with_the_right_key_only(uploader: Session) -> None:
    resp = uploader.call("GET", "/cdn-config", fp=FP1)
    assert uploader.open(resp, "cdn-config", FP1)["write"] == WPAIR
    sealed = resp.json()["envelope"]
    right_user_key = envelope.derive_user_key(uploader.email, uploader.password)
    wrong_keys = {
        "wrong password": envelope.derive_envelope_key(
            envelope.derive_user_key(uploader.email, uploader.password + "x"), FP1
        ),
        "wrong fingerprint": envelope.derive_envelope_key(right_user_key, FP2),
    }
    for why, key in wrong_keys.items():
        with pytest.raises(AuthError):
            envelope.open_envelope(key, "cdn-config", sealed)
        assert why
    with pytest.raises(AuthError):  # the purpose is authenticated too
        envelope.open_envelope(
            envelope.derive_envelope_key(right_user_key, FP1), "resource", sealed
        )


def test_cdn_write_keys_only_for_uploaders(api_server: Any, uploader: Session) -> None:
    creds = api_server.create_user(role="user")
    user = Session(api_server.url, creds.email, creds.password)
    plain = user.open(user.call("GET", "/cdn-config", fp=FP1), "cdn-config", FP1)
    assert plain == {
        "endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "read": PAIR,
        "write": None,
    }
    assert uploader.open(uploader.call("GET", "/cdn-config", fp=FP1), "cdn-config", FP1)["write"]


def test_archive_key_fragment(uploader: Session) -> None:
    fragment = _b64(os.urandom(32))
    body = {
        "version": "1.0",
        "fragment": fragment,
        "sha256": "d" * 64,
        "size": 1040,
        "images": ["demo/app:1.0", "demo/db:2"],
    }
    assert uploader.call("PUT", "/archives/images/app", json=body).status_code == 201
    assert uploader.call("PUT", "/archives/images/app", json=body).status_code == 200
    resp = uploader.call("GET", "/archives/images/app/key-fragment?version=1.0", fp=FP1)
    assert uploader.open(resp, "key-fragment", FP1) == {
        "folder": "images",
        "name": "app",
        "version": "1.0",
        "fragment": fragment,
        "sha256": "d" * 64,
        "size": 1040,
        "images": ["demo/app:1.0", "demo/db:2"],
        "object_key": "app.enc",
    }
    assert_error(uploader.call("PUT", "/archives/images/app", json={**body, "size": 1056}), 409, 31)
    listing = uploader.call("GET", "/archives").json()["archives"]
    assert [(e["folder"], e["name"], e["latest"]) for e in listing] == [("images", "app", "1.0")]


def test_admin_registers_users_over_http(api_server: Any) -> None:
    admin_creds = api_server.create_user(role="admin")
    admin = Session(api_server.url, admin_creds.email, admin_creds.password)
    new = {"email": "New@Example.test", "password": "np-1", "role": "uploader", "max_devices": 3}
    resp = admin.call("POST", "/users", json=new)
    assert (resp.status_code, resp.json()) == (
        201,
        {"email": "new@example.test", "role": "uploader", "max_devices": 3},
    )
    assert admin.call("POST", "/users", json={**new, "password": "np-2"}).status_code == 200
    Session(api_server.url, "new@example.test", "np-2")  # the new password works
    user_data = (api_server.data_dir / "users.json").read_text()
    assert "np-2" not in user_data and "np-1" not in user_data


def test_admin_sets_cdn_settings_over_http(api_server: Any) -> None:
    admin_creds = api_server.create_user(role="admin")
    admin = Session(api_server.url, admin_creds.email, admin_creds.password)
    cfg = {"endpoint_url": "https://cdn.example", "read": PAIR, "write": WPAIR}
    assert admin.call("PUT", "/cdn-config", json=cfg).status_code == 200
    plain = admin.open(admin.call("GET", "/cdn-config", fp=FP1), "cdn-config", FP1)
    assert plain["endpoint_url"] == "https://cdn.example"
    assert plain["region"] == "us-east-1"


def test_no_cdn_settings_is_404(api_server: Any) -> None:
    creds = api_server.create_user()
    user = Session(api_server.url, creds.email, creds.password)
    assert_error(user.call("GET", "/cdn-config", fp=FP1), 404, 20)


def test_oversized_body_is_rejected(uploader: Session) -> None:
    huge = {"small": "A" * (2 * 1024 * 1024)}
    assert_error(uploader.call("PUT", "/resources/models/m.bin", json=huge), 413, 40)


def test_injected_failures_then_the_real_answer(api_server: Any) -> None:
    api_server.fail_next(2, 503, path_prefix="/healthz")
    codes = [requests.get(f"{api_server.url}/healthz", timeout=10).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert api_server.count("GET", "/healthz") == 3


def test_stopped_server_refuses_connections_and_comes_back(api_server: Any) -> None:
    api_server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", api_server.port)) != 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api_server.url}/healthz", timeout=5)
    api_server.start()
    assert requests.get(f"{api_server.url}/healthz", timeout=5).status_code == 200


def test_concurrent_requests_are_served(api_server: Any, uploader: Session) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api_server.delay_next(1, 1.0, path_prefix="/me")
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(uploader.call, "GET", "/me")
        fast = [pool.submit(uploader.call, "GET", "/healthz") for _ in range(3)]
        assert all(f.result().status_code == 200 for f in fast)
        assert not slow.done()
        assert slow.result().status_code == 200
