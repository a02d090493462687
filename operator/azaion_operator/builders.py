"""Job manifests for ``Resource`` and ``ImageUnlock`` (pure: dicts in, dicts out).

Both Jobs are pinned to one node (``NodeInfo``) and pass that node's hardware
fingerprint inputs (``status.nodeInfo.machineID`` / ``.architecture``) to the
container that talks to the API, so a node always gets the same fingerprint
(docs/architecture.md, "Hardware fingerprint across the cluster").

Resource Job::

    init  fetch   loader fetch ... --out /target/<file>   credentials, target (rw), /results (rw),
                  CA bundle and proxy settings (if configured)
    main  verify  loader verify --file ... --sha256 <from /results/fetch.json>
                  target (ro), /results (ro); writes the termination message

ImageUnlock Job::

    init  unlock-fetch  loader unlock-fetch ... --workdir /work   credentials, /work (rw),
                        CA bundle and proxy settings (if configured)
    main  unlock-load   loader unlock-load --workdir /work        runtime socket, /work (ro);
                        no credentials, no CA bundle, no proxy: it talks to no network

Every container: no privilege escalation, all capabilities dropped, read-only
root filesystem, RuntimeDefault seccomp, requests and limits, non-root - except
``unlock-load`` when no Docker socket group is configured: it then runs as uid 0
(still with no capabilities at all), because that is the only identity that can
open a ``root:docker 0660`` socket whose group id differs from node to node.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from azaion_operator import crd
from azaion_operator.names import job_name, label_value
from azaion_operator.nodes import NodeInfo
from azaion_operator.runtimes import CONTAINERD, RuntimeChoice
from azaion_operator.settings import OperatorSettings

__all__ = [
    "CREDENTIALS_DIR",
    "VERIFY_SHIM",
    "build_resource_job",
    "build_unlock_job",
    "credentials_secret_name",
]

CREDENTIALS_DIR = "/var/run/azaion-loader/credentials"
CA_BUNDLE_DIR = "/var/run/azaion-loader/ca"
CA_BUNDLE_FILE = "ca.crt"
TARGET_DIR = "/target"
RESULTS_DIR = "/results"
WORK_DIR = "/work"
RUNTIME_SOCKET = "/run/azaion-loader/runtime.sock"
"""Where the node's container-runtime socket appears in the unlock-load container."""
TERMINATION_LOG = "/dev/termination-log"

# The verify container reads the digest the fetch container recorded and hands
# it to `loader verify` (the digest is not secret; exec keeps verify's exit code).
VERIFY_SHIM = (
    "import json, os, sys\n"
    "try:\n"
    "    with open(sys.argv[1], encoding='utf-8') as f:\n"
    "        sha = json.loads(f.read().strip().splitlines()[-1])['sha256']\n"
    "except (OSError, ValueError, KeyError, IndexError, TypeError) as e:\n"
    "    print('verify: no digest in %s: %s' % (sys.argv[1], e), file=sys.stderr)\n"
    "    sys.exit(3)\n"
    "os.execvp('loader', ['loader', 'verify', '--file', sys.argv[2], '--sha256', sha,"
    " '--json', '--result-file', sys.argv[3]])\n"
)


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


def _container_security(uid: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def image_repository(image: str) -> str:
    """``registry.local/azaion-loader`` of ``registry.local/azaion-loader:1.0@sha256:...``."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rindex(":")]
    return name


def _socket_gid(runtime: str, settings: OperatorSettings) -> int | None:
    if runtime == CONTAINERD:
        return settings.containerd_socket_gid
    return settings.docker_socket_gid


def _runtime_security(runtime: str, settings: OperatorSettings) -> dict[str, Any]:
    """The unlock-load container: as narrow as the runtime's socket allows."""
    if _socket_gid(runtime, settings) is not None:
        # The socket's group is known: stay non-root, reach it through that group
        # (added to the pod's supplementalGroups).
        return _container_security(settings.job_uid)
    context = _container_security(0)
    context["runAsNonRoot"] = False
    context["runAsGroup"] = settings.job_uid  # reads /work through its group, not as root
    return context


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


def _api_env(spec: Mapping[str, Any], node: NodeInfo, settings: OperatorSettings) -> list[dict]:
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
    return env + _log_env(settings)


def _log_env(settings: OperatorSettings) -> list[dict]:
    """The Jobs log as the operator does."""
    return [
        {"name": "LOADER_LOG_LEVEL", "value": settings.log_level},
        {"name": "LOADER_LOG_FORMAT", "value": settings.log_format},
    ]


def _fetch_mounts(settings: OperatorSettings) -> list[dict]:
    """What only the containers that talk to the API see: credentials, the CA bundle."""
    mounts = [_mount("credentials", CREDENTIALS_DIR, read_only=True)]
    if settings.job_ca_bundle is not None:
        mounts.append(_mount("ca-bundle", CA_BUNDLE_DIR, read_only=True))
    return mounts


def _fetch_volumes(spec: Mapping[str, Any], settings: OperatorSettings) -> list[dict]:
    volumes = [_credentials_volume(spec, settings)]
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


def _credentials_volume(spec: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    return {
        "name": "credentials",
        "secret": {
            "secretName": credentials_secret_name(spec, settings),
            "items": [{"key": "email", "path": "email"}, {"key": "password", "path": "password"}],
            "defaultMode": 0o440,
        },
    }


def _scratch(name: str, size: str) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"sizeLimit": size}}


def _mount(name: str, path: str, *, read_only: bool, sub_path: str | None = None) -> dict:
    mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def _container(
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
        "env": env,
        "volumeMounts": mounts,
        "resources": _resources(spec, settings),
        "securityContext": security,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _job(
    owner: Mapping[str, Any],
    *,
    name: str,
    component: str,
    node: NodeInfo,
    settings: OperatorSettings,
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    spec = owner["spec"]
    tuning = spec.get("job") or {}
    labels = _labels(owner, component, node)
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": settings.job_uid,
        "runAsGroup": settings.job_uid,
        "fsGroup": settings.job_uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    template_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": _pin(node),
        "tolerations": copy.deepcopy(list(spec.get("tolerations") or [])),
        "securityContext": pod_security,
        **pod_spec,
    }
    if settings.image_pull_secrets:
        template_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
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
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": int(tuning.get("backoffLimit", settings.job_backoff_limit)),
            "activeDeadlineSeconds": int(
                tuning.get("activeDeadlineSeconds", settings.job_active_deadline_seconds)
            ),
            "ttlSecondsAfterFinished": int(
                tuning.get("ttlSecondsAfterFinished", settings.job_ttl_seconds_after_finished)
            ),
            "podFailurePolicy": {
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
            },
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {crd.ANNOTATION_NODE: node.name},
                },
                "spec": template_spec,
            },
        },
    }


def build_resource_job(
    resource: Mapping[str, Any], node: NodeInfo, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job that fetches one ``Resource`` into its target on ``node`` and verifies it."""
    meta = resource["metadata"]
    spec = resource["spec"]
    source = spec["source"]
    target = spec["target"]
    out = f"{TARGET_DIR}/{target['fileName']}"

    if "persistentVolumeClaim" in target:
        pvc = target["persistentVolumeClaim"]
        target_volume: dict[str, Any] = {
            "name": "target",
            "persistentVolumeClaim": {"claimName": pvc["claimName"]},
        }
        sub_path = pvc.get("subPath")
    else:
        target_volume = {
            "name": "target",
            "hostPath": {"path": target["hostPath"]["path"], "type": "DirectoryOrCreate"},
        }
        sub_path = None

    fetch_args = ["loader", "fetch", "--folder", source["folder"], "--name", source["name"]]
    if source.get("version"):
        fetch_args += ["--version", str(source["version"])]
    fetch_args += ["--out", out, "--json", "--result-file", f"{RESULTS_DIR}/fetch.json"]

    fetch = _container(
        "fetch",
        fetch_args,
        env=_api_env(spec, node, settings),
        mounts=[
            _mount("target", TARGET_DIR, read_only=False, sub_path=sub_path),
            _mount("results", RESULTS_DIR, read_only=False),
            _mount("tmp", "/tmp", read_only=False),
            *_fetch_mounts(settings),
        ],
        security=_container_security(settings.job_uid),
        spec=spec,
        settings=settings,
    )
    verify = _container(
        "verify",
        ["python3", "-c", VERIFY_SHIM, f"{RESULTS_DIR}/fetch.json", out, TERMINATION_LOG],
        env=[{"name": "HOME", "value": "/tmp"}, *_log_env(settings)],
        mounts=[
            _mount("target", TARGET_DIR, read_only=True, sub_path=sub_path),
            _mount("results", RESULTS_DIR, read_only=True),
            _mount("tmp", "/tmp", read_only=False),
        ],
        security=_container_security(settings.job_uid),
        spec=spec,
        settings=settings,
    )
    name = job_name(
        prefix="res",
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
    )
    return _job(
        resource,
        name=name,
        component="resource-job",
        node=node,
        settings=settings,
        pod_spec={
            "initContainers": [fetch],
            "containers": [verify],
            "volumes": [
                target_volume,
                _scratch("results", "1Mi"),
                _scratch("tmp", "64Mi"),
                *_fetch_volumes(spec, settings),
            ],
        },
    )


def build_unlock_job(
    unlock: Mapping[str, Any],
    node: NodeInfo,
    settings: OperatorSettings,
    choice: RuntimeChoice,
) -> dict[str, Any]:
    """The Job that fetches an ``ImageUnlock``'s archive and loads it into ``node``'s runtime.

    ``choice``: the runtime and its socket on the node (:func:`runtimes.choose_runtime`).
    """
    meta = unlock["metadata"]
    spec = unlock["spec"]
    archive = spec["archive"]

    fetch_args = [
        "loader",
        "unlock-fetch",
        "--archive-folder",
        archive["folder"],
        "--archive-name",
        archive["name"],
    ]
    if archive.get("version"):
        fetch_args += ["--version", str(archive["version"])]
    fetch_args += ["--workdir", WORK_DIR, "--json", "--result-file", TERMINATION_LOG]

    load_args = ["loader", "unlock-load", "--workdir", WORK_DIR]
    load_args += ["--runtime", choice.runtime, "--socket", RUNTIME_SOCKET]
    # An archive may not replace the image the Jobs themselves run.
    load_args += ["--forbid-repository", image_repository(settings.job_image)]
    if choice.runtime == CONTAINERD:
        load_args += ["--namespace", settings.containerd_namespace]
        if spec.get("pinImages"):
            load_args.append("--pin")
    load_args += ["--json", "--result-file", TERMINATION_LOG]
    if spec.get("images"):
        load_args += ["--images", *[str(i) for i in spec["images"]]]

    fetch = _container(
        "unlock-fetch",
        fetch_args,
        env=_api_env(spec, node, settings),
        mounts=[
            _mount("work", WORK_DIR, read_only=False),
            _mount("tmp", "/tmp", read_only=False),
            *_fetch_mounts(settings),
        ],
        security=_container_security(settings.job_uid),
        spec=spec,
        settings=settings,
    )
    load = _container(
        "unlock-load",
        load_args,
        env=[{"name": "HOME", "value": "/tmp"}, *_log_env(settings)],
        mounts=[
            _mount("work", WORK_DIR, read_only=True),
            _mount("tmp", "/tmp", read_only=False),
            _mount("runtime-socket", RUNTIME_SOCKET, read_only=False),
        ],
        security=_runtime_security(choice.runtime, settings),
        spec=spec,
        settings=settings,
    )
    name = job_name(
        prefix="unl",
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        node=node.name,
    )
    job = _job(
        unlock,
        name=name,
        component="image-unlock-job",
        node=node,
        settings=settings,
        pod_spec={
            "initContainers": [fetch],
            "containers": [load],
            "volumes": [
                # The encrypted archive lands here: size it by the job's ephemeral
                # storage, not by an arbitrary cap.
                {"name": "work", "emptyDir": {}},
                _scratch("tmp", "64Mi"),
                *_fetch_volumes(spec, settings),
                {
                    "name": "runtime-socket",
                    "hostPath": {"path": choice.socket_path, "type": "Socket"},
                },
            ],
        },
    )
    job["metadata"]["annotations"].update(
        {crd.ANNOTATION_RUNTIME: choice.runtime, crd.ANNOTATION_SOCKET: choice.socket_path}
    )
    gid = _socket_gid(choice.runtime, settings)
    if gid is not None:
        pod_security = job["spec"]["template"]["spec"]["securityContext"]
        pod_security["supplementalGroups"] = [gid]
    return job
