"""``python -m azaion_loader``: the ``loader`` CLI."""

from __future__ import annotations

from azaion_loader.cli.main import run

if __name__ == "__main__":
    run()
