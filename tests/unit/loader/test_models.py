"""Parsing the ``resource`` envelope's plaintext, with and without the plaintext digest."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from azaion_loader.errors import ProtocolError
from azaion_loader.models import ResourceRecord


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "folder": "models",
        "name": "m.bin",
        "version": "1",
        "small": base64.b64encode(b"s" * 9).decode(),
        "key": base64.b64encode(b"k" * 32).decode(),
        "sha256": "a" * 64,
        "size": 32,
        "plain_size": 0,
        "big_key": "m.bin.big",
        **extra,
    }


def test_a_record_without_the_plain_digest_is_valid() -> None:
    assert ResourceRecord.from_dict(_doc()).plain_sha256 is None
    assert ResourceRecord.from_dict(_doc(plain_sha256=None)).plain_sha256 is None


def test_the_plain_digest_is_kept_lowercase() -> None:
    assert ResourceRecord.from_dict(_doc(plain_sha256="B" * 64)).plain_sha256 == "b" * 64


@pytest.mark.parametrize("value", ["b" * 63, "z" * 64, 5, ""])
def test_a_malformed_plain_digest_is_a_protocol_error(value: object) -> None:
    with pytest.raises(ProtocolError, match="plain_sha256"):
        ResourceRecord.from_dict(_doc(plain_sha256=value))
