"""What `helm template` renders: the operator's Deployment, its RBAC, its settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chart_support import only

from azaion_operator.policy import Policy
from azaion_operator.settings import (
    PREFIX,
    RESERVED_ENV,
    RESERVED_VOLUMES,
    CaBundle,
    JobIdentity,
    OperatorSettings,
)

Render = Callable[..., list[dict[str, Any]]]
GROUP = "loader.azaion.com"


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = only(docs, "Deployment")
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return found


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(docs)["env"] if "value" in item}


def rules_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc.get("rules", []))


def verbs_for(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


def test_default_render_has_exactly_the_expected_objects(render: Render) -> None:
    kinds = sorted(doc["kind"] for doc in render())
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Pod",  # the `helm test` hook
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]


def helm_test_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = only(docs, "Pod")
    assert found["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return found


def test_helm_test_pod_checks_readyz_and_the_crds_with_the_operators_image(
    render: Render,
) -> None:
    values = {
        "image": {"repository": "reg.example/azl", "tag": "9.9", "pullPolicy": "Never"},
        "imagePullSecrets": [{"name": "regcred"}],
        "metrics": {"port": 9191},
        "nodeSelector": {"edge": "yes"},
    }
    docs = render(values)
    pod = helm_test_pod(docs)
    (check,) = pod["spec"]["containers"]
    assert check["image"] == container(docs)["image"] == "reg.example/azl:9.9"
    assert check["imagePullPolicy"] == "Never"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert (
        pod["spec"]["serviceAccountName"]
        == deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"]
    )
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["nodeSelector"] == {"edge": "yes"}
    env = {item["name"]: item["value"] for item in check["env"]}
    (service,) = only(docs, "Service")
    port = service["spec"]["ports"][0]["port"]
    assert env["TEST_READYZ_SERVICE"] == service["metadata"]["name"]
    assert env["TEST_READYZ_NAMESPACE"] == "loader-system"
    assert env["TEST_READYZ_PORT"] == str(port) == "9191"
    assert env["TEST_CRDS"] == f"resources.{GROUP},imageunlocks.{GROUP}"
    assert check["command"] == ["python3", "-c"]
    compile(check["args"][0], "helm_test.py", "exec")  # the script is valid Python


def test_helm_test_pod_names_the_crds_the_chart_ships(render: Render) -> None:
    from chart_support import crd_documents

    names = sorted(doc["metadata"]["name"] for _, doc in crd_documents())
    env = {
        item["name"]: item["value"]
        for item in helm_test_pod(render())["spec"]["containers"][0]["env"]
    }
    assert sorted(env["TEST_CRDS"].split(",")) == names


def test_helm_test_pod_keeps_the_restricted_security_contexts(render: Render) -> None:
    docs = render({"securityContext": {"readOnlyRootFilesystem": False}})
    pod = helm_test_pod(docs)
    template = deployment(docs)["spec"]["template"]["spec"]
    assert pod["spec"]["securityContext"] == template["securityContext"]
    assert pod["spec"]["containers"][0]["securityContext"] == container(docs)["securityContext"]
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


def test_helm_test_pod_without_metrics_service_checks_the_crds_only(render: Render) -> None:
    pod = helm_test_pod(render({"metrics": {"service": {"enabled": False}}}))
    env = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
    assert env["TEST_READYZ_SERVICE"] == ""
    assert only(render({"helmTest": {"enabled": False, "timeoutSeconds": 60}}), "Pod") == []


def test_deployment_is_one_replica_recreate_running_the_operator(render: Render) -> None:
    docs = render()
    spec = deployment(docs)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    main = container(docs)
    assert main["command"] == ["azaion-operator"]
    assert main["image"] == "azaion-loader:0.1.0"  # appVersion by default
    assert main["resources"]["requests"] and main["resources"]["limits"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-azaion-loader"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_liveness_probe_hits_the_endpoint_the_operator_serves(render: Render) -> None:
    docs = render({"operator": {"livenessPort": 8081}})
    main = container(docs)
    probe = main["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert probe == {"path": "/healthz", "port": "healthz"}
    assert ports == {"healthz": 8081, "metrics": 9090}
    endpoint = OperatorSettings.from_env(env_of(docs)).liveness_endpoint
    assert endpoint == "http://0.0.0.0:8081/healthz"


def test_metrics_service_readiness_and_service_monitor(render: Render) -> None:
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "p"}}}})
    main = container(docs)
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert OperatorSettings.from_env(env_of(docs)).metrics_port == 9090
    [service] = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "p"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    off = render({"metrics": {"port": 0}})
    assert "readinessProbe" not in container(off)
    assert [d["kind"] for d in off if d["kind"] in ("Service", "ServiceMonitor")] == []
    assert OperatorSettings.from_env(env_of(off)).metrics_port == 0


def test_pod_passes_the_restricted_pod_security_profile(render: Render) -> None:
    pod = deployment(render())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}
    for item in pod["containers"]:
        ctx = item["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in ctx


def test_security_contexts_are_configurable_within_restricted(render: Render) -> None:
    docs = render(
        {
            "podSecurityContext": {
                "runAsUser": 20000,
                "runAsGroup": 20000,
                "fsGroup": 20000,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "operator.json"},
            },
            "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 20000},
        }
    )
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 20000,
        "runAsGroup": 20000,
        "fsGroup": 20000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "operator.json"},
    }
    assert container(docs)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 20000,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize(
    "secrets",
    [
        ["pull-a", "pull-b"],
        [{"name": "pull-a"}, {"name": "pull-b"}],
        ["pull-a", {"name": "pull-b"}],
    ],
)
def test_pull_secrets_as_names_or_as_in_a_pod_spec(render: Render, secrets: list[Any]) -> None:
    docs = render({"imagePullSecrets": secrets, "jobs": {"imagePullSecrets": secrets}})
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "pull-a"}, {"name": "pull-b"}]
    settings = OperatorSettings.from_env(env_of(docs))
    assert settings.image_pull_secrets == ("pull-a", "pull-b")


def test_image_digest_wins_over_tag(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    docs = render(
        {"image": {"repository": "reg.example/azaion-loader", "tag": "1.2.3", "digest": digest}}
    )
    assert container(docs)["image"] == f"reg.example/azaion-loader@{digest}"
    assert env_of(docs)[PREFIX + "JOB_IMAGE"] == f"reg.example/azaion-loader@{digest}"


def test_every_value_reaches_the_operator_settings(render: Render) -> None:
    docs = render(
        {
            "image": {"repository": "azaion-loader", "tag": "dev", "pullPolicy": "Never"},
            "watchNamespaces": ["edge-a", "edge-b"],
            "peering": {"enabled": True, "name": "loaders"},
            "replicaCount": 2,
            "operator": {
                "logLevel": "DEBUG",
                "logFormat": "json",
                "resyncSeconds": 300,
                "workers": 4,
            },
            "defaults": {"apiUrl": "https://api.example.com", "credentialsSecret": "creds"},
            "policy": {
                "allowedApiUrls": ["https://mirror.example/api", "http://lab.example"],
                "allowInsecureHttp": True,
                "hostPathPrefixes": ["/var/lib/azaion", "/data/models/"],
                "imageUnlockNamespaces": ["edge-images", "lab"],
                "allowControlPlane": True,
                "credentialsSecrets": ["team-a", "team-b"],
            },
            "jobs": {
                "image": "mirror.example/azaion-loader:dev",
                "pullPolicy": "Always",
                "imagePullSecrets": ["pull-a", "pull-b"],
                "backoffLimit": 5,
                "activeDeadlineSeconds": 604800,
                "ttlSecondsAfterFinished": 2592000,
                "runAsUser": 4242,
                "namespaceIdentities": {
                    "team-a": {"runAsUser": 20001},
                    "team-b": {"runAsUser": 20002, "runAsGroup": 30002, "fsGroup": 40002},
                },
                "dockerSocketGid": 998,
                "caBundle": {"configMap": "", "secret": "corp-ca", "key": "bundle.pem"},
                "proxy": {
                    "httpProxy": "http://proxy.corp:3128",
                    "httpsProxy": "https://proxy.corp:3129",
                    "noProxy": ".svc, 10.0.0.0/8",
                },
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "2", "memory": "1Gi"},
                },
            },
        }
    )
    env = env_of(docs)
    assert all(name.startswith(PREFIX) for name in env)
    settings = OperatorSettings.from_env(env)
    assert settings == OperatorSettings(
        namespaces=("edge-a", "edge-b"),
        job_image="mirror.example/azaion-loader:dev",
        job_image_pull_policy="Always",
        image_pull_secrets=("pull-a", "pull-b"),
        api_url="https://api.example.com",
        credentials_secret="creds",
        job_backoff_limit=5,
        job_active_deadline_seconds=604800,
        job_ttl_seconds_after_finished=2592000,
        job_uid=4242,
        job_identities=(
            ("team-a", JobIdentity(20001, 20001, 20001)),
            ("team-b", JobIdentity(20002, 30002, 40002)),
        ),
        docker_socket_gid=998,
        job_cpu_request="100m",
        job_cpu_limit="2",
        job_memory_request="128Mi",
        job_memory_limit="1Gi",
        resync_seconds=300.0,
        log_level="DEBUG",
        log_format="json",
        job_ca_bundle=CaBundle("secret", "corp-ca", "bundle.pem"),
        job_http_proxy="http://proxy.corp:3128",
        job_https_proxy="https://proxy.corp:3129",
        job_no_proxy=".svc,10.0.0.0/8",
        peering="loaders",
        liveness_endpoint="http://0.0.0.0:8080/healthz",
        workers=4,
        policy=Policy(
            allowed_api_urls=("https://mirror.example/api", "http://lab.example"),
            allow_insecure_http=True,
            host_path_prefixes=("/var/lib/azaion", "/data/models"),
            image_unlock_namespaces=("edge-images", "lab"),
            allow_control_plane=True,
            credentials_secrets=("team-a", "team-b"),
        ),
    )


def test_default_policy_allows_the_least_and_image_unlock_in_the_release_namespace(
    render: Render,
) -> None:
    settings = OperatorSettings.from_env(env_of(render(namespace="azaion-system")))
    assert settings.policy == Policy(
        allowed_api_urls=(),
        allow_insecure_http=False,
        host_path_prefixes=(),
        image_unlock_namespaces=("azaion-system",),
        allow_control_plane=False,
    )


def test_image_unlock_in_every_namespace_with_a_star(render: Render) -> None:
    docs = render({"policy": {"imageUnlockNamespaces": ["*"]}})
    assert OperatorSettings.from_env(env_of(docs)).policy.image_unlock_namespaces == ("*",)


def test_defaults_parse_as_cluster_wide_standalone_settings(render: Render) -> None:
    settings = OperatorSettings.from_env(env_of(render()))
    assert settings.clusterwide
    assert settings.peering == ""
    assert settings.docker_socket_gid is None
    assert settings.job_image == "azaion-loader:0.1.0"
    assert settings.job_uid == 10001  # the image's user


def test_cluster_wide_rbac_is_a_cluster_role_without_wildcards(render: Render) -> None:
    docs = render()
    assert not only(docs, "Role")
    roles = {doc["metadata"]["name"]: rules_of(doc) for doc in only(docs, "ClusterRole")}
    main = roles["rel-azaion-loader"]
    assert verbs_for(main, GROUP, "resources") == {"get", "list", "watch", "patch"}
    assert verbs_for(main, GROUP, "imageunlocks") == {"get", "list", "watch", "patch"}
    assert verbs_for(main, GROUP, "resources/status") == {"patch"}
    assert verbs_for(main, GROUP, "imageunlocks/status") == {"patch"}
    assert verbs_for(main, "batch", "jobs") == {"get", "list", "watch", "create", "delete"}
    assert verbs_for(main, "", "pods") == {"list"}
    assert verbs_for(main, "", "events") == {"create"}
    # The operator reads a Secret's key names (never values) and a claim's existence.
    assert verbs_for(main, "", "secrets") == {"get"}
    assert verbs_for(main, "", "persistentvolumeclaims") == {"get"}
    assert verbs_for(main, "", "configmaps") == set()
    assert verbs_for(main, "", "nodes") == set()
    assert verbs_for(main, "", "persistentvolumes") == set()
    nodes = roles["rel-azaion-loader-cluster"]
    assert verbs_for(nodes, "", "nodes") == {"get", "list", "watch"}
    # A target claim's bound volume, for its node affinity (cluster-scoped).
    assert verbs_for(nodes, "", "persistentvolumes") == {"get"}
    assert verbs_for(nodes, "apiextensions.k8s.io", "customresourcedefinitions") == {
        "list",
        "watch",
    }
    for rules in roles.values():
        for rule in rules:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], rule
            # Only Secrets are narrowed to names (test_secrets_are_readable_by_name_only).
            assert "resourceNames" not in rule or rule["resources"] == ["secrets"], rule
    bound = {doc["roleRef"]["name"] for doc in only(docs, "ClusterRoleBinding")}
    assert bound == set(roles)
    for binding in only(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-azaion-loader", "namespace": "loader-system"}
        ]


def test_watched_namespaces_get_a_role_each_and_nothing_namespaced_cluster_wide(
    render: Render,
) -> None:
    docs = render({"watchNamespaces": ["edge-a", "edge-b"]})
    roles = only(docs, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["edge-a", "edge-b"]
    assert sorted(b["metadata"]["namespace"] for b in only(docs, "RoleBinding")) == [
        "edge-a",
        "edge-b",
    ]
    for role in roles:
        assert verbs_for(rules_of(role), "batch", "jobs") == {
            "get",
            "list",
            "watch",
            "create",
            "delete",
        }
    (cluster_role,) = only(docs, "ClusterRole")
    granted = {res for rule in rules_of(cluster_role) for res in rule["resources"]}
    assert granted == {"nodes", "persistentvolumes", "customresourcedefinitions", "namespaces"}
    assert verbs_for(rules_of(cluster_role), "", "namespaces") == {"list", "watch"}
    assert verbs_for(rules_of(cluster_role), "", "persistentvolumes") == {"get"}
    assert OperatorSettings.from_env(env_of(docs)).namespaces == ("edge-a", "edge-b")


@pytest.mark.parametrize("namespaces", [[], ["edge-a", "edge-b"]])
def test_secrets_are_readable_by_name_only(render: Render, namespaces: list[str]) -> None:
    """`get` on the default credentials Secret and the listed ones, in every mode; no other."""
    docs = render(
        {
            "watchNamespaces": namespaces,
            "defaults": {"credentialsSecret": "creds"},
            "policy": {"credentialsSecrets": ["team-a", "creds"]},
        }
    )
    roles = only(docs, "Role" if namespaces else "ClusterRole")
    secret_rules = [r for role in roles for r in rules_of(role) if "secrets" in r["resources"]]
    assert secret_rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["creds", "team-a"],
            "verbs": ["get"],
        }
    ] * (len(namespaces) or 1)
    settings = OperatorSettings.from_env(env_of(docs))
    assert (settings.credentials_secret, settings.policy.credentials_secrets) == (
        "creds",
        ("team-a", "creds"),
    )


def test_an_empty_default_secret_name_is_the_operators_default_in_the_rbac(
    render: Render,
) -> None:
    """An empty resourceNames would grant every Secret: the default name fills it."""
    docs = render({"defaults": {"credentialsSecret": ""}})
    (rule,) = [
        r for c in only(docs, "ClusterRole") for r in rules_of(c) if "secrets" in r["resources"]
    ]
    assert rule["resourceNames"] == [OperatorSettings.from_env(env_of(docs)).credentials_secret]


@pytest.mark.parametrize(
    ("namespaces", "kind", "resource"),
    [([], "ClusterRole", "clusterkopfpeerings"), (["edge-a"], "Role", "kopfpeerings")],
)
def test_peering_rules_only_when_peering_is_on(
    render: Render, namespaces: list[str], kind: str, resource: str
) -> None:
    def peering_verbs(values: dict[str, Any]) -> set[str]:
        verbs: set[str] = set()
        for doc in only(render(values), kind):
            verbs |= verbs_for(rules_of(doc), "kopf.dev", resource)
        return verbs

    assert peering_verbs({"watchNamespaces": namespaces}) == set()
    on = {"watchNamespaces": namespaces, "peering": {"enabled": True, "name": "p"}}
    assert peering_verbs(on) == {"get", "list", "watch", "patch"}


def test_rbac_and_service_account_can_be_brought_by_the_user(render: Render) -> None:
    docs = render(
        {
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "mine", "annotations": {}},
        }
    )
    assert [doc["kind"] for doc in docs] == [
        "Service",  # metrics
        "Deployment",
        *["ValidatingAdmissionPolicy"] * 2,  # not RBAC: the API server's own check
        *["ValidatingAdmissionPolicyBinding"] * 2,
        "Pod",  # the `helm test` hook
    ]
    assert deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert helm_test_pod(docs)["spec"]["serviceAccountName"] == "mine"


def test_scheduling_values_reach_the_pod(render: Render) -> None:
    spread = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "azaion-loader"}},
    }
    toleration = {"key": "edge", "operator": "Exists", "effect": "NoSchedule"}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}
                ]
            }
        }
    }
    pod = deployment(
        render(
            {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [toleration],
                "affinity": affinity,
                "priorityClassName": "system-cluster-critical",
                "imagePullSecrets": ["regcred"],
                "podLabels": {"team": "edge"},
                "podAnnotations": {"a": "b"},
                "topologySpreadConstraints": [spread],
            }
        )
    )["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"] == [toleration]
    assert pod["spec"]["affinity"] == affinity
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["team"] == "edge"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["topologySpreadConstraints"] == [spread]


class _ReadRecorder(dict[str, str]):
    """An environment that records which variables the settings reader asks for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def test_chart_sets_exactly_the_variables_the_operator_reads(render: Render) -> None:
    rendered = env_of(render())
    environment = _ReadRecorder(rendered)
    OperatorSettings.from_env(environment)
    assert environment.asked, "the settings reader asked for nothing"
    assert set(rendered) == environment.asked


# --- the ValidatingAdmissionPolicy (its CEL is checked on a real API server in
# test_chart_policy_cluster.py; here only its shape) ------------------------------------


def test_admission_policy_binds_to_the_served_namespaces_and_skips_unchanged_specs(
    render: Render,
) -> None:
    docs = render({"watchNamespaces": ["edge-a"]}, namespace="sys")
    policies = only(docs, "ValidatingAdmissionPolicy")
    bindings = only(docs, "ValidatingAdmissionPolicyBinding")
    assert [p["metadata"]["name"] for p in policies] == [
        f"rel-azaion-loader-sys.resources.{GROUP}",
        f"rel-azaion-loader-sys.imageunlocks.{GROUP}",
    ]
    for policy, binding, plural in zip(
        policies, bindings, ["resources", "imageunlocks"], strict=True
    ):
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["edge-a"]}
        ]
        (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
        # Not the status subresource: the operator must always be able to write PolicyDenied.
        assert rule["resources"] == [plural]
        assert policy["spec"]["failurePolicy"] == "Fail"
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == (
            "request.operation == 'CREATE' || oldObject.spec != object.spec"
        )
    for binding in only(render(), "ValidatingAdmissionPolicyBinding"):
        assert "matchResources" not in binding["spec"]  # all namespaces


def test_admission_policy_checks_only_the_rules_the_values_leave_open(render: Render) -> None:
    def rules(values: dict[str, Any]) -> list[list[str]]:
        return [
            [v["message"].split(":")[0] for v in policy["spec"]["validations"]]
            for policy in only(render(values), "ValidatingAdmissionPolicy")
        ]

    url_and_secret = [
        "defaults.apiUrl",
        "policy.allowedApiUrls",
        "policy.allowInsecureHttp",
        "policy.credentialsSecrets",
    ]
    assert rules({}) == [
        [*url_and_secret, "policy.hostPathPrefixes"],
        [
            "policy.imageUnlockNamespaces",
            *url_and_secret,
            "policy.allowControlPlane",
            "runtimes.allowedSocketPaths",
        ],
    ]
    assert rules(
        {
            "defaults": {"apiUrl": "https://api.example.com"},
            "policy": {
                "allowInsecureHttp": True,
                "imageUnlockNamespaces": ["*"],
                "allowControlPlane": True,
            },
        }
    ) == [
        ["policy.allowedApiUrls", "policy.credentialsSecrets", "policy.hostPathPrefixes"],
        ["policy.allowedApiUrls", "policy.credentialsSecrets", "runtimes.allowedSocketPaths"],
    ]


def test_admission_policy_can_be_turned_off_and_refuses_old_clusters(
    render: Render, render_error: Any
) -> None:
    off = render({"admissionPolicy": {"enabled": False}})
    assert not only(off, "ValidatingAdmissionPolicy")
    assert not only(off, "ValidatingAdmissionPolicyBinding")
    assert render({"admissionPolicy": {"enabled": False}}, "--kube-version", "1.29.4")
    assert "admissionPolicy.enabled needs Kubernetes 1.30 or later" in render_error(
        {}, "--kube-version", "1.29.4"
    )


# --- jobs.extraEnv / extraVolumes / extraVolumeMounts -------------------------------------


def test_job_extras_reach_the_operator(render: Render) -> None:
    extras = {
        "extraEnv": [
            {"name": "LOADER_TIMEOUT", "value": "90"},
            {"name": "SITE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "extraVolumes": [{"name": "site", "configMap": {"name": "site"}}],
        "extraVolumeMounts": [{"name": "site", "mountPath": "/etc/site", "readOnly": True}],
    }
    settings = OperatorSettings.from_env(env_of(render({"jobs": extras})))
    assert settings.job_extra_env == tuple(extras["extraEnv"])
    assert settings.job_extra_volumes == tuple(extras["extraVolumes"])
    assert settings.job_extra_volume_mounts == tuple(extras["extraVolumeMounts"])


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
def test_the_chart_refuses_every_env_name_the_operator_reserves(
    render_error: Any, name: str
) -> None:
    message = render_error({"jobs": {"extraEnv": [{"name": name.lower(), "value": "x"}]}})
    assert f"jobs.extraEnv: {name.lower()} is set by the operator" in message


@pytest.mark.parametrize("name", sorted(RESERVED_VOLUMES))
def test_the_chart_refuses_every_volume_name_the_operator_reserves(
    render_error: Any, name: str
) -> None:
    message = render_error({"jobs": {"extraVolumes": [{"name": name, "emptyDir": {}}]}})
    assert f"jobs.extraVolumes: {name} is a volume of the Jobs" in message
