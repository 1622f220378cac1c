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
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from model.data.fetch import is_below
from model.errors import FetchRefused, InvalidRequest, ModelNotFound, ModelNotReady
from model.identity.manifest import holds_model, manifest_sha1
from model.identity.recipe import canonical_json
from model.identity.refs import base_ref, manifest_ref
from model.jobs.state import read_status
from store import HashMismatch, ObjectStore, open_store
from store.hashing import sha1_bytes
from store.registry import LOCAL_SCHEMES, SCHEMES, scheme_of


def _objects(manifest: dict[str, Any]) -> list[str]:
    recipe = manifest["recipe"]
    bases = [recipe["base_sha1"]] + ([recipe["extra_base_sha1"]] if recipe.get("extra_base") else [])
    return [manifest["outputs"]["weights"]["sha1"], *bases]


def _checked_manifest(raw: bytes, model_sha1: str, where: str) -> dict[str, Any]:
    """The manifest, if its recipe really hashes to ``model_sha1``."""
    manifest = json.loads(raw)
    claimed = sha1_bytes(canonical_json(manifest["recipe"]))  # the definition, for any code version
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


#: The 2019 project's ``ipfs://<CID>/<name>``: content under a CID, which names no node to publish to.
_CID_HOST = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,}")


def _uri_parts(uri: str) -> tuple[str, str, str]:
    """(scheme, host, path) with local paths resolved, so that '..' cannot step out of an allowed prefix."""
    scheme = scheme_of(uri)
    if scheme in LOCAL_SCHEMES:
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return "local", "", str(Path(path).resolve())
    parts = urlsplit(uri)
    return scheme, parts.netloc.lower(), parts.path


def uri_allowed(uri: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``uri`` is one of the ``allowed`` URI prefixes or below one (by path segments)."""
    scheme, host, path = _uri_parts(uri)
    for entry in allowed:
        e_scheme, e_host, e_path = _uri_parts(entry)
        if (scheme, host) != (e_scheme, e_host):
            continue
        if scheme == "local":
            if is_below(Path(path), e_path):
                return True
        elif e_path.strip("/") == "" or path == e_path or path.startswith(e_path.rstrip("/") + "/"):
            return True
    return False


def check_model_uri(uri: str, allowed: tuple[str, ...]) -> None:
    """Refuse a client's model.uri unless the operator allowed it (MODEL_URI_ALLOW, the server's own store).

    A model.uri makes the server connect somewhere with its own credentials
    (an IPFS node's RPC port, an S3 bucket, a directory): a client may only
    choose among the targets the operator configured. Checked before any
    connection is made, for publishing and for fetching alike.
    """
    if any(ord(c) < 32 for c in uri):  # NUL included
        raise InvalidRequest("model.uri contains a control character")
    scheme = scheme_of(uri)
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES if s)
        raise InvalidRequest(f"model.uri must be a path or a {known} URI, got {uri!r}")
    if scheme == "ipfs" and _CID_HOST.fullmatch(urlsplit(uri).netloc):
        raise InvalidRequest(
            f"model.uri {uri} is the 2019 form ipfs://<CID>/<name>, which names content, not a node: "
            "publish with ipfs:// and fetch with the ipfs:///<CID> that publishing returns"
        )
    if not uri_allowed(uri, allowed):
        raise FetchRefused(f"model.uri {uri} is not an allowed publish target (MODEL_URI_ALLOW)")


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


def ensure_model(store: ObjectStore, model_sha1: str, uri: str | None, data_dir: str) -> None:
    """Make sure ``store`` holds the model, fetching it from ``uri`` by hash if needed (a remote
    source keeps its verified cache in ``data_dir``, the settings' DATA_DIR)."""
    if holds_model(store, model_sha1):
        return
    if not uri:
        record = read_status(store, model_sha1)
        if record is not None:  # a job, not a model: say how it stands
            raise ModelNotReady(model_sha1, record["status"], record.get("message", ""))
        raise ModelNotFound(model_sha1)
    parsed = urlparse(uri)
    publication_cid = parsed.path.strip("/") if parsed.scheme == "ipfs" else None
    source = open_store(uri, data_dir)
    try:
        copy_model(source, store, model_sha1, publication_cid or None)
    finally:
        source.close()
