"""azaion-loader toolkit: encrypted resources and image archives for edge clusters.

Its layers and the one module per external system are in ``.importlinter``
(the rule book the check enforces); docs/architecture.md explains them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
