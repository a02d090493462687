"""The repository layout keeps the promises made in docs/architecture.md."""

import importlib
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_operator_directory_is_not_a_package() -> None:
    assert (ROOT / "operator").is_dir()
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_stdlib_operator_is_not_shadowed_from_the_repository_root() -> None:
    # Run from the repository root with it first on sys.path, as `python -c` would.
    probe = "import operator; print(operator.__file__); print(operator.add(2, 3))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[1] == "5"
    assert pathlib.Path(out[0]).parent != ROOT / "operator"
    assert "site-packages" not in out[0]


def test_import_packages_resolve_to_the_repository() -> None:
    for name, folder in (("azaion_loader", "initcontainer"), ("azaion_operator", "operator")):
        module = importlib.import_module(name)
        assert pathlib.Path(module.__file__).resolve().is_relative_to(ROOT / folder)


def test_test_helpers_follow_one_naming_style() -> None:
    # tests/README.md: test_<topic>.py, conftest.py, or a <topic>_support.py helper
    # whose bare name is unique (pytest puts each test folder on sys.path).
    helpers: dict[str, list[pathlib.Path]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name.startswith("test_") or path.name in ("conftest.py", "__init__.py"):
            continue
        assert path.name.endswith("_support.py"), f"{path.relative_to(ROOT)}: name it *_support.py"
        helpers.setdefault(path.name, []).append(path)
    assert helpers, "no helper modules found: is the walk looking at tests/?"
    assert {name: paths for name, paths in helpers.items() if len(paths) > 1} == {}
