"""POST /train: bind the request to a recipe, then start the job or report on it.

The cheap part (validate, fetch and parse the CSV, hash the recipe) runs in the
request so that bad input is a 4xx at once rather than an ``error`` status
later. The job itself runs in a background thread of whichever worker won the
lease, or with EXECUTOR=ray as a detached actor on the Ray cluster, which takes
the lease over; its state lives in the store, so every worker answers polls alike.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from model.context import Job
from model.data.photo_csv import photo_csv_key, remember_csv, remembered_csv, store_photos
from model.data.photo_trees import PhotoTree, StoredTree, ZipTree
from model.errors import ExecutorUnavailable, FetchRefused, InvalidRequest, JobStateError, ModelNotFound
from model.execution.choice import on_cluster
from model.identity.recipe import Recipe
from model.jobs import publications
from model.jobs import state as jobs
from model.lifecycle.publish import check_model_uri
from model.run.runner import publisher, run_job
from model.training.pipeline import prepare_recipe, store_csv

from .errors import Busy
from .metrics import observe_training
from .service import Service, resolve_client_source

log = logging.getLogger(__name__)

#: Status fields a client sees; the lease owner and timestamps stay internal.
PUBLIC_FIELDS = (
    "model_sha1",
    "status",
    "message",
    "manifest_sha1",
    "weights_sha1",
    "labels",
    "validation_accuracy",
    "error_kind",
    "attempt",
    "published",
    "progress",
)


def public_status(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record[k] for k in PUBLIC_FIELDS if k in record}
    if record.get("status") != "in_progress":
        out.pop("progress", None)  # a finished job's last beat says nothing
    if record.get("status") != "error" and record.get("attempt", 1) == 1:
        out.pop("attempt", None)  # a first attempt that has not failed: nothing to say
    if "retry_at" in record:
        out["retry_after"] = max(0, round(record["retry_at"] - time.time()))
    return out


def _owner() -> str:
    # Unique per request, not per process: two threads of one worker racing for
    # the same lease must not both count as its holder.
    return f"web-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def ensure_csv(service: Service, url: str | None, sha1: str | None) -> tuple[str, str | None]:
    """Have the CSV in the store (verified when a sha1 was given); its sha1 and resolved source."""
    source = resolve_client_source(url, service.settings) if url else None
    if sha1 is None or not service.store.has(sha1):  # held: prepare_recipe parses it, as any CSV
        if url is None:
            raise InvalidRequest(
                f"CSV {sha1} is not in the store; give its csv.url" if sha1 else "csv needs a url or a sha1"
            )
        # Completed (a local file's missing sha1) and stored: the recipe names the result.
        sha1 = store_csv(
            service.store, service.fetch(url, sha1), source, service.policy, service.settings.max_csv_rows
        )
    return sha1, source


#: Zips and folders one worker process turns into their CSVs at once: each reads and hashes
#: up to MAX_UNZIPPED_BYTES, so more would take the threads that answer everything else.
UNPACKS_AT_ONCE = 1
_unpacking = threading.BoundedSemaphore(UNPACKS_AT_ONCE)
#: What a client told to wait is asked to wait, in seconds.
UNPACK_RETRY_AFTER_S = 2


def photos_csv(service: Service, body: dict[str, Any]) -> str:
    """The training CSV of the photos a body names (each image stored too); its sha1.

    ``zip``: a stored zip of label folders. ``folder``: files uploaded one by one, with the
    paths they had under the folder a browser was given (one subfolder per label). Made once:
    a poll (the same body again) is answered from the store."""
    store, settings = service.store, service.settings
    if "zip" in body:
        sha1 = body["zip"]["sha1"]
        key = photo_csv_key("zip", sha1)
    else:
        files = [(f["path"], f["sha1"]) for f in body["folder"]["files"]]
        key = photo_csv_key("folder", files)
    known = remembered_csv(store, key)
    if known is not None:
        return known
    if not _unpacking.acquire(blocking=False):
        raise Busy(
            "this worker is turning another zip or folder into its CSV; send the request again shortly",
            UNPACK_RETRY_AFTER_S,
        )
    try:
        tree: PhotoTree
        if "zip" in body:
            if not store.has(sha1):
                raise InvalidRequest(f"zip {sha1} is not in the store; upload it to /objects first")
            tree = ZipTree(
                store.get(sha1),
                f"zip {sha1}",
                settings.max_download_bytes,
                settings.max_unzipped_bytes,
                settings.max_folder_entries,
            )
        else:
            tree = StoredTree(store, files, "the folder")
        csv_sha1 = store_photos(
            store,
            tree,
            settings.max_csv_rows,
            settings.min_free_bytes,
            max_entries=settings.max_folder_entries,
        ).csv_sha1
    finally:
        _unpacking.release()
    remember_csv(store, key, csv_sha1)
    return csv_sha1


def submit_training(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    publish_to = (body.get("model") or {}).get("uri") or None
    refused: FetchRefused | None = None
    if publish_to:
        # Before anything is fetched: a refused target makes no connection at all. The model
        # still trains (a 2019 body's gs://test/1 must too); the refusal is its publication record.
        try:
            check_model_uri(publish_to, service.model_uri_allow)
        except FetchRefused as e:
            refused = e
    if "zip" in body or "folder" in body:
        csv_sha1, csv_source = photos_csv(service, body), None
    else:
        csv_sha1, csv_source = ensure_csv(service, body["csv"].get("url"), body["csv"].get("sha1"))
    recipe = prepare_recipe(service, body.get("metadata", {}), csv_source, csv_sha1)
    if refused is not None:  # publish_to was given, and is not an allowed target
        out = _train(service, recipe, csv_source, None)
        record = publications.read(service.store, recipe.sha1, publish_to)
        if record is None or record["status"] != "refused":  # once: a poll writes nothing
            record = publications.refuse(service.store, recipe.sha1, publish_to, str(refused))
        return {**out, "published": publications.public(record)}
    return _train(service, recipe, csv_source, publish_to)


def retry_training(service: Service, model_sha1: str) -> dict[str, Any]:
    """Start a failed or cancelled job again, with the recipe it was asked for (the model page's
    Retry): the 2019 clear (DELETE) and the same POST /train, in one step that needs no body."""
    store = service.store
    status, found = jobs.read_status(store, model_sha1), jobs.read_recipe(store, model_sha1)
    if status is None or found is None:
        raise ModelNotFound(model_sha1)
    if status["status"] not in ("error", "cancelled"):
        raise JobStateError(
            f"model {model_sha1} is {jobs.shown_status(store, status)}; only a failed or cancelled training is retried"
        )
    recipe, csv_source = found
    jobs.delete(store, model_sha1)
    return _train(service, recipe, csv_source, None)


def _train(
    service: Service, recipe: Recipe, csv_source: str | None, publish_to: str | None
) -> dict[str, Any]:
    """Start (or find) the job for ``recipe``, and the publication to ``publish_to`` if any."""
    ready = jobs.ready_status(service.store, recipe.sha1)
    if ready is not None and not publish_to:
        return public_status(ready)  # a poll of a finished model writes nothing
    current = jobs.read_status(service.store, recipe.sha1) if ready is None else None
    if ready is None and (current is None or current["status"] in ("error", "cancelled")):
        service.check_free_space()  # a job that would fill the disk is not started (polls still answer)
    jobs.record_recipe(service.store, recipe, csv_source)
    if publish_to:
        # Stored with the job, so that whichever worker finishes the training honours it.
        publications.request(service.store, recipe.sha1, publish_to)
    owner = _owner()
    record = jobs.submit(
        service.store,
        recipe.sha1,
        owner,
        service.settings.lease_ttl,
        start=lambda: _start(service, recipe, csv_source, owner),
    )
    if record["status"] == "new" and record.get("owner") != owner:
        # Someone else's "new": for this caller the job is already under way.
        record = {**record, "status": "in_progress"}
    out = public_status(record)
    if publish_to:
        publication = publications.read(service.store, recipe.sha1, publish_to)
        if record["status"] == "ready" and publications.due(publication):
            _start_publish(service, recipe.sha1, publish_to)
            publication = {**(publication or {}), "uri": publish_to, "status": "in_progress"}
        out["published"] = publications.public(publication or {"uri": publish_to, "status": "pending"})
    return out


def _start_publish(service: Service, model_sha1: str, uri: str) -> None:
    def run() -> None:
        publications.run(
            service.store,
            model_sha1,
            uri,
            _owner(),
            service.settings.lease_ttl,
            publisher(service.store, model_sha1, service.settings),
            service.settings.retry_backoff,
        )

    threading.Thread(target=run, name=f"publish-{model_sha1[:8]}", daemon=True).start()


#: The jobs this worker's threads run (model sha1 -> lease owner), handed over when it stops.
_running: dict[str, tuple[Service, str]] = {}
_running_lock = threading.Lock()


def _start(service: Service, recipe: Recipe, csv_source: str | None, owner: str) -> None:
    """Run the job we won: on the Ray cluster (EXECUTOR=ray), else in a thread of this worker."""
    if on_cluster(service.settings):
        _submit_to_ray(service, recipe, csv_source, owner)
        return

    def run() -> None:
        with _running_lock:
            _running[recipe.sha1] = (service, owner)
        try:
            record = run_job(service, Job(recipe, csv_source, owner))
        finally:
            with _running_lock:
                _running.pop(recipe.sha1, None)
        if record is not None and record["status"] == "ready":
            observe_training(record.get("cache", {}))

    threading.Thread(target=run, name=f"train-{recipe.sha1[:8]}", daemon=True).start()


def hand_over_running() -> list[str]:
    """At a worker's stop (even a graceful one, which does not wait for training threads): give
    up the leases of the jobs its threads run, so that another worker resumes them at once."""
    with _running_lock:
        running = list(_running.items())
    for model_sha1, (service, owner) in running:
        try:
            jobs.hand_over(service.store, model_sha1, owner)
            log.warning("training handed over at stop model=%s", model_sha1, extra={"model_sha1": model_sha1})
        except Exception as e:  # the store is gone too: the lease lapses by itself after LEASE_TTL
            log.error("handing over model=%s failed: %s: %s", model_sha1, type(e).__name__, e)
    return [sha1 for sha1, _ in running]


def resume_stalled(service: Service) -> list[str]:
    """Take over every job whose process died or stopped (its lease lapsed); the ones started here."""
    started = []
    for model_sha1 in jobs.stalled(service.store):
        found = jobs.read_recipe(service.store, model_sha1)
        if found is None:
            continue
        recipe, csv_source = found
        owner = _owner()
        if jobs.take_over(service.store, model_sha1, owner, service.settings.lease_ttl) is None:
            continue  # another worker was quicker, or it finished meanwhile
        log.info("resuming stalled training model=%s owner=%s", model_sha1, owner)
        _start(service, recipe, csv_source, owner)
        started.append(model_sha1)
    return started


def start_resumer(service: Service) -> None:
    """Resume stalled jobs now and every half LEASE_TTL, with no client asking; hand over at exit."""
    atexit.register(hand_over_running)

    def loop() -> None:
        while True:
            try:
                resume_stalled(service)
            except Exception as e:  # a store hiccup: try again at the next round
                log.error("resuming stalled jobs failed: %s: %s", type(e).__name__, e)
            time.sleep(max(service.settings.lease_ttl / 2, 0.5))

    threading.Thread(target=loop, name="resume-stalled", daemon=True).start()


def _submit_to_ray(service: Service, recipe: Recipe, csv_source: str | None, owner: str) -> None:
    """Hand the job (and its lease, held as ``owner``) to a detached actor; this request holds nothing."""
    from model.run.ray_actor import start_job_actor

    try:
        start_job_actor(service, Job(recipe, csv_source, owner))
        log.info("training submitted to Ray model=%s owner=%s", recipe.sha1, owner)
    except Exception as e:  # the cluster is unreachable or refused: a transient failure of the world
        log.error("submitting model=%s to Ray failed: %s: %s", recipe.sha1, type(e).__name__, e)
        refused = ExecutorUnavailable("the Ray cluster did not take the job; see the server log")
        jobs.fail_to_start(service.store, recipe.sha1, owner, refused, service.settings.retry_backoff)
