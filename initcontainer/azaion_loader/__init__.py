"""azaion-loader toolkit: encrypted resources and image archives for edge clusters.

Layers (top to bottom, see docs/architecture.md): ``cli`` / ``server`` /
``devstack``; ``split`` and ``unlock``; ``api_client``, ``cdn``,
``docker_cli``; ``crypto``, ``envelope``, ``fingerprint``, ``publish``,
``progress``; ``settings``, ``errors``, ``models``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
