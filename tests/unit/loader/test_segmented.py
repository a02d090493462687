"""Resource format 2 (``azaion_loader.segmented``): round trips, and the tampering it catches."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from azaion_loader.crypto import EncryptingReader, encrypt_bytes
from azaion_loader.errors import IntegrityError
from azaion_loader.pipeline import BufferRing
from azaion_loader.segmented import (
    ARCHIVE_AAD,
    RESOURCE_AAD,
    SEGMENT_SIZE,
    TAG_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    segment_count,
    segmented_size,
)

KEY = bytes(range(32))
SEG = SEGMENT_SIZE + TAG_SIZE


def _fill_from(data: bytes):  # type: ignore[no-untyped-def]
    src = io.BytesIO(data)

    def fill(view: memoryview) -> int:
        got = 0
        while got < len(view):
            n = src.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    return fill


def seal(plain: bytes, key: bytes = KEY) -> tuple[bytes, str]:
    enc = SegmentEncryptor(key)
    cipher = b"".join(enc.pieces(_fill_from(plain)))
    return cipher, enc.digest.hexdigest()


def open_all(cipher: bytes, key: bytes = KEY, *, chunk: int = 1 << 21, size: int | None = None):  # type: ignore[no-untyped-def]
    dec = SegmentDecryptor(key, len(cipher) if size is None else size)
    ring = BufferRing(3, SegmentDecryptor.buffer_size)
    out = bytearray()
    for i in range(0, len(cipher), chunk):
        for piece in dec.feed(cipher[i : i + chunk], ring):
            out += piece
    return bytes(out), dec.finish()


_SIZES = [
    0,
    1,
    15,
    16,
    4097,
    SEGMENT_SIZE - 1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    3 * SEGMENT_SIZE + 7,
]
# 7-byte chunks only for the small sizes: over megabytes they only slow the suite.
_CASES = [(n, c) for n in _SIZES for c in (7, 3072, SEG, 1 << 21) if c > 7 or n <= SEGMENT_SIZE]


@pytest.mark.parametrize(("size", "chunk"), _CASES)
def test_round_trip_whatever_the_chunking(size: int, chunk: int) -> None:
    plain = os.urandom(size)
    cipher, digest = seal(plain)
    assert len(cipher) == segmented_size(size) == size + TAG_SIZE * segment_count(size)
    opened, opened_digest = open_all(cipher, chunk=chunk)
    assert opened == plain
    assert opened_digest == digest


def test_sizes_and_segment_counts() -> None:
    assert segment_count(0) == 1 and segmented_size(0) == TAG_SIZE
    assert segment_count(SEGMENT_SIZE) == 1
    assert segment_count(SEGMENT_SIZE + 1) == 2
    assert segmented_size(2 * SEGMENT_SIZE) == 2 * SEG


def test_the_digest_is_not_the_sha256_of_the_ciphertext() -> None:
    # A format-1 reader compares SHA-256(C) with it and fails: never a silent misdecryption.
    cipher, digest = seal(os.urandom(5000))
    assert digest != hashlib.sha256(cipher).hexdigest()


@pytest.mark.parametrize("where", [0, SEGMENT_SIZE - 1, SEGMENT_SIZE + 3, SEG + 10, 2 * SEG + 1])
def test_a_flipped_bit_anywhere_fails_its_segment(where: int) -> None:
    plain = os.urandom(2 * SEGMENT_SIZE + 100)
    cipher = bytearray(seal(plain)[0])
    cipher[where] ^= 0x01
    expected = rf"segment {where // SEG} of .* failed authentication"
    with pytest.raises(IntegrityError, match=expected):
        open_all(bytes(cipher))


def test_swapped_segments_fail() -> None:
    cipher, _ = seal(os.urandom(3 * SEGMENT_SIZE))
    swapped = cipher[SEG : 2 * SEG] + cipher[:SEG] + cipher[2 * SEG :]
    with pytest.raises(IntegrityError, match="segment 0 of"):
        open_all(swapped)


def test_a_ciphertext_cut_at_a_segment_boundary_fails_on_the_last_flag() -> None:
    # Two of three segments, declared as the whole: the second was sealed as "not last".
    cipher, _ = seal(os.urandom(3 * SEGMENT_SIZE))
    with pytest.raises(IntegrityError, match="segment 1 of"):
        open_all(cipher[: 2 * SEG])


def test_a_short_feed_is_truncated() -> None:
    cipher, _ = seal(os.urandom(SEGMENT_SIZE + 50))
    with pytest.raises(IntegrityError, match="ended after 1 of 2 segments: truncated"):
        open_all(cipher[:SEG], size=len(cipher))


def test_bytes_beyond_the_size_fail() -> None:
    cipher, _ = seal(os.urandom(100))
    dec = SegmentDecryptor(KEY, len(cipher))
    ring = BufferRing(3, SegmentDecryptor.buffer_size)
    with pytest.raises(IntegrityError, match="longer than its registered size"):
        list(dec.feed(cipher + b"x", ring))


def test_another_key_fails() -> None:
    cipher, _ = seal(os.urandom(100))
    with pytest.raises(IntegrityError, match=r"segment 0 of .* failed authentication"):
        open_all(cipher, key=bytes(32))


def test_a_size_no_plaintext_has_is_refused() -> None:
    with pytest.raises(IntegrityError, match="no plaintext has 15 bytes"):
        SegmentDecryptor(KEY, 15)
    with pytest.raises(IntegrityError, match="cannot be a format-2 ciphertext"):
        SegmentDecryptor(KEY, SEG + 3)  # a second segment would need at least a tag


def test_a_format_1_ciphertext_fails_as_format_2() -> None:
    cipher = encrypt_bytes(KEY, os.urandom(1000 - 16 - 16))
    # Its length happens to be a format-2 length too; the tag still fails.
    assert segmented_size(len(cipher) - TAG_SIZE) == len(cipher)
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_all(cipher)


def test_plaintext_is_handed_on_only_after_its_tag() -> None:
    cipher, _ = seal(os.urandom(SEGMENT_SIZE + 10))
    dec = SegmentDecryptor(KEY, len(cipher))
    ring = BufferRing(3, SegmentDecryptor.buffer_size)
    assert list(dec.feed(cipher[: SEG - 1], ring)) == []  # all but the first tag's last byte
    pieces = list(dec.feed(cipher[SEG - 1 : SEG], ring))
    assert [len(p) for p in pieces] == [SEGMENT_SIZE]


def test_the_encryptor_refuses_misuse() -> None:
    enc = SegmentEncryptor(KEY)
    with pytest.raises(ValueError, match="exactly"):
        enc.seal(b"short", last=False)
    enc.seal(bytes(SEGMENT_SIZE), last=False)
    with pytest.raises(ValueError, match="empty"):
        enc.seal(b"", last=True)
    enc.seal(b"end", last=True)
    with pytest.raises(ValueError, match="after the last"):
        enc.seal(b"more", last=True)
    with pytest.raises(ValueError, match="32-byte key"):
        SegmentEncryptor(b"short key")


@pytest.mark.parametrize("size", [0, 500, 3 * SEGMENT_SIZE + 5])
def test_encrypting_reader_splits_format_2_like_format_1(size: int) -> None:
    plain = os.urandom(size)
    cipher, digest = seal(plain)
    seen = bytearray()
    small_size = min(3072, len(cipher) * 3 // 10)
    reader = EncryptingReader(
        io.BytesIO(plain), KEY, small_size=small_size, on_plain=seen.extend, segmented=True
    )
    big = bytearray()
    while piece := reader.read(8 << 20):
        big += piece
    assert len(reader.small) == small_size
    # Fresh segments under the same key and nonces give the same bytes: the format is deterministic.
    assert bytes(reader.small) + bytes(big) == cipher
    assert reader.digest.hexdigest() == digest
    assert reader.plain_size == size and reader.cipher_size == len(cipher)
    assert bytes(seen) == plain


def test_encrypting_reader_hands_whole_pieces_to_a_reader_of_pieces() -> None:
    # boto3 reads each multipart part with read(part size): each must come as one bytes object.
    plain = os.urandom(3 * SEGMENT_SIZE + 5)
    chunk = 2 * SEGMENT_SIZE
    reader = EncryptingReader(
        io.BytesIO(plain), KEY, small_size=3072, chunk_size=chunk, segmented=True
    )
    sizes = []
    while piece := reader.read(chunk):
        assert isinstance(piece, bytes)
        sizes.append(len(piece))
    total = segmented_size(len(plain)) - 3072
    assert sizes == [chunk, total - chunk]
    assert reader.cipher_size == segmented_size(len(plain))


def _sealed_with(aad: bytes | None, plain: bytes) -> bytes:
    """``plain`` through EncryptingReader, with ``aad`` (None: the default, a resource's)."""
    extra = {} if aad is None else {"aad": aad}
    reader = EncryptingReader(io.BytesIO(plain), KEY, segmented=True, **extra)
    return reader.read()


def _opened(aad: bytes | None, sealed: bytes) -> bytes:
    extra = {} if aad is None else {"aad": aad}
    dec = SegmentDecryptor(KEY, len(sealed), **extra)
    ring = BufferRing(2, SegmentDecryptor.buffer_size)
    plain = b"".join(bytes(p) for p in dec.feed(sealed, ring))
    dec.finish()
    return plain


@pytest.mark.parametrize("size", [0, 100, SEGMENT_SIZE + 3])
def test_resources_and_archives_open_only_as_what_they_are(size: int) -> None:
    plain = os.urandom(size)
    resource = _sealed_with(None, plain)
    archive = _sealed_with(ARCHIVE_AAD, plain)
    assert resource == _sealed_with(RESOURCE_AAD, plain)  # the default is a resource's
    assert resource != archive
    assert _opened(None, resource) == plain
    assert _opened(ARCHIVE_AAD, archive) == plain
    with pytest.raises(IntegrityError, match=r"segment 0 .* failed authentication"):
        _opened(ARCHIVE_AAD, resource)
    with pytest.raises(IntegrityError, match=r"segment 0 .* failed authentication"):
        _opened(RESOURCE_AAD, archive)


def test_the_two_aads_differ_and_name_what_they_seal() -> None:
    assert RESOURCE_AAD == b"azaion-loader/v2/resource"
    assert ARCHIVE_AAD == b"azaion-loader/v2/archive"
