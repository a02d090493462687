"""Job builders: whole manifests against golden files, and the hardening they promise."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from azaion_operator.kinds.image_unlock import build_unlock_job
from azaion_operator.kinds.resource import VERIFY_SHIM, build_resource_job
from azaion_operator.nodes import NodeInfo
from azaion_operator.runtimes import RuntimeChoice
from azaion_operator.settings import (
    RESERVED_ENV,
    RESERVED_MOUNT_PATHS,
    RESERVED_VOLUMES,
    CaBundle,
    JobIdentity,
    OperatorSettings,
)

DOCKER_ON_NODE = RuntimeChoice("docker", "/run/docker.sock")
CONTAINERD_ON_NODE = RuntimeChoice("containerd", "/run/containerd/containerd.sock")


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["template"]["spec"]
    return [*spec["initContainers"], *spec["containers"]]


def test_resource_job_matches_golden(resource: dict, node: NodeInfo, golden) -> None:
    job = build_resource_job(resource, node, OperatorSettings())
    assert job == golden("resource_job.yaml", job)


def test_resource_job_with_host_path_matches_golden(resource: dict, node: NodeInfo, golden) -> None:
    resource["spec"]["target"] = {"fileName": "t.yaml", "hostPath": {"path": "/var/lib/azaion"}}
    resource["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "edge-1"}
    settings = OperatorSettings(job_image="registry.local/azaion-loader:1.0", api_url="")
    job = build_resource_job(resource, node, settings)
    assert job == golden("resource_job_hostpath.yaml", job)


def test_unlock_job_matches_golden(unlock: dict, node: NodeInfo, golden) -> None:
    job = build_unlock_job(unlock, node, OperatorSettings(), DOCKER_ON_NODE)
    assert job == golden("unlock_job.yaml", job)


def test_containerd_unlock_job_matches_golden(unlock: dict, node: NodeInfo, golden) -> None:
    unlock["spec"]["pinImages"] = True
    settings = OperatorSettings(containerd_socket_gid=997)
    job = build_unlock_job(unlock, node, settings, CONTAINERD_ON_NODE)
    assert job == golden("unlock_job_containerd.yaml", job)


def test_unlock_job_with_socket_group_matches_golden(unlock: dict, node: NodeInfo, golden) -> None:
    job = build_unlock_job(unlock, node, OperatorSettings(docker_socket_gid=998), DOCKER_ON_NODE)
    assert job == golden("unlock_job_socket_gid.yaml", job)


NETWORK = OperatorSettings(
    job_ca_bundle=CaBundle("configMap", "corp-ca", "bundle.pem"),
    job_http_proxy="http://proxy.corp:3128",
    job_https_proxy="http://proxy.corp:3128",
    job_no_proxy="10.0.0.0/8,.svc",
    log_format="json",
)


def test_resource_job_behind_a_proxy_matches_golden(resource: dict, node: NodeInfo, golden) -> None:
    settings = dataclasses.replace(NETWORK, job_ca_bundle=CaBundle("secret", "corp-ca"))
    job = build_resource_job(resource, node, settings)
    assert job == golden("resource_job_proxy.yaml", job)


def test_unlock_job_behind_a_proxy_matches_golden(unlock: dict, node: NodeInfo, golden) -> None:
    job = build_unlock_job(unlock, node, NETWORK, CONTAINERD_ON_NODE)
    assert job == golden("unlock_job_proxy.yaml", job)


def test_only_the_fetching_containers_get_ca_bundle_and_proxy(
    resource: dict, unlock: dict, node: NodeInfo
) -> None:
    network = {"LOADER_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    for job in (
        build_resource_job(resource, node, NETWORK),
        build_unlock_job(unlock, node, NETWORK, CONTAINERD_ON_NODE),
    ):
        fetch, main = _containers(job)
        assert network <= {e["name"] for e in fetch["env"]}
        assert "ca-bundle" in {m["name"] for m in fetch["volumeMounts"]}
        assert not network & {e["name"] for e in main["env"]}
        assert not {"ca-bundle", "credentials"} & {m["name"] for m in main["volumeMounts"]}
        for container in (fetch, main):
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["LOADER_LOG_FORMAT"] == "json"


def test_every_container_is_hardened(resource: dict, unlock: dict, node: NodeInfo) -> None:
    jobs = [
        build_resource_job(resource, node, OperatorSettings()),
        build_unlock_job(unlock, node, OperatorSettings(docker_socket_gid=998), DOCKER_ON_NODE),
    ]
    for job in jobs:
        assert len(job["metadata"]["name"]) <= 63
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(job):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_runtime_container_is_root_without_capabilities_when_no_group(
    unlock: dict, node: NodeInfo
) -> None:
    job = build_unlock_job(unlock, node, OperatorSettings(), CONTAINERD_ON_NODE)
    load = job["spec"]["template"]["spec"]["containers"][0]
    assert load["securityContext"]["runAsUser"] == 0
    assert load["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert load["securityContext"]["allowPrivilegeEscalation"] is False


TENANTS = OperatorSettings(
    job_uid=10001,
    job_identities=(("edge", JobIdentity(20001, 20002, 20003)), ("lab", JobIdentity(3, 3, 3))),
)


def _ids(context: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(context.get(k) for k in ("runAsUser", "runAsGroup", "fsGroup"))


def test_a_tenants_jobs_run_with_its_own_ids(resource: dict, unlock: dict, node: NodeInfo) -> None:
    """The namespace's identity everywhere; unlock-load keeps uid 0 without a socket group."""
    job = build_resource_job(resource, node, TENANTS)  # namespace edge
    pod = job["spec"]["template"]["spec"]
    assert _ids(pod["securityContext"]) == (20001, 20002, 20003)
    assert [_ids(c["securityContext"]) for c in _containers(job)] == [(20001, 20002, None)] * 2

    job = build_unlock_job(unlock, node, TENANTS, CONTAINERD_ON_NODE)
    pod = job["spec"]["template"]["spec"]
    assert _ids(pod["securityContext"]) == (20001, 20002, 20003)
    fetch, load = _containers(job)
    assert _ids(fetch["securityContext"]) == (20001, 20002, None)
    assert _ids(load["securityContext"]) == (0, 20002, None)  # reads /work through its group

    with_gid = dataclasses.replace(TENANTS, containerd_socket_gid=997)
    load = build_unlock_job(unlock, node, with_gid, CONTAINERD_ON_NODE)["spec"]["template"]
    assert _ids(load["spec"]["containers"][0]["securityContext"]) == (20001, 20002, None)


def test_a_namespace_without_its_own_ids_runs_as_the_default(
    resource: dict, node: NodeInfo
) -> None:
    other = {**resource, "metadata": {**resource["metadata"], "namespace": "team-b"}}
    job = build_resource_job(other, node, TENANTS)
    assert _ids(job["spec"]["template"]["spec"]["securityContext"]) == (10001, 10001, 10001)
    assert TENANTS.job_identity("team-b") == JobIdentity(10001, 10001, 10001)
    assert TENANTS.job_identity("lab") == JobIdentity(3, 3, 3)


EXTRAS = OperatorSettings(
    job_extra_env=({"name": "LOADER_TIMEOUT", "value": "90"}, {"name": "TZ", "value": "UTC"}),
    job_extra_volumes=({"name": "site-config", "configMap": {"name": "site"}},),
    job_extra_volume_mounts=({"name": "site-config", "mountPath": "/etc/site", "readOnly": True},),
)


def test_extras_are_added_to_every_container_after_the_loaders_own(
    resource: dict, unlock: dict, node: NodeInfo
) -> None:
    plain = OperatorSettings()
    pairs = [
        (build_resource_job(resource, node, plain), build_resource_job(resource, node, EXTRAS)),
        (
            build_unlock_job(unlock, node, plain, DOCKER_ON_NODE),
            build_unlock_job(unlock, node, EXTRAS, DOCKER_ON_NODE),
        ),
    ]
    for before, after in pairs:
        assert after["spec"]["template"]["spec"]["volumes"] == [
            *before["spec"]["template"]["spec"]["volumes"],
            {"name": "site-config", "configMap": {"name": "site"}},
        ]
        for old, new in zip(_containers(before), _containers(after), strict=True):
            assert new["env"] == [*old["env"], *EXTRAS.job_extra_env]
            assert new["volumeMounts"] == [*old["volumeMounts"], *EXTRAS.job_extra_volume_mounts]


def host_path_resource(resource: dict) -> dict:
    spec = {**resource["spec"], "target": {"fileName": "f", "hostPath": {"path": "/var/lib/a"}}}
    return {**resource, "spec": spec}


def test_every_name_and_path_the_builders_use_is_reserved_from_the_extras(
    resource: dict, unlock: dict, node: NodeInfo
) -> None:
    """So jobs.extraEnv / extraVolumes / extraVolumeMounts can never replace one of ours."""
    full = OperatorSettings(
        api_url="https://api.example",
        job_ca_bundle=CaBundle("configMap", "ca"),
        job_http_proxy="http://proxy:3128",
        job_https_proxy="http://proxy:3128",
        job_no_proxy=".svc",
        docker_socket_gid=998,
    )
    jobs = [
        build_resource_job(resource, node, full),
        build_resource_job(host_path_resource(resource), node, full),
        build_unlock_job(unlock, node, full, DOCKER_ON_NODE),
        build_unlock_job(unlock, node, full, CONTAINERD_ON_NODE),
    ]
    for job in jobs:
        for volume in job["spec"]["template"]["spec"]["volumes"]:
            assert volume["name"] in RESERVED_VOLUMES
        for container in _containers(job):
            for var in container["env"]:
                assert var["name"].upper() in RESERVED_ENV, var
            paths = [m["mountPath"] for m in container["volumeMounts"]]
            paths.append(container["terminationMessagePath"])
            for path in paths:
                assert any(path == r or path.startswith(r + "/") for r in RESERVED_MOUNT_PATHS), (
                    path
                )


def test_credentials_and_socket_are_mounted_apart(
    unlock: dict, resource: dict, node: NodeInfo
) -> None:
    unlock_job = build_unlock_job(unlock, node, OperatorSettings(), CONTAINERD_ON_NODE)
    fetch, load = _containers(unlock_job)
    fetch_mounts = {m["name"] for m in fetch["volumeMounts"]}
    load_mounts = {m["name"] for m in load["volumeMounts"]}
    assert "credentials" in fetch_mounts and "runtime-socket" not in fetch_mounts
    assert "runtime-socket" in load_mounts and "credentials" not in load_mounts
    assert not any(e["name"].startswith("LOADER_HW") for e in load["env"])
    res_fetch, verify = _containers(build_resource_job(resource, node, OperatorSettings()))
    assert "credentials" in {m["name"] for m in res_fetch["volumeMounts"]}
    assert "credentials" not in {m["name"] for m in verify["volumeMounts"]}


def test_fingerprint_inputs_come_from_the_node(resource: dict, node: NodeInfo) -> None:
    fetch = _containers(build_resource_job(resource, node, OperatorSettings()))[0]
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["LOADER_HW_MACHINE_ID"] == node.machine_id
    assert env["LOADER_HW_ARCH"] == "amd64"
    affinity = build_resource_job(resource, node, OperatorSettings())["spec"]["template"]["spec"][
        "affinity"
    ]
    term = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["edge-1"]


def test_no_secret_in_the_manifest(resource: dict, node: NodeInfo) -> None:
    text = repr(build_resource_job(resource, node, OperatorSettings()))
    assert "password" not in text.replace('"password"', "").replace("'password'", "")


def test_verify_shim_reads_the_digest_and_execs_verify(tmp_path, monkeypatch) -> None:
    result = tmp_path / "fetch.json"
    result.write_text('{"ok": true, "command": "fetch", "sha256": "ab" }\n')
    fake = tmp_path / "bin"
    fake.mkdir()
    loader = fake / "loader"
    loader.write_text('#!/bin/sh\necho "$@" > "$LOG"\n')
    loader.chmod(0o755)
    log = tmp_path / "args"
    import subprocess
    import sys

    env = {"PATH": f"{fake}:/usr/bin:/bin", "LOG": str(log)}
    args = [sys.executable, "-c", VERIFY_SHIM, str(result), "/target/f", "/dev/null"]
    subprocess.run(args, env=env, check=True)
    assert log.read_text().split() == [
        "verify",
        "--file",
        "/target/f",
        "--sha256",
        "ab",
        "--json",
        "--result-file",
        "/dev/null",
    ]
    result.write_text("not json")
    bad = subprocess.run(args, env=env, capture_output=True, text=True)
    assert bad.returncode == 3
    assert bad.stderr.startswith("verify: no digest in") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("version", [None, "7"])
def test_version_is_passed_only_when_pinned(resource: dict, node: NodeInfo, version) -> None:
    resource["spec"]["source"].pop("version")
    if version:
        resource["spec"]["source"]["version"] = version
    fetch = _containers(build_resource_job(resource, node, OperatorSettings()))[0]
    assert ("--version" in fetch["command"]) is bool(version)
