"""Status from Job and pod states: phases, the toolkit's result and errors, conditions, counts."""

from __future__ import annotations

import json
import pathlib

import yaml

from azaion_operator.kinds.image_unlock import NodeEntry, unlock_status
from azaion_operator.kinds.resource import resource_status
from azaion_operator.status import (
    JobOutcome,
    conditions,
    job_outcome,
    parse_result_line,
    status_patch,
)

NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-01T00:05:00Z"


def _job(*conds: tuple[str, str], active: int = 0) -> dict:
    return {
        "status": {
            "startTime": "2025-01-01T00:00:01Z",
            "active": active,
            "completionTime": "2025-01-01T00:01:00Z" if ("Complete", "") in conds else None,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "lastTransitionTime": "2025-01-01T00:01:00Z",
                }
                for t, r in conds
            ],
        }
    }


def _pod(init: dict | None = None, main: dict | None = None, created: str = NOW) -> dict:
    def statuses(name: str, state: dict | None) -> list:
        return [{"name": name, "state": state}] if state else []

    return {
        "metadata": {"name": "p", "creationTimestamp": created},
        "status": {
            "initContainerStatuses": statuses("fetch", init),
            "containerStatuses": statuses("verify", main),
        },
    }


def _terminated(code: int, message: str) -> dict:
    return {"terminated": {"exitCode": code, "message": message, "reason": "Error"}}


def test_parse_result_line_takes_the_last_json_line() -> None:
    text = 'log line\n{"ok": true, "size": 1}\nerror: x\n{"ok": false, "error": "AuthError"}\n'
    assert parse_result_line(text) == {"ok": False, "error": "AuthError"}
    assert parse_result_line("plain text") is None
    assert parse_result_line('{"no": "ok"}') is None


def test_success_reads_the_main_container_result() -> None:
    line = {"ok": True, "command": "verify", "size": 5, "sha256": "ab" * 32, "path": "/target/f"}
    pod = _pod(_terminated(0, ""), _terminated(0, json.dumps(line)))
    outcome = job_outcome(_job(("Complete", "")), [pod])
    assert outcome.phase == "Succeeded" and outcome.result == line
    status = resource_status(
        generation=2, node="n", job_name="j", outcome=outcome, previous={}, now=NOW
    )
    assert status["result"] == {"size": 5, "sha256": "ab" * 32, "path": "/target/f"}
    assert status["phase"] == "Succeeded" and status["completionTime"] == "2025-01-01T00:01:00Z"
    ready = {c["type"]: c for c in status["conditions"]}
    assert ready["Ready"]["status"] == "True" and ready["Ready"]["observedGeneration"] == 2
    assert ready["Progressing"]["status"] == "False" and ready["Failed"]["status"] == "False"


def test_failure_reports_the_toolkits_error_from_the_init_container() -> None:
    line = {
        "ok": False,
        "command": "fetch",
        "error": "AuthError",
        "exit_code": 11,
        "message": "wrong email or password; check the credentials Secret",
    }
    # FallbackToLogsOnError: the log tail, with the --json line last but one.
    logs = "fetching models/x\n" + json.dumps(line) + "\nloader: wrong email or password\n"
    pod = _pod(_terminated(11, logs), None)
    outcome = job_outcome(_job(("Failed", "PodFailurePolicy")), [pod])
    assert outcome.phase == "Failed"
    assert outcome.reason == "AuthError"
    assert "fetch: AuthError (exit 11): wrong email or password" in outcome.message
    status = resource_status(
        generation=1, node="n", job_name="j", outcome=outcome, previous={}, now=NOW
    )
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "AuthError"
    assert "result" not in status


def test_failure_without_a_result_line_uses_the_log_tail_or_the_job() -> None:
    pod = _pod(_terminated(1, "Traceback...\nRuntimeError: boom\n"), None)
    outcome = job_outcome(_job(("Failed", "BackoffLimitExceeded")), [pod])
    assert outcome.reason == "ContainerFailed" and "RuntimeError: boom" in outcome.message
    deadline = job_outcome(_job(("Failed", "DeadlineExceeded")), [])
    assert deadline.reason == "DeadlineExceeded"


def test_running_steps_and_stuck_pods() -> None:
    running_init = _pod({"running": {}}, None)
    steps = {"fetch": "Fetching", "verify": "Verifying"}
    assert job_outcome(_job(active=1), [running_init], steps=steps).reason == "Fetching"
    running_main = _pod(_terminated(0, ""), {"running": {}})
    assert job_outcome(_job(active=1), [running_main], steps=steps).reason == "Verifying"
    stuck = _pod({"waiting": {"reason": "ImagePullBackOff", "message": "no registry"}}, None)
    outcome = job_outcome(_job(active=1), [stuck], steps=steps)
    assert outcome.phase == "Pending" and outcome.reason == "ImagePullBackOff"
    assert job_outcome(_job(), []).reason == "JobCreated"


def test_newest_pod_wins() -> None:
    old = _pod(_terminated(14, '{"ok": false, "error": "ApiUnavailableError"}'), None, created=NOW)
    new = _pod(_terminated(11, '{"ok": false, "error": "AuthError"}'), None, created=LATER)
    assert job_outcome(_job(("Failed", "x")), [new, old]).reason == "AuthError"


def test_last_transition_time_moves_only_on_change() -> None:
    first = conditions(
        phase="Running", reason="Fetching", message="m", generation=1, previous=[], now=NOW
    )
    again = conditions(
        phase="Running", reason="Verifying", message="m", generation=1, previous=first, now=LATER
    )
    assert all(c["lastTransitionTime"] == NOW for c in again)
    done = conditions(
        phase="Succeeded", reason="Succeeded", message="m", generation=1, previous=again, now=LATER
    )
    times = {c["type"]: c["lastTransitionTime"] for c in done}
    assert times == {"Ready": LATER, "Progressing": LATER, "Failed": NOW}


def _ok(images: list[str]) -> JobOutcome:
    return JobOutcome("Succeeded", "Succeeded", "done", NOW, LATER, {"ok": True, "images": images})


def test_unlock_counts_and_phases() -> None:
    entries = [
        NodeEntry("a", "job-a", _ok(["app:1"])),
        NodeEntry("b", "job-b", JobOutcome("Running", "Loading", "loading")),
        NodeEntry("c", None, None),
    ]
    status = unlock_status(generation=3, entries=entries, previous={}, now=NOW)
    assert (status["desired"], status["active"], status["succeeded"], status["failed"]) == (
        3,
        1,
        1,
        0,
    )
    assert status["phase"] == "Running" and status["progress"] == "1/3"
    assert [n["name"] for n in status["nodes"]] == ["a", "b", "c"]
    assert status["nodes"][2]["reason"] == "WaitingForSlot"
    assert status["images"] == ["app:1"]

    failed = JobOutcome("Failed", "ImageMissingError", "image missing", NOW, LATER)
    done = unlock_status(
        generation=3,
        entries=[NodeEntry("a", "job-a", _ok(["app:1"])), NodeEntry("b", "job-b", failed)],
        previous=status,
        now=LATER,
    )
    assert done["phase"] == "Failed" and done["failedNodes"] == ["b"]
    assert {c["type"]: c["status"] for c in done["conditions"]} == {
        "Ready": "False",
        "Progressing": "False",
        "Failed": "True",
    }
    all_ok = unlock_status(
        generation=3,
        entries=[NodeEntry("a", "j", _ok(["app:1"])), NodeEntry("b", "k", _ok(["app:2"]))],
        previous={},
        now=NOW,
    )
    assert all_ok["phase"] == "Succeeded" and all_ok["images"] == ["app:1", "app:2"]
    assert unlock_status(generation=1, entries=[], previous={}, now=NOW)["phase"] == "Failed"


def test_unlock_node_items_say_which_runtime_and_socket() -> None:
    unsupported = JobOutcome("Failed", "UnsupportedRuntime", "node b runs cri-o://1.30")
    entries = [
        NodeEntry("a", "job-a", _ok(["app:1"]), "containerd", "/run/containerd/containerd.sock"),
        NodeEntry("b", None, unsupported),
    ]
    status = unlock_status(generation=1, entries=entries, previous={}, now=NOW)
    a, b = status["nodes"]
    assert (a["runtime"], a["socketPath"]) == ("containerd", "/run/containerd/containerd.sock")
    assert "runtime" not in b and "socketPath" not in b
    assert (b["phase"], b["reason"]) == ("Failed", "UnsupportedRuntime")
    assert status["phase"] == "Failed" and status["failedNodes"] == ["b"]


def test_status_patch_drops_removed_keys() -> None:
    assert status_patch({"a": 1}, {"a": 1}) is None
    assert status_patch({"a": 1, "result": {}}, {"a": 2}) == {"a": 2, "result": None}


def _condition_schemas() -> dict[str, dict]:
    crds = pathlib.Path(__file__).resolve().parents[3] / "crds"
    found = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = crd["spec"]["versions"][0]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        found[crd["spec"]["names"]["kind"]] = {
            "item": status["properties"]["conditions"]["items"],
            "columns": {c["name"]: c for c in version["additionalPrinterColumns"]},
        }
    return found


def test_conditions_carry_every_field_the_crds_require() -> None:
    # metav1.Condition: type, status, reason, message, lastTransitionTime required.
    written = conditions(
        phase="Failed", reason="AuthError", message="bad", generation=3, previous=[], now=NOW
    )
    for kind, schema in _condition_schemas().items():
        required = set(schema["item"]["required"])
        assert required == {"type", "status", "reason", "message", "lastTransitionTime"}, kind
        for condition in written:
            assert required <= condition.keys(), (kind, condition)
            assert set(condition) <= set(schema["item"]["properties"]), (kind, condition)


def test_kubectl_get_shows_the_ready_condition() -> None:
    for kind, schema in _condition_schemas().items():
        columns = schema["columns"]
        for name, field in (("Ready", "status"), ("Reason", "reason"), ("Message", "message")):
            assert columns[name]["jsonPath"] == (
                f'.status.conditions[?(@.type=="Ready")].{field}'
            ), kind
        assert columns["Message"].get("priority") == 1, kind  # only with -o wide
        assert "priority" not in columns["Ready"], kind
