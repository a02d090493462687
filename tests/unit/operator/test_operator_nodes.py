"""Node eligibility and the deterministic choice of one node."""

from __future__ import annotations

import copy

from azaion_operator.nodes import eligible_nodes, node_info, pick_node, tolerates


def _node(name: str, *, ready: bool = True, labels: dict | None = None, taints: list | None = None):
    base = {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "nodeInfo": {"machineID": "ABC\n", "architecture": "arm64", "operatingSystem": "linux"},
        },
    }
    return node_info(copy.deepcopy(base))


def test_node_info_reads_fingerprint_inputs() -> None:
    info = _node("a")
    assert info.machine_id == "abc" and info.architecture == "arm64" and info.ready


def test_eligible_nodes_filter_and_sort() -> None:
    nodes = [
        _node("c", labels={"edge": "true"}),
        _node("a", labels={"edge": "true"}),
        _node("b", labels={"edge": "false"}),
        _node("d", ready=False, labels={"edge": "true"}),
        _node("e", labels={"edge": "true"}, taints=[{"key": "gpu", "effect": "NoSchedule"}]),
    ]
    chosen = eligible_nodes(nodes, selector={"edge": "true"}, tolerations=[])
    assert [n.name for n in chosen] == ["a", "c"]
    tolerated = eligible_nodes(
        nodes, selector={"edge": "true"}, tolerations=[{"key": "gpu", "operator": "Exists"}]
    )
    assert [n.name for n in tolerated] == ["a", "c", "e"]


def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert tolerates([{"operator": "Exists"}], [taint])
    assert tolerates([{"key": "k", "value": "v"}], [taint])
    assert not tolerates([{"key": "k", "value": "w"}], [taint])
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}], [taint])
    assert tolerates([], [{"key": "soft", "effect": "PreferNoSchedule"}])


def test_pick_node_is_deterministic_and_spreads() -> None:
    nodes = [_node(f"n{i}") for i in range(5)]
    assert pick_node(nodes, "ns/a") == pick_node(list(reversed(nodes)), "ns/a")
    picks = {pick_node(nodes, f"ns/r{i}").name for i in range(50)}  # type: ignore[union-attr]
    assert len(picks) >= 3
    assert pick_node([], "ns/a") is None


def test_pick_node_moves_only_keys_of_a_leaving_node() -> None:
    nodes = [_node(f"n{i}") for i in range(5)]
    before = {k: pick_node(nodes, k).name for k in (f"ns/r{i}" for i in range(100))}  # type: ignore[union-attr]
    rest = [n for n in nodes if n.name != "n0"]
    after = {k: pick_node(rest, k).name for k in before}  # type: ignore[union-attr]
    moved = {k for k in before if before[k] != after[k]}
    assert all(before[k] == "n0" for k in moved)
