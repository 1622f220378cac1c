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
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray
from ray.exceptions import RayTaskError

from model.config import Settings
from model.errors import ExecutorUnavailable
from store import ObjectStore, open_store

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: This project's Ray namespace (jobs' actors are named ``train-<model sha1>-<owner>`` in it).
NAMESPACE = "stl"
#: Times Ray reruns a task whose worker or node died (an exception raised by the task is final).
TASK_RETRIES = 3
#: Chunks in flight per CPU of the cluster: enough to keep every worker busy, few enough that
#: results waiting to be consumed stay small.
IN_FLIGHT_PER_CPU = 2

#: How often a job waiting on a task ticks (reports progress, sees a cancel).
TICK_SECONDS = 0.5

#: Seconds to wait for the cluster to answer when joining it.
CONNECT_TIMEOUT = 30.0
_connect_lock = threading.Lock()
_joining: threading.Thread | None = None
_join_error: list[BaseException] = []


def connect(settings: Settings, timeout: float = CONNECT_TIMEOUT) -> None:
    """Join the cluster at RAY_ADDRESS once per process (a task or actor is already joined).

    With no RAY_ADDRESS, Ray starts a cluster on this machine for the process (the CLI alone).
    ``ray.init`` itself waits as long as it takes for an unreachable cluster, so it runs in a
    thread, and a caller (a web request) gives up after ``timeout`` with ExecutorUnavailable;
    the next caller waits on the same attempt rather than starting another.
    """
    global _joining
    with _connect_lock:
        if ray.is_initialized():
            return
        if _joining is None or not _joining.is_alive():
            _join_error.clear()

            def join() -> None:
                try:
                    ray.init(
                        address=settings.ray_address or None,
                        namespace=NAMESPACE,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
                except BaseException as e:  # handed to the caller below
                    _join_error.append(e)

            _joining = threading.Thread(target=join, name="ray-connect", daemon=True)
            _joining.start()
        joining = _joining
    joining.join(timeout)
    if _join_error:
        raise ExecutorUnavailable(
            f"Ray cluster at {settings.ray_address or 'a new local one'}: {_join_error[0]}"
        ) from _join_error[0]
    if not ray.is_initialized():
        raise ExecutorUnavailable(
            f"Ray cluster at {settings.ray_address} did not answer within {timeout:g} s"
        )


def portable(settings: Settings) -> Settings:
    """Settings that mean the same in another process: the local store's path made absolute."""
    return dataclasses.replace(settings, data_dir=os.path.abspath(settings.data_dir))


_stores: dict[tuple[str, str], ObjectStore] = {}


def store_for(settings: Settings) -> ObjectStore:
    """This process's handle on the store ``settings`` name, opened once."""
    key = (settings.store_uri, settings.data_dir)
    if key not in _stores:
        _stores[key] = open_store(settings.store_uri or None, settings.data_dir)
    return _stores[key]


@ray.remote(max_retries=TASK_RETRIES)
def _chunk_task(fn: Callable[..., R], settings: Settings, chunk: Any, args: tuple[Any, ...]) -> R:
    return fn(store_for(settings), chunk, *args)


@ray.remote(max_retries=TASK_RETRIES)
def _one_task(fn: Callable[..., R], args: tuple[Any, ...]) -> R:
    return fn(*args)


def _unwrap(error: RayTaskError) -> BaseException:
    """The exception the task raised, as itself (its message is the user's one line)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


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

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        return self._get(_one_task.remote(fn, args))

    @staticmethod
    def _get(ref: ray.ObjectRef, tick: Callable[[], None] | None = None) -> Any:
        if tick is not None:
            while not ray.wait([ref], timeout=TICK_SECONDS)[0]:
                tick()
        try:
            return ray.get(ref)
        except RayTaskError as e:
            raise _unwrap(e) from None
