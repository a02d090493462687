"""Where a py-spy profile's samples go: shares of the operator's CPU by layer.

    .venv/bin/python bench/profile_summary.py PROFILE [--top 25]

PROFILE is what ``py-spy record --format raw`` wrote (``bench/operator_resources.py
--py-spy`` and ``bench/operator_nodes.py --py-spy`` record with ``--gil``, so each
sample is a moment the interpreter ran Python code: CPU, not waiting).  Each
line is one stack (frames separated by ``;``, outermost first) and its count.

Prints two tables: the share of samples whose stack passes through each layer
(inclusive, so they overlap: an API call made by our reconcile counts for both),
and the functions where samples end (self time), the top ``--top``.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

# (label, pattern on one frame "function (file:line)"); the first match per
# category counts a sample once.
LAYERS = [
    ("kopf: watch streams (reading, JSON)", r"kopf/_cogs/clients/watching\.py"),
    ("kopf: queueing and batching of events", r"kopf/_core/reactor/queueing\.py"),
    ("kopf: processing (causes, diffs, progress)", r"kopf/_core/reactor/processing\.py"),
    ("kopf: handler invocation", r"kopf/_core/actions/(execution|invocation)\.py"),
    ("kopf: its own API writes (patches, Events)", r"kopf/_cogs/clients/(patching|events)\.py"),
    ("kopf: Event posting queue", r"kopf/_core/engines/posting\.py"),
    ("kopf: indexing (node index)", r"kopf/_core/engines/indexing\.py"),
    ("aiohttp (kopf's HTTP)", r"aiohttp/"),
    ("our handlers (handlers.py)", r"azaion_operator/handlers\.py"),
    ("our reconcile (kinds/, reconcile.py)", r"azaion_operator/(kinds/|reconcile\.py)"),
    ("our status building (status.py)", r"azaion_operator/status\.py"),
    ("our API client (kube.py)", r"azaion_operator/kube\.py"),
    ("our metrics (metrics.py)", r"azaion_operator/metrics\.py"),
    ("kubernetes client library", r"kubernetes/client/"),
    ("urllib3 (the kubernetes client's HTTP)", r"urllib3/"),
    ("ssl", r"\bssl\.py"),
    ("json", r"json/"),
    ("logging", r"logging/"),
    ("copy.deepcopy", r"copy\.py"),
    ("thread pools (concurrent.futures, threading)", r"concurrent/futures/|threading\.py"),
    ("asyncio event loop", r"asyncio/"),
]


def parse(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks.append((stack.split(";"), int(count)))
    return stacks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stacks = parse(args.profile)
    total = sum(c for _, c in stacks)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    compiled = [(label, re.compile(p)) for label, p in LAYERS]
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        for label, pattern in compiled:
            if any(pattern.search(f) for f in frames):
                layers[label] += count
        leaves[frames[-1]] += count
    print(f"{total} samples (GIL held)\n")
    print("| layer (inclusive) | share |\n|---|---|")
    for label, _ in LAYERS:
        if layers[label]:
            print(f"| {label} | {100 * layers[label] / total:.1f} % |")
    print("\n| function (self) | share |\n|---|---|")
    for frame, count in leaves.most_common(args.top):
        print(f"| `{frame}` | {100 * count / total:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
