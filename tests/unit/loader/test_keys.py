"""KDFs, envelopes and the fingerprint: stable, documented, and failing the right way."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from azaion_loader import envelope
from azaion_loader.errors import AuthError, FingerprintError, ProtocolError
from azaion_loader.fingerprint import compute_fingerprint, go_arch, read_inputs
from azaion_loader.settings import HardwareSettings


def test_user_key_is_scrypt_per_protocol() -> None:
    expected = hashlib.scrypt(
        b"s3cret", salt=b"azaion-loader/v1/user|a@example.com", n=2**14, r=8, p=1, dklen=32
    )
    assert envelope.derive_user_key("A@Example.com", "s3cret") == expected
    assert envelope.derive_user_key("a@example.com", "s3cret") == expected
    assert envelope.derive_user_key("a@example.com", "other") != expected


def test_envelope_and_archive_keys_are_hkdf() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    uk = bytes(32)
    fp = "ab" * 32
    want = HKDF(hashes.SHA256(), 32, None, b"azaion-loader/v1/envelope|" + fp.encode()).derive(uk)
    assert envelope.derive_envelope_key(uk, fp) == want
    assert envelope.derive_envelope_key(uk, "cd" * 32) != want
    frag = bytes(range(32))
    want_a = HKDF(hashes.SHA256(), 32, None, b"azaion-loader/v1/archive").derive(frag)
    assert envelope.derive_archive_key(frag) == want_a


def test_envelope_round_trip_and_failures() -> None:
    key = envelope.derive_envelope_key(bytes(32), "00" * 32)
    sealed = envelope.seal_envelope(key, "resource", {"a": [1, 2]})
    assert envelope.open_envelope(key, "resource", sealed) == {"a": [1, 2]}
    raw = base64.b64decode(sealed)
    assert raw[0] == 1 and len(raw) == 1 + 12 + len(b'{"a":[1,2]}') + 16
    other = envelope.derive_envelope_key(bytes(32), "11" * 32)
    with pytest.raises(AuthError, match="cannot open"):
        envelope.open_envelope(other, "resource", sealed)
    with pytest.raises(AuthError):
        envelope.open_envelope(key, "cdn-config", sealed)  # purpose is authenticated
    with pytest.raises(ProtocolError):
        envelope.open_envelope(key, "resource", "not base64!!")
    with pytest.raises(ProtocolError, match="too short"):
        envelope.open_envelope(key, "resource", base64.b64encode(b"\x01short").decode())


def test_envelope_test_vector() -> None:
    """A fixed envelope (docs/protocol.md §3): any implementation must open it the same way."""
    key = bytes(range(32))
    vector = "AQABAgMEBQYHCAkKCzwgpXK/gOAhum21/ZPTWlyhq8qnWR7p1C47qMyW8hUvsCc="
    assert envelope.open_envelope(key, "resource", vector) == {"size": 7, "v": "1"}
    # The same bytes re-sealed from the spec with a plain AES-GCM.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = bytes(range(12))
    body = AESGCM(key).encrypt(nonce, b'{"size":7,"v":"1"}', b"\x01resource")
    assert base64.b64encode(b"\x01" + nonce + body).decode() == vector


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_envelope_version_is_a_protocol_error(version: int) -> None:
    key = envelope.derive_envelope_key(bytes(32), "00" * 32)
    raw = bytearray(base64.b64decode(envelope.seal_envelope(key, "resource", {"a": 1})))
    raw[0] = version
    with pytest.raises(ProtocolError, match=f"format version {version}") as err:
        envelope.open_envelope(key, "resource", base64.b64encode(bytes(raw)).decode())
    assert "upgrade the loader" in err.value.one_line()


def test_fingerprint_formula_and_normalisation() -> None:
    text = "azaion-loader/v1/fingerprint\nmachine-id=abc\narch=amd64\n"
    fp = hashlib.sha256(text.encode()).hexdigest()
    assert compute_fingerprint("abc", "amd64") == fp
    assert compute_fingerprint(" ABC\n", "AMD64") == fp
    assert compute_fingerprint("abd", "amd64") != fp
    with pytest.raises(FingerprintError):
        compute_fingerprint("", "amd64")


def test_go_arch() -> None:
    assert go_arch("x86_64") == "amd64"
    assert go_arch("aarch64") == "arm64"
    assert go_arch("riscv64") == "riscv64"


def test_read_inputs_from_files_and_overrides(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789ABCDEF0123456789abcdef\n")
    hw = HardwareSettings(arch="x86_64", machine_id_paths=(str(tmp_path / "none"), str(mid)))
    inputs = read_inputs(hw)
    assert inputs.machine_id == "0123456789abcdef0123456789abcdef"
    assert inputs.machine_id_source == str(mid)
    assert inputs.arch == "amd64" and inputs.arch_source == "LOADER_HW_ARCH"
    assert inputs.fingerprint == read_inputs(hw).fingerprint  # stable
    over = read_inputs(HardwareSettings(machine_id="FFFF", arch="arm64"))
    assert over.machine_id == "ffff" and over.machine_id_source == "LOADER_HW_MACHINE_ID"


def test_no_machine_id_is_a_fingerprint_error(tmp_path: Path) -> None:
    with pytest.raises(FingerprintError, match="machine id"):
        read_inputs(HardwareSettings(machine_id_paths=(str(tmp_path / "none"),)))
