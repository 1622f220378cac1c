"""The head's shards held by Ray actors: each loads its shards from the store once and answers the
solvers' rounds; the driver sees only (dim x labels) sums and per-block losses.

The answers are exact sums or fixed-block sums (``model.head.shards``), so the weights are the
same bits on one worker, two, or none (``LocalShards``). An actor's shards hold every fit's
logits of its rows, which the driver does not keep; it keeps instead the requests they were
built from (``StateLog``). A worker that dies is replaced by a new actor that reads the same
shards from the store (verified), replays the log and answers the round it missed: the fit goes
on with the same bits. Only when no replacement starts within ``REPLACE_TIMEOUT_S`` (or workers
keep dying) does the fit stop with ``ExecutorUnavailable``, a transient error the job retries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from model.config import Settings
from model.errors import ExecutorUnavailable
from model.execution.ray_cluster import connect, portable, store_for, unwrap
from model.head.products import Integers
from model.head.shards import SHARD_LABELS, SHARD_UNITS, Answer, Problem, Round, Shard, StateLog, answer
from model.identity.tensors import load_tensors

#: How long a replacement for a lost worker may take to start and load its shards.
REPLACE_TIMEOUT_S = 120.0
#: Replacements one actor's place may need within one round before the fit gives up.
REPLACEMENTS_PER_ROUND = 2


@ray.remote(num_cpus=1, max_restarts=0)
class ShardHolder:
    """Some of the head's shards, read from the store (verified) once, in this worker's memory."""

    def __init__(
        self, settings: Settings, shards: list[tuple[int, str]], weights: list[np.ndarray], bound: int
    ) -> None:
        # A shard that cannot be read is kept as the answer to every call, not raised here: an
        # actor whose constructor raises is only ever reported as dead, hiding the reason.
        self.fault: Exception | None = None
        self.shards = []
        try:
            store = store_for(settings)
            for (start, sha1), w in zip(shards, weights, strict=True):
                tensors = load_tensors(store.get(sha1))
                units = Integers.of(tensors[SHARD_UNITS], bound)
                self.shards.append(Shard(start, units, np.array(tensors[SHARD_LABELS]), w))
        except Exception as e:  # re-raised by every call
            self.fault = e

    def ready(self) -> bool:
        if self.fault is not None:
            raise self.fault
        return True

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        self.ready()
        return [answer(s, problem, request) for s in self.shards]

    def answer_after(self, problem: Problem, replay: list[Round], request: Round) -> list[Answer]:
        """Rebuild the fits' state from ``replay``, then answer ``request``: one call, so a
        replay that fails answers nothing."""
        for done in replay:
            self.answer(problem, done)
        return self.answer(problem, request)


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
        self.settings, self.bound, self.log = portable(settings), bound, StateLog()
        self.places: list[tuple[list[tuple[int, str]], list[np.ndarray]]] = []
        for a, b in zip(starts, ends, strict=True):
            mine = shards[a:b]
            slices = [weights[start:stop] for (start, _), stop in zip(mine, bounds[a:b], strict=True)]
            self.places.append((mine, slices))
        self.actors: list[Any] = [self._holder(i) for i in range(len(self.places))]

    def _holder(self, place: int) -> Any:
        mine, slices = self.places[place]
        return ShardHolder.remote(self.settings, mine, slices, self.bound)

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        refs = [actor.answer.remote(problem, request) for actor in self.actors]
        parts = [self._answer_of(i, ref, problem, request) for i, ref in enumerate(refs)]
        self.log.record(request)
        return [a for part in parts for a in part]

    def _answer_of(self, place: int, ref: Any, problem: Problem, request: Round) -> list[Answer]:
        """One actor's answer; a lost actor is replaced, its state replayed, the round re-asked."""
        for attempt in range(REPLACEMENTS_PER_ROUND + 1):
            try:
                return ray.get(ref)
            except RayTaskError as e:
                self.close()
                raise unwrap(e) from None
            except RayActorError as e:
                lost = e
            if attempt == REPLACEMENTS_PER_ROUND:
                self.close()
                raise ExecutorUnavailable(f"Ray workers holding head shards kept dying: {lost}")
            ref = self._replace(place).answer_after.remote(problem, self.log.replay(), request)
        raise AssertionError("unreachable")

    def _replace(self, place: int) -> Any:
        """A new actor in a lost one's place, holding the same shards read afresh from the store."""
        ray.kill(self.actors[place])
        actor = self.actors[place] = self._holder(place)
        try:
            ray.get(actor.ready.remote(), timeout=REPLACE_TIMEOUT_S)
        except (GetTimeoutError, RayActorError):
            self.close()
            raise ExecutorUnavailable(
                f"a Ray worker holding head shards was lost and no replacement started within "
                f"{REPLACE_TIMEOUT_S:.0f} s"
            ) from None
        except RayTaskError as e:  # it could not read its shards (e.g. one no longer verifies)
            self.close()
            raise unwrap(e) from None
        return actor

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
