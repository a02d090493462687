"""What may leave the process in text: one printable line, URLs without user-info.

Text that comes from outside (an API error ``Message``, a URL from settings)
passes through here before it reaches stderr, a log line or a result file:

- :func:`printable` turns control characters (ANSI escapes that would
  repaint a terminal, NUL, C1, bidirectional overrides) and line breaks into
  spaces and caps the length, so one line stays one honest line.
- :func:`redact_url` shows a URL without ``user:password@``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["has_userinfo", "printable", "redact_url"]

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")
MAX_TEXT = 500
"""Characters kept of one piece of outside text."""


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` on one line: controls become spaces, runs of spaces one; ``limit`` at most."""
    line = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user@`` or ``user:password@`` before its host."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


def redact_url(url: str) -> str:
    """``url`` with any user-info replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()
