"""The chart's policy objects on a real API server, against the operator's own decisions.

- RBAC: the operator's ServiceAccount may ``get`` only the credentials Secrets the
  policy names, only in the namespaces it serves (``kubectl auth can-i``).
- The ValidatingAdmissionPolicy: for sample specs, the API server refuses exactly
  those that ``policy.py`` (and ``runtimes.check_socket_policy``) refuse, with a
  message that starts with the same rule, reading the settings from the same
  rendered chart. ``kubectl apply --dry-run=server`` evaluates the CEL; one real
  create of a refused and of an allowed object shows what a user sees.

Needs a cluster in ``KUBECONFIG`` with the CRDs installed (``scripts/install-chart``
applies them) and kubectl; skips with that reason otherwise. Each test renders the
chart under a unique name and applies only its RBAC or its policy objects, bound to
fresh namespaces, and deletes them afterwards, so nothing else on the cluster sees them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from chart_support import only

from azaion_operator.errors import SpecError
from azaion_operator.policy import resource_denial, unlock_denial
from azaion_operator.runtimes import check_socket_policy
from azaion_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster

Render = Callable[..., list[dict[str, Any]]]
GROUP = "loader.azaion.com"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
VAP_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _kubectl(kubectl: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [kubectl, *args], input=input, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def crds(kubectl: str) -> None:
    for plural in ("resources", "imageunlocks"):
        found = _kubectl(kubectl, "get", "crd", f"{plural}.{GROUP}", "-o", "name")
        if found.returncode != 0:
            pytest.skip(f"CRD {plural}.{GROUP} is not installed (scripts/install-chart)")


@pytest.fixture
def namespaces(kubectl: str) -> Iterator[list[str]]:
    """Two fresh namespaces; deleted with everything the test left in them."""
    names = [f"chart-pol-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        made = _kubectl(kubectl, "create", "namespace", name)
        assert made.returncode == 0, made.stderr
    try:
        yield names
    finally:
        for name in names:
            _kubectl(kubectl, "delete", "namespace", name, "--wait=false")


@pytest.fixture
def applied(kubectl: str) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """Apply documents for real; delete them (cluster-scoped ones included) at the end."""
    docs_applied: list[dict[str, Any]] = []

    def apply(docs: list[dict[str, Any]]) -> None:
        docs_applied.extend(docs)
        done = _kubectl(kubectl, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
        assert done.returncode == 0, done.stderr

    yield apply
    if docs_applied:
        _kubectl(
            kubectl,
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            input=yaml.safe_dump_all(list(reversed(docs_applied))),
        )


def _unique() -> str:
    return f"pol-{uuid.uuid4().hex[:8]}"


def _settings(docs: list[dict[str, Any]]) -> OperatorSettings:
    (deployment,) = only(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return OperatorSettings.from_env({e["name"]: e["value"] for e in container["env"]})


# --- RBAC: which Secrets ---------------------------------------------------------------


@pytest.mark.parametrize("served", ["listed", "all"])
def test_the_operator_may_get_only_the_allowed_secret_names(
    kubectl: str, render: Render, namespaces: list[str], applied: Any, served: str
) -> None:
    mine, other = namespaces
    fullname = _unique()
    values: dict[str, Any] = {
        "fullnameOverride": fullname,
        "policy": {"credentialsSecrets": ["team-a"]},
        "admissionPolicy": {"enabled": False},
    }
    if served == "listed":
        values["watchNamespaces"] = [mine]
    docs = render(values, namespace=mine)
    applied([d for d in docs if d["kind"] in RBAC_KINDS])
    account = f"system:serviceaccount:{mine}:{fullname}"

    def can(verb: str, what: str, namespace: str) -> str:
        done = _kubectl(kubectl, "auth", "can-i", verb, what, "-n", namespace, "--as", account)
        return str(done.stdout.strip())

    assert can("get", "secret/azaion-loader-credentials", mine) == "yes"
    assert can("get", "secret/team-a", mine) == "yes"
    assert can("get", "secret/some-database-password", mine) == "no"
    assert can("list", "secrets", mine) == "no"
    assert can("watch", "secrets", mine) == "no"
    # An unserved namespace: nothing; served cluster-wide: the same names only.
    expected = "no" if served == "listed" else "yes"
    assert can("get", "secret/azaion-loader-credentials", other) == expected
    assert can("get", "secret/some-database-password", other) == "no"
    assert can("get", "secret/some-database-password", "kube-system") == "no"


# --- the ValidatingAdmissionPolicy against policy.py ---------------------------------------

VALUES = {
    "defaults": {"apiUrl": "https://api.example.com"},
    "policy": {
        "allowedApiUrls": ["https://Mirror.example/api/", "http://lab.example"],
        "hostPathPrefixes": ["/var/lib/azaion", "/data//models/"],
        "credentialsSecrets": ["team-a"],
    },
    "runtimes": {"allowedSocketPaths": ["/run/extra/containerd.sock"]},
}


def _resource(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"folder": "models", "name": "m.onnx"},
        "target": {"fileName": "m.onnx", "persistentVolumeClaim": {"claimName": "models"}},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": body,
    }


def _host(path: str, **spec: Any) -> dict[str, Any]:
    target = {"fileName": "f.bin", "hostPath": {"path": path}}
    return _resource("h", target=target, nodeSelector={"kubernetes.io/hostname": "n"}, **spec)


def _unlock(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "ImageUnlock",
        "metadata": {"name": name},
        "spec": {"archive": {"folder": "images", "name": "stack"}, **spec},
    }


CP = "node-role.kubernetes.io/control-plane"
# (namespace index, object): index 0 may use ImageUnlock, index 1 may not.
SAMPLES: list[tuple[int, dict[str, Any]]] = [
    (0, _resource("r")),
    (0, _resource("r", apiUrl="https://api.example.com")),
    (0, _resource("r", apiUrl="https://API.Example.COM//")),
    (0, _resource("r", apiUrl="https://api.example.com?")),
    (0, _resource("r", apiUrl="https://api.example.com/#")),
    (0, _resource("r", apiUrl="https://api.example.com.evil")),
    (0, _resource("r", apiUrl="https://api.example.com@evil.example")),
    (0, _resource("r", apiUrl="https://evil.example/?u=https://api.example.com")),
    (0, _resource("r", apiUrl="https://mirror.example/api")),
    (0, _resource("r", apiUrl="https://MIRROR.example/api/")),
    (0, _resource("r", apiUrl="https://mirror.example/API")),
    (0, _resource("r", apiUrl="https://mirror.example/api?x=1")),
    (0, _resource("r", apiUrl="https://mirror.example/api/#top")),
    (0, _resource("r", apiUrl="http://lab.example")),
    (0, _resource("r", apiUrl="http://api.example.com")),
    (0, _resource("r", credentialsSecretRef={"name": "azaion-loader-credentials"})),
    (0, _resource("r", credentialsSecretRef={"name": "team-a"})),
    (0, _resource("r", credentialsSecretRef={"name": "kube-admin-token"})),
    (0, _resource("r", apiUrl="https://evil.example", credentialsSecretRef={"name": "x"})),
    (0, _host("/var/lib/azaion")),
    (0, _host("/var/lib/azaion/models")),
    (0, _host("//var//lib/azaion/models")),
    (0, _host("/var/lib/azaion-x")),
    (0, _host("/var/lib")),
    (0, _host("/data/models/a")),
    (0, _host("/data/model")),
    (0, _host("/etc/kubernetes")),
    (0, _host("/etc", credentialsSecretRef={"name": "x"})),
    (0, _unlock("u")),
    (1, _unlock("u")),
    (1, _unlock("u", apiUrl="https://evil.example")),
    (0, _unlock("u", apiUrl="https://evil.example")),
    (0, _unlock("u", credentialsSecretRef={"name": "x"})),
    (0, _unlock("u", tolerations=[{"operator": "Exists"}])),
    (0, _unlock("u", tolerations=[{"key": CP, "operator": "Exists", "effect": "NoSchedule"}])),
    (0, _unlock("u", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "edge"}])),
    (0, _unlock("u", socketPath="/var/run/docker.sock")),
    (0, _unlock("u", socketPath="/run/extra/containerd.sock")),
    (0, _unlock("u", socketPath="/run/evil.sock")),
    (0, _unlock("u", dockerSocketPath="/run/evil.sock")),
    (0, _unlock("u", tolerations=[{"operator": "Exists"}], socketPath="/run/evil.sock")),
]


def _operator_rule(namespace: str, body: dict[str, Any], settings: OperatorSettings) -> str | None:
    """The rule the operator refuses ``body`` by, or None: exactly what its reconcile calls."""
    spec, policy = body["spec"], settings.policy
    secret = settings.credentials_secret
    if body["kind"] == "Resource":
        denial = resource_denial(spec, settings.api_url, policy, default_secret=secret)
        return denial.rule if denial else None
    denial = unlock_denial(namespace, spec, settings.api_url, policy, default_secret=secret)
    if denial:
        return denial.rule
    try:
        check_socket_policy(spec, settings)
    except SpecError:
        return "runtimes.allowedSocketPaths"
    return None


def _dry_run(kubectl: str, namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess:
    return _kubectl(
        kubectl, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body)
    )


def _install_policy(
    kubectl: str, render: Render, namespaces: list[str], applied: Any
) -> tuple[dict[str, str], OperatorSettings]:
    """The chart's policy objects bound to ``namespaces``; waits until the server enforces them."""
    values = {
        **VALUES,
        "fullnameOverride": _unique(),
        "watchNamespaces": namespaces,
        "policy": {**VALUES["policy"], "imageUnlockNamespaces": [namespaces[0]]},
    }
    docs = render(values, namespace=namespaces[0])
    policy_docs = [d for d in docs if d["kind"] in VAP_KINDS]
    assert len(policy_docs) == 4
    applied(policy_docs)
    # The admission plugin picks new policies up asynchronously.
    probe = _resource("probe", apiUrl="https://evil.example")
    deadline = time.monotonic() + 60
    while _dry_run(kubectl, namespaces[0], probe).returncode == 0:
        assert time.monotonic() < deadline, "the ValidatingAdmissionPolicy never took effect"
        time.sleep(1)
    names = {
        d["spec"]["matchConstraints"]["resourceRules"][0]["resources"][0]: d["metadata"]["name"]
        for d in policy_docs
        if d["kind"] == "ValidatingAdmissionPolicy"
    }
    probe = _unlock("probe", socketPath="/run/evil.sock")
    while _dry_run(kubectl, namespaces[0], probe).returncode == 0:
        assert time.monotonic() < deadline, "the ImageUnlock policy never took effect"
        time.sleep(1)
    return {"Resource": names["resources"], "ImageUnlock": names["imageunlocks"]}, _settings(docs)


def test_the_admission_policy_refuses_exactly_what_the_operator_refuses(
    kubectl: str, render: Render, crds: None, namespaces: list[str], applied: Any
) -> None:
    names, settings = _install_policy(kubectl, render, namespaces, applied)
    for name in names.values():
        got = _kubectl(kubectl, "get", "validatingadmissionpolicy", name, "-o", "json")
        status = json.loads(got.stdout).get("status") or {}
        # The server type-checked the CEL against the CRD's schema: no warnings.
        assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status

    disagreements = []
    refused = 0
    for index, body in SAMPLES:
        namespace = namespaces[index]
        rule = _operator_rule(namespace, body, settings)
        done = _dry_run(kubectl, namespace, body)
        seen = "accepted" if done.returncode == 0 else done.stderr.strip()
        expected_ok = rule is None
        matches = (
            done.returncode == 0
            if expected_ok
            else f"ValidatingAdmissionPolicy '{names[body['kind']]}'" in seen
            and f"denied request: {rule}:" in seen
        )
        refused += not expected_ok
        if not matches:
            disagreements.append((namespace == namespaces[0], body["spec"], rule, seen))
    assert not disagreements, "\n".join(map(str, disagreements))
    assert 0 < refused < len(SAMPLES)  # both outcomes were tried


def test_kubectl_apply_shows_the_policys_message_and_creates_an_allowed_object(
    kubectl: str, render: Render, crds: None, namespaces: list[str], applied: Any
) -> None:
    names, _ = _install_policy(kubectl, render, namespaces, applied)
    name = names["Resource"]
    namespace = namespaces[0]
    body = _resource("foreign", apiUrl="https://collector.invalid")
    refused = _kubectl(kubectl, "apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    assert refused.returncode != 0
    assert (
        f"ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: "
        "policy.allowedApiUrls: spec.apiUrl is not an allowed API URL"
    ) in refused.stderr, refused.stderr
    assert (
        _kubectl(kubectl, "get", f"resources.{GROUP}", "foreign", "-n", namespace).returncode != 0
    )

    body = _resource("allowed", apiUrl="https://mirror.example/api")
    created = _kubectl(kubectl, "apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    assert created.returncode == 0, created.stderr
    # A metadata-only change (as kopf's finalizers) is not checked; a spec change is.
    patched = _kubectl(
        kubectl, "label", f"resources.{GROUP}", "allowed", "-n", namespace, "checked=yes"
    )
    assert patched.returncode == 0, patched.stderr
    changed = _kubectl(
        kubectl,
        "patch",
        f"resources.{GROUP}",
        "allowed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"apiUrl": "https://collector.invalid"}}),
    )
    assert changed.returncode != 0 and "policy.allowedApiUrls" in changed.stderr
