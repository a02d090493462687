"""Resuming a broken CDN stream: the rules that decide what is asked for, and when to stop.

The byte-level behaviour runs against moto's S3 server through a TCP proxy in
tests/integration/test_transfer_faults.py; here a fake S3 client plays the
answers a real server may give and moto does not (a Range request ignored).
"""

from __future__ import annotations

from typing import Any

import pytest

from azaion_loader.cdn import CdnClient
from azaion_loader.errors import CdnUnavailableError
from azaion_loader.models import CdnConfig, CdnKeys
from azaion_loader.settings import HttpSettings

DATA = bytes(range(256)) * 64  # 16 KiB


class Body:
    """A response body that ends after ``stop`` bytes of ``data``."""

    def __init__(self, data: bytes, stop: int | None = None) -> None:
        self.data = data[:stop] if stop is not None else data
        self.closed = False

    def read(self, n: int) -> bytes:
        piece, self.data = self.data[:n], self.data[n:]
        return piece

    def close(self) -> None:
        self.closed = True


class FakeS3:
    """Answers GETs from ``answers`` in turn; records each request's arguments."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(kwargs)
        return self.answers.pop(0)


def answer(body: Body, status: int = 200, etag: str = '"e1"', **extra: Any) -> dict[str, Any]:
    return {
        "Body": body,
        "ContentLength": len(body.data),
        "ETag": etag,
        "ResponseMetadata": {"HTTPStatusCode": status},
        **extra,
    }


def client(fake: FakeS3, retries: int = 3) -> CdnClient:
    cfg = CdnConfig("http://s3", "r", CdnKeys("a", "b"), None)
    http = HttpSettings(retries=retries, backoff_base=0.01, min_rate=0)
    return CdnClient(cfg, http=http, client_factory=lambda keys: fake)


def test_a_cut_stream_is_asked_again_from_the_first_missing_byte() -> None:
    first = answer(Body(DATA))
    first["Body"] = Body(DATA, stop=5000)
    rest = answer(
        Body(DATA[5000:]), status=206, ContentRange=f"bytes 5000-{len(DATA) - 1}/{len(DATA)}"
    )
    fake = FakeS3(first, rest)
    size, chunks = client(fake).iter_object("b", "k", chunk_size=4096)
    assert size == len(DATA)
    assert b"".join(bytes(c) for c in chunks) == DATA
    assert fake.requests[1] == {
        "Bucket": "b",
        "Key": "k",
        "Range": "bytes=5000-",
        "IfMatch": '"e1"',
    }


def test_a_server_that_ignores_range_ends_the_download_with_a_clear_error() -> None:
    first = answer(Body(DATA))
    first["Body"] = Body(DATA, stop=5000)
    fake = FakeS3(first, answer(Body(DATA), status=200))
    _, chunks = client(fake).iter_object("b", "k", chunk_size=4096)
    with pytest.raises(CdnUnavailableError, match="ignored the Range request") as info:
        b"".join(bytes(c) for c in chunks)
    assert "cannot resume after 5000 of 16384 bytes" in info.value.message
    assert len(fake.requests) == 2  # not asked again: the server will not do better


def test_another_etag_on_the_resume_is_a_replaced_object() -> None:
    first = answer(Body(DATA))
    first["Body"] = Body(DATA, stop=5000)
    other = answer(
        Body(DATA[5000:]),
        status=206,
        etag='"e2"',
        ContentRange=f"bytes 5000-{len(DATA) - 1}/{len(DATA)}",
    )
    _, chunks = client(FakeS3(first, other)).iter_object("b", "k", chunk_size=4096)
    with pytest.raises(CdnUnavailableError, match="was replaced on the CDN"):
        b"".join(bytes(c) for c in chunks)


def test_resumes_are_bounded_by_the_retries() -> None:
    def cut(start: int) -> dict[str, Any]:
        body = Body(DATA[start:], stop=1000)
        return answer(body, status=206, ContentRange=f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")

    first = answer(Body(DATA))
    first["Body"] = Body(DATA, stop=1000)
    fake = FakeS3(first, cut(1000), cut(2000))
    _, chunks = client(fake, retries=2).iter_object("b", "k", chunk_size=4096)
    with pytest.raises(CdnUnavailableError, match=r"after 3000 of 16384 bytes \(after 2 resumes\)"):
        b"".join(bytes(c) for c in chunks)
    assert [r.get("Range") for r in fake.requests] == [None, "bytes=1000-", "bytes=2000-"]
