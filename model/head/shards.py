"""The head's rows in shards, and the work one round of the solvers does on a shard.

A shard is a block of the head's rows (integer features, labels, and each fit's row weights)
plus, for each fit, the logits of those rows at the fit's current parameters and along its
current direction. The solvers (``model.head.logistic``) never see rows: each round they send
every shard the same small requests (parameters, directions, step lengths) and get back sums
that are exact (``products.Partial``) or taken over fixed blocks of rows
(``exact.block_sums``), so the result does not depend on how the rows are cut into shards, on
the order the shards answer in, or on where each shard lives: in this process
(``LocalShards``) or on workers.

Shards must start at multiples of ``exact.SUM_BLOCK_ROWS`` for the block sums to line up; the
shard size is a setting (``HEAD_SHARD_PAIRS``) and is rounded up to such a multiple.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from model.errors import HeadInputError
from model.head import exact, products
from model.head.linear import LinearMap, linear_logits
from model.head.products import Integers, Partial
from model.identity.tensors import dump_tensors, load_tensors
from store import ObjectStore


@dataclass
class Shard:
    """Rows ``start .. start + len`` of the head's data, and what every fit knows about them."""

    start: int
    units: Integers | None  # (rows, dim); None while a stored shard's features are not loaded
    y: np.ndarray  # (rows,) label index
    weights: np.ndarray  # (rows, fits) int64: a row's photo count in each fit, 0 where left out
    logits: dict[int, np.ndarray] = field(default_factory=dict)  # fit -> (rows, labels) at its parameters
    steps: dict[int, np.ndarray] = field(default_factory=dict)  # fit -> (rows, labels) along its direction

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Problem:
    """What every shard needs to know to answer: the map to standardised features and the bound."""

    linear: LinearMap
    labels: int
    planned_weight: int  # the largest total weight of any fit: the products' bound

    @property
    def dim(self) -> int:
        return len(self.linear.gain)


@dataclass
class Round:
    """One round's requests, keyed by fit. ``starts``: parameters to begin at (logits, loss and
    gradient there); ``directions``: a direction and a first step (logits along it, loss at the
    step); ``tries``: another step (loss there); ``accepts``: the step taken (gradient there);
    ``finish``: fits whose logits are wanted back."""

    starts: dict[int, np.ndarray] = field(default_factory=dict)
    directions: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    tries: dict[int, float] = field(default_factory=dict)
    accepts: dict[int, float] = field(default_factory=dict)
    finish: list[int] = field(default_factory=list)
    replay: bool = False  # rebuild the fits' state only: no losses, gradients or logits back


@dataclass
class Answer:
    """One shard's answer: a partial product of the gradients asked for (fits in ``order``), block
    sums of the losses asked for, and logits."""

    start: int
    gradient: Partial | None
    order: list[int]
    losses: dict[int, np.ndarray]  # fit -> (blocks,) weighted cross-entropy
    logits: dict[int, np.ndarray]


def _cross_entropy_blocks(z: np.ndarray, onehot: np.ndarray, weight: np.ndarray) -> np.ndarray:
    picked = exact.tree_sum(np.multiply(z, onehot), axis=1)
    ce = np.multiply(np.subtract(exact.log_sum_exp(z), picked), weight.astype(np.float64))
    return exact.block_sums(ce)


def _unflat(theta: np.ndarray, dim: int, labels: int) -> tuple[np.ndarray, np.ndarray]:
    cut = dim * labels
    return theta[:cut].reshape(dim, labels), theta[cut:]


def needs_features(request: Round) -> bool:
    """Whether a round multiplies by the features (else it only reads the logits it holds)."""
    return bool(request.starts or request.directions or request.accepts)


def answer(shard: Shard, problem: Problem, request: Round) -> Answer:
    """Do one round's work on one shard: at most one GEMM for all logits and one for all gradients."""
    k, dim = problem.labels, problem.dim
    onehot = np.eye(k, dtype=np.float64)[shard.y]
    # 1. Logits of every new parameter vector and direction, in one product.
    wanted = [(f, theta) for f, theta in request.starts.items()] + [
        (f, p) for f, (p, _t) in request.directions.items()
    ]
    if wanted:
        assert shard.units is not None
        parts = [_unflat(v, dim, k) for _f, v in wanted]
        z = linear_logits(
            shard.units,
            problem.linear,
            np.concatenate([w for w, _ in parts], axis=1),
            np.concatenate([b for _, b in parts]),
        )
        for i, (f, _v) in enumerate(wanted):
            block = z[:, i * k : (i + 1) * k]
            if i < len(request.starts):
                shard.logits[f] = block
            else:
                shard.steps[f] = block
    # 2. Steps taken.
    for f, t in request.accepts.items():
        shard.logits[f] = np.add(shard.logits[f], np.multiply(shard.steps.pop(f), t))
    if request.replay:
        return Answer(shard.start, None, [], {}, {})
    # 3. Losses: at new parameters, and at the steps tried.
    losses: dict[int, np.ndarray] = {}
    for f in request.starts:
        losses[f] = _cross_entropy_blocks(shard.logits[f], onehot, shard.weights[:, f])
    tried = {**{f: t for f, (_p, t) in request.directions.items()}, **request.tries}
    for f, t in tried.items():
        at = np.add(shard.logits[f], np.multiply(shard.steps[f], t))
        losses[f] = _cross_entropy_blocks(at, onehot, shard.weights[:, f])
    # 4. Gradients at new parameters and after steps taken, in one product.
    order = list(request.starts) + list(request.accepts)
    gradient = None
    if order:
        assert shard.units is not None
        residuals = np.concatenate(
            [np.subtract(exact.softmax(shard.logits[f]), onehot) for f in order], axis=1
        )
        weight = np.repeat(shard.weights[:, order], k, axis=1)
        gradient = products.transposed_times(shard.units, residuals, weight, problem.planned_weight)
    logits = {f: shard.logits[f].copy() for f in request.finish}
    for f in request.finish:  # a finished fit's state is no longer needed
        shard.logits.pop(f, None)
        shard.steps.pop(f, None)
    return Answer(shard.start, gradient, order, losses, logits)


class StateLog:
    """The requests each fit's shard state (its logits, its steps) was built from: the fit's
    last start and every direction and accepted step since. Replayed in order on a fresh copy of
    the same rows, they rebuild that state bit for bit (the same arithmetic on the same
    integers), so a shard lost with its worker is rebuilt elsewhere and the fit goes on. It
    holds at most one parameter vector per iteration of each running fit, never rows."""

    def __init__(self) -> None:
        self.events: dict[int, list[Round]] = {}

    def record(self, request: Round) -> None:
        """Note a round every shard has answered."""
        for f, theta in request.starts.items():
            self.events[f] = [Round(starts={f: theta})]
        for f, direction in request.directions.items():
            self.events[f].append(Round(directions={f: direction}))
        for f, t in request.accepts.items():
            self.events[f][-1].accepts[f] = t  # answered after the direction in one replay round
        for f in request.finish:
            self.events.pop(f, None)

    def replay(self) -> list[Round]:
        """Rounds that rebuild every running fit's state: round i holds each fit's i-th event."""
        depth = max((len(e) for e in self.events.values()), default=0)
        rounds = [Round(replay=True) for _ in range(depth)]
        for events in self.events.values():
            for out, event in zip(rounds, events, strict=False):
                out.starts.update(event.starts)
                out.directions.update(event.directions)
                out.accepts.update(event.accepts)
        return rounds


def shard_pairs(requested: int) -> int:
    """The shard size used: ``requested`` rows rounded up to whole sum blocks."""
    if requested < 1:
        raise HeadInputError(f"a head shard must hold a positive number of pairs, not {requested}")
    block = exact.SUM_BLOCK_ROWS
    return -(-requested // block) * block


def cut(units: Integers, y: np.ndarray, weights: np.ndarray, pairs: int) -> list[Shard]:
    """The rows in shards of ``shard_pairs(pairs)`` (the last one shorter)."""
    size = shard_pairs(pairs)
    return [
        Shard(a, units.rows(slice(a, a + size)), y[a : a + size], weights[a : a + size])
        for a in range(0, len(y), size)
    ]


class Runner(Protocol):
    """Where the shards are: answers a round of requests with one answer per shard."""

    def answer(self, problem: Problem, request: Round) -> list[Answer]: ...

    def close(self) -> None:
        """Let go of what holds the shards (workers); nothing for shards in this process."""


class Rows(Protocol):
    """The head's rows, wherever they are: gives a runner over them for the fits' row weights."""

    def runner(self, y: np.ndarray, weights: np.ndarray) -> Runner: ...


class LocalShards:
    """Shards held in this process, answered one after another."""

    def __init__(self, shards: list[Shard]) -> None:
        self.shards = shards

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        return [answer(s, problem, request) for s in self.shards]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class InMemory:
    """Rows whose features are in this process, cut into shards of ``pairs`` (one shard if None)."""

    units: Integers
    pairs: int | None = None

    def runner(self, y: np.ndarray, weights: np.ndarray) -> LocalShards:
        return LocalShards(cut(self.units, y, weights, self.pairs or max(1, len(y))))


#: Names the tensors of a stored shard.
SHARD_UNITS, SHARD_LABELS = "units", "labels"


def store_shard(store: ObjectStore, units: np.ndarray, y: np.ndarray) -> str:
    """One shard object: its rows' integer features (int16) and labels."""
    return store.put(
        dump_tensors({SHARD_UNITS: np.asarray(units, np.int16), SHARD_LABELS: np.asarray(y, np.int64)})
    )


def store_shards(
    store: ObjectStore, blocks: Iterable[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[int, str]]:
    """Write (units int16, labels) blocks as shard objects; their first rows and sha1s, in order.

    Every block but the last must hold a multiple of ``exact.SUM_BLOCK_ROWS`` rows."""
    out: list[tuple[int, str]] = []
    start = 0
    for units, y in blocks:
        if out and start % exact.SUM_BLOCK_ROWS:
            raise HeadInputError("a head shard that is not the last must hold whole sum blocks")
        out.append((start, store_shard(store, units, y)))
        start += len(y)
    return out


class StoredShards:
    """Shards kept in a store and read (verified) when a round needs the features: the first
    ones stay loaded while they fit in ``keep_bytes``, the rest are read one at a time. Memory
    holds those, plus every fit's logits of every row (rows x labels)."""

    def __init__(
        self,
        store: ObjectStore,
        shards: list[tuple[int, str]],
        y: np.ndarray,
        weights: np.ndarray,
        bound: int,
        keep_bytes: int = 0,
    ) -> None:
        self.store, self.bound, self.budget = store, bound, keep_bytes
        self.kept: set[int] = set()
        self.shards: list[Shard] = []
        self.sha1s: list[str] = []
        ends = [start for start, _ in shards[1:]] + [len(y)]
        for (start, sha1), end in zip(shards, ends, strict=True):
            self.shards.append(Shard(start, None, y[start:end], weights[start:end]))
            self.sha1s.append(sha1)

    def answer(self, problem: Problem, request: Round) -> list[Answer]:
        out = []
        load = needs_features(request)
        for i, (shard, sha1) in enumerate(zip(self.shards, self.sha1s, strict=True)):
            if load and shard.units is None:
                shard.units = Integers.of(load_tensors(self.store.get(sha1))[SHARD_UNITS], self.bound)
                if shard.units.values.nbytes <= self.budget:
                    self.kept.add(i)
                    self.budget -= shard.units.values.nbytes
            out.append(answer(shard, problem, request))
            if i not in self.kept:
                shard.units = None
        return out

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class InStore:
    """Rows in shard objects of a store (``store_shards``), of integers up to ``bound``."""

    store: ObjectStore
    shards: list[tuple[int, str]]
    bound: int
    keep_bytes: int = 0  # shards kept loaded between rounds, first come, while they fit

    def runner(self, y: np.ndarray, weights: np.ndarray) -> StoredShards:
        return StoredShards(self.store, self.shards, y, weights, self.bound, self.keep_bytes)
