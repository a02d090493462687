"""Benchmark: one ``ImageUnlock`` over 500 simulated nodes (kwok), beside a bare controller.

    flock /tmp/azl-cluster.lock sh -c 'eval "$(scripts/kind-node-image env)" &&
        .venv/bin/python bench/operator_nodes.py'           # --nodes 500 --parallelism 50
    # other flags: --rounds N (each side N times, rotated), --job-ms MS (how long a
    # simulated pod runs), --compare-source DIR (another copy of the operator
    # package, e.g. the last commit's), --py-spy FILE (record this checkout's operator:
    # its pauses slow that side), --skip-floor

Against the cluster in ``KUBECONFIG`` (kind: the home-made cluster's etcd 3.4
cannot serve the streaming lists kwok's client-go asks for, so kwok sees
changes tens of seconds late there; the CRDs are created if missing, never
changed or removed).  kwok (``sigs.k8s.io/kwok``,
built from its Go module into ``/var/cache/azaion-loader/bin/kwok-<version>/``
when missing) runs on this host against that API server: it keeps the
benchmark's ``--nodes`` Nodes Ready (their Leases) and plays their pods
(Pending -> Running -> Succeeded after ``--job-ms``; deleted when asked), so the
Job controller completes each Job and the parallelism windows advance.  The
Nodes are labelled ``azl-bench/kwok=<id>`` and tainted
``kwok.x-k8s.io/node=fake:NoSchedule`` (nothing else lands on them); each has
its own machine ID and a ``containerd://`` runtime, as a real node would.

Two sides, each in its own namespace, deleted before the next side starts:

- floor: a bare controller in this process: the same Job manifests
  (``build_unlock_job``), one per node, at most ``--parallelism`` unfinished,
  a new one created as soon as a watch sees one complete; no status, no
  Events, no framework.  What the cluster (Job controller, scheduler, kwok)
  allows at least.
- operator: ``azaion-operator`` as a child process, started before the Nodes
  are added (so it sees them join, as in a real cluster), watching only its
  namespace; one ``ImageUnlock`` matching every simulated node, with
  ``parallelism``.

Measured: apply -> last Job created (a raw watch on Jobs, this process's
monotonic clock), apply -> every Job finished, the most Jobs unfinished at
once as the watch saw them (never above ``parallelism``), and for the
operator apply -> status Succeeded, its peak RSS (VmHWM, which covers the
Nodes joining) and its CPU (user+system) from apply to the end.  At the end
the ``ImageUnlock``'s status counters must be exact: desired = succeeded =
nodes, active = failed = 0, one Succeeded entry per node with its own Job.
Targets (issue 13): every Job within 60 s, counters exact, peak RSS <= 200 MiB.
On kind, each side also reports how long kube-controller-manager's and
kube-scheduler's API clients waited on their own rate limiters (client-go's
``rest_client_rate_limiter_duration_seconds``, read with ``docker exec`` on the
control-plane node; ``--control-plane`` names its container): what their
``--kube-api-qps`` / ``--kube-api-burst`` cost that side.
The Nodes, namespaces and kwok are removed at the end, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from azaion_operator import crd
from azaion_operator.kinds.image_unlock import build_unlock_job
from azaion_operator.nodes import node_info
from azaion_operator.runtimes import choose_runtime
from azaion_operator.settings import OperatorSettings
from kube_watch import watch_jobs
from operator_resources import (
    connect,
    ensure_crds,
    interruptible,
    load_average,
    proc_status,
    start_operator,
    start_py_spy,
    stop_process,
    wait_for,
)

KWOK_VERSION = "v0.8.0"  # `go list -m -versions sigs.k8s.io/kwok`: the newest, 2026-11
KWOK_PACKAGE = f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"
CACHE = pathlib.Path(os.environ.get("AZAION_CLUSTER_CACHE", "/var/cache/azaion-loader"))
TARGETS = {"last_job": 60.0, "rss": 200.0}
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
BENCH_LABEL = "azl-bench/kwok"
FLOOR = "floor"  # a side's source: the bare controller, not an operator package

# kwok plays nodes and pods by "stages": a selector (jq over the object) and
# the status to patch in.  Ours, written for this bench: a node becomes Ready;
# a pod on it starts (init containers done, containers running), a Job's pod
# completes after DELAY ms; a pod being deleted goes at once.
STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: azl-node-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - {key: '.status.phase', operator: DoesNotExist}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok (bench)",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      - {type: MemoryPressure, status: "False", reason: KubeletHasSufficientMemory,
         message: "", lastHeartbeatTime: {{ $now | Quote }},
         lastTransitionTime: {{ $now | Quote }}}
      - {type: DiskPressure, status: "False", reason: KubeletHasNoDiskPressure,
         message: "", lastHeartbeatTime: {{ $now | Quote }},
         lastTransitionTime: {{ $now | Quote }}}
      - {type: PIDPressure, status: "False", reason: KubeletHasSufficientPID,
         message: "", lastHeartbeatTime: {{ $now | Quote }},
         lastTransitionTime: {{ $now | Quote }}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: azl-pod-start}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: [Pending]}
    - {key: '.spec.nodeName', operator: Exists}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      {{ $node := .spec.nodeName }}
      {{ $m := .metadata }}
      hostIP: {{ NodeIPWith $node | Quote }}
      podIP: {{ PodIPWith $node false $m.uid $m.name $m.namespace | Quote }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }},
                       finishedAt: {{ $now | Quote }}}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running: {startedAt: {{ $now | Quote }}}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: azl-pod-complete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: [Running]}
    - {key: '.metadata.ownerReferences.[].kind', operator: In, values: [Job]}
  delay: {durationMilliseconds: DELAY}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Succeeded
      conditions:
      - {type: Ready, status: "False", reason: PodCompleted,
         lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", reason: PodCompleted,
         lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }},
                       finishedAt: {{ $now | Quote }}}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: azl-pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    finalizers: {empty: true}
    delete: true
"""


# --- kwok ------------------------------------------------------------------------------


def kwok_bin() -> pathlib.Path:
    return CACHE / "bin" / f"kwok-{KWOK_VERSION}" / "kwok"


def build_kwok() -> pathlib.Path:
    """``go install`` kwok into the cache (once per version; a cache dir that exists is whole)."""
    target = kwok_bin()
    if target.exists():
        return target
    partial = target.parent.with_name(target.parent.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    print(f"building kwok {KWOK_VERSION} from its Go module (minutes) ...", file=sys.stderr)
    env = dict(
        os.environ,
        CGO_ENABLED="0",
        GOFLAGS="-mod=mod",
        GONOSUMDB="k8s.io,sigs.k8s.io",
        GOBIN=str(partial),
    )
    subprocess.run(
        ["nice", "-n", "10", "go", "install", "-trimpath", "-ldflags", "-s -w", KWOK_PACKAGE],
        env=env,
        check=True,
    )
    partial.rename(target.parent)
    return target


def start_kwok(run_id: str, delay_ms: int, logdir: pathlib.Path) -> Any:
    config = logdir / "kwok-stages.yaml"
    config.write_text(STAGES.replace("DELAY", str(delay_ms)))
    log = (logdir / "kwok.log").open("ab")
    return subprocess.Popen(
        [
            str(build_kwok()),
            f"--config={config}",
            f"--kubeconfig={os.environ['KUBECONFIG']}",
            f"--manage-nodes-with-label-selector={BENCH_LABEL}={run_id}",
            "--cidr=10.250.0.0/16",
            "--node-ip=10.250.255.254",
            "--node-lease-duration-seconds=40",
        ],
        stdout=log,
        stderr=log,
        # client-go's streaming list needs etcd progress notifications, which
        # the local cluster's etcd 3.4 lacks: plain LIST + WATCH instead.
        env={**os.environ, "KUBE_FEATURE_WatchListClient": "false"},
    )


# --- the control plane's client-side throttling ---------------------------------------

# kubectl in the control-plane node, as the cluster's admin, against a component's own
# secure port (127.0.0.1 only; its serving certificate is self-signed).
_METRICS = r"""
set -e
k="kubectl --kubeconfig /etc/kubernetes/admin.conf config view --raw -o jsonpath"
cert=$($k='{.users[0].user.client-certificate-data}')
key=$($k='{.users[0].user.client-key-data}')
conf=$(mktemp)
cat > "$conf" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:$1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {client-certificate-data: $cert, client-key-data: $key}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
EOF
kubectl --kubeconfig "$conf" get --raw /metrics |
  grep '^rest_client_rate_limiter_duration_seconds_[sc]'
rm -f "$conf"
"""
COMPONENTS = {"controller-manager": 10257, "scheduler": 10259}


def throttled(container: str) -> dict[str, float]:
    """Seconds each component's API clients have waited on their rate limiters so far
    (summed over verbs), and their requests; empty when the node cannot be asked."""
    waited: dict[str, float] = {}
    for name, port in COMPONENTS.items():
        try:
            out = subprocess.run(
                ["docker", "exec", container, "sh", "-c", _METRICS, "sh", str(port)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        for line in out.splitlines():
            metric, _, value = line.rpartition(" ")
            kind = "wait" if metric.split("{")[0].endswith("_sum") else "requests"
            waited[f"{name} {kind}"] = waited.get(f"{name} {kind}", 0.0) + float(value)
    return waited


def throttled_since(container: str, before: dict[str, float]) -> dict[str, float]:
    after = throttled(container)
    return {k: after[k] - before.get(k, 0.0) for k in after} if before and after else {}


class KwokWatchdog:
    """kwok, restarted when it dies: v0.8.0 sometimes crashes with "fatal error:
    concurrent map writes" while its workers first match a Stage (seen here once in
    three runs); a new kwok lists the Nodes and pods again and carries on."""

    def __init__(self, run_id: str, delay_ms: int, logdir: pathlib.Path) -> None:
        self._start = lambda: start_kwok(run_id, delay_ms, logdir)
        self.proc = self._start()
        self.restarts = 0
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stopped.wait(1):
            if self.proc.poll() is not None and not self._stopped.is_set():
                print(f"kwok exited ({self.proc.returncode}): restarted", file=sys.stderr)
                self.restarts += 1
                self.proc = self._start()

    def stop(self) -> None:
        self._stopped.set()
        stop_process(self.proc)


# --- nodes -----------------------------------------------------------------------------


def node_body(name: str, run_id: str) -> dict[str, Any]:
    room = {"cpu": "32", "memory": "64Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                BENCH_LABEL: run_id,
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": [KWOK_TAINT]},
        # A Node keeps the status it is created with (a kubelet registers so).
        "status": {
            "capacity": room,
            "allocatable": room,
            "nodeInfo": {
                "machineID": uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": str(uuid.uuid4()),
                "architecture": "amd64",
                "operatingSystem": "linux",
                "containerRuntimeVersion": "containerd://1.7.24-kwok",
                "kubeletVersion": "v1.32.4-kwok",
                "kubeProxyVersion": "",
                "kernelVersion": "6.1.0-kwok",
                "osImage": "kwok",
            },
        },
    }


def parallel(n: int, threads: int, fn: Callable[[int], Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(fn, i) for i in range(n)]:
            future.result()


def ready_nodes(core: Any, run_id: str) -> int:
    listed = json.loads(
        core.list_node(label_selector=f"{BENCH_LABEL}={run_id}", _preload_content=False).data
    )
    return sum(1 for n in listed["items"] if node_info(n).ready)


def delete_nodes(core: Any, run_id: str) -> None:
    with contextlib.suppress(ApiException):
        core.delete_collection_node(label_selector=f"{BENCH_LABEL}={run_id}")


# --- watching Jobs ---------------------------------------------------------------------


class JobTimeline:
    """A raw watch on a namespace's Jobs: when each was first seen, when each finished,
    and the most seen unfinished at once."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.added: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.peak_unfinished = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopped = threading.Event()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self.ready.wait(30):
            raise SystemExit("the Job watch did not start")

    def _run(self) -> None:
        watch_jobs(self.namespace, self._event, self.ready, self.stopped)

    def _event(self, event: dict[str, Any], t: float) -> None:
        job = event["object"]
        if event["type"] not in ("ADDED", "MODIFIED"):
            return
        name = job["metadata"]["name"]
        conditions = (job.get("status") or {}).get("conditions") or ()
        done = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in conditions
        )
        with self.changed:
            self.added.setdefault(name, t)
            if done:
                self.finished.setdefault(name, t)
            self.peak_unfinished = max(self.peak_unfinished, len(self.added) - len(self.finished))
            self.changed.notify_all()

    def stop(self) -> None:
        self.stopped.set()


# --- the floor: a bare windowed controller ---------------------------------------------


def run_floor(
    api: Any,
    namespace: str,
    nodes: list[dict[str, Any]],
    spec: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Create one Job per node, at most ``parallelism`` unfinished, as fast as a watch allows."""
    batch = kubernetes.client.BatchV1Api(api)
    settings = OperatorSettings.from_env(os.environ)
    owner = {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.UNLOCK_KIND,
        "metadata": {"name": "floor", "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": spec,  # the operator's ImageUnlock's: the same tolerations, the same Jobs
    }
    parallelism = int(spec["parallelism"])
    manifests = []
    for node in nodes:
        info = node_info(node)
        job = build_unlock_job(owner, info, settings, choose_runtime(owner["spec"], info, settings))
        del job["metadata"]["ownerReferences"]  # no owner object: the garbage collector would act
        manifests.append(job)
    timeline = JobTimeline(namespace)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        sent = 0
        with timeline.changed:
            while len(timeline.finished) < len(manifests):
                unfinished = sent - len(timeline.finished)
                if sent < len(manifests) and unfinished < parallelism:
                    for job in manifests[sent : sent + parallelism - unfinished]:
                        pool.submit(
                            lambda j: (
                                batch.create_namespaced_job(
                                    namespace, j, _preload_content=False
                                ).data
                            ),
                            job,
                        )
                    sent = min(len(manifests), sent + parallelism - unfinished)
                if time.monotonic() - start > timeout:
                    raise SystemExit(f"floor: not done after {timeout:.0f} s")
                timeline.changed.wait(1)
    timeline.stop()
    return {
        "last_job": max(timeline.added.values()) - start,
        "all_done": max(timeline.finished.values()) - start,
        "peak_unfinished": timeline.peak_unfinished,
        "jobs": len(timeline.added),
    }


# --- the operator ----------------------------------------------------------------------


def unlock_body(run_id: str, parallelism: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.UNLOCK_KIND,
        "metadata": {"name": "fleet"},
        "spec": {
            "archive": {"folder": "images", "name": "bench"},
            "nodeSelector": {BENCH_LABEL: run_id},
            "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists"}],
            "parallelism": parallelism,
            "runtime": "auto",
        },
    }


def counters_exact(status: dict[str, Any], nodes: int, job_names: set[str]) -> list[str]:
    """What is wrong with a final status (empty: all exact)."""
    wrong = []
    for key, want in (("desired", nodes), ("succeeded", nodes), ("active", 0), ("failed", 0)):
        if status.get(key) != want:
            wrong.append(f"{key}={status.get(key)} (want {want})")
    if status.get("progress") != f"{nodes}/{nodes}":
        wrong.append(f"progress={status.get('progress')}")
    items = status.get("nodes") or []
    if len(items) != nodes or len({i["name"] for i in items}) != nodes:
        wrong.append(f"{len(items)} node entries")
    if any(i.get("phase") != "Succeeded" for i in items):
        wrong.append(f"{sum(i.get('phase') != 'Succeeded' for i in items)} entries not Succeeded")
    if {i.get("jobName") for i in items} != job_names:
        wrong.append("node entries do not name exactly the Jobs that exist")
    if status.get("phase") != "Succeeded":
        wrong.append(f"phase={status.get('phase')}")
    return wrong


def run_operator(
    api: Any, namespace: str, run_id: str, nodes: int, parallelism: int, proc: Any, timeout: float
) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    batch = kubernetes.client.BatchV1Api(api)
    timeline = JobTimeline(namespace)
    before = proc_status(proc.pid)
    start = time.monotonic()
    custom.create_namespaced_custom_object(
        crd.GROUP, crd.VERSION, namespace, crd.UNLOCK_PLURAL, unlock_body(run_id, parallelism)
    )

    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(
            crd.GROUP, crd.VERSION, namespace, crd.UNLOCK_PLURAL, "fleet"
        )
        return dict(body.get("status") or {})

    def succeeded() -> bool:
        if (s := status()).get("phase") in ("Succeeded", "Failed"):
            return True
        if time.monotonic() - start > timeout:
            raise SystemExit(f"operator: status after {timeout:.0f} s: {s.get('message')}")
        return False

    wait_for("the ImageUnlock to finish", succeeded, timeout + 5, 0.25)
    done_at = time.monotonic() - start
    time.sleep(5)  # the follow-ups that the last Jobs' completion triggers
    after = proc_status(proc.pid)
    timeline.stop()
    final = status()
    jobs = {j.metadata.name for j in batch.list_namespaced_job(namespace).items}
    return {
        "last_job": max(timeline.added.values()) - start,
        "all_done": max(timeline.finished.values()) - start,
        "status_done": done_at,
        "peak_unfinished": timeline.peak_unfinished,
        "jobs": len(jobs),
        "wrong": counters_exact(final, nodes, jobs),
        "message": final.get("message"),
        "rss_before": before["VmRSS"] / 1024,
        "rss_peak": after["VmHWM"] / 1024,
        "cpu": (after["cpu_ticks"] - before["cpu_ticks"]) / os.sysconf("SC_CLK_TCK"),
    }


# --- cleanup ---------------------------------------------------------------------------


def delete_namespace(core: Any, namespace: str) -> None:
    with contextlib.suppress(ApiException):
        core.delete_namespace(namespace)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"namespace {namespace} to go", gone, 300, 1)


def new_namespace(core: Any, name: str, run_id: str) -> None:
    core.create_namespace({"metadata": {"name": name, "labels": {"azl-bench": run_id}}})
    core.create_namespaced_secret(
        name,
        {
            "metadata": {"name": "azaion-loader-credentials"},
            "stringData": {"email": "bench@example.com", "password": "not-a-real-one"},
        },
    )


# --- report ---------------------------------------------------------------------------


def report(args: Any, sides: list[tuple[str, list[dict]]], joins: dict[str, dict]) -> str:
    """A table with one column per side (medians, and every run)."""

    def yes(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def cell(rows: list[dict], key: str, fmt: str = "{:.1f}") -> str:
        if not rows or any(key not in r for r in rows):
            return "-"
        values = [r[key] for r in rows]
        runs = ", ".join(fmt.format(v) for v in values)
        return runs if len(values) == 1 else f"{fmt.format(statistics.median(values))} ({runs})"

    rows = [
        ("apply -> last Job created, s", "last_job", "{:.1f}"),
        ("apply -> every Job finished, s", "all_done", "{:.1f}"),
        ("apply -> status Succeeded, s", "status_done", "{:.1f}"),
        ("most Jobs unfinished at once", "peak_unfinished", "{}"),
        ("Jobs created", "jobs", "{}"),
        ("CPU (user+sys) apply -> end, s", "cpu", "{:.1f}"),
        ("RSS before apply, MiB", "rss_before", "{:.0f}"),
        ("peak RSS (VmHWM, incl. the nodes joining), MiB", "rss_peak", "{:.0f}"),
        ("kube-controller-manager: requests", "controller-manager requests", "{:.0f}"),
        ("... waited on its client rate limit, s", "controller-manager wait", "{:.1f}"),
        ("kube-scheduler: requests", "scheduler requests", "{:.0f}"),
        ("... waited on its client rate limit, s", "scheduler wait", "{:.1f}"),
    ]
    lines = [
        f"| {args.nodes} nodes, parallelism {args.parallelism}, pods run {args.job_ms} ms "
        + "".join(f"| {name} " for name, _ in sides)
        + "|",
        "|---" * (len(sides) + 1) + "|",
    ]
    for label, key, fmt in rows:
        lines.append(f"| {label} " + "".join(f"| {cell(r, key, fmt)} " for _, r in sides) + "|")
    verdicts = []
    for name, runs in sides:
        for op in runs:
            if "wrong" not in op:
                continue
            exact = "exact" if not op["wrong"] else "**wrong: " + "; ".join(op["wrong"]) + "**"
            in_time = yes(op["last_job"] < TARGETS["last_job"])
            small = yes(op["rss_peak"] <= TARGETS["rss"])
            kept = yes(op["peak_unfinished"] <= args.parallelism)
            verdicts.append(
                f"{name}: last Job {op['last_job']:.1f} s (< {TARGETS['last_job']:.0f} s: "
                f"{in_time}), counters {exact}, peak RSS {op['rss_peak']:.0f} MiB "
                f"(<= {TARGETS['rss']:.0f}: {small}), parallelism kept: {kept}"
            )
    joined = "; ".join(
        f"{name}: CPU {j['cpu']:.1f} s, RSS {j['rss']:.0f} MiB after" for name, j in joins.items()
    )
    ready = next(iter(joins.values()))["ready"] if joins else float("nan")
    return (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {v}" for v in verdicts)
        + f"\n\n{args.nodes} nodes joining (Ready after {ready:.1f} s), with the operators "
        f"running: {joined}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--parallelism", type=int, default=50)
    parser.add_argument("--job-ms", type=int, default=1000, help="how long a simulated pod runs")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternated")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per side")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        help="also run the operator package found in DIR (e.g. the last commit's)",
    )
    parser.add_argument("--py-spy", metavar="FILE", help="record the operator (collapsed stacks)")
    parser.add_argument(
        "--control-plane",
        default="azl-kind-control-plane",
        help="the kind control-plane node's container (client-side throttling is read there)",
    )
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print('KUBECONFIG is unset: eval "$(scripts/kind-node-image env)" first', file=sys.stderr)
        return 2
    build_kwok()  # before anything is created: a cold build takes minutes

    api = connect(32)
    core = kubernetes.client.CoreV1Api(api)
    run_id = uuid.uuid4().hex[:6]
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="azl-bench-nodes-"))
    command = ".venv/bin/python bench/operator_nodes.py " + shlex.join(sys.argv[1:])
    # A side: its name, the operator package (None: this checkout; FLOOR: no operator).
    sides: list[tuple[str, str | None]] = [("operator", None)]
    if args.compare_source:
        sides.insert(0, (f"operator from {args.compare_source}", args.compare_source))
    if not args.skip_floor:
        sides.insert(0, ("floor", FLOOR))
    spaces = {
        (v, k): f"azl-bench-{run_id}-{v}-{k}" for v in range(len(sides)) for k in range(args.rounds)
    }
    load_before = os.getloadavg()
    kwok = spy = None
    procs: dict[int, Any] = {}
    results: dict[int, list[dict]] = {v: [] for v in range(len(sides))}
    joins: dict[str, dict] = {}
    with interruptible():
        try:
            ensure_crds(api)
            kwok = KwokWatchdog(run_id, args.job_ms, logdir)
            for ns in spaces.values():
                new_namespace(core, ns, run_id)
            # The operators run before the Nodes join, as in a cluster that grows.
            for v, (_, source) in enumerate(sides):
                if source == FLOOR:
                    continue
                mine = ",".join(ns for (w, _), ns in spaces.items() if w == v)
                procs[v] = start_operator(
                    mine,
                    logdir / f"operator-{v}.log",
                    None,
                    source,
                    extra_env={"AZAION_OPERATOR_POLICY_IMAGE_UNLOCK_NAMESPACES": mine},
                )
            time.sleep(2)
            before_join = {v: proc_status(p.pid) for v, p in procs.items()}
            t0 = time.monotonic()
            names = [f"azl-kwok-{run_id}-{i:04d}" for i in range(args.nodes)]
            parallel(args.nodes, 16, lambda i: core.create_node(node_body(names[i], run_id)))
            wait_for(
                "the simulated nodes Ready",
                lambda: ready_nodes(core, run_id) >= args.nodes,
                300,
                1,
            )
            ready_at = time.monotonic() - t0
            time.sleep(10)  # the operators' node events settle
            for v, p in procs.items():
                after_join = proc_status(p.pid)
                ticks = after_join["cpu_ticks"] - before_join[v]["cpu_ticks"]
                joins[sides[v][0]] = {
                    "ready": ready_at,
                    "cpu": ticks / os.sysconf("SC_CLK_TCK"),
                    "rss": after_join["VmRSS"] / 1024,
                }
            print(f"nodes joined: {joins}", file=sys.stderr)
            nodes = json.loads(
                core.list_node(
                    label_selector=f"{BENCH_LABEL}={run_id}", _preload_content=False
                ).data
            )["items"]
            ours = next(v for v, (_, source) in enumerate(sides) if source is None)
            if args.py_spy:
                spy = start_py_spy(procs[ours].pid, args.py_spy)
            for k in range(args.rounds):
                # Rotate which side goes first, so drift in the machine's load is shared.
                order = list(range(len(sides)))
                order = order[k % len(order) :] + order[: k % len(order)]
                for v in order:
                    name, source = sides[v]
                    limits_before = throttled(args.control_plane)
                    if source == FLOOR:
                        spec = unlock_body(run_id, args.parallelism)["spec"]
                        result = run_floor(api, spaces[v, k], nodes, spec, args.timeout)
                    else:
                        result = run_operator(
                            api,
                            spaces[v, k],
                            run_id,
                            args.nodes,
                            args.parallelism,
                            procs[v],
                            args.timeout,
                        )
                    waits = throttled_since(args.control_plane, limits_before)
                    for component in COMPONENTS:
                        if f"{component} wait" in waits:
                            result[f"{component} wait"] = waits[f"{component} wait"]
                            result[f"{component} requests"] = waits[f"{component} requests"]
                    print(f"{name} {k}: {result}", file=sys.stderr)
                    results[v].append(result)
                    delete_namespace(core, spaces[v, k])
            load_after = os.getloadavg()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            for p in procs.values():
                stop_process(p)
            for ns in spaces.values():
                with contextlib.suppress(ApiException):
                    core.delete_namespace(ns)
            for ns in spaces.values():
                delete_namespace(core, ns)  # kwok deletes the pods on its nodes
            delete_nodes(core, run_id)
            if kwok is not None:
                kwok.stop()
                if kwok.restarts:
                    print(f"kwok was restarted {kwok.restarts} time(s)", file=sys.stderr)
    print(f"\n```sh\n{command}\n```\n")
    print(report(args, [(name, results[v]) for v, (name, _) in enumerate(sides)], joins))
    print(f"\n{load_average(load_before, load_after)} Logs: {logdir}")
    wrong = [r for rows in results.values() for r in rows if r.get("wrong")]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
