"""The pieces every kind's Job is made of (pure: dicts in, dicts out).

Containers, mounts, scratch volumes, the credentials and CA-bundle volumes, the
environment that names the node's hardware fingerprint inputs
(``status.nodeInfo.machineID`` / ``.architecture``, so a node always gets the
same fingerprint: docs/architecture.md), and the Job around a pod spec: labels
that lead back to the owner, the owner reference, node pinning by
``metadata.name``, the pod failure policy for the toolkit's permanent exit
codes.  Each kind's own Job is built in ``kinds/<kind>.py``.

Every container: no privilege escalation, all capabilities dropped, read-only
root filesystem, RuntimeDefault seccomp, requests and limits, non-root (the
one exception, ImageUnlock's ``unlock-load``, is explained in its module).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from azaion_operator import crd
from azaion_operator.names import job_name, label_value
from azaion_operator.nodes import NodeInfo
from azaion_operator.settings import JobIdentity, OperatorSettings

__all__ = [
    "CREDENTIALS_DIR",
    "RESULTS_DIR",
    "TARGET_DIR",
    "TERMINATION_LOG",
    "WORK_DIR",
    "api_env",
    "container",
    "container_security",
    "credentials_secret_name",
    "credentials_volume",
    "fetch_container",
    "fetch_mounts",
    "fetch_volumes",
    "job_manifest",
    "log_env",
    "mount",
    "offline_env",
    "owner_job_name",
    "scratch",
    "version_args",
]

CREDENTIALS_DIR = "/var/run/azaion-loader/credentials"
CA_BUNDLE_DIR = "/var/run/azaion-loader/ca"
CA_BUNDLE_FILE = "ca.crt"
TARGET_DIR = "/target"
RESULTS_DIR = "/results"
WORK_DIR = "/work"
TERMINATION_LOG = "/dev/termination-log"


def credentials_secret_name(spec: Mapping[str, Any], settings: OperatorSettings) -> str:
    """The credentials Secret a custom resource uses: its own reference or the default."""
    ref = spec.get("credentialsSecretRef") or {}
    return str(ref.get("name") or settings.credentials_secret)


def _labels(owner: Mapping[str, Any], component: str, node: NodeInfo) -> dict[str, str]:
    meta = owner["metadata"]
    return {
        crd.LABEL_NAME: "azaion-loader",
        crd.LABEL_COMPONENT: component,
        crd.LABEL_MANAGED_BY: crd.MANAGED_BY,
        crd.LABEL_OWNER_KIND: owner["kind"],
        crd.LABEL_OWNER_NAME: label_value(meta["name"]),
        crd.LABEL_OWNER_UID: meta["uid"],
        crd.LABEL_GENERATION: str(meta.get("generation", 1)),
        crd.LABEL_NODE: label_value(node.name),
    }


def _owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", crd.API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        # Not blocking: the Jobs go in the background after their owner, and the
        # operator needs no permission on the owner's finalizers.
        "blockOwnerDeletion": False,
    }


def _resources(spec: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    job = spec.get("job") or {}
    custom = job.get("resources") or {}
    requests = {"cpu": settings.job_cpu_request, "memory": settings.job_memory_request}
    limits = {"cpu": settings.job_cpu_limit, "memory": settings.job_memory_limit}
    requests.update(custom.get("requests") or {})
    limits.update(custom.get("limits") or {})
    return {"requests": requests, "limits": limits}


def container_security(identity: JobIdentity) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": identity.uid,
        "runAsGroup": identity.gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pin(node: NodeInfo) -> dict[str, Any]:
    """Node affinity on the node's exact name (``metadata.name``), as DaemonSets do."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": [node.name]}
                        ]
                    }
                ]
            }
        }
    }


def api_env(spec: Mapping[str, Any], node: NodeInfo, settings: OperatorSettings) -> list[dict]:
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "LOADER_CREDENTIALS_DIR", "value": CREDENTIALS_DIR},
    ]
    api_url = spec.get("apiUrl") or settings.api_url
    if api_url:
        env.append({"name": "LOADER_API_URL", "value": api_url})
    env += [
        {"name": "LOADER_HW_MACHINE_ID", "value": node.machine_id},
        {"name": "LOADER_HW_ARCH", "value": node.architecture},
    ]
    if settings.job_ca_bundle is not None:
        env.append({"name": "LOADER_CA_BUNDLE", "value": f"{CA_BUNDLE_DIR}/{CA_BUNDLE_FILE}"})
    for name, value in (
        ("HTTP_PROXY", settings.job_http_proxy),
        ("HTTPS_PROXY", settings.job_https_proxy),
        ("NO_PROXY", settings.job_no_proxy),
    ):
        if value:
            env.append({"name": name, "value": value})
    return env + log_env(settings)


def log_env(settings: OperatorSettings) -> list[dict]:
    """The Jobs log as the operator does."""
    return [
        {"name": "LOADER_LOG_LEVEL", "value": settings.log_level},
        {"name": "LOADER_LOG_FORMAT", "value": settings.log_format},
    ]


def fetch_mounts(settings: OperatorSettings) -> list[dict]:
    """What only the containers that talk to the API see: credentials, the CA bundle."""
    mounts = [mount("credentials", CREDENTIALS_DIR, read_only=True)]
    if settings.job_ca_bundle is not None:
        mounts.append(mount("ca-bundle", CA_BUNDLE_DIR, read_only=True))
    return mounts


def fetch_volumes(spec: Mapping[str, Any], settings: OperatorSettings) -> list[dict]:
    volumes = [credentials_volume(spec, settings)]
    bundle = settings.job_ca_bundle
    if bundle is not None:
        items = [{"key": bundle.key, "path": CA_BUNDLE_FILE}]
        source: dict[str, Any] = (
            {"configMap": {"name": bundle.name, "items": items, "defaultMode": 0o444}}
            if bundle.kind == "configMap"
            else {"secret": {"secretName": bundle.name, "items": items, "defaultMode": 0o444}}
        )
        volumes.append({"name": "ca-bundle", **source})
    return volumes


def credentials_volume(spec: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    return {
        "name": "credentials",
        "secret": {
            "secretName": credentials_secret_name(spec, settings),
            "items": [{"key": "email", "path": "email"}, {"key": "password", "path": "password"}],
            "defaultMode": 0o440,
        },
    }


def scratch(name: str, size: str) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"sizeLimit": size}}


def mount(name: str, path: str, *, read_only: bool, sub_path: str | None = None) -> dict:
    mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def container(
    name: str,
    command: list[str],
    *,
    env: list[dict],
    mounts: list[dict],
    security: dict[str, Any],
    spec: Mapping[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": settings.job_image,
        "imagePullPolicy": settings.job_image_pull_policy,
        "command": command,
        # The admin's extras come after ours and never share a name or path with
        # them (the settings reader refuses that), so they add and never replace.
        "env": env + copy.deepcopy(list(settings.job_extra_env)),
        "volumeMounts": mounts + copy.deepcopy(list(settings.job_extra_volume_mounts)),
        "resources": _resources(spec, settings),
        "securityContext": security,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def fetch_container(
    name: str,
    command: list[str],
    *,
    mounts: list[dict],
    node: NodeInfo,
    identity: JobIdentity,
    spec: Mapping[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The container that talks to the API: ``mounts``, then /tmp, credentials, CA bundle."""
    return container(
        name,
        command,
        env=api_env(spec, node, settings),
        mounts=[*mounts, mount("tmp", "/tmp", read_only=False), *fetch_mounts(settings)],
        security=container_security(identity),
        spec=spec,
        settings=settings,
    )


def offline_env(settings: OperatorSettings) -> list[dict]:
    """The environment of a container that talks to no network: a home, the log settings."""
    return [{"name": "HOME", "value": "/tmp"}, *log_env(settings)]


def version_args(source: Mapping[str, Any]) -> list[str]:
    """``--version V`` when the spec pins one (none: the latest)."""
    return ["--version", str(source["version"])] if source.get("version") else []


def owner_job_name(owner: Mapping[str, Any], prefix: str, node: str | None = None) -> str:
    """The name of ``owner``'s Job for its current generation (and ``node``)."""
    meta = owner["metadata"]
    return job_name(
        prefix=prefix,
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        node=node,
    )


def job_manifest(
    owner: Mapping[str, Any],
    *,
    name: str,
    component: str,
    node: NodeInfo,
    settings: OperatorSettings,
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    """The Job that runs ``pod_spec`` for ``owner`` on ``node``: labels, owner, pinning."""
    labels = _labels(owner, component, node)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "annotations": {crd.ANNOTATION_NODE: node.name},
            "ownerReferences": [_owner_reference(owner)],
        },
        "spec": {
            **_job_limits(owner["spec"], settings),
            "podFailurePolicy": _pod_failure_policy(),
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {crd.ANNOTATION_NODE: node.name},
                },
                "spec": _template_spec(owner, node, settings, pod_spec),
            },
        },
    }


def _job_limits(spec: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """One pod at a time, retried and kept as ``spec.job`` or the admin's defaults say."""
    tuning = spec.get("job") or {}
    return {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": int(tuning.get("backoffLimit", settings.job_backoff_limit)),
        "activeDeadlineSeconds": int(
            tuning.get("activeDeadlineSeconds", settings.job_active_deadline_seconds)
        ),
        "ttlSecondsAfterFinished": int(
            tuning.get("ttlSecondsAfterFinished", settings.job_ttl_seconds_after_finished)
        ),
    }


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                # The toolkit says retrying cannot help: fail now, keep the message.
                "action": "FailJob",
                "onExitCodes": {
                    "operator": "In",
                    "values": list(crd.PERMANENT_EXIT_CODES),
                },
            },
            {
                # Evicted or preempted pods do not count against backoffLimit.
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _template_spec(
    owner: Mapping[str, Any],
    node: NodeInfo,
    settings: OperatorSettings,
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    """The pod: ``pod_spec`` pinned to ``node``, with no token, plus the admin's extras."""
    identity = settings.job_identity(owner["metadata"]["namespace"])
    template_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": _pin(node),
        "tolerations": copy.deepcopy(list(owner["spec"].get("tolerations") or [])),
        "securityContext": _pod_security(identity),
        **pod_spec,
    }
    if settings.job_extra_volumes:
        template_spec["volumes"] = [
            *template_spec.get("volumes", []),
            *copy.deepcopy(list(settings.job_extra_volumes)),
        ]
    if settings.image_pull_secrets:
        template_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return template_spec


def _pod_security(identity: JobIdentity) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": identity.uid,
        "runAsGroup": identity.gid,
        "fsGroup": identity.fs_group,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
