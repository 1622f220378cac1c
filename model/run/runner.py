"""Run one training job to its end, wherever it was started: a web worker's thread or a Ray actor.

The same steps either way: train under the job's lease (``jobs.run_with_lease``),
then honour any publish targets recorded with the job, and say in the log how it
ended. Only the executor differs, so that the bytes cannot.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from model.config import Settings
from model.context import Context, Job
from model.execution.local import Executor
from model.jobs import publications
from model.jobs import state as jobs
from model.lifecycle.publish import publish_model
from model.training.pipeline import train_model
from store import ObjectStore, StoreError

log = logging.getLogger(__name__)


def publisher(store: ObjectStore, model_sha1: str, settings: Settings) -> publications.Publisher:
    return lambda uri: publish_model(store, model_sha1, uri, settings.data_dir)


def run_job(ctx: Context, job: Job, executor: Executor | None = None) -> dict[str, Any] | None:
    """Train (the caller holds the lease as ``owner``), publish, log; the final status record.

    None when the world failed (store, disk) or a bug did: the status says so and the
    log has the cause, which a background job has nobody else to tell.
    """
    store, settings, recipe, owner = ctx.store, ctx.settings, job.recipe, job.owner
    log.info("training started model=%s owner=%s pid=%d", recipe.sha1, owner, os.getpid())
    try:
        record = jobs.run_with_lease(
            store,
            recipe.sha1,
            owner,
            settings.lease_ttl,
            lambda progress: train_model(ctx, recipe, job.csv_source, progress, executor),
            settings.retry_backoff,
        )
        if record["status"] == "ready":
            log.info(
                "training finished model=%s status=ready", recipe.sha1, extra={"model_sha1": recipe.sha1}
            )
            publications.run_due(
                store,
                recipe.sha1,
                owner,
                settings.lease_ttl,
                publisher(store, recipe.sha1, settings),
                settings.retry_backoff,
            )
        else:
            log.warning(
                "training %s model=%s reason=%s",
                "cancelled" if record["status"] == "cancelled" else "failed",
                recipe.sha1,
                record.get("message"),
                extra={
                    "model_sha1": recipe.sha1,
                    "status": record["status"],
                    "reason": record.get("message"),
                },
            )
        return record
    except (StoreError, OSError) as e:
        # The world failed (store, disk): the status hides the location, the log names it.
        log.error(
            "training failed model=%s reason=%s: %s",
            recipe.sha1,
            type(e).__name__,
            e,
            extra={"model_sha1": recipe.sha1, "status": "error", "reason": f"{type(e).__name__}: {e}"},
        )
    except Exception:
        # A bug: run_with_lease has already recorded the error status; keep the traceback.
        log.exception(
            "training crashed model=%s",
            recipe.sha1,
            extra={"model_sha1": recipe.sha1, "status": "error", "reason": "internal error"},
        )
    return None
