# ruff: noqa: F811 - pytest fixtures are imported by name and used as arguments
"""The operator against a real API server: CRD validation, Jobs, restarts, fan-out, status."""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest
from operator_e2e_support import (  # fixtures too: pytest finds them in this module
    GROUP,
    VERSION,
    Operator,
    api,  # noqa: F401
    crds,  # noqa: F401
    kubernetes,
    namespace,  # noqa: F401
    operator,  # noqa: F401
    wait_for,
)

pytestmark = pytest.mark.cluster

OWNER_UID = "loader.azaion.com/owner-uid"


def _custom(api: Any) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


def _resource(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": {
            "source": {"folder": "models", "name": "detector.onnx"},
            "target": {
                "fileName": "detector.onnx",
                "persistentVolumeClaim": {"claimName": "models"},
            },
        },
    }
    body["spec"].update(spec)
    return body


def _unlock(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageUnlock",
        "metadata": {"name": name},
        "spec": {"archive": {"folder": "images", "name": "stack"}},
    }
    body["spec"].update(spec)
    return body


def _deep(body: dict, path: str, value: Any) -> dict:
    node = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return body


BAD_SPECS = [
    ("both targets", _deep(_resource("b1"), "spec.target.hostPath", {"path": "/x"}), "spec.target"),
    ("no target", _deep(_resource("b2"), "spec.target", {"fileName": "f"}), "spec.target"),
    (
        "bad folder",
        _deep(_resource("b3"), "spec.source.folder", "Bad_Folder"),
        "spec.source.folder",
    ),
    ("no name", _deep(_resource("b4"), "spec.source", {"folder": "models"}), "spec.source.name"),
    (
        "slash in file",
        _deep(_resource("b5"), "spec.target.fileName", "a/b"),
        "spec.target.fileName",
    ),
    (
        "backoff 99",
        _deep(_resource("b6"), "spec.job", {"backoffLimit": 99}),
        "spec.job.backoffLimit",
    ),
    (
        "deadline 1",
        _deep(_resource("b7"), "spec.job", {"activeDeadlineSeconds": 1}),
        "spec.job.activeDeadlineSeconds",
    ),
    ("ftp url", _deep(_resource("b8"), "spec.apiUrl", "ftp://x"), "spec.apiUrl"),
    (
        "relative hostPath",
        _deep(
            _deep(_resource("b9"), "spec.target", {"fileName": "f", "hostPath": {"path": "rel"}}),
            "spec.nodeSelector",
            {"a": "b"},
        ),
        "spec.target.hostPath.path",
    ),
    (
        "hostPath without selector",
        _deep(_resource("b10"), "spec.target", {"fileName": "f", "hostPath": {"path": "/data"}}),
        "spec.nodeSelector",
    ),
    (
        "dotdot subPath",
        _deep(_resource("b11"), "spec.target.persistentVolumeClaim.subPath", "a/../b"),
        "spec.target.persistentVolumeClaim.subPath",
    ),
    ("parallelism 0", _unlock("b12", parallelism=0), "spec.parallelism"),
    ("relative socket", _unlock("b13", dockerSocketPath="docker.sock"), "spec.dockerSocketPath"),
    ("bad image", _unlock("b14", images=["UPPER/Case"]), "spec.images[0]"),
    (
        "bad toleration",
        _unlock("b15", tolerations=[{"operator": "Maybe"}]),
        "spec.tolerations[0].operator",
    ),
    ("long name", _resource("x" * 64), "metadata.name"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_rejected_naming_the_field(
    api: Any, namespace: str, case: str, body: dict, field: str
) -> None:
    plural = "resources" if body["kind"] == "Resource" else "imageunlocks"
    with pytest.raises(kubernetes.client.ApiException) as info:
        _custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    assert info.value.status == 422, info.value.body
    assert field in info.value.body, f"{case}: {info.value.body}"


def test_target_is_immutable(api: Any, namespace: str) -> None:
    custom = _custom(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "resources", _resource("imm"))
    patch = {"spec": {"target": {"fileName": "other.onnx"}}}
    with pytest.raises(kubernetes.client.ApiException) as info:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "resources", "imm", patch)
    assert info.value.status == 422 and "spec.target is immutable" in info.value.body


def _secret(api: Any, namespace: str) -> None:
    kubernetes.client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "azaion-loader-credentials"},
            "stringData": {"email": "e2e@example.com", "password": "not-a-real-one"},
        },
    )


def _pvc(api: Any, namespace: str) -> None:
    kubernetes.client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )


def _jobs(api: Any, namespace: str, uid: str) -> list[Any]:
    batch = kubernetes.client.BatchV1Api(api)
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{OWNER_UID}={uid}").items
    return [j for j in jobs if j.metadata.deletion_timestamp is None]


def _get(api: Any, namespace: str, plural: str, name: str) -> dict:
    return _custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)


def _complete(api: Any, namespace: str, name: str) -> None:
    """Mark a Job complete through its status subresource (its pods may never run)."""
    batch = kubernetes.client.BatchV1Api(api)
    wait_for(
        f"Job {name} started",
        lambda: batch.read_namespaced_job_status(name, namespace).status.start_time,
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"status": "True", "lastTransitionTime": now, "lastProbeTime": now}
    body = {
        "status": {
            "active": 0,
            "ready": 0,
            "succeeded": 1,
            "completionTime": now,
            "conditions": [{"type": "SuccessCriteriaMet", **cond}, {"type": "Complete", **cond}],
        }
    }
    kubernetes.client.BatchV1Api(api).patch_namespaced_job_status(name, namespace, body)


def test_resource_gets_one_job_survives_a_restart_and_is_replaced(
    api: Any, namespace: str, operator: Operator
) -> None:
    _secret(api, namespace)
    _pvc(api, namespace)
    created = _custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resources", _resource("model")
    )
    uid = created["metadata"]["uid"]
    jobs = wait_for("the Job", lambda: _jobs(api, namespace, uid))
    assert len(jobs) == 1
    job = jobs[0]
    assert len(job.metadata.name) <= 63
    assert job.metadata.owner_references[0].uid == uid
    pod = job.spec.template.spec
    assert pod.init_containers[0].name == "fetch" and pod.containers[0].name == "verify"
    env = {e.name: e.value for e in pod.init_containers[0].env}
    assert env["LOADER_HW_MACHINE_ID"] and env["LOADER_HW_ARCH"]
    assert pod.affinity.node_affinity is not None

    # Killed between creating the Job and writing status: the restart adopts it.
    operator.kill()
    _custom(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "resources", "model", {"status": None}
    )
    operator.start()
    wait_for("status again", lambda: _get(api, namespace, "resources", "model").get("status"))
    time.sleep(2)
    assert [j.metadata.name for j in _jobs(api, namespace, uid)] == [job.metadata.name]

    # A new generation replaces the Job.
    _custom(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "resources",
        "model",
        {"spec": {"source": {"folder": "models", "name": "detector.onnx", "version": "4"}}},
    )

    def replaced() -> list[Any]:
        now = _jobs(api, namespace, uid)
        return now if len(now) == 1 and now[0].metadata.name != job.metadata.name else []

    new = wait_for("the replacement Job", replaced)[0]
    assert new.metadata.labels["loader.azaion.com/generation"] == "2"

    # The Job completes: status and conditions say Ready.
    _complete(api, namespace, new.metadata.name)

    def ready() -> dict:
        status = _get(api, namespace, "resources", "model").get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return (
            status if conds.get("Ready") == "True" and status.get("observedGeneration") == 2 else {}
        )

    status = wait_for("Ready", ready)
    assert status["phase"] == "Succeeded"

    # Deleting the Resource removes its Jobs (garbage collector).
    _custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "resources", "model")
    wait_for("Jobs gone", lambda: not _jobs(api, namespace, uid), timeout=60)


def test_missing_secret_fails_with_a_clear_reason(
    api: Any, namespace: str, operator: Operator
) -> None:
    _pvc(api, namespace)
    _custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resources", _resource("nosecret")
    )

    def failed() -> dict:
        status = _get(api, namespace, "resources", "nosecret").get("status") or {}
        return status if status.get("phase") == "Failed" else {}

    status = wait_for("Failed", failed)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Failed"]["status"] == "True" and conds["Failed"]["reason"] == "MissingCredentials"
    assert "azaion-loader-credentials" in status["message"]


def _make_fake_nodes(core: Any, label: str, runtimes: list[str]) -> list[str]:
    """Ready fake Nodes (no kubelet) labelled ``e2e-group=label``, one per runtime version."""
    names = [f"fake-{label}-{i}" for i in range(len(runtimes))]
    for i, (name, runtime) in enumerate(zip(names, runtimes, strict=True)):
        core.create_node(
            {
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/os": "linux", "e2e-group": label},
                }
            }
        )
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "fake",
                        "lastHeartbeatTime": datetime.datetime.now(datetime.UTC).isoformat(),
                        "lastTransitionTime": datetime.datetime.now(datetime.UTC).isoformat(),
                    }
                ],
                "nodeInfo": {
                    "machineID": f"{i:032x}",
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "bootID": "",
                    "containerRuntimeVersion": runtime,
                    "kernelVersion": "",
                    "kubeProxyVersion": "",
                    "kubeletVersion": "v1.32.4",
                    "osImage": "",
                    "systemUUID": "",
                },
            }
        }
        core.patch_node_status(name, status)
    return names


@pytest.fixture
def fake_nodes(api: Any) -> Any:
    core = kubernetes.client.CoreV1Api(api)
    label = f"e2e-{uuid.uuid4().hex[:6]}"
    names = _make_fake_nodes(core, label, ["containerd://1.7.22"] * 3)
    yield label, names
    for name in names:
        core.delete_node(name)


def test_unsupported_runtime_fails_that_node_without_a_job(
    api: Any, namespace: str, operator: Operator
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    label = f"e2e-{uuid.uuid4().hex[:6]}"
    names = _make_fake_nodes(core, label, ["cri-o://1.30.0", "containerd://1.7.22"])
    try:
        _secret(api, namespace)
        created = _custom(api).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "imageunlocks",
            _unlock("mixed", nodeSelector={"e2e-group": label}),
        )
        uid = created["metadata"]["uid"]
        [job] = wait_for("one Job", lambda: (j := _jobs(api, namespace, uid)) and len(j) == 1 and j)
        assert job.metadata.annotations["loader.azaion.com/node-name"] == names[1]
        assert job.metadata.annotations["loader.azaion.com/runtime"] == "containerd"

        def reported() -> dict:
            st = _get(api, namespace, "imageunlocks", "mixed").get("status") or {}
            return st if len(st.get("nodes") or ()) == 2 else {}

        status = wait_for("both nodes in the status", reported)
        crio, ctd = sorted(status["nodes"], key=lambda n: n["name"])
        assert (crio["phase"], crio["reason"]) == ("Failed", "UnsupportedRuntime"), crio
        assert "cri-o://1.30.0" in crio["message"] and "jobName" not in crio
        assert (ctd["runtime"], ctd["socketPath"]) == (
            "containerd",
            "/run/containerd/containerd.sock",
        )
        time.sleep(1.5)
        assert len(_jobs(api, namespace, uid)) == 1  # never a Job on the cri-o node
        _complete(api, namespace, job.metadata.name)

        def settled() -> dict:
            st = _get(api, namespace, "imageunlocks", "mixed").get("status") or {}
            return st if st.get("phase") == "Failed" else {}

        final = wait_for("Failed (one node unsupported)", settled)
        assert final["succeeded"] == 1 and final["failedNodes"] == [names[0]]
    finally:
        for name in names:
            core.delete_node(name)


def test_unlock_fans_out_per_node_with_parallelism(
    api: Any, namespace: str, operator: Operator, fake_nodes: Any
) -> None:
    label, names = fake_nodes
    _secret(api, namespace)
    created = _custom(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "imageunlocks",
        _unlock("stack", nodeSelector={"e2e-group": label}, parallelism=2),
    )
    uid = created["metadata"]["uid"]
    first = wait_for("two Jobs", lambda: (j := _jobs(api, namespace, uid)) and len(j) == 2 and j)
    time.sleep(1.5)
    assert len(_jobs(api, namespace, uid)) == 2  # parallelism holds
    status = _get(api, namespace, "imageunlocks", "stack")["status"]
    assert status["desired"] == 3 and status["active"] == 2
    for job in first:
        _complete(api, namespace, job.metadata.name)
    wait_for("the third Job", lambda: len(_jobs(api, namespace, uid)) == 3)
    nodes_of = {
        j.metadata.annotations["loader.azaion.com/node-name"] for j in _jobs(api, namespace, uid)
    }
    assert nodes_of == set(names)
    third = [
        j
        for j in _jobs(api, namespace, uid)
        if j.metadata.name not in {f.metadata.name for f in first}
    ]
    _complete(api, namespace, third[0].metadata.name)

    def done() -> dict:
        st = _get(api, namespace, "imageunlocks", "stack").get("status") or {}
        return st if st.get("phase") == "Succeeded" else {}

    status = wait_for("Succeeded", done)
    assert status["succeeded"] == 3 and status["progress"] == "3/3" and status["failedNodes"] == []


def _bound_claim(
    api: Any, namespace: str, claim: str, affinity: dict, *, selected_node: str = ""
) -> str:
    """A claim pre-bound (``spec.volumeName``) to a new hostPath PV with ``affinity``; its name."""
    core = kubernetes.client.CoreV1Api(api)
    pv_name = f"{namespace}-{claim}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/var/lib/azaion-loader-e2e/{pv_name}"},
                "nodeAffinity": {"required": affinity},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    annotations = {"volume.kubernetes.io/selected-node": selected_node} if selected_node else {}
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": claim, "annotations": annotations},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    return pv_name


def _create_on_claim(api: Any, namespace: str, name: str, claim: str, group: str) -> Any:
    """A Resource writing into ``claim``, restricted to the fake nodes of ``group``."""
    body = _resource(name, nodeSelector={"e2e-group": group})
    body["spec"]["target"]["persistentVolumeClaim"]["claimName"] = claim
    return _custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resources", body
    )


@pytest.fixture
def volumes(api: Any) -> Any:
    """PersistentVolumes a test creates (cluster-scoped: the namespace does not take them)."""
    names: list[str] = []
    yield names
    core = kubernetes.client.CoreV1Api(api)
    for name in names:
        try:
            core.delete_persistent_volume(name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise


def test_resource_job_goes_to_a_node_its_bound_volume_can_be_mounted_on(
    api: Any, namespace: str, operator: Operator, fake_nodes: Any, volumes: list[str]
) -> None:
    label, names = fake_nodes
    _secret(api, namespace)
    # Terms are ORed (the second matches no node); within the first, the label
    # expression and the name field are ANDed. The claim's selected-node hint
    # names a node the volume cannot be mounted on: it must lose.
    affinity = {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [{"key": "e2e-group", "operator": "In", "values": [label]}],
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": [names[1]]}],
            },
            {"matchExpressions": [{"key": "e2e-no-such-label", "operator": "Exists"}]},
        ]
    }
    volumes.append(_bound_claim(api, namespace, "local", affinity, selected_node=names[0]))
    created = _create_on_claim(api, namespace, "pinned", "local", label)
    (job,) = wait_for("the Job", lambda: _jobs(api, namespace, created["metadata"]["uid"]))
    assert job.metadata.annotations["loader.azaion.com/node-name"] == names[1]
    status = wait_for(
        "status.node", lambda: _get(api, namespace, "resources", "pinned").get("status")
    )
    assert status["node"] == names[1]


def test_resource_fails_when_no_eligible_node_can_mount_its_bound_volume(
    api: Any, namespace: str, operator: Operator, fake_nodes: Any, volumes: list[str]
) -> None:
    label, _ = fake_nodes
    _secret(api, namespace)
    affinity = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gone-node"]}]}
        ]
    }
    pv_name = _bound_claim(api, namespace, "elsewhere", affinity)
    volumes.append(pv_name)
    created = _create_on_claim(api, namespace, "stranded", "elsewhere", label)

    def failed() -> dict:
        status = _get(api, namespace, "resources", "stranded").get("status") or {}
        return status if status.get("phase") == "Failed" else {}

    status = wait_for("Failed", failed)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Failed"]["reason"] == "NoMatchingNode"
    assert f"PersistentVolume {pv_name}" in status["message"]
    assert "\n" not in status["message"]
    assert not _jobs(api, namespace, created["metadata"]["uid"])


# --- the admin policy (docs/security.md) ----------------------------------------------


@pytest.fixture
def start_operator(namespace: str, tmp_path: Any) -> Any:
    """Start ``azaion-operator`` with extra environment (the policy under test)."""
    started: list[Operator] = []

    def start(**env: str) -> Operator:
        op = Operator(namespace, tmp_path / "operator.log", env)
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def _policy_denied(api: Any, namespace: str, plural: str, name: str) -> str:
    """Wait for ``Failed`` with reason PolicyDenied; the condition's message."""

    def failed() -> dict:
        status = _get(api, namespace, plural, name).get("status") or {}
        return status if status.get("phase") == "Failed" else {}

    status = wait_for(f"{name} Failed", failed)
    condition = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (condition["status"], condition["reason"]) == ("True", "PolicyDenied"), condition
    assert status["message"] == condition["message"] and "\n" not in status["message"]
    return str(condition["message"])


def test_a_foreign_api_url_is_policy_denied_and_gets_no_job(
    api: Any, namespace: str, operator: Operator
) -> None:
    _secret(api, namespace)
    _pvc(api, namespace)
    custom = _custom(api)
    foreign = custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "resources",
        _resource("foreign", apiUrl="https://collector.attacker.invalid/v1"),
    )
    # The operator's default, written with a trailing slash: allowed.
    allowed = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "resources", _resource("own", apiUrl="https://api.e2e.invalid/")
    )
    message = _policy_denied(api, namespace, "resources", "foreign")
    assert message.startswith(
        "policy.allowedApiUrls: spec.apiUrl https://collector.attacker.invalid/v1 is not an "
        "allowed API URL"
    ), message
    wait_for("the allowed one's Job", lambda: _jobs(api, namespace, allowed["metadata"]["uid"]))
    time.sleep(6)  # more than a resync period (5 s)
    assert _jobs(api, namespace, foreign["metadata"]["uid"]) == []


def test_a_host_path_outside_the_prefixes_is_policy_denied_and_gets_no_job(
    api: Any, namespace: str, start_operator: Any, fake_nodes: Any
) -> None:
    label, _ = fake_nodes
    _secret(api, namespace)
    start_operator(AZAION_OPERATOR_POLICY_HOST_PATH_PREFIXES="/var/lib/azaion-e2e/allowed")

    def on_host(name: str, path: str) -> dict:
        target = {"fileName": "m.onnx", "hostPath": {"path": path}}
        body = _resource(name, target=target, nodeSelector={"e2e-group": label})
        return dict(
            _custom(api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, "resources", body
            )
        )

    # A prefix of the name is not a prefix of the path: refused.
    outside = on_host("outside", "/var/lib/azaion-e2e/allowed-not")
    inside = on_host("inside", "/var/lib/azaion-e2e/allowed/models")
    message = _policy_denied(api, namespace, "resources", "outside")
    assert message.startswith(
        "policy.hostPathPrefixes: spec.target.hostPath.path /var/lib/azaion-e2e/allowed-not is "
        "not under an allowed prefix (allowed: /var/lib/azaion-e2e/allowed)"
    ), message
    wait_for("the inside one's Job", lambda: _jobs(api, namespace, inside["metadata"]["uid"]))
    time.sleep(6)
    assert _jobs(api, namespace, outside["metadata"]["uid"]) == []


def test_image_unlock_outside_the_allowed_namespaces_is_policy_denied_and_gets_no_job(
    api: Any, namespace: str, start_operator: Any, fake_nodes: Any
) -> None:
    label, _ = fake_nodes
    _secret(api, namespace)
    start_operator(AZAION_OPERATOR_POLICY_IMAGE_UNLOCK_NAMESPACES="azaion-loader-system")
    created = _custom(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "imageunlocks",
        _unlock("stack", nodeSelector={"e2e-group": label}),
    )
    message = _policy_denied(api, namespace, "imageunlocks", "stack")
    assert message.startswith(
        f"policy.imageUnlockNamespaces: namespace {namespace} may not use ImageUnlock, which is "
        "root on the nodes (allowed: azaion-loader-system)"
    ), message
    time.sleep(6)
    assert _jobs(api, namespace, created["metadata"]["uid"]) == []
