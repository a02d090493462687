"""Benchmark: the operator turning N `Resource` objects into Jobs, beside a plain client.

    eval "$(scripts/kind-node-image env)"
    .venv/bin/python bench/operator_resources.py                 # --count 200 --threads 16
    # A/B in one run against another copy of the operator package (e.g. the last commit):
    git archive HEAD operator/azaion_operator | tar -x -C /tmp/head
    .venv/bin/python bench/operator_resources.py --compare-source /tmp/head/operator

Against the cluster in ``KUBECONFIG`` (the CRDs are created if missing, never
changed or removed).  Everything else is the benchmark's own and is removed:
a fake Ready Node ``azl-bench-node-<id>`` (no kubelet: its Lease is renewed by
this script, so it stays Ready; pods bound to it stay Pending and are
force-deleted), namespaces ``azl-bench-<id>-<k>`` (one per run, deleted as
soon as that run is measured, so the next run starts on an equally clean
cluster) and ``azl-bench-<id>-raw`` (baseline), and the operator
processes, each watching only its own namespace.

- baseline: the same Job manifests (``build_resource_job``, owner reference
  removed) created directly through the API by ``--threads`` threads: the floor
  the operator can approach.
- floor: a bare controller as a child process (``--serve-floor``): one watch on
  Resources, and for each ADDED the same Job created by ``--threads`` threads;
  no status, no Events, no framework.  What any controller needs at least on
  this machine (the Resource's create, its watch event, the Job's create), so
  the gap between floor and operator is the operator's own cost.
- kopf floor (``--kopf-floor``): ``kopf run bench/kopf_floor.py``, one create
  handler creating the same Job, kopf tuned as the operator: kopf's own cost.
- operator: ``azaion-operator`` as a child process (its defaults unless
  ``--workers``; INFO logs to a file); ``--count`` hostPath ``Resource``
  objects pinned to the fake node, created by ``--threads`` threads at once.

Per object, "apply -> Job" is from the moment the client sends the create
request to the moment a watch on Jobs (raw event stream, no model objects)
sees the Job ADDED, both on this process's monotonic clock; the server-side
creationTimestamps (1 s resolution) are shown too.  "All Jobs exist" is from
the first request sent to the last Job seen.  Peak RSS is the operator's
VmHWM (/proc/<pid>/status), read after the burst and the follow-up reconciles
(each Job's pod appearing) have settled; CPU is its user+system time over the
same span.  ``--py-spy FILE`` records the operator with py-spy (GIL samples,
collapsed stacks) when py-spy is on PATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import math
import os
import pathlib
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from azaion_operator.kinds.resource import build_resource_job
from azaion_operator.nodes import node_info
from azaion_operator.settings import OperatorSettings
from kube_watch import watch_jobs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hack"))
import polling  # hack/: the stdlib helpers the tests share with the benchmarks

ROOT = pathlib.Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "loader.azaion.com", "v1alpha1", "resources"
MANAGED = "app.kubernetes.io/managed-by=azaion-operator"
OWNER_NAME = "loader.azaion.com/owner-name"
TARGETS = {"all": 30.0, "median": 1.0, "rss": 150.0}
FLOOR = "floor"  # a variant's source: the bare controller, not an operator package
KOPF_FLOOR = "kopf-floor"  # ... kopf with one create handler (bench/kopf_floor.py)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """``polling.wait_for``: a time-out ends the benchmark with its message (SystemExit)."""
    return polling.wait_for(what, check, timeout, every, error=SystemExit)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB and CPU seconds (user+system) of a process."""
    out: dict[str, int] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return out


# --- cluster objects ---------------------------------------------------------------


def connect(pool_size: int) -> Any:
    """An API client for ``KUBECONFIG`` whose pool holds ``pool_size`` connections
    (every client thread keeps its own: a smaller pool would queue the creates)."""
    kubernetes.config.load_kube_config()
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = pool_size
    kubernetes.client.Configuration.set_default(config)
    return kubernetes.client.ApiClient()


def ensure_crds(api: Any) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def established() -> bool:
        for name in names:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for("CRDs established", established, 30)


BENCH_TAINT = {"key": "azaion.com/bench-fake-node", "value": "true", "effect": "NoSchedule"}


class FakeNode:
    """A Ready Node without a kubelet; its Lease is renewed so it stays Ready."""

    def __init__(self, api: Any, name: str, label: tuple[str, str]) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.coord = kubernetes.client.CoordinationV1Api(api)
        self.name, self.label = name, label
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def create(self) -> dict[str, Any]:
        node = self.core.create_node(
            {
                "metadata": {
                    "name": self.name,
                    "labels": {"kubernetes.io/os": "linux", self.label[0]: self.label[1]},
                },
                # Only the benchmark's own Resources tolerate this: no other pod
                # (an operator, a demo Job) may be scheduled onto a node with no kubelet.
                "spec": {"taints": [BENCH_TAINT]},
            }
        )
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "fake node of bench/operator_resources.py",
            "lastHeartbeatTime": now_iso(),
            "lastTransitionTime": now_iso(),
        }
        room = {"cpu": "1000", "memory": "4Ti", "pods": "2000", "ephemeral-storage": "4Ti"}
        self.core.patch_node_status(
            self.name,
            {
                "status": {
                    "conditions": [ready],
                    "capacity": room,
                    "allocatable": room,
                    "nodeInfo": {
                        "machineID": uuid.uuid4().hex,
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "bootID": "",
                        "containerRuntimeVersion": "",
                        "kernelVersion": "",
                        "kubeProxyVersion": "",
                        "kubeletVersion": "",
                        "osImage": "",
                        "systemUUID": "",
                    },
                }
            },
        )
        owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node.metadata.uid}
        self.coord.create_namespaced_lease(
            "kube-node-lease",
            {
                "metadata": {"name": self.name, "ownerReferences": [owner]},
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": 40,
                    "renewTime": self._micro(),
                },
            },
        )
        self.thread = threading.Thread(target=self._renew, daemon=True)
        self.thread.start()
        return dict(
            kubernetes.client.ApiClient().sanitize_for_serialization(self.core.read_node(self.name))
        )

    @staticmethod
    def _micro() -> str:
        return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _renew(self) -> None:
        while not self.stop.wait(5):
            with contextlib.suppress(Exception):
                self.coord.patch_namespaced_lease(
                    self.name, "kube-node-lease", {"spec": {"renewTime": self._micro()}}
                )

    def delete(self) -> None:
        self.stop.set()
        with contextlib.suppress(ApiException):
            self.coord.delete_namespaced_lease(self.name, "kube-node-lease")
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)


def resource_body(name: str, label: tuple[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": {
            "source": {"folder": "models", "name": "detector.onnx"},
            "target": {"fileName": f"{name}.onnx", "hostPath": {"path": "/var/lib/azl-bench"}},
            "nodeSelector": {label[0]: label[1]},
            "tolerations": [
                {"key": BENCH_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    }


# --- watching Jobs -------------------------------------------------------------------


class JobWatch:
    """Records when a watch first sees each Job ADDED (monotonic), keyed by its owner-name label.

    Reads the raw event stream (no model objects), so the observer costs little CPU.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> JobWatch:
        self.thread.start()
        if not self.ready.wait(30):
            raise SystemExit("the Job watch did not start")
        return self

    def _run(self) -> None:
        watch_jobs(self.namespace, self._event, self.ready, self.stopped)

    def _event(self, event: dict[str, Any], t: float) -> None:
        if event["type"] == "ADDED":
            with self.lock:
                self.seen.setdefault(event["object"]["metadata"]["labels"][OWNER_NAME], t)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def stop(self) -> None:
        self.stopped.set()


def create_all(
    n: int, threads: int, create: Callable[[int], Any]
) -> tuple[float, dict[int, float], dict[int, Any]]:
    """Run ``create(i)`` for i < n on ``threads`` threads; start time, send times, results."""
    sent: dict[int, float] = {}
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        sent[i] = time.monotonic()
        results[i] = create(i)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(one, i) for i in range(n)]:
            future.result()
    return start, sent, results


def stats(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def pods_bound(core: Any, namespace: str, n: int) -> bool:
    pods = core.list_namespaced_pod(namespace).items
    return len(pods) >= n and all(p.spec.node_name for p in pods)


# --- the floor: a bare watch-and-create controller -----------------------------------------


def serve_floor(namespace: str, node_name: str, threads: int) -> int:
    """Create each new Resource's Job, nothing else; prints ``ready`` once watching."""
    api = connect(threads)
    custom = kubernetes.client.CustomObjectsApi(api)
    batch = kubernetes.client.BatchV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    node = json.loads(core.read_node(node_name, _preload_content=False).data)
    info, settings = node_info(node), OperatorSettings.from_env(os.environ)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    version = listed["metadata"]["resourceVersion"]

    def create(body: dict[str, Any]) -> None:
        job = build_resource_job(body, info, settings)
        # Read to the end: the connection goes back to the pool.
        batch.create_namespaced_job(namespace, job, _preload_content=False).read()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        while True:
            response = custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=300,
                _preload_content=False,
            )
            print("ready", flush=True)
            for line in response:
                event = json.loads(line)
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    pool.submit(create, event["object"])


def start_floor(namespace: str, node_name: str, threads: int, log_path: pathlib.Path) -> Any:
    """``serve_floor`` in a child process, once its watch is open."""
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--threads",
            str(threads),
            "--serve-floor",
            namespace,
            node_name,
        ],
        stdout=subprocess.PIPE,
        stderr=log_path.open("ab"),
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the floor controller did not start; see {log_path}")
    return proc


# --- the runs ---------------------------------------------------------------------------


def run_baseline(
    api: Any, namespace: str, node: dict[str, Any], n: int, threads: int, settings: Any
) -> dict[str, Any]:
    batch = kubernetes.client.BatchV1Api(api)
    info = node_info(node)
    label = ("azl-bench", "raw")
    manifests = []
    for i in range(n):
        body = resource_body(f"raw-{i:03d}", label)
        body["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1)
        job = build_resource_job(body, info, settings)
        del job["metadata"]["ownerReferences"]  # no owner: the garbage collector would act
        manifests.append(job)
    watch = JobWatch(namespace).start()
    start, sent, _ = create_all(
        n,
        threads,
        lambda i: (
            batch.create_namespaced_job(namespace, manifests[i], _preload_content=False).data
        ),  # read to the end: the connection goes back to the pool
    )
    wait_for("baseline Jobs seen", lambda: watch.count() >= n, 120, 0.05)
    watch.stop()
    lat = [watch.seen[f"raw-{i:03d}"] - sent[i] for i in range(n)]
    return {
        "all": max(watch.seen.values()) - start,
        "applied": max(sent.values()) - start,
        **stats(lat),
    }


def start_operator(
    namespace: str,
    log_path: pathlib.Path,
    workers: int | None,
    source: str | None,
    *,
    extra_env: dict[str, str] | None = None,
    kopf_file: pathlib.Path | None = None,
) -> Any:
    """``azaion-operator`` watching ``namespace`` (a comma-separated list);
    ``source``: another copy of its package; ``extra_env``: more settings;
    ``kopf_file``: ``kopf run`` that file instead (with the same settings)."""
    port = free_port()
    env = {
        **os.environ,
        "AZAION_OPERATOR_NAMESPACES": namespace,
        "AZAION_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
        # The admin policy refuses a Resource with no API URL at all (the Jobs never run).
        "AZAION_OPERATOR_API_URL": "https://api.bench.invalid",
        # ... and hostPath targets outside the admin's prefixes (none by default).
        "AZAION_OPERATOR_POLICY_HOST_PATH_PREFIXES": "/var/lib/azl-bench",
        # No metrics server: two operators (or another bench) would fight over its port.
        "AZAION_OPERATOR_METRICS_PORT": "0",
        **(extra_env or {}),
    }
    if source:
        env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if workers:
        env["AZAION_OPERATOR_WORKERS"] = str(workers)
    out = log_path.open("ab")
    argv = [sys.executable, "-m", "azaion_operator.main"]
    if kopf_file is not None:
        argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace]
        argv += ["--liveness", f"http://127.0.0.1:{port}/healthz", str(kopf_file)]
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"the operator exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for("the operator's liveness endpoint", healthy, 60)
    except BaseException:
        stop_process(proc)  # never leave it behind
        raise
    return proc


def run_operator(
    api: Any,
    namespace: str,
    label: tuple[str, str],
    n: int,
    threads: int,
    proc: Any,
    *,
    writes_status: bool = True,
) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    batch = kubernetes.client.BatchV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    idle = proc_status(proc.pid)
    watch = JobWatch(namespace).start()
    names = [f"res-{i:03d}" for i in range(n)]
    start, sent, created = create_all(
        n,
        threads,
        lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, resource_body(names[i], label)
        ),
    )
    applied = max(sent.values()) - start
    wait_for("the operator's Jobs", lambda: watch.count() >= n, 120, 0.05)
    watch.stop()
    all_jobs = max(watch.seen.values()) - start

    def statuses() -> bool:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return len(items) >= n and all((i.get("status") or {}).get("jobName") for i in items)

    if writes_status:
        wait_for("every status written", statuses, 120, 0.5)
    status_at = time.monotonic() - start if writes_status else float("nan")
    wait_for("every Job's pod bound", lambda: pods_bound(core, namespace, n), 180, 1)
    time.sleep(5)  # the reconciles that the pods' appearance triggers
    busy = proc_status(proc.pid)

    lat = [watch.seen[names[i]] - sent[i] for i in range(n)]
    cr_time = {r["metadata"]["name"]: r["metadata"]["creationTimestamp"] for r in created.values()}
    server = []
    for job in batch.list_namespaced_job(namespace).items:
        owner = job.metadata.labels[OWNER_NAME]
        cr = datetime.datetime.fromisoformat(cr_time[owner].replace("Z", "+00:00"))
        server.append((job.metadata.creation_timestamp - cr).total_seconds())
    return {
        "all": all_jobs,
        "applied": applied,
        "statuses": status_at,
        **stats(lat),
        "server_median": statistics.median(server),
        "server_max": max(server),
        "rss_idle": idle["VmRSS"] / 1024,
        "rss_peak": busy["VmHWM"] / 1024,
        "cpu": (busy["cpu_ticks"] - idle["cpu_ticks"]) / os.sysconf("SC_CLK_TCK"),
    }


def stop_process(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# --- cleanup -------------------------------------------------------------------------------


def delete_namespaces(api: Any, namespaces: list[str]) -> None:
    """Delete the namespaces; pods bound to the fake node need a forced delete (no kubelet)."""
    core = kubernetes.client.CoreV1Api(api)
    for ns in namespaces:
        with contextlib.suppress(ApiException):
            core.delete_namespace(ns)

    def gone() -> bool:
        left = False
        for ns in namespaces:
            try:
                core.read_namespace(ns)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            left = True
            with contextlib.suppress(ApiException):
                core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
        return not left

    wait_for("the benchmark's namespaces to go", gone, 300, 2)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the cleanup runs."""

    def raise_interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def start_py_spy(pid: int, out: str) -> Any:
    """py-spy recording ``pid`` (GIL samples, collapsed stacks) into ``out``; SIGINT stops it."""
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--format", "raw"),
            *("--gil", "--rate", "100", "-o", out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # attached before the measured span starts
    return spy


# --- report ------------------------------------------------------------------------------


def load_average(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """The machine's load around the run, for judging how far the numbers can be trusted."""
    return (
        f"Load average (1/5/15 min) before {before[0]:.2f} {before[1]:.2f} "
        f"{before[2]:.2f}, after {after[0]:.2f} {after[1]:.2f} "
        f"{after[2]:.2f}; {os.cpu_count()} CPUs."
    )


def table(n: int, threads: int, base: dict[str, Any], ops: list[tuple[str, dict]]) -> str:
    def ok(value: float, target: float) -> str:
        return "yes" if value < target else "**no**"

    rows = [
        "| | all Jobs exist | apply -> Job median | p95 | max | requests sent in | peak RSS |",
        "|---|---|---|---|---|---|---|",
        f"| baseline: plain client creates {n} Jobs ({threads} threads) "
        f"| {base['all']:.2f} s | {base['median'] * 1000:.0f} ms | {base['p95'] * 1000:.0f} ms "
        f"| {base['max'] * 1000:.0f} ms | {base['applied']:.2f} s | - |",
    ]
    for name, op in ops:
        rows.append(
            f"| {name}: {n} Resources applied ({threads} threads) "
            f"| {op['all']:.2f} s | {op['median'] * 1000:.0f} ms | {op['p95'] * 1000:.0f} ms "
            f"| {op['max'] * 1000:.0f} ms | {op['applied']:.2f} s | {op['rss_peak']:.1f} MiB |"
        )
    op = ops[-1][1]
    rows.append(
        f"| target ({ops[-1][0]}) | < {TARGETS['all']:.0f} s: {ok(op['all'], TARGETS['all'])} "
        f"| < {TARGETS['median'] * 1000:.0f} ms: {ok(op['median'], TARGETS['median'])} | | | "
        f"| < {TARGETS['rss']:.0f} MiB: {ok(op['rss_peak'], TARGETS['rss'])} |"
    )

    def statuses(op: dict[str, Any]) -> str:
        if math.isnan(op["statuses"]):
            return "writes no status"
        return f"every status written after {op['statuses']:.2f} s"

    extra = [
        f"{name}: idle RSS {op['rss_idle']:.1f} MiB; CPU {op['cpu']:.1f} s for the burst and "
        f"the follow-up reconciles; {statuses(op)}; "
        f"server-side creationTimestamp Job - Resource (1 s resolution): median "
        f"{op['server_median']:.0f} s, max {op['server_max']:.0f} s."
        for name, op in ops
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="Resources (and baseline Jobs)")
    parser.add_argument("--threads", type=int, default=16, help="client threads applying them")
    parser.add_argument("--workers", type=int, default=None, help="AZAION_OPERATOR_WORKERS")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare controller")
    parser.add_argument(
        "--kopf-floor",
        action="store_true",
        help="also run kopf with one create handler (bench/kopf_floor.py): kopf's own cost",
    )
    parser.add_argument(
        "--serve-floor", nargs=2, metavar=("NAMESPACE", "NODE"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        help="also run the operator package found in DIR (e.g. an older version), first",
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record the operator with py-spy (collapsed stacks)"
    )
    args = parser.parse_args()
    if args.serve_floor:
        floor_namespace, floor_node = args.serve_floor
        return serve_floor(floor_namespace, floor_node, args.threads)
    if not os.environ.get("KUBECONFIG"):
        print('KUBECONFIG is unset: eval "$(scripts/kind-node-image env)" first', file=sys.stderr)
        return 2

    api = connect(max(args.threads, 4))
    core = kubernetes.client.CoreV1Api(api)

    run_id = uuid.uuid4().hex[:6]
    variants: list[tuple[str, str | None]] = [("operator", None)]
    if args.compare_source:
        variants.insert(0, (f"operator from {args.compare_source}", args.compare_source))
    if args.kopf_floor:
        variants.insert(0, ("kopf floor: one create handler", KOPF_FLOOR))
    if not args.no_floor:
        variants.insert(0, ("floor: bare watch-and-create controller", FLOOR))
    namespaces = [f"azl-bench-{run_id}-{k}" for k in range(len(variants))]
    ns_raw = f"azl-bench-{run_id}-raw"
    label = ("azl-bench/node", run_id)
    node = FakeNode(api, f"azl-bench-node-{run_id}", label)
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="azl-bench-"))
    command = (
        'eval "$(scripts/kind-node-image env)"; .venv/bin/python bench/operator_resources.py '
        + (shlex.join(sys.argv[1:]))
    )
    load_before = os.getloadavg()
    proc = None
    spy = None
    base: dict[str, Any] = {}
    ops: list[tuple[str, dict]] = []
    with interruptible():
        try:
            ensure_crds(api)
            node_body = node.create()
            for ns in [*namespaces, ns_raw]:
                core.create_namespace({"metadata": {"name": ns, "labels": {"azl-bench": run_id}}})
            for ns in namespaces:
                core.create_namespaced_secret(
                    ns,
                    {
                        "metadata": {"name": "azaion-loader-credentials"},
                        "stringData": {"email": "bench@example.com", "password": "not-a-real-one"},
                    },
                )
            settings = OperatorSettings.from_env(os.environ)
            if not args.no_baseline:
                base = run_baseline(api, ns_raw, node_body, args.count, args.threads, settings)
                print(f"baseline: {base}", file=sys.stderr)
                wait_for(
                    "baseline pods bound", lambda: pods_bound(core, ns_raw, args.count), 180, 1
                )
                delete_namespaces(api, [ns_raw])
                time.sleep(3)
            for (name, source), ns in zip(variants, namespaces, strict=True):
                log_path = logdir / f"{ns}.log"
                if source == FLOOR:
                    proc = start_floor(ns, node.name, args.threads, log_path)
                elif source == KOPF_FLOOR:
                    proc = start_operator(
                        ns,
                        log_path,
                        args.workers,
                        None,
                        extra_env={"AZL_BENCH_NODE": node.name},
                        kopf_file=ROOT / "bench" / "kopf_floor.py",
                    )
                    time.sleep(2)
                else:
                    proc = start_operator(ns, log_path, args.workers, source)
                    time.sleep(2)
                    if args.py_spy and source is None:
                        spy = start_py_spy(proc.pid, args.py_spy)
                # Neither floor writes a status: only an operator is waited on for one.
                writes_status = source not in (FLOOR, KOPF_FLOOR)
                op = run_operator(
                    api, ns, label, args.count, args.threads, proc, writes_status=writes_status
                )
                op["log"] = str(log_path)
                print(f"{name}: {op}", file=sys.stderr)
                ops.append((name, op))
                stop_process(proc)
                proc = None
                delete_namespaces(api, [ns])  # the next variant starts on a clean cluster
            load_after = os.getloadavg()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            if proc is not None:
                stop_process(proc)
            delete_namespaces(api, [*namespaces, ns_raw])
            node.delete()
    if not base:
        base = {k: float("nan") for k in ("all", "applied", "median", "p95", "max")}
    print(f"\n```sh\n{command}\n```\n")
    print(table(args.count, args.threads, base, ops))
    print(f"\n{load_average(load_before, load_after)} Operator logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
