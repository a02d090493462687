"""The big/small split protocol (docs/protocol.md §5): upload and fetch of resources.

Upload: encrypt the file in one streaming pass, in format 2 (1 MiB segments
sealed with AES-256-GCM, :mod:`azaion_loader.segmented`) unless format 1
(``C = IV || AES-256-CBC``) is asked for, hashing the plaintext on the way
(and, in format 1, the ciphertext); the first ``split_point(len(C))`` bytes
are the small part (kept in memory, at most 3 KiB), the rest streams to the
CDN as a multipart upload (and to the local cache).  Only then is the small
part, the key, the ciphertext's digest (format 2: over the segments' tags)
and the plaintext's SHA-256 registered with the API, so the API never points
at a missing big part.

Fetch: the small part, key, format and digests come from the API in an
authenticated envelope; the big part from the local cache when its sidecar
matches, else from the CDN.  ``small || big`` streams through the format's
checks and decryption (:mod:`azaion_loader.resource_formats`: each segment's
tag, or SHA-256 of the whole ciphertext and the padding) into a temporary
file beside the target, which is renamed onto the target only when every
check has passed.  The plaintext is
hashed only when the record has no registered plaintext digest (older
uploads): otherwise the result reports the registered one and ``loader
verify`` checks the published file against it, so fetch hashes each byte
once.  A cached big part that is stale (other version, or failing the digest)
is reported, deleted and fetched again: the result says
``cache: "stale-refreshed"``.

Memory stays constant: chunks of 2 MiB, bounded queues between the reader
(receive, format 1's ciphertext digest), decrypting and writing threads
(:mod:`azaion_loader.pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azaion_loader.atomic_write import AtomicWriter
from azaion_loader.cache import CacheEntry, segment
from azaion_loader.crypto import (
    CHUNK_SIZE,
    EncryptingReader,
    ciphertext_size,
    new_key,
    split_point,
)
from azaion_loader.errors import IntegrityError, LoaderError
from azaion_loader.models import (
    FORMAT_CBC,
    FORMAT_SEGMENTED,
    FetchResult,
    ResourceRecord,
    UploadResult,
    b64encode,
)
from azaion_loader.pipeline import BufferRing, Sink, prefetch
from azaion_loader.progress import ProgressCallback
from azaion_loader.resource_formats import opener
from azaion_loader.segmented import segmented_size

if TYPE_CHECKING:
    # Annotations only: boto3 (~0.2 s to import) loads when the caller makes
    # the CdnClient, so a fetch served from the cache never pays for it.
    from azaion_loader.api_client import ApiClient
    from azaion_loader.cdn import CdnClient

__all__ = [
    "fetch_resource",
    "prefetch",
    "upload_resource",
]

log = logging.getLogger(__name__)

CdnFactory = Callable[[], "CdnClient"]
Chunk = bytes | memoryview

FETCH_CHUNK = 2 * CHUNK_SIZE
"""Bytes per network or cache read when fetching: large buffers release the GIL longer."""
READ_AHEAD = 3
"""Chunks read ahead of the decryption (network or cache reads overlap it)."""
WRITE_AHEAD = 2
"""Decrypted chunks queued for the writer thread (hashing and writing overlap decryption)."""


def _noop(_: int) -> None:
    return None


# -- fetch -------------------------------------------------------------------------


def fetch_resource(
    api: ApiClient,
    cdn_factory: CdnFactory,
    *,
    folder: str,
    name: str,
    out: str | os.PathLike[str],
    version: str | None = None,
    cache_dir: str | None = None,
    progress: ProgressCallback | None = None,
    on_total: Callable[[int], None] | None = None,
) -> FetchResult:
    """Download, verify, decrypt and atomically publish a resource to ``out``.

    ``cdn_factory`` is called only when the big part is not in the cache.
    ``on_total`` receives the big part's size once known (for a progress bar).
    """
    progress = progress or _noop
    target = Path(out)
    cache = CacheEntry.for_resource(cache_dir, folder, name) if cache_dir else None
    # Fail on a non-writable target before any download.
    writer = AtomicWriter(target)
    try:
        rec = api.get_resource(folder, name, version)
        if on_total is not None:
            on_total(rec.big_size)
        log.info(
            "resource %s/%s version %s: %d bytes encrypted", folder, name, rec.version, rec.size
        )
        cache_state = "off" if cache is None else cache.lookup(rec)
        if cache is not None and cache_state == "hit":
            plain_sha = _from_cache(rec, cache, writer, progress)
            if plain_sha is not None:
                writer.commit()
                log.info("fetched %s/%s from the cache into %s", folder, name, target)
                return FetchResult(str(target), writer.size, plain_sha, rec.version, "hit")
            writer.abort()
            writer = AtomicWriter(target)
            cache_state = "stale-refreshed"
        plain_sha = _fetch_from_cdn(rec, cdn_factory(), writer, cache, progress)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("fetched %s/%s version %s into %s", folder, name, rec.version, target)
    return FetchResult(str(target), writer.size, plain_sha, rec.version, cache_state)


def _from_cache(
    rec: ResourceRecord, cache: CacheEntry, writer: AtomicWriter, progress: ProgressCallback
) -> str | None:
    """Decode the cached big part into ``writer``; the plaintext's SHA-256.

    ``None`` when the cached bytes fail verification: the entry is reported
    and removed, and what ``writer`` holds must be thrown away.
    """
    try:
        return _decode(
            rec,
            prefetch(
                _iter_file(cache.big, BufferRing(2 * READ_AHEAD + 3, FETCH_CHUNK)),
                READ_AHEAD,
                name="loader-disk",
            ),
            writer,
            tee=None,
            progress=progress,
            source=f"the cache {cache.big}",
        )
    except (IntegrityError, OSError) as exc:
        log.warning(
            "stale cache: %s failed verification (%s); deleting it and "
            "fetching the big part from the CDN",
            cache.big,
            exc,
        )
        cache.remove()
        return None


def _fetch_from_cdn(
    rec: ResourceRecord,
    cdn: CdnClient,
    writer: AtomicWriter,
    cache: CacheEntry | None,
    progress: ProgressCallback,
) -> str:
    size, chunks = cdn.iter_object(
        rec.folder, rec.big_key, chunk_size=FETCH_CHUNK, ring=_read_ring()
    )
    source = f"the CDN ({rec.folder}/{rec.big_key})"
    if size != rec.big_size:
        with contextlib.suppress(Exception):
            chunks.close()  # type: ignore[attr-defined]
        raise IntegrityError(f"the big part on {source} has {size} bytes, {rec.big_size} expected")
    tee = cache.open_writer() if cache is not None else None
    try:
        plain_sha = _decode(rec, chunks, writer, tee=tee, progress=progress, source=source)
    except BaseException:
        if tee is not None:
            tee.abort()
        raise
    if tee is not None and cache is not None:
        cache.commit(tee, rec)
    return plain_sha


def _decode(
    rec: ResourceRecord,
    big_chunks: Iterable[Chunk],
    out: AtomicWriter,
    *,
    tee: AtomicWriter | None,
    progress: ProgressCallback,
    source: str,
) -> str:
    """Stream ``small || big`` through the record format's checks and decryption into ``out``.

    Three threads overlap: the reader (``big_chunks`` read ahead, and in
    format 1 the ciphertext digest), this one (cache copy, decryption into
    reusable buffers) and a writer (the write, plus the plaintext digest
    when the record has none).  Returns the plaintext's SHA-256: the
    registered one when the record carries it, else the computed one.
    Raises :class:`IntegrityError` when a check of the format fails
    (:mod:`azaion_loader.resource_formats`) or the big part has the wrong length.
    """
    fmt = opener(rec, source)
    # With a registered plaintext digest, hashing the plaintext again here
    # would only repeat what `loader verify` checks end to end on the file.
    registered = rec.plain_sha256
    plain_digest = hashlib.sha256()
    write = out.write if registered is not None else _hashing(out.write, plain_digest)
    received = 0
    with Sink(write, depth=WRITE_AHEAD, name="loader-write") as writer:
        ring = writer.ring(fmt.buffer_size(FETCH_CHUNK))
        for plain in fmt.open(rec.small, ring):
            writer.put(plain)
        for chunk in prefetch(fmt.received(big_chunks), READ_AHEAD):
            received += len(chunk)
            if received > rec.big_size:
                raise IntegrityError(
                    f"the big part from {source} is longer than the {rec.big_size} bytes expected"
                )
            if tee is not None:
                tee.write(chunk)
            for plain in fmt.open(chunk, ring):
                writer.put(plain)
            progress(len(chunk))
        if received != rec.big_size:
            raise IntegrityError(
                f"the big part from {source} has {received} bytes, {rec.big_size} expected: "
                "truncated"
            )
        for last in fmt.finish():
            writer.put(last)
        writer.close()
    return registered if registered is not None else plain_digest.hexdigest()


def _hashing(
    write: Callable[[bytes | memoryview], None], digest: Any
) -> Callable[[bytes | memoryview], None]:
    """``write``, feeding each piece to ``digest`` first."""

    def run(data: bytes | memoryview) -> None:
        digest.update(data)
        write(data)

    return run


def _read_ring() -> BufferRing:
    """Input buffers for :func:`_decode`: the reader fills one while the decryption holds one
    and ``READ_AHEAD`` wait between them (see :class:`~azaion_loader.pipeline.BufferRing`)."""
    return BufferRing(READ_AHEAD + 2, FETCH_CHUNK)


def _iter_file(path: Path, ring: BufferRing) -> Iterator[memoryview]:
    """``path`` in chunks read into ``ring``'s buffers (no bytes object per read)."""
    with open(path, "rb", buffering=0) as f:
        while True:
            buf = ring.next(FETCH_CHUNK)
            n = f.readinto(buf)
            if not n:
                return
            yield memoryview(buf)[:n]


# -- upload --------------------------------------------------------------------------


def upload_resource(
    api: ApiClient,
    cdn: CdnClient,
    *,
    folder: str,
    name: str,
    path: str | os.PathLike[str],
    version: str | None = None,
    cache_dir: str | None = None,
    progress: ProgressCallback | None = None,
    resource_format: int = FORMAT_SEGMENTED,
) -> UploadResult:
    """Encrypt ``path``, put the big part on the CDN, register the rest with the API.

    ``resource_format`` is 2 (AES-256-GCM segments) or 1 (AES-256-CBC, for
    readers that predate format 2); docs/protocol.md §5.

    An explicit ``version`` that is already registered is refused with
    :class:`ConflictError`, and a ``folder/name`` owned by another uploader with
    :class:`AuthError`, before anything is uploaded (the CDN object has no
    version in its key, so uploading first would replace the registered big part).
    """
    progress = progress or _noop
    src_path = Path(path)
    api.ensure_publishable("resources", folder, name, version)
    src = _open_source(src_path)
    cache = CacheEntry.for_resource(cache_dir, folder, name) if cache_dir else None
    with src:
        tee = cache.open_writer() if cache is not None else None
        rec = _encrypt_and_register(
            api,
            cdn,
            src,
            src_path,
            folder=folder,
            name=name,
            version=version,
            tee=tee,
            progress=progress,
            resource_format=resource_format,
        )
    if tee is not None and cache is not None:
        cache.commit(tee, rec)
    log.info(
        "uploaded %s/%s version %s: %d bytes encrypted (%d on the CDN)",
        folder,
        name,
        rec.version,
        rec.size,
        rec.big_size,
    )
    return UploadResult(
        folder,
        name,
        rec.version,
        rec.size,
        rec.sha256,
        rec.plain_size,
        plain_sha256=rec.plain_sha256 or "",
    )


def _open_source(src_path: Path) -> io.FileIO:
    """The file to upload, opened unbuffered, or :class:`LoaderError` saying why not."""
    try:
        return open(src_path, "rb", buffering=0)
    except OSError as exc:
        raise LoaderError(
            f"cannot read {src_path}: {exc.strerror or type(exc).__name__}",
            hint="check the file to upload",
        ) from exc


def _encrypt_and_register(
    api: ApiClient,
    cdn: CdnClient,
    src: io.FileIO,
    src_path: Path,
    *,
    folder: str,
    name: str,
    version: str | None,
    tee: AtomicWriter | None,
    progress: ProgressCallback,
    resource_format: int,
) -> ResourceRecord:
    """Encrypt ``src`` onto the CDN (and into ``tee``), register the rest; the registered record.

    ``tee`` is aborted if anything fails.
    """
    if resource_format not in (FORMAT_CBC, FORMAT_SEGMENTED):
        raise ValueError(f"unknown resource format {resource_format}")
    segmented = resource_format == FORMAT_SEGMENTED
    plain_size = os.fstat(src.fileno()).st_size
    cipher_size = segmented_size(plain_size) if segmented else ciphertext_size(plain_size)
    key = new_key()
    big_key = f"{segment(name)}.big"
    # Hashed in the encryption thread, from the chunks it reads anyway.
    plain_digest = hashlib.sha256()
    reader = EncryptingReader(
        src,
        key,
        small_size=split_point(cipher_size),
        on_plain=plain_digest.update,
        on_big=tee.write if tee is not None else None,
        progress=progress,
        # Pieces of one part each: boto3 gets each part as the cipher made it, no copy.
        chunk_size=cdn.part_size,
        segmented=segmented,
    )
    try:
        _put_big_part(cdn, folder, big_key, reader)
        if reader.plain_size != plain_size or reader.cipher_size != cipher_size:
            raise LoaderError(
                f"{src_path} changed while it was being uploaded",
                hint="upload a file that is not being written to",
            )
        sha = reader.digest.hexdigest()
        rec = ResourceRecord(
            folder=folder,
            name=name,
            version=version or sha[:16],
            small=bytes(reader.small),
            key=key,
            sha256=sha,
            size=cipher_size,
            plain_size=plain_size,
            big_key=big_key,
            plain_sha256=plain_digest.hexdigest(),
            format=resource_format,
        )
        registered = api.put_resource(folder, name, _registration(rec))
    except BaseException:
        if tee is not None:
            tee.abort()
        raise
    finally:
        reader.close()
    return dataclasses.replace(rec, version=registered)


def _put_big_part(cdn: CdnClient, folder: str, big_key: str, reader: EncryptingReader) -> None:
    """Stream the big part to ``{folder}/{big_key}`` on the CDN, then read ``reader`` to its end."""
    cdn.ensure_bucket(segment(folder))
    cdn.upload_fileobj(folder, big_key, reader)
    # boto3 stops reading at EOF of the multipart stream; drain any tail.
    while reader.read(CHUNK_SIZE):
        pass


def _registration(rec: ResourceRecord) -> dict[str, Any]:
    """The body of ``PUT /resources/{folder}/{name}``: everything but the big part."""
    body = {
        "version": rec.version,
        "small": b64encode(rec.small),
        "key": b64encode(rec.key),
        "sha256": rec.sha256,
        "size": rec.size,
        "plain_size": rec.plain_size,
        "plain_sha256": rec.plain_sha256,
    }
    if rec.format != FORMAT_CBC:
        body["format"] = rec.format  # left out for format 1: servers before format 2 accept it
    return body
