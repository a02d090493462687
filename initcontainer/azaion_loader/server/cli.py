"""``loader serve-api``: run the reference API server until SIGINT or SIGTERM.

Secrets never come from argv: user passwords come from ``--users-file``, the
JWT signing key from ``LOADER_SERVER_JWT_SECRET`` or, when unset, a random key
kept in ``<data-dir>/jwt-secret`` (mode 0600) so tokens survive a restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from pathlib import Path

from azaion_loader.errors import ConfigError
from azaion_loader.server.accounts import register_user
from azaion_loader.server.app import create_app, server_state
from azaion_loader.server.config import DEFAULT_TOKEN_TTL, ServerConfig
from azaion_loader.server.serving import ServerThread, wait_for_stop_signal
from azaion_loader.server.settings_files import load_cdn_file, load_users_file
from azaion_loader.server.throttle import LoginLimits

__all__ = ["EPILOG", "add_arguments", "load_jwt_secret", "run"]

log = logging.getLogger(__name__)

SECRET_ENV = "LOADER_SERVER_JWT_SECRET"  # noqa: S105 - a variable name, not a secret

EPILOG = """\
examples:
  loader serve-api --data-dir /var/lib/azaion-api --users-file users.yaml \\
      --cdn-config-file cdn.yaml --port 8080
  LOADER_SERVER_JWT_SECRET=... loader serve-api --data-dir ./api --host 0.0.0.0

users.yaml:
  users:
    - {email: publisher@example.com, password: "...", role: uploader, max_devices: 2}

cdn.yaml (protocol.md section 4):
  endpoint_url: https://s3.example.com
  region: us-east-1
  read:  {access_key_id: ..., secret_access_key: ...}
  write: {access_key_id: ..., secret_access_key: ...}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``loader serve-api`` to ``parser``."""
    parser.add_argument("--data-dir", type=Path, required=True, help="state directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s; 0: any)")
    parser.add_argument(
        "--users-file", type=Path, help="YAML/JSON users to create or update at start"
    )
    parser.add_argument("--cdn-config-file", type=Path, help="YAML/JSON CDN settings to install")
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL,
        help="token lifetime in seconds (default %(default)s)",
    )
    limits = LoginLimits()
    parser.add_argument(
        "--login-max-failures",
        type=int,
        default=limits.failures_per_email,
        help="failed logins per email within --login-window before 429 (default %(default)s)",
    )
    parser.add_argument(
        "--login-max-failures-per-address",
        type=int,
        default=limits.failures_per_address,
        help="failed logins per client address within --login-window (default %(default)s)",
    )
    parser.add_argument(
        "--login-window",
        type=float,
        default=limits.window,
        help="login throttling window in seconds (default %(default)s)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")


def load_jwt_secret(data_dir: Path) -> bytes:
    """The signing key: ``$LOADER_SERVER_JWT_SECRET``, else ``<data-dir>/jwt-secret``."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        if len(from_env.encode()) < 32:
            raise ConfigError(f"{SECRET_ENV} must be at least 32 bytes long")
        return from_env.encode()
    path = data_dir / "jwt-secret"
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(48).hex().encode())
        secret = path.read_bytes()
    if len(secret) < 32:
        raise ConfigError(f"{path} holds a key shorter than 32 bytes; delete it to regenerate")
    return secret


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from exc
    return context


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop."""
    users = load_users_file(args.users_file) if args.users_file else []
    cdn = load_cdn_file(args.cdn_config_file) if args.cdn_config_file else None
    if args.token_ttl < 1:
        raise ConfigError("--token-ttl must be at least 1 second")
    try:
        limits = LoginLimits(
            failures_per_email=args.login_max_failures,
            failures_per_address=args.login_max_failures_per_address,
            window=args.login_window,
        )
    except ValueError as exc:
        raise ConfigError(f"--login-*: {exc}") from None
    config = ServerConfig(
        data_dir=args.data_dir,
        jwt_secret=load_jwt_secret(args.data_dir),
        token_ttl=args.token_ttl,
        login_limits=limits,
    )
    app = create_app(config)
    store = server_state(app).store
    for entry in users:
        register_user(
            store,
            email=entry.email,
            password=entry.password,
            role=entry.role,
            max_devices=entry.max_devices,
        )
    if cdn is not None:
        store.set_cdn_config(cdn)
    try:
        server = ServerThread(app, args.host, args.port, ssl_context=_ssl_context(args))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror}",
            hint="pick another --port or --host",
        ) from exc
    server.start()
    print(f"serve-api: listening on {server.url} (data in {args.data_dir})", file=sys.stderr)
    signum = wait_for_stop_signal()
    log.info("signal %d: stopping", signum)
    server.stop()
    print("serve-api: stopped", file=sys.stderr)
    return 0
