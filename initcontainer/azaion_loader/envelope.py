"""Key derivation and the authenticated envelope (docs/protocol.md §3, §6).

- ``K_user = scrypt(password, salt="azaion-loader/v1/user|" + lower(email), n=2^14, r=8, p=1)``
- ``K_env  = HKDF-SHA256(K_user, salt=None, info="azaion-loader/v1/envelope|" + fp)``
- ``K_a    = HKDF-SHA256(F, salt=None, info="azaion-loader/v1/archive")``
- envelope = ``base64(version(1) || nonce(12) || AES-256-GCM(K_env, nonce, JSON, aad))``
  with ``aad = version || purpose``; version 1 = this layout with AES-256-GCM;
  a client meeting another version says so
  (:class:`~azaion_loader.errors.ProtocolError`) instead of blaming the password

Both sides use this module: the client opens envelopes, the reference server
seals them.  A wrong password or fingerprint makes the GCM tag fail, which
:func:`open_envelope` reports as :class:`~azaion_loader.errors.AuthError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from azaion_loader.errors import AuthError, ProtocolError

__all__ = [
    "NONCE_SIZE",
    "derive_archive_key",
    "derive_envelope_key",
    "derive_user_key",
    "open_envelope",
    "seal_envelope",
]

VERSION = 1
"""Envelope format ``version || nonce || AES-256-GCM``; a new layout or cipher bumps it."""
NONCE_SIZE = 12
TAG_SIZE = 16
USER_SALT_PREFIX = "azaion-loader/v1/user|"
ENVELOPE_INFO_PREFIX = "azaion-loader/v1/envelope|"
ARCHIVE_INFO = "azaion-loader/v1/archive"
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_LENGTH = 32


def derive_user_key(email: str, password: str) -> bytes:
    """The per-user key: scrypt of the password, salted with the lowercased email."""
    salt = (USER_SALT_PREFIX + email.lower()).encode("utf-8")
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=64 * 1024 * 1024,
        dklen=KEY_LENGTH,
    )


def _hkdf(ikm: bytes, info: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None, info=info.encode("utf-8")
    ).derive(ikm)


def derive_envelope_key(user_key: bytes, fingerprint: str) -> bytes:
    """The per-user+hardware envelope key: HKDF-SHA256 of ``K_user`` bound to ``fp``."""
    return _hkdf(user_key, ENVELOPE_INFO_PREFIX + fingerprint)


def derive_archive_key(fragment: bytes) -> bytes:
    """The image-archive key: HKDF-SHA256 of the key fragment."""
    return _hkdf(fragment, ARCHIVE_INFO)


def seal_envelope(key: bytes, purpose: str, payload: Any) -> str:
    """Encrypt ``payload`` (JSON-serialisable) for ``purpose``; returns base64 text."""
    nonce = os.urandom(NONCE_SIZE)
    data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    sealed = AESGCM(key).encrypt(nonce, data, _aad(VERSION, purpose))
    return base64.b64encode(bytes([VERSION]) + nonce + sealed).decode("ascii")


def _aad(version: int, purpose: str) -> bytes:
    # The version is authenticated too: a downgrade cannot pass as version 1.
    return bytes([version]) + purpose.encode("ascii")


def open_envelope(key: bytes, purpose: str, envelope: str) -> Any:
    """Authenticate and decrypt an envelope sealed for ``purpose``; returns the JSON value.

    Raises :class:`AuthError` when the tag does not verify (wrong password,
    wrong fingerprint or wrong purpose) and :class:`ProtocolError` when the
    envelope is not well-formed.
    """
    try:
        raw = base64.b64decode(envelope, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ProtocolError(f"the {purpose} envelope is not valid base64") from exc
    if not raw:
        raise ProtocolError(f"the {purpose} envelope is empty")
    if raw[0] != VERSION:
        raise ProtocolError(
            f"the {purpose} envelope has format version {raw[0]}; this loader knows "
            f"version {VERSION} only",
            hint="upgrade the loader to one that speaks the API's envelope format",
        )
    if len(raw) < 1 + NONCE_SIZE + TAG_SIZE:
        raise ProtocolError(f"the {purpose} envelope is too short")
    nonce, sealed = raw[1 : 1 + NONCE_SIZE], raw[1 + NONCE_SIZE :]
    try:
        data = AESGCM(key).decrypt(nonce, sealed, _aad(VERSION, purpose))
    except InvalidTag as exc:
        raise AuthError(
            f"cannot open the {purpose} envelope: the password or the hardware fingerprint "
            "does not match what the API holds",
            hint="check the password; a changed machine id or architecture changes the key",
        ) from exc
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"the {purpose} envelope does not hold JSON") from exc
