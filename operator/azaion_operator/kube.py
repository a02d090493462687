"""The Kubernetes API, wrapped: the only module of the operator that calls it.

Calls go through the official ``kubernetes`` client from kopf's synchronous
handlers (threads).  Responses are read as plain JSON dicts (camelCase keys,
exactly as the API returns them), which is what the pure builders and status
functions take.  Every failure becomes one of ``azaion_operator.errors``'
``KubeError`` kinds, chained with ``raise ... from``.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from azaion_operator import crd
from azaion_operator.errors import (
    KubeConflictError,
    KubeError,
    KubeForbiddenError,
    KubeInvalidError,
    KubeNotFoundError,
    KubeUnavailableError,
)

__all__ = ["KubeClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TIMEOUT = 30.0


def _wrap(what: str, call: Callable[[], T]) -> T:
    """Run one API call, turning its failures into our ``KubeError`` kinds."""
    try:
        return call()
    except ApiException as exc:
        status = exc.status or 0
        reason = _api_reason(exc)
        message = f"{what}: HTTP {status} {reason}".strip()
        kind: type[KubeError]
        if status == 404:
            kind = KubeNotFoundError
        elif status == 409:
            kind = KubeConflictError
        elif status in (401, 403):
            kind = KubeForbiddenError
        elif status in (400, 422):
            kind = KubeInvalidError
        elif status == 429 or status >= 500 or status == 0:
            kind = KubeUnavailableError
        else:
            kind = KubeError
        raise kind(message, status=status or None) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _api_reason(exc: ApiException) -> str:
    """The API's own one-line message (``Status.message``), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message or exc.reason or "").split())


def _json(response: Any) -> Any:
    return json.loads(response.data)


def _drain(response: Any) -> None:
    """Read a response we do not need to the end, so its connection goes back to the pool.

    (An unread ``_preload_content=False`` response keeps its connection; the
    next request then pays for a new TLS handshake.)
    """
    response.data  # noqa: B018 - reading it releases the connection


def _selector(labels: Mapping[str, str], any_of: tuple[str, Collection[str]] | None = None) -> str:
    """``a=1,b=2``, and ``key in (x,y)`` for ``any_of`` (at least one value)."""
    parts = [f"{k}={v}" for k, v in sorted(labels.items())]
    if any_of is not None:
        key, values = any_of
        if not values:
            raise ValueError(f"an empty set of values for label {key} selects nothing")
        parts.append(f"{key} in ({','.join(sorted(set(values)))})")
    return ",".join(parts)


NOT_SUCCEEDED = "status.successful=0"
"""The Jobs none of whose pods has succeeded yet: the unfinished and the failed."""


class KubeClient:
    """The calls the operator makes, on one connection pool shared by the handler threads."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, *, secret_keys_ttl: float = 5.0
    ) -> None:
        self._api = api_client
        self._secret_keys_ttl = secret_keys_ttl
        self._secret_keys: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._secret_keys_guard = threading.Lock()
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._batch = kubernetes.client.BatchV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls, *, pool_size: int = 16) -> KubeClient:
        """In-cluster service account if there is one, else ``KUBECONFIG`` / ``~/.kube/config``."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_kube_config(client_configuration=configuration)
            except (kubernetes.config.ConfigException, OSError) as exc:
                raise KubeUnavailableError(f"no Kubernetes configuration found: {exc}") from exc
        configuration.connection_pool_maxsize = max(pool_size, 4)
        return cls(kubernetes.client.ApiClient(configuration))

    def close(self) -> None:
        """Release the connection pool."""
        self._api.close()

    # --- reads -----------------------------------------------------------

    def reachable(self) -> bool:
        """Whether the API server answers ``GET /version`` (the readiness probe's question)."""
        try:
            kubernetes.client.VersionApi(self._api).get_code(_request_timeout=5)
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False
        return True

    def secret_keys(self, namespace: str, name: str) -> frozenset[str]:
        """The data keys of a Secret (never its values); raises ``KubeNotFoundError``.

        A Secret found is remembered for ``secret_keys_ttl`` seconds (a burst of
        custom resources sharing one Secret costs one read); a missing one is not.
        """
        now = time.monotonic()
        with self._secret_keys_guard:
            cached = self._secret_keys.get((namespace, name))
        if cached is not None and now - cached[0] < self._secret_keys_ttl:
            return cached[1]
        body = _wrap(
            f"get Secret {namespace}/{name}",
            lambda: _json(
                self._core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=_TIMEOUT
                )
            ),
        )
        keys = frozenset(
            set((body.get("data") or {}).keys()) | set((body.get("stringData") or {}).keys())
        )
        with self._secret_keys_guard:
            self._secret_keys[(namespace, name)] = (now, keys)
        return keys

    def volume_claim(self, namespace: str, name: str) -> dict[str, Any]:
        """One PersistentVolumeClaim; raises ``KubeNotFoundError``."""
        return _wrap(
            f"get PersistentVolumeClaim {namespace}/{name}",
            lambda: _json(
                self._core.read_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False, _request_timeout=_TIMEOUT
                )
            ),
        )

    def persistent_volume(self, name: str) -> dict[str, Any]:
        """One PersistentVolume (cluster-scoped); raises ``KubeNotFoundError``."""
        return _wrap(
            f"get PersistentVolume {name}",
            lambda: _json(
                self._core.read_persistent_volume(
                    name, _preload_content=False, _request_timeout=_TIMEOUT
                )
            ),
        )

    def list_nodes(self) -> list[dict[str, Any]]:
        """All Nodes."""
        body = _wrap(
            "list Nodes",
            lambda: _json(self._core.list_node(_preload_content=False, _request_timeout=_TIMEOUT)),
        )
        return list(body.get("items") or [])

    def list_jobs(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
        not_succeeded: bool = False,
    ) -> list[dict[str, Any]]:
        """Jobs in ``namespace`` carrying all of ``labels`` (and one of ``any_of``'s values);
        with ``not_succeeded``, only those none of whose pods has succeeded (the API
        server filters: field selector ``status.successful=0``)."""
        fields = {"field_selector": NOT_SUCCEEDED} if not_succeeded else {}
        body = _wrap(
            f"list Jobs in {namespace}",
            lambda: _json(
                self._batch.list_namespaced_job(
                    namespace,
                    label_selector=_selector(labels, any_of),
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                    **fields,
                )
            ),
        )
        return list(body.get("items") or [])

    def list_pods(
        self,
        namespace: str,
        labels: Mapping[str, str],
        *,
        any_of: tuple[str, Collection[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Pods in ``namespace`` carrying all of ``labels`` (and one of ``any_of``'s values)."""
        body = _wrap(
            f"list Pods in {namespace}",
            lambda: _json(
                self._core.list_namespaced_pod(
                    namespace,
                    label_selector=_selector(labels, any_of),
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            ),
        )
        return list(body.get("items") or [])

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        """One Job; raises ``KubeNotFoundError``."""
        return _wrap(
            f"get Job {namespace}/{name}",
            lambda: _json(
                self._batch.read_namespaced_job(
                    name, namespace, _preload_content=False, _request_timeout=_TIMEOUT
                )
            ),
        )

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """One of our custom resources; raises ``KubeNotFoundError``."""
        return _wrap(
            f"get {plural} {namespace}/{name}",
            lambda: _json(
                self._custom.get_namespaced_custom_object(
                    crd.GROUP,
                    crd.VERSION,
                    namespace,
                    plural,
                    name,
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            ),
        )

    def list_custom(self, plural: str, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Our custom resources in ``namespaces``, or cluster-wide when none are given."""
        wanted = list(namespaces)
        items: list[dict[str, Any]] = []
        if not wanted:
            body = _wrap(
                f"list {plural}",
                lambda: _json(
                    self._custom.list_cluster_custom_object(
                        crd.GROUP,
                        crd.VERSION,
                        plural,
                        _preload_content=False,
                        _request_timeout=_TIMEOUT,
                    )
                ),
            )
            return list(body.get("items") or [])
        # One namespace that cannot be listed (deleted, its RoleBinding gone) must not
        # hide the others from the resync and node reconciles: logged and skipped;
        # raised only when no namespace answers.
        errors: list[KubeError] = []
        for namespace in wanted:
            try:
                body = _wrap(
                    f"list {plural} in {namespace}",
                    lambda ns=namespace: _json(  # type: ignore[misc]
                        self._custom.list_namespaced_custom_object(
                            crd.GROUP,
                            crd.VERSION,
                            ns,
                            plural,
                            _preload_content=False,
                            _request_timeout=_TIMEOUT,
                        )
                    ),
                )
            except KubeError as error:
                log.warning("%s (skipped; the other namespaces are listed)", error.message)
                errors.append(error)
                continue
            items += body.get("items") or []
        if errors and len(errors) == len(wanted):
            raise errors[0]
        return items

    # --- watching Jobs ---------------------------------------------------

    def _jobs_call(self, namespace: str | None) -> tuple[str, Callable[..., Any], tuple[str, ...]]:
        """The listing (and watch) call of Jobs in ``namespace`` or in all, with its args."""
        if namespace:
            return f"in {namespace}", self._batch.list_namespaced_job, (namespace,)
        return "in all namespaces", self._batch.list_job_for_all_namespaces, ()

    def list_jobs_versioned(
        self, namespace: str | None, labels: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str]:
        """Jobs carrying all of ``labels`` in ``namespace`` (``None``: every namespace),
        and the listing's resourceVersion (where a watch of them starts)."""
        where, call, args = self._jobs_call(namespace)
        body = _wrap(
            f"list Jobs {where}",
            lambda: _json(
                call(
                    *args,
                    label_selector=_selector(labels),
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            ),
        )
        return list(body.get("items") or []), str(
            (body.get("metadata") or {}).get("resourceVersion")
        )

    def watch_jobs(
        self, namespace: str | None, labels: Mapping[str, str], version: str, *, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """The watch events (``{"type", "object"}``, bookmarks and ``ERROR`` included) of the
        Jobs :meth:`list_jobs_versioned` lists, after ``version``, read as plain JSON until
        the server ends the watch (after ``timeout`` seconds)."""
        where, call, args = self._jobs_call(namespace)
        response = _wrap(
            f"watch Jobs {where}",
            lambda: call(
                *args,
                label_selector=_selector(labels),
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                # A connection that went silent is noticed a little after the server's end.
                _request_timeout=(_TIMEOUT, timeout + _TIMEOUT),
            ),
        )
        try:
            buffer = b""
            chunks = response.stream(65536, decode_content=True)
            while True:
                chunk = _wrap(f"watch Jobs {where}", lambda: next(chunks, None))
                if chunk is None:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    # --- writes ----------------------------------------------------------

    def post_event(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``obj`` (one of our custom resources), as kopf would."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"generateName": "azaion-event-", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": crd.MANAGED_BY},
            "reportingComponent": crd.MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        _wrap(
            f"create Event for {meta['namespace']}/{meta['name']}",
            lambda: _drain(
                self._core.create_namespaced_event(
                    meta["namespace"], body, _preload_content=False, _request_timeout=_TIMEOUT
                )
            ),
        )

    def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Job; raises ``KubeConflictError`` when one with that name exists."""
        meta = manifest["metadata"]
        return _wrap(
            f"create Job {meta['namespace']}/{meta['name']}",
            lambda: _json(
                self._batch.create_namespaced_job(
                    meta["namespace"],
                    cast(Any, dict(manifest)),
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            ),
        )

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; a Job already gone is fine."""
        try:
            _wrap(
                f"delete Job {namespace}/{name}",
                lambda: _drain(
                    self._batch.delete_namespaced_job(
                        name,
                        namespace,
                        propagation_policy="Background",
                        _preload_content=False,
                        _request_timeout=_TIMEOUT,
                    )
                ),
            )
        except KubeNotFoundError:
            log.debug("Job %s/%s was already gone", namespace, name)

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the status subresource of one of our custom resources."""
        _wrap(
            f"patch {plural} {namespace}/{name} status",
            lambda: _drain(
                self._custom.patch_namespaced_custom_object_status(
                    crd.GROUP,
                    crd.VERSION,
                    namespace,
                    plural,
                    name,
                    {"status": dict(status)},
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            ),
        )
