"""EXECUTOR=ray: a job's chunks as Ray tasks (its whole run is an actor: ``model.run.ray_actor``).

Every task opens the store the settings name (``STORE_URI``, else ``DATA_DIR``,
made absolute), so on more than one machine the store must be shared (S3/MinIO,
IPFS, or one volume). A task whose worker process or node dies is run again by
Ray (``TASK_RETRIES``); since a chunk writes only content-addressed objects, each
atomically, a half-done chunk leaves nothing wrong behind and its rerun writes
the same bytes. Results come back in chunk order, so the job is the same code as
the local executor's and gives the same bytes.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray
from ray.exceptions import RayTaskError

from model.config import Settings
from model.execution.ray_cluster import connect, portable, store_for, unwrap
from model.execution.ray_shards import InRay
from model.head.shards import Rows

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Times Ray reruns a task whose worker or node died (an exception raised by the task is final).
TASK_RETRIES = 3
#: Chunks in flight per CPU of the cluster: enough to keep every worker busy, few enough that
#: results waiting to be consumed stay small.
IN_FLIGHT_PER_CPU = 2

#: How often a job waiting on a task ticks (reports progress, sees a cancel).
TICK_SECONDS = 0.5


@ray.remote(max_retries=TASK_RETRIES)
def _chunk_task(fn: Callable[..., R], settings: Settings, chunk: Any, args: tuple[Any, ...]) -> R:
    return fn(store_for(settings), chunk, *args)


class RayExecutor:
    """Runs chunks as Ray tasks across the cluster, yielding their results in order."""

    name = "ray"
    in_process = False

    def __init__(self, settings: Settings) -> None:
        self.settings = portable(settings)
        connect(self.settings)

    def _window(self) -> int:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(2, cpus * IN_FLIGHT_PER_CPU)

    def map(
        self, fn: Callable[..., R], chunks: Iterable[T], *args: Any, tick: Callable[[], None] | None = None
    ) -> Iterator[R]:
        pending: collections.deque[ray.ObjectRef] = collections.deque()
        window = self._window()
        settings = ray.put(self.settings)
        shared = ray.put(args)  # one copy in the object store, not one per task
        try:
            for chunk in chunks:
                pending.append(_chunk_task.remote(fn, settings, chunk, shared))
                if len(pending) >= window:
                    yield self._get(pending.popleft(), tick)
            while pending:
                yield self._get(pending.popleft(), tick)
        finally:
            for ref in pending:  # the job stopped early (failed, cancelled): drop the rest
                ray.cancel(ref)

    def head_rows(self, shards: list[tuple[int, str]], bound: int) -> Rows:
        """The shards held by up to one actor per CPU of the cluster, each loading its own."""
        workers = max(1, min(len(shards), int(ray.cluster_resources().get("CPU", 1))))
        return InRay(self.settings, shards, bound, workers)

    @staticmethod
    def _get(ref: ray.ObjectRef, tick: Callable[[], None] | None = None) -> Any:
        if tick is not None:
            while not ray.wait([ref], timeout=TICK_SECONDS)[0]:
                tick()
        try:
            return ray.get(ref)
        except RayTaskError as e:
            raise unwrap(e) from None
