"""The head's shards held by Ray actors: each loads its shards from the store once and answers the
solvers' rounds; the driver sees only (dim x labels) sums and per-block losses.

The answers are exact sums or fixed-block sums (``model.head.shards``), so the weights are the
same bits on one worker, two, or none (``LocalShards``). An actor's shards hold every fit's
logits of its rows, which the driver does not keep: a worker that dies takes them along, so the
fit stops with ``ExecutorUnavailable``, a transient error the job retries from its cached
features (with the same bits), rather than go on from state it cannot check.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from model.config import Settings
from model.errors import ExecutorUnavailable
from model.execution.ray_cluster import connect, portable, store_for, unwrap
from model.head.products import Integers
from model.head.shards import SHARD_LABELS, SHARD_UNITS, Answer, Problem, Round, Shard, answer
from model.identity.tensors import load_tensors


@ray.remote(num_cpus=1, max_restarts=0)
class ShardHolder:
    """Some of the head's shards, read from the store (verified) once, in this worker's memory."""

    def __init__(
        self, settings: Settings, shards: list[tuple[int, str]], weights: list[np.ndarray], bound: int
    ) -> None:
        store = store_for(settings)
        self.shards = []
        for (start, sha1), w in zip(shards, weights, strict=True):
            tensors = load_tensors(store.get(sha1))
            units = Integers.of(tensors[SHARD_UNITS], bound)
            self.shards.append(Shard(start, units, np.array(tensors[SHARD_LABELS]), w))

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        return [answer(s, problem, request) for s in self.shards]


class RayShards:
    """A runner over shards spread across ``workers`` actors (contiguous runs of shards each)."""

    def __init__(
        self, settings: Settings, shards: list[tuple[int, str]], weights: np.ndarray, bound: int, workers: int
    ) -> None:
        connect(settings)
        workers = max(1, min(workers, len(shards)))
        ends = [len(shards) * (i + 1) // workers for i in range(workers)]
        starts = [0, *ends[:-1]]
        bounds = [s for s, _ in shards[1:]] + [len(weights)]
        self.actors: list[Any] = []
        for a, b in zip(starts, ends, strict=True):
            mine = shards[a:b]
            slices = [weights[start:stop] for (start, _), stop in zip(mine, bounds[a:b], strict=True)]
            self.actors.append(ShardHolder.remote(portable(settings), mine, slices, bound))

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        try:
            parts = ray.get([actor.answer.remote(problem, request) for actor in self.actors])
        except RayActorError as e:
            self.close()
            raise ExecutorUnavailable(f"a Ray worker holding head shards was lost: {e}") from None
        except RayTaskError as e:
            self.close()
            raise unwrap(e) from None
        return [a for part in parts for a in part]

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


class InRay:
    """Rows in shard objects of the store ``settings`` name, held by ``workers`` Ray actors."""

    def __init__(self, settings: Settings, shards: list[tuple[int, str]], bound: int, workers: int) -> None:
        self.settings, self.shards, self.bound, self.workers = settings, shards, bound, workers

    def runner(self, y: np.ndarray, weights: np.ndarray) -> RayShards:
        return RayShards(self.settings, self.shards, weights, self.bound, self.workers)
