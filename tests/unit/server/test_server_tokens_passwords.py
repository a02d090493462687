"""Login hashes and JWTs."""

from __future__ import annotations

import time

import jwt
import pytest

from azaion_loader.server.failures import TokenInvalid
from azaion_loader.server.passwords import hash_password, verify_password
from azaion_loader.server.records import User
from azaion_loader.server.tokens import TokenService

SECRET = b"s" * 32
USER = User(id="u1", email="a@b.c", role="uploader", password_hash="", user_key="", max_devices=1)


def test_password_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert "pw" not in first.split("$")
    assert verify_password("pw", first) and verify_password("pw", second)
    assert not verify_password("pW", first)
    assert not verify_password("pw", "garbage")
    assert not verify_password("pw", "bcrypt$1$1$1$AA==$AA==")


def test_token_claims() -> None:
    service = TokenService(SECRET, ttl=600)
    token = service.issue(USER, now=1000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "u1",
        "email": "a@b.c",
        "role": "uploader",
        "gen": 0,
        "iat": 1000,
        "exp": 1600,
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert service.check(service.issue(USER))["sub"] == "u1"


def test_expired_forged_and_rotated_tokens_are_refused() -> None:
    service = TokenService(SECRET, ttl=60)
    with pytest.raises(TokenInvalid, match="expired"):
        service.check(service.issue(USER, now=time.time() - 120))
    forged = jwt.encode({"sub": "u1", "role": "admin", "iat": 0, "exp": 2**40}, b"x" * 32)
    with pytest.raises(TokenInvalid):
        service.check(forged)
    unsigned = jwt.encode({"sub": "u1", "role": "admin", "iat": 0, "exp": 2**40}, None, "none")
    with pytest.raises(TokenInvalid):
        service.check(unsigned)
    token = service.issue(USER)
    service.rotate()
    with pytest.raises(TokenInvalid) as caught:
        service.check(token)
    assert (caught.value.status, caught.value.error_code) == (401, 11)
