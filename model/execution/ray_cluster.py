"""Joining the Ray cluster, and what every task and actor of a job needs there: settings that
mean the same in another process, the store they name, and a task's own exception."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

import ray
from ray.exceptions import RayTaskError

from model.config import Settings
from model.errors import ExecutorUnavailable
from store import ObjectStore, open_store

#: This project's Ray namespace (jobs' actors are named ``train-<model sha1>-<owner>`` in it).
NAMESPACE = "stl"
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


def unwrap(error: RayTaskError) -> BaseException:
    """The exception the task raised, as itself (its message is the user's one line)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
