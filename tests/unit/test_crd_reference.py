"""docs/crds.md is generated from crds/ and must not drift from the schemas."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_crd_reference_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "crd_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_crd_reference_lists_both_kinds_and_their_fields() -> None:
    text = (ROOT / "docs" / "crds.md").read_text()
    assert "## Resource (`loader.azaion.com/v1alpha1`)" in text
    assert "## ImageUnlock (`loader.azaion.com/v1alpha1`)" in text
    assert "| `spec.source.folder` |" in text
