"""Where a job's chunks run: in this process (``EXECUTOR=local``) or as Ray tasks (``EXECUTOR=ray``).

An executor maps a chunk function over chunks and yields the results in the
chunks' order, whatever order they finished in, so the job that consumes them
is the same code, and gives the same bytes, on either. A chunk function is a
module-level ``fn(store, chunk, *args)``: the local executor calls it with the
caller's store; a Ray task opens the store the settings name (``model.execution.ray_tasks``).
``model.execution.choice`` picks one. It also says where the head's rows are while it fits
(``head_rows``): in this process, or in shards held by Ray actors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from model.head.shards import InStore, Rows
from store import ObjectStore

#: The head's features this process keeps loaded between solver rounds (float64); past it, the
#: shards are read from the store each round, so memory stays bounded at any number of pairs.
HEAD_MEMORY_BYTES = 1 << 30

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    #: Names the executor in run records and logs ("local" or "ray").
    name: str
    #: Whether chunks run in the calling thread (they can beat a job's progress themselves).
    in_process: bool

    def map(
        self, fn: Callable[..., R], chunks: Iterable[T], *args: Any, tick: Callable[[], None] | None = None
    ) -> Iterator[R]:
        """``fn(store, chunk, *args)`` for each chunk, results in the chunks' order.

        ``tick`` is called about twice a second while a result is awaited from elsewhere, or
        handed to ``fn`` (as ``tick=``) to call between its items where the chunk runs in this
        thread, so that a job can report progress and notice a cancel within a second or so;
        whatever it raises stops the map."""
        ...

    def head_rows(self, shards: list[tuple[int, str]], bound: int) -> Rows:
        """Where the head's training rows (shard objects in the store) are while it fits: read
        by this process, or held by the cluster's workers (the driver then sees only sums)."""
        ...


class LocalExecutor:
    """Runs each chunk in the calling thread, one after another: the embedded default."""

    name = "local"
    in_process = True

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def map(
        self, fn: Callable[..., R], chunks: Iterable[T], *args: Any, tick: Callable[[], None] | None = None
    ) -> Iterator[R]:
        for chunk in chunks:  # in this thread: the chunk beats the job's progress itself
            yield fn(self.store, chunk, *args, **({"tick": tick} if tick is not None else {}))

    def head_rows(self, shards: list[tuple[int, str]], bound: int) -> Rows:
        return InStore(self.store, shards, bound, HEAD_MEMORY_BYTES)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
