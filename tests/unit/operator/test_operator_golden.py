"""The golden-file fixture itself: a missing file fails, it is never written silently."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden"


def test_missing_golden_file_fails_and_is_not_written(
    golden: Callable[[str, Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    name = "no_such_golden_file.yaml"
    with pytest.raises(pytest.fail.Exception, match=r"no_such_golden_file\.yaml is missing"):
        golden(name, {"kind": "Job"})
    assert not (GOLDEN / name).exists()


def test_present_golden_file_is_read(golden: Callable[[str, Any], Any]) -> None:
    assert golden("resource_job.yaml", {})["kind"] == "Job"
