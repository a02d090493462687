"""The OpenAPI document: well-formed, self-consistent, and in step with the routes and errors."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from azaion_loader.server import ServerConfig, create_app, failures

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    text = resources.files("azaion_loader.server").joinpath("openapi.yaml").read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_header(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert _resolve(doc, ref) is not None, ref


def test_operations_have_unique_ids_and_declare_their_path_parameters(doc: dict[str, Any]) -> None:
    ids = []
    for path, item in doc["paths"].items():
        wanted = set(re.findall(r"{(\w+)}", path))
        shared = [
            _resolve(doc, p["$ref"]) if "$ref" in p else p for p in item.get("parameters", [])
        ]
        for method in METHODS & set(item):
            op = item[method]
            ids.append(op["operationId"])
            params = shared + [
                _resolve(doc, p["$ref"]) if "$ref" in p else p for p in op.get("parameters", [])
            ]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == wanted, (path, method)
            assert op["responses"], (path, method)
    assert len(ids) == len(set(ids))


def test_paths_match_the_application_routes(doc: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(ServerConfig(data_dir=tmp_path, jwt_secret=b"x" * 32))
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods or ())
    documented = {path: METHODS & set(item) for path, item in doc["paths"].items()}
    assert documented == {path: METHODS & methods for path, methods in routes.items()}


def test_error_codes_match_the_server(doc: dict[str, Any]) -> None:
    codes = {
        cls.error_code
        for cls in vars(failures).values()
        if isinstance(cls, type) and issubclass(cls, failures.ApiFailure)
    }
    assert set(doc["components"]["schemas"]["Error"]["properties"]["ErrorCode"]["enum"]) == codes


def test_envelope_responses_name_their_purpose_and_plaintext(doc: dict[str, Any]) -> None:
    purposes = {}
    for item in doc["paths"].values():
        for method in METHODS & set(item):
            ok = item[method]["responses"].get("200", {})
            response = _resolve(doc, ok["$ref"]) if "$ref" in ok else ok
            if "x-envelope-purpose" in response:
                plaintext = _resolve(doc, response["x-envelope-plaintext"]["$ref"])
                purposes[item[method]["operationId"]] = (
                    response["x-envelope-purpose"],
                    plaintext["required"],
                )
    assert purposes == {
        "getCdnConfig": ("cdn-config", ["endpoint_url", "region", "read", "write"]),
        "getResource": (
            "resource",
            [
                "folder",
                "name",
                "version",
                "small",
                "key",
                "sha256",
                "size",
                "plain_size",
                "big_key",
            ],
        ),
        "getKeyFragment": (
            "key-fragment",
            ["folder", "name", "version", "fragment", "sha256", "size", "images", "object_key"],
        ),
    }


def test_the_plain_digest_is_documented_and_optional(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("ResourcePut", "ResourcePlain"):
        assert "plain_sha256" in schemas[name]["properties"], name
        assert "plain_sha256" not in schemas[name]["required"], name


def test_the_format_is_documented_and_optional(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    put = schemas["ResourcePut"]["properties"]["format"]
    assert [s.get("enum", s.get("type")) for s in put["oneOf"]] == [[1, 2], "null"]
    assert schemas["ResourcePlain"]["properties"]["format"]["enum"] == [2]
    listed = schemas["Listing"]["properties"]["versions"]["items"]
    assert listed["properties"]["format"]["enum"] == [2]
    for node in (schemas["ResourcePut"], schemas["ResourcePlain"], listed):
        assert "format" not in node["required"]
    # Format 2's smallest ciphertext: an empty plaintext and one tag.
    assert schemas["ResourcePut"]["properties"]["size"]["minimum"] == 16


def test_the_archive_format_is_documented_and_optional(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    put = schemas["ArchivePut"]["properties"]["format"]
    assert [s.get("enum", s.get("type")) for s in put["oneOf"]] == [[1, 2], "null"]
    assert schemas["KeyFragmentPlain"]["properties"]["format"]["enum"] == [2]
    for node in (schemas["ArchivePut"], schemas["KeyFragmentPlain"]):
        assert "format" not in node["required"]
    # Format 2's sizes are not multiples of 16; its smallest is 16 (one tag).
    size = schemas["ArchivePut"]["properties"]["size"]
    assert size["minimum"] == 16 and "multipleOf" not in size
