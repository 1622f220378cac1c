"""The OpenAPI document, loaded once, and request validation against its schemas.

The YAML file is the single description of the API: Swagger UI renders it,
schemathesis tests against it, and request bodies are checked with the same
schemas, so the documentation cannot drift from what the server accepts.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

from .errors import InvalidInput

SHA1_PATTERN = "^[0-9a-f]{40}$"


@functools.cache
def spec_text() -> str:
    return resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")


@functools.cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(spec_text())


@functools.cache
def _validator(schema_name: str) -> Draft4Validator:
    # OpenAPI 3.0 schemas are a dialect of JSON Schema draft 4; "$ref"s resolve
    # against a root that carries the document's components.
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": spec()["components"]}
    return Draft4Validator(root)


def validate(instance: Any, schema_name: str) -> None:
    """Raise InvalidInput naming every offending field (sorted, so messages are stable)."""
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: _path(e.absolute_path))
    # A value of the wrong type fails its oneOf too; the type is the one thing to say.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if not (e.validator == "oneOf" and tuple(e.absolute_path) in mistyped)]
    if errors:
        raise InvalidInput("; ".join(dict.fromkeys(describe(e) for e in errors)))


def query_parameters(path: str, method: str) -> set[str] | None:
    """Names of the query parameters declared for an operation; None if it is not in the document."""
    operation = spec()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe(error: ValidationError) -> str:
    """One line per error that says which field and what is wrong with it."""
    where = _path(error.absolute_path)
    field = where or "request body"
    value = error.instance
    kind = error.validator
    if kind == "required":
        missing = [f for f in error.validator_value if f not in value]
        prefix = f"{where}." if where else ""
        return "missing field: " + ", ".join(prefix + f for f in missing)
    if kind == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in value if k not in known)
        prefix = f"{where}." if where else ""
        return "unknown field: " + ", ".join(prefix + f for f in extra)
    if kind == "type":
        wanted = error.validator_value
        article = "an" if wanted in ("integer", "object", "array") else "a"
        return f"{field} must be {article} {wanted}, got {_json_type(value)}"
    if (kind == "pattern" and error.validator_value == SHA1_PATTERN) or (
        kind == "maxLength" and error.schema.get("pattern") == SHA1_PATTERN
    ):
        return f"{field} must be a sha1 (40 lowercase hex digits), got {value!r}"
    if kind in ("minimum", "maximum"):
        op = ">=" if kind == "minimum" else "<="
        return f"{field} must be {op} {error.validator_value:g}, got {value!r}"
    if kind in ("minLength", "minItems"):
        return f"{field} must not be empty"
    if kind == "minProperties":
        return f"{field} needs at least one of: {', '.join(error.schema.get('properties', {}))}"
    if kind == "oneOf":
        choices = [" and ".join(sub.get("required", [])) for sub in error.validator_value]
        return f"{field} needs exactly one of: {', '.join(choices)}"
    if kind == "maxItems":
        return f"{field} has {len(value)} items, at most {error.validator_value} are allowed"
    if kind == "maxLength":
        return f"{field} is longer than {error.validator_value} characters"
    if kind == "enum":
        return f"{field} must be one of {', '.join(map(str, error.validator_value))}, got {value!r}"
    return f"{field}: {error.message}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
