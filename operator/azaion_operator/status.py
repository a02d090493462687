"""Status of the custom resources, computed from their Jobs and pods (pure).

A Job is reduced to a ``JobOutcome`` (phase, reason, message, times, result
line); a ``Resource`` shows one outcome, an ``ImageUnlock`` one per node.  The
conditions ``Ready``, ``Progressing`` and ``Failed`` follow the Kubernetes
conventions, so ``kubectl wait --for=condition=Ready`` works: each carries
``status``, ``reason``, ``message``, ``lastTransitionTime`` (kept while the
status does not change) and ``observedGeneration``.

The result line is the toolkit's one JSON line (docs/architecture.md), read
from the pod's termination message: the main container's on success, the
failing container's on failure (``FallbackToLogsOnError`` puts the log tail
there when the file is empty, so the last JSON line of the log counts too).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "FAILED",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL",
    "JobOutcome",
    "conditions",
    "failed_status",
    "job_outcome",
    "merged",
    "one_line",
    "outcome_from_item",
    "parse_result_line",
    "progress_word",
    "status_patch",
]

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TERMINAL = (SUCCEEDED, FAILED)

_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_MAX_MESSAGE = 1024


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """Where one Job stands."""

    phase: str
    reason: str
    message: str
    start_time: str | None = None
    completion_time: str | None = None
    result: Mapping[str, Any] | None = None


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def parse_result_line(message: str | None) -> dict[str, Any] | None:
    """The last line of ``message`` that is a toolkit result (a JSON object with ``ok``)."""
    if not message:
        return None
    for line in reversed(message.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return None


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _latest_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None
    return max(
        pods,
        key=lambda p: (
            str((p.get("metadata") or {}).get("creationTimestamp") or ""),
            str((p.get("metadata") or {}).get("name") or ""),
        ),
    )


def _terminated(statuses: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Terminated states of containers, in order, as ``{name, exitCode, message, reason}``."""
    found: list[Mapping[str, Any]] = []
    for status in statuses:
        term = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
            "terminated"
        )
        if term:
            found.append({"name": status.get("name", ""), **term})
    return found


def _all_container_statuses(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]


def _waiting_reason(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """A container stuck waiting (ImagePullBackOff, CreateContainerConfigError...)."""
    status = pod.get("status") or {}
    for cs in [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in ("PodInitializing", "ContainerCreating"):
            return reason, f"container {cs.get('name')}: {reason}: {waiting.get('message', '')}"
    for cond in status.get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return "Unschedulable", f"pod not scheduled: {cond.get('message', '')}"
    return None


def _running_step(pod: Mapping[str, Any], steps: Mapping[str, str]) -> str | None:
    status = pod.get("status") or {}
    for cs in [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]:
        if "running" in (cs.get("state") or {}):
            return steps.get(str(cs.get("name")))
    return None


def _failure_from_pod(pod: Mapping[str, Any] | None) -> tuple[str, str, dict | None] | None:
    """The toolkit's error for the first container of ``pod`` that failed."""
    if pod is None:
        return None
    status = pod.get("status") or {}
    containers = [
        *_terminated(status.get("initContainerStatuses") or ()),
        *_terminated(status.get("containerStatuses") or ()),
    ]
    for term in containers:
        if int(term.get("exitCode", 0)) == 0:
            continue
        line = parse_result_line(term.get("message"))
        code = term.get("exitCode")
        if line and not line.get("ok", True):
            error = str(line.get("error") or "LoaderError")
            reason = error if _REASON.match(error) else "LoaderError"
            text = f"{term['name']}: {error} (exit {code}): {line.get('message', '')}"
            return reason, one_line(text), line
        tail = (term.get("message") or "").strip().splitlines()
        detail = tail[-1] if tail else term.get("reason") or "no message"
        return "ContainerFailed", one_line(f"{term['name']} exited {code}: {detail}"), None
    return None


def _success_line(pod: Mapping[str, Any] | None) -> dict | None:
    if pod is None:
        return None
    terms = _terminated((pod.get("status") or {}).get("containerStatuses") or ())
    for term in terms:
        line = parse_result_line(term.get("message"))
        if line and line.get("ok"):
            return line
    return None


def job_outcome(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    steps: Mapping[str, str] | None = None,
) -> JobOutcome:
    """Where ``job`` stands, with the toolkit's result or error from its newest pod.

    ``steps`` maps container names to the step they stand for (``fetch`` ->
    ``Fetching``), used as the reason while the Job runs.
    """
    status = job.get("status") or {}
    start = status.get("startTime")
    pod = _latest_pod(pods)
    complete = _condition(job, "Complete")
    if complete is not None:
        line = _success_line(pod)
        return JobOutcome(
            phase=SUCCEEDED,
            reason="Succeeded",
            message="the Job completed",
            start_time=start,
            completion_time=status.get("completionTime") or complete.get("lastTransitionTime"),
            result=line,
        )
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed is not None:
        found = _failure_from_pod(pod)
        job_reason = str(failed.get("reason") or "JobFailed")
        if found is not None:
            reason, message, line = found
        else:
            reason = job_reason if _REASON.match(job_reason) else "JobFailed"
            message = one_line(f"the Job failed: {job_reason}: {failed.get('message', '')}")
            line = None
        return JobOutcome(
            phase=FAILED,
            reason=reason,
            message=message,
            start_time=start,
            completion_time=failed.get("lastTransitionTime"),
            result=line,
        )
    if pod is not None:
        stuck = _waiting_reason(pod)
        if stuck is not None:
            return JobOutcome(PENDING, stuck[0], one_line(stuck[1]), start_time=start)
        step = _running_step(pod, steps or {})
        if step is not None:
            return JobOutcome(RUNNING, step, f"{step.lower()} on its node", start_time=start)
    if int(status.get("active") or 0) > 0:
        return JobOutcome(RUNNING, "JobRunning", "the Job's pod is starting", start_time=start)
    return JobOutcome(PENDING, "JobCreated", "the Job waits for its pod", start_time=start)


def conditions(
    *,
    phase: str,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    """``Ready``, ``Progressing`` and ``Failed`` for ``phase``.

    ``lastTransitionTime`` moves only when a condition's ``status`` changes.
    """
    wanted = {
        "Ready": "True" if phase == SUCCEEDED else "False",
        "Progressing": "True" if phase in (PENDING, RUNNING) else "False",
        "Failed": "True" if phase == FAILED else "False",
    }
    old = {c.get("type"): c for c in previous}
    result = []
    for kind, value in wanted.items():
        before = old.get(kind) or {}
        changed = before.get("status") != value
        result.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": one_line(message),
                "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return result


def progress_word(phase: str, reason: str) -> str:
    """The `progress` column's word for a phase: Done, Failed, else the reason."""
    return {SUCCEEDED: "Done", FAILED: "Failed"}.get(phase, reason)


def failed_status(
    *, generation: int, reason: str, message: str, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """The status of a custom resource the operator cannot serve as written."""
    return {
        "phase": FAILED,
        "progress": "Failed",
        "observedGeneration": generation,
        "message": one_line(message),
        "conditions": conditions(
            phase=FAILED,
            reason=reason,
            message=message,
            generation=generation,
            previous=previous.get("conditions") or (),
            now=now,
        ),
    }


FRAMEWORK_KEY = "kopf"
"""``status.kopf``: kopf's bookkeeping (diff base, retries), never ours to change."""


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch from ``old`` to ``new`` (dropped keys become ``None``); ``None`` if equal.

    ``status.kopf`` is left alone: it is not part of what we compute.
    """
    ours = {k: v for k, v in old.items() if k != FRAMEWORK_KEY}
    if ours == dict(new):
        return None
    patch: dict[str, Any] = {k: None for k in ours if k not in new}
    patch.update(new)
    return patch


def merged(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` with the merge patch ``patch`` applied (RFC 7386, as the API server does it)."""
    result = dict(old)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def outcome_from_item(item: Mapping[str, Any]) -> JobOutcome:
    """A per-node outcome recorded in an ``ImageUnlock``'s status (its Job may be gone)."""
    images = item.get("images")
    return JobOutcome(
        phase=str(item.get("phase", PENDING)),
        reason=str(item.get("reason", "Unknown")),
        message=str(item.get("message", "")),
        start_time=item.get("startTime"),
        completion_time=item.get("completionTime"),
        result={"ok": True, "images": list(images)} if images else None,
    )
