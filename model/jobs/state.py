"""Training jobs as state in the store, so any process can start, poll or resume one.

Per model (``model_sha1`` = recipe hash) the store holds refs:

* ``models/<sha1>/recipe``   the recipe's canonical JSON (what to build);
* ``models/<sha1>/status``   JSON: status new|in_progress|ready|error|cancelled, message,
                             artifacts, attempt, progress (stage, done/total, ETA), and for
                             errors their kind and when a retry is allowed;
* ``models/<sha1>/lease``    who is training it, until when (see ``store.lease``);
* ``models/<sha1>/cancel``   a request that the running attempt stop (see ``model.jobs.progress``).

Nothing lives in a worker's memory: a request that lands on another worker reads
the same refs, and a worker killed mid-training simply stops renewing its lease,
so the next request after expiry takes the job over. Artifacts become visible
only when complete (the store writes atomically and the ``ready`` status is
written last).

Errors come in two kinds. A *permanent* one is caused by the data (a sha1
mismatch, not an image, one label only): the same inputs give the same failure,
so the status stays. A *transient* one is caused by the world (a network or HTTP
error, a full disk, an unreachable or corrupt store): the same request, sent
again after a back-off that doubles with each attempt, runs the job again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from model.config import Settings
from model.errors import JobCancelled, JobStateError, ModelNotFound, PipelineError
from model.identity.manifest import load_manifest, missing_objects
from model.identity.recipe import Recipe
from model.identity.refs import cancel_ref, lease_ref, manifest_ref, model_prefix, recipe_ref, status_ref
from model.jobs import fence as gc_fence
from model.jobs.progress import JobProgress, request_cancel
from store import ObjectStore, StoreError, StoreUnwritable, lease

#: Statuses of a job that some process is (or is about to be) running.
RUNNING = ("new", "in_progress")
#: Back-off before the first retry of a transient error (RETRY_BACKOFF's default, from model.config);
#: doubled per attempt, at most MAX_BACKOFF.
DEFAULT_BACKOFF = Settings.retry_backoff
MAX_BACKOFF = 600.0


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` came from the world rather than the request's data (see the module doc)."""
    if isinstance(error, PipelineError):
        return bool(getattr(error, "transient", False))
    return True  # store failures, OSError (disk full), bugs: the data did not cause them


def retry_delay(attempt: int, backoff: float) -> float:
    return min(backoff * 2 ** max(attempt - 1, 0), MAX_BACKOFF)


def model_intact(store: ObjectStore, model_sha1: str, record: dict[str, Any]) -> bool:
    """Whether a ready model is whole: its manifest hashes to its name and, if a gc has run since
    the ready ``record`` was last checked (``model.jobs.fence``), every object it names is here."""
    try:
        manifest = load_manifest(store, model_sha1)
    except (ModelNotFound, StoreError):
        return False
    current = gc_fence.epoch(store)
    if record.get("gc_epoch") == current:
        return True
    if missing_objects(store, manifest):
        return False
    # Checked at this epoch: later polls are cheap. Best effort, and only over the record we read
    # (a read-only store still answers, and a newer status is never overwritten).
    raw = store.get_ref(status_ref(model_sha1))
    if raw is not None and json.loads(raw) == record:
        with contextlib.suppress(StoreError, OSError):
            store.replace_ref(status_ref(model_sha1), raw, _encode({**record, "gc_epoch": current}))
    return True


def retry_due(record: dict[str, Any]) -> bool:
    """Whether an ``error`` status may be retried now."""
    return (
        record.get("status") == "error"
        and record.get("error_kind") == "transient"
        and time.time() >= record.get("retry_at", 0)
    )


def read_status(store: ObjectStore, model_sha1: str) -> dict[str, Any] | None:
    raw = store.get_ref(status_ref(model_sha1))
    return json.loads(raw) if raw is not None else None


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


def write_status(store: ObjectStore, model_sha1: str, status: str, **fields: Any) -> dict[str, Any]:
    record = {"model_sha1": model_sha1, "status": status, "updated_at": time.time(), **fields}
    store.set_ref(status_ref(model_sha1), _encode(record))
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


#: Builds the model, reporting through the progress it is given; returns the ready-status fields.
Trainer = Callable[[JobProgress], dict[str, Any]]


def error_fields(error: BaseException, attempt: int, backoff: float) -> dict[str, Any]:
    """What an ``error`` record says about ``error``: message, kind, attempt, and when to retry."""
    transient = is_transient(error)
    fields: dict[str, Any] = {
        "message": error_message(error),
        "error_kind": "transient" if transient else "permanent",
        "attempt": attempt,
    }
    if transient:
        fields["retry_at"] = time.time() + retry_delay(attempt, backoff)
    return fields


def error_message(error: BaseException) -> str:
    """The one line a client sees; store errors name the kind of failure, never the store's location."""
    if isinstance(error, PipelineError):
        return str(error)
    if isinstance(error, StoreUnwritable):  # its message names the reason, never the location
        return f"store unavailable: {error}"
    if isinstance(error, StoreError):
        return f"store error ({type(error).__name__}); see the server log"
    if isinstance(error, OSError):
        return f"storage error: {error.strerror or type(error).__name__}"
    return f"internal error ({type(error).__name__}); see the server log"


def run_with_lease(
    store: ObjectStore,
    model_sha1: str,
    owner: str,
    ttl: float,
    train: Trainer,
    backoff: float = DEFAULT_BACKOFF,
) -> dict:
    """Run ``train`` (returning the ready-status fields) while holding the job's lease.

    The caller must already hold the lease. A failure becomes an ``error`` status
    with its one-line message, its kind and when it may be retried; failures that
    are not the user's (store, disk, bugs) are re-raised as well so that their
    traceback reaches the log.
    """
    attempt = int((read_status(store, model_sha1) or {}).get("attempt", 1))
    started = time.time()

    def progress_status(progress: dict[str, Any]) -> None:
        write_status(
            store,
            model_sha1,
            "in_progress",
            owner=owner,
            attempt=attempt,
            started_at=started,
            progress=progress,
        )

    try:
        with lease.Heartbeat(store, lease_ref(model_sha1), owner, ttl):
            write_status(store, model_sha1, "in_progress", owner=owner, attempt=attempt, started_at=started)
            fields = train(JobProgress(store, model_sha1, owner, progress_status))
            return write_status(store, model_sha1, "ready", attempt=attempt, started_at=started, **fields)
    except JobCancelled as e:
        return write_status(store, model_sha1, "cancelled", message=str(e), attempt=attempt)
    except Exception as e:
        record = write_status(store, model_sha1, "error", **error_fields(e, attempt, backoff))
        if not isinstance(e, PipelineError):
            raise
        return record
    finally:
        store.delete_ref(cancel_ref(model_sha1))
        lease.release(store, lease_ref(model_sha1), owner)


def fail_to_start(
    store: ObjectStore, model_sha1: str, owner: str, error: BaseException, backoff: float = DEFAULT_BACKOFF
) -> dict[str, Any]:
    """The job ``owner`` won could not be started (its executor refused it): record the error as
    ``run_with_lease`` would, and free the lease so that a retry may take it."""
    attempt = int((read_status(store, model_sha1) or {}).get("attempt", 1))
    try:
        return write_status(store, model_sha1, "error", **error_fields(error, attempt, backoff))
    finally:
        lease.release(store, lease_ref(model_sha1), owner)


def next_attempt(current: dict[str, Any] | None) -> int:
    """The attempt number of a job started now: a failed or cancelled one counts up."""
    if current is not None and current["status"] in ("error", "cancelled"):
        return int(current.get("attempt", 1)) + 1
    return 1


def ready_status(store: ObjectStore, model_sha1: str) -> dict[str, Any] | None:
    """The model's status record if it is ready and whole (``model_intact``), else None."""
    current = read_status(store, model_sha1)
    if current is not None and current["status"] == "ready" and model_intact(store, model_sha1, current):
        return current
    return None


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
    if current is not None and current["status"] == "ready":
        if model_intact(store, model_sha1, current):
            return current
        # Reported ready, but the manifest or an object it names is gone or corrupt: build it
        # again (puts repair objects).
        current = {**current, "status": "error", "error_kind": "transient", "retry_at": 0}
    if current is not None and current["status"] == "error" and not retry_due(current):
        return current
    attempt = next_attempt(current)
    holder = lease.holder(store, lease_ref(model_sha1))
    if holder is not None and not holder.expired():
        # "new" is the winner's answer alone; everyone else sees the job in progress.
        return {**(current or {"model_sha1": model_sha1}), "status": "in_progress"}
    if not lease.acquire(store, lease_ref(model_sha1), owner, ttl):
        return {"model_sha1": model_sha1, "status": "in_progress"}
    record = write_status(store, model_sha1, "new", owner=owner, attempt=attempt)
    start()
    return record


def lease_lapsed(store: ObjectStore, model_sha1: str) -> bool:
    """Whether nobody holds the job's lease now (never taken, released, or expired)."""
    held = lease.holder(store, lease_ref(model_sha1))
    return held is None or held.expired()


def shown_status(store: ObjectStore, record: dict[str, Any]) -> str:
    """A status record's status as clients see it: ``stalled`` for a running job nobody holds."""
    if record["status"] in RUNNING and lease_lapsed(store, record["model_sha1"]):
        return "stalled"
    return record["status"]


def stalled(store: ObjectStore) -> list[str]:
    """Jobs recorded as new or running whose lease lapsed: their process died or was stopped."""
    out = []
    for name in store.list_refs("models"):
        if name.endswith("/status"):
            raw = store.get_ref(name)
            model_sha1 = name.split("/")[1]
            if (
                raw is not None
                and json.loads(raw).get("status") in RUNNING
                and lease_lapsed(store, model_sha1)
            ):
                out.append(model_sha1)
    return sorted(out)


def take_over(store: ObjectStore, model_sha1: str, owner: str, ttl: float) -> dict[str, Any] | None:
    """Take a stalled job's lease for ``owner`` and record it as new again (the same attempt: the
    world interrupted it); None if it is not stalled any more or another process won it."""
    current = read_status(store, model_sha1)
    if current is None or current["status"] not in RUNNING or not lease_lapsed(store, model_sha1):
        return None
    if not lease.acquire(store, lease_ref(model_sha1), owner, ttl):
        return None
    return write_status(
        store, model_sha1, "new", owner=owner, attempt=int(current.get("attempt", 1)), resumed=True
    )


#: Who holds a lease that a stopping process handed back: nobody renews it, anybody may take it.
HANDED_OVER = "handed-over"


def hand_over(store: ObjectStore, model_sha1: str, owner: str) -> None:
    """A process that stops gives up the job it runs as ``owner``: the lease lapses at once (its
    heartbeat cannot renew it: the holder is no longer ``owner``), so another worker resumes it."""
    current = store.get_ref(lease_ref(model_sha1))
    held = lease.Lease.decode(current) if current is not None else None
    if held is not None and held.owner == owner:
        store.replace_ref(
            lease_ref(model_sha1), current, lease.Lease(HANDED_OVER, 0.0, held.acquired_at).encode()
        )  # type: ignore[arg-type]


def cancel(store: ObjectStore, model_sha1: str) -> dict[str, Any]:
    """Ask a new or running job to stop at its next progress beat; its status record now.

    ModelNotFound for an unknown model; JobStateError when there is nothing to cancel.
    """
    current = read_status(store, model_sha1)
    if current is None:
        raise ModelNotFound(model_sha1)
    if current["status"] not in RUNNING:
        raise JobStateError(f"model {model_sha1} is {current['status']}; only a running job can be cancelled")
    request_cancel(store, model_sha1, current.get("owner", ""))
    return {**current, "cancel_requested": True}


def delete(store: ObjectStore, model_sha1: str) -> dict[str, Any]:
    """Forget a model that is not running: its refs go, its objects stay until ``stl gc``.

    Returns the status it had. A running job must be cancelled first (JobStateError).
    """
    current = read_status(store, model_sha1)
    names = store.list_refs(model_prefix(model_sha1))
    if current is None and manifest_ref(model_sha1) not in names:
        raise ModelNotFound(model_sha1)
    if current is not None and current["status"] in RUNNING:
        holder = lease.holder(store, lease_ref(model_sha1))
        if holder is not None and not holder.expired():
            raise JobStateError(f"model {model_sha1} is {current['status']}; cancel it before deleting it")
    for name in names:
        store.delete_ref(name)
    return current or {"model_sha1": model_sha1, "status": "ready"}


def wait_or_run(
    store: ObjectStore,
    model_sha1: str,
    owner: str,
    ttl: float,
    train: Trainer,
    backoff: float = DEFAULT_BACKOFF,
    force: bool = False,
    on_wait: Callable[[], None] | None = None,
    poll: float = 2.0,
) -> dict[str, Any]:
    """Run the job in this process and return its final status, for callers that block (CLI, Python API).

    A ready model is returned as it is unless ``force``. If another process holds
    the job's lease, wait (calling ``on_wait`` each poll) until it finishes or its
    lease lapses, then take over.
    """
    while True:
        status = read_status(store, model_sha1)
        if (
            status is not None
            and status["status"] == "ready"
            and not force
            and model_intact(store, model_sha1, status)
        ):
            return status
        if lease.acquire(store, lease_ref(model_sha1), owner, ttl):
            write_status(store, model_sha1, "new", owner=owner, attempt=next_attempt(status))
            return run_with_lease(store, model_sha1, owner, ttl, train, backoff)
        if on_wait is not None:
            on_wait()
        time.sleep(poll)
        force = False  # what the other process built is what was asked for
