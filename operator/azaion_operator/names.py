"""Deterministic Job names and label values (pure).

A Job name is ``<prefix>-<owner>[-<node>]-g<generation>-<hash>``: readable parts
first, shortened to fit 63 characters (the limit of the ``job-name`` label every
pod gets), and a hash of the full, unshortened inputs (kind, namespace, name,
uid, generation, node) last, so two different inputs never share a name even
when their readable parts were cut to the same text.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_NAME", "job_name", "label_value"]

MAX_NAME = 63
_HASH_LEN = 10
_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9._-]+")


def _digest(*parts: str, length: int = _HASH_LEN) -> str:
    text = "\x00".join(parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _slug(text: str, limit: int) -> str:
    """Lowercase DNS-label characters only, at most ``limit`` long, no dash at the ends."""
    slug = _INVALID.sub("-", text.lower()).strip("-")
    return slug[:limit].strip("-")


def job_name(
    *, prefix: str, namespace: str, name: str, uid: str, generation: int, node: str | None = None
) -> str:
    """The Job name for one owner generation (and node), at most 63 characters.

    Same inputs, same name: a restarted operator finds the Job it created.
    """
    digest = _digest(prefix, namespace, name, uid, str(generation), node or "")
    tail = f"g{generation}-{digest}"
    budget = MAX_NAME - len(prefix) - len(tail) - 2  # two dashes around the readable parts
    if node is None:
        middle = _slug(name, budget) or "x"
    else:
        node_budget = max(budget // 2 - 1, 1)
        node_slug = _slug(node, node_budget) or "n"
        owner_slug = _slug(name, budget - len(node_slug) - 1) or "x"
        middle = f"{owner_slug}-{node_slug}"
    return f"{prefix}-{middle}-{tail}"


def label_value(text: str) -> str:
    """``text`` as a valid label value: unchanged when it fits, else cut with a hash suffix."""
    clean = _LABEL_INVALID.sub("-", text)
    if clean == text and len(text) <= MAX_NAME:
        return text
    digest = _digest(text, length=8)
    head = clean[: MAX_NAME - len(digest) - 1].strip("-._")
    return f"{head}-{digest}" if head else digest
