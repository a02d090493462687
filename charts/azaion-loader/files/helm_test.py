"""`helm test`: the operator answers /readyz and both CRDs are Established.

Runs in the chart's image with the operator's ServiceAccount (which may list
CRDs), Python's standard library only. Retries until TEST_TIMEOUT seconds have
passed, then exits 1 naming every check that still fails.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def api_get(path):
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    with open(f"{ACCOUNT}/token") as handle:
        token = handle.read().strip()
    request = urllib.request.Request(
        f"https://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    # https to the API server named by the kubelet (KUBERNETES_SERVICE_HOST)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
        return json.load(response)


def crd_problem(name):
    selector = urllib.parse.quote(f"metadata.name={name}")
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    found = api_get(f"{crds}?fieldSelector={selector}")
    if not found.get("items"):
        return f"CRD {name} not found"
    conditions = found["items"][0].get("status", {}).get("conditions", [])
    if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return None
    return f"CRD {name} not Established"


def readyz_problem(url):
    try:
        # http://<the metrics Service>:<port>/readyz (readyz_url)
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            if response.status == 200:
                return None
            return f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url}: {exc}"


def readyz_url():
    """The metrics Service's /readyz: by the kubelet's service variables, else by DNS name."""
    service = os.environ.get("TEST_READYZ_SERVICE", "")
    if not service:
        return ""
    variable = service.upper().replace("-", "_") + "_SERVICE_HOST"
    host = os.environ.get(variable) or f"{service}.{os.environ['TEST_READYZ_NAMESPACE']}.svc"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ['TEST_READYZ_PORT']}/readyz"


def problems():
    found = []
    for name in filter(None, os.environ["TEST_CRDS"].split(",")):
        try:
            found.append(crd_problem(name))
        except (OSError, ValueError) as exc:
            found.append(f"CRD {name}: {exc}")
    url = readyz_url()
    if url:
        found.append(readyz_problem(url))
    else:
        print("no readiness check: the metrics Service is off (metrics.*)")
    return [p for p in found if p]


def main():
    deadline = time.monotonic() + float(os.environ.get("TEST_TIMEOUT", "60"))
    while True:
        left = problems()
        if not left:
            ready = f", operator ready ({readyz_url()})" if readyz_url() else ""
            print(f"ok: {os.environ['TEST_CRDS']} Established{ready}")
            return 0
        if time.monotonic() > deadline:
            print("failed: " + "; ".join(left))
            return 1
        time.sleep(2)


sys.exit(main())
