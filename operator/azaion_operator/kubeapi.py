"""``KubeApi``: what the operator's middle asks of the Kubernetes API, and nothing more.

The seam between the decisions (``reconcile``, ``kinds``, ``handlers``) and
the one module that talks to the API server (``kube.KubeClient``, which
satisfies this protocol; mypy checks it where ``handlers`` opens the client).
Unit tests pass an in-memory fake instead (``tests/unit/operator/kube_support.py``).

Objects are plain JSON dicts as the API returns them (camelCase keys).
Failures are the ``KubeError`` kinds of ``azaion_operator.errors``: a getter
raises ``KubeNotFoundError`` for a missing object, ``create_job`` raises
``KubeConflictError`` when the name is taken.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol

__all__ = ["KubeApi"]


class KubeApi(Protocol):
    """The Kubernetes calls of reconcile and the handlers."""

    # --- reads -----------------------------------------------------------

    def reachable(self) -> bool:
        """Whether the API server answers (the readiness probe's question)."""
        ...

    def secret_keys(self, namespace: str, name: str) -> frozenset[str]:
        """The data keys of a Secret, never its values."""
        ...

    def volume_claim(self, namespace: str, name: str) -> dict[str, Any]: ...

    def persistent_volume(self, name: str) -> dict[str, Any]: ...

    def list_nodes(self) -> list[dict[str, Any]]: ...

    def list_jobs(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
        not_succeeded: bool = False,
    ) -> list[dict[str, Any]]:
        """Jobs in ``namespace`` carrying all of ``labels``.

        ``any_of``: ``(key, values)``, and that label has one of ``values`` (a set-based
        selector; at least one value).  ``not_succeeded``: only Jobs none of whose pods
        has succeeded (running, waiting or failed), filtered by the API server.
        """
        ...

    def list_pods(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Pods in ``namespace`` carrying all of ``labels`` (and one of ``any_of``'s values)."""
        ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """One of our custom resources."""
        ...

    def list_custom(self, plural: str, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Our custom resources in ``namespaces``, or cluster-wide when none are given."""
        ...

    # --- watching Jobs (jobwatch.py) ------------------------------------

    def list_jobs_versioned(
        self, namespace: str | None, labels: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str]:
        """Jobs carrying all of ``labels`` in ``namespace`` (``None``: every namespace),
        and the listing's resourceVersion."""
        ...

    def watch_jobs(
        self, namespace: str | None, labels: Mapping[str, str], version: str, *, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """Their watch events after ``version`` (``{"type", "object"}``, bookmarks and
        ``ERROR`` included), until the server ends the watch."""
        ...

    # --- writes ----------------------------------------------------------

    def post_event(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Post an Event about ``obj`` (outside kopf's handlers, where kopf.event cannot)."""
        ...

    def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job (its pods in the background); one already gone is fine."""
        ...

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the status subresource of one of our custom resources."""
        ...

    def close(self) -> None:
        """Release connections (at the operator's clean-up)."""
        ...
