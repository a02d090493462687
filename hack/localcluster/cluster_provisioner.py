"""A hostPath volume provisioner for the local cluster (stdlib loop, started by `up`)."""

from __future__ import annotations

import http.client
import logging
import shutil
import signal
import sys
import time

from cluster_common import PROVISIONED_BY, PROVISIONER, Api, Settings

log = logging.getLogger("cluster")

# ---------------------------------------------------------------- provisioner


def provision_once(s: Settings, api: Api) -> None:
    """Create a hostPath PV for each pending PVC of our class; delete released PVs and dirs."""
    _, classes = api.call("GET", "/apis/storage.k8s.io/v1/storageclasses")
    ours = {
        c["metadata"]["name"]
        for c in classes.get("items", [])
        if c.get("provisioner") == PROVISIONER
    }
    _, pvcs = api.call("GET", "/api/v1/persistentvolumeclaims")
    for pvc in pvcs.get("items", []):
        spec, meta = pvc["spec"], pvc["metadata"]
        if (
            spec.get("storageClassName") not in ours
            or spec.get("volumeName")
            or pvc["status"].get("phase") != "Pending"
        ):
            continue
        name = f"pvc-{meta['uid']}"
        path = s.state / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec["storageClassName"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        status, resp = api.call("POST", "/api/v1/persistentvolumes", pv)
        if status in (200, 201):
            log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])
        elif status != 409:
            log.warning("creating PV %s failed: %s %s", name, status, resp)
    _, pvs = api.call("GET", "/api/v1/persistentvolumes")
    for pv in pvs.get("items", []):
        meta = pv["metadata"]
        if (meta.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
            continue
        if (
            pv["status"].get("phase") in ("Released", "Failed")
            and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            shutil.rmtree(s.state / "volumes" / meta["name"], ignore_errors=True)
            api.call("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
            log.info("deleted released %s", meta["name"])


def cmd_provision(s: Settings) -> int:
    """Run the provisioner loop until terminated."""
    api = Api(s, "admin")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            provision_once(s, api)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            log.warning("provisioner pass failed: %s", exc)
        time.sleep(1)
