"""The reference resource API server (docs/protocol.md).

A real HTTP server, not a mock: users with roles, hardware binding, small parts,
resource keys, digests, key fragments and CDN settings, persisted as JSON files
under a data directory.  ``create_app(config)`` builds the Flask application
(its endpoints: ``routes``, one blueprint per resource);
``serving.ServerThread`` runs it on a threaded werkzeug server; ``cli`` is
``loader serve-api``; ``devstack`` is ``loader dev-stack`` (this server, moto's
S3 server and demo data, for the README and the tests).  None of it runs in a Job.
"""

from __future__ import annotations

from azaion_loader.server.app import create_app, server_state
from azaion_loader.server.config import ServerConfig
from azaion_loader.server.serving import ServerThread
from azaion_loader.server.store import Store

__all__ = ["ServerConfig", "ServerThread", "Store", "create_app", "server_state"]
