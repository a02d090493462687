"""The CDN's GETs without a botocore client: signed as a client signs them, answered as it answers.

``cdn._ObjectGets`` signs each GET with botocore's S3 SigV4 signer and sends
it through botocore's HTTP session.  moto's S3 server (the integration tests)
does not check signatures, so here the signed request is compared with the one
a botocore client makes for the same call at the same instant, and a small
HTTP server plays the error answers and the retries.
"""

from __future__ import annotations

import datetime
import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.awsrequest
import pytest

from azaion_loader.cdn import CdnClient, _ObjectGets
from azaion_loader.errors import (
    CdnAccessError,
    CdnError,
    CdnNotFoundError,
    CdnUnavailableError,
)
from azaion_loader.models import CdnConfig, CdnKeys
from azaion_loader.settings import HttpSettings

KEYS = CdnKeys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime.datetime(2026, 11, 30, 21, 45, 0)


class _NoBody:
    status = 200
    headers: dict[str, str] = {}

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        return iter(())


def _client_request(endpoint: str, **call: Any) -> Any:
    """The request a botocore client (as ``CdnClient`` makes one) sends for ``get_object``."""
    client = CdnClient(CdnConfig(endpoint, "eu-west-1", KEYS))._make_client(KEYS)
    sent: list[Any] = []

    def capture(request: Any, **_: Any) -> Any:
        sent.append(request)
        headers = {"Content-Length": "0", "ETag": '"e"'}
        return botocore.awsrequest.AWSResponse(request.url, 200, headers, _NoBody())

    client.meta.events.register("before-send.s3.GetObject", capture)
    client.get_object(**call)
    return sent[0]


@pytest.mark.parametrize("endpoint", ["http://s3.test:9000", "https://cdn.example/s3/"])
@pytest.mark.parametrize(
    "call",
    [
        {"Bucket": "models", "Key": "model.bin.big"},
        {"Bucket": "models", "Key": "a b+ü~%.big", "Range": "bytes=5000-", "IfMatch": '"e1"'},
    ],
)
def test_the_signed_get_is_the_one_a_botocore_client_sends(
    endpoint: str, call: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: NOW)
    theirs = _client_request(endpoint, **call)
    headers = {}
    if "Range" in call:
        headers["Range"] = call["Range"]
    if "IfMatch" in call:
        headers["If-Match"] = call["IfMatch"]
    gets = _ObjectGets(endpoint, "eu-west-1", KEYS, HttpSettings())
    ours = gets.request(call["Bucket"], call["Key"], headers)
    assert ours.url == theirs.url.split("?x-id=")[0]

    def text(value: str | bytes | None) -> str | None:
        return value.decode() if isinstance(value, bytes) else value

    for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "Range", "If-Match"):
        assert text(ours.headers.get(name)) == text(theirs.headers.get(name)), name
    assert KEYS.secret_access_key not in str(ours.headers)


class _Server(http.server.ThreadingHTTPServer):
    answers: list[tuple[int, bytes]]
    requests: list[dict[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers.items()))
        status, body = self.server.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"e1"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.answers, srv.requests = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _cdn(srv: _Server, retries: int = 2) -> CdnClient:
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    http = HttpSettings(retries=retries, backoff_base=0.01, timeout=5, min_rate=0)
    return CdnClient(CdnConfig(endpoint, "us-east-1", KEYS), http=http)


def _error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


def test_a_get_streams_the_object_into_the_ring(server: _Server) -> None:
    data = bytes(range(256)) * 300
    server.answers.append((200, data))
    size, chunks = _cdn(server).iter_object("b", "k", chunk_size=4096)
    assert size == len(data)
    assert b"".join(bytes(c) for c in chunks) == data
    assert server.requests[0]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID")


def test_5xx_and_slowdown_are_retried_then_succeed(server: _Server) -> None:
    server.answers += [(503, _error("SlowDown")), (500, b""), (200, b"x" * 100)]
    size, chunks = _cdn(server).iter_object("b", "k")
    assert (size, b"".join(bytes(c) for c in chunks)) == (100, b"x" * 100)
    assert len(server.requests) == 3


def test_5xx_beyond_the_retries_is_unavailable(server: _Server) -> None:
    server.answers += [(503, _error("SlowDown"))] * 3
    with pytest.raises(CdnUnavailableError, match="HTTP 503"):
        _cdn(server, retries=2).iter_object("b", "k")
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "NoSuchKey", CdnNotFoundError),
        (404, "NoSuchBucket", CdnNotFoundError),
        (403, "SignatureDoesNotMatch", CdnAccessError),
        (403, "", CdnAccessError),
    ],
)
def test_errors_map_onto_the_tree_without_retries(
    server: _Server, status: int, code: str, kind: type
) -> None:
    server.answers.append((status, _error(code) if code else b""))
    with pytest.raises(kind) as info:
        _cdn(server).iter_object("b", "k")
    assert len(server.requests) == 1
    assert KEYS.secret_access_key not in info.value.one_line()


def test_an_invalid_endpoint_is_refused_before_any_request() -> None:
    cdn = CdnClient(CdnConfig("http://bad host:9000", "us-east-1", KEYS))
    with pytest.raises(CdnError, match="not a valid URL"):
        cdn.iter_object("b", "k")


def test_a_download_builds_no_botocore_client() -> None:
    """Making a client costs ~0.1 s of CPU per fetch (service model, endpoint rules)."""
    code = (
        "import sys\n"
        "from azaion_loader.cdn import CdnClient\n"
        "from azaion_loader.models import CdnConfig, CdnKeys\n"
        "c = CdnClient(CdnConfig('http://127.0.0.1:9', 'r', CdnKeys('a', 'b')))\n"
        "c._reader()\n"
        "print(sorted(m for m in sys.modules if m in ('botocore.client', 'botocore.session', "
        "'boto3')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[_Server, str]]:
    """The same server over TLS, with a self-signed certificate for 127.0.0.1; and its PEM."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subj = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subj, *files],
        check=True,
        capture_output=True,
    )
    srv = _Server(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    srv.answers, srv.requests = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, str(cert)
    srv.shutdown()
    srv.server_close()


def test_tls_with_the_ca_bundle_and_without(tls_server: tuple[_Server, str]) -> None:
    """``LOADER_CA_BUNDLE`` reaches the GETs' HTTP session; an unknown CA is refused."""
    srv, ca = tls_server
    endpoint = f"https://127.0.0.1:{srv.server_address[1]}"
    srv.answers.append((200, b"secret bytes"))
    http = HttpSettings(retries=0, timeout=5, min_rate=0, ca_bundle=ca)
    size, chunks = CdnClient(CdnConfig(endpoint, "us-east-1", KEYS), http=http).iter_object(
        "b", "k"
    )
    assert (size, b"".join(bytes(c) for c in chunks)) == (12, b"secret bytes")
    srv.answers.append((200, b"secret bytes"))
    http = HttpSettings(retries=0, timeout=5, min_rate=0)
    with pytest.raises(CdnUnavailableError, match="SSLError"):
        CdnClient(CdnConfig(endpoint, "us-east-1", KEYS), http=http).iter_object("b", "k")
