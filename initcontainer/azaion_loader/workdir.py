"""The work directory shared by the two halves of an image unlock (docs/protocol.md §6).

``unlock-fetch`` leaves ``archive.enc`` (the encrypted archive, its digest
checked while downloading) and ``fragment.json`` (key fragment, digest, size,
images) there; ``unlock-load`` reads them and checks the digest again before
anything is decrypted.

This module needs neither the cipher library nor Docker: the CLI starts the
load step's digest check (:class:`ArchiveCheck`, in its own thread) before it
imports those, so the check and the imports share the two cores.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from azaion_loader.errors import ConfigError, IntegrityError, ProtocolError
from azaion_loader.models import KeyFragment
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


class ArchiveCheck:
    """The SHA-256 check of a work directory's archive, computed in a thread from :meth:`start`."""

    def __init__(self, fragment: KeyFragment, archive: Path) -> None:
        self.fragment = fragment
        self.archive = archive
        self._digest = Background(lambda: file_sha256(archive), name="loader-digest")

    @classmethod
    def start(cls, workdir: str | os.PathLike[str]) -> ArchiveCheck:
        """Read ``fragment.json`` (errors raised here) and start hashing ``archive.enc``."""
        return cls(*read_workdir(workdir))

    def wait(self) -> KeyFragment:
        """The fragment once the archive matches its size and SHA-256, else IntegrityError."""
        try:
            sha256, size = self._digest.result()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.archive}: {exc.strerror}", hint=_AGAIN) from exc
        expected = self.fragment
        if size != expected.size or not hmac.compare_digest(sha256, expected.sha256):
            raise IntegrityError(
                f"{self.archive} does not match the digest from the API "
                f"({size} bytes, {expected.size} expected)"
            )
        return expected
