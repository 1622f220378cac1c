"""Where a model is also published: one record per target, kept apart from the training status.

A failed publish must not make a trained model look failed, and a second client
asking for another target must not be dropped. So each (model, target) pair has
its own ref, ``models/<sha1>/publish/<key>``, written when the request arrives
(``pending``) and carried to ``ready`` or ``error`` by whichever process runs it
under its own lease, or ``refused`` at once when the target is not one the operator allowed
(the 2019 bodies name ``gs://`` targets: they still train). The training job, when it finishes, runs every pending
target; a request that finds the model already ready runs its own. Errors retry
by the rules of ``model.jobs.state``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from model.errors import PipelineError
from model.identity.refs import publication_lease_ref, publication_ref, publications_prefix
from model.jobs.state import DEFAULT_BACKOFF, error_fields, retry_due
from store import ObjectStore, StoreError, lease

log = logging.getLogger(__name__)

Publisher = Callable[[str], dict[str, Any]]  # target URI -> where it went


def read(store: ObjectStore, model_sha1: str, uri: str) -> dict[str, Any] | None:
    raw = store.get_ref(publication_ref(model_sha1, uri))
    return json.loads(raw) if raw is not None else None


def _write(store: ObjectStore, model_sha1: str, uri: str, status: str, **fields: Any) -> dict[str, Any]:
    record = {"uri": uri, "status": status, "updated_at": time.time(), **fields}
    store.set_ref(publication_ref(model_sha1, uri), json.dumps(record, sort_keys=True).encode())
    return record


def request(store: ObjectStore, model_sha1: str, uri: str) -> dict[str, Any]:
    """Record that ``uri`` wants the model (once; a later request finds the record); the current record."""
    pending = {"uri": uri, "status": "pending", "updated_at": time.time()}
    store.create_ref(publication_ref(model_sha1, uri), json.dumps(pending, sort_keys=True).encode())
    return read(store, model_sha1, uri) or pending


def refuse(store: ObjectStore, model_sha1: str, uri: str, reason: str) -> dict[str, Any]:
    """Record that a request asked for ``uri`` and was refused it (``reason``): the model still
    trains, and whoever looks at it sees why it was not published there. Never retried."""
    logging.getLogger("stl").warning("model %s: not publishing to %s: %s", model_sha1, uri, reason)
    return _write(store, model_sha1, uri, "refused", message=reason)


def all_for(store: ObjectStore, model_sha1: str) -> list[dict[str, Any]]:
    out = []
    for name in store.list_refs(publications_prefix(model_sha1)):
        raw = store.get_ref(name)
        if raw is not None:
            out.append(json.loads(raw))
    return sorted(out, key=lambda r: r["uri"])


def due(record: dict[str, Any] | None) -> bool:
    """Whether a publication should run now: never tried, or failed by the world and past its back-off."""
    return record is not None and (record["status"] == "pending" or retry_due(record))


def run(
    store: ObjectStore,
    model_sha1: str,
    uri: str,
    owner: str,
    ttl: float,
    publish: Publisher,
    backoff: float = DEFAULT_BACKOFF,
    retry_now: bool = False,
) -> dict[str, Any] | None:
    """Publish to ``uri`` if it is due and nobody else is at it; the resulting record (None if busy).

    ``retry_now`` retries any error at once (an operator at the CLI asking again).
    """
    name = publication_lease_ref(model_sha1, uri)
    if not lease.acquire(store, name, owner, ttl):
        return None
    try:
        current = read(store, model_sha1, uri)
        if current is not None and not due(current) and not (retry_now and current["status"] == "error"):
            return current
        attempt = int(current.get("attempt", 0)) + 1 if current is not None else 1
        _write(store, model_sha1, uri, "in_progress", attempt=attempt)
        try:
            where = {k: v for k, v in publish(uri).items() if k not in ("uri", "status")}
            return _write(store, model_sha1, uri, "ready", attempt=attempt, **where)
        except Exception as e:
            # Logged before the status is written, so that whoever reads the status finds the log.
            if isinstance(e, (StoreError, OSError)):
                # The status says "store error"; the log names which store and why, in one line.
                log.error("publishing model %s to %s failed: %s: %s", model_sha1, uri, type(e).__name__, e)
            elif not isinstance(e, PipelineError):
                log.exception("publishing model %s to %s failed", model_sha1, uri)
            return _write(store, model_sha1, uri, "error", **error_fields(e, attempt, backoff))
    finally:
        lease.release(store, name, owner)


def run_due(
    store: ObjectStore, model_sha1: str, owner: str, ttl: float, publish: Publisher, backoff: float
) -> list[dict[str, Any]]:
    """Run every due publication of a finished model (what the training job does last)."""
    done = []
    for record in all_for(store, model_sha1):
        if due(record):
            result = run(store, model_sha1, record["uri"], owner, ttl, publish, backoff)
            if result is not None:
                done.append(result)
    return done


PUBLIC_FIELDS = ("uri", "status", "message", "error_kind", "attempt", "manifest_sha1", "model_uri")


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in PUBLIC_FIELDS if k in record}
