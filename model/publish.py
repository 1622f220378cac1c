"""Publish a trained model to another store, and fetch one back by hash.

``model.uri`` in a train request names where the finished model should also
live (``/path``, ``local://…``, ``s3://…``, ``gs://…``, ``ipfs://``); a server
that is asked to label images with a model it does not hold fetches it from
that URI. What travels is what inference needs — manifest, head weights, base
weights and the base's record — and every object is verified by hash on both
ends. The manifest is additionally checked against the model hash itself: its
recipe must hash to the requested ``model_sha1``, so a store cannot hand back
some other model under this name.
"""

from __future__ import annotations

import json
from typing import Any

from store import HashMismatch, ObjectStore, open_store

from .bases.registry import base_ref
from .errors import ModelNotFound
from .manifest import manifest_ref, manifest_sha1
from .recipe import Recipe


def _objects(manifest: dict[str, Any]) -> list[str]:
    return [manifest["outputs"]["weights"]["sha1"], manifest["recipe"]["base_sha1"]]


def copy_model(src: ObjectStore, dst: ObjectStore, model_sha1: str) -> str:
    """Copy a model's manifest and artifacts from ``src`` to ``dst``; returns the manifest sha1."""
    msha1 = manifest_sha1(src, model_sha1)
    if msha1 is None:
        raise ModelNotFound(model_sha1)
    raw = src.get(msha1)  # verified against msha1
    manifest = json.loads(raw)
    claimed = Recipe.from_dict(manifest["recipe"]).sha1
    if manifest.get("model_sha1") != model_sha1 or claimed != model_sha1:
        raise HashMismatch(model_sha1, claimed, f"manifest {msha1} from {src.location}")
    for sha1 in _objects(manifest):
        if not dst.has(sha1):
            dst.put(src.get(sha1))
    base_record = src.get_ref(base_ref(manifest["recipe"]["base"]))
    if base_record is not None and dst.get_ref(base_ref(manifest["recipe"]["base"])) is None:
        dst.set_ref(base_ref(manifest["recipe"]["base"]), base_record)
    dst.put(raw)
    dst.set_ref(manifest_ref(model_sha1), msha1.encode())  # last: the model appears whole or not at all
    return msha1


def publish_model(store: ObjectStore, model_sha1: str, uri: str) -> dict[str, Any]:
    """Copy a finished model to the store named by ``uri``; returns where it went."""
    target = open_store(uri)
    try:
        msha1 = copy_model(store, target, model_sha1)
        published: dict[str, Any] = {"uri": uri, "manifest_sha1": msha1}
        cid = target.native_id(msha1)
        if cid:
            published["manifest_cid"] = cid
        return published
    finally:
        target.close()


def ensure_model(store: ObjectStore, model_sha1: str, uri: str | None) -> None:
    """Make sure ``store`` holds the model, fetching it from ``uri`` by hash if needed."""
    if manifest_sha1(store, model_sha1) is not None:
        return
    if not uri:
        raise ModelNotFound(model_sha1)
    source = open_store(uri)
    try:
        copy_model(source, store, model_sha1)
    finally:
        source.close()
