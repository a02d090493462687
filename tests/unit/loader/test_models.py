"""Parsing the ``resource`` envelope's plaintext, with and without the plaintext digest."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from azaion_loader.errors import ProtocolError
from azaion_loader.models import KeyFragment, ResourceRecord


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


def test_a_record_without_a_format_is_format_1() -> None:
    assert ResourceRecord.from_dict(_doc()).format == 1
    assert ResourceRecord.from_dict(_doc(format=None)).format == 1
    assert ResourceRecord.from_dict(_doc(format=1)).format == 1


def test_a_format_2_record_keeps_its_format_and_fields() -> None:
    rec = ResourceRecord.from_dict(_doc(format=2, size=16, sha256="C" * 64))
    assert (rec.format, rec.size, rec.sha256) == (2, 16, "c" * 64)


@pytest.mark.parametrize("value", [0, 3, 7, -1])
def test_an_unknown_format_asks_for_an_upgrade(value: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        ResourceRecord.from_dict(_doc(format=value))
    assert str(caught.value) == (
        f"resource record: format {value} is not known to this loader; upgrade it"
    )


def test_an_unknown_format_is_reported_before_fields_it_may_lay_out_otherwise() -> None:
    doc = _doc(format=3)
    del doc["small"]
    with pytest.raises(ProtocolError, match="format 3 is not known"):
        ResourceRecord.from_dict(doc)


@pytest.mark.parametrize("value", ["2", True, 2.0, [2]])
def test_a_format_that_is_not_an_integer_is_a_protocol_error(value: object) -> None:
    with pytest.raises(ProtocolError, match="no valid `format`"):
        ResourceRecord.from_dict(_doc(format=value))


def _fragment_doc(**extra: Any) -> dict[str, Any]:
    return {
        "folder": "images",
        "name": "app",
        "version": "v1",
        "fragment": base64.b64encode(b"f" * 32).decode(),
        "sha256": "b" * 64,
        "size": 48,
        "images": ["demo/app:1.0"],
        "object_key": "app.enc",
        **extra,
    }


@pytest.mark.parametrize("value", [None, 1])
def test_a_key_fragment_without_a_format_is_format_1_and_its_file_unchanged(
    value: object,
) -> None:
    doc = _fragment_doc() if value is None else _fragment_doc(format=value)
    frag = KeyFragment.from_dict(doc)
    assert frag.format == 1
    # fragment.json of a format-1 archive is the same as before format 2.
    assert frag.to_dict() == _fragment_doc()


def test_a_format_2_key_fragment_round_trips_with_its_format() -> None:
    frag = KeyFragment.from_dict(_fragment_doc(format=2, size=17))
    assert (frag.format, frag.size) == (2, 17)
    assert frag.to_dict() == _fragment_doc(format=2, size=17)
    assert KeyFragment.from_dict(frag.to_dict()) == frag


@pytest.mark.parametrize("value", [0, 3])
def test_a_key_fragment_of_an_unknown_format_asks_for_an_upgrade(value: int) -> None:
    with pytest.raises(ProtocolError, match=f"format {value} is not known to this loader"):
        KeyFragment.from_dict(_fragment_doc(format=value))


@pytest.mark.parametrize("value", ["2", True, 2.0])
def test_a_key_fragment_format_that_is_not_an_integer_is_a_protocol_error(value: object) -> None:
    with pytest.raises(ProtocolError, match="no valid `format`"):
        KeyFragment.from_dict(_fragment_doc(format=value))
