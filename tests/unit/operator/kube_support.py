"""An in-memory ``KubeApi`` for unit tests of the operator's decisions.

Objects are plain dicts in dicts, keyed as the API server keys them; every
call is recorded.  It behaves like the API server where the decisions depend
on it (a name taken is a 409, a missing object a 404, labels select, a status
patch merges) and nothing more: no controllers run, so a Job's progress is
what a test writes with :meth:`FakeKube.finish_job`.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from azaion_operator.errors import KubeConflictError, KubeError, KubeNotFoundError
from azaion_operator.kubeapi import KubeApi

__all__ = ["FakeKube", "merge_patch"]


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the API server applies one to a status."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _labelled(
    obj: Mapping[str, Any],
    labels: Mapping[str, str],
    any_of: tuple[str, Collection[str]] | None = None,
) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    if any_of is not None:
        key, values = any_of
        if not values:
            raise ValueError(f"an empty set of values for label {key}")  # as KubeClient
        if key not in have or have[key] not in values:
            return False
    return all(have.get(k) == v for k, v in labels.items())


def _selected(
    objects: Mapping[tuple[str, str], dict[str, Any]],
    namespace: str,
    labels: Mapping[str, str],
    any_of: tuple[str, Collection[str]] | None = None,
    fields: Callable[[Mapping[str, Any]], bool] = lambda _: True,
) -> list[dict[str, Any]]:
    """What a selected LIST returns: copies of ``namespace``'s matches, by name."""
    return [
        copy.deepcopy(obj)
        for (ns, _), obj in sorted(objects.items())
        if ns == namespace and _labelled(obj, labels, any_of) and fields(obj)
    ]


def _not_succeeded(job: Mapping[str, Any]) -> bool:
    """The API server's field selector ``status.successful=0``."""
    return not int((job.get("status") or {}).get("succeeded") or 0)


class FakeKube:
    """Jobs, Pods, Secrets, claims, volumes, Nodes and our custom resources, in memory."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.custom: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        """Every call: the method's name and its string arguments."""
        self.listed: list[tuple[str, int]] = []
        """Every LIST of Jobs or pods: the method's name and how many objects it returned."""
        self.failures: dict[str, list[KubeError]] = {}
        self.watches: list[Any] = []
        """Scripted Job watch streams, one per ``watch_jobs`` call: events, or a KubeError
        (raised at the start, or where it stands among the events)."""
        self.version = 1
        """The resourceVersion a Job listing returns."""
        self.events: list[tuple[str, str, str]] = []
        """Events posted with ``post_event``: (type, reason, message)."""
        self._uids = itertools.count(1)

    # --- test set-up -------------------------------------------------------

    def fail(self, method: str, *errors: KubeError) -> None:
        """The next calls of ``method`` raise ``errors``, one each, in order."""
        self.failures.setdefault(method, []).extend(errors)

    def add_secret(self, namespace: str, name: str, keys: Iterable[str]) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {"namespace": namespace, "name": name},
            "data": {key: "c2VjcmV0" for key in keys},
        }

    def add_claim(self, namespace: str, name: str, **spec: Any) -> None:
        self.claims[(namespace, name)] = {
            "metadata": {"namespace": namespace, "name": name},
            "spec": dict(spec),
        }

    def add_custom(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        stored = copy.deepcopy(dict(body))
        self.custom[(plural, meta["namespace"], meta["name"])] = stored
        return stored

    def job_names(self, namespace: str | None = None) -> list[str]:
        return sorted(name for ns, name in self.jobs if namespace in (None, ns))

    def run_job(self, namespace: str, name: str) -> None:
        """The Job's pod runs its main container (what a kubelet would report)."""
        job = self.jobs[(namespace, name)]
        job["status"] = {"startTime": "2026-12-01T00:00:01Z", "active": 1}
        main = job["spec"]["template"]["spec"]["containers"][0]["name"]
        self.pods[(namespace, f"{name}-pod")] = {
            "metadata": _pod_meta(namespace, name, job),
            "status": {"containerStatuses": [{"name": main, "state": {"running": {}}}]},
        }

    def finish_job(
        self, namespace: str, name: str, *, ok: bool = True, result: Mapping[str, Any] | None = None
    ) -> None:
        """The Job ran to an end: its condition, and a pod with the toolkit's result line."""
        job = self.jobs[(namespace, name)]
        kind = "Complete" if ok else "Failed"
        job["status"] = {
            "startTime": "2026-12-01T00:00:01Z",
            "succeeded" if ok else "failed": 1,
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": "Completed" if ok else "BackoffLimitExceeded",
                    "lastTransitionTime": "2026-12-01T00:00:09Z",
                }
            ],
        }
        line = dict(result or {"ok": ok})
        main = job["spec"]["template"]["spec"]["containers"][0]["name"]
        self.pods[(namespace, f"{name}-pod")] = {
            "metadata": _pod_meta(namespace, name, job),
            "status": {
                "containerStatuses": [
                    {
                        "name": main,
                        "state": {
                            "terminated": {
                                "exitCode": 0 if ok else 30,
                                "message": json.dumps(line),
                            }
                        },
                    }
                ]
            },
        }

    # --- the KubeApi calls ---------------------------------------------------

    def _call(self, method: str, *args: str) -> None:
        self.calls.append((method, *args))
        pending = self.failures.get(method)
        if pending:
            raise pending.pop(0)

    def names(self) -> list[str]:
        """The methods called, in order."""
        return [call[0] for call in self.calls]

    def reachable(self) -> bool:
        self._call("reachable")
        return True

    def secret_keys(self, namespace: str, name: str) -> frozenset[str]:
        self._call("secret_keys", namespace, name)
        secret = self.secrets.get((namespace, name))
        if secret is None:
            raise KubeNotFoundError(f"get Secret {namespace}/{name}: HTTP 404", status=404)
        return frozenset(secret.get("data") or {})

    def volume_claim(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("volume_claim", namespace, name)
        return self._found(self.claims.get((namespace, name)), "PersistentVolumeClaim", name)

    def persistent_volume(self, name: str) -> dict[str, Any]:
        self._call("persistent_volume", name)
        return self._found(self.volumes.get(name), "PersistentVolume", name)

    def list_nodes(self) -> list[dict[str, Any]]:
        self._call("list_nodes")
        return copy.deepcopy(list(self.nodes.values()))

    def list_jobs(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
        not_succeeded: bool = False,
    ) -> list[dict[str, Any]]:
        self._call("list_jobs", namespace)
        fields = _not_succeeded if not_succeeded else lambda _: True
        jobs = _selected(self.jobs, namespace, labels, any_of, fields)
        self.listed.append(("list_jobs", len(jobs)))
        return jobs

    def list_pods(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
    ) -> list[dict[str, Any]]:
        self._call("list_pods", namespace)
        pods = _selected(self.pods, namespace, labels, any_of)
        self.listed.append(("list_pods", len(pods)))
        return pods

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_job", namespace, name)
        return self._found(self.jobs.get((namespace, name)), "Job", name)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_custom", plural, namespace, name)
        return self._found(self.custom.get((plural, namespace, name)), plural, name)

    def list_custom(self, plural: str, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
        wanted = set(namespaces)
        self._call("list_custom", plural, *sorted(wanted))
        return [
            copy.deepcopy(body)
            for (p, ns, _), body in sorted(self.custom.items())
            if p == plural and (not wanted or ns in wanted)
        ]

    def list_jobs_versioned(
        self, namespace: str | None, labels: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str]:
        self._call("list_jobs_versioned", namespace or "")
        jobs = [
            copy.deepcopy(job)
            for (ns, _), job in sorted(self.jobs.items())
            if namespace in (None, ns) and _labelled(job, labels)
        ]
        return jobs, str(self.version)

    def watch_jobs(
        self, namespace: str | None, labels: Mapping[str, str], version: str, *, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """The next scripted stream of :attr:`watches` (each a list of events or an error)."""
        self._call("watch_jobs", namespace or "", version)
        if not self.watches:
            raise KubeError("watch Jobs: no more scripted streams")
        stream = self.watches.pop(0)
        if isinstance(stream, KubeError):
            raise stream
        for event in stream:
            if isinstance(event, KubeError):
                raise event
            yield copy.deepcopy(event)

    def post_event(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self._call("post_event", meta["namespace"], meta["name"], reason)
        self.events.append((type, reason, message))

    def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        self._call("create_job", meta["namespace"], meta["name"])
        key = (meta["namespace"], meta["name"])
        if key in self.jobs:
            raise KubeConflictError(f"create Job {key[0]}/{key[1]}: HTTP 409", status=409)
        job = copy.deepcopy(dict(manifest))
        job["metadata"]["uid"] = f"job-uid-{next(self._uids)}"
        job.setdefault("status", {})
        self.jobs[key] = job
        return copy.deepcopy(job)

    def delete_job(self, namespace: str, name: str) -> None:
        self._call("delete_job", namespace, name)
        job = self.jobs.pop((namespace, name), None)
        if job is not None:  # the pods go too (propagation "Background")
            uid = job["metadata"]["uid"]
            for key, pod in list(self.pods.items()):
                if any(ref.get("uid") == uid for ref in pod["metadata"]["ownerReferences"]):
                    del self.pods[key]

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self._call("patch_status", plural, namespace, name)
        body = self._found(self.custom.get((plural, namespace, name)), plural, name, copy_=False)
        merge_patch(body.setdefault("status", {}), status)

    def close(self) -> None:
        self._call("close")

    @staticmethod
    def _found(
        obj: dict[str, Any] | None, what: str, name: str, *, copy_: bool = True
    ) -> dict[str, Any]:
        if obj is None:
            raise KubeNotFoundError(f"get {what} {name}: HTTP 404", status=404)
        return copy.deepcopy(obj) if copy_ else obj


def _is_kube_api(fake: FakeKube) -> KubeApi:
    return fake  # mypy checks here that the fake has every KubeApi call, with its types


def _pod_meta(namespace: str, job_name: str, job: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of the one pod FakeKube gives a Job: its labels, owned by the Job."""
    return {
        "namespace": namespace,
        "name": f"{job_name}-pod",
        "labels": dict(job["spec"]["template"]["metadata"].get("labels") or {}),
        "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
        "creationTimestamp": "2026-12-01T00:00:01Z",
    }
