"""The custom resource kinds, one module each, and the table the handlers serve them from.

Adding a kind: a module here with its Job builder, its reconcile and its
status; a row in :data:`KINDS`; its CRD in ``crds/``; its handlers (the
``@kopf.on`` decorators name each plural) in ``handlers.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from azaion_operator import crd
from azaion_operator.kinds.image_unlock import reconcile_unlock
from azaion_operator.kinds.resource import reconcile_resource
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import Once
from azaion_operator.nodes import NodeInfo
from azaion_operator.reconcile import Report
from azaion_operator.settings import OperatorSettings

__all__ = ["KINDS", "Kind", "Reconcile"]


class Reconcile(Protocol):
    """A kind's reconcile: one pass over one object, returning its status and Events.

    ``job``: the Job a watch event showed, for a kind that can start from it
    (:attr:`Kind.follows_jobs`); the others are never given one.
    """

    def __call__(
        self,
        kube: KubeApi,
        settings: OperatorSettings,
        body: Mapping[str, Any],
        nodes: Sequence[NodeInfo],
        *,
        now: str,
        warned: Once | None = None,
        job: Mapping[str, Any] | None = None,
    ) -> Report: ...


@dataclasses.dataclass(frozen=True)
class Kind:
    """One custom resource kind: its plural (for API calls) and its reconcile."""

    name: str
    plural: str
    reconcile: Reconcile
    follows_jobs: bool = False
    """For a kind with one Job per object: a Job's move reconciles from the owner's
    last known body and that Job (no read of the owner, no Job listing);
    ``False``: the owner is read and reconciled afresh."""


KINDS: dict[str, Kind] = {
    crd.RESOURCE_KIND: Kind(
        crd.RESOURCE_KIND, crd.RESOURCE_PLURAL, reconcile_resource, follows_jobs=True
    ),
    crd.UNLOCK_KIND: Kind(crd.UNLOCK_KIND, crd.UNLOCK_PLURAL, reconcile_unlock),
}
