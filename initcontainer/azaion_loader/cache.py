"""The local big-part cache (``LOADER_CACHE_DIR``, ``loader fetch --cache-dir``).

A resource's big part is kept as ``{cache}/{folder}/{name}.big`` beside a
sidecar ``{name}.big.json`` naming its version, the ciphertext's SHA-256 and
the big part's size.  Both are written atomically, the big part first and the
sidecar only once the big part is verified, so a sidecar never vouches for a
partial file.  The cache is only ever a shortcut: a fetch still checks the
digest of every byte it reads from it, and a cache that cannot be written is
logged and skipped, never an error.

- paths: :meth:`CacheEntry.for_resource` (folder and name must be single path
  segments, :func:`segment`);
- lookup: :meth:`CacheEntry.lookup` (``hit``, ``miss`` or ``stale-refreshed``,
  a stale entry removed) on top of :meth:`CacheEntry.matches`;
- store: :meth:`CacheEntry.open_writer`, then :meth:`CacheEntry.commit`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azaion_loader.atomic_write import AtomicWriter
from azaion_loader.errors import LoaderError, TargetError
from azaion_loader.models import ResourceRecord

__all__ = ["CacheEntry", "segment"]

log = logging.getLogger(__name__)


def segment(value: str) -> str:
    """``value`` if it is a single path segment (a folder or a name), else :class:`LoaderError`."""
    if not value or value in {".", ".."} or "/" in value or "\0" in value:
        raise LoaderError(
            f"{value!r} is not a valid folder or name",
            hint="use a single path segment without `/`",
        )
    return value


@dataclass(frozen=True)
class CacheEntry:
    """``{cache}/{folder}/{name}.big`` and its sidecar ``{name}.big.json``."""

    big: Path
    sidecar: Path
    label: str = ""
    """``folder/name``, for log messages."""

    @classmethod
    def for_resource(cls, cache_dir: str, folder: str, name: str) -> CacheEntry:
        """The cache paths of a resource (folder and name must be single path segments)."""
        base = Path(cache_dir) / segment(folder)
        return cls(
            base / f"{segment(name)}.big",
            base / f"{segment(name)}.big.json",
            label=f"{folder}/{name}",
        )

    def read_sidecar(self) -> dict[str, Any] | None:
        """The sidecar's content, or ``None`` if absent or unreadable."""
        try:
            doc = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def matches(self, rec: ResourceRecord) -> tuple[bool, str]:
        """Whether the cached big part is for this version and digest, and why not."""
        if not self.big.exists():
            return False, "absent"
        side = self.read_sidecar()
        if side is None:
            return False, "stale: no readable sidecar"
        if str(side.get("version")) != rec.version or side.get("sha256") != rec.sha256:
            return False, (
                f"stale: cached version {side.get('version')!r}, the API has {rec.version!r}"
            )
        try:
            size = self.big.stat().st_size
        except OSError:
            return False, "stale: unreadable"
        if size != rec.big_size:
            return False, f"stale: {size} bytes cached, {rec.big_size} expected"
        return True, "hit"

    def lookup(self, rec: ResourceRecord) -> str:
        """``hit``, ``miss`` (nothing cached) or ``stale-refreshed`` (reported and removed).

        A ``hit`` is still only a candidate: its bytes are checked against
        ``rec.sha256`` as they are read.
        """
        hit, why = self.matches(rec)
        if hit:
            return "hit"
        if why == "absent":
            return "miss"
        log.warning("stale cache for %s (%s); fetching the big part from the CDN", self.label, why)
        self.remove()
        return "stale-refreshed"

    def remove(self) -> None:
        """Delete the cached big part and its sidecar."""
        for path in (self.big, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def open_writer(self) -> AtomicWriter | None:
        """A writer for a fresh big part, or ``None`` (logged) if the cache is not writable."""
        try:
            self.big.parent.mkdir(parents=True, exist_ok=True)
            return AtomicWriter(self.big, mode=0o644)
        except (OSError, TargetError) as exc:
            log.warning("cache %s is not writable, continuing without it: %s", self.big, exc)
            return None

    def commit(self, writer: AtomicWriter, rec: ResourceRecord) -> None:
        """Publish a fully verified big part, then its sidecar (a failure is only logged)."""
        side = {"version": rec.version, "sha256": rec.sha256, "size": rec.big_size}
        try:
            with contextlib.suppress(FileNotFoundError):
                self.sidecar.unlink()
            writer.commit()
            side_writer = AtomicWriter(self.sidecar, mode=0o644)
            side_writer.write(json.dumps(side).encode("utf-8"))
            side_writer.commit()
        except (OSError, TargetError) as exc:
            writer.abort()
            log.warning("could not update the cache %s: %s", self.big, exc)
