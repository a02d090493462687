"""The work directory shared by the two halves of an image unlock (docs/protocol.md §6).

``unlock-fetch`` leaves ``archive.enc`` (the encrypted archive, its digest
checked while downloading) and ``fragment.json`` (key fragment, digest, size,
images, format) there; ``unlock-load`` reads them and checks the archive again
before the engine gets a byte: format 1 by its SHA-256, format 2 by opening
every segment (:func:`azaion_loader.archive_segments.verify_file`, which also
reads the tags).

This module needs neither the cipher library nor Docker: the CLI starts the
load step's check (:class:`ArchiveCheck`, in its own thread) before it
imports those, so the check and the imports share the two cores.  (Format 2's
check imports the cipher library in that thread.)
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from azaion_loader.errors import ConfigError, IntegrityError, ProtocolError
from azaion_loader.models import FORMAT_SEGMENTED, KeyFragment
from azaion_loader.pipeline import Background, file_sha256

__all__ = ["ARCHIVE_FILE", "FRAGMENT_FILE", "WORKDIR_MODE", "ArchiveCheck", "read_workdir"]

ARCHIVE_FILE = "archive.enc"
FRAGMENT_FILE = "fragment.json"
WORKDIR_MODE = 0o640

_AGAIN = "run `loader unlock-fetch` with the same --workdir first"


def read_workdir(workdir: str | os.PathLike[str]) -> tuple[KeyFragment, Path]:
    """The fragment and the archive's path left by ``unlock-fetch``."""
    work = Path(workdir)
    try:
        doc = json.loads((work / FRAGMENT_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read {work / FRAGMENT_FILE}: {exc.strerror}", hint=_AGAIN
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"{work / FRAGMENT_FILE} is not JSON") from exc
    try:
        frag = KeyFragment.from_dict(doc)
    except ProtocolError as exc:
        raise ConfigError(f"{work / FRAGMENT_FILE} is not a valid fragment file") from exc
    archive = work / ARCHIVE_FILE
    if not archive.is_file():
        raise ConfigError(f"{archive} is missing", hint=_AGAIN)
    return frag, archive


def _verify_segments(fragment: KeyFragment, archive: Path) -> tuple[str, int, list[str] | None]:
    """Format 2's check: every segment opened, D compared, the tags read (IntegrityError)."""
    # Imported here, in the check's thread: the cipher library is slow to import.
    from azaion_loader.archive_segments import verify_file
    from azaion_loader.envelope import derive_archive_key

    key = derive_archive_key(fragment.fragment)
    try:
        found = verify_file(archive, key, fragment.size, fragment.sha256)
    except IntegrityError as exc:
        raise IntegrityError(f"{archive} does not match the digest from the API: {exc}") from exc
    return found.sha256, found.size, found.tags


class ArchiveCheck:
    """The check of a work directory's archive, computed in a thread from :meth:`start`.

    Format 1: the SHA-256 of the file.  Format 2: every segment opened and D
    compared; :attr:`tags` then holds the ``RepoTags`` of the archive's
    ``manifest.json`` (``None`` without one), read in the same pass.
    """

    def __init__(self, fragment: KeyFragment, archive: Path) -> None:
        self.fragment = fragment
        self.archive = archive
        self.tags: list[str] | None = None
        """Format 2 only, after :meth:`wait`: the manifest's tags, ``None`` if it has none."""
        self._digest: Background[tuple[str, int, list[str] | None]]
        if fragment.format == FORMAT_SEGMENTED:
            self._digest = Background(
                lambda: _verify_segments(fragment, archive), name="loader-verify"
            )
        else:
            self._digest = Background(lambda: (*file_sha256(archive), None), name="loader-digest")

    @classmethod
    def start(cls, workdir: str | os.PathLike[str]) -> ArchiveCheck:
        """Read ``fragment.json`` (errors raised here) and start hashing ``archive.enc``."""
        return cls(*read_workdir(workdir))

    def wait(self) -> KeyFragment:
        """The fragment once the archive matches its size and digest, else IntegrityError."""
        try:
            sha256, size, self.tags = self._digest.result()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.archive}: {exc.strerror}", hint=_AGAIN) from exc
        expected = self.fragment
        if size != expected.size or not hmac.compare_digest(sha256, expected.sha256):
            raise IntegrityError(
                f"{self.archive} does not match the digest from the API "
                f"({size} bytes, {expected.size} expected)"
            )
        return expected
