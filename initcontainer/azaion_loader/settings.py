"""Settings of the toolkit, read from the environment (prefix ``LOADER_``) at entry points.

Frozen dataclasses, every field with a default.  Library code receives these
objects; only :meth:`LoaderSettings.from_env` looks at ``os.environ``.
Credentials come from ``LOADER_CREDENTIALS_DIR`` (files ``email`` and
``password``, e.g. a mounted Secret; wins) or ``LOADER_EMAIL`` /
``LOADER_PASSWORD``; never from the command line.  No ``repr`` shows the password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from azaion_loader.engine import DEFAULT_CONTAINERD_NAMESPACE, DOCKER, RUNTIMES
from azaion_loader.errors import ConfigError, CredentialsMissingError
from azaion_loader.redact import has_userinfo, redact_url

__all__ = [
    "Credentials",
    "EngineSettings",
    "HardwareSettings",
    "HttpSettings",
    "LoaderSettings",
    "LogSettings",
]

DEFAULT_API_URL = "http://127.0.0.1:8080"
# containerd's own rule for namespace names.
_NAMESPACE = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class Credentials:
    """An email and a password; the password never appears in ``repr``/``str``."""

    email: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(email={self.email!r}, password='***')"

    __str__ = __repr__


@dataclass(frozen=True)
class HttpSettings:
    """How the API client and the CDN client talk HTTP."""

    timeout: float = 30.0
    """Seconds per HTTP call (connect and read), ``LOADER_TIMEOUT``."""
    retries: int = 4
    """Retries for 5xx and connection errors, ``LOADER_RETRIES``."""
    backoff_base: float = 0.5
    """First backoff delay in seconds; doubles per retry."""
    backoff_cap: float = 8.0
    """Longest backoff delay in seconds."""
    ca_bundle: str | None = None
    """CA bundle for the API and the CDN (``LOADER_CA_BUNDLE``); ``None``: system CAs.

    Passed with every request, so it wins over ``REQUESTS_CA_BUNDLE``."""
    deadline: float = 300.0
    """Seconds one API call may take in all, retries included, ``LOADER_DEADLINE``.

    Bounds a server that answers a byte at a time (each read within
    ``timeout``), which no per-read timeout catches."""
    max_response: int = 8 * 1024 * 1024
    """Largest API response body in bytes, ``LOADER_MAX_RESPONSE``; a longer one is refused."""
    min_rate: float = 4096.0
    """Bytes per second a CDN download must keep up, ``LOADER_MIN_RATE`` (0: no floor)."""
    rate_window: float = 60.0
    """Seconds over which ``min_rate`` is averaged, ``LOADER_RATE_WINDOW``."""
    download_deadline: float = 0.0
    """Seconds one CDN download may take in all, resumes included,
    ``LOADER_DOWNLOAD_DEADLINE`` (0: no limit of its own; a Job's
    ``activeDeadlineSeconds`` still bounds it)."""


@dataclass(frozen=True)
class HardwareSettings:
    """Inputs of the hardware fingerprint (docs/protocol.md §3)."""

    machine_id: str | None = None
    """Overrides the machine id files, ``LOADER_HW_MACHINE_ID``."""
    arch: str | None = None
    """Overrides the local architecture (Go naming), ``LOADER_HW_ARCH``."""
    machine_id_paths: tuple[str, ...] = ("/etc/machine-id", "/var/lib/dbus/machine-id")
    """Where the machine id is read from, first readable wins."""


@dataclass(frozen=True)
class LogSettings:
    """Logging, configured by the CLI only."""

    level: str = "INFO"
    """``LOADER_LOG_LEVEL``: DEBUG, INFO, WARNING, ERROR."""
    format: str = "text"
    """``LOADER_LOG_FORMAT``: ``text`` or ``json``."""

    def with_flags(self, *, quiet: bool = False, verbose: bool = False) -> LogSettings:
        """These settings with ``-q`` (ERROR) or ``-v`` (DEBUG) applied: a flag beats the
        environment."""
        if quiet:
            return replace(self, level="ERROR")
        if verbose:
            return replace(self, level="DEBUG")
        return self


@dataclass(frozen=True)
class EngineSettings:
    """Which container runtime the image commands load into, and where it is."""

    runtime: str = DOCKER
    """``docker`` or ``containerd``, ``LOADER_RUNTIME`` (flag ``--runtime``)."""
    socket: str | None = None
    """The runtime's socket, ``LOADER_RUNTIME_SOCKET`` (flag ``--socket``); ``None``: the
    runtime's default (for Docker, ``DOCKER_HOST`` or ``/var/run/docker.sock``)."""
    namespace: str = DEFAULT_CONTAINERD_NAMESPACE
    """containerd namespace, ``LOADER_CONTAINERD_NAMESPACE``: the kubelet reads ``k8s.io``."""
    pin: bool = False
    """Label loaded images as pinned (containerd), ``LOADER_PIN_IMAGES=1`` (flag ``--pin``)."""

    def with_flags(
        self,
        *,
        runtime: str | None = None,
        socket: str | None = None,
        namespace: str | None = None,
        pin: bool = False,
    ) -> EngineSettings:
        """These settings with the command line's flags applied (a flag beats the environment)."""
        merged = EngineSettings(
            runtime=runtime or self.runtime,
            socket=socket or self.socket,
            namespace=namespace or self.namespace,
            pin=pin or self.pin,
        )
        merged.validate()
        return merged

    def validate(self) -> None:
        """:class:`ConfigError` for a runtime, socket or namespace that cannot work."""
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"container runtime {self.runtime!r} is not supported: use " + " or ".join(RUNTIMES)
            )
        if self.socket is not None and not self.socket.startswith("/"):
            raise ConfigError(f"the runtime socket {self.socket!r} must be an absolute path")
        if not _NAMESPACE.match(self.namespace):
            raise ConfigError(
                f"{self.namespace!r} is not a containerd namespace name "
                "(letters, digits, and . _ - between them)"
            )


@dataclass(frozen=True)
class LoaderSettings:
    """Everything a toolkit command needs to know about its environment."""

    api_url: str = DEFAULT_API_URL
    """Base URL of the resource API, ``LOADER_API_URL``."""
    credentials: Credentials | None = None
    """Login credentials; ``None`` when none were configured."""
    credentials_problem: str | None = None
    """Why credentials could not be read (reported when a command needs them)."""
    cache_dir: str | None = None
    """Big-part cache root, ``LOADER_CACHE_DIR``; ``None``: no cache."""
    http: HttpSettings = field(default_factory=HttpSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    log: LogSettings = field(default_factory=LogSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def with_cache_dir(self, flag: str | None) -> LoaderSettings:
        """These settings with ``--cache-dir`` applied: a flag beats ``LOADER_CACHE_DIR``."""
        return replace(self, cache_dir=flag) if flag else self

    def require_credentials(self) -> Credentials:
        """The credentials, or :class:`CredentialsMissingError` naming what is missing."""
        if self.credentials is None:
            raise CredentialsMissingError(
                self.credentials_problem or "no credentials are configured"
            )
        return self.credentials

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoaderSettings:
        """Read the ``LOADER_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        credentials, problem = _read_credentials(env)
        level = env.get("LOADER_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOADER_LOG_LEVEL={level!r} is not a log level")
        fmt = env.get("LOADER_LOG_FORMAT", "text").strip().lower() or "text"
        if fmt not in {"text", "json"}:
            raise ConfigError(f"LOADER_LOG_FORMAT={fmt!r} must be `text` or `json`")
        api_url = env.get("LOADER_API_URL", "").strip() or DEFAULT_API_URL
        if has_userinfo(api_url):
            raise ConfigError(
                f"LOADER_API_URL={redact_url(api_url)!r} carries a user name or password",
                hint="remove `user:password@` from LOADER_API_URL; credentials go in "
                "LOADER_EMAIL/LOADER_PASSWORD or LOADER_CREDENTIALS_DIR",
            )
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"LOADER_API_URL={api_url!r} must start with http:// or https://")
        return cls(
            api_url=api_url.rstrip("/"),
            credentials=credentials,
            credentials_problem=problem,
            cache_dir=env.get("LOADER_CACHE_DIR", "").strip() or None,
            http=HttpSettings(
                timeout=_positive_float(env, "LOADER_TIMEOUT", 30.0),
                retries=_non_negative_int(env, "LOADER_RETRIES", 4),
                ca_bundle=env.get("LOADER_CA_BUNDLE", "").strip() or None,
                deadline=_positive_float(env, "LOADER_DEADLINE", 300.0),
                max_response=_positive_int(env, "LOADER_MAX_RESPONSE", 8 * 1024 * 1024),
                min_rate=_non_negative_float(env, "LOADER_MIN_RATE", 4096.0),
                rate_window=_positive_float(env, "LOADER_RATE_WINDOW", 60.0),
                download_deadline=_non_negative_float(env, "LOADER_DOWNLOAD_DEADLINE", 0.0),
            ),
            hardware=HardwareSettings(
                machine_id=env.get("LOADER_HW_MACHINE_ID", "").strip() or None,
                arch=env.get("LOADER_HW_ARCH", "").strip() or None,
            ),
            log=LogSettings(level=level, format=fmt),
            engine=_engine_settings(env),
        )


def _engine_settings(env: Mapping[str, str]) -> EngineSettings:
    engine = EngineSettings(
        runtime=env.get("LOADER_RUNTIME", "").strip().lower() or DOCKER,
        socket=env.get("LOADER_RUNTIME_SOCKET", "").strip() or None,
        namespace=env.get("LOADER_CONTAINERD_NAMESPACE", "").strip()
        or DEFAULT_CONTAINERD_NAMESPACE,
        pin=env.get("LOADER_PIN_IMAGES", "").strip().lower() in {"1", "true", "yes"},
    )
    engine.validate()
    return engine


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def _non_negative_float(env: Mapping[str, str], name: str, default: float) -> float:
    if not env.get(name, "").strip():
        return default
    try:
        return _positive_float(env, name, default)
    except ConfigError:
        if env[name].strip() in ("0", "0.0"):
            return 0.0
        raise ConfigError(f"{name}={env[name].strip()!r} must be a number, 0 or more") from None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _non_negative_int(env, name, default)
    if value == 0:
        raise ConfigError(f"{name}=0 must be greater than 0")
    return value


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or more")
    return value


def _read_credentials(env: Mapping[str, str]) -> tuple[Credentials | None, str | None]:
    """Credentials from LOADER_CREDENTIALS_DIR (wins) or LOADER_EMAIL/LOADER_PASSWORD."""
    cred_dir = env.get("LOADER_CREDENTIALS_DIR", "").strip()
    if cred_dir:
        base = Path(cred_dir)
        values: dict[str, str] = {}
        for name in ("email", "password"):
            try:
                values[name] = (base / name).read_text(encoding="utf-8").strip("\r\n")
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                return None, f"cannot read `{name}` in LOADER_CREDENTIALS_DIR={cred_dir} ({reason})"
        if not values["email"].strip() or not values["password"]:
            return None, f"`email` or `password` is empty in LOADER_CREDENTIALS_DIR={cred_dir}"
        return Credentials(values["email"].strip(), values["password"]), None
    email = env.get("LOADER_EMAIL", "").strip()
    password = env.get("LOADER_PASSWORD", "")
    if email and password:
        return Credentials(email, password), None
    if email or password:
        missing = "LOADER_PASSWORD" if email else "LOADER_EMAIL"
        return None, f"{missing} is not set"
    return None, "no credentials are configured"
