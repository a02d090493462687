"""Request validation: split arithmetic, sizes, names, base64 fields."""

from __future__ import annotations

import base64
import math
import os
from typing import Any

import pytest

from azaion_loader.server.failures import BadRequest
from azaion_loader.server.validation import (
    check_fingerprint,
    check_folder,
    check_name,
    parse_archive_put,
    parse_cdn_config,
    parse_resource_put,
    parse_user_put,
    resource_size,
    small_part_size,
)

MIB = 1048576


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _resource_body(plain_size: int, override: dict[str, object] | None = None) -> dict[str, object]:
    size = 16 + 16 * (plain_size // 16 + 1)
    if (override or {}).get("format") == 2:
        size = plain_size + 16 * max(1, math.ceil(plain_size / MIB))
    body: dict[str, object] = {
        "version": "1",
        "small": _b64(os.urandom(small_part_size(size))),
        "key": _b64(os.urandom(32)),
        "sha256": "ab" * 32,
        "size": size,
        "plain_size": plain_size,
    }
    body.update(override or {})
    return body


@pytest.mark.parametrize(
    ("size", "expected"),
    [(32, 9), (48, 14), (10240, 3072), (10224, 3067), (10256, 3072), (1 << 30, 3072)],
)
def test_small_part_is_min_3072_and_30_percent(size: int, expected: int) -> None:
    assert small_part_size(size) == expected


@pytest.mark.parametrize("plain_size", [0, 1, 15, 16, 17, 3072, 10240, 5 * 1024 * 1024])
def test_consistent_resource_bodies_are_accepted(plain_size: int) -> None:
    record = parse_resource_put(_resource_body(plain_size), created=1.0)
    assert record.plain_size == plain_size
    assert record.version == "1"


def test_version_defaults_to_the_digest_prefix() -> None:
    body = _resource_body(100)
    del body["version"]
    assert parse_resource_put(body, created=0).version == "ab" * 8


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"size": 64}, "size"),
        ({"size": 50}, "size"),
        ({"key": _b64(b"short")}, "key"),
        ({"key": "not base64!"}, "key"),
        ({"small": _b64(b"x")}, "small"),
        ({"sha256": "AB" * 32}, "sha256"),
        ({"plain_size": -1}, "plain_size"),
        ({"plain_size": True}, "plain_size"),
        ({"version": "../x"}, "version"),
        ({"plain_sha256": "AB" * 32}, "plain_sha256"),
        ({"plain_sha256": "ab" * 31}, "plain_sha256"),
        ({"plain_sha256": "g" * 64}, "plain_sha256"),
        ({"plain_sha256": 12}, "plain_sha256"),
    ],
)
def test_inconsistent_resource_bodies_name_the_field(
    override: dict[str, object], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_resource_put(_resource_body(100, override), created=0)
    assert caught.value.status == 400
    assert caught.value.error_code == 40
    assert field in caught.value.message


def test_plain_digest_is_optional_and_kept_when_given() -> None:
    assert parse_resource_put(_resource_body(100), created=0).plain_sha256 is None
    body = _resource_body(100, {"plain_sha256": None})
    assert parse_resource_put(body, created=0).plain_sha256 is None
    body = _resource_body(100, {"plain_sha256": "cd" * 32})
    assert parse_resource_put(body, created=0).plain_sha256 == "cd" * 32


def test_archive_body_checks_fragment_and_images() -> None:
    body = {"fragment": _b64(os.urandom(32)), "sha256": "c" * 64, "size": 48, "images": ["a/b:1"]}
    assert parse_archive_put(body, created=0).images == ("a/b:1",)
    with pytest.raises(BadRequest, match="fragment"):
        parse_archive_put({**body, "fragment": _b64(b"x")}, created=0)
    with pytest.raises(BadRequest, match="images"):
        parse_archive_put({**body, "images": "a/b:1"}, created=0)


@pytest.mark.parametrize("folder", ["ab", "-ab", "Models", "a_b", "a..b", "a" * 64, "ab/"])
def test_bad_folders(folder: str) -> None:
    with pytest.raises(BadRequest):
        check_folder(folder)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "x" * 201])
def test_bad_names(name: str) -> None:
    with pytest.raises(BadRequest):
        check_name(name)


def test_fingerprint_header_must_be_lowercase_hex() -> None:
    assert check_fingerprint("a" * 64) == "a" * 64
    for bad in (None, "A" * 64, "a" * 63, "g" * 64):
        with pytest.raises(BadRequest):
            check_fingerprint(bad)


def test_user_body_defaults_and_messages_hide_the_password() -> None:
    assert parse_user_put({"email": "X@Y.z", "password": "pw"}) == ("x@y.z", "pw", "user", 1)
    with pytest.raises(BadRequest) as caught:
        parse_user_put({"email": "x@y.z", "password": "canary-pw", "role": "root"})
    assert "canary-pw" not in caught.value.message


def test_cdn_config_write_may_be_null() -> None:
    pair = {"access_key_id": "a", "secret_access_key": "b"}
    parsed = parse_cdn_config({"endpoint_url": "http://s3:9000", "read": pair, "write": None})
    assert parsed == {
        "endpoint_url": "http://s3:9000",
        "region": "us-east-1",
        "read": pair,
        "write": None,
    }
    with pytest.raises(BadRequest):
        parse_cdn_config({"endpoint_url": "s3:9000", "read": pair})


@pytest.mark.parametrize(
    ("plain_size", "size"),
    [
        (0, 16),  # one empty segment, one tag
        (1, 17),
        (MIB - 1, MIB - 1 + 16),
        (MIB, MIB + 16),
        (MIB + 1, MIB + 1 + 32),
        (5 * MIB, 5 * MIB + 80),
        (5 * MIB + 7, 5 * MIB + 7 + 96),
    ],
)
def test_format_2_sizes_are_the_plaintext_plus_a_tag_per_segment(
    plain_size: int, size: int
) -> None:
    assert resource_size(plain_size, 2) == size
    record = parse_resource_put(_resource_body(plain_size, {"format": 2}), created=0)
    assert (record.format, record.size, record.plain_size) == (2, size, plain_size)


@pytest.mark.parametrize("fmt", [None, 1])
def test_an_absent_null_or_1_format_is_format_1(fmt: object) -> None:
    body = _resource_body(100)
    assert "format" not in body
    assert parse_resource_put(body, created=0).format == 1
    assert parse_resource_put({**body, "format": fmt}, created=0).format == 1


@pytest.mark.parametrize(
    "size_of",
    [
        lambda n: 16 + 16 * (n // 16 + 1),  # format 1's rule
        lambda n: n + 16,  # one tag short for n > 1 MiB
        lambda n: n + 16 * (n // MIB + 2),  # one tag too many
    ],
)
def test_a_format_2_size_off_the_rule_is_400_naming_size(size_of: Any) -> None:
    plain_size = 3 * MIB + 5
    body = _resource_body(plain_size, {"format": 2})
    body["size"] = size_of(plain_size)
    body["small"] = _b64(os.urandom(small_part_size(body["size"])))
    with pytest.raises(BadRequest) as caught:
        parse_resource_put(body, created=0)
    assert (caught.value.status, caught.value.error_code) == (400, 40)
    assert caught.value.message.startswith("size does not match plain_size for format 2")


def test_a_format_1_size_is_not_accepted_as_format_2_and_back() -> None:
    with pytest.raises(BadRequest, match="size"):
        parse_resource_put({**_resource_body(100), "format": 2}, created=0)
    with pytest.raises(BadRequest, match="size"):
        parse_resource_put({**_resource_body(100, {"format": 2}), "format": 1}, created=0)


@pytest.mark.parametrize("fmt", [0, 3, -1, "2", 2.0, True, [2], {}])
def test_an_unknown_format_is_400_naming_format(fmt: object) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_resource_put(_resource_body(100, {"format": fmt}), created=0)
    assert (caught.value.status, caught.value.error_code) == (400, 40)
    assert caught.value.message == "format must be 1 or 2 (absent or null: 1)"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"key": _b64(b"short")}, "key"),
        ({"small": _b64(b"x")}, "small"),
        ({"sha256": "AB" * 32}, "sha256"),
        ({"plain_sha256": "ab" * 31}, "plain_sha256"),
        ({"plain_size": -1}, "plain_size"),
        ({"size": 15}, "size"),
    ],
)
def test_format_2_keeps_the_other_checks(override: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_resource_put(_resource_body(100, {"format": 2, **override}), created=0)
    assert field in caught.value.message


def _archive_body(size: int, **extra: object) -> dict[str, object]:
    return {
        "fragment": _b64(os.urandom(32)),
        "sha256": "cd" * 32,
        "size": size,
        "images": ["demo/app:1.0"],
        **extra,
    }


@pytest.mark.parametrize("fmt", [None, 1])
def test_an_archive_without_a_format_or_with_1_is_format_1(fmt: object) -> None:
    assert parse_archive_put(_archive_body(48), created=0).format == 1
    assert parse_archive_put(_archive_body(48, format=fmt), created=0).format == 1


@pytest.mark.parametrize("size", [16, 17, MIB + 16, MIB + 17 + 16, 3 * MIB + 5 + 64])
def test_a_format_2_archive_takes_any_possible_format_2_length(size: int) -> None:
    record = parse_archive_put(_archive_body(size, format=2), created=0)
    assert (record.format, record.size) == (2, size)


@pytest.mark.parametrize("size", [0, 15, MIB + 16 + 1, MIB + 16 + 16, 2 * (MIB + 16) + 16])
def test_a_format_2_archive_of_an_impossible_length_is_400_naming_size(size: int) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_archive_put(_archive_body(size, format=2), created=0)
    assert (caught.value.status, caught.value.error_code) == (400, 40)
    assert "size" in caught.value.message


def test_a_format_2_length_is_not_accepted_as_format_1() -> None:
    with pytest.raises(BadRequest, match="size"):
        parse_archive_put(_archive_body(17), created=0)


@pytest.mark.parametrize("fmt", [0, 3, -1, "2", 2.0, True, [2], {}])
def test_an_unknown_archive_format_is_400_naming_format(fmt: object) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_archive_put(_archive_body(48, format=fmt), created=0)
    assert (caught.value.status, caught.value.error_code) == (400, 40)
    assert caught.value.message == "format must be 1 or 2 (absent or null: 1)"
