"""Proof that the local cluster is a real Kubernetes: Jobs, volumes, Docker, helm, validation."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from cluster_support import (
    apply,
    build_image,
    helm_bin,
    host_ip,
    kubectl,
    pod,
    remove_image,
    wait_pod_done,
)


def test_node_is_ready() -> None:
    """The single node reports Ready and runs kubelet v1.32."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 1
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.32.")


def test_job_with_locally_built_image(namespace: str, base_image: str, tmp_path: Path) -> None:
    """A Job runs an image built here on the local base image; kubectl logs reads its output."""
    marker = f"job-output-{uuid.uuid4().hex[:8]}"
    (tmp_path / "hello.py").write_text(f"import sys\nprint('{marker}', sys.version_info[:2])\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nCOPY hello.py /app/hello.py\n")
    tag = f"azaion-loader-cluster-test-job:{uuid.uuid4().hex[:8]}"
    build_image(tag, tmp_path)
    spec = pod("x", tag, ["python3", "/app/hello.py"])["spec"]
    spec["restartPolicy"] = "Never"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }
    apply(namespace, job)
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=complete",
        "job/hello",
        "--timeout=120s",
        timeout=150,
    )
    logs = kubectl("logs", "-n", namespace, "job/hello").stdout
    assert marker in logs
    remove_image(tag)


def test_pvc_written_by_one_pod_is_read_by_another(namespace: str, cluster_base_image: str) -> None:
    """A non-root pod writes into a dynamically provisioned PVC; a second pod reads it back."""
    apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}},
            },
        },
    )
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    secret = uuid.uuid4().hex
    apply(
        namespace,
        pod(
            "writer",
            cluster_base_image,
            ["sh", "-c", f"echo {secret} > /data/f"],
            container=mount,
            **volume,
        ),
    )
    assert wait_pod_done(namespace, "writer") == "Succeeded"
    apply(
        namespace, pod("reader", cluster_base_image, ["cat", "/data/f"], container=mount, **volume)
    )
    assert wait_pod_done(namespace, "reader") == "Succeeded"
    assert kubectl("logs", "-n", namespace, "reader").stdout.strip() == secret
    pvc = json.loads(kubectl("get", "pvc", "-n", namespace, "data", "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound"


def test_pod_sees_host_docker_through_socket(
    namespace: str, base_image: str, tmp_path: Path
) -> None:
    """A pod mounting /var/run/docker.sock runs `docker images` and sees the host's images."""
    docker_cli = Path("/usr/bin/docker")
    if not docker_cli.exists():
        pytest.skip("Debian's docker.io client /usr/bin/docker is missing (./scripts/install)")
    shutil.copy2(docker_cli, tmp_path / "docker")
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nCOPY docker /usr/local/bin/docker\n")
    tag = f"azaion-loader-cluster-test-docker:{uuid.uuid4().hex[:8]}"
    build_image(tag, tmp_path)
    fmt = "{{.Repository}}:{{.Tag}}"
    spec = pod(
        "docker",
        tag,
        ["docker", "images", "--format", fmt],
        volumes=[{"name": "sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}],
        container={
            "volumeMounts": [{"name": "sock", "mountPath": "/var/run/docker.sock"}],
            # The socket is root:root 0660 on the host, so this one pod runs as root.
            "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": True},
        },
    )
    apply(namespace, spec)
    assert wait_pod_done(namespace, "docker") == "Succeeded", kubectl(
        "logs", "-n", namespace, "docker", check=False
    ).stdout
    in_pod = set(kubectl("logs", "-n", namespace, "docker").stdout.split())
    on_host = set(
        subprocess.run(
            ["docker", "images", "--format", fmt], text=True, capture_output=True, check=True
        ).stdout.split()
    )
    assert tag in in_pod
    assert base_image in in_pod
    # Other engineers' builds may add images between the two listings; ours must agree.
    assert {tag, base_image} <= on_host
    remove_image(tag)


def test_pod_reaches_host_service_and_api_via_service_ip(
    namespace: str, cluster_base_image: str
) -> None:
    """A pod reaches a server on the host's bridge address, and the API via the Service IP."""
    body = f"host-service-{uuid.uuid4().hex[:8]}".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host_ip(), 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        script = (
            "import json, os, ssl, urllib.request, urllib.error\n"
            f"url = 'http://{host_ip()}:{port}/'\n"
            "print(urllib.request.urlopen(url, timeout=10).read().decode())\n"
            "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
            "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
            "token = open(sa + '/token').read()\n"
            "env = os.environ\n"
            "host, port = env['KUBERNETES_SERVICE_HOST'], env['KUBERNETES_SERVICE_PORT']\n"
            "base = 'https://%s:%s' % (host, port)\n"
            "req = urllib.request.Request(base + '/api/v1/namespaces/kube-system/secrets',"
            " headers={'Authorization': 'Bearer ' + token})\n"
            "try:\n"
            "    urllib.request.urlopen(req, context=ctx, timeout=10)\n"
            "    print('status', 200)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print('status', e.code, json.load(e)['reason'])\n"
        )
        apply(namespace, pod("client", cluster_base_image, ["python3", "-c", script]))
        phase = wait_pod_done(namespace, "client")
        logs = kubectl("logs", "-n", namespace, "client").stdout
        assert phase == "Succeeded", logs
    finally:
        server.shutdown()
        server.server_close()
    assert body.decode() in logs
    # The ServiceAccount token authenticates; RBAC forbids reading secrets: both sides are real.
    assert "status 403 Forbidden" in logs


def test_helm_install_trivial_chart(namespace: str, tmp_path: Path) -> None:
    """helm installs a one-ConfigMap chart into the cluster and uninstalls it."""
    chart = tmp_path / "trivial"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: trivial\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n"
        "  greeting: {{ .Values.greeting | quote }}\n"
    )
    helm = [helm_bin(), "--namespace", namespace]
    install = [
        *helm,
        "install",
        "rel",
        str(chart),
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    ]
    proc = subprocess.run(install, text=True, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    cm = json.loads(kubectl("get", "configmap", "-n", namespace, "rel-cm", "-o", "json").stdout)
    assert cm["data"]["greeting"] == "hi"
    proc = subprocess.run(
        [*helm, "uninstall", "rel"], text=True, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_server_side_dry_run_rejects_invalid_object(namespace: str) -> None:
    """The real API server validates: a Deployment without containers is rejected server-side."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": []}},
        },
    }
    proc = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(bad), check=False
    )
    assert proc.returncode != 0
    assert "is invalid" in proc.stderr
    assert "spec.template.spec.containers: Required value" in proc.stderr
    assert "selector` does not match template `labels`" in proc.stderr
