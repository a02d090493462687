"""Job names: at most 63 characters, stable, and distinct for distinct inputs."""

from __future__ import annotations

import re

import pytest

from azaion_operator.names import job_name, label_value

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
BASE = {"prefix": "unl", "namespace": "edge", "name": "detector", "uid": "u-1", "generation": 1}


@pytest.mark.parametrize("name", ["a", "detector", "x" * 63, "a.b.c-" * 10 + "z"])
@pytest.mark.parametrize(
    "node", [None, "edge-1", "n" * 253, "ip-10-0-0-1.eu-west-1.compute.internal"]
)
@pytest.mark.parametrize("generation", [1, 42, 2**63 - 1])
def test_names_fit_a_dns_label(name: str, node: str | None, generation: int) -> None:
    value = job_name(**{**BASE, "name": name, "generation": generation, "node": node})
    assert len(value) <= 63
    assert DNS_LABEL.match(value), value


def test_names_are_stable_and_readable() -> None:
    first = job_name(**BASE, node="edge-1")
    assert first == job_name(**BASE, node="edge-1")
    assert first.startswith("unl-detector-edge-1-g1-")


@pytest.mark.parametrize(
    "change",
    [
        {"generation": 2},
        {"node": "edge-2"},
        {"uid": "u-2"},
        {"namespace": "other"},
        {"prefix": "res"},
        {"name": "detector2"},
    ],
)
def test_any_input_change_changes_the_name(change: dict) -> None:
    assert job_name(**{**BASE, "node": "edge-1", **change}) != job_name(**BASE, node="edge-1")


def test_inputs_cut_to_the_same_text_still_differ() -> None:
    long_a = "n" * 100 + "-a"
    long_b = "n" * 100 + "-b"
    a = job_name(**BASE, node=long_a)
    b = job_name(**BASE, node=long_b)
    assert a != b
    assert a[:-10] == b[:-10]  # same readable part, different hash


def test_no_collisions_over_many_nodes() -> None:
    names = {job_name(**BASE, node=f"node-{i}-" + "x" * 80) for i in range(5000)}
    assert len(names) == 5000


def test_label_values() -> None:
    assert label_value("edge-1") == "edge-1"
    long = label_value("n" * 100)
    assert len(long) <= 63 and long != label_value("n" * 99)
