"""A small JSON Schema validator for the keywords hvx-bench's schema uses.

``jsonschema`` is not a dependency of hvx (nor installed on the project's
machines), and the result schema needs only a handful of keywords. Supported:
``type`` (a name or a list), ``const``, ``enum``, ``properties``, ``required``,
``additionalProperties`` (bool or schema), ``items``, ``minItems``,
``minLength``, ``minimum``, ``exclusiveMinimum`` and local ``$ref``
(``#/$defs/...``). Any other keyword raises, so the schema cannot silently
outgrow the validator. Where ``jsonschema`` is installed the tests check it
agrees.
"""

from __future__ import annotations

from typing import Any

__all__ = ["validate"]

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_KNOWN = _ANNOTATIONS | {
    "type",
    "const",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "minLength",
    "minimum",
    "exclusiveMinimum",
    "$ref",
}


def validate(instance: Any, schema: dict) -> list[str]:
    """Validates ``instance`` against ``schema``.

    Args:
        instance: A JSON-like value (dicts, lists, str, int, float, bool, None).
        schema: The schema (its ``$defs`` resolve ``$ref``).

    Returns:
        The errors, each ``"<path>: expected ..., got ..."``; empty when valid.

    Raises:
        ValueError: If the schema uses a keyword this validator does not know.
    """
    errors: list[str] = []
    _check(instance, schema, schema, "$", errors)
    return errors


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"expected a local $ref like '#/$defs/name', got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"expected schema keywords from {sorted(_KNOWN)}, got {sorted(unknown)}")
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, errors)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[n](value) for n in names):
            errors.append(
                f"{path}: expected type {names}, got {type(value).__name__} {value!r:.60}"
            )
            return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r:.60}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: expected one of {schema['enum']}, got {value!r:.60}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: expected >= {schema['minimum']}, got {value}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: expected > {schema['exclusiveMinimum']}, got {value}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: expected at least {schema['minLength']} characters, got {value!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: expected at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]", errors)
    if isinstance(value, dict):
        _check_object(value, schema, root, path, errors)


def _check_object(value: dict, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    for key in schema.get("required", []):
        if key not in value:
            errors.append(f"{path}: expected key {key!r}, got keys {sorted(value)}")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            _check(item, props[key], root, f"{path}.{key}", errors)
        elif extra is False:
            errors.append(f"{path}: expected keys from {sorted(props)}, got unknown {key!r}")
        elif isinstance(extra, dict):
            _check(item, extra, root, f"{path}.{key}", errors)
