"""The admin policy: every rule, its default, and the exact denial it gives."""

from __future__ import annotations

from typing import Any

import pytest

from azaion_operator.policy import (
    Denial,
    Policy,
    check_api_url,
    check_control_plane,
    check_credentials_secret,
    check_host_path,
    check_unlock_namespace,
    normalise_path,
    normalise_url,
    resource_denial,
    unlock_denial,
)

DEFAULT = "https://api.example.com"
SECRET = "azaion-loader-credentials"


def _url_denied(url: str) -> Denial:
    return Denial(
        "policy.allowedApiUrls",
        f"policy.allowedApiUrls: spec.apiUrl {url} is not an allowed API URL (the operator's "
        "defaults.apiUrl or policy.allowedApiUrls): remove spec.apiUrl, or ask the cluster "
        "admin to list it",
    )


def _http_denied(what: str, url: str) -> Denial:
    return Denial(
        "policy.allowInsecureHttp",
        f"policy.allowInsecureHttp: {what} {url} is not https, so the credentials would cross "
        "the network unencrypted: use an https URL, or the cluster admin sets "
        "policy.allowInsecureHttp=true (test clusters only)",
    )


def _path_denied(path: str, allowed: str) -> Denial:
    return Denial(
        "policy.hostPathPrefixes",
        f"policy.hostPathPrefixes: spec.target.hostPath.path {path} is not under an allowed "
        f"prefix (allowed: {allowed}): use a volume claim target, or ask the cluster admin to "
        "add a prefix",
    )


def _namespace_denied(namespace: str, allowed: str) -> Denial:
    return Denial(
        "policy.imageUnlockNamespaces",
        f"policy.imageUnlockNamespaces: namespace {namespace} may not use ImageUnlock, which is "
        f"root on the nodes (allowed: {allowed}): create it in an allowed namespace, or ask the "
        "cluster admin to list this one",
    )


def _control_plane_denied(index: int, key: str) -> Denial:
    return Denial(
        "policy.allowControlPlane",
        f"policy.allowControlPlane: spec.tolerations[{index}] (key {key}) tolerates the "
        "control-plane taints, and ImageUnlock is root on the nodes it reaches: name the taints "
        "your edge nodes have, or the cluster admin sets policy.allowControlPlane=true",
    )


# --- API URL ---------------------------------------------------------------------


def test_default_policy_allows_the_operator_default_and_nothing_else() -> None:
    policy = Policy()
    assert check_api_url(None, DEFAULT, policy) is None
    assert check_api_url("", DEFAULT, policy) is None
    assert check_api_url(DEFAULT, DEFAULT, policy) is None
    assert check_api_url("https://attacker.example", DEFAULT, policy) == _url_denied(
        "https://attacker.example"
    )


@pytest.mark.parametrize(
    "url", ["https://api.example.com/", "HTTPS://API.Example.com", "https://api.example.com//"]
)
def test_api_url_matches_after_normalising_case_and_trailing_slash(url: str) -> None:
    assert check_api_url(url, DEFAULT, Policy()) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com.attacker.example", "https://api.example.com.attacker.example"),
        ("https://api.example.com/other", "https://api.example.com/other"),
        ("https://api.example.com:8443", "https://api.example.com:8443"),
        # user info "api.example.com", host attacker.example (user info is never shown)
        ("https://api.example.com@attacker.example", "https://attacker.example"),
    ],
)
def test_api_url_is_compared_whole_not_by_prefix(url: str, shown: str) -> None:
    assert check_api_url(url, DEFAULT, Policy()) == _url_denied(shown)


def test_listed_api_urls_are_allowed_besides_the_default() -> None:
    policy = Policy(allowed_api_urls=("https://mirror.example/api/",))
    assert check_api_url("https://mirror.example/api", DEFAULT, policy) is None
    assert check_api_url(DEFAULT, DEFAULT, policy) is None
    assert check_api_url("https://other.example", DEFAULT, policy) == _url_denied(
        "https://other.example"
    )


def test_denial_never_shows_user_info_or_query_of_a_url() -> None:
    url = "https://user:s3cr3t-canary@attacker.example/api?token=canary-token#frag"
    denial = check_api_url(url, DEFAULT, Policy())
    assert denial == _url_denied("https://attacker.example/api")
    assert "canary" not in denial.message


def test_http_is_refused_for_the_default_too_unless_allowed() -> None:
    default = "http://10.244.0.1:8080"
    assert check_api_url(None, default, Policy()) == _http_denied(
        "the operator's defaults.apiUrl", default
    )
    assert check_api_url(default, default, Policy()) == _http_denied("spec.apiUrl", default)
    assert check_api_url(None, default, Policy(allow_insecure_http=True)) is None
    assert check_api_url(default + "/", default, Policy(allow_insecure_http=True)) is None


def test_a_listed_http_url_still_needs_allow_insecure_http() -> None:
    policy = Policy(allowed_api_urls=("http://lab.example",))
    assert check_api_url("http://lab.example", DEFAULT, policy) == _http_denied(
        "spec.apiUrl", "http://lab.example"
    )


def test_no_url_at_all_is_refused_naming_the_default_to_set() -> None:
    assert check_api_url(None, "", Policy(allow_insecure_http=True)) == Denial(
        "defaults.apiUrl",
        "defaults.apiUrl: no API URL: spec.apiUrl is unset and the operator has no default; "
        "the cluster admin sets defaults.apiUrl (AZAION_OPERATOR_API_URL)",
    )
    # With no default, only listed URLs may be named.
    policy = Policy(allowed_api_urls=("https://mirror.example",))
    assert check_api_url("https://mirror.example", "", policy) is None
    assert check_api_url("https://x.example", "", policy) == _url_denied("https://x.example")


def test_normalise_url() -> None:
    assert normalise_url(" HTTPS://Api.Example.COM:8443/V1/ ") == "https://api.example.com:8443/V1"


# --- hostPath --------------------------------------------------------------------


def test_default_policy_allows_no_host_path() -> None:
    assert check_host_path("/var/lib/azaion", Policy()) == _path_denied("/var/lib/azaion", "none")


@pytest.mark.parametrize("path", ["/var/lib/azaion", "/var/lib/azaion/models", "/var//lib/azaion/"])
def test_host_path_under_a_prefix_is_allowed(path: str) -> None:
    assert check_host_path(path, Policy(host_path_prefixes=("/var/lib/azaion",))) is None


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/azaion-other",  # a prefix of the name, not of the components
        "/var/lib",
        "/etc",
        "/var/lib/azaion/../../../etc",
        "/var/lib/azaion/./x",
        "var/lib/azaion/x",
    ],
)
def test_host_path_outside_the_prefixes_is_refused(path: str) -> None:
    policy = Policy(host_path_prefixes=("/var/lib/azaion", "/data/models/"))
    assert check_host_path(path, policy) == _path_denied(path, "/var/lib/azaion, /data/models")


def test_root_prefix_allows_every_absolute_path() -> None:
    assert check_host_path("/etc/kubernetes", Policy(host_path_prefixes=("/",))) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b/", "/a/b"),
        ("//a//b", "/a/b"),
        ("/", "/"),
        ("/a/../b", None),
        ("/a/./b", None),
        ("a/b", None),
        ("", None),
    ],
)
def test_normalise_path(path: str, expected: str | None) -> None:
    assert normalise_path(path) == expected


# --- ImageUnlock namespaces ----------------------------------------------------------


def test_default_policy_serves_image_unlock_nowhere() -> None:
    assert check_unlock_namespace("edge", Policy()) == _namespace_denied("edge", "none")


def test_image_unlock_only_in_listed_namespaces_or_everywhere_with_a_star() -> None:
    policy = Policy(image_unlock_namespaces=("azaion-loader", "edge-images"))
    assert check_unlock_namespace("edge-images", policy) is None
    assert check_unlock_namespace("edge", policy) == _namespace_denied(
        "edge", "azaion-loader, edge-images"
    )
    assert check_unlock_namespace("anything", Policy(image_unlock_namespaces=("*",))) is None


# --- control-plane tolerations ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tolerations", "index", "key"),
    [
        ([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}], 0, None),
        (
            [
                {"key": "edge", "operator": "Exists"},
                {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"},
            ],
            1,
            None,
        ),
        ([{"operator": "Exists"}], 0, "(any key)"),
    ],
)
def test_control_plane_tolerations_are_refused_by_default(
    tolerations: list[dict[str, Any]], index: int, key: str | None
) -> None:
    expected = _control_plane_denied(index, key or tolerations[index]["key"])
    assert check_control_plane(tolerations, Policy()) == expected
    assert check_control_plane(tolerations, Policy(allow_control_plane=True)) is None


def test_other_tolerations_pass() -> None:
    tolerations = [
        {"key": "azaion.com/edge-only", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "edge"},
    ]
    assert check_control_plane(tolerations, Policy()) is None
    assert check_control_plane([], Policy()) is None


# --- whole specs -------------------------------------------------------------------


def _resource_spec(**extra: Any) -> dict[str, Any]:
    return {
        "source": {"folder": "models", "name": "m.onnx"},
        "target": {"fileName": "m.onnx", "persistentVolumeClaim": {"claimName": "models"}},
        **extra,
    }


def test_resource_with_a_claim_and_the_default_url_passes() -> None:
    assert resource_denial(_resource_spec(), DEFAULT, Policy(), default_secret=SECRET) is None


def test_resource_reports_the_url_before_the_host_path() -> None:
    spec = _resource_spec(
        apiUrl="https://evil.example",
        target={"fileName": "f", "hostPath": {"path": "/etc"}},
    )
    assert resource_denial(spec, DEFAULT, Policy(), default_secret=SECRET) == _url_denied(
        "https://evil.example"
    )
    spec["apiUrl"] = DEFAULT
    assert resource_denial(spec, DEFAULT, Policy(), default_secret=SECRET) == _path_denied(
        "/etc", "none"
    )
    allowed = Policy(host_path_prefixes=("/etc",))
    assert resource_denial(spec, DEFAULT, allowed, default_secret=SECRET) is None


def test_unlock_checks_namespace_then_url_then_tolerations() -> None:
    spec: dict[str, Any] = {
        "archive": {"folder": "images", "name": "stack"},
        "apiUrl": "https://evil.example",
        "tolerations": [{"operator": "Exists"}],
    }
    policy = Policy(image_unlock_namespaces=("edge",))
    assert unlock_denial("lab", spec, DEFAULT, policy, default_secret=SECRET) == _namespace_denied(
        "lab", "edge"
    )
    assert unlock_denial("edge", spec, DEFAULT, policy, default_secret=SECRET) == _url_denied(
        "https://evil.example"
    )
    del spec["apiUrl"]
    assert unlock_denial(
        "edge", spec, DEFAULT, policy, default_secret=SECRET
    ) == _control_plane_denied(0, "(any key)")
    spec["tolerations"] = []
    assert unlock_denial("edge", spec, DEFAULT, policy, default_secret=SECRET) is None


# --- credentials Secrets ---------------------------------------------------------------


def _secret_denied(name: str, allowed: str) -> Denial:
    return Denial(
        "policy.credentialsSecrets",
        f"policy.credentialsSecrets: spec.credentialsSecretRef.name {name} is not an allowed "
        f"credentials Secret (allowed: {allowed}): remove spec.credentialsSecretRef, or ask the "
        "cluster admin to list it",
    )


@pytest.mark.parametrize("ref", [None, {}, {"name": ""}, {"name": SECRET}])
def test_the_default_credentials_secret_is_always_allowed(ref: Any) -> None:
    spec = {} if ref is None else {"credentialsSecretRef": ref}
    assert check_credentials_secret(spec, SECRET, Policy()) is None


def test_another_secret_needs_the_admins_listing() -> None:
    spec = {"credentialsSecretRef": {"name": "db-password"}}
    assert check_credentials_secret(spec, SECRET, Policy()) == _secret_denied("db-password", SECRET)
    listed = Policy(credentials_secrets=("team-a-creds",))
    assert check_credentials_secret(spec, SECRET, listed) == _secret_denied(
        "db-password", f"{SECRET}, team-a-creds"
    )
    spec["credentialsSecretRef"]["name"] = "team-a-creds"
    assert check_credentials_secret(spec, SECRET, listed) is None


def test_both_kinds_check_the_secret_after_the_url() -> None:
    resource = _resource_spec(credentialsSecretRef={"name": "other"})
    assert resource_denial(resource, DEFAULT, Policy(), default_secret=SECRET) == (
        _secret_denied("other", SECRET)
    )
    unlock = {"archive": {"folder": "i", "name": "s"}, "credentialsSecretRef": {"name": "other"}}
    policy = Policy(image_unlock_namespaces=("edge",))
    assert unlock_denial("edge", unlock, DEFAULT, policy, default_secret=SECRET) == (
        _secret_denied("other", SECRET)
    )
