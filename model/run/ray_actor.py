"""EXECUTOR=ray: a training job as a detached Ray actor, which outlives whoever submitted it.

The web tier only records and submits: ``start_job_actor`` starts a detached
actor (named after the job, owned by the cluster rather than by the process that
created it) that holds the job's lease, fans the chunks out as tasks
(``model.execution.ray_tasks``), runs the head with its shards held by actors, and writes the
manifest. A gunicorn worker that restarts, or a Cloud Run container frozen after
its response, takes nothing down with it.
"""

from __future__ import annotations

import threading

import ray

from model.config import Settings
from model.context import Context, Job
from model.data.fetch import FetchPolicy
from model.execution.ray_cluster import NAMESPACE, connect, portable, store_for
from model.execution.ray_tasks import RayExecutor
from model.run.runner import run_job


@ray.remote(num_cpus=0, max_restarts=0)
class TrainingJob:
    """One training job, held by the cluster: it outlives whoever submitted it.

    The job runs in a thread started by the constructor, so that it depends on no
    call from its creator (a method call dies with the caller's process); the
    actor ends itself when the job is over.
    """

    def __init__(self, settings: Settings, policy: FetchPolicy, job: Job) -> None:
        args = (settings, policy, job)
        threading.Thread(target=self._run, args=args, name=f"job-{job.recipe.sha1[:8]}", daemon=True).start()

    @staticmethod
    def _run(settings: Settings, policy: FetchPolicy, job: Job) -> None:
        try:
            run_job(Context(settings, store_for(settings), policy), job, RayExecutor(settings))
        finally:
            ray.kill(ray.get_runtime_context().current_actor)

    def started(self) -> bool:
        return True


#: Seconds a submitter waits for the cluster to start a job's actor.
START_TIMEOUT = 120.0


def start_job_actor(ctx: Context, job: Job) -> None:
    """Start the job on the cluster and return once it runs there; its status lives in the store.

    The actor gets the settings and policy, not the store handle: it opens the store the
    settings name, as every task does."""
    settings = portable(ctx.settings)
    connect(settings)
    actor = TrainingJob.options(  # type: ignore[attr-defined]
        name=f"train-{job.recipe.sha1}-{job.owner}", namespace=NAMESPACE, lifetime="detached"
    ).remote(settings, ctx.policy, job)
    ray.get(actor.started.remote(), timeout=START_TIMEOUT)
