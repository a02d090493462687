"""The chart README's values table is generated from values.yaml and must not drift."""

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "values_reference.py"


def _module():
    spec = importlib.util.spec_from_file_location("values_reference", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_table_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_values_table_has_a_row_per_documented_key_and_detects_drift() -> None:
    module = _module()
    readme = (ROOT / "charts" / "azaion-loader" / "README.md").read_text()
    assert '| `jobs.proxy.httpsProxy` | string | `""` |' in readme
    assert "| `podSecurityContext` | object |" in readme
    paths = [
        path
        for path, _ in module.documented_keys(
            (ROOT / "charts" / "azaion-loader" / "values.yaml").read_text()
        )
    ]
    for path in paths:
        assert f"| `{path}` |" in readme, path
    stale = readme.replace("| `jobs.proxy.httpsProxy` |", "| `jobs.proxy.oldName` |")
    assert module.render(stale) == readme


def test_documented_keys_reads_multi_line_comments_and_skips_plain_ones() -> None:
    text = (
        "# A section comment, not a doc.\n"
        "top:\n"
        "  # -- First line\n"
        "  # and the second.\n"
        "  leaf: 1\n"
        "  undocumented: 2\n"
    )
    assert list(_module().documented_keys(text)) == [("top.leaf", "First line and the second.")]
