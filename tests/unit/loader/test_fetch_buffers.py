"""The fetch's reusable input buffers: many chunks through the ring, a slow writer, exact output.

``resources._decode`` reads the big part into a ring of ``READ_AHEAD + 2``
buffers from a reader thread while the caller decrypts and a writer thread
writes; a buffer handed out again too early would corrupt the plaintext.
Here the ring wraps many times and the writer is slowed, so the read-ahead
queue is full most of the time.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from azaion_loader import resources
from azaion_loader.atomic_write import AtomicWriter
from azaion_loader.crypto import encrypt_bytes, split_point
from azaion_loader.models import FORMAT_SEGMENTED, ResourceRecord
from azaion_loader.segmented import SegmentEncryptor


class SlowWriter(AtomicWriter):
    def write(self, data: bytes | memoryview) -> None:
        time.sleep(0.002)
        super().write(data)


def _encrypted(fmt: int, key: bytes, plain: bytes) -> tuple[bytes, str]:
    """The ciphertext of ``plain`` in resource format ``fmt``, and its registered digest."""
    if fmt == FORMAT_SEGMENTED:
        enc = SegmentEncryptor(key)
        cipher = b"".join(enc.pieces(io.BytesIO(plain).readinto))
        return cipher, enc.digest.hexdigest()
    cipher = encrypt_bytes(key, plain)
    return cipher, hashlib.sha256(cipher).hexdigest()


# Format 1: one ring buffer per chunk; format 2: one per checked segment.
@pytest.mark.parametrize("fmt", [1, FORMAT_SEGMENTED])
def test_many_chunks_through_the_ring_with_a_slow_writer(tmp_path: Path, fmt: int) -> None:
    plain = os.urandom(13 * resources.FETCH_CHUNK + 777)  # the ring of 5 wraps twice and more
    key = os.urandom(32)
    cipher, digest = _encrypted(fmt, key, plain)
    cut = split_point(len(cipher))
    big = tmp_path / "r.big"
    big.write_bytes(cipher[cut:])
    rec = ResourceRecord(
        folder="f",
        name="r",
        version="1",
        small=cipher[:cut],
        key=key,
        sha256=digest,
        size=len(cipher),
        plain_size=len(plain),
        big_key="r.big",
        format=fmt,
    )
    out = SlowWriter(tmp_path / "out.bin")
    chunks = resources._iter_file(big, resources._read_ring())
    plain_sha = resources._decode(rec, chunks, out, tee=None, progress=lambda n: None, source="t")
    out.commit()
    assert plain_sha == hashlib.sha256(plain).hexdigest()
    assert (tmp_path / "out.bin").read_bytes() == plain
