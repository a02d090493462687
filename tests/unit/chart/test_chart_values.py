"""The chart refuses bad values: schema (unknown keys, bad types) and `fail` guards."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from chart_support import CHART, run_helm

RenderError = Callable[[dict[str, Any]], str]


def test_helm_lint_strict_passes(helm: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicas": 1}, "replicas"),  # unknown top-level key
        ({"image": {"registry": "x"}}, "registry"),  # unknown nested key
        ({"jobs": {"resources": {"requests": {"gpu": "1"}}}}, "gpu"),
        ({"replicaCount": "one"}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"watchNamespaces": "edge-a"}, "watchNamespaces"),
        ({"watchNamespaces": ["Edge_A"]}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"image": {"digest": "md5:abc"}}, "digest"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"operator": {"logLevel": "TRACE"}}, "logLevel"),
        ({"operator": {"workers": 500}}, "workers"),
        ({"defaults": {"apiUrl": "ftp://api"}}, "apiUrl"),
        ({"defaults": {"credentialsSecret": "Not A Name"}}, "credentialsSecret"),
        ({"policy": {"allowAll": True}}, "allowAll"),
        ({"policy": {"allowedApiUrls": "https://a.example"}}, "allowedApiUrls"),
        ({"policy": {"allowedApiUrls": ["ftp://a.example"]}}, "allowedApiUrls"),
        ({"policy": {"allowedApiUrls": ["https://a.example,https://b"]}}, "allowedApiUrls"),
        ({"policy": {"allowInsecureHttp": "yes"}}, "allowInsecureHttp"),
        ({"policy": {"allowedApiUrls": ["https://user@a.example"]}}, "allowedApiUrls"),
        ({"defaults": {"apiUrl": "https://user:pw@a.example"}}, "apiUrl"),
        ({"policy": {"credentialsSecrets": ["Team_A"]}}, "credentialsSecrets"),
        ({"admissionPolicy": {"enabled": "yes"}}, "enabled"),
        ({"jobs": {"namespaceIdentities": {"Team_A": {"runAsUser": 5}}}}, "Team_A"),
        ({"jobs": {"namespaceIdentities": {"a": {"runAsUser": 0}}}}, "runAsUser"),
        ({"jobs": {"namespaceIdentities": {"a": {"runAsGroup": 5}}}}, "runAsUser"),
        ({"jobs": {"namespaceIdentities": {"a": {"runAsUser": 5, "fsGroup": 0}}}}, "fsGroup"),
        (
            {"jobs": {"namespaceIdentities": {"a": {"runAsUser": 5, "privileged": True}}}},
            "privileged",
        ),
        ({"policy": {"hostPathPrefixes": ["var/lib"]}}, "hostPathPrefixes"),
        ({"policy": {"hostPathPrefixes": ["/var/lib/../../etc"]}}, "hostPathPrefixes"),
        ({"policy": {"hostPathPrefixes": ["/var/./lib"]}}, "hostPathPrefixes"),
        ({"policy": {"imageUnlockNamespaces": ["Edge_A"]}}, "imageUnlockNamespaces"),
        ({"policy": {"allowControlPlane": 1}}, "allowControlPlane"),
        ({"jobs": {"backoffLimit": 11}}, "backoffLimit"),
        ({"jobs": {"activeDeadlineSeconds": 5}}, "activeDeadlineSeconds"),
        ({"jobs": {"dockerSocketGid": "docker"}}, "dockerSocketGid"),
        ({"jobs": {"resources": {"limits": {"memory": "lots"}}}}, "memory"),
        ({"rbac": {"create": "yes"}}, "create"),
        ({"imagePullSecrets": [{"secret": "regcred"}]}, "imagePullSecrets"),
        ({"jobs": {"imagePullSecrets": [{"name": "Reg_Cred"}]}}, "imagePullSecrets"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "type"),
        ({"podSecurityContext": {"seccompProfile": None}}, "seccompProfile"),
        ({"podSecurityContext": {"sysctls": []}}, "sysctls"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "drop"),
        ({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}}, "add"),
        ({"securityContext": {"runAsNonRoot": None}}, "runAsNonRoot"),
        ({"topologySpreadConstraints": [{"maxSkew": 1}]}, "topologySpreadConstraints"),
        ({"jobs": {"caBundle": {"configMap": "Corp_CA"}}}, "configMap"),
        ({"jobs": {"caBundle": {"key": ""}}}, "key"),
        ({"jobs": {"proxy": {"httpsProxy": "proxy:3128"}}}, "httpsProxy"),
        ({"jobs": {"proxy": {"httpsProxy": "http://user:pw@proxy:3128"}}}, "httpsProxy"),
        ({"jobs": {"proxy": {"socks": "x"}}}, "socks"),
        ({"nodeSelector": {"zone": 1}}, "nodeSelector"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_types(
    render_error: RenderError, values: dict[str, Any], expected: str
) -> None:
    message = render_error(values)
    assert "values don't meet the specifications of the schema" in message
    assert expected in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 2}, "replicaCount > 1 needs peering.enabled=true"),
        ({"watchNamespaces": ["edge-a", "edge-a"]}, "watchNamespaces lists a namespace twice"),
        (
            {"serviceAccount": {"create": False, "name": "", "annotations": {}}},
            "serviceAccount.name",
        ),
        (
            {"jobs": {"caBundle": {"configMap": "a", "secret": "b"}}},
            "jobs.caBundle: set configMap or secret, not both",
        ),
        (
            {"metrics": {"port": 8080}},
            "metrics.port and operator.livenessPort are the same port",
        ),
    ],
)
def test_guards_refuse_impossible_combinations(
    render_error: RenderError, values: dict[str, Any], expected: str
) -> None:
    assert expected in render_error(values)


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        paths: list[str] = []
        for key, value in node.items():
            paths += _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return [prefix]


def test_every_value_is_documented_and_camel_case() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = text.splitlines()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [key])
        stack.append((indent, key))
        above = index - 1
        while above >= 0 and lines[above].strip().startswith("#") and "# --" not in lines[above]:
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            documented.add(path)
    leaves = _leaf_paths(values)
    # A leaf is documented by its own comment or by one on a free-form map above it.
    undocumented = [
        path
        for path in leaves
        if not any(
            ".".join(path.split(".")[:n]) in documented for n in range(1, path.count(".") + 2)
        )
    ]
    assert not undocumented, f"values without a '# --' comment: {undocumented}"
    for path in leaves:
        for key in path.split("."):
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", key), f"{path}: not camelCase"


def test_schema_lists_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], part: dict[str, Any], prefix: str) -> None:
        assert part.get("additionalProperties") is False or prefix in {"resources"}, prefix
        for key, value in node.items():
            where = f"{prefix}.{key}" if prefix else key
            assert key in part["properties"], f"{where} is not in values.schema.json"
            sub = part["properties"][key]
            if isinstance(value, dict) and sub.get("properties"):
                walk(value, sub, where)

    walk(values, schema, "")
