"""The bounded stages behind fetch: read-ahead, the writer sink, reusable buffers."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from azaion_loader import crypto
from azaion_loader.atomic_write import AtomicWriter
from azaion_loader.pipeline import (
    Background,
    BufferRing,
    Sink,
    file_sha256,
    prefetch,
    reuse_big_allocations,
)

KEY = bytes(range(32))


def test_prefetch_keeps_order_and_reraises() -> None:
    def source() -> Iterator[int]:
        yield from range(10)
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        for item in prefetch(source(), 2):
            seen.append(item)
    assert seen == list(range(10))


def test_prefetch_stops_its_thread_when_closed() -> None:
    produced = []

    def source() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(source(), 2)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.3)
    assert len(produced) < 10  # bounded read-ahead, and no reading after close
    assert not any(t.name == "loader-read" and t.is_alive() for t in threading.enumerate())


def test_sink_consumes_in_order() -> None:
    got: list[int] = []
    with Sink(got.append, depth=2) as sink:
        for i in range(100):
            sink.put(i)
        sink.close()
    assert got == list(range(100))


def test_sink_error_reaches_the_producer() -> None:
    def consume(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    sink: Sink[int] = Sink(consume, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(1000):
            sink.put(i)
        sink.close()


def test_sink_is_cancelled_when_the_producer_fails() -> None:
    got: list[int] = []

    def slow(item: int) -> None:
        time.sleep(0.05)
        got.append(item)

    with pytest.raises(RuntimeError), Sink(slow, depth=2) as sink:
        for i in range(5):
            sink.put(i)
        raise RuntimeError("digest mismatch")
    assert len(got) < 5


def test_ring_buffers_are_not_reused_while_the_sink_holds_them() -> None:
    """A slow consumer sees every buffer exactly as the producer filled it."""
    seen: list[bytes] = []

    def consume(view: memoryview) -> None:
        time.sleep(0.002)
        seen.append(bytes(view))

    expected = []
    with Sink(consume, depth=2) as sink:
        ring = sink.ring(64)
        for i in range(200):
            buf = ring.next(64)
            buf[:64] = bytes([i % 256]) * 64
            expected.append(bytes(buf[:64]))
            sink.put(memoryview(buf)[:64])
        sink.close()
    assert seen == expected


def test_ring_grows_a_buffer_when_asked_for_more() -> None:
    ring = BufferRing(2, 8)
    assert len(ring.next(4)) == 8
    assert len(ring.next(100)) == 100


@pytest.mark.parametrize("chunk", [1, 15, 16, 17, 1000, 65536])
def test_update_into_matches_decrypt_bytes(chunk: int) -> None:
    plain = os.urandom(100_003)
    c = crypto.encrypt_bytes(KEY, plain)
    dec = crypto.Decryptor(KEY)
    out = bytearray()
    buf = bytearray(crypto.Decryptor.buffer_size(chunk))
    for i in range(0, len(c), chunk):
        out += dec.update_into(c[i : i + chunk], buf)
    out += dec.finalize()
    assert bytes(out) == plain


def test_update_into_refuses_a_small_buffer() -> None:
    dec = crypto.Decryptor(KEY)
    with pytest.raises(ValueError, match="too small"):
        dec.update_into(b"x" * 64, bytearray(64))


def test_update_into_still_checks_the_padding() -> None:
    c = bytearray(crypto.encrypt_bytes(KEY, b"hello"))
    c[-17] ^= 1  # flips the last padding byte: 0x0b becomes 0x0a
    dec = crypto.Decryptor(KEY)
    dec.update_into(bytes(c), bytearray(crypto.Decryptor.buffer_size(len(c))))
    with pytest.raises(crypto.IntegrityError):
        dec.finalize()


def test_writer_with_flush_behind_writes_everything(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(tmp_path, "f")
    data = os.urandom(3 * 1024 * 1024 + 5)
    writer = AtomicWriter(target, flush_behind=1024 * 1024)
    for i in range(0, len(data), 100_000):
        writer.write(data[i : i + 100_000])
    writer.commit()
    with open(target, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("read_ahead", [0, 3])
def test_encrypting_reader_with_read_ahead(read_ahead: int) -> None:
    import io

    plain = os.urandom(5 * 1024 * 1024 + 3)
    seen: list[int] = []
    reader = crypto.EncryptingReader(
        io.BytesIO(plain),
        KEY,
        small_size=3072,
        iv=bytes(16),
        progress=seen.append,
        chunk_size=1 << 20,
        read_ahead=read_ahead,
    )
    big = b""
    while chunk := reader.read(777_777):
        big += chunk
    reader.close()
    whole = bytes(reader.small) + big
    assert whole == crypto.encrypt_bytes(KEY, plain, bytes(16))
    assert reader.digest.hexdigest() == crypto.sha256_bytes(whole)
    assert sum(seen) == len(plain) and reader.cipher_size == len(whole)


def test_encrypting_reader_close_stops_the_read_ahead() -> None:
    import io

    reader = crypto.EncryptingReader(
        io.BytesIO(os.urandom(4 << 20)), KEY, chunk_size=4096, read_ahead=2
    )
    assert reader.read(10)
    reader.close()
    assert not any(t.name == "loader-read" and t.is_alive() for t in threading.enumerate())


def test_background_returns_the_value_and_reraises() -> None:
    started = threading.Event()

    def work() -> int:
        started.set()
        return 42

    job = Background(work)
    assert started.wait(5)
    assert job.result() == 42

    def fail() -> int:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        Background(fail).result()


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 3 * 4096 + 5])
def test_file_sha256_matches_hashlib(tmp_path: os.PathLike[str], size: int) -> None:
    data = os.urandom(size)
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(data)
    # A small chunk size crosses chunk boundaries at every size above.
    assert file_sha256(path, chunk_size=4096) == (hashlib.sha256(data).hexdigest(), size)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_big_allocations_takes_effect_with_glibc() -> None:
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    assert reuse_big_allocations() is True
    assert reuse_big_allocations() is True  # idempotent: the CLI may call it again
