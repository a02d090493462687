"""Shell completion for ``loader``: bash, zsh and fish scripts made from the subcommand records.

``loader completion SHELL`` prints one.  Each record configures a parser of
its own here, exactly as for the real CLI, and the script is written from
that parser's options, so it cannot drift from the commands.  Pure: text in,
text out; no shell is run.

    source <(loader completion bash)            # ~/.bashrc
    source <(loader completion zsh)             # ~/.zshrc, after compinit
    loader completion fish > ~/.config/fish/completions/loader.fish
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Option", "Record", "Subcommand", "describe", "script"]

FILE, DIR, WORD, ANY = "file", "dir", "word", "any"
"""What an option's value or a positional argument completes to."""

_FILE_METAVARS = {"PATH", "FILE", "ARCHIVE.tar"}

TOP_LEVEL = (("-h", "--help", "show the help"), (None, "--version", "print the version"))


class Record(Protocol):
    """What a subcommand record offers: its name, its help and its options."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    def configure(self, parser: argparse.ArgumentParser) -> None: ...


@dataclass(frozen=True)
class Option:
    """One option of a subcommand."""

    flags: tuple[str, ...]
    help: str
    value: str | None
    """``None`` for a switch, else ``file``, ``dir``, ``word`` (one of ``choices``) or ``any``."""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subcommand:
    """A subcommand's name, help, options and what its positional arguments complete to."""

    name: str
    help: str
    options: tuple[Option, ...]
    positional: str | None = None
    positional_choices: tuple[str, ...] = ()


def _kind(action: argparse.Action) -> str:
    if action.choices:
        return WORD
    if action.metavar == "DIR" or action.dest.endswith("_dir"):
        return DIR
    if action.metavar in _FILE_METAVARS or action.type is Path or not action.option_strings:
        return FILE
    return ANY


def _help(action: argparse.Action) -> str:
    """The action's help as ``--help`` shows it (``%(default)s`` filled in)."""
    text = action.help or ""
    try:
        return text % {**vars(action), "default": action.default} if "%" in text else text
    except (KeyError, TypeError, ValueError):
        return text


def describe(records: Iterable[Record]) -> list[Subcommand]:
    """Every record's subcommand, read from the parser the record configures."""
    out = []
    for record in records:
        parser = argparse.ArgumentParser(prog=f"loader {record.name}")
        record.configure(parser)
        options: list[Option] = []
        positional: argparse.Action | None = None
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if not action.option_strings:
                positional = positional or action
                continue
            value = None if action.nargs == 0 else _kind(action)
            choices = tuple(str(c) for c in action.choices or ())
            options.append(Option(tuple(action.option_strings), _help(action), value, choices))
        out.append(
            Subcommand(
                record.name,
                record.help,
                tuple(options),
                None if positional is None else _kind(positional),
                tuple(str(c) for c in (positional.choices or ())) if positional else (),
            )
        )
    return out


def script(shell: str, subcommands: Sequence[Subcommand]) -> str:
    """The completion script for ``shell`` (``bash``, ``zsh`` or ``fish``)."""
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    return writers[shell](subcommands)


# -- bash ---------------------------------------------------------------------------


def _bash_reply(kind: str | None, choices: Sequence[str]) -> str:
    if kind == WORD:
        return f'COMPREPLY=($(compgen -W "{" ".join(choices)}" -- "$cur"))'
    if kind == FILE:
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    if kind == DIR:
        return 'COMPREPLY=($(compgen -d -- "$cur"))'
    return "COMPREPLY=()"  # a free value: nothing to offer


def _bash(subcommands: Sequence[Subcommand]) -> str:
    top = [flag for short, long, _ in TOP_LEVEL for flag in (short, long) if flag]
    lines = [
        "# bash completion for loader (made by `loader completion bash`)",
        "_loader_complete() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" opts="" i',
        "    COMPREPLY=()",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        if [[ ${COMP_WORDS[i]} != -* ]]; then cmd="${COMP_WORDS[i]}"; break; fi',
        "    done",
        '    case "$cmd" in',
        '        "")',
        f'            COMPREPLY=($(compgen -W "{" ".join([s.name for s in subcommands] + top)}"'
        ' -- "$cur"))',
        "            return ;;",
    ]
    for sub in subcommands:
        flags = [f for option in sub.options for f in option.flags]
        lines += [f"        {sub.name})", f'            opts="{" ".join(flags)}"']
        valued = [o for o in sub.options if o.value is not None]
        if valued:
            lines.append('            case "$prev" in')
            for option in valued:
                reply = _bash_reply(option.value, option.choices)
                lines.append(f"                {'|'.join(option.flags)}) {reply}; return ;;")
            lines.append("            esac")
        if sub.positional is not None:
            lines += [
                "            if [[ $cur != -* ]]; then",
                f"                {_bash_reply(sub.positional, sub.positional_choices)}",
                "                return",
                "            fi",
            ]
        lines.append("            ;;")
    lines += [
        "    esac",
        '    COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "}",
        "complete -o filenames -F _loader_complete loader",
        "",
    ]
    return "\n".join(lines)


# -- zsh ----------------------------------------------------------------------------


def _zsh_text(text: str) -> str:
    """``text`` for a single-quoted ``_arguments`` description."""
    return (
        " ".join(text.split())
        .replace("'", "'\\''")
        .replace("[", "\\[")
        .replace("]", "\\]")
        .replace(":", "\\:")
    )


def _zsh_action(kind: str | None, choices: Sequence[str]) -> str:
    if kind == WORD:
        return f"({' '.join(choices)})"
    return {FILE: "_files", DIR: "_files -/"}.get(kind or "", " ")


def _zsh(subcommands: Sequence[Subcommand]) -> str:
    lines = [
        "#compdef loader",
        "# zsh completion for loader (made by `loader completion zsh`)",
        "_loader() {",
        "    local -a commands",
        "    commands=(",
    ]
    lines += [f"        '{s.name}:{_zsh_text(s.help)}'" for s in subcommands]
    lines += [
        "    )",
        "    if (( CURRENT == 2 )); then",
        "        if [[ $PREFIX == -* ]]; then",
        "            compadd -- " + " ".join(f for s, lg, _ in TOP_LEVEL for f in (s, lg) if f),
        "        else",
        "            _describe -t commands 'loader command' commands",
        "        fi",
        "        return",
        "    fi",
        "    local cmd=$words[2]",
        "    shift words",
        "    (( CURRENT-- ))",
        "    case $cmd in",
    ]
    for sub in subcommands:
        specs = []
        for option in sub.options:
            for flag in option.flags:
                spec = f"{flag}[{_zsh_text(option.help)}]"
                if option.value is not None:
                    spec += f":{option.value}:{_zsh_action(option.value, option.choices)}"
                specs.append(f"'{spec}'")
        if sub.positional is not None:
            action = _zsh_action(sub.positional, sub.positional_choices)
            specs.append(f"'*:{sub.positional}:{action}'")
        body = " \\\n                ".join(specs)
        lines += [f"        {sub.name})", f"            _arguments \\\n                {body} ;;"]
    lines += [
        "    esac",
        "}",
        'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _loader "$@"; '
        "else compdef _loader loader; fi",
        "",
    ]
    return "\n".join(lines)


# -- fish ---------------------------------------------------------------------------


def _fish_text(text: str) -> str:
    """``text`` in single quotes for fish."""
    return "'" + " ".join(text.split()).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_value(kind: str | None, choices: Sequence[str]) -> str:
    if kind == WORD:
        return f"-x -a {_fish_text(' '.join(choices))}"
    if kind == FILE:
        return "-r -F"
    if kind == DIR:
        return "-x -a '(__fish_complete_directories)'"
    return "-x"


_FISH_TOP = "-n __fish_use_subcommand"


def _fish(subcommands: Sequence[Subcommand]) -> str:
    lines = [
        "# fish completion for loader (made by `loader completion fish`)",
        "complete -c loader -f",
    ]
    for short, long, helptext in TOP_LEVEL:
        flags = (f"-s {short[1:]} " if short else "") + f"-l {long[2:]}"
        lines.append(
            f"complete -c loader -n __fish_use_subcommand {flags} -d {_fish_text(helptext)}"
        )
    for sub in subcommands:
        lines.append(f"complete -c loader {_FISH_TOP} -a {sub.name} -d {_fish_text(sub.help)}")
    for sub in subcommands:
        seen = f"-n '__fish_seen_subcommand_from {sub.name}'"
        for option in sub.options:
            flags = " ".join(
                f"-s {f[1:]}" if not f.startswith("--") else f"-l {f[2:]}" for f in option.flags
            )
            value = "" if option.value is None else " " + _fish_value(option.value, option.choices)
            lines.append(f"complete -c loader {seen} {flags}{value} -d {_fish_text(option.help)}")
        if sub.positional == WORD:
            lines.append(
                f"complete -c loader {seen} -a {_fish_text(' '.join(sub.positional_choices))}"
            )
        elif sub.positional == FILE:
            lines.append(f"complete -c loader {seen} -F")
    lines.append("")
    return "\n".join(lines)
