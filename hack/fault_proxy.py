"""A TCP proxy that breaks a response stream at a chosen byte: real faults, no mocks.

    proxy = FaultProxy(upstream_port)            # listens on 127.0.0.1:<free port>
    proxy.arm(b"GET /models/model.bin.big", "slow", at=512 * 1024, rate=20_000)
    ...                                           # point a client at proxy.url
    proxy.reached.wait(10)                        # the fault point has passed

Each accepted connection gets two pump threads.  Client to server passes
unchanged; the proxy looks for ``match`` in it and, once seen on a
connection, counts the bytes of the server's answer from there.  Past ``at``
bytes, the fault:

- ``cut``: both sockets are closed (a dropped link);
- ``stall``: nothing more is forwarded (a peer that hangs);
- ``slow``: ``rate`` bytes per second, a few bytes at a time (a trickle that
  every per-read timeout lets through);
- ``503``: the server's answer is replaced by ``503 Service Unavailable``
  (S3's "slow down"), and the connection closed;
- ``hold``: nothing more is forwarded until :meth:`release`, then the rest
  of the answer goes through unchanged (a stream held while something else
  happens, e.g. a node's kubelet restarted mid-transfer).

A fault applies to ``times`` connections (default 1), so a retry or a second
fetch can go through.  Every wait is bounded by :meth:`close`.

The proxy listens on loopback by default; ``host`` binds another address
(e.g. the bridge a kind cluster's nodes reach the host on) and
``upstream_host`` names the server's.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

__all__ = ["FaultProxy"]

_PIECE = 64 * 1024


@dataclass
class _Plan:
    match: bytes
    kind: str
    at: int
    rate: float
    times: int


class FaultProxy:
    """``host``:<free port> forwarding to ``upstream_host``:``upstream_port``, one armed fault."""

    def __init__(
        self, upstream_port: int, *, host: str = "127.0.0.1", upstream_host: str = "127.0.0.1"
    ) -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._plan: _Plan | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._released = threading.Event()
        self._sockets: list[socket.socket] = []
        self.reached = threading.Event()
        """Set when a response passed the fault point (the fault is now acting)."""
        self.held = 0
        """Connections a ``hold`` fault is holding now."""
        self.matched = 0
        """Connections the last armed fault was applied to (requests holding ``match``)."""
        self.connections = 0
        self.sent = 0
        """Bytes of answers forwarded to clients, over all connections."""
        threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True).start()

    def arm(self, match: bytes, kind: str, *, at: int, rate: float = 0.0, times: int = 1) -> None:
        """Break the answer to the next ``times`` requests holding ``match`` past ``at`` bytes."""
        if kind not in ("cut", "stall", "slow", "503", "hold"):
            raise ValueError(kind)
        with self._lock:
            self._plan = _Plan(match, kind, at, rate, times)
            self.matched = 0
            self.reached.clear()
            self._released.clear()

    def disarm(self) -> None:
        with self._lock:
            self._plan = None

    def release(self) -> None:
        """Disarm, and let every held answer go on (a no-op when nothing is held)."""
        self.disarm()
        self._released.set()

    def close(self) -> None:
        """Stop accepting, end every fault's wait and close every connection."""
        self._closed.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    # -- internals ---------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(
                    (self.upstream_host, self.upstream_port), timeout=10
                )
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            state: dict[str, _Plan | None] = {"plan": None}
            threading.Thread(
                target=self._upstream, args=(client, server, state), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, state), daemon=True
            ).start()

    def _take(self, data: bytes) -> _Plan | None:
        with self._lock:
            plan = self._plan
            if plan is None or plan.times <= 0 or plan.match not in data:
                return None
            plan.times -= 1
            self.matched += 1
            return _Plan(plan.match, plan.kind, plan.at, plan.rate, 1)

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(_PIECE):
                if state["plan"] is None:
                    state["plan"] = self._take(data)
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _downstream(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        sent = 0  # of the answer since the plan was taken
        try:
            while data := server.recv(_PIECE):
                plan = state["plan"]
                if plan is None:
                    self._send(client, data)
                    continue
                keep = max(0, min(len(data), plan.at - sent))
                self._send(client, data[:keep])
                sent += keep
                if keep == len(data):
                    continue
                self.reached.set()
                if plan.kind == "hold":
                    if not self._hold(client, data[keep:]):
                        return  # closed while held
                    state["plan"] = None  # released: the rest passes unchanged
                    continue
                self._fault(plan, client, data[keep:], server)
                return
        except OSError:
            pass
        finally:
            for sock in (client, server):
                # shutdown first: the other pump may be blocked in recv() on the same socket,
                # and close() alone would not end the connection until that returns.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _send(self, client: socket.socket, data: bytes) -> None:
        client.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _hold(self, client: socket.socket, rest: bytes) -> bool:
        """Wait for :meth:`release`, then send ``rest``; False if the proxy closed instead."""
        with self._lock:
            self.held += 1
        try:
            self._released.wait()
        finally:
            with self._lock:
                self.held -= 1
        if self._closed.is_set():
            return False
        self._send(client, rest)
        return True

    def _fault(
        self, plan: _Plan, client: socket.socket, rest: bytes, server: socket.socket
    ) -> None:
        if plan.kind == "cut":
            return
        if plan.kind == "503":
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your rate</Message></Error>"
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            client.sendall(head.encode() + body)
            return
        if plan.kind == "stall":
            self._closed.wait()
            return
        step = max(1, int(plan.rate / 20))  # 20 sends a second
        pending = rest
        while not self._closed.is_set():
            if not pending:
                pending = server.recv(_PIECE)
                if not pending:
                    return
            self._send(client, pending[:step])
            pending = pending[step:]
            time.sleep(step / plan.rate)
