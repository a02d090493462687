"""Encrypted image archives (docs/protocol.md §6): publish, fetch, load, check.

The ImageUnlock Job runs two halves in separate containers, so credentials and
the Docker socket never share one:

- :func:`unlock_fetch` (credentials, no Docker): key fragment from the API,
  ``E`` from the CDN with its digest checked while downloading; leaves
  ``archive.enc`` and ``fragment.json`` in the work directory (atomic, 0640).
- :func:`unlock_load` (Docker, no credentials): checks the digest again
  (while ``docker load`` starts, fed nothing yet), streams the decryption
  into ``docker load`` on its standard input (no plaintext on disk), then
  checks every expected image with ``docker image inspect``.

:func:`unlock` runs both in one process; :func:`publish_archive` is the
publisher's side.  Expected images: the caller's list, else the archive's own
``manifest.json`` ``RepoTags`` (read from the decrypted stream as it passes,
by :class:`TarManifestScanner`), else the ``images`` the API recorded.
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

from azaion_loader.crypto import CHUNK_SIZE, Decryptor, EncryptingReader
from azaion_loader.docker_cli import DockerCli
from azaion_loader.envelope import derive_archive_key
from azaion_loader.errors import (
    ImageMissingError,
    IntegrityError,
    LoaderError,
    NotADockerArchiveError,
    ProtocolError,
    TargetError,
)
from azaion_loader.models import (
    KeyFragment,
    UnlockFetchResult,
    UnlockLoadResult,
    UploadResult,
    b64encode,
)
from azaion_loader.pipeline import READ_AHEAD, BufferRing, prefetch
from azaion_loader.progress import ProgressCallback
from azaion_loader.publish import AtomicWriter, publish_bytes, scratch_dir
from azaion_loader.workdir import (
    ARCHIVE_FILE,
    FRAGMENT_FILE,
    WORKDIR_MODE,
    ArchiveCheck,
    read_workdir,
)

if TYPE_CHECKING:
    # Only for annotations: `loader unlock-load` (Docker, no credentials) never
    # imports requests, jwt or boto3, so it starts faster.
    from azaion_loader.api_client import ApiClient
    from azaion_loader.cdn import CdnClient

__all__ = [
    "ARCHIVE_FILE",
    "FRAGMENT_FILE",
    "TarManifestScanner",
    "download_key_fragment",
    "publish_archive",
    "read_workdir",
    "unlock",
    "unlock_fetch",
    "unlock_load",
]

log = logging.getLogger(__name__)

FRAGMENT_SIZE = 32
UPLOAD_READ_AHEAD = 8
"""Chunks encrypted ahead of the multipart upload, in their own thread."""

CdnFactory = Callable[[], "CdnClient"]


def _noop(_: int) -> None:
    return None


# -- reading manifest.json from a tar stream ---------------------------------------


class TarManifestScanner:
    """Finds ``manifest.json`` in a tar stream fed chunk by chunk, without buffering it.

    Only headers (512 bytes) and the few small members of interest (the
    manifest, GNU long names, pax headers) are copied; file data is skipped
    by arithmetic.  :attr:`valid` turns false at the first bad header.
    """

    _CAPTURE_LIMIT = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.valid = True
        self.manifest: bytes | None = None
        self.members = 0
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._capture: bytearray | None = None
        self._capture_kind = ""
        self._long_name: str | None = None
        self._pax_path: str | None = None
        self._end = False

    @property
    def repo_tags(self) -> list[str]:
        """The ``RepoTags`` of every image in ``manifest.json`` (empty if none found)."""
        if self.manifest is None:
            return []
        try:
            doc = json.loads(self.manifest)
        except ValueError:
            return []
        tags: list[str] = []
        if isinstance(doc, list):
            for entry in doc:
                if isinstance(entry, dict):
                    for tag in entry.get("RepoTags") or []:
                        if isinstance(tag, str) and tag not in tags:
                            tags.append(tag)
        return tags

    def feed(self, data: bytes | memoryview) -> None:
        """Consume the next bytes of the tar stream."""
        view = memoryview(data)
        while view and self.valid and not self._end:
            if self._remaining:
                n = min(self._remaining, len(view))
                if self._capture is not None and len(self._capture) < self._CAPTURE_LIMIT:
                    self._capture += view[:n]
                self._remaining -= n
                view = view[n:]
                if not self._remaining:
                    self._member_done()
                continue
            if self._padding:
                n = min(self._padding, len(view))
                self._padding -= n
                view = view[n:]
                continue
            n = min(512 - len(self._header), len(view))
            self._header += view[:n]
            view = view[n:]
            if len(self._header) == 512:
                header = bytes(self._header)
                self._header.clear()
                self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * 512:
            self._end = True
            return
        if not _checksum_ok(header):
            self.valid = False
            return
        size = _octal(header[124:136])
        if size is None:
            self.valid = False
            return
        kind = header[156:157]
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        if kind in (b"L", b"x"):
            self._capture_kind = kind.decode()
        else:
            self.members += 1
            if self._long_name is not None:
                name = self._long_name
            if self._pax_path is not None:
                name = self._pax_path
            self._long_name = self._pax_path = None
            self._capture_kind = "manifest" if name.lstrip("./") == "manifest.json" else ""
        self._capture = bytearray() if self._capture_kind else None
        self._remaining = size
        self._padding = (-size) % 512
        if not size:
            self._member_done()

    def _member_done(self) -> None:
        data = bytes(self._capture) if self._capture is not None else b""
        if self._capture_kind == "manifest":
            self.manifest = data
        elif self._capture_kind == "L":
            self._long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._capture_kind == "x":
            for record in data.decode("utf-8", "replace").split("\n"):
                _, _, kv = record.partition(" ")
                key, _, value = kv.partition("=")
                if key == "path":
                    self._pax_path = value
        self._capture = None
        self._capture_kind = ""


def _octal(field: bytes) -> int | None:
    if field and field[0] & 0x80:  # base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    if stored is None:
        return False
    computed = sum(header[:148]) + 32 * 8 + sum(header[156:])
    return stored == computed


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
        digest = hashlib.sha256()
        received = 0
        for chunk in chunks:
            received += len(chunk)
            if received > frag.size:
                raise IntegrityError(f"the archive on {source} is longer than expected")
            digest.update(chunk)
            writer.write(chunk)
            progress(len(chunk))
        if received != frag.size:
            raise IntegrityError(f"the archive from {source} is truncated")
        if not hmac.compare_digest(digest.hexdigest(), frag.sha256):
            raise IntegrityError(
                f"the SHA-256 of the archive {folder}/{name} does not match the digest from the API"
            )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    publish_bytes(
        work / FRAGMENT_FILE, json.dumps(frag.to_dict()).encode("utf-8"), mode=WORKDIR_MODE
    )
    log.info("fetched archive %s/%s version %s into %s", folder, name, frag.version, work)
    return UnlockFetchResult(str(work), frag.version, frag.size, frag.sha256)


# -- load step -------------------------------------------------------------------


def _decrypted(
    path: Path,
    key: bytes,
    scanner: TarManifestScanner,
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
                scanner.feed(plain)
                yield plain
            progress(len(chunk))
    last = dec.finalize()
    scanner.feed(last)
    yield last


def unlock_load(
    docker: DockerCli,
    *,
    workdir: str | os.PathLike[str],
    images: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    on_total: Callable[[int], None] | None = None,
    check: ArchiveCheck | None = None,
) -> UnlockLoadResult:
    """Re-check the digest, decrypt straight into ``docker load``, check the images.

    ``check``: ``ArchiveCheck.start(workdir)``, if the caller started it
    already (the CLI does, before it imports this module).
    """
    progress = progress or _noop
    check = check or ArchiveCheck.start(workdir)
    frag, archive = check.fragment, check.archive
    # `docker load` starts and connects to the engine while the digest is
    # computed (it also stands for a ping: an unreachable engine ends it). It
    # gets no byte before the digest matches, and is killed if it does not.
    pending = docker.start_load()
    try:
        check.wait()
        pending.check_running()
    except BaseException:
        pending.cancel()
        raise
    if on_total is not None:
        on_total(frag.size)
    scanner = TarManifestScanner()
    key = derive_archive_key(frag.fragment)
    # Decryption runs a few chunks ahead in its own thread while this one
    # writes into `docker load`'s standard input.  The ring has room for the
    # queued chunks, the one being written and the one being decrypted.
    ring = BufferRing(READ_AHEAD + 2, Decryptor.buffer_size(CHUNK_SIZE))
    plain = prefetch(_decrypted(archive, key, scanner, progress, ring), READ_AHEAD)
    loaded = pending.load(plain)
    if not scanner.valid or scanner.manifest is None:
        log.warning("the decrypted archive has no manifest.json (docker load reported %s)", loaded)
    if images:
        expected, source = list(images), "argument"
    elif scanner.repo_tags:
        expected, source = scanner.repo_tags, "manifest"
    elif frag.images:
        expected, source = list(frag.images), "api"
    else:
        if not scanner.valid:
            raise NotADockerArchiveError("the decrypted archive is not a tar made by `docker save`")
        raise ImageMissingError(
            "no expected images: the archive's manifest.json has no RepoTags and the API "
            "recorded none",
            hint="pass --images",
        )
    missing = docker.missing_images(expected)
    if missing:
        raise ImageMissingError(
            f"after `docker load`, the engine lacks {', '.join(missing)} "
            f"(expected from the {source})"
        )
    log.info("loaded and checked %s", ", ".join(expected))
    return UnlockLoadResult(tuple(expected), frag.sha256, frag.version, source)


def unlock(
    api: ApiClient,
    cdn_factory: CdnFactory,
    docker: DockerCli,
    *,
    folder: str,
    name: str,
    version: str | None = None,
    images: Sequence[str] | None = None,
    tmp_dir: str | None = None,
    progress: ProgressCallback | None = None,
) -> UnlockLoadResult:
    """Both halves in one process, with a temporary work directory removed afterwards."""
    docker.ping()
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
        return unlock_load(docker, workdir=work, images=images, progress=progress)


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
) -> UploadResult:
    """Encrypt a ``docker save`` tar under a fresh key fragment, upload it, register it.

    Without ``images``, the archive's ``manifest.json`` ``RepoTags`` are
    registered.  A file with no ``manifest.json`` is refused (and its upload
    deleted) unless ``require_manifest`` is false (tests publish such archives).
    An explicit ``version`` that is already registered is refused with
    :class:`ConflictError` before anything is uploaded.
    """
    src_path = Path(path)
    if version is not None:
        api.ensure_version_free("archives", folder, name, version)
    fragment = os.urandom(FRAGMENT_SIZE)
    key = derive_archive_key(fragment)
    scanner = TarManifestScanner()
    try:
        src = open(src_path, "rb", buffering=0)
    except OSError as exc:
        raise LoaderError(
            f"cannot read {src_path}: {exc.strerror}", hint="check the archive to upload"
        ) from exc
    with src:
        reader = EncryptingReader(
            src, key, on_plain=scanner.feed, progress=progress, read_ahead=UPLOAD_READ_AHEAD
        )
        object_key = f"{name}.enc"
        try:
            cdn.ensure_bucket(folder)
            cdn.upload_fileobj(folder, object_key, reader)
            while reader.read(CHUNK_SIZE):
                pass
        finally:
            reader.close()
    if require_manifest and (not scanner.valid or scanner.manifest is None):
        try:
            cdn.delete(folder, object_key)
        except LoaderError as exc:
            log.warning("could not delete %s/%s: %s", folder, object_key, exc)
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
    registered = api.put_archive(folder, name, record)
    log.info("published archive %s/%s version %s (%s)", folder, name, registered, expected)
    return UploadResult(
        folder, name, registered, reader.cipher_size, sha, reader.plain_size, tuple(expected)
    )
