"""Node eligibility and the deterministic choice of one node."""

from __future__ import annotations

import copy

import pytest

from azaion_operator.nodes import (
    eligible_nodes,
    matches_node_selector,
    node_info,
    nodes_matching,
    pick_node,
    tolerates,
)


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


def _selector(*terms: dict) -> dict:
    return {"nodeSelectorTerms": list(terms)}


def _expr(key: str, operator: str, *values: str) -> dict:
    expression: dict = {"key": key, "operator": operator}
    if values:
        expression["values"] = list(values)
    return expression


ZONED = _node("a", labels={"zone": "z1", "disks": "4"})
BARE = _node("b")


@pytest.mark.parametrize(
    ("expression", "zoned", "bare"),
    [
        (_expr("zone", "In", "z0", "z1"), True, False),
        (_expr("zone", "In", "z2"), False, False),
        (_expr("zone", "NotIn", "z2"), True, True),  # an absent label is "not in"
        (_expr("zone", "NotIn", "z1"), False, True),
        (_expr("zone", "Exists"), True, False),
        (_expr("zone", "DoesNotExist"), False, True),
        (_expr("disks", "Gt", "3"), True, False),
        (_expr("disks", "Gt", "4"), False, False),
        (_expr("disks", "Lt", "5"), True, False),
        (_expr("disks", "Lt", "4"), False, False),
        (_expr("zone", "Gt", "1"), False, False),  # not an integer label
        (_expr("disks", "Gt", "many"), False, False),  # not an integer bound
        (_expr("disks", "Gt", "1", "2"), False, False),  # Gt takes exactly one value
        (_expr("zone", "Near", "z1"), False, False),  # unknown operator
    ],
    ids=lambda v: v if isinstance(v, bool) else f"{v['key']}-{v['operator']}-{v.get('values')}",
)
def test_node_selector_operators(expression: dict, zoned: bool, bare: bool) -> None:
    selector = _selector({"matchExpressions": [expression]})
    assert matches_node_selector(ZONED, selector) is zoned
    assert matches_node_selector(BARE, selector) is bare


def test_node_selector_match_fields_on_the_node_name() -> None:
    by_name = _selector({"matchFields": [_expr("metadata.name", "In", "a")]})
    assert matches_node_selector(ZONED, by_name) and not matches_node_selector(BARE, by_name)
    not_named = _selector({"matchFields": [_expr("metadata.name", "NotIn", "a")]})
    assert not matches_node_selector(ZONED, not_named) and matches_node_selector(BARE, not_named)
    other_field = _selector({"matchFields": [_expr("spec.unschedulable", "In", "false")]})
    assert not matches_node_selector(ZONED, other_field)


def test_node_selector_ands_within_a_term_and_ors_terms() -> None:
    both = {"matchExpressions": [_expr("zone", "In", "z1")]}
    both["matchFields"] = [_expr("metadata.name", "In", "b")]
    assert not matches_node_selector(ZONED, _selector(both))  # label fits, name does not
    assert not matches_node_selector(BARE, _selector(both))  # name fits, label does not
    either = _selector(
        {"matchExpressions": [_expr("zone", "In", "z1"), _expr("disks", "Exists")]},
        {"matchFields": [_expr("metadata.name", "In", "b")]},
    )
    assert matches_node_selector(ZONED, either) and matches_node_selector(BARE, either)


def test_node_selector_empty_terms_match_nothing() -> None:
    assert not matches_node_selector(ZONED, _selector({}))
    assert not matches_node_selector(ZONED, _selector())
    assert not matches_node_selector(ZONED, {})


def test_nodes_matching_keeps_the_order() -> None:
    nodes = [_node("c", labels={"zone": "z1"}), BARE, ZONED]
    selector = _selector({"matchExpressions": [_expr("zone", "Exists")]})
    assert [n.name for n in nodes_matching(nodes, selector)] == ["c", "a"]
