"""The chart's lifecycle on a real cluster: `helm test`, and the CRD upgrade path.

- `helm test` runs the chart's test Pod (templates/test-ready.yaml): it passes
  against the session's release, and the same Pod fails when the operator's
  metrics Service does not answer.
- The CRD upgrade path of docs/chart.md ("Upgrading, and the CRDs"): the
  previous CRDs, objects made under them (with conditions of the old, looser
  shape), then the documented `kubectl apply --server-side --force-conflicts`
  of the chart's CRDs, `kubectl wait --for=condition=Established` and
  `helm upgrade --reuse-values`; the objects survive unchanged and show the new
  printer columns.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import pytest
from chart_e2e_support import (
    GROUP,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    VERSION,
    kubectl,
    ready_operator_pod,
    run,
    tool,
    wait_for,
)

pytestmark = pytest.mark.e2e

if not os.environ.get("KUBECONFIG"):
    pytest.skip(
        "KUBECONFIG is unset: the e2e tests need a cluster "
        '(scripts/kind-node-image create; eval "$(scripts/kind-node-image env)")',
        allow_module_level=True,
    )

CHART = ROOT / "charts" / "azaion-loader"
CRD_FILES = ("resources.loader.azaion.com.yaml", "imageunlocks.loader.azaion.com.yaml")
# The CRDs before the Ready/Reason/Message printer columns and the required
# metav1.Condition fields (commit 6f55fc6), standing in for the previous release
# until the first tagged one.
PREVIOUS_CRDS_COMMIT = "65adb07"


def _helm() -> str:
    return tool("AZAION_HELM", "helm")


def _recreate_watched_namespaces() -> None:
    """Earlier tests delete their pool namespaces, which the release still watches:
    `helm upgrade` would fail creating their Roles. Re-create them empty (the
    pool's teardown deletes them at the end)."""
    values = json.loads(
        run([_helm(), "get", "values", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json"]).stdout
    )
    watched = values.get("watchNamespaces") or []
    for name in watched.split(",") if isinstance(watched, str) else watched:
        phase = kubectl(
            "get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False
        ).stdout
        if phase == "Terminating":  # deleted with --wait=false: wait it out first
            kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=180s", check=False)
            phase = ""
        if phase != "Active":
            kubectl("create", "namespace", name)


def test_helm_test_passes(chart: str) -> None:
    done = run(
        [_helm(), "test", RELEASE, "-n", chart, "--logs", "--timeout", "180s"],
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, f"helm test failed:\n{done.stdout}\n{done.stderr}"
    assert (
        f"ok: resources.{GROUP},imageunlocks.{GROUP} Established, operator ready (http://"
        in done.stdout
    ), done.stdout
    pod = json.loads(
        kubectl("get", "pod", "-n", chart, f"{RELEASE}-azaion-loader-test", "-o", "json").stdout
    )
    spec = pod["spec"]
    assert spec["serviceAccountName"] == f"{RELEASE}-azaion-loader"
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "Never"  # the session's image.pullPolicy
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_helm_test_pod_fails_when_the_operator_does_not_answer(chart: str, tmp_path: Any) -> None:
    """The test Pod of a release whose metrics Service does not exist fails, naming /readyz."""
    name = f"azl-e2e-ghost-{uuid.uuid4().hex[:6]}"
    values = tmp_path / "values.yaml"  # the session's image, pull policy and node selector
    values.write_text(run([_helm(), "get", "values", RELEASE, "-n", chart, "-o", "yaml"]).stdout)
    rendered = run(
        [
            _helm(),
            "template",
            name,
            str(CHART),
            "-n",
            chart,
            "--show-only",
            "templates/test-ready.yaml",
            "--values",
            str(values),
            "--set",
            "helmTest.timeoutSeconds=4",
            "--set",
            "serviceAccount.create=false",
            "--set",
            f"serviceAccount.name={RELEASE}-azaion-loader",
        ]
    ).stdout
    kubectl("apply", "-n", chart, "-f", "-", input=rendered)
    pod = f"{name}-azaion-loader-test"

    def finished() -> str | None:
        got = kubectl("get", "pod", "-n", chart, pod, "-o", "jsonpath={.status.phase}")
        phase = got.stdout.strip()
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = wait_for("the ghost release's test Pod to finish", finished, timeout=120)
        logs = kubectl("logs", "-n", chart, pod).stdout
        assert phase == "Failed", logs
        assert f"http://{name}-azaion-loader-metrics.{chart}.svc:9090/readyz" in logs, logs
        assert "failed:" in logs, logs
    finally:
        kubectl(
            "delete", "pod", "-n", chart, pod, "--ignore-not-found", "--wait=false", check=False
        )


def _previous_crds(tmp_path: Any) -> Any:
    out = tmp_path / "previous-crds"
    out.mkdir()
    for name in CRD_FILES:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{PREVIOUS_CRDS_COMMIT}:crds/{name}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"git show {PREVIOUS_CRDS_COMMIT}:crds/{name} failed (a clone with history is "
                f"needed; actions/checkout with fetch-depth: 0): {done.stderr.strip()}"
            )
        (out / name).write_text(done.stdout)
    return out


def _printer_columns(crd: str) -> list[str]:
    found = json.loads(kubectl("get", "crd", crd, "-o", "json").stdout)
    return [c["name"] for c in found["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_crd_upgrade_path_keeps_objects(chart: str, core: Any, custom: Any, tmp_path: Any) -> None:
    previous = _previous_crds(tmp_path)
    current = CHART / "crds"
    namespace = f"azl-crdup-{uuid.uuid4().hex[:6]}"  # not watched: no operator touches it
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        # The previous release's CRDs, as its install left them.
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(previous))
        kubectl("wait", "--for=condition=Established", "-f", str(previous), "--timeout=60s")
        assert "Ready" not in _printer_columns(f"resources.{GROUP}")

        old_condition = {"type": "Ready", "status": "False"}  # type and status only
        made = {}
        for plural, spec in (
            (
                "resources",
                {
                    "source": {"folder": "models", "name": "detector.onnx"},
                    "target": {
                        "fileName": "detector.onnx",
                        "persistentVolumeClaim": {"claimName": "models"},
                    },
                },
            ),
            (
                "imageunlocks",
                {
                    "archive": {"folder": "images", "name": "stack"},
                    "images": ["registry.local/a:1"],
                },
            ),
        ):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Resource" if plural == "resources" else "ImageUnlock",
                "metadata": {"name": "survivor"},
                "spec": spec,
            }
            obj = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
            custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                "survivor",
                {"status": {"conditions": [old_condition]}},
            )
            made[plural] = obj

        _recreate_watched_namespaces()
        # The documented upgrade: server-side apply of the new CRDs, wait, helm upgrade.
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(current))
        kubectl("wait", "--for=condition=Established", "-f", str(current), "--timeout=60s")
        run(
            [
                _helm(),
                "upgrade",
                RELEASE,
                str(CHART),
                "-n",
                RELEASE_NAMESPACE,
                "--reuse-values",
                "--wait",
            ],
            timeout=300,
        )
        wait_for("the operator pod Ready", lambda: ready_operator_pod(core), timeout=180)

        for plural, obj in made.items():
            assert _printer_columns(f"{plural}.{GROUP}")[-4:] == [
                "Ready",
                "Reason",
                "Message",
                "Age",
            ]
            after = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, "survivor"
            )
            assert after["metadata"]["uid"] == obj["metadata"]["uid"]
            assert after["spec"] == obj["spec"]
            assert after["status"]["conditions"] == [old_condition]
            table = kubectl("get", f"{plural}.{GROUP}", "-n", namespace, "survivor").stdout
            header = table.splitlines()[0]
            assert "READY" in header.split() and "REASON" in header.split(), table
            # Writes now need every metav1.Condition field; a full condition is accepted.
            full = dict(
                old_condition,
                reason="Upgraded",
                message="checked",
                lastTransitionTime="2026-01-01T00:00:00Z",
            )
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, "survivor", {"status": {"conditions": [full]}}
            )
            shown = kubectl(
                "get", f"{plural}.{GROUP}", "-n", namespace, "survivor", "--no-headers"
            ).stdout
            assert "Upgraded" in shown.split(), shown
    finally:
        # Whatever happened, the cluster keeps the current CRDs.
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(current), check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
