"""``python -m azaion_loader``: the ``loader`` CLI."""

from __future__ import annotations

import sys

from azaion_loader.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
