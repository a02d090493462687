"""The client of the S3-compatible CDN, over botocore: signed GETs for reading, a write client.

Errors, all from :mod:`azaion_loader.errors`:

    CdnError
    +-- CdnUnavailableError   endpoint unreachable, timeouts, broken streams, 5xx
    +-- CdnNotFoundError      NoSuchBucket, NoSuchKey (404)
    +-- CdnAccessError        AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch (403),
                              or no write keys for this role

A download is one GET signed with botocore's SigV4 signer and sent through
botocore's HTTP session (its proxies from the environment, TLS checks and
timeouts), without a botocore client (:class:`_ObjectGets`): making one (its
service model and endpoint rules) and its request machinery cost a fetch
~0.1 s of CPU and ~17 MiB of peak RSS (docs/benchmarks.md).  Writes and
HEAD use a botocore client.

Downloads stream in chunks (:meth:`CdnClient.iter_object`) under a
:class:`~azaion_loader.watchdog.StreamWatch`: a stream slower than
``LOADER_MIN_RATE`` over ``LOADER_RATE_WINDOW`` has its socket shut down and
ends in :class:`CdnUnavailableError`, as does one that ends before its
``Content-Length``.  Uploads stream a file-like object through a bounded
multipart upload (:meth:`CdnClient.upload_fileobj`).  Messages name the
endpoint, bucket and key, never a key pair; an endpoint with user-info is refused.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import botocore.exceptions
import urllib3.exceptions

from azaion_loader.crypto import CHUNK_SIZE
from azaion_loader.errors import (
    CdnAccessError,
    CdnError,
    CdnNotFoundError,
    CdnUnavailableError,
    LoaderError,
)
from azaion_loader.models import CdnConfig, CdnKeys
from azaion_loader.pipeline import BufferRing
from azaion_loader.redact import has_userinfo, printable, redact_url
from azaion_loader.settings import HttpSettings
from azaion_loader.watchdog import StreamWatch, response_sockets, shutdown_socket

__all__ = ["CdnClient", "ObjectInfo", "map_cdn_error"]

log = logging.getLogger(__name__)

ClientFactory = Callable[[CdnKeys], Any]

_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound", "404"}
_ACCESS = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "Forbidden",
    "InvalidToken",
    "ExpiredToken",
}
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionClosedError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
if hasattr(botocore.exceptions, "ResponseStreamingError"):
    _NETWORK_ERRORS += (botocore.exceptions.ResponseStreamingError,)
if hasattr(botocore.exceptions, "IncompleteReadError"):
    _NETWORK_ERRORS += (botocore.exceptions.IncompleteReadError,)

PART_SIZE = 8 * 1024 * 1024
"""Multipart part size for uploads."""


def _read_into(body: Any) -> Callable[[memoryview], int]:
    """A ``readinto``-like call reading at most one ``recv``'s worth of ``body`` into a view.

    botocore's body wraps urllib3's response, which wraps ``http.client``'s,
    which reads from a buffered socket file.  A plain (not chunked, not
    compressed) body is read from that file with ``readinto1``: straight into
    the caller's buffer, with no bytes object per read and no copy
    (the callers stop at ``Content-Length``, so no read passes the body's
    end).  Any other body goes through urllib3's ``read1`` and one copy.
    """
    raw = getattr(body, "_raw_stream", None)
    resp = getattr(raw, "_fp", None)
    fp = getattr(resp, "fp", None)
    plain = not getattr(resp, "chunked", True) and not (
        getattr(raw, "headers", {}).get("content-encoding")
    )
    if plain and len(getattr(raw, "_decoded_buffer", None) or ()):
        plain = False  # urllib3 already holds part of the body
    readinto1 = getattr(fp, "readinto1", None)
    if plain and callable(readinto1):
        return readinto1
    read_some = getattr(raw, "read1", None) or body.read

    def copy_into(view: memoryview) -> int:
        piece = read_some(len(view))
        view[: len(piece)] = piece
        return len(piece)

    return copy_into


class _Credentials(NamedTuple):
    """What botocore's signer reads of a key pair (``botocore.credentials`` costs an import)."""

    access_key: str
    secret_key: str
    token: str | None = None


_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_CODES = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "SlowDown"}
_ERROR_BODY_MAX = 64 * 1024


class _ObjectGets:
    """``get_object`` (the subset a download uses) without a botocore client.

    Each GET is signed by botocore's S3 SigV4 signer and sent by botocore's
    HTTP session, as a botocore client's would be, with the same proxies (from
    the environment), CA bundle and timeouts; the answer has the fields of a
    client's (``ContentLength``, ``ETag``, ``ContentRange``,
    ``ResponseMetadata``, a streaming ``Body``).  An error answer raises
    :class:`botocore.exceptions.ClientError` with the code from its XML body,
    so :func:`map_cdn_error` reads it as before.  Connection errors, 429, 5xx
    and S3's transient codes are retried ``LOADER_RETRIES`` times with the
    API client's backoff (the client's "standard" retries did the same).
    Left out: the client's redirects to another region (the CDN's region
    comes from the API).
    """

    def __init__(self, endpoint: str, region: str, keys: CdnKeys, http: HttpSettings) -> None:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.httpsession import URLLib3Session
        from botocore.response import StreamingBody
        from botocore.utils import (
            get_environ_proxies,
            is_valid_endpoint_url,
            is_valid_ipv6_endpoint_url,
            percent_encode,
        )

        if not (is_valid_endpoint_url(endpoint) or is_valid_ipv6_endpoint_url(endpoint)):
            # What making a botocore client refuses; it would never connect.
            raise CdnError(
                f"the CDN endpoint from the API, {redact_url(endpoint)}, is not a valid URL",
                hint="ask the API operator to fix the CDN settings",
            )
        self._base = endpoint.rstrip("/")
        self._http = http
        self._signer = S3SigV4Auth(
            _Credentials(keys.access_key_id, keys.secret_access_key), "s3", region
        )
        self._session = URLLib3Session(
            verify=http.ca_bundle if http.ca_bundle else True,
            proxies=get_environ_proxies(endpoint),
            timeout=(http.timeout, http.timeout),
            max_pool_connections=2,
        )
        self._body = StreamingBody
        self._request = AWSRequest
        self._encode = percent_encode

    def url(self, bucket: str, key: str) -> str:
        """The path-style URL of ``bucket/key``, encoded as a botocore client encodes it."""
        return f"{self._base}/{self._encode(bucket)}/{self._encode(key, safe='/~')}"

    def request(self, bucket: str, key: str, headers: dict[str, str]) -> Any:
        """A signed ``GET`` of ``bucket/key``, ready to send (a fresh signature per call)."""
        request = self._request(
            method="GET", url=self.url(bucket, key), headers=headers, stream_output=True
        )
        self._signer.add_auth(request)
        return request.prepare()

    def get_object(
        self, *, Bucket: str, Key: str, Range: str | None = None, IfMatch: str | None = None
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if Range is not None:
            headers["Range"] = Range
        if IfMatch is not None:
            headers["If-Match"] = IfMatch
        http = self._http
        attempt = 0
        while True:
            try:
                response = self._session.send(self.request(Bucket, Key, headers))
                raw = response.raw
                status = int(response.status_code)
                if status in (200, 206):
                    return self._answer(status, raw)
                error = _client_error(status, _error_body(raw))
                code = error.response["Error"]["Code"]
                if attempt >= http.retries or not (status in _RETRY_STATUS or code in _RETRY_CODES):
                    raise error
                why = f"HTTP {status} ({printable(code, 100)})"
            except _NETWORK_ERRORS as exc:
                if attempt >= http.retries:
                    raise
                why = type(exc).__name__
            delay = min(http.backoff_cap, http.backoff_base * 2**attempt)
            attempt += 1
            log.warning(
                "GET %s/%s from the CDN at %s: %s; retrying in %.1f s (%d/%d)",
                Bucket,
                Key,
                redact_url(self._base),
                why,
                delay,
                attempt,
                http.retries,
            )
            time.sleep(delay)

    def _answer(self, status: int, raw: Any) -> dict[str, Any]:
        headers = raw.headers
        answer: dict[str, Any] = {"ResponseMetadata": {"HTTPStatusCode": status}}
        length = headers.get("Content-Length")
        if length is not None and length.isdigit():
            answer["ContentLength"] = int(length)
        for field, header in (("ETag", "ETag"), ("ContentRange", "Content-Range")):
            if headers.get(header) is not None:
                answer[field] = headers[header]
        answer["Body"] = self._body(raw, answer.get("ContentLength"))
        return answer


def _error_body(raw: Any) -> bytes:
    """The first bytes of an error answer's body (its XML names the error); closes it."""
    try:
        return bytes(raw.read(_ERROR_BODY_MAX))
    except Exception:  # noqa: BLE001 - the status alone is enough then
        return b""
    finally:
        raw.close()


def _client_error(status: int, body: bytes) -> botocore.exceptions.ClientError:
    """What a botocore client raises for an S3 error answer: the code from the body's XML,
    else the status (as botocore does for a body without one)."""
    found = _ERROR_CODE.search(body)
    code = found.group(1).decode("utf-8", "replace") if found else str(status)
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


class _Ended(Exception):
    """The stream ended (or was cut) before its last byte."""


class _Final(Exception):
    """A resume that must not be tried again (carries the error to raise)."""

    def __init__(self, error: CdnError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class _Download:
    """What a resumed GET must match: the object's size and the first answer's ETag."""

    bucket: str
    key: str
    size: int
    etag: str
    what: str


def _cut(raw: Any) -> None:
    """Shut down the sockets under a urllib3 response (the watch's abort)."""
    for sock in response_sockets(raw):
        shutdown_socket(sock)


def map_cdn_error(exc: BaseException, endpoint: str, what: str) -> CdnError:
    """Translate a boto3/botocore/urllib3 exception into our error tree."""
    if isinstance(exc, CdnError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
        code = printable(str(err.get("Code", "")), 100)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _NOT_FOUND or status == 404:
            kind = "bucket" if code == "NoSuchBucket" else "object"
            return CdnNotFoundError(f"the CDN at {endpoint} has no such {kind}: {what} ({code})")
        if code in _ACCESS or status == 403:
            return CdnAccessError(f"the CDN at {endpoint} refused {what} ({code})")
        if isinstance(status, int) and status >= 500:
            return CdnUnavailableError(f"the CDN at {endpoint} failed {what} (HTTP {status})")
        return CdnError(f"the CDN at {endpoint} failed {what} ({code or status})")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CdnAccessError(f"no CDN credentials for {what}")
    if isinstance(exc, _NETWORK_ERRORS):
        return CdnUnavailableError(
            f"the CDN at {endpoint} is unreachable or broke the connection during {what} "
            f"({type(exc).__name__})"
        )
    return CdnError(f"the CDN at {endpoint} failed {what} ({type(exc).__name__})")


@dataclass(frozen=True)
class ObjectInfo:
    """Size and ETag of an object."""

    size: int
    etag: str


class CdnClient:
    """The CDN on one endpoint: signed GETs with the read keys, a botocore client with the
    write keys (uploaders), and one with the read keys for :meth:`head`."""

    part_size = PART_SIZE
    """The multipart part size of :meth:`upload_fileobj`: boto3 reads the source this much at a
    time, so a source that makes pieces of this size hands each over without a copy."""

    def __init__(
        self,
        config: CdnConfig,
        *,
        http: HttpSettings | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        if has_userinfo(config.endpoint_url):
            raise CdnError(
                f"the CDN endpoint from the API, {redact_url(config.endpoint_url)}, carries a "
                "user name or password",
                hint="ask the API operator to remove `user:password@` from the CDN settings",
            )
        self.config = config
        self.endpoint = config.endpoint_url
        self.http = http or HttpSettings()
        self._factory = client_factory or self._make_client
        self._get_factory = client_factory or self._make_gets
        # Made on first use: a botocore client costs ~15 MiB and ~0.1 s of CPU,
        # which a fetch never pays (its GETs need none), nor a reader for writes.
        self._read: Any = None
        self._head_client: Any = None
        self._write: Any = None

    def _make_gets(self, keys: CdnKeys) -> Any:
        return _ObjectGets(self.endpoint, self.config.region, keys, self.http)

    def _make_client(self, keys: CdnKeys) -> Any:
        import botocore.session
        from botocore.config import Config

        cfg = Config(
            connect_timeout=self.http.timeout,
            read_timeout=self.http.timeout,
            retries={"max_attempts": self.http.retries + 1, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
        )
        # A botocore client, not boto3's: a fetch never imports boto3 (~0.1 s of
        # CPU at every start); only an upload does, for its transfer manager.
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.config.endpoint_url,
            region_name=self.config.region,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            verify=self.http.ca_bundle if self.http.ca_bundle else True,
            config=cfg,
        )

    @property
    def can_write(self) -> bool:
        """Whether the API handed out write keys (uploader and admin roles)."""
        return self.config.write is not None

    def _reader(self) -> Any:
        """What downloads call ``get_object`` on."""
        if self._read is None:
            self._read = self._get_factory(self.config.read)
        return self._read

    def _read_client(self) -> Any:
        """A botocore client with the read keys (HEAD)."""
        if self._head_client is None:
            self._head_client = self._factory(self.config.read)
        return self._head_client

    def _writer(self) -> Any:
        if self._write is None and self.config.write is not None:
            self._write = self._factory(self.config.write)
        if self._write is None:
            raise CdnAccessError(
                "the API gave no CDN write keys to this user",
                hint="publish with an account whose role is `uploader` or `admin`",
            )
        return self._write

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Size and ETag of ``bucket/key``."""
        what = f"HEAD {bucket}/{key}"
        try:
            resp = self._read_client().head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NotFound", "NoSuchKey"}:
                # HEAD has no body: ask the bucket, to tell a missing bucket from a missing key.
                self._check_bucket(bucket)
            raise map_cdn_error(exc, self.endpoint, what) from exc
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, what) from exc
        return ObjectInfo(int(resp.get("ContentLength", 0)), str(resp.get("ETag", "")))

    def _check_bucket(self, bucket: str) -> None:
        try:
            self._read_client().head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 404:
                raise CdnNotFoundError(
                    f"the CDN at {self.endpoint} has no bucket {bucket!r}"
                ) from exc
        except Exception:  # noqa: BLE001 - only a refinement of the caller's error
            return

    def iter_object(
        self,
        bucket: str,
        key: str,
        *,
        chunk_size: int = CHUNK_SIZE,
        ring: BufferRing | None = None,
    ) -> tuple[int, Iterator[memoryview]]:
        """Start a GET of ``bucket/key``; returns its size and an iterator over chunks.

        Each chunk is a view of one of ``ring``'s buffers, valid until the
        ring hands that buffer out again (without a ring: until the next chunk
        is asked for).  A stream that breaks (cut, ended early, or below the
        minimum rate) is resumed where it stopped, with ``Range`` and
        ``If-Match`` on the first answer's ETag, up to ``LOADER_RETRIES``
        times and within ``LOADER_DOWNLOAD_DEADLINE``; the chunks go on as if
        nothing happened.  Errors while iterating are mapped too (a broken
        stream that could not be resumed is :class:`CdnUnavailableError`).
        """
        what = f"GET {bucket}/{key}"
        try:
            resp = self._reader().get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, what) from exc
        size = int(resp.get("ContentLength", 0))
        download = _Download(bucket, key, size, str(resp.get("ETag") or ""), what)
        ring = ring or BufferRing(1, chunk_size)
        return size, self._chunks(resp["Body"], download, chunk_size, ring)

    def _chunks(
        self, body: Any, dl: _Download, chunk_size: int, ring: BufferRing
    ) -> Iterator[memoryview]:
        """The object in chunks of ``chunk_size`` bytes, read into ``ring`` under the watch.

        Each read is what one ``recv`` brings, straight into the chunk's
        buffer (:func:`_read_into`), so the watch sees every byte arrive.  A
        broken stream is asked again from the first byte not yet received;
        the bytes of the chunk being filled are kept, so the chunks (and a
        digest over them) continue seamlessly.
        """
        http = self.http
        deadline = time.monotonic() + http.download_deadline if http.download_deadline else None
        received = 0  # bytes in yielded chunks and in ``view[:pos]``
        resumes = 0
        view: memoryview | None = None
        pos = 0
        try:
            while True:
                raw = getattr(body, "_raw_stream", None)
                read_into = _read_into(body)
                watch = StreamWatch(
                    abort=functools.partial(_cut, raw),
                    deadline=deadline,
                    min_rate=http.min_rate,
                    window=http.rate_window,
                )
                try:
                    with watch:
                        while received < dl.size:
                            if view is None:
                                want = min(chunk_size, dl.size - received)
                                view, pos = memoryview(ring.next(want))[:want], 0
                            n = read_into(view[pos:])
                            if not n:
                                raise _Ended
                            pos += n
                            received += n
                            watch.progress(n)
                            if pos == len(view):
                                chunk, view = view, None
                                yield chunk
                    return  # every byte arrived, even if the watch fired meanwhile
                except Exception as exc:  # noqa: BLE001 - sorted below
                    problem = self._broken(exc, watch.fired, dl, received)
                    if watch.fired == "deadline" or not isinstance(problem, CdnUnavailableError):
                        raise problem from (None if isinstance(exc, _Ended) else exc)
                    cause = exc
                body.close()
                body, resumes = self._resume(dl, received, resumes, deadline, problem, cause)
        finally:
            body.close()

    def _broken(
        self, exc: BaseException, fired: str | None, dl: _Download, received: int
    ) -> CdnError:
        """What a broken stream means: the watch's reason, an early end, or the mapped error."""
        if fired == "deadline":
            return CdnUnavailableError(
                f"the CDN at {self.endpoint} did not complete {dl.what} within "
                f"{self.http.download_deadline:g} s ({received} of {dl.size} bytes received)",
                hint="check the network to the CDN; LOADER_DOWNLOAD_DEADLINE sets the limit",
            )
        if fired == "rate":
            return self._slow(dl.what, received, dl.size)
        if isinstance(exc, _Ended):
            return CdnUnavailableError(
                f"the CDN at {self.endpoint} ended {dl.what} after {received} of {dl.size} bytes"
            )
        return map_cdn_error(exc, self.endpoint, dl.what)

    def _resume(
        self,
        dl: _Download,
        offset: int,
        resumes: int,
        deadline: float | None,
        problem: CdnError,
        cause: BaseException,
    ) -> tuple[Any, int]:
        """A new body from ``offset`` on, after a backoff; raises when no resume is left.

        Returns the body and the number of resumes used.  A server that
        ignores ``Range`` or an object replaced since the first answer
        (``If-Match`` fails, or another ETag) ends the download at once:
        splicing two objects would only fail the digest later.
        """
        http = self.http
        while True:
            if resumes >= http.retries:
                suffix = f" (after {resumes} resumes)" if resumes else ""
                raise type(problem)(f"{problem.message}{suffix}", hint=problem.hint) from cause
            resumes += 1
            delay = min(http.backoff_cap, http.backoff_base * 2 ** (resumes - 1))
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise self._broken(cause, "deadline", dl, offset) from cause
            log.warning(
                "%s; resuming at byte %d in %.1f s (resume %d of %d)",
                problem.message,
                offset,
                delay,
                resumes,
                http.retries,
            )
            time.sleep(delay)
            try:
                return self._ranged(dl, offset), resumes
            except _Final as final:
                raise final.error from final.__cause__
            except CdnUnavailableError as exc:
                problem, cause = exc, exc

    def _ranged(self, dl: _Download, offset: int) -> Any:
        """The body of ``dl`` from ``offset`` to the end, checked to be that and nothing else."""
        what = f"{dl.what} from byte {offset}"
        args = {"Bucket": dl.bucket, "Key": dl.key, "Range": f"bytes={offset}-"}
        if dl.etag:
            args["IfMatch"] = dl.etag
        try:
            resp = self._reader().get_object(**args)
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if status == 412 or code == "PreconditionFailed":
                raise _Final(self._replaced(dl)) from exc
            raise map_cdn_error(exc, self.endpoint, what) from exc
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, what) from exc
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        content_range = str(resp.get("ContentRange") or "")
        etag = str(resp.get("ETag") or "")
        expected = f"bytes {offset}-{dl.size - 1}/{dl.size}"
        if status != 206 or content_range != expected:
            resp["Body"].close()
            if dl.etag and etag and etag != dl.etag:
                raise _Final(self._replaced(dl))
            raise _Final(
                CdnUnavailableError(
                    f"the CDN at {self.endpoint} ignored the Range request of {dl.what} "
                    f"(HTTP {status}, Content-Range {printable(content_range, 80)!r}, "
                    f"{expected!r} asked): cannot resume after {offset} of {dl.size} bytes",
                    hint="run the fetch again (it starts over); a CDN that serves Range requests "
                    "lets a broken download resume",
                )
            )
        if dl.etag and etag and etag != dl.etag:
            resp["Body"].close()
            raise _Final(self._replaced(dl))
        return resp["Body"]

    def _replaced(self, dl: _Download) -> CdnUnavailableError:
        return CdnUnavailableError(
            f"{dl.bucket}/{dl.key} was replaced on the CDN at {self.endpoint} during the download "
            "(its ETag changed): not resumed, nothing published",
            hint="run the fetch again: it asks the API for the current version",
        )

    def _slow(self, what: str, received: int, size: int) -> CdnUnavailableError:
        return CdnUnavailableError(
            f"the CDN at {self.endpoint} sent {what} slower than {self.http.min_rate:g} bytes/s "
            f"over {self.http.rate_window:g} s ({received} of {size} bytes received)",
            hint="check the network to the CDN; LOADER_MIN_RATE and LOADER_RATE_WINDOW set "
            "the floor",
        )

    def download_fileobj(self, bucket: str, key: str, out: IO[bytes]) -> int:
        """Stream ``bucket/key`` into ``out``; returns the byte count."""
        _, chunks = self.iter_object(bucket, key)
        n = 0
        for chunk in chunks:
            out.write(chunk)
            n += len(chunk)
        return n

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` with the write keys when it does not exist yet."""
        client = self._writer()
        try:
            client.head_bucket(Bucket=bucket)
            return
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status != 404:
                raise map_cdn_error(exc, self.endpoint, f"HEAD bucket {bucket}") from exc
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, f"HEAD bucket {bucket}") from exc
        try:
            client.create_bucket(Bucket=bucket)
            log.info("created bucket %s on %s", bucket, self.endpoint)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise map_cdn_error(exc, self.endpoint, f"create bucket {bucket}") from exc
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, f"create bucket {bucket}") from exc

    def upload_fileobj(
        self,
        bucket: str,
        key: str,
        src: Any,
        *,
        concurrency: int = 3,
        part_size: int | None = None,
    ) -> None:
        """Stream ``src`` (read sequentially, need not be seekable) to ``bucket/key``.

        A multipart upload with at most ``concurrency`` parts in flight, so
        memory stays bounded whatever the size.
        """
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        client = self._writer()
        part_size = part_size or self.part_size
        cfg = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=concurrency,
            max_io_queue=concurrency,
            use_threads=concurrency > 1,
        )
        # Bound the chunks boto3 buffers from a non-seekable stream.
        cfg.max_in_memory_upload_chunks = concurrency
        what = f"PUT {bucket}/{key}"
        try:
            with create_transfer_manager(client, cfg) as manager:
                manager.upload(fileobj=src, bucket=bucket, key=key).result()
        except Exception as exc:
            cause = getattr(exc, "original_error", None) or exc.__cause__ or exc
            if isinstance(cause, LoaderError):
                raise cause from exc
            raise map_cdn_error(cause, self.endpoint, what) from exc

    def delete(self, bucket: str, key: str) -> None:
        """Delete ``bucket/key`` with the write keys (used to clean up)."""
        try:
            self._writer().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise map_cdn_error(exc, self.endpoint, f"DELETE {bucket}/{key}") from exc
