"""The least a kopf operator does for a new ``Resource``: one create handler that creates its Job.

    kopf run --standalone --namespace NS bench/kopf_floor.py    # AZL_BENCH_NODE=<node name>

A side of ``bench/operator_resources.py --kopf-floor``: the same Job manifest
as the operator's (``build_resource_job``), created through the operator's
own API client, with kopf's tuning as the operator has it (48 handler
threads, its diff base in ``status.kopf``, warnings-only Events), but no
status of ours, no Events of ours, no Job watch and no follow-ups.  kopf
itself still writes its diff base after the handler (one status patch) and
processes the watch event that patch causes.  Between the bare controller
and this lies kopf's own cost; between this and the operator, ours.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import kopf

from azaion_operator import crd
from azaion_operator.kinds.resource import build_resource_job
from azaion_operator.kube import KubeClient
from azaion_operator.nodes import node_info
from azaion_operator.settings import OperatorSettings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = OperatorSettings.from_env(os.environ)
    memo.settings = ours
    memo.kube = KubeClient.from_environment(pool_size=ours.workers)
    memo.node = node_info(
        json.loads(
            memo.kube._core.read_node(os.environ["AZL_BENCH_NODE"], _preload_content=False).data
        )
    )
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
    settings.execution.max_workers = ours.workers
    settings.posting.level = logging.WARNING


@kopf.on.create(crd.GROUP, crd.VERSION, crd.RESOURCE_PLURAL)
def created(body: kopf.Body, memo: Any, **_: Any) -> None:
    plain = {key: body[key] for key in body}
    memo.kube.create_job(build_resource_job(plain, memo.node, memo.settings))
