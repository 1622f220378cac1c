"""Publish a trained model to another store, and fetch one back by hash.

``model.uri`` in a train request names where the finished model should also
live (``/path``, ``local://…``, ``s3://…``, ``gs://…``, ``ipfs://``; to fetch
from IPFS, whose refs are per node, use the ``ipfs:///<CID>`` that publishing
returned: the CID of a publication record); a server
that is asked to label images with a model it does not hold fetches it from
that URI. What travels is what inference needs — manifest, head weights, base
weights and the base's record — and every object is verified by hash on both
ends. The manifest is additionally checked against the model hash itself: its
recipe must hash to the requested ``model_sha1``, so a store cannot hand back
some other model under this name.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import urlparse

from store import HashMismatch, ObjectStore, open_store

from .bases.registry import base_ref
from .errors import ModelNotFound
from .manifest import holds_model, manifest_ref, manifest_sha1
from .recipe import Recipe


def _objects(manifest: dict[str, Any]) -> list[str]:
    return [manifest["outputs"]["weights"]["sha1"], manifest["recipe"]["base_sha1"]]


def _checked_manifest(raw: bytes, model_sha1: str, where: str) -> dict[str, Any]:
    """The manifest, if its recipe really hashes to ``model_sha1``."""
    manifest = json.loads(raw)
    claimed = Recipe.from_dict(manifest["recipe"]).sha1
    if manifest.get("model_sha1") != model_sha1 or claimed != model_sha1:
        raise HashMismatch(model_sha1, claimed, where)
    return manifest


def copy_model(
    src: ObjectStore, dst: ObjectStore, model_sha1: str, publication_cid: str | None = None
) -> str:
    """Copy a model's manifest and artifacts from ``src`` to ``dst``; returns the manifest sha1.

    With ``publication_cid`` (IPFS, which has no shared refs) the sha1 -> CID map
    comes from a publication record read by its CID; the record is not trusted:
    every object it names is still verified against its sha1, and the manifest
    against the model hash.
    """
    if publication_cid:
        record = json.loads(src.get_native(publication_cid))
        if record.get("model_sha1") != model_sha1:
            raise HashMismatch(model_sha1, str(record.get("model_sha1")), f"publication {publication_cid}")
        for sha1, cid in record["cids"].items():
            src.link_native_id(sha1, cid)
        msha1 = record["manifest_sha1"]
    else:
        found = manifest_sha1(src, model_sha1)
        if found is None:
            raise ModelNotFound(model_sha1)
        msha1 = found
    raw = src.get(msha1)  # verified against msha1
    manifest = _checked_manifest(raw, model_sha1, f"manifest {msha1} from {src.location}")
    for sha1 in _objects(manifest):
        if not dst.has(sha1):
            dst.put(src.get(sha1))
    base_record = src.get_ref(base_ref(manifest["recipe"]["base"]))
    if base_record is not None and dst.get_ref(base_ref(manifest["recipe"]["base"])) is None:
        dst.set_ref(base_ref(manifest["recipe"]["base"]), base_record)
    dst.put(raw)
    dst.set_ref(manifest_ref(model_sha1), msha1.encode())  # last: the model appears whole or not at all
    return msha1


REMOTE_SCHEMES = ("s3", "gs", "ipfs")


def check_model_uri(uri: str, import_root: str) -> None:
    """Refuse a model.uri the service must not use: a local path outside ``import_root``.

    A user-supplied URI makes the server read or write there, so local paths get
    the same rule as local fetches; remote stores are reached with the server's
    own credentials and need no such fence.
    """
    from pathlib import Path

    from .errors import FetchRefused, InvalidRequest
    from .fetch import is_below

    parsed = urlparse(uri)
    if parsed.scheme in REMOTE_SCHEMES:
        return
    if parsed.scheme not in ("", "local", "file"):
        raise InvalidRequest(f"model.uri must be a path, local://, s3://, gs:// or ipfs:// URI, got {uri!r}")
    path = Path(uri.split("://", 1)[1] if "://" in uri else uri).resolve()
    if not import_root or not is_below(path, import_root):
        raise FetchRefused(f"model.uri {uri} is outside the import root (IMPORT_ROOT)")


def publish_model(store: ObjectStore, model_sha1: str, uri: str, data_dir: str) -> dict[str, Any]:
    """Copy a finished model to the store named by ``uri``; returns where it went.

    A remote target gets its own cache under ``data_dir``: sharing the source's
    would make every object look already published.
    """
    cache = os.path.join(data_dir, "publish-cache", hashlib.sha1(uri.encode()).hexdigest()[:16])
    target = open_store(uri, cache)
    try:
        msha1 = copy_model(store, target, model_sha1)
        published: dict[str, Any] = {"uri": uri, "manifest_sha1": msha1}
        if target.native_id(msha1):
            # IPFS has no shared refs: a publication record, found by its CID, maps
            # the model's sha1s to CIDs for any other node.
            manifest = json.loads(target.get(msha1))
            cids = {sha1: target.native_id(sha1) for sha1 in [msha1, *_objects(manifest)]}
            record = {
                "format": "stl-publication/1",
                "model_sha1": model_sha1,
                "manifest_sha1": msha1,
                "cids": cids,
            }
            cid = target.native_id(target.put(json.dumps(record, sort_keys=True).encode()))
            published["model_uri"] = f"ipfs:///{cid}"
        return published
    finally:
        target.close()


def ensure_model(store: ObjectStore, model_sha1: str, uri: str | None) -> None:
    """Make sure ``store`` holds the model, fetching it from ``uri`` by hash if needed."""
    if holds_model(store, model_sha1):
        return
    if not uri:
        raise ModelNotFound(model_sha1)
    parsed = urlparse(uri)
    publication_cid = parsed.path.strip("/") if parsed.scheme == "ipfs" else None
    source = open_store(uri)
    try:
        copy_model(source, store, model_sha1, publication_cid or None)
    finally:
        source.close()
