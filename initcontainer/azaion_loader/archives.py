"""Encrypted image archives (docs/protocol.md §6): publish, fetch, load, check.

The ImageUnlock Job runs two halves in separate containers, so credentials and
the Docker socket never share one:

- :func:`unlock_fetch` (credentials, no Docker): key fragment from the API,
  ``E`` from the CDN with its digest checked while downloading (format 2: every
  segment opened too); leaves ``archive.enc`` and ``fragment.json`` in the work
  directory (atomic, 0640).
- :func:`unlock_load` (the container runtime's socket, no credentials): checks
  the archive again (while the engine's load starts, fed nothing yet), streams
  the decryption into it on its standard input (no plaintext on disk), then
  checks every expected image.  Format 2's load pass checks each segment
  again; one that fails (the file changed) kills the engine's load.  The
  engine is an :class:`~azaion_loader.engine.ImageEngine`: Docker
  (``docker load``) or containerd (``ctr images import``).

:func:`unlock` runs both in one process; :func:`publish_archive` is the
publisher's side (format 2 by default).  Before a byte is loaded, the archive's
``manifest.json`` is read from the checked ciphertext (format 1:
:func:`~azaion_loader.tar_manifest.sealed_repo_tags`; format 2: in the check's own pass):
an archive without one, or with a tag outside the caller's list, the API's
list or under a forbidden repository (the Jobs' own image), loads nothing.
Expected images: the caller's list, else the manifest's ``RepoTags``, else
the ``images`` the API recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azaion_loader import archive_segments
from azaion_loader.atomic_write import AtomicWriter, publish_bytes, scratch_dir
from azaion_loader.crypto import CHUNK_SIZE, Decryptor, EncryptingReader
from azaion_loader.engine import ImageEngine
from azaion_loader.envelope import derive_archive_key
from azaion_loader.errors import (
    ImageMissingError,
    IntegrityError,
    LoaderError,
    NotADockerArchiveError,
    ProtocolError,
    TargetError,
    UnexpectedImagesError,
)
from azaion_loader.models import (
    FORMAT_CBC,
    FORMAT_SEGMENTED,
    KeyFragment,
    UnlockFetchResult,
    UnlockLoadResult,
    UploadResult,
    b64encode,
)
from azaion_loader.pipeline import READ_AHEAD, BufferRing, prefetch
from azaion_loader.progress import ProgressCallback
from azaion_loader.segmented import ARCHIVE_AAD, SegmentDecryptor
from azaion_loader.tar_manifest import TarManifestScanner, disallowed_tags, sealed_repo_tags
from azaion_loader.workdir import (
    ARCHIVE_FILE,
    FRAGMENT_FILE,
    WORKDIR_MODE,
    ArchiveCheck,
    read_workdir,
)

if TYPE_CHECKING:
    # Only for annotations: `loader unlock-load` (runtime socket, no credentials) never
    # imports requests, jwt or boto3, so it starts faster.
    from azaion_loader.api_client import ApiClient
    from azaion_loader.cdn import CdnClient

__all__ = [
    "ARCHIVE_FILE",
    "FRAGMENT_FILE",
    "TarManifestScanner",
    "UnexpectedImagesError",
    "download_key_fragment",
    "publish_archive",
    "read_workdir",
    "unlock",
    "unlock_fetch",
    "unlock_load",
]

log = logging.getLogger(__name__)

FRAGMENT_SIZE = 32

CdnFactory = Callable[[], "CdnClient"]


def _noop(_: int) -> None:
    return None


# -- fetch step ------------------------------------------------------------------


def download_key_fragment(
    api: ApiClient, folder: str, name: str, version: str | None = None
) -> KeyFragment:
    """The key fragment, digest, size and images of an archive (authenticated)."""
    frag = api.get_key_fragment(folder, name, version)
    if len(frag.fragment) != FRAGMENT_SIZE:
        raise ProtocolError(f"the key fragment of {folder}/{name} is not {FRAGMENT_SIZE} bytes")
    return frag


def unlock_fetch(
    api: ApiClient,
    cdn_factory: CdnFactory,
    *,
    folder: str,
    name: str,
    workdir: str | os.PathLike[str],
    version: str | None = None,
    progress: ProgressCallback | None = None,
    on_total: Callable[[int], None] | None = None,
) -> UnlockFetchResult:
    """Write ``archive.enc`` (digest checked) and ``fragment.json`` into ``workdir``."""
    progress = progress or _noop
    work = Path(workdir)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create the work directory {work}: {exc.strerror}") from exc
    writer = AtomicWriter(work / ARCHIVE_FILE, mode=WORKDIR_MODE)
    try:
        frag = download_key_fragment(api, folder, name, version)
        if on_total is not None:
            on_total(frag.size)
        cdn = cdn_factory()
        size, chunks = cdn.iter_object(folder, frag.object_key)
        source = f"the CDN ({folder}/{frag.object_key})"
        if size != frag.size:
            raise IntegrityError(f"the archive on {source} has {size} bytes, {frag.size} expected")
        check = _fetch_check(frag, source, folder, name)
        received = 0
        for chunk in chunks:
            received += len(chunk)
            if received > frag.size:
                raise IntegrityError(f"the archive on {source} is longer than expected")
            check.feed(chunk)
            writer.write(chunk)
            progress(len(chunk))
        if received != frag.size:
            raise IntegrityError(f"the archive from {source} is truncated")
        check.finish()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    publish_bytes(
        work / FRAGMENT_FILE, json.dumps(frag.to_dict()).encode("utf-8"), mode=WORKDIR_MODE
    )
    log.info("fetched archive %s/%s version %s into %s", folder, name, frag.version, work)
    return UnlockFetchResult(str(work), frag.version, frag.size, frag.sha256)


class _Sha256Check:
    """Format 1's fetch check: the SHA-256 of ``E``."""

    def __init__(self, sha256: str, what: str) -> None:
        self._digest = hashlib.sha256()
        self._sha256 = sha256
        self._what = what

    def feed(self, chunk: bytes | memoryview) -> None:
        self._digest.update(chunk)

    def finish(self) -> None:
        if not hmac.compare_digest(self._digest.hexdigest(), self._sha256):
            raise IntegrityError(
                f"the SHA-256 of {self._what} does not match the digest from the API"
            )


def _fetch_check(
    frag: KeyFragment, source: str, folder: str, name: str
) -> _Sha256Check | archive_segments.FetchCheck:
    """The check ``unlock_fetch`` feeds while downloading, for the archive's format."""
    what = f"the archive {folder}/{name}"
    if frag.format == FORMAT_SEGMENTED:
        key = derive_archive_key(frag.fragment)
        return archive_segments.FetchCheck(
            key, frag.size, frag.sha256, source=f"the archive on {source}", what=what
        )
    return _Sha256Check(frag.sha256, what)


# -- load step -------------------------------------------------------------------


def _decrypted(
    path: Path,
    key: bytes,
    progress: ProgressCallback,
    ring: BufferRing,
) -> Iterator[bytes | memoryview]:
    """The plaintext of ``path`` in chunks, decrypted into ``ring``'s reusable buffers.

    Fresh 1 MiB objects per chunk (``Decryptor.update``) cost more in page
    faults than the decryption itself; a yielded view stays valid until the
    ring comes round again (see :class:`~azaion_loader.pipeline.BufferRing`).
    """
    dec = Decryptor(key)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK_SIZE):
            plain = dec.update_into(chunk, ring.next(Decryptor.buffer_size(len(chunk))))
            if plain:
                yield plain
            progress(len(chunk))
    yield dec.finalize()


def _archive_tags(
    check: ArchiveCheck,
    key: bytes,
    images: Sequence[str] | None,
    forbidden_repositories: Sequence[str],
) -> list[str]:
    """The archive's tags, once it is clear that every one of them may be loaded."""
    if check.fragment.format == FORMAT_SEGMENTED:
        tags = check.tags  # read by the check's own pass
    else:
        tags = sealed_repo_tags(check.archive, key)
    registered = check.fragment.images
    if tags is None:
        raise NotADockerArchiveError(
            "the decrypted archive has no manifest.json (it is not made by `docker save`); "
            "nothing was loaded"
        )
    refused = disallowed_tags(
        tags,
        requested=images or (),
        registered=registered,
        forbidden_repositories=forbidden_repositories,
    )
    if refused:
        raise UnexpectedImagesError(
            f"the archive holds images that may not be loaded: {', '.join(refused)}; "
            "nothing was loaded"
        )
    return tags


def unlock_load(
    engine: ImageEngine,
    *,
    workdir: str | os.PathLike[str],
    images: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    on_total: Callable[[int], None] | None = None,
    check: ArchiveCheck | None = None,
    forbidden_repositories: Sequence[str] = (),
) -> UnlockLoadResult:
    """Re-check the digest, decrypt straight into ``engine``'s load, check the images.

    ``check``: ``ArchiveCheck.start(workdir)``, if the caller started it
    already (the CLI does, before it imports this module).
    ``forbidden_repositories``: image repositories the archive may not hold a
    tag of (the operator passes its Jobs' image).
    """
    progress = progress or _noop
    check = check or ArchiveCheck.start(workdir)
    frag, archive = check.fragment, check.archive
    # The engine's load starts and connects while the digest is computed (it
    # also stands for a ping: an unreachable engine ends it). It gets no byte
    # before the digest matches, and is killed if it does not.
    pending = engine.start_load()
    try:
        check.wait()
        key = derive_archive_key(frag.fragment)
        tags = _archive_tags(check, key, images, forbidden_repositories)
        pending.check_running()
    except BaseException:
        pending.cancel()
        raise
    if on_total is not None:
        on_total(frag.size)
    # Decryption runs a few chunks ahead in its own thread while this one
    # writes into the engine's standard input.  The ring has room for the
    # queued chunks, the one being written and the one being decrypted.
    # A failure while decrypting (format 2: a segment changed since the
    # check) reaches pending.load before the stream ends: the engine's load
    # is killed, and what it got is discarded.
    chunks: Iterator[bytes | memoryview]
    if frag.format == FORMAT_SEGMENTED:
        ring = BufferRing(READ_AHEAD + 2, SegmentDecryptor.buffer_size)
        chunks = archive_segments.decrypted(archive, key, frag.size, frag.sha256, progress, ring)
    else:
        ring = BufferRing(READ_AHEAD + 2, Decryptor.buffer_size(CHUNK_SIZE))
        chunks = _decrypted(archive, key, progress, ring)
    loaded = pending.load(prefetch(chunks, READ_AHEAD))
    log.debug("%s reported loading %s", engine.name, loaded)
    expected, source = _expected_images(images, tags, frag.images)
    missing = engine.missing_images(expected)
    if missing:
        raise ImageMissingError(
            f"after the load, {engine.name} at {engine.address} lacks {', '.join(missing)} "
            f"(expected from the {source})"
        )
    log.info("loaded into %s and checked %s", engine.name, ", ".join(expected))
    return UnlockLoadResult(tuple(expected), frag.sha256, frag.version, source, engine.name)


def _expected_images(
    images: Sequence[str] | None, tags: list[str], registered: Sequence[str]
) -> tuple[list[str], str]:
    """The images to check after a load, and where they came from: the caller's
    list, else the archive's RepoTags, else what the API registered."""
    if images:
        return list(images), "argument"
    if tags:
        return tags, "manifest"
    if registered:
        return list(registered), "api"
    raise ImageMissingError(
        "no expected images: the archive's manifest.json has no RepoTags and the API recorded none",
        hint="pass --images",
    )


def unlock(
    api: ApiClient,
    cdn_factory: CdnFactory,
    engine: ImageEngine,
    *,
    folder: str,
    name: str,
    version: str | None = None,
    images: Sequence[str] | None = None,
    tmp_dir: str | None = None,
    progress: ProgressCallback | None = None,
    forbidden_repositories: Sequence[str] = (),
) -> UnlockLoadResult:
    """Both halves in one process, with a temporary work directory removed afterwards."""
    engine.ping()
    with scratch_dir("loader-unlock-", tmp_dir) as work:
        unlock_fetch(
            api,
            cdn_factory,
            folder=folder,
            name=name,
            workdir=work,
            version=version,
            progress=progress,
        )
        return unlock_load(
            engine,
            workdir=work,
            images=images,
            progress=progress,
            forbidden_repositories=forbidden_repositories,
        )


# -- publish -----------------------------------------------------------------------


def publish_archive(
    api: ApiClient,
    cdn: CdnClient,
    *,
    folder: str,
    name: str,
    path: str | os.PathLike[str],
    version: str | None = None,
    images: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    require_manifest: bool = True,
    archive_format: int = FORMAT_SEGMENTED,
) -> UploadResult:
    """Encrypt a ``docker save`` tar under a fresh key fragment, upload it, register it.

    ``archive_format``: 2 (segmented AES-256-GCM, the default) or 1
    (AES-256-CBC, for loaders that predate format 2); docs/protocol.md §6.

    Without ``images``, the archive's ``manifest.json`` ``RepoTags`` are
    registered.  A file with no ``manifest.json`` is refused (and its upload
    deleted) unless ``require_manifest`` is false (tests publish such archives).
    An explicit ``version`` that is already registered is refused with
    :class:`ConflictError`, and a ``folder/name`` owned by another uploader with
    :class:`AuthError`, before anything is uploaded.
    """
    src_path = Path(path)
    if archive_format not in (FORMAT_CBC, FORMAT_SEGMENTED):
        raise ValueError(f"archive_format must be 1 or 2, not {archive_format}")
    api.ensure_publishable("archives", folder, name, version)
    fragment = os.urandom(FRAGMENT_SIZE)
    scanner = TarManifestScanner()
    object_key = f"{name}.enc"
    reader = _encrypt_to_cdn(
        cdn,
        src_path,
        derive_archive_key(fragment),
        folder,
        object_key,
        scanner,
        progress,
        segmented=archive_format == FORMAT_SEGMENTED,
    )
    if require_manifest and (not scanner.valid or scanner.manifest is None):
        _delete_quietly(cdn, folder, object_key)
        raise NotADockerArchiveError(
            f"{src_path} is not a `docker save` archive (no manifest.json); nothing was registered"
        )
    expected = list(images) if images else scanner.repo_tags
    sha = reader.digest.hexdigest()
    record: dict[str, Any] = {
        "version": version or sha[:16],
        "fragment": b64encode(fragment),
        "sha256": sha,
        "size": reader.cipher_size,
        "images": expected,
    }
    if archive_format != FORMAT_CBC:  # a format-1 body is the same as before format 2
        record["format"] = archive_format
    registered = api.put_archive(folder, name, record)
    log.info("published archive %s/%s version %s (%s)", folder, name, registered, expected)
    return UploadResult(
        folder, name, registered, reader.cipher_size, sha, reader.plain_size, tuple(expected)
    )


def _encrypt_to_cdn(
    cdn: CdnClient,
    src_path: Path,
    key: bytes,
    folder: str,
    object_key: str,
    scanner: TarManifestScanner,
    progress: ProgressCallback | None,
    *,
    segmented: bool,
) -> EncryptingReader:
    """Stream ``src_path`` encrypted to ``folder/object_key``; the plaintext also feeds
    ``scanner``.  Returns the spent reader (digest and sizes)."""
    try:
        src = open(src_path, "rb", buffering=0)
    except OSError as exc:
        raise LoaderError(
            f"cannot read {src_path}: {exc.strerror}", hint="check the archive to upload"
        ) from exc
    with src:
        reader = EncryptingReader(
            src,
            key,
            on_plain=scanner.feed,
            progress=progress,
            chunk_size=cdn.part_size,  # one part per piece: boto3 gets each without a copy
            segmented=segmented,
            aad=ARCHIVE_AAD,
        )
        try:
            cdn.ensure_bucket(folder)
            cdn.upload_fileobj(folder, object_key, reader)
            while reader.read(CHUNK_SIZE):
                pass
        finally:
            reader.close()
    return reader


def _delete_quietly(cdn: CdnClient, folder: str, object_key: str) -> None:
    """Remove an upload that will not be registered; a failure is only logged."""
    try:
        cdn.delete(folder, object_key)
    except LoaderError as exc:
        log.warning("could not delete %s/%s: %s", folder, object_key, exc)
