"""Every ref name the project writes: the store's mutable namespace, in effect its schema.

The store itself knows only that a ref is a name with bytes (``store.cas``); what the names
mean lives here, in one place, so that gc, the catalog and the jobs cannot disagree on them:

    models/<sha1>/recipe                 the recipe a job was asked for (JSON)
    models/<sha1>/status                 the job record (JSON)
    models/<sha1>/lease                  who runs the job, until when
    models/<sha1>/cancel                 present while a cancel is asked for
    models/<sha1>/manifest               the manifest object's sha1: the model exists
    models/<sha1>/runs/<ms>-<sha1[:8]>   one run record object's sha1 per training run
    models/<sha1>/head-shards            the head shards a build has stored so far (JSON), while it runs
    models/<sha1>/publish/<key>          one publication record per target store (JSON)
    models/<sha1>/publish-lease/<key>    who publishes to that target, until when
    bases/<name>                         the pinned int8 base's sha1
    cache/tensor/<key>                   a decoded image tensor's sha1 (derived, droppable)
    cache/features/<key>                 one view's features' sha1 (derived, droppable)
    cache/photo-csv/<key>                the training CSV a zip or an uploaded folder became
    gc/lock                              the lease gc's sweep and a model's commit share
    gc/epoch                             how many deleting gc runs the store has seen
"""

from __future__ import annotations

import hashlib

GC_LOCK_REF = "gc/lock"
GC_EPOCH_REF = "gc/epoch"
#: Refs under it point at derived objects that gc may drop (and a training makes again).
CACHE_PREFIX = "cache/"


def model_prefix(model_sha1: str) -> str:
    """Every ref of one model starts with this (``store.list_refs`` of it lists them)."""
    return f"models/{model_sha1}"


def recipe_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/recipe"


def status_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/status"


def lease_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/lease"


def cancel_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/cancel"


#: The last part of ``head_shards_ref``: gc honours such a ref only while its job runs.
HEAD_SHARDS = "head-shards"


def head_shards_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/{HEAD_SHARDS}"


def manifest_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/manifest"


def runs_prefix(model_sha1: str) -> str:
    return f"models/{model_sha1}/runs"


def run_ref(model_sha1: str, finished_at: float, record_sha1: str) -> str:
    """Sorted by time (milliseconds), told apart by the record's own hash."""
    return f"{runs_prefix(model_sha1)}/{int(finished_at * 1000)}-{record_sha1[:8]}"


def _target_key(uri: str) -> str:
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


def publications_prefix(model_sha1: str) -> str:
    return f"models/{model_sha1}/publish"


def publication_ref(model_sha1: str, uri: str) -> str:
    return f"{publications_prefix(model_sha1)}/{_target_key(uri)}"


def publication_lease_ref(model_sha1: str, uri: str) -> str:
    return f"models/{model_sha1}/publish-lease/{_target_key(uri)}"


def base_ref(name: str) -> str:
    return f"bases/{name}"


def tensor_cache_ref(key_sha1: str) -> str:
    return f"{CACHE_PREFIX}tensor/{key_sha1}"


def features_cache_ref(key_sha1: str) -> str:
    return f"{CACHE_PREFIX}features/{key_sha1}"


def photo_csv_cache_ref(key_sha1: str) -> str:
    return f"{CACHE_PREFIX}photo-csv/{key_sha1}"
