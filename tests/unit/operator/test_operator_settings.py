"""Settings from the environment: defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import re

import pytest

from azaion_operator.policy import Policy
from azaion_operator.settings import CaBundle, JobIdentity, OperatorSettings, SettingsError


def test_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings == OperatorSettings()
    assert settings.clusterwide and settings.peering == ""
    assert settings.docker_socket_gid is None


def test_everything_parsed() -> None:
    env = {
        "AZAION_OPERATOR_NAMESPACES": " edge, edge ,lab ",
        "AZAION_OPERATOR_JOB_IMAGE": "registry.local/azaion-loader:1.0",
        "AZAION_OPERATOR_JOB_IMAGE_PULL_POLICY": "Always",
        "AZAION_OPERATOR_API_URL": "https://api.example",
        "AZAION_OPERATOR_CREDENTIALS_SECRET": "creds",
        "AZAION_OPERATOR_JOB_BACKOFF_LIMIT": "0",
        "AZAION_OPERATOR_JOB_TTL_SECONDS_AFTER_FINISHED": "60",
        "AZAION_OPERATOR_DOCKER_SOCKET_GID": "998",
        "AZAION_OPERATOR_LOG_LEVEL": "debug",
        "AZAION_OPERATOR_LOG_FORMAT": "json",
        "AZAION_OPERATOR_PEERING": "azaion",
        "AZAION_OPERATOR_RESYNC_SECONDS": "30",
        "AZAION_OPERATOR_JOB_MEMORY_LIMIT": "1Gi",
    }
    s = OperatorSettings.from_env(env)
    assert s.namespaces == ("edge", "lab") and not s.clusterwide
    assert s.job_image == "registry.local/azaion-loader:1.0"
    assert s.job_image_pull_policy == "Always"
    assert s.api_url == "https://api.example"
    assert s.credentials_secret == "creds"
    assert s.job_backoff_limit == 0 and s.job_ttl_seconds_after_finished == 60
    assert s.docker_socket_gid == 998
    assert s.log_level == "DEBUG" and s.log_format == "json"
    assert s.peering == "azaion" and s.resync_seconds == 30.0
    assert s.job_memory_limit == "1Gi"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JOB_IMAGE_PULL_POLICY", "Sometimes"),
        ("JOB_BACKOFF_LIMIT", "eleven"),
        ("JOB_BACKOFF_LIMIT", "11"),
        ("NAMESPACES", "Edge_1"),
        ("API_URL", "ftp://x"),
        ("LOG_FORMAT", "xml"),
        ("JOB_UID", "0"),
        ("JOB_CPU_LIMIT", "lots"),
        ("CREDENTIALS_SECRET", "Bad Name"),
        ("JOB_CA_BUNDLE_CONFIGMAP", "Corp_CA"),
        ("JOB_CA_BUNDLE_KEY", "ca crt"),
        ("JOB_HTTPS_PROXY", "proxy:3128"),
        ("JOB_NO_PROXY", "a b"),
    ],
)
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({f"AZAION_OPERATOR_{key}": value})
    message = str(info.value)
    assert message.startswith(f"AZAION_OPERATOR_{key}") and "\n" not in message


def test_empty_liveness_endpoint_disables_it() -> None:
    assert (
        OperatorSettings.from_env({"AZAION_OPERATOR_LIVENESS_ENDPOINT": ""}).liveness_endpoint == ""
    )
    assert OperatorSettings.from_env({}).liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_policy_defaults_allow_the_least() -> None:
    assert OperatorSettings.from_env({}).policy == Policy(
        allowed_api_urls=(),
        allow_insecure_http=False,
        host_path_prefixes=(),
        image_unlock_namespaces=(),
        allow_control_plane=False,
    )


def test_policy_parsed_and_normalised() -> None:
    env = {
        "AZAION_OPERATOR_POLICY_ALLOWED_API_URLS": "https://a.example, http://lab.example/,",
        "AZAION_OPERATOR_POLICY_ALLOW_INSECURE_HTTP": "True",
        "AZAION_OPERATOR_POLICY_HOST_PATH_PREFIXES": "/var/lib/azaion/,//data//models,/data/models",
        "AZAION_OPERATOR_POLICY_IMAGE_UNLOCK_NAMESPACES": "edge-images,*",
        "AZAION_OPERATOR_POLICY_ALLOW_CONTROL_PLANE": "false",
        "AZAION_OPERATOR_POLICY_CREDENTIALS_SECRETS": "team-a, team-b,team-a",
    }
    assert OperatorSettings.from_env(env).policy == Policy(
        allowed_api_urls=("https://a.example", "http://lab.example/"),
        allow_insecure_http=True,
        host_path_prefixes=("/var/lib/azaion", "/data/models"),
        image_unlock_namespaces=("edge-images", "*"),
        allow_control_plane=False,
        credentials_secrets=("team-a", "team-b"),
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("POLICY_ALLOW_INSECURE_HTTP", "yes", "='yes': expected true or false"),
        ("POLICY_ALLOWED_API_URLS", "https://a, u:canary@b", ": item 2 is not an http(s):// URL"),
        ("POLICY_HOST_PATH_PREFIXES", "/a,b", ": 'b' is not an absolute path without"),
        ("POLICY_HOST_PATH_PREFIXES", "/a/../etc", ": '/a/../etc' is not an absolute path"),
        ("POLICY_IMAGE_UNLOCK_NAMESPACES", "edge,**", ": '**' is not a DNS label"),
    ],
)
def test_bad_policy_values_name_the_variable(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({f"AZAION_OPERATOR_{key}": value})
    assert str(info.value).startswith(f"AZAION_OPERATOR_{key}{message}")
    assert "canary" not in str(info.value)


def test_ca_bundle_and_proxy_for_the_jobs() -> None:
    env = {
        "AZAION_OPERATOR_JOB_CA_BUNDLE_SECRET": "corp-ca",
        "AZAION_OPERATOR_JOB_CA_BUNDLE_KEY": "bundle.pem",
        "AZAION_OPERATOR_JOB_HTTP_PROXY": "http://proxy.corp:3128",
        "AZAION_OPERATOR_JOB_HTTPS_PROXY": "http://proxy.corp:3128",
        "AZAION_OPERATOR_JOB_NO_PROXY": " 10.0.0.0/8, .svc.cluster.local ,localhost",
    }
    s = OperatorSettings.from_env(env)
    assert s.job_ca_bundle == CaBundle("secret", "corp-ca", "bundle.pem")
    assert s.job_http_proxy == s.job_https_proxy == "http://proxy.corp:3128"
    assert s.job_no_proxy == "10.0.0.0/8,.svc.cluster.local,localhost"
    config_map = {"AZAION_OPERATOR_JOB_CA_BUNDLE_CONFIGMAP": "kube-root-ca.crt"}
    assert OperatorSettings.from_env(config_map).job_ca_bundle == CaBundle(
        "configMap", "kube-root-ca.crt", "ca.crt"
    )


def test_ca_bundle_from_one_source_only() -> None:
    with pytest.raises(SettingsError, match="set one, not both"):
        OperatorSettings.from_env(
            {
                "AZAION_OPERATOR_JOB_CA_BUNDLE_CONFIGMAP": "a",
                "AZAION_OPERATOR_JOB_CA_BUNDLE_SECRET": "b",
            }
        )


def test_proxy_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({"AZAION_OPERATOR_JOB_HTTPS_PROXY": "http://u:s3cret@proxy:3128"})
    assert "s3cret" not in str(info.value) and "credentials" in str(info.value)


def test_namespace_identities_parsed_with_group_defaults() -> None:
    env = {
        "AZAION_OPERATOR_JOB_UID": "10001",
        "AZAION_OPERATOR_JOB_NAMESPACE_IDENTITIES": (
            '{"team-b": {"runAsUser": 20002}, '
            '"team-a": {"runAsUser": 20001, "runAsGroup": 30001, "fsGroup": 40001}}'
        ),
    }
    settings = OperatorSettings.from_env(env)
    assert settings.job_identities == (
        ("team-a", JobIdentity(20001, 30001, 40001)),
        ("team-b", JobIdentity(20002, 20002, 20002)),
    )
    assert settings.job_identity("team-c") == JobIdentity(10001, 10001, 10001)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[1]", "expected a JSON object"),
        ("{", "expected a JSON object"),
        ('{"Team_A": {"runAsUser": 1}}', "'Team_A': expected a namespace's ids"),
        ('{"a": {"runAsGroup": 5}}', "a: expected runAsUser"),
        ('{"a": {"runAsUser": 5, "privileged": true}}', "a: expected runAsUser"),
        ('{"a": {"runAsUser": 0}}', "a: uid must be 1..2147483647"),
        ('{"a": {"runAsUser": 5, "fsGroup": 0}}', "a: fs_group must be 1.."),
        ('{"a": {"runAsUser": "5"}}', "a: uid must be 1.."),
        ('{"a": {"runAsUser": true}}', "a: uid must be 1.."),
    ],
)
def test_bad_namespace_identities_are_refused(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        OperatorSettings.from_env({"AZAION_OPERATOR_JOB_NAMESPACE_IDENTITIES": raw})


def test_job_extras_parsed() -> None:
    env = {
        "AZAION_OPERATOR_JOB_EXTRA_ENV": '[{"name": "LOADER_TIMEOUT", "value": "90"}]',
        "AZAION_OPERATOR_JOB_EXTRA_VOLUMES": '[{"name": "site", "configMap": {"name": "s"}}]',
        "AZAION_OPERATOR_JOB_EXTRA_VOLUME_MOUNTS": '[{"name": "site", "mountPath": "/etc/site"}]',
    }
    settings = OperatorSettings.from_env(env)
    assert settings.job_extra_env == ({"name": "LOADER_TIMEOUT", "value": "90"},)
    assert settings.job_extra_volumes == ({"name": "site", "configMap": {"name": "s"}},)
    assert settings.job_extra_volume_mounts == ({"name": "site", "mountPath": "/etc/site"},)


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("JOB_EXTRA_ENV", "{}", "expected a JSON list"),
        ("JOB_EXTRA_ENV", '[{"value": "x"}]', "an item without a name"),
        (
            "JOB_EXTRA_ENV",
            '[{"name": "LOADER_API_URL", "value": "https://x"}]',
            "LOADER_API_URL is set",
        ),
        (
            "JOB_EXTRA_ENV",
            '[{"name": "https_proxy", "value": "http://mitm"}]',
            "https_proxy is set",
        ),
        ("JOB_EXTRA_ENV", '[{"name": "LOADER_PASSWORD", "value": "x"}]', "LOADER_PASSWORD is set"),
        ("JOB_EXTRA_ENV", '[{"name": "REQUESTS_CA_BUNDLE", "value": "/x"}]', "REQUESTS_CA_BUNDLE"),
        ("JOB_EXTRA_VOLUMES", '[{"name": "credentials", "emptyDir": {}}]', "is a volume of the"),
        ("JOB_EXTRA_VOLUMES", '[{"name": "Bad_Name", "emptyDir": {}}]', "not a volume name"),
        ("JOB_EXTRA_VOLUME_MOUNTS", '[{"name": "credentials", "mountPath": "/x"}]', "not one of"),
    ],
)
def test_job_extras_never_replace_the_loaders_own(key: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        OperatorSettings.from_env({f"AZAION_OPERATOR_{key}": raw})


@pytest.mark.parametrize(
    "path",
    [
        "/var/run/azaion-loader/credentials",
        "/var/run/azaion-loader",
        "/var/run",
        "/var",
        "/",
        "/target/sub",
        "/tmp",
        "/work/",
        "//var//run/azaion-loader/",
        "/run/azaion-loader/runtime.sock",
        "/dev/termination-log",
        "relative",
        "/etc/../var/run/azaion-loader",
    ],
)
def test_an_extra_mount_may_not_cover_or_sit_in_the_loaders_mounts(path: str) -> None:
    env = {
        "AZAION_OPERATOR_JOB_EXTRA_VOLUMES": '[{"name": "site", "emptyDir": {}}]',
        "AZAION_OPERATOR_JOB_EXTRA_VOLUME_MOUNTS": (
            '[{"name": "site", "mountPath": "%s"}]' % path  # noqa: UP031
        ),
    }
    with pytest.raises(SettingsError, match="JOB_EXTRA_VOLUME_MOUNTS: site"):
        OperatorSettings.from_env(env)
