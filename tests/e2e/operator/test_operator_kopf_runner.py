# ruff: noqa: F811 - pytest fixtures are imported by name and used as arguments
"""The real handlers under kopf, through its public test runner (``kopf.testing.KopfRunner``).

kopf runs in a thread of this process against the cluster in ``KUBECONFIG``,
watching one namespace, with the handlers registered by importing
``azaion_operator.handlers``: the change handlers are registered and run,
their errors reach kopf as the right kind, and Events posted from a follow-up
thread (after the hop to the follow-up pool) reach the API server.  The unit
tests (``tests/unit/operator/test_operator_handlers.py``) cover the decisions.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from kopf.testing import KopfRunner
from operator_e2e_support import (  # fixtures too: pytest finds them in this module
    GROUP,
    VERSION,
    api,  # noqa: F401
    crds,  # noqa: F401
    kubernetes,
    namespace,  # noqa: F401
    wait_for,
)

pytestmark = pytest.mark.cluster


def _resource(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": {
            "source": {"folder": "models", "name": "detector.onnx"},
            "target": {"fileName": "detector.onnx", "persistentVolumeClaim": {"claimName": "m"}},
            **spec,
        },
    }


def _failed_reason(status: dict[str, Any]) -> str:
    return {c["type"]: c for c in status["conditions"]}["Failed"]["reason"]


def _status(api: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    body = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return dict(body.get("status") or {})


def _event_reasons(api: Any, namespace: str, name: str) -> set[str]:
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return {e.reason for e in events.items}


def test_kopf_runs_the_handlers_and_their_events_reach_the_api(
    api: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "AZAION_OPERATOR_NAMESPACES": namespace,
        "AZAION_OPERATOR_API_URL": "https://api.e2e.invalid",  # the Jobs never reach it
        "AZAION_OPERATOR_POLICY_IMAGE_UNLOCK_NAMESPACES": namespace,
        "AZAION_OPERATOR_METRICS_PORT": "0",
        "AZAION_OPERATOR_RESYNC_SECONDS": "300",
    }.items():
        monkeypatch.setenv(key, value)
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "m"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    args = ["run", "--standalone", "--namespace", namespace, "-m", "azaion_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        # A change handler's SpecError: Failed status and a Warning Event.
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "resources", _resource("no-secret")
        )
        status = wait_for(
            "MissingCredentials",
            lambda: (
                (s := _status(api, namespace, "resources", "no-secret")).get("phase") == "Failed"
                and s
            ),
        )
        assert _failed_reason(status) == "MissingCredentials"
        wait_for(
            "a MissingCredentials Event",
            lambda: "MissingCredentials" in _event_reasons(api, namespace, "no-secret"),
        )

        # An ImageUnlock no node matches: its change handler runs, and fails permanently.
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "imageunlocks",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ImageUnlock",
                "metadata": {"name": "no-node"},
                "spec": {
                    "archive": {"folder": "images", "name": "stack"},
                    "nodeSelector": {"e2e-group": "no-such-node"},
                },
            },
        )
        wait_for(
            "NoMatchingNode",
            lambda: _status(api, namespace, "imageunlocks", "no-node").get("phase") == "Failed",
        )

        # A Job that fails by its deadline: the Job's events bring a follow-up
        # reconcile, which posts its Warning from the follow-up pool's thread.
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "azaion-loader-credentials"},
                "stringData": {"email": "e2e@example.invalid", "password": "not-used"},
            },
        )
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "resources",
            _resource("deadline", job={"activeDeadlineSeconds": 10, "backoffLimit": 0}),
        )
        wait_for(
            "the Resource's Job",
            lambda: kubernetes.client.BatchV1Api(api).list_namespaced_job(namespace).items,
        )
        wait_for(
            "DeadlineExceeded",
            lambda: _status(api, namespace, "resources", "deadline").get("phase") == "Failed",
            timeout=90,
        )
        reasons = wait_for(
            "the follow-up's Warning Event",
            lambda: (
                (r := _event_reasons(api, namespace, "deadline"))
                >= {"JobCreated", "DeadlineExceeded"}
                and r
            ),
        )
        assert "DeadlineExceeded" in reasons
        assert _failed_reason(_status(api, namespace, "resources", "deadline")) == (
            "DeadlineExceeded"
        )

    assert runner.exception is None and runner.exit_code == 0
    # The change handlers are registered with kopf and ran (kopf names them in its log).
    for handler, outcome in (
        ("resource_changed", "failed permanently"),
        ("resource_changed", "succeeded"),
        ("unlock_changed", "failed permanently"),
    ):
        assert re.search(f"Handler '{handler}[^']*' {outcome}", runner.output), (handler, outcome)
