"""botocore failures map onto the CDN branch of the error tree."""

from __future__ import annotations

import botocore.exceptions
import pytest

from azaion_loader.cdn import CdnClient, map_cdn_error
from azaion_loader.errors import CdnAccessError, CdnError, CdnNotFoundError, CdnUnavailableError
from azaion_loader.models import CdnConfig, CdnKeys


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("NoSuchBucket", 404), CdnNotFoundError),
        (client_error("NoSuchKey", 404), CdnNotFoundError),
        (client_error("AccessDenied", 403), CdnAccessError),
        (client_error("InvalidAccessKeyId", 403), CdnAccessError),
        (client_error("SignatureDoesNotMatch", 403), CdnAccessError),
        (client_error("InternalError", 500), CdnUnavailableError),
        (client_error("Weird", 418), CdnError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), CdnUnavailableError),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), CdnUnavailableError),
        (ConnectionResetError(), CdnUnavailableError),
    ],
)
def test_mapping(exc: Exception, kind: type) -> None:
    mapped = map_cdn_error(exc, "http://s3", "GET b/k")
    assert type(mapped) is kind
    assert "http://s3" in mapped.message


def test_no_write_keys_is_access_error() -> None:
    made: list[CdnKeys] = []
    cfg = CdnConfig("http://s3", "r", CdnKeys("a", "secret"), None)
    c = CdnClient(cfg, client_factory=lambda keys: made.append(keys) or object())
    assert made == [] and not c.can_write  # clients are made on first use
    with pytest.raises(CdnAccessError, match="write keys"):
        c.ensure_bucket("b")
    assert made == []  # no write keys: no client made for them
    assert "secret" not in repr(cfg)


def test_endpoint_with_user_info_is_refused_without_showing_it() -> None:
    config = CdnConfig.from_dict(
        {
            "endpoint_url": "https://key:s3cret@s3.example",
            "read": {"access_key_id": "a", "secret_access_key": "b"},
        }
    )
    with pytest.raises(CdnError) as info:
        CdnClient(config)
    assert "s3cret" not in info.value.one_line()
