"""The API client's logic against a scripted session: retries, re-login, error mapping."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests

from azaion_loader import envelope
from azaion_loader.api_client import ApiClient, decode_claims
from azaion_loader.errors import (
    ApiUnavailableError,
    AuthError,
    ConflictError,
    NotFoundError,
    ProtocolError,
)
from azaion_loader.settings import Credentials, HttpSettings

FP = "ab" * 32
CREDS = Credentials("u@example.com", "canary-password")


def token(exp_in: float = 3600, role: str = "uploader") -> str:
    now = time.time()
    return jwt.encode({"sub": "1", "role": role, "iat": now, "exp": now + exp_in}, "k" * 32)


class FakeResponse(requests.Response):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__()
        self.status_code = status
        import json

        self._content = b"" if body is None else json.dumps(body).encode()
        self.raw = io.BytesIO(self._content)  # the client streams bodies


Script = Callable[[str, str, dict[str, Any]], FakeResponse | Exception]


class FakeSession(requests.Session):
    def __init__(self, script: list[Script | FakeResponse | Exception]) -> None:
        super().__init__()
        self.script = list(script)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **kw: Any) -> Any:  # type: ignore[override]
        self.calls.append((method, url, kw))
        step = self.script.pop(0)
        if callable(step) and not isinstance(step, FakeResponse):
            step = step(method, url, kw)
        if isinstance(step, Exception):
            raise step
        return step


def client(script: list[Any], retries: int = 2) -> tuple[ApiClient, FakeSession, list[float]]:
    session = FakeSession(script)
    sleeps: list[float] = []
    c = ApiClient(
        "http://api",
        CREDS,
        fingerprint=FP,
        http=HttpSettings(retries=retries),
        session=session,
        sleep=sleeps.append,
    )
    return c, session, sleeps


def sealed(purpose: str, payload: Any) -> dict[str, str]:
    key = envelope.derive_envelope_key(envelope.derive_user_key(CREDS.email, CREDS.password), FP)
    return {"envelope": envelope.seal_envelope(key, purpose, payload)}


def test_decode_claims_without_verification() -> None:
    signed = token(role="user")
    claims = decode_claims(signed)
    assert claims["role"] == "user"
    # The same claims PyJWT reads (the server signs with it).
    assert claims == jwt.decode(signed, options={"verify_signature": False})


def _b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-jwt",
        f"{_b64({'alg': 'HS256'})}.{_b64({'role': 'user'})}",  # no signature segment
        f"{_b64({'alg': 'HS256'})}.%%%.sig",  # claims not base64url
        f"{_b64({'alg': 'HS256'})}.{_b64('x')[:-1]}x.sig",  # claims not JSON
        f"{_b64(['header'])}.{_b64({'role': 'user'})}.sig",  # header not an object
        f"{_b64({'alg': 'HS256'})}.{_b64(['claims'])}.sig",  # claims not an object
    ],
)
def test_decode_claims_rejects_malformed_tokens(bad: str) -> None:
    with pytest.raises(ProtocolError, match="login token"):
        decode_claims(bad)


def test_login_then_authorized_request_with_fingerprint() -> None:
    cdn = {
        "endpoint_url": "http://s3",
        "region": "r",
        "read": {"access_key_id": "a", "secret_access_key": "b"},
        "write": None,
    }
    c, s, _ = client(
        [FakeResponse(200, {"token": token()}), FakeResponse(200, sealed("cdn-config", cdn))]
    )
    cfg = c.get_cdn_config()
    assert cfg.endpoint_url == "http://s3" and cfg.write is None
    assert s.calls[0][0:2] == ("POST", "http://api/login")
    headers = s.calls[1][2]["headers"]
    assert headers["Authorization"].startswith("Bearer ")
    assert headers["X-Hardware-Fingerprint"] == FP
    assert s.calls[1][2]["timeout"] == 30.0
    assert "canary-password" not in repr(cfg)


def test_early_refresh_when_token_expires_soon() -> None:
    c, s, _ = client(
        [
            FakeResponse(200, {"token": token(exp_in=10)}),
            FakeResponse(200, {"token": token()}),
            FakeResponse(200, {"email": "u"}),
        ]
    )
    c.login()
    c.me()
    assert [m for m, _, _ in s.calls] == ["POST", "POST", "GET"]


def test_one_relogin_and_retry_on_401_then_auth_error() -> None:
    c, _s, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(401, {"ErrorCode": 11, "Message": "expired"}),
            FakeResponse(200, {"token": token()}),
            FakeResponse(200, {"email": "u"}),
        ]
    )
    assert c.me() == {"email": "u"}
    c2, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(403, {"ErrorCode": 12, "Message": "role"}),
            FakeResponse(200, {"token": token()}),
            FakeResponse(403, {"ErrorCode": 12, "Message": "role"}),
        ]
    )
    with pytest.raises(AuthError, match="403"):
        c2.me()


def test_wrong_password_on_login() -> None:
    c, _, _ = client([FakeResponse(401, {"ErrorCode": 10, "Message": "bad"})])
    with pytest.raises(AuthError, match="wrong email or password") as info:
        c.login()
    assert "canary-password" not in str(info.value)


def test_409_is_a_conflict_with_code_and_message() -> None:
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(409, {"ErrorCode": 30, "Message": "bound to other hardware"}),
        ]
    )
    with pytest.raises(ConflictError) as info:
        c.get_resource("f", "n")
    assert info.value.error_code == 30
    assert info.value.api_message == "bound to other hardware"
    assert info.value.exit_code == 13


def test_404_and_400() -> None:
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(404, {"ErrorCode": 20, "Message": "x"}),
        ]
    )
    with pytest.raises(NotFoundError):
        c.get_resource("f", "n")
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(400, {"ErrorCode": 40, "Message": "x"}),
        ]
    )
    with pytest.raises(ProtocolError):
        c.put_resource("f", "n", {})


def test_5xx_backoff_then_success() -> None:
    c, _s, sleeps = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(500),
            requests.ConnectionError("refused"),
            FakeResponse(200, {"email": "u"}),
        ],
        retries=4,
    )
    assert c.me() == {"email": "u"}
    assert sleeps == [0.5, 1.0]


def test_backoff_is_bounded_then_unavailable() -> None:
    c, _, sleeps = client([requests.Timeout("slow")] * 7, retries=6)
    with pytest.raises(ApiUnavailableError, match="unreachable"):
        c.login()
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_envelope_for_other_hardware_is_auth_error() -> None:
    key = envelope.derive_envelope_key(envelope.derive_user_key(CREDS.email, "other"), FP)
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            FakeResponse(200, {"envelope": envelope.seal_envelope(key, "resource", {})}),
        ]
    )
    with pytest.raises(AuthError, match="cannot open"):
        c.get_resource("f", "n")


def test_non_json_body_is_protocol_error() -> None:
    bad = FakeResponse(200)
    bad._content = b"<html>"
    c, _, _ = client([FakeResponse(200, {"token": token()}), bad])
    with pytest.raises(ProtocolError):
        c.me()


def test_path_segments_are_quoted() -> None:
    c, s, _ = client([FakeResponse(200, {"token": token()}), FakeResponse(404)])
    with pytest.raises(NotFoundError):
        c.get_resource("a b", "x/y")
    assert s.calls[1][1] == "http://api/resources/a%20b/x%2Fy"


def _listing(kind: str, versions: list[str]) -> FakeResponse:
    item = {
        "folder": "models",
        "name": "m",
        "latest": versions[-1] if versions else None,
        "versions": [
            {"version": v, "sha256": "0" * 64, "size": 48, "created": 1} for v in versions
        ],
    }
    other = {"folder": "models", "name": "other", "latest": "x", "versions": [{"version": "x"}]}
    return FakeResponse(200, {kind: [other, item]})


@pytest.mark.parametrize("kind", ["resources", "archives"])
def test_version_check_uses_the_listing(kind: str) -> None:
    c, s, _ = client([FakeResponse(200, {"token": token()}), _listing(kind, ["1", "2"])])
    assert c.list_versions(kind, "models", "m") == ["1", "2"]
    method, url, kw = s.calls[1]
    assert (method, url, kw["params"]) == ("GET", f"http://api/{kind}", {"folder": "models"})
    assert "X-Hardware-Fingerprint" not in kw["headers"]  # the listing binds no hardware


def test_existing_version_is_a_conflict_31() -> None:
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            _listing("resources", ["1"]),
            _listing("resources", ["1"]),
        ]
    )
    with pytest.raises(ConflictError, match="already registered") as info:
        c.ensure_publishable("resources", "models", "m", "1")
    assert info.value.error_code == 31
    c.ensure_publishable("resources", "models", "m", "2")  # a new version is fine


def test_unknown_name_has_no_versions() -> None:
    c, _, _ = client([FakeResponse(200, {"token": token()}), FakeResponse(200, {"archives": []})])
    assert c.list_versions("archives", "models", "m") == []


class RecordingSession(requests.Session):
    """A real Session (its environment merging included) whose transport records ``verify``."""

    def __init__(self) -> None:
        super().__init__()
        self.verify_seen: list[Any] = []

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.verify_seen.append(kwargs.get("verify"))
        return FakeResponse(200, {"token": token()})


def test_loader_ca_bundle_wins_over_requests_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/other-ca.pem")
    session = RecordingSession()
    c = ApiClient(
        "https://api",
        CREDS,
        fingerprint=FP,
        http=HttpSettings(ca_bundle="/etc/loader-ca.pem"),
        session=session,
    )
    c.login()
    assert session.verify_seen == ["/etc/loader-ca.pem"]


def test_requests_are_sent_without_redirects_and_streamed() -> None:
    c, session, _ = client([FakeResponse(200, {"token": token()})])
    c.login()
    _method, _url, kw = session.calls[0]
    assert kw["allow_redirects"] is False and kw["stream"] is True and kw["verify"] is True


def test_a_redirect_is_a_protocol_error_without_retry() -> None:
    moved = FakeResponse(301)
    moved.headers["Location"] = "https://user:pw@elsewhere/login"
    c, session, _ = client([moved])
    with pytest.raises(ProtocolError, match="redirect") as info:
        c.login()
    assert len(session.calls) == 1
    assert "pw@" not in info.value.one_line()


def test_a_refused_registration_names_the_ownership_rule() -> None:
    refused = FakeResponse(403, {"ErrorCode": 13, "Message": "resource models/m is owned by x"})
    c, _, _ = client(
        [
            FakeResponse(200, {"token": token()}),
            refused,
            FakeResponse(200, {"token": token()}),
            refused,
        ]
    )
    with pytest.raises(AuthError) as info:
        c.put_resource("models", "m", {"version": "1"})
    assert "owned by x" in info.value.message
    assert "owns this folder/name" in info.value.hint


def test_another_owner_in_the_listing_refuses_before_the_upload() -> None:
    listing = _listing("resources", ["1"])
    body = json.loads(listing._content)
    body["resources"][1]["owner"] = "someone@else.test"
    listing._content = json.dumps(body).encode()
    listing.raw = io.BytesIO(listing._content)
    c, s, _ = client([FakeResponse(200, {"token": token()}), listing])
    with pytest.raises(AuthError, match=r"owned by someone@else\.test") as info:
        c.ensure_publishable("resources", "models", "m", None)
    assert info.value.exit_code == 11 and "nothing was uploaded" in info.value.message
    assert len(s.calls) == 2  # login and the listing only


def test_an_admin_may_publish_over_another_owner() -> None:
    listing = _listing("resources", ["1"])
    body = json.loads(listing._content)
    body["resources"][1]["owner"] = "someone@else.test"
    listing._content = json.dumps(body).encode()
    listing.raw = io.BytesIO(listing._content)
    c, _, _ = client([FakeResponse(200, {"token": token(role="admin")}), listing])
    c.ensure_publishable("resources", "models", "m", "2")


def test_a_throttled_login_is_api_unavailable_and_not_retried() -> None:
    throttled = FakeResponse(429, {"ErrorCode": 14, "Message": "too many failed logins"})
    throttled.headers["Retry-After"] = "42"
    c, s, sleeps = client([throttled])
    with pytest.raises(ApiUnavailableError, match="retry after 42 s") as info:
        c.me()
    assert info.value.status == 429 and len(s.calls) == 1 and sleeps == []
    assert "canary-password" not in info.value.one_line()
