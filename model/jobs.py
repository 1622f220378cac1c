"""Training jobs as state in the store, so any process can start, poll or resume one.

Per model (``model_sha1`` = recipe hash) the store holds refs:

* ``models/<sha1>/recipe``   the recipe's canonical JSON (what to build);
* ``models/<sha1>/status``   JSON: status new|in_progress|ready|error, message, artifacts;
* ``models/<sha1>/lease``    who is training it, until when (see ``store.lease``).

Nothing lives in a worker's memory: a request that lands on another worker reads
the same refs, and a worker killed mid-training simply stops renewing its lease,
so the next request after expiry takes the job over. Artifacts become visible
only when complete (the store writes atomically and the ``ready`` status is
written last).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from store import ObjectStore, StoreError, lease

from .errors import PipelineError
from .recipe import Recipe

STATUSES = ("new", "in_progress", "ready", "error")


def status_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/status"


def lease_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/lease"


def recipe_ref(model_sha1: str) -> str:
    return f"models/{model_sha1}/recipe"


def read_status(store: ObjectStore, model_sha1: str) -> dict[str, Any] | None:
    raw = store.get_ref(status_ref(model_sha1))
    return json.loads(raw) if raw is not None else None


def write_status(store: ObjectStore, model_sha1: str, status: str, **fields: Any) -> dict[str, Any]:
    record = {"model_sha1": model_sha1, "status": status, "updated_at": time.time(), **fields}
    store.set_ref(status_ref(model_sha1), json.dumps(record, sort_keys=True).encode())
    return record


def record_recipe(store: ObjectStore, recipe: Recipe, csv_source: str | None) -> None:
    body = {"recipe": recipe.to_dict(), "csv_source": csv_source}
    store.set_ref(recipe_ref(recipe.sha1), json.dumps(body, sort_keys=True).encode())


def read_recipe(store: ObjectStore, model_sha1: str) -> tuple[Recipe, str | None] | None:
    raw = store.get_ref(recipe_ref(model_sha1))
    if raw is None:
        return None
    body = json.loads(raw)
    return Recipe.from_dict(body["recipe"]), body.get("csv_source")


def list_models(store: ObjectStore) -> list[dict[str, Any]]:
    """Every known model's status record, newest first."""
    out = []
    for name in store.list_refs("models"):
        if name.endswith("/status"):
            raw = store.get_ref(name)
            if raw is not None:
                out.append(json.loads(raw))
    return sorted(out, key=lambda r: r.get("updated_at", 0), reverse=True)


class _Heartbeat:
    """Renews a lease in the background while the job runs."""

    def __init__(self, store: ObjectStore, name: str, owner: str, ttl: float) -> None:
        self._stop = threading.Event()
        self._args = (store, name, owner, ttl)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{name}")

    def _run(self) -> None:
        store, name, owner, ttl = self._args
        while not self._stop.wait(ttl / 3):
            # A missed beat is fine: the lease outlives several intervals.
            with contextlib.suppress(StoreError):
                lease.renew(store, name, owner, ttl)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


Trainer = Callable[[], dict[str, Any]]


def run_with_lease(store: ObjectStore, model_sha1: str, owner: str, ttl: float, train: Trainer) -> dict:
    """Run ``train`` (returning the ready-status fields) while holding the job's lease.

    The caller must already hold the lease. Errors the user can act on become an
    ``error`` status with their one-line message; anything else is recorded the
    same way and re-raised so it is not hidden.
    """
    try:
        with _Heartbeat(store, lease_ref(model_sha1), owner, ttl):
            write_status(store, model_sha1, "in_progress", owner=owner)
            fields = train()
            return write_status(store, model_sha1, "ready", **fields)
    except (PipelineError, StoreError) as e:
        return write_status(store, model_sha1, "error", message=str(e))
    except Exception as e:
        write_status(store, model_sha1, "error", message=f"internal error: {type(e).__name__}: {e}")
        raise
    finally:
        lease.release(store, lease_ref(model_sha1), owner)


def submit(
    store: ObjectStore,
    model_sha1: str,
    owner: str,
    ttl: float,
    start: Callable[[], None],
) -> dict[str, Any]:
    """Poll a job, or start it if nobody is running it.

    Returns the current status record. ``start`` is called (at most once across
    all processes, thanks to the lease) when this caller won the job; it must
    arrange for ``run_with_lease`` to run, e.g. in a background thread. ``owner``
    must be unique per attempt: a lease is re-entrant for its owner.
    """
    current = read_status(store, model_sha1)
    if current is not None and current["status"] in ("ready", "error"):
        return current
    holder = lease.holder(store, lease_ref(model_sha1))
    if holder is not None and not holder.expired():
        # "new" is the winner's answer alone; everyone else sees the job in progress.
        return {**(current or {"model_sha1": model_sha1}), "status": "in_progress"}
    if not lease.acquire(store, lease_ref(model_sha1), owner, ttl):
        return {"model_sha1": model_sha1, "status": "in_progress"}
    record = write_status(store, model_sha1, "new", owner=owner)
    start()
    return record
