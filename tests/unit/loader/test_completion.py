"""Shell completion: the scripts complete the CLI's own subcommands and options."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from azaion_loader.cli import completion
from azaion_loader.cli.commands import COMMANDS, EXTERNALS

NAMES = [record.name for record in (*COMMANDS, *EXTERNALS)]


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    subcommands = completion.describe([*COMMANDS, *EXTERNALS])
    return {shell: completion.script(shell, subcommands) for shell in ("bash", "zsh", "fish")}


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What ``_loader_complete`` offers for ``words`` (the last one being completed)."""
    probe = (
        f"source {script}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        "_loader_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe, "bash", "loader", *words],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture
def bash_script(scripts: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "loader.bash"
    path.write_text(scripts["bash"])
    return path


def test_bash_completes_subcommands(bash_script: Path) -> None:
    assert _bash_complete(bash_script, "") == [*NAMES, "-h", "--help", "--version"]
    assert _bash_complete(bash_script, "unl") == ["unlock", "unlock-fetch", "unlock-load"]
    assert _bash_complete(bash_script, "comp") == ["completion"]


def test_bash_completes_options_and_their_values(bash_script: Path) -> None:
    fetch_options = _bash_complete(bash_script, "fetch", "--")
    assert {"--folder", "--name", "--out", "--quiet", "--verbose", "--json"} <= set(fetch_options)
    assert "--archive-folder" not in fetch_options  # unlock's, not fetch's
    assert _bash_complete(bash_script, "unlock", "--runtime", "") == ["docker", "containerd"]
    assert _bash_complete(bash_script, "completion", "") == ["bash", "zsh", "fish"]
    assert _bash_complete(bash_script, "ls", "--kind", "a") == ["archives"]
    assert _bash_complete(bash_script, "fetch", "--folder", "") == []  # a free value
    assert _bash_complete(bash_script, "serve-api", "--tls-") == ["--tls-cert", "--tls-key"]


def test_bash_completes_files_where_a_path_goes(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "cache").mkdir()
    prefix = str(tmp_path) + "/"
    files = _bash_complete(bash_script, "fetch", "--out", prefix)
    assert prefix + "model.bin" in files
    assert _bash_complete(bash_script, "fetch", "--cache-dir", prefix) == [prefix + "cache"]


class _Record:
    """A subcommand record as cli.commands has them, with an option no command has yet."""

    name = "paint"
    help = "paint it"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--colour", choices=("red", "blue"), help="which colour")


def test_scripts_follow_the_records(tmp_path: Path) -> None:
    """A new option in a record is completed without touching the generator."""
    path = tmp_path / "paint.bash"
    path.write_text(completion.script("bash", completion.describe([_Record()])))
    assert _bash_complete(path, "") == ["paint", "-h", "--help", "--version"]
    assert _bash_complete(path, "paint", "--colour", "") == ["red", "blue"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses_and_registers(scripts: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "loader.zsh"
    path.write_text(scripts["zsh"])
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=30)
    probe = f"autoload -U compinit; compinit -u -D; source {path}; print -r -- $_comps[loader]"
    out = subprocess.run(
        ["zsh", "-f", "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "_loader"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_subcommands_and_values(scripts: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "loader.fish"
    path.write_text(scripts["fish"])

    def complete(line: str) -> list[str]:
        out = subprocess.run(
            ["fish", "--no-config", "-c", f"source {path}; complete -C {line!r}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return [row.split("\t")[0] for row in out.splitlines()]

    assert complete("loader unl") == ["unlock", "unlock-fetch", "unlock-load"]
    assert sorted(complete("loader unlock --runtime ")) == ["containerd", "docker"]
    assert sorted(complete("loader completion ")) == ["bash", "fish", "zsh"]
    assert "--quiet" in complete("loader ls --")
