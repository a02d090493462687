"""The API client against small misbehaving HTTP servers on loopback (issue 11).

Each server is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 that answers one
way: a redirect, an endless body, an error message full of control
characters.  The client is the real one, over real sockets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from azaion_loader.api_client import ApiClient
from azaion_loader.errors import LoaderError, NotFoundError, ProtocolError
from azaion_loader.settings import Credentials, HttpSettings

CREDS = Credentials("u@example.com", "canary-password-123")
FP = "ab" * 32

Answer = Callable[[BaseHTTPRequestHandler], None]


class Server:
    def __init__(self, answer: Answer) -> None:
        self.bodies: list[bytes] = []
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(self.rfile.read(length))
                answer(self)

            do_GET = do_POST = do_PUT = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Server]]:
    servers: list[Server] = []

    def make(answer: Answer) -> Server:
        servers.append(Server(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def client(url: str, **http: Any) -> ApiClient:
    return ApiClient(url, CREDS, fingerprint=FP, http=HttpSettings(retries=0, **http))


def test_login_does_not_follow_a_redirect(serve: Callable[[Answer], Server]) -> None:
    elsewhere = serve(lambda h: reply(h, 200, b'{"token": "x"}'))
    redirecting = serve(lambda h: reply(h, 307, b"", Location=f"{elsewhere.url}/login"))
    with pytest.raises(ProtocolError) as info:
        client(redirecting.url).login()
    assert "redirect (HTTP 307)" in info.value.message
    assert elsewhere.bodies == []  # the password went nowhere else
    assert "canary-password-123" not in info.value.one_line()


def test_redirect_message_hides_user_info(serve: Callable[[Answer], Server]) -> None:
    server = serve(lambda h: reply(h, 302, b"", Location="https://bob:s3cret@evil.example/x"))
    with pytest.raises(ProtocolError) as info:
        client(server.url).login()
    assert "s3cret" not in info.value.one_line()
    assert "***@evil.example" in info.value.one_line()


def endless(handler: BaseHTTPRequestHandler) -> None:
    """200 with no Content-Length and megabytes of JSON-ish bytes until the client leaves."""
    handler.send_response(200)
    handler.send_header("Connection", "close")
    handler.end_headers()
    piece = b" " * 65536
    try:
        for _ in range(2000):  # 128 MiB at most
            handler.wfile.write(piece)
    except OSError:
        return


def test_login_body_over_the_cap_is_refused_early(serve: Callable[[Answer], Server]) -> None:
    server = serve(endless)
    with pytest.raises(ProtocolError) as info:
        client(server.url, max_response=1024 * 1024).login()
    assert "over 1048576 bytes" in info.value.message
    assert info.value.exit_code == 15


def test_declared_length_over_the_cap_is_refused_before_reading(
    serve: Callable[[Answer], Server],
) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(400 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.write(b"{")

    server = serve(huge)
    with pytest.raises(ProtocolError, match="over 1024 bytes"):
        client(server.url, max_response=1024).login()


def test_control_characters_from_the_api_never_reach_the_message(
    serve: Callable[[Answer], Server],
) -> None:
    nasty = "gone\x1b[2J\x1b[31m red\x07\r\nfake line\u202eevil\x00"
    tokens = {"token": "eyJhbGciOiJub25lIn0.eyJleHAiOiA5OTk5OTk5OTk5fQ.c"}

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/login":
            reply(handler, 200, json.dumps(tokens).encode())
        else:
            reply(handler, 404, json.dumps({"ErrorCode": 20, "Message": nasty}).encode())

    server = serve(answer)
    with pytest.raises(NotFoundError) as info:
        client(server.url).me()
    line = info.value.one_line()
    assert "gone" in line and "fake line" in line
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in line)


def test_user_info_in_the_api_url_is_refused() -> None:
    with pytest.raises(LoaderError) as info:
        client("https://bob:s3cret@api.example")
    assert "s3cret" not in info.value.one_line()
    assert info.value.exit_code == 3
