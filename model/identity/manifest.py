"""The manifest: one JSON object linking a model to everything that made it.

It is itself content (stored under its sha1) and byte-identical for the same
recipe on any machine: sorted keys, no timestamps. Timings and host names go
into a separate run record, never into an identity.

Its size does not grow with the CSV: the per-row records (each row's image,
label, split, tensor and feature objects), which a 100,000-row CSV makes tens of
megabytes of, live in a row table it links to by sha1 (``inputs.rows``): JSON
lines in CSV order, read only by whoever needs the rows (verify, gc, the model's
page). Format 1 manifests kept them inline as ``inputs.images``; both are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from model.errors import ModelNotFound
from model.identity.refs import manifest_ref
from store import ObjectStore

FORMAT = "stl-manifest/2"
#: The row table: one JSON object per line (sorted keys), in CSV order.
ROWS_FORMAT = "stl-rows/1"


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    return (
        json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    ).encode()


def save_manifest(store: ObjectStore, manifest: dict[str, Any]) -> str:
    sha1 = store.put(encode_manifest(manifest))
    store.set_ref(manifest_ref(manifest["model_sha1"]), sha1.encode())
    return sha1


def manifest_sha1(store: ObjectStore, model_sha1: str) -> str | None:
    raw = store.get_ref(manifest_ref(model_sha1))
    return raw.decode() if raw is not None else None


def _held_manifest(store: ObjectStore, model_sha1: str) -> str | None:
    sha1 = manifest_sha1(store, model_sha1)
    return sha1 if sha1 is not None and store.has(sha1) else None


def holds_model(store: ObjectStore, model_sha1: str) -> bool:
    """Whether the store names a manifest for the model and holds it."""
    return _held_manifest(store, model_sha1) is not None


def load_manifest(store: ObjectStore, model_sha1: str) -> dict[str, Any]:
    """The manifest of a trained model (verified by hash on read), or ModelNotFound."""
    sha1 = _held_manifest(store, model_sha1)
    if sha1 is None:
        raise ModelNotFound(model_sha1)
    return json.loads(store.get(sha1))


def encode_rows(rows: Iterable[dict[str, Any]]) -> bytes:
    """The row table's bytes: one canonical JSON object per line."""
    return b"".join(
        json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
        + b"\n"
        for row in rows
    )


def manifest_rows(store: ObjectStore, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The per-row records of a manifest, in CSV order (the table is read, verified, on demand)."""
    inputs = manifest["inputs"]
    if "images" in inputs:  # format 1: inline
        yield from inputs["images"]
        return
    for line in store.get(inputs["rows"]["sha1"]).splitlines():
        yield json.loads(line)


#: The row-table fields that name an object (besides the image): its cache intermediates.
ROW_OBJECT_FIELDS = ("tensor_sha1", "crop_tensor_sha1", "features_sha1")


def named_objects(store: ObjectStore, manifest: dict[str, Any]) -> dict[str, str]:
    """Every object the manifest names, each with what it is ("features of CSV line 3", ...)."""
    inputs, recipe = manifest["inputs"], manifest["recipe"]
    named = {inputs["csv"]["sha1"]: "the CSV", recipe["base_sha1"]: "the base network"}
    if recipe.get("extra_base_sha1"):
        named[recipe["extra_base_sha1"]] = "the extra base network"
    if "rows" in inputs:
        named[inputs["rows"]["sha1"]] = "the row table"
    named[manifest["outputs"]["weights"]["sha1"]] = "the weights"
    rows_sha1 = inputs.get("rows", {}).get("sha1")
    if rows_sha1 is not None and not store.has(rows_sha1):
        return named  # the table is missing itself: the rows it would name cannot be listed
    for row in manifest_rows(store, manifest):
        where = f"CSV line {row['line']}"
        named.setdefault(row["image_sha1"], f"the image of {where}")
        for field in ROW_OBJECT_FIELDS:
            values = row.get(field)
            for sha1 in values if isinstance(values, list) else [values]:
                if sha1:
                    named.setdefault(sha1, f"{field.removesuffix('_sha1').replace('_', ' ')} of {where}")
    return named


def missing_objects(store: ObjectStore, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(sha1, what it is) for each object the manifest names that the store lacks, in manifest order."""
    return [(sha1, what) for sha1, what in named_objects(store, manifest).items() if not store.has(sha1)]
