"""A caller's JSON schema (`response_format`), checked before any model sees it.

xgrammar compiles more of JSON Schema than it enforces: `not`, `if`, `uniqueItems` and others are accepted and
ignored, so an answer could break the very schema it was asked to follow. Here only the keywords decoding keeps
are let through; any other is refused by name. Size, nesting and `$ref` cycles are bounded too: a recursive
schema could nest without end, and the runner keeps a token reserve that must be able to close any open value
(models/constrained.py).
"""

from __future__ import annotations

import json
from typing import Any

MAX_SCHEMA_BYTES = 16 * 1024
MAX_DEPTH = 12
ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
        "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "pattern",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
     "writeOnly", "discriminator"}
)  # fmt: skip
SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema
SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")  # [schema]

# `json_object`: any object, nested at most three deep, so that the reserve can always close it.
SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
INNER = {"anyOf": [SCALAR, {"type": "array", "items": SCALAR}, {"type": "object", "additionalProperties": SCALAR}]}
ANY_OBJECT = json.dumps({"type": "object", "additionalProperties": INNER})


class SchemaRefused(ValueError):
    """The schema uses what decoding cannot enforce, or is over a bound; the message names which."""


def checked_schema(schema: dict[str, Any]) -> str:
    """The schema as the runner takes it (compact JSON text), or SchemaRefused."""
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaRefused(f"the schema is {len(text)} bytes; the limit is {MAX_SCHEMA_BYTES}")
    visit(schema, "", 0)
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    for name in definitions:
        if refers_to(definitions, name, name, set()):
            raise SchemaRefused(f"`$defs/{name}` refers to itself: recursive schemas are not supported")
    return text


def visit(node: Any, at: str, depth: int) -> None:
    if not isinstance(node, dict):
        if isinstance(node, bool) and at.endswith("/additionalProperties"):
            return
        raise SchemaRefused(f"`{at or '/'}` must be a schema object")
    if depth > MAX_DEPTH:
        raise SchemaRefused(f"the schema nests deeper than {MAX_DEPTH} levels at `{at}`")
    for keyword, value in node.items():
        where = f"{at}/{keyword}"
        if keyword not in ENFORCED and keyword not in ANNOTATIONS:
            raise SchemaRefused(f"the keyword `{keyword}` (at `{where}`) is not supported: decoding cannot enforce it")
        if keyword == "$ref" and not (isinstance(value, str) and value.startswith(("#/$defs/", "#/definitions/"))):
            raise SchemaRefused(f"`{where}`: only local references (#/$defs/...) are supported")
        if keyword in SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise SchemaRefused(f"`{where}` must be an object of schemas")
            for name, child in value.items():
                visit(child, f"{where}/{name}", depth + 1)
        elif keyword in SCHEMA_LISTS:
            if not isinstance(value, list):
                raise SchemaRefused(f"`{where}` must be a list of schemas")
            for index, child in enumerate(value):
                visit(child, f"{where}/{index}", depth + 1)
        elif keyword in ("items", "additionalProperties"):
            visit(value, where, depth + 1)


def refers_to(definitions: dict[str, Any], start: str, target: str, seen: set[str]) -> bool:
    """Whether definition `start` reaches `target` through `$ref`s."""
    for reference in references(definitions.get(start, {})):
        name = reference.rsplit("/", 1)[-1]
        if name == target:
            return True
        if name not in seen:
            seen.add(name)
            if refers_to(definitions, name, target, seen):
                return True
    return False


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for key, value in node.items() if key != "$ref" for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []
