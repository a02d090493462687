"""A real API server (KUBECONFIG), the CRDs, the operator as a process, a namespace per test."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import polling  # hack/: shared with the benchmarks
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
GROUP, VERSION = "loader.azaion.com", "v1alpha1"

pytestmark = pytest.mark.cluster

if not os.environ.get("KUBECONFIG"):
    pytest.skip(
        "KUBECONFIG is unset: these tests need the local cluster "
        '(scripts/kind-node-image create; eval "$(scripts/kind-node-image env)")',
        allow_module_level=True,
    )

kubernetes = pytest.importorskip("kubernetes")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (tests may sleep; handlers may not)."""
    return polling.wait_for(what, check, timeout, every=0.2)


@pytest.fixture(scope="session")
def api() -> Any:
    kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


@pytest.fixture(scope="session")
def crds(api: Any) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(body["metadata"]["name"])
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(body["metadata"]["name"], body)

    def established() -> bool:
        for name in ("resources.loader.azaion.com", "imageunlocks.loader.azaion.com"):
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in crd.status.conditions or []}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for("CRDs established", established)


@pytest.fixture
def namespace(api: Any, crds: None) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(api)
    name = f"op-e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


class Operator:
    """``azaion-operator`` as a child process watching one namespace."""

    def __init__(
        self, namespace: str, log: pathlib.Path, env: dict[str, str] | None = None
    ) -> None:
        self.namespace = namespace
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "AZAION_OPERATOR_NAMESPACES": self.namespace,
            "AZAION_OPERATOR_LIVENESS_ENDPOINT": "",
            "AZAION_OPERATOR_RESYNC_SECONDS": "5",
            # The admin policy lets these tests' objects through: an https default
            # (the Jobs never reach it) and ImageUnlock in the test's namespace.
            "AZAION_OPERATOR_API_URL": "https://api.e2e.invalid",
            "AZAION_OPERATOR_POLICY_IMAGE_UNLOCK_NAMESPACES": self.namespace,
            **self.env,
        }
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "azaion_operator.main"], env=env, stdout=out, stderr=out
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def operator(namespace: str, tmp_path: pathlib.Path) -> Iterator[Operator]:
    op = Operator(namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
