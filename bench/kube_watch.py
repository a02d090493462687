"""A raw watch on one namespace's Jobs, shared by the operator benchmarks.

The event stream is read as JSON lines, not model objects, so the observer
costs little CPU beside the operator it measures, and each event is stamped
with this process's monotonic clock the moment its bytes arrive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes


def watch_jobs(
    namespace: str,
    on_event: Callable[[dict[str, Any], float], None],
    opened: threading.Event,
    stopped: threading.Event,
) -> None:
    """LIST, then WATCH from that version until ``stopped`` (re-opened when the server ends it).

    ``on_event(event, t)`` runs for every event, ``t`` its arrival time; ``opened`` is
    set once the first watch request is open, so a caller can wait before it creates Jobs.
    """
    batch = kubernetes.client.BatchV1Api(kubernetes.client.ApiClient())
    version = batch.list_namespaced_job(namespace).metadata.resource_version
    while not stopped.is_set():
        response = batch.list_namespaced_job(
            namespace,
            watch=True,
            resource_version=version,
            timeout_seconds=60,
            allow_watch_bookmarks=True,
            _preload_content=False,
        )
        opened.set()
        buffer = b""
        for chunk in response.stream(65536, decode_content=False):
            t = time.monotonic()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                # Every event (bookmarks too) moves the version a re-opened watch resumes from.
                meta = event["object"].get("metadata") or {}
                version = meta.get("resourceVersion", version)
                on_event(event, t)
            if stopped.is_set():
                break
        response.release_conn()
