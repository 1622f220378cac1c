"""The manifest: one JSON object linking a model to everything that made it.

It is itself content (stored under its sha1) and byte-identical for the same
recipe on the same machine: sorted keys, no timestamps, images in CSV order.
Timings and host names go into a separate run record, never into an identity.
"""

from __future__ import annotations

import json
from typing import Any

from store import ObjectStore

from .errors import ModelNotFound

FORMAT = "stl-manifest/1"


def manifest_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/manifest"


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
