"""KubeClient's Job listing and watch stream: JSON lines split anywhere, errors as KubeError."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import urllib3

from azaion_operator.errors import KubeUnavailableError
from azaion_operator.kube import KubeClient


class _Response:
    def __init__(self, chunks: list[bytes | Exception]) -> None:
        self.chunks = chunks
        self.released = False

    def stream(self, amt: int, decode_content: bool) -> Iterator[bytes]:
        for chunk in self.chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    def release_conn(self) -> None:
        self.released = True


class _Batch:
    def __init__(self, response: _Response) -> None:
        self.response = response
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def list_namespaced_job(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if kwargs.get("watch"):
            return self.response
        listing = {"metadata": {"resourceVersion": "42"}, "items": [{"metadata": {"name": "a"}}]}
        return types.SimpleNamespace(data=json.dumps(listing).encode())


def _client(response: _Response) -> tuple[KubeClient, _Batch]:
    kube = KubeClient(kubernetes.client.ApiClient())
    batch = _Batch(response)
    kube._batch = batch  # type: ignore[assignment]
    return kube, batch


def test_events_split_across_chunks_are_read_whole_and_the_connection_released() -> None:
    lines = b"".join(
        json.dumps({"type": t, "object": {"metadata": {"resourceVersion": v}}}).encode() + b"\n"
        for t, v in (("ADDED", "43"), ("BOOKMARK", "44"), ("MODIFIED", "45"))
    )
    response = _Response([lines[:10], lines[10:75], lines[75:], b"\n"])
    kube, batch = _client(response)
    events = list(kube.watch_jobs("edge", {"a": "b", "c": "d"}, "42", timeout=300))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "MODIFIED"]
    assert response.released
    (args, kwargs) = batch.calls[0]
    assert args == ("edge",)
    assert kwargs["label_selector"] == "a=b,c=d" and kwargs["resource_version"] == "42"
    assert kwargs["watch"] and kwargs["allow_watch_bookmarks"] and kwargs["timeout_seconds"] == 300


def test_a_stream_that_breaks_raises_a_transient_kube_error() -> None:
    broken = urllib3.exceptions.ProtocolError("Connection broken")
    response = _Response([b'{"type": "ADDED", "object": {}}\n', broken])
    kube, _ = _client(response)
    events = kube.watch_jobs("edge", {}, "1", timeout=300)
    assert next(events)["type"] == "ADDED"
    with pytest.raises(KubeUnavailableError, match="watch Jobs in edge"):
        next(events)
    assert response.released


def test_the_listing_gives_its_version() -> None:
    kube, batch = _client(_Response([]))
    items, version = kube.list_jobs_versioned("edge", {"a": "b"})
    assert (items, version) == ([{"metadata": {"name": "a"}}], "42")
    assert batch.calls[0][1]["label_selector"] == "a=b"
