"""AES-256-CBC streaming: round trips, OpenSSL vectors, padding checks, split arithmetic."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from azaion_loader import crypto
from azaion_loader.errors import IntegrityError

KEY = bytes(range(32))
IV = bytes(range(16, 32))
SIZES = [0, 1, 15, 16, 17, 31, 32, 3071, 3072, 3073, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 5]

# AES-256-CBC, FIPS-197 key 000102..1f, IV 101112..1f, plaintext "" -> one padding block.
EMPTY_VECTOR = "101112131415161718191a1b1c1d1e1f"


@pytest.mark.parametrize("n", SIZES)
def test_round_trip_and_size(n: int) -> None:
    plain = os.urandom(n)
    c = crypto.encrypt_bytes(KEY, plain, IV)
    assert len(c) == crypto.ciphertext_size(n) == 16 + 16 * (n // 16 + 1)
    assert c[:16] == IV
    assert crypto.decrypt_bytes(KEY, c) == plain


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 4096 + 3])
def test_matches_openssl(n: int) -> None:
    plain = bytes((i * 7) % 256 for i in range(n))
    ours = crypto.encrypt_bytes(KEY, plain, IV)
    theirs = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", KEY.hex(), "-iv", IV.hex()],
        input=plain,
        capture_output=True,
        check=True,
    ).stdout
    assert ours[16:] == theirs
    back = subprocess.run(
        ["openssl", "enc", "-d", "-aes-256-cbc", "-K", KEY.hex(), "-iv", IV.hex()],
        input=ours[16:],
        capture_output=True,
        check=True,
    ).stdout
    assert back == plain


def test_known_vector_empty_plaintext() -> None:
    c = crypto.encrypt_bytes(KEY, b"", IV)
    assert c.hex().startswith(EMPTY_VECTOR)
    assert crypto.decrypt_bytes(KEY, c) == b""
    # openssl enc -aes-256-cbc -K 0001..1f -iv 1011..1f < /dev/null | xxd -p
    assert c[16:].hex() == "5a6e045708fb7196f02e553d02c3a692"


@pytest.mark.parametrize("step", [1, 5, 16, 17, 4096])
def test_streaming_in_odd_chunks(step: int) -> None:
    plain = os.urandom(10_000)
    enc = crypto.Encryptor(KEY, IV)
    c = b"".join(enc.update(plain[i : i + step]) for i in range(0, len(plain), step))
    c += enc.finalize()
    assert c == crypto.encrypt_bytes(KEY, plain, IV)
    dec = crypto.Decryptor(KEY)
    p = b"".join(dec.update(c[i : i + step]) for i in range(0, len(c), step)) + dec.finalize()
    assert p == plain


def test_stream_functions_report_digests() -> None:
    plain = os.urandom(2_500_000)
    out = io.BytesIO()
    r = crypto.encrypt_stream(KEY, io.BytesIO(plain), out, iv=IV)
    c = out.getvalue()
    assert r.sha256_in == hashlib.sha256(plain).hexdigest()
    assert r.sha256_out == hashlib.sha256(c).hexdigest()
    back = io.BytesIO()
    r2 = crypto.decrypt_stream(KEY, io.BytesIO(c), back)
    assert back.getvalue() == plain and r2.sha256_in == r.sha256_out


def test_wrong_key_fails_padding_or_differs() -> None:
    c = crypto.encrypt_bytes(KEY, b"x" * 100, IV)
    other = bytes(32)
    try:
        assert crypto.decrypt_bytes(other, c) != b"x" * 100
    except IntegrityError:
        pass


@pytest.mark.parametrize("cut", [0, 5, 16, 17, 31])
def test_truncated_ciphertext_is_an_integrity_error(cut: int) -> None:
    c = crypto.encrypt_bytes(KEY, b"hello world, hello world", IV)
    with pytest.raises(IntegrityError):
        crypto.decrypt_bytes(KEY, c[:cut])


def test_bad_padding_is_an_integrity_error() -> None:
    c = bytearray(crypto.encrypt_bytes(KEY, b"a" * 32, IV))
    c[-17] ^= 0xFF  # flips the last plaintext byte: the padding byte
    with pytest.raises(IntegrityError, match="padding"):
        crypto.decrypt_bytes(KEY, bytes(c))


def test_key_size_checked() -> None:
    with pytest.raises(ValueError):
        crypto.Encryptor(b"short")


@pytest.mark.parametrize(
    ("c_len", "expected"),
    [
        (0, 0),
        (32, 9),
        (48, 14),
        (10240, 3072),
        (10236, 3070),
        (10237, 3071),
        (10250, 3072),
        (1 << 30, 3072),
    ],
)
def test_split_point(c_len: int, expected: int) -> None:
    assert crypto.split_point(c_len) == expected


@pytest.mark.parametrize("n", [*SIZES, 10**9, 4 * 2**30])
def test_split_arithmetic_for_plaintext_sizes(n: int) -> None:
    c_len = crypto.ciphertext_size(n)
    s = crypto.split_point(c_len)
    assert c_len % 16 == 0 and c_len > n
    assert 0 < s <= 3072 and s <= c_len * 3 // 10
    assert c_len - s > 0


def test_encrypting_reader_splits_and_digests() -> None:
    plain = os.urandom(3 * (1 << 20) + 11)
    c = crypto.encrypt_bytes(KEY, plain, IV)
    s = crypto.split_point(len(c))
    seen: list[int] = []
    reader = crypto.EncryptingReader(
        io.BytesIO(plain), KEY, small_size=s, iv=IV, progress=seen.append, chunk_size=65536
    )
    big = b""
    while chunk := reader.read(1_000_003):
        big += chunk
    assert bytes(reader.small) == c[:s] and big == c[s:]
    assert reader.digest.hexdigest() == hashlib.sha256(c).hexdigest()
    assert sum(seen) == len(plain) == reader.plain_size
    assert reader.cipher_size == len(c)


class _Recording(crypto.EncryptingReader):
    """Records every ciphertext piece the reader makes."""

    made: list[bytes]

    def _ciphertext(self) -> Iterator[bytes]:
        self.made = []
        for piece in super()._ciphertext():
            self.made.append(piece)
            yield piece


@pytest.mark.parametrize("small_size", [0, 3072, 1000])
@pytest.mark.parametrize("read_ahead", [0, 2])
def test_encrypting_reader_hands_whole_pieces_over_without_a_copy(
    small_size: int, read_ahead: int
) -> None:
    chunk = 64 * 1024
    plain = os.urandom(5 * chunk + 100)
    c = crypto.encrypt_bytes(KEY, plain, IV)
    plain_seen = hashlib.sha256()
    reader = _Recording(
        io.BytesIO(plain),
        KEY,
        small_size=small_size,
        iv=IV,
        on_plain=plain_seen.update,
        chunk_size=chunk,
        read_ahead=read_ahead,
    )
    reads = []
    while piece := reader.read(chunk):
        reads.append(piece)
    reader.close()
    assert bytes(reader.small) + b"".join(reads) == c
    assert reader.digest.hexdigest() == hashlib.sha256(c).hexdigest()
    assert plain_seen.hexdigest() == hashlib.sha256(plain).hexdigest()
    assert [len(r) for r in reads[:-1]] == [chunk] * (len(reads) - 1)
    if small_size % 16 == 0:  # aligned: every whole piece is the cipher's own bytes object
        made = {id(p) for p in reader.made}
        assert all(id(r) in made for r in reads[:-1])
        assert len(reader.made[0]) == (small_size or chunk)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 3056, 3057, 65536 - 16, 65536])
def test_encrypting_reader_at_the_piece_edges(size: int) -> None:
    plain = os.urandom(size)
    c = crypto.encrypt_bytes(KEY, plain, IV)
    s = crypto.split_point(len(c))
    reader = crypto.EncryptingReader(io.BytesIO(plain), KEY, small_size=s, iv=IV, chunk_size=65536)
    big = b""
    while piece := reader.read(65536):
        big += piece
    assert bytes(reader.small) + big == c and reader.cipher_size == len(c)


def test_encrypting_reader_refuses_a_chunk_that_is_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        crypto.EncryptingReader(io.BytesIO(b""), KEY, chunk_size=1000)
