"""Render docs/crds.md, the CRD field reference, from the schemas in crds/.

    .venv/bin/python hack/crd_reference.py            # rewrite docs/crds.md
    .venv/bin/python hack/crd_reference.py --check    # exit 1 when it is stale

tests/unit/test_crd_reference.py runs the check, so the reference cannot drift
from the schemas that `kubectl explain` shows.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "crds.md"

HEADER = """# CRD reference

Generated from `crds/*.yaml` by `hack/crd_reference.py`; do not edit by hand
(`tests/unit/test_crd_reference.py` fails when it is stale). `kubectl explain
resource.spec` and `kubectl explain imageunlock.spec` show the same text.
"""


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "object" if "properties" in schema else "any")
    if kind == "array":
        return f"[]{_type_of(schema.get('items', {}))}"
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if "default" in schema:
        parts.append(f"default `{schema['default']}`")
    for rule in schema.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule.get('message', rule['rule'])}")
    return "; ".join(parts)


def _rows(schema: dict[str, Any], path: str, required: set[str]) -> Iterator[str]:
    for name, sub in schema.get("properties", {}).items():
        field = f"{path}.{name}" if path else name
        description = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
        req = "yes" if name in required else ""
        cons = _constraints(sub).replace("|", "\\|")
        yield f"| `{field}` | {_type_of(sub)} | {req} | {description} | {cons} |"
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        yield from _rows(
            target,
            field + ("[]" if sub.get("type") == "array" else ""),
            set(target.get("required", [])),
        )


def render() -> str:
    out = [HEADER]
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        for version in crd["spec"]["versions"]:
            root = version["schema"]["openAPIV3Schema"]
            out.append(f"## {names['kind']} (`{crd['spec']['group']}/{version['name']}`)\n")
            out.append(" ".join(str(root.get("description", "")).split()) + "\n")
            short = ", ".join(names.get("shortNames", []))
            out.append(
                f"Short names: {short}. Categories: {', '.join(names.get('categories', []))}.\n"
            )
            for rule in root.get("x-kubernetes-validations", []):
                out.append(f"- Rule: {rule.get('message', rule['rule'])}")
            for part in ("spec", "status"):
                schema = root["properties"].get(part)
                if not schema:
                    continue
                out.append(f"\n### `{part}`\n")
                out.append("| Field | Type | Required | Description | Constraints |")
                out.append("|---|---|---|---|---|")
                out.extend(_rows(schema, part, set(schema.get("required", []))))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/crds.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(
                "docs/crds.md is stale: run .venv/bin/python hack/crd_reference.py", file=sys.stderr
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
