"""The operator's settings: one typed dataclass, read from the environment at entry points.

Every variable starts with ``AZAION_OPERATOR_``; ``docs/operator.md`` lists them
for the Helm chart.  Bad values raise ``SettingsError`` with a one-line message
naming the variable.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from azaion_operator.policy import ALL_NAMESPACES, Policy, normalise_path

__all__ = [
    "PREFIX",
    "RESERVED_ENV",
    "RESERVED_MOUNT_PATHS",
    "RESERVED_VOLUMES",
    "CaBundle",
    "JobIdentity",
    "OperatorSettings",
    "SettingsError",
]

PREFIX = "AZAION_OPERATOR_"

_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("text", "json")
_BOOLEANS = {"true": True, "false": False}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ABSOLUTE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9_]$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_NO_PROXY_ITEM = re.compile(r"^[A-Za-z0-9.:/*_\[\]-]+$")


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class CaBundle:
    """A CA bundle in a ConfigMap or a Secret (in the custom resource's namespace)."""

    kind: str
    """``configMap`` or ``secret``."""
    name: str
    """The ConfigMap's or the Secret's name."""
    key: str = "ca.crt"
    """The key holding the PEM bundle."""


@dataclasses.dataclass(frozen=True)
class JobIdentity:
    """Who a namespace's Jobs run as: one tenant's Jobs cannot write another's files."""

    uid: int
    """``runAsUser`` of the Job containers (the unlock-load container aside, see kinds)."""
    gid: int
    """``runAsGroup``."""
    fs_group: int
    """``fsGroup``: the group that owns the volumes the kubelet prepares."""


# What the Job builders set themselves, which the admin's jobs.extraEnv /
# extraVolumes / extraVolumeMounts may not replace: the credentials, where they
# are sent (API URL, proxies, CA bundles) and the fingerprint inputs. A unit
# test checks that every name and path the builders use is listed here.
RESERVED_ENV = frozenset(
    {
        "HOME",
        "LOADER_API_URL",
        "LOADER_CA_BUNDLE",
        "LOADER_CREDENTIALS_DIR",
        "LOADER_EMAIL",
        "LOADER_PASSWORD",
        "LOADER_HW_MACHINE_ID",
        "LOADER_HW_ARCH",
        "LOADER_LOG_LEVEL",
        "LOADER_LOG_FORMAT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
"""Compared upper-cased: ``https_proxy`` is ``HTTPS_PROXY`` to the HTTP library."""
RESERVED_VOLUMES = frozenset(
    {"target", "results", "tmp", "work", "credentials", "ca-bundle", "runtime-socket"}
)
RESERVED_MOUNT_PATHS = (
    "/var/run/azaion-loader",
    "/run/azaion-loader",
    "/target",
    "/results",
    "/work",
    "/tmp",
    "/dev/termination-log",
)
"""An extra mount may be none of these, nor above or below one of them."""

_IDENTITY_KEYS = {"runAsUser": "uid", "runAsGroup": "gid", "fsGroup": "fs_group"}
_MAX_ID = 2147483647


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator reads from its environment, with defaults."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""

    job_image: str = "azaion-loader:dev"
    """The toolkit image the Jobs run (has ``loader`` and ``python3`` on PATH)."""

    job_image_pull_policy: str = "IfNotPresent"
    """``imagePullPolicy`` of every Job container."""

    image_pull_secrets: tuple[str, ...] = ()
    """Names of pull Secrets (in the custom resource's namespace) for the Job pods."""

    api_url: str = ""
    """Default resource API URL (``LOADER_API_URL``); empty means the toolkit's default."""

    credentials_secret: str = "azaion-loader-credentials"  # noqa: S105 - a Secret's name
    """Default Secret (in the custom resource's namespace) with keys ``email`` and ``password``."""

    job_backoff_limit: int = 2
    """Default ``backoffLimit``: pod retries for transient trouble."""

    job_active_deadline_seconds: int = 3600
    """Default ``activeDeadlineSeconds`` of a Job."""

    job_ttl_seconds_after_finished: int = 86400
    """Default ``ttlSecondsAfterFinished``: finished Jobs are removed after this."""

    job_uid: int = 10001
    """UID (and GID, fsGroup) of the Job containers; must own nothing on the host."""

    job_identities: tuple[tuple[str, JobIdentity], ...] = ()
    """Per-namespace identities of the Jobs (the admin's); other namespaces: ``job_uid``."""

    docker_socket_gid: int | None = None
    """Group of the Docker socket on the nodes; if set, the unlock container runs as
    ``job_uid`` with this supplemental group, else as uid 0 with all capabilities dropped."""

    docker_socket: str = "/var/run/docker.sock"
    """Docker's socket on the nodes (ImageUnlock ``runtime: docker``)."""
    containerd_socket: str = "/run/containerd/containerd.sock"
    """containerd's socket on the nodes (ImageUnlock ``runtime: containerd``)."""
    k3s_containerd_socket: str = "/run/k3s/containerd/containerd.sock"
    """containerd's socket on k3s nodes (kubelet version ``+k3s``)."""
    containerd_namespace: str = "k8s.io"
    """The containerd namespace images are loaded into: the kubelet's CRI reads ``k8s.io``."""
    containerd_socket_gid: int | None = None
    """Group of the containerd socket on the nodes, as ``docker_socket_gid`` for Docker."""
    allowed_socket_paths: tuple[str, ...] = ()
    """Further socket paths an ImageUnlock may name in ``spec.socketPath`` (the three
    above are always allowed); anything else is refused with ``PolicyDenied``."""
    job_cpu_request: str = "50m"
    job_cpu_limit: str = "1"
    job_memory_request: str = "64Mi"
    job_memory_limit: str = "512Mi"

    resync_seconds: float = 120.0
    """How often each custom resource is reconciled even without events (a safety net)."""

    log_level: str = "INFO"
    log_format: str = "text"
    """Log level and format of the operator, passed to the Jobs as ``LOADER_LOG_*``."""

    job_ca_bundle: CaBundle | None = None
    """CA bundle the fetching containers trust (``LOADER_CA_BUNDLE``); None: system CAs."""
    job_http_proxy: str = ""
    """``HTTP_PROXY`` of the fetching containers; empty: none."""
    job_https_proxy: str = ""
    """``HTTPS_PROXY`` of the fetching containers; empty: none."""
    job_no_proxy: str = ""
    """``NO_PROXY`` of the fetching containers (comma-separated hosts, domains, CIDRs)."""
    job_extra_env: tuple[Mapping[str, Any], ...] = ()
    """The admin's further EnvVars of every Job container (none of ``RESERVED_ENV``)."""
    job_extra_volumes: tuple[Mapping[str, Any], ...] = ()
    """The admin's further Volumes of every Job pod (none of ``RESERVED_VOLUMES``)."""
    job_extra_volume_mounts: tuple[Mapping[str, Any], ...] = ()
    """Mounts of those volumes in every Job container (clear of ``RESERVED_MOUNT_PATHS``)."""

    peering: str = ""
    """kopf peering name; empty means standalone (one replica, no peering objects)."""

    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    """Where kopf serves its liveness probe; empty disables it."""

    workers: int = 48
    """Threads for the synchronous handlers (and the Kubernetes client's connection pool)."""
    metrics_port: int = 9090
    """Port of ``/metrics`` (Prometheus) and ``/readyz``; 0 turns the endpoint off."""

    policy: Policy = dataclasses.field(default_factory=Policy)
    """What custom resources may ask for (``AZAION_OPERATOR_POLICY_*``; docs/security.md)."""

    def job_identity(self, namespace: str) -> JobIdentity:
        """Who the Jobs of ``namespace`` run as."""
        for name, identity in self.job_identities:
            if name == namespace:
                return identity
        return JobIdentity(self.job_uid, self.job_uid, self.job_uid)

    @property
    def clusterwide(self) -> bool:
        """True when no namespaces are listed."""
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """Read the settings from ``env``; unset or empty variables keep their defaults."""
        defaults = cls()
        reader = _Reader(env)
        settings = cls(
            namespaces=reader.names("NAMESPACES", defaults.namespaces),
            job_image=reader.text("JOB_IMAGE", defaults.job_image),
            job_image_pull_policy=reader.choice(
                "JOB_IMAGE_PULL_POLICY", defaults.job_image_pull_policy, _PULL_POLICIES
            ),
            image_pull_secrets=reader.names("IMAGE_PULL_SECRETS", defaults.image_pull_secrets),
            api_url=reader.url("API_URL", defaults.api_url),
            credentials_secret=reader.name("CREDENTIALS_SECRET", defaults.credentials_secret),
            job_backoff_limit=reader.integer(
                "JOB_BACKOFF_LIMIT", defaults.job_backoff_limit, 0, 10
            ),
            job_active_deadline_seconds=reader.integer(
                "JOB_ACTIVE_DEADLINE_SECONDS", defaults.job_active_deadline_seconds, 10, 604800
            ),
            job_ttl_seconds_after_finished=reader.integer(
                "JOB_TTL_SECONDS_AFTER_FINISHED",
                defaults.job_ttl_seconds_after_finished,
                0,
                2592000,
            ),
            job_uid=reader.integer("JOB_UID", defaults.job_uid, 1, _MAX_ID),
            job_identities=_read_identities(reader),
            docker_socket_gid=reader.optional_integer("DOCKER_SOCKET_GID", 0, 2147483647),
            docker_socket=reader.path("DOCKER_SOCKET", defaults.docker_socket),
            containerd_socket=reader.path("CONTAINERD_SOCKET", defaults.containerd_socket),
            k3s_containerd_socket=reader.path(
                "K3S_CONTAINERD_SOCKET", defaults.k3s_containerd_socket
            ),
            containerd_namespace=reader.text("CONTAINERD_NAMESPACE", defaults.containerd_namespace),
            containerd_socket_gid=reader.optional_integer("CONTAINERD_SOCKET_GID", 0, 2147483647),
            allowed_socket_paths=reader.paths("ALLOWED_SOCKET_PATHS"),
            job_cpu_request=reader.quantity("JOB_CPU_REQUEST", defaults.job_cpu_request),
            job_cpu_limit=reader.quantity("JOB_CPU_LIMIT", defaults.job_cpu_limit),
            job_memory_request=reader.quantity("JOB_MEMORY_REQUEST", defaults.job_memory_request),
            job_memory_limit=reader.quantity("JOB_MEMORY_LIMIT", defaults.job_memory_limit),
            resync_seconds=float(
                reader.integer("RESYNC_SECONDS", int(defaults.resync_seconds), 5, 86400)
            ),
            log_level=reader.choice("LOG_LEVEL", defaults.log_level, _LOG_LEVELS, upper=True),
            log_format=reader.choice("LOG_FORMAT", defaults.log_format, _LOG_FORMATS),
            job_ca_bundle=_read_ca_bundle(reader),
            job_http_proxy=reader.proxy("JOB_HTTP_PROXY"),
            job_https_proxy=reader.proxy("JOB_HTTPS_PROXY"),
            job_no_proxy=reader.no_proxy("JOB_NO_PROXY"),
            **_read_extras(reader),
            peering=reader.text("PEERING", defaults.peering),
            liveness_endpoint=reader.url(
                "LIVENESS_ENDPOINT", defaults.liveness_endpoint, empty_disables=True
            ),
            workers=reader.integer("WORKERS", defaults.workers, 1, 128),
            metrics_port=reader.integer("METRICS_PORT", defaults.metrics_port, 0, 65535),
            policy=_read_policy(reader),
        )
        return settings


def _read_ca_bundle(reader: _Reader) -> CaBundle | None:
    config_map = reader.subdomain("JOB_CA_BUNDLE_CONFIGMAP")
    secret = reader.subdomain("JOB_CA_BUNDLE_SECRET")
    key = reader.data_key("JOB_CA_BUNDLE_KEY", CaBundle.key)
    if config_map and secret:
        raise SettingsError(
            f"{PREFIX}JOB_CA_BUNDLE_CONFIGMAP and {PREFIX}JOB_CA_BUNDLE_SECRET: set one, not both"
        )
    if config_map:
        return CaBundle("configMap", config_map, key)
    if secret:
        return CaBundle("secret", secret, key)
    return None


def _json_list(reader: _Reader, key: str) -> list[Any]:
    raw = reader.text(key, "")
    try:
        items = json.loads(raw) if raw else []
    except ValueError:
        raise SettingsError(f"{PREFIX}{key}: expected a JSON list") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SettingsError(f"{PREFIX}{key}: expected a JSON list of objects")
    return items


def _overlaps(path: str, reserved: str) -> bool:
    """``path`` is ``reserved``, below it, or above it (whole components)."""
    a, b = "/" + "/".join(part for part in path.split("/") if part), reserved
    return a == b or a == "/" or b.startswith(a + "/") or a.startswith(b + "/")


def _read_extras(reader: _Reader) -> dict[str, tuple[Mapping[str, Any], ...]]:
    """``jobs.extraEnv`` / ``extraVolumes`` / ``extraVolumeMounts``, clear of the loader's own."""
    env = _json_list(reader, "JOB_EXTRA_ENV")
    volumes = _json_list(reader, "JOB_EXTRA_VOLUMES")
    mounts = _json_list(reader, "JOB_EXTRA_VOLUME_MOUNTS")
    for item in env:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SettingsError(f"{PREFIX}JOB_EXTRA_ENV: an item without a name")
        if name.upper() in RESERVED_ENV:
            raise SettingsError(
                f"{PREFIX}JOB_EXTRA_ENV: {name} is set by the operator (credentials, where "
                "they go, the fingerprint or logging) and cannot be replaced"
            )
    names = set()
    for item in volumes:
        name = item.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            raise SettingsError(f"{PREFIX}JOB_EXTRA_VOLUMES: {name!r} is not a volume name")
        if name in RESERVED_VOLUMES:
            raise SettingsError(f"{PREFIX}JOB_EXTRA_VOLUMES: {name} is a volume of the Jobs")
        names.add(name)
    for item in mounts:
        name, path = item.get("name"), item.get("mountPath")
        if name not in names:
            raise SettingsError(
                f"{PREFIX}JOB_EXTRA_VOLUME_MOUNTS: {name!r} is not one of jobs.extraVolumes"
            )
        if not isinstance(path, str) or not path.startswith("/") or "/.." in path:
            raise SettingsError(f"{PREFIX}JOB_EXTRA_VOLUME_MOUNTS: {name}: bad mountPath")
        if any(_overlaps(path, reserved) for reserved in RESERVED_MOUNT_PATHS):
            raise SettingsError(
                f"{PREFIX}JOB_EXTRA_VOLUME_MOUNTS: {name}: {path} would cover or sit in the "
                "Jobs' own mounts (credentials, target, work, results, /tmp)"
            )
    return {
        "job_extra_env": tuple(env),
        "job_extra_volumes": tuple(volumes),
        "job_extra_volume_mounts": tuple(mounts),
    }


def _read_identities(reader: _Reader) -> tuple[tuple[str, JobIdentity], ...]:
    """``{"team-a": {"runAsUser": 20001, "runAsGroup": 20001, "fsGroup": 20001}, ...}``;
    ``runAsGroup`` and ``fsGroup`` default to ``runAsUser``."""
    key = "JOB_NAMESPACE_IDENTITIES"
    raw = reader.text(key, "")
    if not raw:
        return ()
    try:
        table = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{key}: expected a JSON object") from None
    if not isinstance(table, dict):
        raise SettingsError(f"{PREFIX}{key}: expected a JSON object")
    identities = []
    for namespace, ids in sorted(table.items()):
        if not _DNS_LABEL.match(namespace) or not isinstance(ids, dict):
            raise SettingsError(f"{PREFIX}{key}: {namespace!r}: expected a namespace's ids")
        unknown = set(ids) - set(_IDENTITY_KEYS)
        uid = ids.get("runAsUser")
        if unknown or uid is None:
            raise SettingsError(
                f"{PREFIX}{key}: {namespace}: expected runAsUser and optionally runAsGroup, fsGroup"
            )
        values = {
            "uid": uid,
            "gid": ids.get("runAsGroup", uid),
            "fs_group": ids.get("fsGroup", uid),
        }
        for field, value in values.items():
            # Never 0: a tenant's Jobs are never root, nor in root's group.
            if type(value) is not int or not 1 <= value <= _MAX_ID:
                raise SettingsError(f"{PREFIX}{key}: {namespace}: {field} must be 1..{_MAX_ID}")
        identities.append((namespace, JobIdentity(**values)))
    return tuple(identities)


def _read_policy(reader: _Reader) -> Policy:
    return Policy(
        allowed_api_urls=reader.urls("POLICY_ALLOWED_API_URLS"),
        allow_insecure_http=reader.boolean("POLICY_ALLOW_INSECURE_HTTP", False),
        host_path_prefixes=reader.paths("POLICY_HOST_PATH_PREFIXES"),
        image_unlock_namespaces=reader.names(
            "POLICY_IMAGE_UNLOCK_NAMESPACES", (), wildcard=ALL_NAMESPACES
        ),
        allow_control_plane=reader.boolean("POLICY_ALLOW_CONTROL_PLANE", False),
        credentials_secrets=reader.names("POLICY_CREDENTIALS_SECRETS", ()),
    )


class _Reader:
    """Typed access to ``AZAION_OPERATOR_*`` variables with one-line errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, key: str) -> str | None:
        value = self._env.get(PREFIX + key, "").strip()
        return value or None

    def text(self, key: str, default: str) -> str:
        raw = self._raw(key)
        return default if raw is None else raw

    def choice(
        self, key: str, default: str, allowed: tuple[str, ...], *, upper: bool = False
    ) -> str:
        raw = self._raw(key)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in allowed:
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected one of {', '.join(allowed)}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.optional_integer(key, low, high)
        return default if value is None else value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        raw = self._raw(key)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected an integer") from None
        if not low <= value <= high:
            raise SettingsError(f"{PREFIX}{key}={value}: expected {low}..{high}")
        return value

    def name(self, key: str, default: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return default
        if not _DNS_LABEL.match(raw):
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected a DNS label (a-z, 0-9, -)")
        return raw

    def boolean(self, key: str, default: bool) -> bool:
        raw = self._raw(key)
        if raw is None:
            return default
        if raw.lower() not in _BOOLEANS:
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected true or false")
        return _BOOLEANS[raw.lower()]

    def _items(self, key: str) -> tuple[str, ...]:
        raw = self._raw(key) or ""
        return tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))

    def names(
        self, key: str, default: tuple[str, ...], *, wildcard: str | None = None
    ) -> tuple[str, ...]:
        if self._raw(key) is None:
            return default
        items = self._items(key)
        for item in items:
            if item != wildcard and not _DNS_LABEL.match(item):
                raise SettingsError(f"{PREFIX}{key}: {item!r} is not a DNS label (a-z, 0-9, -)")
        return items

    def path(self, key: str, default: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return default
        if not _ABSOLUTE_PATH.match(raw) or "/../" in f"{raw}/":
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected an absolute path")
        return raw

    def urls(self, key: str) -> tuple[str, ...]:
        items = self._items(key)
        for number, item in enumerate(items, 1):
            if not item.startswith(("http://", "https://")):
                # Not quoted: a mistyped URL may carry user info.
                raise SettingsError(f"{PREFIX}{key}: item {number} is not an http(s):// URL")
        return items

    def paths(self, key: str) -> tuple[str, ...]:
        normal = []
        for item in self._items(key):
            path = normalise_path(item)
            if path is None:
                raise SettingsError(
                    f"{PREFIX}{key}: {item!r} is not an absolute path without . or .. segments"
                )
            normal.append(path)
        return tuple(dict.fromkeys(normal))

    def url(self, key: str, default: str, *, empty_disables: bool = False) -> str:
        if empty_disables and PREFIX + key in self._env and not self._env[PREFIX + key].strip():
            return ""  # set but empty: the feature is off, not defaulted
        raw = self._raw(key)
        if raw is None:
            return default
        if not raw.startswith(("http://", "https://")):
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected an http:// or https:// URL")
        return raw

    def subdomain(self, key: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return ""
        if len(raw) > 253 or not _DNS_SUBDOMAIN.match(raw):
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected a DNS subdomain (a-z, 0-9, -, .)")
        return raw

    def data_key(self, key: str, default: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return default
        if not _DATA_KEY.match(raw):
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected a key of a-z, A-Z, 0-9, -, _, .")
        return raw

    def proxy(self, key: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return ""
        # Never quoted: a proxy URL with user info carries a password.
        if not raw.startswith(("http://", "https://")):
            raise SettingsError(f"{PREFIX}{key}: expected an http:// or https:// URL")
        if "@" in urllib.parse.urlsplit(raw).netloc:
            raise SettingsError(
                f"{PREFIX}{key}: credentials in a proxy URL would be visible in every Job"
                " manifest; use a proxy that needs none from the cluster"
            )
        return raw

    def no_proxy(self, key: str) -> str:
        items = self._items(key)
        for item in items:
            if not _NO_PROXY_ITEM.match(item):
                raise SettingsError(f"{PREFIX}{key}: {item!r} is not a host, domain or CIDR")
        return ",".join(items)

    def quantity(self, key: str, default: str) -> str:
        raw = self._raw(key)
        if raw is None:
            return default
        if not _QUANTITY.match(raw):
            raise SettingsError(f"{PREFIX}{key}={raw!r}: expected a quantity like 100m or 256Mi")
        return raw
