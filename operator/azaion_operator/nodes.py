"""Which nodes a custom resource's Jobs may run on (pure).

Nodes are reduced to ``NodeInfo`` (name, labels, readiness, taints and the
hardware fingerprint inputs) by the handlers' node index; everything here
works on those summaries.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "NodeInfo",
    "eligible_nodes",
    "matches_node_selector",
    "node_info",
    "nodes_matching",
    "pick_node",
    "tolerates",
]

_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What the operator needs to know about a Node."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool
    taints: tuple[Mapping[str, str], ...]
    machine_id: str
    architecture: str
    operating_system: str
    container_runtime: str = ""
    """``status.nodeInfo.containerRuntimeVersion``, e.g. ``containerd://1.7.22``."""
    kubelet_version: str = ""
    """``status.nodeInfo.kubeletVersion``, e.g. ``v1.32.4+k3s1``."""


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    """Summarize a Node manifest (as the API returns it)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    taints = tuple(
        {k: str(v) for k, v in taint.items() if k in ("key", "value", "effect")}
        for taint in spec.get("taints") or ()
    )
    labels = dict(metadata.get("labels") or {})
    return NodeInfo(
        name=str(metadata.get("name", "")),
        labels=labels,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable", False)),
        taints=taints,
        machine_id=str(info.get("machineID", "")).strip().lower(),
        architecture=str(info.get("architecture", "")),
        operating_system=str(
            info.get("operatingSystem") or labels.get("kubernetes.io/os") or "linux"
        ),
        container_runtime=str(info.get("containerRuntimeVersion", "")),
        kubelet_version=str(info.get("kubeletVersion", "")),
    )


def _toleration_matches(toleration: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return str(toleration.get("value") or "") == taint.get("value", "")


def tolerates(
    tolerations: Sequence[Mapping[str, Any]], taints: Iterable[Mapping[str, str]]
) -> bool:
    """True when every NoSchedule/NoExecute taint is tolerated (the scheduler's rule)."""
    for taint in taints:
        if taint.get("effect") not in _BLOCKING_EFFECTS:
            continue
        if not any(_toleration_matches(t, taint) for t in tolerations):
            return False
    return True


def eligible_nodes(
    nodes: Iterable[NodeInfo],
    *,
    selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> list[NodeInfo]:
    """Ready, schedulable Linux nodes that match ``selector`` and whose taints are tolerated.

    Sorted by name, so the result does not depend on the order nodes were seen in.
    """
    chosen = [
        node
        for node in nodes
        if node.ready
        and not node.unschedulable
        and node.operating_system == "linux"
        and all(node.labels.get(k) == v for k, v in selector.items())
        and tolerates(tolerations, node.taints)
    ]
    return sorted(chosen, key=lambda n: n.name)


def _int(text: Any) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def _expression_matches(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    """One ``matchExpressions`` requirement on the node's labels (the scheduler's rules)."""
    key = str(expression.get("key") or "")
    operator = expression.get("operator")
    values = [str(v) for v in expression.get("values") or ()]
    present = key in labels
    value = labels.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        have, bound = _int(value), _int(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False  # an unknown operator or a malformed Gt/Lt matches nothing


def _field_matches(node: NodeInfo, field: Mapping[str, Any]) -> bool:
    """One ``matchFields`` requirement: only ``metadata.name`` In/NotIn exists in v1."""
    if field.get("key") != "metadata.name":
        return False
    values = [str(v) for v in field.get("values") or ()]
    if field.get("operator") == "In":
        return node.name in values
    if field.get("operator") == "NotIn":
        return node.name not in values
    return False


def _term_matches(node: NodeInfo, term: Mapping[str, Any]) -> bool:
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False  # an empty term matches no node (API semantics)
    return all(_expression_matches(node.labels, e) for e in expressions) and all(
        _field_matches(node, f) for f in fields
    )


def matches_node_selector(node: NodeInfo, selector: Mapping[str, Any]) -> bool:
    """Whether ``node`` satisfies a v1 ``NodeSelector``: its terms ORed, each term ANDed."""
    return any(_term_matches(node, t) for t in selector.get("nodeSelectorTerms") or ())


def nodes_matching(nodes: Iterable[NodeInfo], selector: Mapping[str, Any]) -> list[NodeInfo]:
    """The ``nodes`` (order kept) that satisfy a v1 ``NodeSelector``, e.g. a PV's node affinity."""
    return [n for n in nodes if matches_node_selector(n, selector)]


def pick_node(candidates: Sequence[NodeInfo], key: str) -> NodeInfo | None:
    """One node for ``key`` (e.g. ``namespace/name``), chosen by rendezvous hashing.

    Deterministic, spreads different keys over the nodes, and a node joining or
    leaving moves only the keys that hash to it.
    """
    if not candidates:
        return None

    def score(node: NodeInfo) -> str:
        return hashlib.sha256(f"{key}\x00{node.name}".encode()).hexdigest()

    return max(candidates, key=score)
