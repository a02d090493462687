"""What a custom resource may ask for: the cluster admin's policy, and pure checks against it.

Whoever may create a ``Resource`` or an ``ImageUnlock`` chooses where its Job
sends the shared credentials and the node's machine ID (``spec.apiUrl``), which
node directory it writes (a ``hostPath`` target), and, with an ``ImageUnlock``,
gets root on the nodes through their Docker socket.  So, secure by default:

- the API URL is the operator's default or one the admin listed, and never
  plain ``http://`` unless the admin allows it (test clusters);
- a ``hostPath`` target must lie under a prefix the admin listed (none by default);
- ``ImageUnlock`` is served only in the namespaces the admin listed;
- an ``ImageUnlock`` may tolerate control-plane taints only if the admin allows it;
- ``spec.credentialsSecretRef`` names the default credentials Secret or one the
  admin listed (the chart's RBAC lets the operator read only those names).

Each check returns a ``Denial`` (the rule, named as the chart value, and a
one-line message naming the rule and the refused value) or ``None``.  No I/O:
the settings reader builds the ``Policy`` from the environment, the reconciler
calls ``resource_denial`` / ``unlock_denial`` before it builds any Job.
"""

from __future__ import annotations

import dataclasses
import posixpath
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALL_NAMESPACES",
    "CONTROL_PLANE_TAINTS",
    "Denial",
    "Policy",
    "check_api_url",
    "check_control_plane",
    "check_credentials_secret",
    "check_host_path",
    "check_unlock_namespace",
    "normalise_path",
    "normalise_url",
    "resource_denial",
    "unlock_denial",
]

ALL_NAMESPACES = "*"
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


@dataclasses.dataclass(frozen=True)
class Denial:
    """Why a spec is refused: ``rule`` is the chart value that decides it."""

    rule: str
    message: str


@dataclasses.dataclass(frozen=True)
class Policy:
    """The admin's policy (chart values ``policy.*``); the defaults allow the least."""

    allowed_api_urls: tuple[str, ...] = ()
    """API URLs a custom resource may name in ``spec.apiUrl``, besides the operator's
    default (always allowed); compared after ``normalise_url``."""

    allow_insecure_http: bool = False
    """Allow ``http://`` API URLs, the default's too (credentials cross the network in clear)."""

    host_path_prefixes: tuple[str, ...] = ()
    """Directories under which a ``Resource`` may have a ``hostPath`` target; empty: none."""

    image_unlock_namespaces: tuple[str, ...] = ()
    """Namespaces whose ``ImageUnlock`` objects are served; ``("*",)``: all; empty: none."""

    allow_control_plane: bool = False
    """Let an ``ImageUnlock`` tolerate the control-plane taints (``CONTROL_PLANE_TAINTS``)."""

    credentials_secrets: tuple[str, ...] = ()
    """Secrets a custom resource may name in ``spec.credentialsSecretRef``, besides the
    operator's default (always allowed); the chart's RBAC grants ``get`` on these names only."""


def normalise_url(url: str) -> str:
    """``url`` with scheme and host in lower case and no trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    netloc = f"{userinfo}{at}{host.lower()}"
    return urllib.parse.urlunsplit(
        (parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, parts.fragment)
    )


def _shown(url: str) -> str:
    """``url`` fit for a message: without user info, query or fragment (they may hold secrets)."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def normalise_path(path: str) -> str | None:
    """An absolute path without ``.``/``..`` segments or doubled slashes; ``None`` if not one."""
    if not path.startswith("/") or any(p in (".", "..") for p in path.split("/")):
        return None
    # normpath keeps a leading "//" (POSIX leaves its meaning open): collapse it too.
    return "/" + posixpath.normpath(path).lstrip("/")


def check_api_url(spec_url: str | None, default_url: str, policy: Policy) -> Denial | None:
    """The API URL a Job would use (``spec.apiUrl`` or the default) is allowed."""
    if spec_url:
        allowed = {normalise_url(u) for u in (default_url, *policy.allowed_api_urls) if u}
        if normalise_url(spec_url) not in allowed:
            return Denial(
                "policy.allowedApiUrls",
                f"policy.allowedApiUrls: spec.apiUrl {_shown(spec_url)} is not an allowed API "
                "URL (the operator's defaults.apiUrl or policy.allowedApiUrls): remove "
                "spec.apiUrl, or ask the cluster admin to list it",
            )
        url, what = spec_url, "spec.apiUrl"
    elif default_url:
        url, what = default_url, "the operator's defaults.apiUrl"
    else:
        return Denial(
            "defaults.apiUrl",
            "defaults.apiUrl: no API URL: spec.apiUrl is unset and the operator has no "
            "default; the cluster admin sets defaults.apiUrl (AZAION_OPERATOR_API_URL)",
        )
    if urllib.parse.urlsplit(url.strip()).scheme.lower() != "https" and not (
        policy.allow_insecure_http
    ):
        return Denial(
            "policy.allowInsecureHttp",
            f"policy.allowInsecureHttp: {what} {_shown(url)} is not https, so the credentials "
            "would cross the network unencrypted: use an https URL, or the cluster admin sets "
            "policy.allowInsecureHttp=true (test clusters only)",
        )
    return None


def _under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it, compared on whole path components."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def check_host_path(path: str, policy: Policy) -> Denial | None:
    """A ``hostPath`` target lies under one of ``policy.host_path_prefixes``."""
    normal = normalise_path(path)
    prefixes = [p for p in (normalise_path(p) for p in policy.host_path_prefixes) if p]
    if normal is not None and any(_under(normal, prefix) for prefix in prefixes):
        return None
    allowed = ", ".join(prefixes) if prefixes else "none"
    return Denial(
        "policy.hostPathPrefixes",
        f"policy.hostPathPrefixes: spec.target.hostPath.path {path} is not under an allowed "
        f"prefix (allowed: {allowed}): use a volume claim target, or ask the cluster admin "
        "to add a prefix",
    )


def check_unlock_namespace(namespace: str, policy: Policy) -> Denial | None:
    """``ImageUnlock`` (root on the nodes) is served in ``namespace``."""
    allowed = policy.image_unlock_namespaces
    if ALL_NAMESPACES in allowed or namespace in allowed:
        return None
    listed = ", ".join(allowed) if allowed else "none"
    return Denial(
        "policy.imageUnlockNamespaces",
        f"policy.imageUnlockNamespaces: namespace {namespace} may not use ImageUnlock, which "
        f"is root on the nodes (allowed: {listed}): create it in an allowed namespace, or ask "
        "the cluster admin to list this one",
    )


def _tolerates_control_plane(toleration: Mapping[str, Any]) -> bool:
    key = toleration.get("key") or ""
    if not key:  # an empty key with operator Exists tolerates every taint
        return toleration.get("operator") == "Exists"
    return key in CONTROL_PLANE_TAINTS


def check_control_plane(tolerations: Iterable[Mapping[str, Any]], policy: Policy) -> Denial | None:
    """No toleration reaches control-plane nodes, unless the admin allows it."""
    if policy.allow_control_plane:
        return None
    for index, toleration in enumerate(tolerations):
        if _tolerates_control_plane(toleration):
            key = toleration.get("key") or "(any key)"
            return Denial(
                "policy.allowControlPlane",
                f"policy.allowControlPlane: spec.tolerations[{index}] (key {key}) tolerates "
                "the control-plane taints, and ImageUnlock is root on the nodes it reaches: "
                "name the taints your edge nodes have, or the cluster admin sets "
                "policy.allowControlPlane=true",
            )
    return None


def check_credentials_secret(
    spec: Mapping[str, Any], default_secret: str, policy: Policy
) -> Denial | None:
    """``spec.credentialsSecretRef`` names the default Secret or one the admin listed."""
    name = str((spec.get("credentialsSecretRef") or {}).get("name") or "")
    if not name or name == default_secret or name in policy.credentials_secrets:
        return None
    allowed = ", ".join(dict.fromkeys((default_secret, *policy.credentials_secrets)))
    return Denial(
        "policy.credentialsSecrets",
        f"policy.credentialsSecrets: spec.credentialsSecretRef.name {name} is not an allowed "
        f"credentials Secret (allowed: {allowed}): remove spec.credentialsSecretRef, or ask "
        "the cluster admin to list it",
    )


def resource_denial(
    spec: Mapping[str, Any], default_url: str, policy: Policy, *, default_secret: str
) -> Denial | None:
    """The first rule a ``Resource`` spec breaks, or ``None``."""
    denial = check_api_url(spec.get("apiUrl"), default_url, policy)
    if denial is None:
        denial = check_credentials_secret(spec, default_secret, policy)
    host_path = (spec.get("target") or {}).get("hostPath")
    if denial is None and host_path is not None:
        denial = check_host_path(str(host_path.get("path") or ""), policy)
    return denial


def unlock_denial(
    namespace: str,
    spec: Mapping[str, Any],
    default_url: str,
    policy: Policy,
    *,
    default_secret: str,
) -> Denial | None:
    """The first rule an ``ImageUnlock`` spec in ``namespace`` breaks, or ``None``."""
    return (
        check_unlock_namespace(namespace, policy)
        or check_api_url(spec.get("apiUrl"), default_url, policy)
        or check_credentials_secret(spec, default_secret, policy)
        or check_control_plane(spec.get("tolerations") or (), policy)
    )
