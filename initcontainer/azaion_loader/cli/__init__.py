"""The ``loader`` command line: argument parsing, logging, results and exit codes."""

from __future__ import annotations

__all__: list[str] = []
