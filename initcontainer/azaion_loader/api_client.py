"""The client of the resource API (docs/protocol.md), over ``requests``.

Errors, all from :mod:`azaion_loader.errors`:

    ApiError
    +-- AuthError            401/403 after one re-login and retry; an envelope that
    |                        does not open (wrong password or fingerprint)
    +-- NotFoundError        404
    +-- ConflictError        409 {ErrorCode, Message}
    +-- ApiUnavailableError  5xx, connection errors and timeouts after bounded backoff;
    |                        no complete answer within ``LOADER_DEADLINE``; 429 (not
    |                        retried: a throttled login would only be refused again)
    +-- ProtocolError        400, a redirect, a body over ``LOADER_MAX_RESPONSE``, or a
                             response that breaks the protocol

The JWT's claims are decoded without verifying the signature (the API is
trusted over TLS); ``exp`` only triggers an early re-login.  The session is
injectable; nothing secret (password, token, keys) enters a log line or an
exception message.

Every request carries credentials (the password at login, the token after),
so none follows a redirect: a 3xx is an error naming where it pointed.  The
CA bundle is passed with each request, since requests lets
``REQUESTS_CA_BUNDLE`` override a session's ``verify``.  Bodies are read in
pieces up to ``max_response`` bytes, and a :class:`~azaion_loader.watchdog.StreamWatch`
shuts the connection's socket down when the call's deadline passes, whatever
phase it is in (the connections of a session this client makes register
with it; with an injected session, only the body's socket can be cut).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from azaion_loader import envelope
from azaion_loader.errors import (
    ApiError,
    ApiUnavailableError,
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    ProtocolError,
)
from azaion_loader.models import CdnConfig, KeyFragment, ResourceRecord
from azaion_loader.pipeline import Background
from azaion_loader.redact import has_userinfo, printable, redact_url
from azaion_loader.settings import Credentials, HttpSettings
from azaion_loader.watchdog import StreamWatch, response_sockets, shutdown_socket

__all__ = ["ApiClient", "decode_claims"]

log = logging.getLogger(__name__)

REFRESH_MARGIN = 30.0
"""Log in again this many seconds before the token's ``exp``."""
BODY_PIECE = 64 * 1024
"""Bytes per read of a response body."""


# -- connections that a deadline can cut -------------------------------------------

_calls = threading.local()
"""``_calls.watch``: the :class:`_CallWatch` of the call this thread is making."""


class _CallWatch:
    """The connection of the current call, for the deadline to shut down."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.raw: Any = None

    def attach(self, conn: Any) -> None:
        self.conn = conn

    def abort(self) -> None:
        shutdown_socket(getattr(self.conn, "sock", None))
        for sock in response_sockets(self.raw):
            shutdown_socket(sock)


class _Registering:
    """Mixin: a connection that tells the current call's watch it carries the request."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_calls, "watch", None)
        if watch is not None:
            watch.attach(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Registering, HTTPConnection):
    pass


class _HTTPSConnection(_Registering, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct and through a proxy) register."""

    _POOLS = {"http": _HTTPPool, "https": _HTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(self._POOLS)
        return manager


def _session() -> requests.Session:
    session = requests.Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass(frozen=True)
class _Reply:
    """A response read in full (within the size cap): status, body, redirect target."""

    status_code: int
    body: bytes
    location: str = ""
    retry_after: str = ""


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def decode_claims(token: str) -> dict[str, Any]:
    """The JWT's claims, decoded without verifying the signature.

    The client trusts the API over TLS and reads only ``exp`` and ``role``
    (docs/protocol.md §1), so a JWT library is not needed here: it would
    cost every command ~50 ms of imports.
    """
    parts = token.split(".")
    try:
        if len(parts) != 3 or not isinstance(_b64url_json(parts[0]), dict):
            raise ValueError("not header.claims.signature")
        claims = _b64url_json(parts[1])
    except (ValueError, binascii.Error) as exc:
        raise ProtocolError("the login token is not a valid JWT") from exc
    if not isinstance(claims, dict):
        raise ProtocolError("the login token's claims are not an object")
    return claims


class ApiClient:
    """Logs in lazily, refreshes the token early, retries, and opens envelopes."""

    def __init__(
        self,
        api_url: str,
        credentials: Credentials,
        *,
        fingerprint: str,
        http: HttpSettings | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if has_userinfo(api_url):
            raise ConfigError(
                f"the API URL {redact_url(api_url)} carries a user name or password",
                hint="remove `user:password@` from LOADER_API_URL",
            )
        self.api_url = api_url.rstrip("/")
        self._credentials = credentials
        self.fingerprint = fingerprint
        self.http = http or HttpSettings()
        self.session = session or _session()
        # Per request: a session's `verify` loses to REQUESTS_CA_BUNDLE in requests.
        self._verify: str | bool = self.http.ca_bundle or True
        if self.http.ca_bundle:
            self.session.verify = self.http.ca_bundle
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._claims: dict[str, Any] = {}
        self._kdf: Background[bytes] | None = None

    # -- authentication -----------------------------------------------------

    @property
    def claims(self) -> dict[str, Any]:
        """The current token's claims (empty before the first login)."""
        return dict(self._claims)

    @property
    def role(self) -> str | None:
        """The user's role from the token, if logged in."""
        role = self._claims.get("role")
        return str(role) if role is not None else None

    def login(self) -> None:
        """``POST /login``; keeps the token and its claims.

        The envelope key's KDF (scrypt, ~50 ms of CPU; it releases the GIL)
        needs only the credentials and the fingerprint: it starts first, in
        its own thread, and runs while the request is in flight.
        """
        self._key_derivation()
        creds = self._credentials
        resp = self._send("POST", "/login", json={"email": creds.email, "password": creds.password})
        if resp.status_code == 401 or resp.status_code == 403:
            raise AuthError(
                f"the API at {self.api_url} refused the login: wrong email or password",
                status=resp.status_code,
            )
        if resp.status_code == 429:  # not retried: waiting out the throttle is the caller's call
            raise ApiUnavailableError(
                f"the API at {self.api_url} refuses logins for now after too many failed "
                f"attempts (HTTP 429{_retry_after(resp)})",
                hint="wait, then check the email and password in the credentials Secret",
                status=429,
            )
        self._raise_for_status(resp, "POST /login")
        body = self._json(resp, "POST /login")
        token = body.get("token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ProtocolError("the login response has no token")
        self._claims = decode_claims(token)
        self._token = token
        log.info("logged in to %s (role %s)", self.api_url, self._claims.get("role"))

    def _token_fresh(self) -> bool:
        if self._token is None:
            return False
        exp = self._claims.get("exp")
        if isinstance(exp, int | float):
            return self._clock() < float(exp) - REFRESH_MARGIN
        return True

    def envelope_key(self) -> bytes:
        """``K_env`` for this user and fingerprint (derived once)."""
        return self._key_derivation().result()

    def _key_derivation(self) -> Background[bytes]:
        """The derivation of ``K_env``, started on first call (its result is kept)."""
        if self._kdf is None:
            self._kdf = Background(self._derive_envelope_key, name="loader-kdf")
        return self._kdf

    def _derive_envelope_key(self) -> bytes:
        user_key = envelope.derive_user_key(self._credentials.email, self._credentials.password)
        return envelope.derive_envelope_key(user_key, self.fingerprint)

    # -- transport ----------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        """One call with retries on connection errors, timeouts and 5xx, all within the deadline."""
        url = self.api_url + path
        attempts = self.http.retries + 1
        deadline = time.monotonic() + self.http.deadline
        for attempt in range(attempts):
            last = attempt == attempts - 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._late(method, path)
            try:
                reply = self._attempt(
                    method, url, json=json, params=params, headers=headers, deadline=deadline
                )
            except requests.exceptions.SSLError as exc:
                raise ApiUnavailableError(
                    f"TLS verification failed for {self.api_url}",
                    hint="set LOADER_CA_BUNDLE to the CA that signed the API's certificate",
                ) from exc
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
            ) as exc:
                if time.monotonic() >= deadline:
                    raise self._late(method, path) from exc
                kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                if last:
                    raise ApiUnavailableError(
                        f"the API at {self.api_url} is unreachable ({method} {path}: {kind} "
                        f"after {attempts} attempts)"
                    ) from exc
                self._backoff(attempt, f"{method} {path}: {kind}", deadline)
                continue
            if reply.status_code >= 500:
                if last:
                    raise ApiUnavailableError(
                        f"the API at {self.api_url} answered {reply.status_code} to "
                        f"{method} {path} {attempts} times",
                        status=reply.status_code,
                    )
                self._backoff(attempt, f"{method} {path}: HTTP {reply.status_code}", deadline)
                continue
            if 300 <= reply.status_code < 400:
                raise self._redirected(method, path, reply)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _redirected(self, method: str, path: str, reply: _Reply) -> ProtocolError:
        """A 3xx: never followed, since the request carries credentials."""
        where = f" to {redact_url(printable(reply.location, 200))}" if reply.location else ""
        return ProtocolError(
            f"the API at {self.api_url} answered {method} {path} with a redirect "
            f"(HTTP {reply.status_code}){where}; requests with credentials do not "
            "follow redirects",
            hint="set LOADER_API_URL to the address the API really serves at "
            "(e.g. https:// instead of http://)",
            status=reply.status_code,
        )

    def _late(self, method: str, path: str) -> ApiUnavailableError:
        return ApiUnavailableError(
            f"the API at {self.api_url} gave no complete answer to {method} {path} within "
            f"{self.http.deadline:g} s",
            hint="check the API server and the network; LOADER_DEADLINE sets the limit",
        )

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        deadline: float,
    ) -> _Reply:
        """One request, its body read in pieces up to ``max_response``, cut at ``deadline``."""
        call = _CallWatch()
        _calls.watch = call
        try:
            with StreamWatch(abort=call.abort, deadline=deadline) as watch:
                resp = self.session.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=dict(headers or {}),
                    timeout=min(self.http.timeout, max(deadline - time.monotonic(), 0.001)),
                    verify=self._verify,
                    allow_redirects=False,
                    stream=True,
                )
                try:
                    call.raw = resp.raw  # the body's socket, once the connection lets go
                    body = self._read_body(resp, watch)
                finally:
                    resp.close()
        finally:
            _calls.watch = None
        if watch.fired:  # a close-delimited body ends quietly when its socket is cut
            raise requests.Timeout("the call's deadline passed")
        return _Reply(
            resp.status_code,
            body,
            resp.headers.get("Location", ""),
            resp.headers.get("Retry-After", ""),
        )

    def _read_body(self, resp: requests.Response, watch: StreamWatch) -> bytes:
        cap = self.http.max_response
        what = urlsplit(resp.url or "").path
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._too_big(what, cap)
        body = bytearray()
        for piece in resp.iter_content(BODY_PIECE):
            body += piece
            watch.progress(len(piece))
            if len(body) > cap:
                raise self._too_big(what, cap)
        return bytes(body)

    def _too_big(self, what: str, cap: int) -> ProtocolError:
        return ProtocolError(
            f"the API at {self.api_url} sent a response over {cap} bytes"
            + (f" to {printable(what, 200)}" if what else ""),
            hint="check LOADER_API_URL; LOADER_MAX_RESPONSE sets the limit",
        )

    def _backoff(self, attempt: int, why: str, deadline: float | None = None) -> None:
        delay = min(self.http.backoff_cap, self.http.backoff_base * (2**attempt))
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - time.monotonic()))
        log.warning("%s; retrying in %.1f s (%d/%d)", why, delay, attempt + 1, self.http.retries)
        self._sleep(delay)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        fingerprint: bool = False,
    ) -> Any:
        """An authenticated call; returns the decoded JSON body.

        Logs in when there is no token or it expires within 30 s; on 401/403
        logs in again and retries once.
        """
        if not self._token_fresh():
            self.login()
        for retry in (False, True):
            headers = {"Authorization": f"Bearer {self._token}"}
            if fingerprint:
                headers["X-Hardware-Fingerprint"] = self.fingerprint
            resp = self._send(method, path, json=json, params=params, headers=headers)
            if resp.status_code in (401, 403):
                if not retry:
                    log.info("%s %s: HTTP %d, logging in again", method, path, resp.status_code)
                    self.login()
                    continue
                code, message = self._error_body(resp)
                detail = f": {message}" if message else ""
                raise AuthError(
                    f"the API refused {method} {path} (HTTP {resp.status_code}){detail}",
                    hint=(
                        _FORBIDDEN_HINTS.get(code or 0, _FORBIDDEN_HINTS[12])
                        if resp.status_code == 403
                        else None
                    ),
                    status=resp.status_code,
                )
            self._raise_for_status(resp, f"{method} {path}")
            return self._json(resp, f"{method} {path}")
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _error_body(resp: _Reply) -> tuple[int | None, str]:
        try:
            body = json.loads(resp.body)
        except ValueError:
            return None, ""
        if not isinstance(body, Mapping):
            return None, ""
        code = body.get("ErrorCode")
        message = body.get("Message")
        return (
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            printable(str(message)) if message is not None else "",
        )

    def _raise_for_status(self, resp: _Reply, what: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        code, message = self._error_body(resp)
        detail = f": {message}" if message else ""
        if status == 404:
            raise NotFoundError(f"{what}: not found{detail}", status=status)
        if status == 409:
            raise ConflictError(
                f"{what}: conflict (ErrorCode {code}){detail}",
                hint=_CONFLICT_HINTS.get(code or 0),
                error_code=code,
                api_message=message,
            )
        if status == 400:
            raise ProtocolError(f"{what}: the API rejected the request{detail}", status=status)
        if status == 429:
            raise ApiUnavailableError(
                f"{what}: the API asks to slow down (HTTP 429{_retry_after(resp)}){detail}",
                status=status,
            )
        raise ApiError(f"{what}: HTTP {status}{detail}", status=status)

    @staticmethod
    def _json(resp: _Reply, what: str) -> Any:
        try:
            return json.loads(resp.body)
        except ValueError as exc:
            raise ProtocolError(f"{what}: the response is not JSON") from exc

    def _open(self, body: Any, purpose: str) -> Any:
        sealed = body.get("envelope") if isinstance(body, Mapping) else None
        if not isinstance(sealed, str):
            raise ProtocolError(f"the {purpose} response has no envelope")
        return envelope.open_envelope(self.envelope_key(), purpose, sealed)

    # -- endpoints ----------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """``GET /me``."""
        body = self.request("GET", "/me")
        return dict(body) if isinstance(body, Mapping) else {}

    def get_cdn_config(self) -> CdnConfig:
        """``GET /cdn-config``: the S3 endpoint and key pairs (write only for uploaders)."""
        body = self.request("GET", "/cdn-config", fingerprint=True)
        return CdnConfig.from_dict(self._open(body, "cdn-config"))

    def get_resource(self, folder: str, name: str, version: str | None = None) -> ResourceRecord:
        """``GET /resources/{folder}/{name}``: small part, key and digest."""
        params = {"version": version} if version else None
        body = self.request(
            "GET", f"/resources/{_seg(folder)}/{_seg(name)}", params=params, fingerprint=True
        )
        return ResourceRecord.from_dict(self._open(body, "resource"))

    def put_resource(self, folder: str, name: str, record: Mapping[str, Any]) -> str:
        """``PUT /resources/{folder}/{name}``; returns the registered version."""
        body = self.request("PUT", f"/resources/{_seg(folder)}/{_seg(name)}", json=dict(record))
        return _version(body, record)

    def list_entries(self, kind: str, folder: str | None = None) -> list[Mapping[str, Any]]:
        """The listing of ``kind`` (``GET /{kind}[?folder=F]``), entries the API may serve.

        ``kind`` is ``resources`` or ``archives``.  The listing needs no
        envelope and binds no hardware, so a publisher can check before
        uploading.  Entries that are not objects are left out.
        """
        if kind not in ("resources", "archives"):
            raise ValueError(f"unknown kind {kind!r}")
        params = None if folder is None else {"folder": folder}
        body = self.request("GET", f"/{kind}", params=params)
        items = body.get(kind) if isinstance(body, Mapping) else None
        if not isinstance(items, list):
            raise ProtocolError(f"GET /{kind}: the listing has no `{kind}` list")
        return [item for item in items if isinstance(item, Mapping)]

    def listing_item(self, kind: str, folder: str, name: str) -> Mapping[str, Any] | None:
        """The listing entry of ``folder/name`` (``GET /{kind}?folder=F``), or None."""
        for item in self.list_entries(kind, folder):
            if item.get("folder") == folder and item.get("name") == name:
                return item
        return None

    def list_versions(self, kind: str, folder: str, name: str) -> list[str]:
        """The registered versions of ``folder/name``, oldest first (``[]`` if none)."""
        item = self.listing_item(kind, folder, name)
        versions = (item or {}).get("versions") or []
        return [str(v.get("version")) for v in versions if isinstance(v, Mapping)]

    def ensure_publishable(self, kind: str, folder: str, name: str, version: str | None) -> None:
        """Refuse, before anything goes to the CDN, what the API would refuse at registration.

        :class:`AuthError` if ``folder/name`` is owned by another user and this
        one is not an admin (the API would answer 403/13); :class:`ConflictError`
        (ErrorCode 31) if an explicit ``version`` is already registered.  The CDN
        key carries no version, so an upload refused only at registration would
        already have replaced the registered big part.
        """
        item = self.listing_item(kind, folder, name)
        if item is None:
            return
        owner = item.get("owner")
        me = self._credentials.email.strip().lower()
        if "owner" in item and owner != me and self.role != "admin":
            whose = f"owned by {printable(str(owner), 200)}" if owner else "unowned"
            raise AuthError(
                f"{folder}/{name} is {whose}: only its owner or an admin may publish new "
                "versions (ErrorCode 13); nothing was uploaded",
                hint=_FORBIDDEN_HINTS[13],
                status=403,
            )
        versions = [
            str(v.get("version")) for v in item.get("versions") or [] if isinstance(v, Mapping)
        ]
        if version is not None and version in versions:
            raise ConflictError(
                f"{folder}/{name} version {version} is already registered (ErrorCode 31); "
                "nothing was uploaded",
                hint=_CONFLICT_HINTS[31],
                error_code=31,
                api_message="",
            )

    def get_key_fragment(self, folder: str, name: str, version: str | None = None) -> KeyFragment:
        """``GET /archives/{folder}/{name}/key-fragment``."""
        params = {"version": version} if version else None
        body = self.request(
            "GET",
            f"/archives/{_seg(folder)}/{_seg(name)}/key-fragment",
            params=params,
            fingerprint=True,
        )
        return KeyFragment.from_dict(self._open(body, "key-fragment"))

    def put_archive(self, folder: str, name: str, record: Mapping[str, Any]) -> str:
        """``PUT /archives/{folder}/{name}``; returns the registered version."""
        body = self.request("PUT", f"/archives/{_seg(folder)}/{_seg(name)}", json=dict(record))
        return _version(body, record)


_FORBIDDEN_HINTS = {
    12: "this user's role may not do this; use an uploader account",
    13: "another uploader owns this folder/name; ask its owner or an admin, or use another name",
}

_CONFLICT_HINTS = {
    30: "this user is bound to other hardware; ask the API operator to release a device",
    31: "this version already exists with other content; choose another --version",
}


def _retry_after(resp: _Reply) -> str:
    seconds = resp.retry_after.strip()
    return f", retry after {seconds} s" if seconds.isdigit() else ""


def _seg(value: str) -> str:
    return quote(value, safe="")


def _version(body: Any, record: Mapping[str, Any]) -> str:
    if isinstance(body, Mapping) and body.get("version") is not None:
        return str(body["version"])
    return str(record.get("version", ""))
