"""The chart's CRDs are the top-level crds/, byte for byte, and its RBAC names them."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from chart_support import CHART, CRDS, ROOT, crd_documents, only

Render = Callable[..., list[dict[str, Any]]]


def test_crds_exist() -> None:
    assert sorted(CRDS.glob("*.yaml")), "crds/ holds no CRD: the operator's CRDs are missing"


def test_chart_crds_are_identical_to_the_top_level_crds() -> None:
    chart_crds = CHART / "crds"
    top = {path.name: path.read_bytes() for path in CRDS.glob("*.yaml")}
    copy = {path.name: path.read_bytes() for path in chart_crds.glob("*.yaml")}
    assert sorted(copy) == sorted(top), "run scripts/sync-crds"
    drifted = [name for name in top if top[name] != copy[name]]
    assert not drifted, f"{drifted} drifted from crds/: run scripts/sync-crds"


def test_sync_crds_check_agrees() -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "sync-crds"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_rbac_covers_every_crd_and_its_status(render: Render) -> None:
    (main,) = [
        doc
        for doc in only(render(), "ClusterRole")
        if doc["metadata"]["name"] == "rel-azaion-loader"
    ]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in main["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    crds = [doc for _, doc in crd_documents() if doc.get("kind") == "CustomResourceDefinition"]
    assert crds
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        assert crd["spec"]["scope"] == "Namespaced"
        assert {"get", "list", "watch", "patch"} <= granted[(group, plural)]
        has_status = any("status" in v.get("subresources", {}) for v in crd["spec"]["versions"])
        if has_status:
            assert "patch" in granted[(group, f"{plural}/status")]


def test_sync_crds_copies_and_detects_drift(tmp_path: pathlib.Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "sync-crds", tmp_path / "scripts" / "sync-crds")
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    chart_crds = tmp_path / "charts" / "azaion-loader" / "crds"
    chart_crds.mkdir(parents=True)
    (chart_crds / "stale.yaml").write_text("old\n")
    script = str(tmp_path / "scripts" / "sync-crds")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], capture_output=True, text=True, check=False)

    drift = run("--check")
    assert drift.returncode == 1
    assert "a.yaml" in drift.stderr and "stale.yaml" in drift.stderr
    assert run().returncode == 0
    assert sorted(p.name for p in chart_crds.iterdir()) == ["a.yaml"]
    assert run("--check").returncode == 0
    (chart_crds / "a.yaml").write_text("kind: Changed\n")
    assert run("--check").returncode == 1
